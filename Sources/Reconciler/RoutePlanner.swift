import Netlink

/// The routes at a few identities, planned without looking at the rest of the table: for the
/// identities it is given, exactly the route changes and route conflicts `plan` gives (same
/// values, same order), in time that does not grow with the table. It serves the daemon's event
/// path: a route event touches one identity, and planning the whole state for it costs time
/// linear in the number of peers (≈ 250 ms at 50 000).
///
/// Made from the desired state, the links, the addresses and the records; valid while those are
/// unchanged (the daemon makes a new one when any of them changes, and plans in full then). What
/// a route event cannot change is not reported: pending routes (their device is missing) and
/// refusals stay as the last full plan said. `Tests/ReconcilerTests/RoutePlannerTests` checks it
/// against `plan` on random states.
public struct RoutePlanner: Sendable {
    /// What a planner was made from; a planner is valid while this compares equal.
    public struct Inputs: Hashable, Sendable {
        public var generation: Int
        public var links: [Link]
        public var addresses: [Address]
        public var createdDevices: Set<String>

        public init(generation: Int, links: [Link], addresses: [Address], createdDevices: Set<String>) {
            self.generation = generation
            self.links = links.sorted { $0.index < $1.index }
            self.addresses = addresses.sorted { ($0.interfaceIndex, $0.prefix) < ($1.interfaceIndex, $1.prefix) }
            self.createdDevices = createdDevices
        }
    }

    public let inputs: Inputs
    let routeProtocol: UInt8
    /// The desired routes, after the safety rule that holds prefixes back (usually the desired
    /// state's own array, not a copy), and their indexes in identity order: a lookup is a binary
    /// search, where a table by identity would cost a copy of every route (10 MiB at 50 000).
    let routes: [DesiredRoute]
    let byIdentity: [Int32]
    let indexByName: [String: Int32]
    let nameByIndex: [Int32: String]
    /// Devices a full plan deletes: what sits on them is no one's concern (see `plan`).
    let deleted: Set<Int32>

    public init(desired: DesiredState, inputs: Inputs, records: Records) {
        self.inputs = inputs
        let observed = ObservedState(links: inputs.links, addresses: inputs.addresses)
        let (allowed, _) = GatewayAddressRule.apply(desired, observed)
        routeProtocol = allowed.routeProtocol
        routes = allowed.routes
        byIdentity = allowed.routes.indices.sorted { (allowed.routes[$0].identity, $0) < (allowed.routes[$1].identity, $1) }.map(Int32.init)
        indexByName = Dictionary(inputs.links.map { ($0.name, $0.index) }, uniquingKeysWith: { a, _ in a })
        nameByIndex = Dictionary(inputs.links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
        let named = Set(allowed.devices.map(\.name))
        deleted = Set(records.createdDevices.filter { !named.contains($0) }.compactMap { name in
            observed.link(named: name).flatMap { $0.kind == "wireguard" ? $0.index : nil }
        })
    }

    /// The desired routes at `identity`, in the desired state's order.
    private func desired(at identity: RouteIdentity) -> [DesiredRoute] {
        var low = 0, high = byIdentity.count
        while low < high {
            let middle = (low + high) / 2
            if routes[Int(byIdentity[middle])].identity < identity { low = middle + 1 } else { high = middle }
        }
        var found: [DesiredRoute] = []
        while low < byIdentity.count, routes[Int(byIdentity[low])].identity == identity {
            found.append(routes[Int(byIdentity[low])])
            low += 1
        }
        return found
    }

    private func deviceName(_ index: Int32?) -> String { Plan.deviceName(index, in: nameByIndex) }

    /// The `desired` text of a route conflict at these identities, as `plan` words it: what a
    /// caller replacing those identities' part of an earlier plan removes.
    public func conflictSubjects(at identities: Set<RouteIdentity>) -> Set<String> {
        var subjects: Set<String> = []
        for identity in identities {
            for item in desired(at: identity) {
                guard let index = indexByName[item.device] else { continue }
                subjects.insert("route " + Change.describe(route(item, index), device: item.device))
            }
        }
        return subjects
    }

    private func route(_ item: DesiredRoute, _ index: Int32) -> Route {
        Route(destination: item.destination, table: item.table, protocolNumber: routeProtocol,
              outputInterface: index, gateway: item.gateway, metric: item.metric)
    }

    /// The route changes and conflicts `plan` would give at `identities`; `routes` returns the
    /// kernel's routes at one identity (in the kernel cache's order).
    public func plan(touching identities: Set<RouteIdentity>, routes: (RouteIdentity) -> [Route]) -> Plan {
        var result = Plan()
        var unexpected: [Route] = []
        for identity in identities.sorted() {
            let present = routes(identity).filter { $0.family == .inet6 && !deleted.contains($0.outputInterface ?? 0) }
            var wanted = false
            for item in desired(at: identity) {
                guard let index = indexByName[item.device] else { continue }
                wanted = true
                unexpected += result.planRoute(route(item, index), device: item.device, present: present,
                                               routeProtocol: routeProtocol, names: nameByIndex)
            }
            if !wanted { unexpected += present.filter { $0.protocolNumber == routeProtocol } }
        }
        for route in unexpected.sorted(by: { (RouteIdentity($0), $0.outputInterface ?? 0) < (RouteIdentity($1), $1.outputInterface ?? 0) }) {
            result.changes.append(Change(.remove, .route(route, device: deviceName(route.outputInterface)), reason: .unexpected))
        }
        return result
    }
}

extension Change {
    /// The identity of the route a route change writes; nil for other kinds.
    public var routeIdentity: RouteIdentity? {
        if case .route(let route, _) = object { RouteIdentity(route) } else { nil }
    }
}
