import Netlink
import Reconciler

/// The configuration after validation: typed values, each with where it was written.
public struct Configuration: Sendable {
    public var runtime = RuntimeSettings()
    public var devices: [DeviceSection] = []
    public var gateway: GatewaySection?
    public var routes: [RouteEntry] = []
    public var proxies: [ProxyEntrySection] = []
    /// nil: no `policy` section (everything allowed both ways, as before there was one).
    public var policy: PolicySection?
    /// The files read, main file first.
    public var files: [String] = []
}

public struct RuntimeSettings: Hashable, Sendable {
    public var statusSocket = "/run/wgkeeper/status.sock"
    /// Group (name or number) allowed on the status socket besides root; it owns the socket file.
    public var statusGroup: String?
    public var bpfPinRoot = "/sys/fs/bpf/wgkeeper"
    /// Where the records of what wgkeeper changed live (sysctls' earlier values, devices it
    /// created); the status socket's directory unless set.
    public var stateDirectory: String?
    public var stateDir: String { stateDirectory ?? statusSocket.deletingLastPathComponent }
    public var routeProtocol: UInt8 = 77
    public var wireGuardPoll: Duration = .seconds(2)
    public var proxyPoll: Duration = .seconds(2)
    public var resync: Duration = .seconds(60)
    /// Resolved (absolute, under the root when one was given).
    public var includeDir: String?

    public init() {}
}

public struct DeviceSection: Sendable {
    public var name: String
    public var location: SourceLocation
    public var privateKey: PrivateKey?
    /// As written, and where.
    public var privateKeyFile: (path: String, location: SourceLocation)?
    public var listenPort: UInt16?
    public var prunePeers = true
    public var peers = PeerSections()
}

public struct PeerSection: Sendable {
    public var location: SourceLocation
    public var presharedKeyFile: (path: String, location: SourceLocation)?
    public var peer: DesiredPeer
    /// Where each allowed IP was written, in `peer.allowedIPs` order.
    public var allowedIPLocations: [SourceLocation]
    public var endpointLocation: SourceLocation? = nil

    init(location: SourceLocation, presharedKeyFile: (path: String, location: SourceLocation)? = nil, peer: DesiredPeer,
         allowedIPLocations: [SourceLocation], endpointLocation: SourceLocation? = nil) {
        self.location = location
        self.presharedKeyFile = presharedKeyFile
        self.peer = peer
        self.allowedIPLocations = allowedIPLocations
        self.endpointLocation = endpointLocation
    }

    init(_ place: PeerPlace, _ peer: DesiredPeer) {
        self.init(location: place.location, presharedKeyFile: place.presharedKeyFile, peer: peer,
                  allowedIPLocations: place.allowedIPLocations, endpointLocation: place.endpointLocation)
    }

    var place: PeerPlace {
        PeerPlace(location: location, presharedKeyFile: presharedKeyFile, allowedIPLocations: allowedIPLocations,
                  endpointLocation: endpointLocation)
    }
}

/// Where a peer's parts were written.
struct PeerPlace: Sendable {
    var location: SourceLocation
    var presharedKeyFile: (path: String, location: SourceLocation)?
    var allowedIPLocations: [SourceLocation]
    var endpointLocation: SourceLocation?
}

/// A device's peers as decoded, each a `PeerSection` made of two arrays: the peers' desired
/// state, which the desired state takes as it is (`desired`: no copy of 12 MiB at 50 000 peers
/// while a reload derives, the largest part of its peak then), and where their parts were written.
public struct PeerSections: RandomAccessCollection, Sendable {
    public private(set) var desired: [DesiredPeer] = []
    private var places: [PeerPlace] = []

    public init() {}

    public var startIndex: Int { 0 }
    public var endIndex: Int { desired.count }

    public subscript(index: Int) -> PeerSection {
        get { PeerSection(places[index], desired[index]) }
        set {
            desired[index] = newValue.peer
            places[index] = newValue.place
        }
    }

    /// Where the peer at `index` was written, read alone (no section made: the checks go over
    /// `desired` and look a place up only for a message).
    public func location(at index: Int) -> SourceLocation { places[index].location }

    /// Where the peer at `index` wrote its allowed IP `item`.
    public func allowedIPLocation(at index: Int, _ item: Int) -> SourceLocation { places[index].allowedIPLocations[item] }

    /// Where the peer at `index` wrote its endpoint, or its section's place.
    func endpointLocation(at index: Int) -> SourceLocation { places[index].endpointLocation ?? places[index].location }

    /// Whether a peer names a preshared key file.
    var hasKeyFiles: Bool { places.contains { $0.presharedKeyFile != nil } }

    public mutating func append(_ section: PeerSection) {
        desired.append(section.peer)
        places.append(section.place)
    }

    public mutating func reserveCapacity(_ count: Int) {
        desired.reserveCapacity(count)
        places.reserveCapacity(count)
    }
}

public struct GatewaySection: Sendable {
    public var location: SourceLocation
    public var tunnel: String
    public var lan: String
    public var lanPrefix: IPPrefix
    public var proxyNDP = true
    public var ndp = NeighbourDiscoveryMode.kernel
    public var redirect = true
    public var allowLANAnycast = false
    /// Lets the tunnel's peers claim `::/0`, `::`, `::1`, link-local, multicast or the LAN prefix.
    public var allowUnsafeAllowedIPs = false
    /// Sources of the datapath's ICMPv6 errors; nil: an address found on the interface.
    public var icmpSourceLAN: IPAddress?
    public var icmpSourceTunnel: IPAddress?
    public var icmpRateLimit: Duration = .milliseconds(1000)
}

public struct RouteEntry: Sendable {
    public var location: SourceLocation
    public var route: DesiredRoute
}

public struct ProxyEntrySection: Sendable {
    public var location: SourceLocation
    public var proxy: DesiredProxy
}

public struct PolicySection: Sendable {
    public var location: SourceLocation
    public var clientToLAN = DesiredPolicy.ClientToLAN.allow
    public var lanToClient = DesiredPolicy.LANToClient.allow
    /// Group name → members (peer names) as written, with where each was written.
    public var groups: [String: (location: SourceLocation, members: [(name: String, location: SourceLocation)])] = [:]
    public var rules: [PolicyRuleSection] = []
}

public struct PolicyRuleSection: Sendable {
    public var location: SourceLocation
    /// Peer names, group names or `any`, as written.
    public var from: [(name: String, location: SourceLocation)]
    public var destination: IPPrefix
    public var proto: PolicyProtocol?
    public var ports: [PortRange]
}
