import CNetlink

/// Writes one netlink message into a `MessageBuffer` through libmnl.
///
/// Lives only inside `MessageBuffer.append`'s closure, so its pointers never escape. Running out
/// of room is remembered, not thrown: the buffer rolls the message back and the caller flushes.
public struct MessageWriter: ~Copyable {
    let header: UnsafeMutablePointer<nlmsghdr>
    let limit: Int
    private(set) var overflowed = false

    init(header: UnsafeMutablePointer<nlmsghdr>, limit: Int) {
        self.header = header
        self.limit = limit
    }

    var length: Int { Int(header.pointee.nlmsg_len) }

    /// Appends the family header (`rtmsg`, `ndmsg`, `genlmsghdr`, …), padded to alignment.
    public mutating func put<T>(header value: T) {
        let size = Int(cnl_nlmsg_align(UInt32(MemoryLayout<T>.size)))
        guard !overflowed, length + size <= limit else { overflowed = true; return }
        let extra = mnl_nlmsg_put_extra_header(header, MemoryLayout<T>.size)!
        withUnsafeBytes(of: value) { extra.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    public mutating func put(_ type: UInt16, bytes: some Collection<UInt8>) {
        guard !overflowed else { return }
        let ok = Array(bytes).withUnsafeBytes { raw in
            mnl_attr_put_check(header, limit, type, raw.count, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!)
        }
        if !ok { overflowed = true }
    }

    public mutating func put(_ type: UInt16, u8 value: UInt8) { putFixed(type, value) }
    public mutating func put(_ type: UInt16, u16 value: UInt16) { putFixed(type, value) }
    public mutating func put(_ type: UInt16, u32 value: UInt32) { putFixed(type, value) }
    public mutating func put(_ type: UInt16, u64 value: UInt64) { putFixed(type, value) }
    public mutating func put(_ type: UInt16, i32 value: Int32) { putFixed(type, value) }
    public mutating func put(_ type: UInt16, address: IPAddress) { put(type, bytes: address.bytes) }

    /// A NUL-terminated string, as the kernel's `NLA_NUL_STRING`/`NLA_STRING` policies accept.
    public mutating func put(_ type: UInt16, string: String) { put(type, bytes: Array(string.utf8) + [0]) }

    /// A flag attribute: a header with no payload.
    public mutating func putFlag(_ type: UInt16) { put(type, bytes: [UInt8]()) }

    /// A nested attribute; `NLA_F_NESTED` is set, as modern kernels' strict policies want.
    public mutating func nest(_ type: UInt16, _ body: (inout MessageWriter) -> Void) {
        guard !overflowed else { return }
        guard let start = mnl_attr_nest_start_check(header, limit, type) else { overflowed = true; return }
        body(&self)
        if overflowed { return }
        mnl_attr_nest_end(header, start)
    }

    private mutating func putFixed<T: FixedWidthInteger>(_ type: UInt16, _ value: T) {
        guard !overflowed else { return }
        let ok = withUnsafeBytes(of: value) { mnl_attr_put_check(header, limit, type, $0.count, $0.baseAddress!) }
        if !ok { overflowed = true }
    }
}

/// A contiguous run of netlink messages, sent with one `sendmsg` (the kernel handles them in order).
public final class MessageBuffer {
    public let capacity: Int
    public private(set) var count = 0
    public private(set) var messageCount = 0
    private let storage: UnsafeMutableRawPointer

    public init(capacity: Int = 128 * 1024) {
        self.capacity = capacity
        storage = .allocate(byteCount: capacity, alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
    }

    deinit { storage.deallocate() }

    public var isEmpty: Bool { messageCount == 0 }

    /// Encodes one message at the end of the buffer. Returns false, leaving the buffer as it was,
    /// when the message does not fit in what is left.
    public func append(
        type: UInt16, flags: UInt16, sequence: UInt32, portID: UInt32 = 0,
        _ body: (inout MessageWriter) -> Void
    ) -> Bool {
        let limit = capacity - count
        guard limit >= Int(cnl_nlmsg_hdrlen()) else { return false }
        // libmnl zeroes every header, payload pad and attribute pad it writes; nothing else to clear.
        let start = storage + count
        let header = mnl_nlmsg_put_header(start)!
        header.pointee.nlmsg_type = type
        header.pointee.nlmsg_flags = flags
        header.pointee.nlmsg_seq = sequence
        header.pointee.nlmsg_pid = portID
        var writer = MessageWriter(header: header, limit: limit)
        body(&writer)
        if writer.overflowed { return false }
        count += Int(cnl_nlmsg_align(UInt32(writer.length)))
        messageCount += 1
        return true
    }

    public func reset() {
        count = 0
        messageCount = 0
    }

    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage, count: count))
    }

    public var bytes: [UInt8] { withBytes(Array.init) }
}
