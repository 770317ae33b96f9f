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
public struct LastApplied: Equatable, Sendable {
    public struct PeerKey: Hashable, Sendable {
        public var device: String
        public var publicKey: WireGuardKey
        public init(device: String, publicKey: WireGuardKey) {
            self.device = device
            self.publicKey = publicKey
        }
    }

    /// Records, except those of `withoutEndpoint`: a peer recorded there and here has this one.
    private var endpoints: [PeerKey: ConfiguredEndpoint?]
    /// By device, the peers of the desired state this record was made from that had no endpoint,
    /// in key order: most peers of a large gateway have none, and a sorted list of their keys
    /// costs a fraction of a table entry each.
    private var withoutEndpoint: [String: [WireGuardKey]] = [:]

    public init(endpoints: [PeerKey: ConfiguredEndpoint?] = [:]) { self.endpoints = endpoints }

    /// The record after `desired` was applied in full.
    public init(_ desired: DesiredState) {
        endpoints = [:]
        for device in desired.devices {
            var without: [WireGuardKey] = []
            for peer in device.peers {
                if let endpoint = peer.endpoint {
                    endpoints[PeerKey(device: device.name, publicKey: peer.publicKey)] = .some(endpoint)
                } else {
                    without.append(peer.publicKey)
                }
            }
            guard !without.isEmpty else { continue }
            without.sort(by: WireGuardKey.precedes)
            withoutEndpoint[device.name, default: []] = without
        }
    }

    /// The endpoint recorded for a peer: `.some(nil)` when it was applied without one, nil
    /// when nothing was recorded.
    public func endpoint(_ key: PeerKey) -> ConfiguredEndpoint?? {
        if let recorded = endpoints[key] { return recorded }
        return recordedWithoutEndpoint(key) ? .some(nil) : nil
    }

    private func recordedWithoutEndpoint(_ key: PeerKey) -> Bool {
        guard let keys = withoutEndpoint[key.device] else { return false }
        var low = 0, high = keys.count
        while low < high {
            let middle = (low + high) / 2
            if WireGuardKey.precedes(keys[middle], key.publicKey) { low = middle + 1 } else { high = middle }
        }
        return low < keys.count && keys[low] == key.publicKey
    }

    /// Records one peer's endpoint after its change was applied.
    public mutating func record(device: String, publicKey: WireGuardKey, endpoint: ConfiguredEndpoint?) {
        let key = PeerKey(device: device, publicKey: publicKey)
        if endpoint == nil, recordedWithoutEndpoint(key) {
            endpoints[key] = nil
        } else {
            endpoints[key] = .some(endpoint)
        }
    }

    public static func == (a: Self, b: Self) -> Bool {
        let keys = Set(a.endpoints.keys).union(b.endpoints.keys)
            .union(a.withoutEndpoint.flatMap { device, keys in keys.map { PeerKey(device: device, publicKey: $0) } })
            .union(b.withoutEndpoint.flatMap { device, keys in keys.map { PeerKey(device: device, publicKey: $0) } })
        return keys.allSatisfy { a.endpoint($0) == b.endpoint($0) }
    }
}
