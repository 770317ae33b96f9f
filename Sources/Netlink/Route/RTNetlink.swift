import CNetlink
import Glibc
import SystemPackage

/// Typed rtnetlink operations over one request socket.
public final class RTNetlink {
    public let socket: NetlinkSocket

    public init() throws { socket = try NetlinkSocket(.route) }

    /// Netlink writes made through this socket so far.
    public var writeCount: Int { socket.writeCount }

    public func links() throws -> [Link] { try socket.dump(Link.dumpRequest(), decode: Link.decode) }

    /// The link with this name, or nil when there is none.
    public func link(named name: String) throws -> Link? {
        do {
            return try socket.dump(Link.getRequest(name: name), decode: Link.decode).first
        } catch let error as NetlinkError where error.errno == Errno(rawValue: ENODEV) {
            return nil
        }
    }

    public func addresses(family: AddressFamily) throws -> [Address] {
        try socket.dump(Address.dumpRequest(family: family), decode: Address.decode)
    }

    public func routes(family: AddressFamily, table: UInt32? = nil) throws -> [Route] {
        try socket.dump(Route.dumpRequest(family: family, table: table), decode: Route.decode)
    }

    /// The routes, unless the dump's bytes are the ones `previous` was made of: what a resync
    /// reads, where nothing changed since the last one.
    public func routes(family: AddressFamily, unless previous: ReadDigest?) throws -> DumpOutcome<Route> {
        try socket.dump(Route.dumpRequest(family: family, table: nil), unless: previous, decode: Route.decode)
    }

    public func proxyEntries(family: AddressFamily = .inet6) throws -> [ProxyEntry] {
        try socket.dump(ProxyEntry.dumpRequest(family: family), decode: ProxyEntry.decode)
    }

    /// The proxy entries, unless the dump's bytes are the ones `previous` was made of (see
    /// `NetlinkSocket.dump(_:unless:decode:)`): what the proxy poll reads every few seconds.
    public func proxyEntries(family: AddressFamily = .inet6, unless previous: ReadDigest?) throws -> DumpOutcome<ProxyEntry> {
        try socket.dump(ProxyEntry.dumpRequest(family: family), unless: previous, decode: ProxyEntry.decode)
    }

    public func netconf(family: AddressFamily) throws -> [Netconf] {
        try socket.dump(Netconf.dumpRequest(family: family), decode: Netconf.decode)
    }

    /// Sends the requests batched; one result per request, in order.
    public func perform(_ requests: [Request]) throws -> [Result<Void, NetlinkError>] {
        try socket.perform(requests)
    }
}
