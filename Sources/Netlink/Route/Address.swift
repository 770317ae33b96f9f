import CNetlink

/// An interface address (`struct ifaddrmsg` + `IFA_*`).
public struct Address: Hashable, Sendable, CustomStringConvertible {
    public var prefix: IPPrefix
    public var interfaceIndex: Int32
    public var scope: UInt8
    public var flags: UInt32

    public init(prefix: IPPrefix, interfaceIndex: Int32, scope: UInt8 = 0, flags: UInt32 = 0) {
        self.prefix = prefix
        self.interfaceIndex = interfaceIndex
        self.scope = scope
        self.flags = flags
    }

    public var description: String { "\(prefix) ifindex \(interfaceIndex)" }

    public static func decode(_ message: Message) throws -> Address? {
        let header = try message.familyHeader(ifaddrmsg.self)
        let attributes = try message.attributes(after: ifaddrmsg.self)
        // IFA_LOCAL is the local address on point-to-point links; IFA_ADDRESS otherwise.
        guard let address = try attributes.address(UInt16(IFA_LOCAL)) ?? attributes.address(UInt16(IFA_ADDRESS)),
              Int(header.ifa_prefixlen) <= address.bitWidth
        else { return nil }
        return Address(prefix: IPPrefix(address: address, length: header.ifa_prefixlen),
                       interfaceIndex: Int32(bitPattern: header.ifa_index), scope: header.ifa_scope,
                       flags: try attributes.u32(UInt16(IFA_FLAGS)) ?? UInt32(header.ifa_flags))
    }

    public static func dumpRequest(family: AddressFamily) -> Request {
        Request(type: UInt16(RTM_GETADDR), flags: Request.dump, summary: "dump \(family) addresses") { writer in
            var header = ifaddrmsg()
            header.ifa_family = family.rawValue
            writer.put(header: header)
        }
    }

    public func addRequest() -> Request {
        let address = self
        return Request(type: UInt16(RTM_NEWADDR), flags: Request.create, summary: "add address \(address)") { writer in
            var header = ifaddrmsg()
            header.ifa_family = address.prefix.family.rawValue
            header.ifa_prefixlen = address.prefix.length
            header.ifa_index = UInt32(bitPattern: address.interfaceIndex)
            writer.put(header: header)
            writer.put(UInt16(IFA_LOCAL), address: address.prefix.address)
            writer.put(UInt16(IFA_ADDRESS), address: address.prefix.address)
            if address.flags != 0 { writer.put(UInt16(IFA_FLAGS), u32: address.flags) }
        }
    }
}
