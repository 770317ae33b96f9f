import Netlink

/// The kernel as last seen: seeded by dumps, kept current by rtnetlink events. A value type
/// with no I/O: the daemon does the reading and feeds it here, so its rules are testable on
/// recorded event sequences.
///
/// Events that race a dump: the reader drains the event queue, dumps, drains again, and replays
/// every drained event, in order, over the dump (`seed(...)` then `apply(_:)` for each). Each
/// event sets or removes one key with the object's full value, so an event the dump already
/// reflects changes nothing on replay, and the last event for a key wins: nothing that happened
/// while the dump ran is lost, and nothing older than the dump undoes it.
public struct KernelCache: Sendable {
    /// The parts the cache holds; each is re-read on its own.
    public enum Part: Hashable, Sendable, CaseIterable {
        case links, routes, addresses, sysctls, proxies, wireGuard, datapath
    }

    /// Bumped by every change to what `observed` gives (what `plan` reads): by events and by
    /// reads that found something other than what the cache held. A read that finds what it
    /// held, and an event that changes nothing, leave it as it was, so an unchanged version
    /// means `plan` would see the same kernel (WireGuard: its planned fields, `samePlanned`).
    /// The observers below count a write whatever it writes; the seeds compare first.
    public private(set) var version = 0

    public private(set) var links: [Int32: Link] = [:] { didSet { version &+= 1 } }
    /// IPv6 routes by identity: usually one each, but the kernel keeps several at one identity
    /// when they differ in device or gateway (`ip route append`).
    public private(set) var routes: [RouteIdentity: [Route]] = [:] { didSet { routesDigest = nil; version &+= 1 } }
    /// The digest of the dump `routes` was decoded from, kept only while no event or dump has
    /// changed them since: a resync whose route dump has this digest decodes nothing.
    public private(set) var routesDigest: ReadDigest?
    public private(set) var addresses: [AddressKey: Address] = [:] { didSet { version &+= 1 } }
    public var proxies: [ProxyEntry] = [] { didSet { proxyDigest = nil; version &+= 1 } }
    /// The digest of the dump `proxies` was decoded from, kept only while nothing else has
    /// changed them: a poll whose dump has this digest has nothing new (`seed(proxies:digest:)`).
    public private(set) var proxyDigest: ReadDigest?
    /// Values by `Sysctl.key`; a missing key was not read (or cannot be).
    public var sysctls: [String: String] = [:] { didSet { version &+= 1 } }
    /// WireGuard devices by name; nil while the WireGuard family cannot be reached. Handshake
    /// times and byte counters change with traffic and are never planned: they leave `version`.
    public var wireGuard: [String: WireGuardDevice]? {
        get { wireGuardDevices }
        set {
            let old = wireGuardDevices
            wireGuardDevices = newValue
            wireGuardDigests = [:]
            if !KernelCache.samePlanned(newValue, old) { version &+= 1 }
        }
    }
    private var wireGuardDevices: [String: WireGuardDevice]?
    /// By device: the digest of the dump that device's value was decoded from, kept only while
    /// nothing else has changed `wireGuard`.
    public private(set) var wireGuardDigests: [String: ReadDigest] = [:]
    /// The datapath's map entries; nil while it is not loaded.
    public var datapath: Set<DatapathEntry>? { didSet { datapathDigest = nil; version &+= 1 } }
    /// The digest of the map reads `datapath` was decoded from, kept only while nothing else
    /// has changed it (a write folded in, the datapath unloaded).
    public private(set) var datapathDigest: ReadDigest?
    /// Parts to re-read before the next plan. Everything, until the first full read.
    public var stale: Set<Part> = Set(Part.allCases)
    /// Event queue overflows seen (each one made everything stale).
    public private(set) var overflows = 0
    /// Route identities that events changed since `takeChanges()`: what a plan of the routes
    /// at those identities alone (`RoutePlanner`) has to look at.
    public private(set) var touchedRoutes: Set<RouteIdentity> = []
    /// Something other than a route changed since `takeChanges()` (a link, an address, a dump):
    /// only a full plan is right then.
    public private(set) var changedBeyondRoutes = true

    /// What changed since the last call, and starts counting afresh.
    public mutating func takeChanges() -> (routes: Set<RouteIdentity>, beyondRoutes: Bool) {
        defer { touchedRoutes = []; changedBeyondRoutes = false }
        return (touchedRoutes, changedBeyondRoutes)
    }

    public struct AddressKey: Hashable, Sendable {
        public var interfaceIndex: Int32
        public var prefix: IPPrefix
        public init(_ address: Address) {
            interfaceIndex = address.interfaceIndex
            prefix = address.prefix
        }
    }

    public init() {}

    // MARK: seeding from dumps

    public mutating func seed(links dumped: [Link]) {
        let read = Dictionary(dumped.map { ($0.index, $0) }, uniquingKeysWith: { a, _ in a })
        if read != links { links = read }
        stale.remove(.links)
        changedBeyondRoutes = true
    }

    /// IPv6 routes of every table (others are ignored), as a dump with this digest decoded them.
    public mutating func seed(routes dumped: [Route], digest: ReadDigest? = nil) {
        let read = Dictionary(grouping: dumped.lazy.filter { $0.family == .inet6 }, by: RouteIdentity.init)
        if read != routes { routes = read }
        routesDigest = digest
        stale.remove(.routes)
        changedBeyondRoutes = true
    }

    /// A route dump read the bytes `routes` were decoded from: they are what the kernel holds.
    public mutating func confirmRoutes() {
        stale.remove(.routes)
    }

    public mutating func seed(addresses dumped: [Address]) {
        let read = Dictionary(dumped.map { (AddressKey($0), $0) }, uniquingKeysWith: { a, _ in a })
        if read != addresses { addresses = read }
        stale.remove(.addresses)
        changedBeyondRoutes = true
    }

    /// Proxy entries as a dump with this digest decoded them; true when they are not the
    /// entries held. The same entries in another order (the dump's, against the cache's after
    /// `fold(proxyWrites:)`) are the same table: the digest is taken and nothing changes.
    @discardableResult
    public mutating func seed(proxies dumped: [ProxyEntry], digest: ReadDigest?) -> Bool {
        let changed = dumped != proxies && (dumped.count != proxies.count || Set(dumped) != Set(proxies))
        if changed { proxies = dumped }
        proxyDigest = digest
        return changed
    }

    /// Proxy writes the kernel acknowledged, folded in as a dump would show them (it sends no
    /// event for proxy entries, and reading 50 000 of them back after each write would cost
    /// tens of milliseconds): an add leaves one entry at its address and device, with its
    /// protocol (an add without one keeps the protocol the entry had: `neigh_add` sets it only
    /// when given), a delete none; nothing on a device the cache no longer has (deleted after
    /// the write: the kernel dropped its entries). Linear in the table, whatever the number of writes.
    public mutating func fold(proxyWrites writes: [(entry: ProxyEntry, removed: Bool)]) {
        guard !writes.isEmpty else { return }
        struct Place: Hashable { var address: IPAddress; var interfaceIndex: Int32 }
        var written: [Place: (entry: ProxyEntry, removed: Bool)] = [:]
        for write in writes { written[Place(address: write.entry.address, interfaceIndex: write.entry.interfaceIndex)] = write }
        // A reload's few writes are compared one by one, not hashed for each of 10 000 entries.
        let few = written.count <= 8 ? Array(written.keys) : nil
        var kept: [ProxyEntry] = []
        kept.reserveCapacity(proxies.count + writes.count)
        var had: [Place: UInt8] = [:]
        for entry in proxies {
            let place = Place(address: entry.address, interfaceIndex: entry.interfaceIndex)
            if !(few?.contains(place) ?? (written[place] != nil)) { kept.append(entry) } else { had[place] = entry.protocolNumber }
        }
        // A device the cache knows is gone took its entries with it: a deletion drained after
        // the write (`drainEvents` runs before this) found none of these to remove.
        for (place, write) in written where !write.removed && links[place.interfaceIndex] != nil {
            var entry = write.entry
            if entry.protocolNumber == 0 { entry.protocolNumber = had[place] ?? 0 }
            kept.append(entry)
        }
        proxies = kept
    }

    /// The values of the sysctls read, by key.
    public mutating func seed(sysctls read: [String: String]) {
        if read != sysctls { sysctls = read }
    }

    /// The datapath's entries as map reads with this digest decoded them.
    public mutating func seed(datapath read: Set<DatapathEntry>?, digest: ReadDigest?) {
        if read != datapath { datapath = read }
        datapathDigest = digest
    }

    /// WireGuard devices as dumps with these digests (by device) decoded them.
    public mutating func seed(wireGuard read: [String: WireGuardDevice]?, digests: [String: ReadDigest]) {
        wireGuard = read
        wireGuardDigests = digests
    }

    /// A poll of the device found its dump unchanged but for these traffic figures (one per
    /// peer, in order): taken in place, the digest kept, `version` left (nothing planned reads
    /// them). False, and nothing taken, when they do not fit the cached device: read it again.
    public mutating func take(traffic: [WireGuardTraffic], device name: String) -> Bool {
        guard wireGuardDigests[name] != nil, wireGuardDevices?[name] != nil else { return false }
        return wireGuardDevices![name]!.take(traffic)
    }

    /// The next reads decode in full, whatever their bytes.
    public mutating func forgetDigests() {
        routesDigest = nil
        proxyDigest = nil
        datapathDigest = nil
        wireGuardDigests = [:]
    }

    // MARK: events

    /// Folds one event in. Returns whether the cache (or what must be re-read) changed, so the
    /// caller knows whether a reconcile is worth scheduling.
    @discardableResult
    public mutating func apply(_ event: RouteEvent) -> Bool {
        let changed = fold(event)
        if changed {
            switch event {
            case .newRoute(let route), .replacedRoute(let route), .deletedRoute(let route): touchedRoutes.insert(RouteIdentity(route))
            default: changedBeyondRoutes = true
            }
        }
        return changed
    }

    private mutating func fold(_ event: RouteEvent) -> Bool {
        let before = stale
        switch event {
        case .newRoute(let route):
            guard route.family == .inet6 else { return false }
            var present = routes[RouteIdentity(route), default: []]
            if let i = present.firstIndex(where: { $0.sameNextHop(route) }) {
                guard present[i] != route else { return false }
                present[i] = route
            } else {
                present.append(route)
            }
            routes[RouteIdentity(route)] = present
            return true
        case .replacedRoute(let route):
            guard route.family == .inet6 else { return false }
            guard routes[RouteIdentity(route)] != [route] else { return false }
            routes[RouteIdentity(route)] = [route]
            return true
        case .deletedRoute(let route):
            guard route.family == .inet6 else { return false }
            // Another protocol's route at the same identity is a different route.
            let key = RouteIdentity(route)
            guard var present = routes[key],
                  let i = present.firstIndex(where: { $0.sameNextHop(route) && $0.protocolNumber == route.protocolNumber })
            else { return false }
            present.remove(at: i)
            routes[key] = present.isEmpty ? nil : present
            return true
        case .newLink(let link):
            guard links[link.index] != link else { return false }
            let renamedOrNew = links[link.index]?.name != link.name
            links[link.index] = link
            // What hangs off a link by name (sysctls, WireGuard state, attachments) may differ now.
            stale.formUnion([.proxies, .sysctls, .wireGuard, .datapath])
            if renamedOrNew { stale.insert(.addresses) }
            return true
        case .deletedLink(let link):
            links[link.index] = nil
            // The kernel drops the link's routes, addresses and proxy entries without an event for each.
            routes = routes.compactMapValues { present in
                let kept = present.filter { $0.outputInterface != link.index }
                return kept.isEmpty ? nil : kept
            }
            addresses = addresses.filter { $0.key.interfaceIndex != link.index }
            proxies.removeAll { $0.interfaceIndex == link.index }
            stale.formUnion([.routes, .sysctls, .wireGuard, .datapath])
            return true
        case .newAddress(let address):
            guard address.prefix.address.family == .inet6 else { return false }
            let key = AddressKey(address)
            guard addresses[key] != address else { return false }
            addresses[key] = address
            stale.insert(.datapath)  // pass entries follow the gateway's own addresses
            return true
        case .deletedAddress(let address):
            guard address.prefix.address.family == .inet6 else { return false }
            // Looked up first: a removal of nothing would still count as a write of `addresses`.
            guard addresses[AddressKey(address)] != nil else { return false }
            addresses[AddressKey(address)] = nil
            stale.insert(.datapath)
            return true
        case .netconf:
            stale.insert(.sysctls)
        case .newProxy, .deletedProxy:
            stale.insert(.proxies)
        case .trafficControl:
            stale.insert(.datapath)
        case .overflow:
            overflows += 1
            stale = Set(Part.allCases)
        }
        return stale != before
    }

    // MARK: reading

    public func link(named name: String) -> Link? { links.values.first { $0.name == name } }

    public var addressList: [Address] { Array(addresses.values) }

    /// What `plan` compares with.
    /// Whether two reads of the WireGuard devices agree on what `plan` reads: everything but
    /// the handshake times and byte counters, which change with traffic and never make a
    /// write. Compared in place: a poll copies none of the peers. (`PlannedFieldsTests` fails
    /// when a field is added to the peer or the device, so that it is added here too.)
    public static func samePlanned(_ a: [String: WireGuardDevice]?, _ b: [String: WireGuardDevice]?) -> Bool {
        guard let a, let b else { return a == nil && b == nil }
        guard a.count == b.count else { return false }
        for (name, x) in a {
            guard let y = b[name], x.name == y.name, x.index == y.index, x.privateKey == y.privateKey,
                  x.publicKey == y.publicKey, x.listenPort == y.listenPort, x.firewallMark == y.firewallMark,
                  x.peers.count == y.peers.count
            else { return false }
            for (p, q) in zip(x.peers, y.peers) {
                guard p.publicKey == q.publicKey, p.presharedKey == q.presharedKey, p.endpoint == q.endpoint,
                      p.persistentKeepalive == q.persistentKeepalive, p.allowedIPs == q.allowedIPs
                else { return false }
            }
        }
        return true
    }

    public var observed: ObservedState {
        ObservedState(links: Array(links.values), routes: routes.values.flatMap { $0 }, proxies: proxies, addresses: addressList,
                      sysctls: sysctls, wireGuard: wireGuard, datapath: datapath)
    }

    /// `observed` at the touched objects alone (`ObservedState.restricted(to:)`), for
    /// `plan(_:_:touching:)`: the routes looked up by identity, the rest filtered in one pass;
    /// no copy of every route.
    public func observed(touching touched: TouchedObjects) -> ObservedState {
        let all = ObservedState(links: Array(links.values), routes: touched.routes.flatMap { routes[$0] ?? [] }, proxies: proxies,
                                addresses: addressList, wireGuard: wireGuard, datapath: datapath)
        return all.restricted(to: touched)
    }
}

extension Route {
    /// Same device and gateway: at one identity, the kernel holds one route per next hop.
    public func sameNextHop(_ other: Route) -> Bool { outputInterface == other.outputInterface && gateway == other.gateway }
}
