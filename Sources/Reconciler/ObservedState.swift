import Netlink

/// What was read from the kernel, as values. `nil` for a part means "not read" (unknown), which
/// `plan` treats as pending rather than as empty: it never removes what it could not see.
public struct ObservedState: Hashable, Sendable {
    public var links: [Link]
    /// IPv6 routes of every table.
    public var routes: [Route]
    public var proxies: [ProxyEntry]
    /// IPv6 interface addresses (the anycast safety rule reads the LAN's).
    public var addresses: [Address]
    /// Sysctl values by key (`Sysctl.key`); a missing key was not read.
    public var sysctls: [String: String]
    /// WireGuard devices by name; nil when WireGuard state could not be read at all.
    public var wireGuard: [String: WireGuardDevice]?
    /// The datapath's map entries; nil when the datapath is not loaded or was not read.
    public var datapath: Set<DatapathEntry>?
    /// Why a part is nil, in words (`WireGuard: Operation not permitted`), for the operator.
    public var readProblems: [String] = []

    public init(links: [Link] = [], routes: [Route] = [], proxies: [ProxyEntry] = [], addresses: [Address] = [],
                sysctls: [String: String] = [:], wireGuard: [String: WireGuardDevice]? = [:], datapath: Set<DatapathEntry>? = nil) {
        self.links = links
        self.routes = routes
        self.proxies = proxies
        self.addresses = addresses
        self.sysctls = sysctls
        self.wireGuard = wireGuard
        self.datapath = datapath
    }

    public func link(named name: String) -> Link? { links.first { $0.name == name } }
    public func link(index: Int32) -> Link? { links.first { $0.index == index } }
}

/// What wgkeeper last applied, kept by the daemon between reconciles: the configured endpoint of
/// each peer, so that a roamed endpoint is only overwritten when the configuration changed.
public struct LastApplied: Hashable, Sendable {
    public struct PeerKey: Hashable, Sendable {
        public var device: String
        public var publicKey: WireGuardKey
        public init(device: String, publicKey: WireGuardKey) {
            self.device = device
            self.publicKey = publicKey
        }
    }

    public var endpoints: [PeerKey: ConfiguredEndpoint?]

    public init(endpoints: [PeerKey: ConfiguredEndpoint?] = [:]) { self.endpoints = endpoints }

    /// The record after `desired` was applied in full.
    public init(_ desired: DesiredState) {
        endpoints = [:]
        for device in desired.devices {
            for peer in device.peers {
                endpoints[PeerKey(device: device.name, publicKey: peer.publicKey)] = .some(peer.endpoint)
            }
        }
    }

    /// Records one peer's endpoint after its change was applied.
    public mutating func record(device: String, publicKey: WireGuardKey, endpoint: ConfiguredEndpoint?) {
        endpoints[PeerKey(device: device, publicKey: publicKey)] = .some(endpoint)
    }
}
