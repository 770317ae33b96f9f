import Netlink

/// What the kernel should hold: plain values, no I/O. Built by `Config`; read by `plan`.
/// Objects name their devices; `plan` resolves names to indexes against what it observed.
public struct DesiredState: Hashable, Sendable {
    /// `rtm_protocol` / `NDA_PROTOCOL` that marks routes and proxy entries as wgkeeper's.
    public var routeProtocol: UInt8
    public var devices: [DesiredWireGuardDevice]
    public var sysctls: [DesiredSysctl]
    public var routes: [DesiredRoute]
    public var proxies: [DesiredProxy]
    /// nil when the datapath is not wanted (`gateway.redirect: false` or no gateway).
    public var datapath: DesiredDatapath?
    /// Values that must hold but that wgkeeper never writes (`all.forwarding = 0`).
    public var safetyChecks: [SafetyCheck]
    /// The `gateway` section as configured, for the daemon's anycast check and the datapath.
    public var gateway: DesiredGateway?
    /// The `policy` section with groups expanded; nil when there is none (everything allowed).
    public var policy: DesiredPolicy?

    public init(routeProtocol: UInt8 = 77, devices: [DesiredWireGuardDevice] = [], sysctls: [DesiredSysctl] = [],
                routes: [DesiredRoute] = [], proxies: [DesiredProxy] = [], datapath: DesiredDatapath? = nil,
                safetyChecks: [SafetyCheck] = [], gateway: DesiredGateway? = nil) {
        self.routeProtocol = routeProtocol
        self.devices = devices
        self.sysctls = sysctls
        self.routes = routes
        self.proxies = proxies
        self.datapath = datapath
        self.safetyChecks = safetyChecks
        self.gateway = gateway
    }

    /// Every interface the desired state names. Objects on other interfaces are never planned.
    public var managedInterfaces: Set<String> {
        var names = Set(devices.map(\.name))
        names.formUnion(sysctls.map(\.interface))
        names.formUnion(routes.map(\.device))
        names.formUnion(proxies.map(\.device))
        if let datapath { names.formUnion([datapath.lan, datapath.tunnel]) }
        if let gateway { names.formUnion([gateway.lan, gateway.tunnel]) }
        return names.subtracting(["all", "default"])
    }

    public var peerCount: Int { devices.reduce(0) { $0 + $1.peers.count } }
}

/// A WireGuard device wgkeeper manages; it must already exist (wgkeeper does not create links).
public struct DesiredWireGuardDevice: Hashable, Sendable {
    public var name: String
    public var privateKey: PrivateKey?
    /// nil leaves the port as the kernel has it.
    public var listenPort: UInt16?
    /// When false, peers that are not configured are left on the device.
    public var prunePeers: Bool
    public var peers: [DesiredPeer]

    public init(name: String, privateKey: PrivateKey? = nil, listenPort: UInt16? = nil, prunePeers: Bool = true,
                peers: [DesiredPeer] = []) {
        self.name = name
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.prunePeers = prunePeers
        self.peers = peers
    }
}

/// A configured endpoint: an address now, or a host name resolved when the change is applied.
public enum ConfiguredEndpoint: Hashable, Sendable, CustomStringConvertible {
    case address(Endpoint)
    case host(String, port: UInt16)

    public var description: String {
        switch self {
        case .address(let endpoint): endpoint.description
        case .host(let name, let port): "\(name):\(port)"
        }
    }
}

public struct DesiredPeer: Hashable, Sendable {
    /// The operator's name for the device (`alice-laptop`); unique across the configuration.
    public var name: String
    public var publicKey: WireGuardKey
    public var presharedKey: PresharedKey?
    public var endpoint: ConfiguredEndpoint?
    /// Seconds; 0 is off.
    public var persistentKeepalive: UInt16
    public var allowedIPs: [IPPrefix]

    public init(name: String, publicKey: WireGuardKey, presharedKey: PresharedKey? = nil,
                endpoint: ConfiguredEndpoint? = nil, persistentKeepalive: UInt16 = 0, allowedIPs: [IPPrefix] = []) {
        self.name = name
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.persistentKeepalive = persistentKeepalive
        self.allowedIPs = allowedIPs
    }
}

/// An IPv6 per-interface sysctl (`net.ipv6.conf.<interface>.<name>`).
public struct DesiredSysctl: Hashable, Sendable {
    public var interface: String
    public var name: String
    public var value: String

    public init(interface: String, name: String, value: String) {
        self.interface = interface
        self.name = name
        self.value = value
    }

    public var sysctl: Sysctl { Sysctl.ipv6(interface: interface, name) }
}

public struct DesiredGateway: Hashable, Sendable {
    public var tunnel: String
    public var lan: String
    public var lanPrefix: IPPrefix
    public var proxyNDP: Bool
    public var redirect: Bool
    /// When false, a LAN subnet-router anycast address joined by the host is a safety violation
    /// (docs/ARCHITECTURE.md, kernel facts; the daemon reads /proc/net/anycast6).
    public var allowLANAnycast: Bool
    /// When false, a peer's allowed IP holding an address the gateway has on the LAN is
    /// refused by `plan` (`GatewayAddressRule`).
    public var allowUnsafeAllowedIPs: Bool
    /// Who answers neighbour discovery for the clients on the LAN.
    public var ndp: NeighbourDiscoveryMode

    public init(tunnel: String, lan: String, lanPrefix: IPPrefix, proxyNDP: Bool = true, redirect: Bool = true,
                allowLANAnycast: Bool = false, allowUnsafeAllowedIPs: Bool = false,
                ndp: NeighbourDiscoveryMode = .kernel) {
        self.tunnel = tunnel
        self.lan = lan
        self.lanPrefix = lanPrefix
        self.proxyNDP = proxyNDP
        self.redirect = redirect
        self.allowLANAnycast = allowLANAnycast
        self.allowUnsafeAllowedIPs = allowUnsafeAllowedIPs
        self.ndp = ndp
    }
}

/// `gateway.ndp`: who answers the LAN's Neighbor Solicitations for the clients' addresses.
public enum NeighbourDiscoveryMode: String, Hashable, Sendable, CaseIterable {
    /// One proxy entry per address, with the LAN's `forwarding` and `proxy_ndp` at 1.
    case kernel
    /// The LAN's TC program answers from its clients map and the daemon joins the addresses'
    /// solicited-node groups: nothing is written to the LAN's sysctls.
    case datapath
}

/// A value that must hold for the gateway to be safe, which wgkeeper reports but never sets.
public struct SafetyCheck: Hashable, Sendable {
    public var sysctl: Sysctl
    public var expected: String
    public var why: String

    public init(sysctl: Sysctl, expected: String, why: String) {
        self.sysctl = sysctl
        self.expected = expected
        self.why = why
    }
}

/// Where a desired object came from, for messages (`derived from peer alice-laptop`).
public enum Origin: Hashable, Sendable, CustomStringConvertible {
    case explicit
    case peer(String)
    case lanPrefix

    public var description: String {
        switch self {
        case .explicit: "explicit"
        case .peer(let name): "peer \(name)"
        case .lanPrefix: "gateway lan_prefix"
        }
    }
}

public struct DesiredRoute: Hashable, Sendable {
    /// The kernel's default metric for IPv6 routes (`IP6_RT_PRIO_USER`).
    public static let defaultMetric: UInt32 = 1024

    public var destination: IPPrefix
    public var device: String
    public var gateway: IPAddress?
    public var table: UInt32
    /// Always explicit, so that what the kernel reports compares equal.
    public var metric: UInt32
    public var origin: Origin

    public init(destination: IPPrefix, device: String, gateway: IPAddress? = nil, table: UInt32 = Route.mainTable,
                metric: UInt32 = DesiredRoute.defaultMetric, origin: Origin = .explicit) {
        self.destination = destination
        self.device = device
        self.gateway = gateway
        self.table = table
        self.metric = metric
        self.origin = origin
    }

    /// The kernel's identity of an IPv6 route: a second route with the same one is a conflict.
    public var identity: RouteIdentity { RouteIdentity(table: table, destination: destination, metric: metric) }
}

public struct RouteIdentity: Hashable, Sendable, Comparable {
    public var table: UInt32
    public var destination: IPPrefix
    public var metric: UInt32

    public init(table: UInt32, destination: IPPrefix, metric: UInt32) {
        self.table = table
        self.destination = destination
        self.metric = metric
    }

    public init(_ route: Route) {
        self.init(table: route.table, destination: route.destination, metric: route.metric ?? DesiredRoute.defaultMetric)
    }

    public static func < (a: Self, b: Self) -> Bool {
        (a.table, a.destination, a.metric) < (b.table, b.destination, b.metric)
    }
}

public struct DesiredProxy: Hashable, Sendable {
    public var address: IPAddress
    public var device: String
    public var origin: Origin

    public init(address: IPAddress, device: String, origin: Origin = .explicit) {
        self.address = address
        self.device = device
        self.origin = origin
    }
}

/// The redirect datapath's map contents: which destinations go from the LAN to the tunnel
/// (the clients' prefixes) and from the tunnel to the LAN (the LAN prefix).
public struct DesiredDatapath: Hashable, Sendable {
    public var lan: String
    public var tunnel: String
    public var entries: [DatapathEntry]
    public var icmp: DatapathICMP
    /// nil: the LAN program leaves Neighbor Solicitations to the kernel (`ndp: kernel`).
    public var neighbourDiscovery: DatapathNeighbourDiscovery?
    /// The policy as the programs' maps hold it; nil: no policy (everything allowed).
    public var policy: CompiledPolicy?

    public init(lan: String, tunnel: String, entries: [DatapathEntry], icmp: DatapathICMP = DatapathICMP(),
                neighbourDiscovery: DatapathNeighbourDiscovery? = nil) {
        self.lan = lan
        self.tunnel = tunnel
        self.entries = entries
        self.icmp = icmp
        self.neighbourDiscovery = neighbourDiscovery
    }
}

/// `ndp: datapath`: the LAN program answers Neighbor Solicitations for these client addresses
/// (the /128s inside the LAN prefix), and the daemon joins their solicited-node groups on the
/// LAN so that multicast solicitations reach it.
public struct DatapathNeighbourDiscovery: Hashable, Sendable {
    public var addresses: [IPAddress]

    public init(addresses: [IPAddress]) { self.addresses = addresses }
}

/// The datapath's ICMPv6 errors (Time Exceeded, Packet Too Big): their sources, nil for an
/// address found on that side's interface, and the per-destination interval
/// (net.ipv6.icmp.ratelimit; zero limits nothing).
public struct DatapathICMP: Hashable, Sendable {
    public var sourceLAN: IPAddress?
    public var sourceTunnel: IPAddress?
    public var rateLimit: Duration

    public init(sourceLAN: IPAddress? = nil, sourceTunnel: IPAddress? = nil, rateLimit: Duration = .milliseconds(1000)) {
        self.sourceLAN = sourceLAN
        self.sourceTunnel = sourceTunnel
        self.rateLimit = rateLimit
    }
}

/// Which of the datapath's two prefix maps an entry belongs to.
public enum DatapathDirection: String, Hashable, Sendable, Comparable, Codable {
    /// LAN ingress → tunnel: the VPN clients' prefixes (`client_prefixes`).
    case lanToTunnel = "lan-to-tunnel"
    /// Tunnel ingress → LAN: the LAN prefix (`lan_prefixes`).
    case tunnelToLAN = "tunnel-to-lan"

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// One map entry: packets arriving in `direction` for a destination inside `prefix` are redirected.
public struct DatapathEntry: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var direction: DatapathDirection
    public var prefix: IPPrefix

    public init(direction: DatapathDirection, prefix: IPPrefix) {
        self.direction = direction
        self.prefix = prefix
    }

    public var description: String { "\(direction.rawValue) \(prefix)" }
    public static func < (a: Self, b: Self) -> Bool { (a.direction, a.prefix) < (b.direction, b.prefix) }
}
