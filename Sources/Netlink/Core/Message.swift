import CNetlink

/// One netlink message as received: its header fields and its payload (family header + attributes).
public struct Message: Sendable {
    public var type: UInt16
    public var flags: UInt16
    public var sequence: UInt32
    public var portID: UInt32
    public var payload: [UInt8]

    public init(type: UInt16, flags: UInt16, sequence: UInt32, portID: UInt32, payload: [UInt8]) {
        self.type = type
        self.flags = flags
        self.sequence = sequence
        self.portID = portID
        self.payload = payload
    }

    public var isDone: Bool { type == UInt16(NLMSG_DONE) }
    public var isError: Bool { type == UInt16(NLMSG_ERROR) }
    public var isInterrupted: Bool { flags & UInt16(NLM_F_DUMP_INTR) != 0 }

    /// Splits one datagram into its messages, checking every length against the bytes present.
    public static func parse(_ datagram: UnsafeRawBufferPointer) throws -> [Message] {
        var messages: [Message] = []
        try forEach(in: datagram) { header, payload in
            messages.append(Message(type: header.nlmsg_type, flags: header.nlmsg_flags, sequence: header.nlmsg_seq,
                                    portID: header.nlmsg_pid, payload: Array(payload)))
            return true
        }
        return messages
    }

    /// Walks one datagram's messages in place (header, payload) without copying them, until
    /// `body` returns false, checking every length against the bytes present as `parse` does.
    static func forEach(in datagram: UnsafeRawBufferPointer,
                        _ body: (nlmsghdr, UnsafeRawBufferPointer) throws -> Bool) throws {
        guard let start = datagram.baseAddress, !datagram.isEmpty else { return }
        var header = UnsafeMutableRawPointer(mutating: start).assumingMemoryBound(to: nlmsghdr.self)
        var remaining = Int32(datagram.count)
        var seen = 0
        // mnl_nlmsg_ok() compares nlmsg_len as a signed int: a length of 2^31 or more passes it.
        while mnl_nlmsg_ok(header, remaining), header.pointee.nlmsg_len <= UInt32(remaining) {
            let length = Int(header.pointee.nlmsg_len)
            let payloadStart = UnsafeRawPointer(header) + Int(cnl_nlmsg_hdrlen())
            seen += 1
            guard try body(header.pointee, UnsafeRawBufferPointer(start: payloadStart, count: length - Int(cnl_nlmsg_hdrlen()))) else { return }
            header = mnl_nlmsg_next(header, &remaining)
        }
        if remaining >= Int32(cnl_nlmsg_hdrlen()) || (remaining > 0 && seen == 0) {
            throw NetlinkError.malformed("message length does not fit the \(remaining) bytes left")
        }
    }

    public static func parse(_ bytes: [UInt8]) throws -> [Message] {
        try bytes.withUnsafeBytes { try parse($0) }
    }

    /// Reads the fixed family header (`rtmsg`, `ndmsg`, …) at the start of the payload.
    public func familyHeader<T>(_: T.Type) throws -> T {
        guard payload.count >= MemoryLayout<T>.size else {
            throw NetlinkError.malformed("payload of \(payload.count) bytes is shorter than its \(MemoryLayout<T>.size)-byte header")
        }
        return payload.withUnsafeBytes { $0.loadUnaligned(as: T.self) }
    }

    /// The attributes that follow a family header of type `T`.
    public func attributes<T>(after _: T.Type) throws -> Attributes {
        let offset = Int(cnl_nlmsg_align(UInt32(MemoryLayout<T>.size)))
        guard payload.count >= offset else {
            throw NetlinkError.malformed("payload of \(payload.count) bytes is shorter than its \(offset)-byte header")
        }
        return try Attributes(parsing: payload[offset...])
    }

    /// For an `NLMSG_ERROR` (or an `NLMSG_DONE` with a status): the errno (0 is an ack) and the
    /// extended-ack text. Requires `NETLINK_CAP_ACK`-shaped or full errors alike.
    func status() throws -> (errno: Int32, message: String?) {
        guard payload.count >= 4 else { throw NetlinkError.malformed("error message of \(payload.count) bytes") }
        let error = payload.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
        // The kernel sends 0 or a negated errno (MAX_ERRNO is 4095); negating Int32.min would trap.
        guard (-4095...0).contains(error) else { throw NetlinkError.malformed("error status \(error) is not a negated errno") }
        guard flags & UInt16(NLM_F_ACK_TLVS) != 0 else { return (-error, nil) }
        // NLMSG_DONE: the status then TLVs. NLMSG_ERROR: nlmsgerr (status + the request's header),
        // then the request's payload unless capped, then TLVs.
        var offset = isError ? Int(cnl_sizeof_nlmsgerr()) : 4
        if isError, flags & UInt16(NLM_F_CAPPED) == 0, payload.count >= offset {
            let requestLength = payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) }
            offset = 4 + Int(cnl_nlmsg_align(requestLength))
        }
        guard offset <= payload.count else { return (-error, nil) }
        let tlvs = try Attributes(parsing: payload[offset...])
        return (-error, tlvs.string(UInt16(NLMSGERR_ATTR_MSG.rawValue)))
    }
}
