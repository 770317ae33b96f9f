import CNetlink

/// Per-interface IP configuration the kernel notifies through `RTM_NEWNETCONF`.
public struct Netconf: Hashable, Sendable, CustomStringConvertible {
    /// An interface index, or `Netconf.all` / `Netconf.defaults`.
    public var interfaceIndex: Int32
    public var family: AddressFamily
    public var forwarding: Bool?
    public var proxyNeighbour: Bool?

    public static let all = Int32(NETCONFA_IFINDEX_ALL)
    public static let defaults = Int32(NETCONFA_IFINDEX_DEFAULT)

    public init(interfaceIndex: Int32, family: AddressFamily, forwarding: Bool? = nil, proxyNeighbour: Bool? = nil) {
        self.interfaceIndex = interfaceIndex
        self.family = family
        self.forwarding = forwarding
        self.proxyNeighbour = proxyNeighbour
    }

    public var description: String {
        "netconf \(family) ifindex \(interfaceIndex) forwarding \(forwarding.map(String.init) ?? "?") proxy_neigh \(proxyNeighbour.map(String.init) ?? "?")"
    }

    public static func decode(_ message: Message) throws -> Netconf? {
        let header = try message.familyHeader(netconfmsg.self)
        guard let family = AddressFamily(rawValue: header.ncm_family) else { return nil }
        let attributes = try message.attributes(after: netconfmsg.self)
        guard let index = try attributes.i32(UInt16(NETCONFA_IFINDEX)) else { return nil }
        return Netconf(interfaceIndex: index, family: family,
                       forwarding: try attributes.i32(UInt16(NETCONFA_FORWARDING)).map { $0 != 0 },
                       proxyNeighbour: try attributes.i32(UInt16(NETCONFA_PROXY_NEIGH)).map { $0 != 0 })
    }

    public static func dumpRequest(family: AddressFamily) -> Request {
        Request(type: UInt16(RTM_GETNETCONF), flags: Request.dump, summary: "dump \(family) netconf") { writer in
            var header = netconfmsg()
            header.ncm_family = family.rawValue
            writer.put(header: header)
        }
    }
}
