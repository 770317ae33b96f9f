import CNetlink

/// The attributes of one netlink message or nest, validated and indexed once.
///
/// Parsing walks the bytes with libmnl's bounds checks; any length that points past the
/// end, or is shorter than an attribute header, is an error: never a crash or a loop.
public struct Attributes: Sendable {
    public struct Attribute: Sendable {
        public let type: UInt16
        public let isNested: Bool
        public let payload: ArraySlice<UInt8>
    }

    public private(set) var all: [Attribute] = []

    public init(parsing bytes: ArraySlice<UInt8>) throws {
        if bytes.isEmpty { return }
        let base = bytes.startIndex
        all = try bytes.withUnsafeBytes { raw -> [Attribute] in
            var found: [Attribute] = []
            var attr = UnsafeMutableRawPointer(mutating: raw.baseAddress!).assumingMemoryBound(to: nlattr.self)
            var remaining = Int32(raw.count)
            while mnl_attr_ok(attr, remaining) {
                let start = UnsafeRawPointer(attr) - raw.baseAddress!
                let length = Int(attr.pointee.nla_len)
                let kind = attr.pointee.nla_type
                found.append(Attribute(
                    type: kind & cnl_nla_type_mask(),
                    isNested: kind & UInt16(NLA_F_NESTED) != 0,
                    payload: bytes[(base + start + 4)..<(base + start + length)]))
                attr = mnl_attr_next(attr)
                remaining -= Int32(cnl_nla_align(UInt32(length)))
            }
            // libmnl stops at the first bad header; whatever is left (beyond alignment padding) is garbage.
            if remaining >= 4 {
                throw NetlinkError.malformed("attribute length \(attr.pointee.nla_len) does not fit the \(remaining) bytes left")
            }
            return found
        }
    }

    public func first(_ type: UInt16) -> Attribute? { all.first { $0.type == type } }
    public func every(_ type: UInt16) -> [Attribute] { all.filter { $0.type == type } }

    public func bytes(_ type: UInt16) -> ArraySlice<UInt8>? { first(type)?.payload }

    public func u8(_ type: UInt16) throws -> UInt8? { try fixed(type, UInt8.self) }
    public func u16(_ type: UInt16) throws -> UInt16? { try fixed(type, UInt16.self) }
    public func u32(_ type: UInt16) throws -> UInt32? { try fixed(type, UInt32.self) }
    public func u64(_ type: UInt16) throws -> UInt64? { try fixed(type, UInt64.self) }
    public func i32(_ type: UInt16) throws -> Int32? { try fixed(type, Int32.self) }

    /// A NUL-terminated string attribute (the NUL is dropped; a missing NUL is tolerated).
    public func string(_ type: UInt16) -> String? {
        guard let payload = bytes(type) else { return nil }
        let text = payload.prefix { $0 != 0 }
        return String(decoding: text, as: UTF8.self)
    }

    public func address(_ type: UInt16) throws -> IPAddress? {
        guard let payload = bytes(type) else { return nil }
        guard let address = IPAddress(bytes: payload) else {
            throw NetlinkError.malformed("attribute \(type): \(payload.count) bytes is not an address")
        }
        return address
    }

    public func nested(_ type: UInt16) throws -> Attributes? {
        guard let payload = bytes(type) else { return nil }
        return try Attributes(parsing: payload)
    }

    private func fixed<T: FixedWidthInteger>(_ type: UInt16, _: T.Type) throws -> T? {
        guard let payload = bytes(type) else { return nil }
        guard payload.count == MemoryLayout<T>.size else {
            throw NetlinkError.malformed("attribute \(type): \(payload.count) bytes where \(MemoryLayout<T>.size) were expected")
        }
        return payload.withUnsafeBytes { $0.loadUnaligned(as: T.self) }
    }
}
