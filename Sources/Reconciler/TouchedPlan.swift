import Netlink

/// The objects a change of the desired state touches: what a reload that changed k objects
/// plans (`plan(_:_:touching:lastApplied:records:)`), not every object.
public struct TouchedObjects: Hashable, Sendable {
    /// By device name, the public keys of its peers added, removed or changed.
    public var peers: [String: Set<WireGuardKey>] = [:]
    public var routes: Set<RouteIdentity> = []
    public var proxies: Set<ProxyPlace> = []
    public var datapath: Set<DatapathEntry> = []

    public init() {}

    public var count: Int { peers.values.reduce(0) { $0 + $1.count } + routes.count + proxies.count + datapath.count }

    /// A proxy entry's place: its device and address.
    public struct ProxyPlace: Hashable, Sendable {
        public var device: String
        public var address: IPAddress
        public init(device: String, address: IPAddress) {
            self.device = device
            self.address = address
        }
    }
}

extension DesiredState {
    /// What differs from `old`, object by object: nil when anything but the objects differs
    /// (a device's settings, a sysctl, the gateway, the policy, the datapath's settings), or
    /// when more than `limit` objects do (a full plan costs no more then).
    ///
    /// Each list is compared in order, its common head and tail set aside: a reload that adds,
    /// removes or edits one peer touches that peer and what derives from it, and nothing else.
    /// An object at an identity outside the middles sits at that identity in both states, in
    /// the same order among the others there, so a plan of it is the same for both.
    public func touched(since old: DesiredState, limit: Int) -> TouchedObjects? {
        guard routeProtocol == old.routeProtocol, devices.count == old.devices.count, sysctls == old.sysctls,
              safetyChecks == old.safetyChecks, gateway == old.gateway, policy == old.policy else { return nil }
        switch (datapath, old.datapath) {
        case (nil, nil):
            break
        case let (new?, was?):
            guard new.lan == was.lan, new.tunnel == was.tunnel, new.icmp == was.icmp,
                  new.neighbourDiscovery == was.neighbourDiscovery, new.policy == was.policy else { return nil }
        default:
            return nil
        }
        var touched = TouchedObjects()
        for (device, was) in zip(devices, old.devices) {
            guard device.name == was.name, device.privateKey == was.privateKey, device.listenPort == was.listenPort,
                  device.prunePeers == was.prunePeers else { return nil }
            let (before, after) = Self.middles(was.peers, device.peers)
            guard before.count + after.count <= limit else { return nil }
            if before.isEmpty, after.isEmpty { continue }
            touched.peers[device.name, default: []].formUnion(before.lazy.map(\.publicKey))
            touched.peers[device.name, default: []].formUnion(after.lazy.map(\.publicKey))
        }
        let (routesBefore, routesAfter) = Self.middles(old.routes, routes)
        guard routesBefore.count + routesAfter.count <= limit else { return nil }
        touched.routes = Set(routesBefore.lazy.map(\.identity)).union(routesAfter.lazy.map(\.identity))
        let (proxiesBefore, proxiesAfter) = Self.middles(old.proxies, proxies)
        guard proxiesBefore.count + proxiesAfter.count <= limit else { return nil }
        touched.proxies = Set((proxiesBefore + proxiesAfter).map { TouchedObjects.ProxyPlace(device: $0.device, address: $0.address) })
        if let new = datapath, let was = old.datapath {
            let (entriesBefore, entriesAfter) = Self.middles(was.entries, new.entries)
            guard entriesBefore.count + entriesAfter.count <= limit else { return nil }
            touched.datapath = Set(entriesBefore).union(entriesAfter)
        }
        return touched.count <= limit ? touched : nil
    }

    /// The parts of `old` and `new` between their longest common head and tail.
    static func middles<T: Equatable>(_ old: [T], _ new: [T]) -> (ArraySlice<T>, ArraySlice<T>) {
        let shorter = min(old.count, new.count)
        var head = 0
        while head < shorter, old[head] == new[head] { head += 1 }
        var tail = 0
        while tail < shorter - head, old[old.count - 1 - tail] == new[new.count - 1 - tail] { tail += 1 }
        return (old[head ..< old.count - tail], new[head ..< new.count - tail])
    }

    /// Only the touched objects: every device (its settings), with its touched peers; the
    /// routes, proxy entries and map entries at touched identities, in their order; no sysctls.
    /// Built by appending what matches (a reload touches a few of 10 000 objects): no copy of
    /// each array to remove the rest from.
    func restricted(to touched: TouchedObjects) -> DesiredState {
        var result = DesiredState(routeProtocol: routeProtocol, gateway: gateway)
        result.policy = policy
        result.devices = devices.map { device in
            var kept = device
            kept.peers = []
            if let keys = touched.peers[device.name].map(SmallSet.init) { kept.peers = device.peers.filter { keys.contains($0.publicKey) } }
            return kept
        }
        // Destinations and addresses first: most objects differ there, and are passed over
        // without an identity or a place (a device name) made for them.
        let routeDestinations = SmallSet(Set(touched.routes.map(\.destination))), routeIdentities = SmallSet(touched.routes)
        result.routes = routes.filter { routeDestinations.contains($0.destination) && routeIdentities.contains($0.identity) }
        let proxyAddresses = SmallSet(Set(touched.proxies.map(\.address))), places = SmallSet(touched.proxies)
        result.proxies = proxies.filter {
            proxyAddresses.contains($0.address) && places.contains(TouchedObjects.ProxyPlace(device: $0.device, address: $0.address))
        }
        if var datapath {
            let entries = SmallSet(touched.datapath)
            datapath.entries = datapath.entries.filter(entries.contains)
            result.datapath = datapath
        }
        return result
    }
}

/// A set asked about every object of a state, usually holding a handful: compared one by one
/// below a few elements (no hash of each object asked about), hashed above.
package struct SmallSet<Element: Hashable> {
    private let few: [Element]?
    private let many: Set<Element>

    package init(_ set: Set<Element>) {
        few = set.count <= 8 ? Array(set) : nil
        many = set
    }

    package func contains(_ element: Element) -> Bool {
        if let few { return few.contains(element) }
        return many.contains(element)
    }
}

extension ObservedState {
    /// Only what the kernel holds at the touched objects' identities (links and addresses
    /// whole; each WireGuard device with its touched peers alone; no sysctls).
    public func restricted(to touched: TouchedObjects) -> ObservedState {
        var result = self
        result.sysctls = [:]
        let names = Dictionary(links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
        let routeIdentities = SmallSet(touched.routes)
        result.routes = routes.filter { routeIdentities.contains(RouteIdentity($0)) }
        // Addresses first: most entries are at an untouched one, and need no device name.
        let addresses = SmallSet(Set(touched.proxies.map(\.address)))
        result.proxies = proxies.filter { entry in
            guard addresses.contains(entry.address), let device = names[entry.interfaceIndex] else { return false }
            return touched.proxies.contains(TouchedObjects.ProxyPlace(device: device, address: entry.address))
        }
        result.datapath = datapath.map { present in Set(touched.datapath.filter(present.contains)) }
        if let devices = wireGuard {
            result.wireGuard = devices.mapValues { device in
                var kept = device
                kept.peers = []
                if let keys = touched.peers[device.name].map(SmallSet.init) { kept.peers = device.peers.filter { keys.contains($0.publicKey) } }
                return kept
            }
        }
        return result
    }
}

/// `plan(desired, observed)` for the touched objects alone: its changes, pending objects and
/// conflicts at those objects, and nothing of the others (no sysctls, no safety checks).
/// `refused` holds every refusal of the gateway-address rule, touched or not: what replaces
/// that rule's part of the last full plan's (the rule reads every peer against the LAN's
/// addresses, once, and is cheap).
///
/// Right only when every object outside `touched` is planned alike for the desired state
/// this one replaced (`touched(since:limit:)`) and the kernel as it is now: the caller knows
/// that the last plan left nothing to write and nothing in the kernel changed since.
/// Property-tested against the full plan (`TouchedPlanTests`).
public func plan(_ desired: DesiredState, _ observed: ObservedState, touching touched: TouchedObjects,
                 lastApplied: LastApplied? = nil, records: Records = Records()) -> Plan {
    let (allowed, refused) = GatewayAddressRule.apply(desired, observed)
    var records = records
    // Sysctls are not planned here: none of them is touched, so none is restored either.
    records.sysctls = [:]
    var planner = Planner(desired: allowed.restricted(to: touched), observed: observed.restricted(to: touched),
                          lastApplied: lastApplied, records: records)
    planner.planDevicesAndPeers()
    planner.planRoutes()
    planner.planProxies()
    planner.planDatapath()
    planner.result.changes.sort { $0.kind < $1.kind }
    planner.result.refused = refused.sorted { $0.kind < $1.kind }
    return planner.result
}
