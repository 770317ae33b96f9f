import CNetlink

/// An IPv6 neighbour-proxy (pneigh) entry: the kernel answers neighbour solicitations for
/// `address` on `interfaceIndex`. The kernel sends no notification when one is added or removed.
public struct ProxyEntry: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var interfaceIndex: Int32
    /// `NDA_PROTOCOL`; 0 when the entry carries none.
    public var protocolNumber: UInt8
    /// `NTF_ROUTER`, which wgkeeper never sets: the kernel's advertisements for the address then
    /// say it is a router. An add or replace without it clears it.
    public var router: Bool

    public init(address: IPAddress, interfaceIndex: Int32, protocolNumber: UInt8, router: Bool = false) {
        self.address = address
        self.interfaceIndex = interfaceIndex
        self.protocolNumber = protocolNumber
        self.router = router
    }

    public var description: String { "proxy \(address) ifindex \(interfaceIndex) proto \(protocolNumber)\(router ? " router" : "")" }

    private static func header(family: AddressFamily, interfaceIndex: Int32) -> ndmsg {
        var header = ndmsg()
        header.ndm_family = family.rawValue
        header.ndm_ifindex = interfaceIndex
        header.ndm_state = UInt16(NUD_PERMANENT)
        header.ndm_flags = UInt8(NTF_PROXY)
        return header
    }

    /// Attribute order as iproute2 writes it. A delete carries no protocol: `pneigh_delete()`
    /// ignores it, so ownership is checked before a delete is ever planned.
    public func encode(into writer: inout MessageWriter, forDelete: Bool = false) {
        writer.put(header: ProxyEntry.header(family: address.family, interfaceIndex: interfaceIndex))
        if protocolNumber != 0, !forDelete { writer.put(UInt16(NDA_PROTOCOL), u8: protocolNumber) }
        writer.put(UInt16(NDA_DST), address: address)
    }

    /// Decodes an `RTM_NEWNEIGH` that describes a proxy entry; nil for ordinary neighbours.
    public static func decode(_ message: Message) throws -> ProxyEntry? {
        let header = try message.familyHeader(ndmsg.self)
        guard header.ndm_flags & UInt8(NTF_PROXY) != 0 else { return nil }
        let attributes = try message.attributes(after: ndmsg.self)
        guard let address = try attributes.address(UInt16(NDA_DST)) else { return nil }
        return ProxyEntry(address: address, interfaceIndex: header.ndm_ifindex,
                          protocolNumber: try attributes.u8(UInt16(NDA_PROTOCOL)) ?? 0,
                          router: header.ndm_flags & UInt8(NTF_ROUTER) != 0)
    }

    public func addRequest() -> Request { request(UInt16(RTM_NEWNEIGH), Request.create, "add") }
    public func replaceRequest() -> Request { request(UInt16(RTM_NEWNEIGH), Request.replace, "replace") }
    public func deleteRequest() -> Request { request(UInt16(RTM_DELNEIGH), Request.remove, "delete") }

    private func request(_ type: UInt16, _ flags: UInt16, _ verb: String) -> Request {
        let entry = self
        let forDelete = type == UInt16(RTM_DELNEIGH)
        return Request(type: type, flags: flags, summary: "\(verb) \(entry)") { entry.encode(into: &$0, forDelete: forDelete) }
    }

    /// With strict checking, `ndm_flags = NTF_PROXY` makes the kernel dump the proxy table only.
    public static func dumpRequest(family: AddressFamily = .inet6, interfaceIndex: Int32? = nil) -> Request {
        Request(type: UInt16(RTM_GETNEIGH), flags: Request.dump, summary: "dump proxy entries") { writer in
            var header = ndmsg()
            header.ndm_family = family.rawValue
            header.ndm_flags = UInt8(NTF_PROXY)
            writer.put(header: header)
            if let interfaceIndex { writer.put(UInt16(NDA_IFINDEX), i32: interfaceIndex) }
        }
    }
}
