import Glibc
import Netlink
import Reconciler
import XCTest

/// `plan(_:_:touching:)` (a reload's plan of the objects its change touched) against `plan`
/// (the full plan): on random pairs of desired states that differ in their peers (and what
/// derives from them), random kernels, records and last applied endpoints,
/// - the full plan of the new state changes the untouched objects exactly as the full plan of
///   the old one did, and the touched ones exactly as the touched plan does, in its order;
/// - its pending objects and conflicts are the old full plan's, less the old touched plan's,
///   plus the new touched plan's (what the daemon keeps as the outstanding plan);
/// - its refusals are the old full plan's sysctl refusals and the touched plan's rule refusals.
final class TouchedPlanTests: XCTestCase {
    static let pool = (1...12).map { F.prefix("2001:db8:1::\($0)/128") } + (1...4).map { F.prefix("2001:db8:\($0 + 20)::/64") }
    static let links = [Link(index: 2, name: "eth0"), Link(index: 5, name: "wg0", kind: "wireguard", flags: UInt32(IFF_UP)),
                        Link(index: 6, name: "private0"), Link(index: 7, name: "wg9", kind: "wireguard")]

    struct Shape {
        var prune: Bool
        var datapath: Bool
        var gateway: DesiredGateway?
        var explicit: [DesiredRoute]
    }

    func desired(_ peers: [DesiredPeer], _ shape: Shape) -> DesiredState {
        var desired = F.desired(peers: peers, prune: shape.prune)
        desired.routes += shape.explicit
        if !shape.datapath { desired.datapath = nil }
        desired.gateway = shape.gateway
        return desired
    }

    func randomPeer(_ i: Int, _ pool: inout [IPPrefix], _ g: inout SeededRandom) -> DesiredPeer {
        let endpoint: ConfiguredEndpoint? = [nil, .address(Endpoint("[2001:db8:ff::\(i + 1)]:51820")!), .host("h\(i).example", port: 1)]
            .randomElement(using: &g)!
        return DesiredPeer(name: "p\(i)", publicKey: F.key(UInt8(i * 3 + Int.random(in: 0...2, using: &g))),
                           presharedKey: Bool.random(using: &g) ? F.psk : nil, endpoint: endpoint,
                           persistentKeepalive: [0, 25].randomElement(using: &g)!,
                           allowedIPs: (0..<Int.random(in: 0...3, using: &g)).compactMap { _ in pool.popLast() })
    }

    /// The peers after an operator's edit: one or two peers added, removed, or given other
    /// addresses or settings.
    func edited(_ peers: [DesiredPeer], _ pool: inout [IPPrefix], _ g: inout SeededRandom) -> [DesiredPeer] {
        var peers = peers
        for _ in 0..<Int.random(in: 1...2, using: &g) {
            switch Int.random(in: 0..<5, using: &g) {
            case 0 where peers.count < 5:
                let used = Set(peers.map(\.name))
                guard let i = (0..<5).first(where: { !used.contains("p\($0)") }) else { break }
                peers.insert(randomPeer(i, &pool, &g), at: Int.random(in: 0...peers.count, using: &g))
            case 1 where !peers.isEmpty:
                let removed = peers.remove(at: Int.random(in: 0..<peers.count, using: &g))
                pool += removed.allowedIPs
            case 2 where !peers.isEmpty:
                let p = Int.random(in: 0..<peers.count, using: &g)
                pool += peers[p].allowedIPs
                pool.shuffle(using: &g)
                peers[p].allowedIPs = (0..<Int.random(in: 0...3, using: &g)).compactMap { _ in pool.popLast() }
            case 3 where !peers.isEmpty:
                let p = Int.random(in: 0..<peers.count, using: &g)
                peers[p].persistentKeepalive = peers[p].persistentKeepalive == 0 ? 25 : 0
                peers[p].presharedKey = Bool.random(using: &g) ? F.psk : nil
            case 4 where !peers.isEmpty:
                let p = Int.random(in: 0..<peers.count, using: &g)
                peers[p].endpoint = [nil, .address(Endpoint("[2001:db8:ff::99]:51820")!), .host("moved.example", port: 2)]
                    .randomElement(using: &g)!
            default:
                break
            }
        }
        return peers
    }

    func randomObserved(_ g: inout SeededRandom, near desired: DesiredState) -> ObservedState {
        var links = Self.links
        if Int.random(in: 0..<8, using: &g) == 0 { links.removeAll { $0.name == "private0" } }
        if Int.random(in: 0..<8, using: &g) == 0 { links[1].flags = 0 }
        if Int.random(in: 0..<10, using: &g) == 0 { links.remove(at: 1) }
        // Mostly what the old state wants (a converged gateway), with some drift and foreign objects.
        var routes: [Route] = desired.routes.filter { _ in Int.random(in: 0..<5, using: &g) != 0 }.map {
            F.route($0.destination.description, $0.device == "wg0" ? 5 : 6, metric: $0.metric, table: $0.table,
                    gateway: $0.gateway?.description)
        }
        for _ in 0..<Int.random(in: 0...6, using: &g) {
            let route = F.route(Self.pool.randomElement(using: &g)!.description, [2, 5, 6, 7].randomElement(using: &g)!,
                                proto: [77, 77, 4, 2].randomElement(using: &g)!, metric: [1024, 1024, 10].randomElement(using: &g)!,
                                table: [254, 254, 100].randomElement(using: &g)!, gateway: Bool.random(using: &g) ? "fe80::2" : nil)
            if !routes.contains(where: { RouteIdentity($0) == RouteIdentity(route) && $0.sameNextHop(route) }) { routes.append(route) }
        }
        var proxies = desired.proxies.filter { _ in Int.random(in: 0..<5, using: &g) != 0 }.map { F.proxy($0.address.description) }
        for _ in 0..<Int.random(in: 0...4, using: &g) {
            let entry = F.proxy(Self.pool.randomElement(using: &g)!.address.description, [2, 6].randomElement(using: &g)!,
                                proto: [77, 77, 0].randomElement(using: &g)!)
            if !proxies.contains(where: { $0.address == entry.address && $0.interfaceIndex == entry.interfaceIndex }) { proxies.append(entry) }
        }
        var wanted = desired.devices.first?.peers.filter { _ in Int.random(in: 0..<5, using: &g) != 0 }.map { F.kernelPeer($0) } ?? []
        for _ in 0..<Int.random(in: 0...2, using: &g) {
            let key = F.key(UInt8.random(in: 0...16, using: &g))
            if !wanted.contains(where: { $0.publicKey == key }) {
                wanted.append(WireGuardPeer(publicKey: key, persistentKeepalive: [0, 5].randomElement(using: &g)!,
                                            allowedIPs: [Self.pool.randomElement(using: &g)!]))
            }
        }
        let wireGuard: [String: WireGuardDevice]? = Int.random(in: 0..<8, using: &g) == 0 ? nil : [
            "wg0": WireGuardDevice(name: "wg0", index: 5, privateKey: Int.random(in: 0..<10, using: &g) != 0 ? F.privateKey : nil,
                                   listenPort: Int.random(in: 0..<10, using: &g) != 0 ? 51820 : 0, peers: wanted),
            "wg9": WireGuardDevice(name: "wg9", index: 7, peers: [WireGuardPeer(publicKey: F.key(7), allowedIPs: [])]),
        ]
        var datapath: Set<DatapathEntry>? = Set((desired.datapath?.entries ?? []).filter { _ in Int.random(in: 0..<5, using: &g) != 0 })
        for prefix in Self.pool where Int.random(in: 0..<8, using: &g) == 0 { datapath?.insert(DatapathEntry(direction: .lanToTunnel, prefix: prefix)) }
        if Int.random(in: 0..<8, using: &g) == 0 { datapath = nil }
        var addresses: [Address] = []
        if Int.random(in: 0..<3, using: &g) == 0 {
            addresses.append(Address(prefix: F.prefix("2001:db8:1::\(Int.random(in: 1...12, using: &g))/64"), interfaceIndex: 6))
        }
        return ObservedState(links: links, routes: routes, proxies: proxies, addresses: addresses,
                             sysctls: ["net/ipv6/conf/private0/forwarding": ["0", "1"].randomElement(using: &g)!,
                                       "net/ipv6/conf/eth0/proxy_ndp": ["0", "1"].randomElement(using: &g)!],
                             wireGuard: wireGuard, datapath: datapath)
    }

    func testTheTouchedPlanIsTheFullPlanAtTheTouchedObjects() {
        var compared = 0, withChanges = 0
        for seed in UInt64(1)...3000 {
            var g = SeededRandom(seed: seed)
            var pool = Self.pool.shuffled(using: &g)
            let peers = (0..<Int.random(in: 0...4, using: &g)).map { randomPeer($0, &pool, &g) }
            var shape = Shape(prune: Int.random(in: 0..<4, using: &g) != 0, datapath: Int.random(in: 0..<5, using: &g) != 0,
                              gateway: nil, explicit: [])
            if Bool.random(using: &g) {
                shape.gateway = DesiredGateway(tunnel: "wg0", lan: "private0", lanPrefix: F.prefix("2001:db8:1::/64"),
                                               allowUnsafeAllowedIPs: Int.random(in: 0..<4, using: &g) == 0)
            }
            for _ in 0..<Int.random(in: 0...2, using: &g) {
                let route = DesiredRoute(destination: Self.pool.randomElement(using: &g)!, device: ["wg0", "private0"].randomElement(using: &g)!,
                                         table: [254, 100].randomElement(using: &g)!, metric: [1024, 10].randomElement(using: &g)!)
                shape.explicit.append(route)
            }
            let old = desired(peers, shape)
            let new = desired(edited(peers, &pool, &g), shape)
            let observed = randomObserved(&g, near: old)
            let lastApplied: LastApplied? = Bool.random(using: &g) ? nil : LastApplied(old)
            var records = Records()
            if Bool.random(using: &g) { records.sysctls["net/ipv6/conf/eth0/proxy_ndp"] = "0" }
            if Int.random(in: 0..<4, using: &g) == 0 { records.createdDevices.insert("wg9") }
            if Int.random(in: 0..<3, using: &g) == 0 { _ = records.recordPeers([F.key(7), F.key(4)], device: "wg0", interfaceIndex: 5) }

            guard let (touched, part1) = checkTouchedPlan(old: old, new: new, observed: observed, lastApplied: lastApplied,
                                                          records: records, seed: seed) else { continue }
            XCTAssertEqual(old.touched(since: old, limit: 1000), TouchedObjects(), "seed \(seed)")
            // The daemon's cache gives the same touched plan as the whole observed state.
            var cache = KernelCache()
            cache.seed(links: observed.links)
            cache.seed(routes: observed.routes)
            cache.seed(addresses: observed.addresses)
            cache.proxies = observed.proxies
            cache.wireGuard = observed.wireGuard
            cache.datapath = observed.datapath
            XCTAssertEqual(plan(new, cache.observed(touching: touched), touching: touched, lastApplied: lastApplied, records: records),
                           part1, "seed \(seed): from the cache")
            compared += 1
            if !part1.changes.isEmpty { withChanges += 1 }
        }
        // The generator reaches the cases that matter.
        XCTAssertGreaterThan(compared, 1500, "compared")
        XCTAssertGreaterThan(withChanges, 1000, "with changes")
    }

    func testWhatIsNotAnObjectIsNotTouched() {
        let old = F.desiredWithGateway()
        var new = old
        new.devices[0].listenPort = 51821
        XCTAssertNil(new.touched(since: old, limit: 100))
        new = old
        new.sysctls.removeLast()
        XCTAssertNil(new.touched(since: old, limit: 100))
        new = old
        new.gateway?.allowLANAnycast = true
        XCTAssertNil(new.touched(since: old, limit: 100))
        new = old
        new.datapath = nil
        XCTAssertNil(new.touched(since: old, limit: 100))
        new = old
        new.datapath?.icmp.rateLimit = .zero
        XCTAssertNil(new.touched(since: old, limit: 100))
        new = old
        new.devices.append(DesiredWireGuardDevice(name: "wg1"))
        XCTAssertNil(new.touched(since: old, limit: 100))
        // One peer moved: it, its route, proxy entry and map entry, old and new.
        new = F.desiredWithGateway()
        new.devices[0].peers[0].allowedIPs = [F.prefix("2001:db8:1::200/128")]
        new.routes[1].destination = F.prefix("2001:db8:1::200/128")
        new.proxies[0].address = F.address("2001:db8:1::200")
        new.datapath!.entries[1].prefix = F.prefix("2001:db8:1::200/128")
        let touched = new.touched(since: old, limit: 100)
        XCTAssertEqual(touched?.peers, ["wg0": [F.key(1)]])
        XCTAssertEqual(touched?.routes.map(\.destination.description).sorted(), ["2001:db8:1::100/128", "2001:db8:1::200/128"])
        XCTAssertEqual(touched?.proxies.count, 2)
        XCTAssertEqual(touched?.datapath.count, 2)
        XCTAssertEqual(touched?.count, 7)
        XCTAssertNil(new.touched(since: old, limit: 6), "over the limit")
    }
}

/// The properties the touched-plan tests check of one edit (`old` to `new`) against one kernel:
/// the new full plan's changes are the old one's at untouched objects and the touched plan's at
/// touched ones, in its order; its pending objects and conflicts are the old ones less the old
/// touched plan's plus the new touched plan's; its refusals are the old sysctl refusals and the
/// touched plan's. Nil when nothing is compared: the old touched plan writes a device, and the
/// daemon would plan in full.
func checkTouchedPlan(old: DesiredState, new: DesiredState, observed: ObservedState, lastApplied: LastApplied?, records: Records,
                      seed: UInt64) -> (touched: TouchedObjects, part1: Plan)? {
    guard let touched = new.touched(since: old, limit: 1000) else {
        XCTFail("seed \(seed): peers alone differ, yet no touched objects")
        return nil
    }
    let full0 = plan(old, observed, lastApplied: lastApplied, records: records)
    let full1 = plan(new, observed, lastApplied: lastApplied, records: records)
    let part0 = plan(old, observed, touching: touched, lastApplied: lastApplied, records: records)
    let part1 = plan(new, observed, touching: touched, lastApplied: lastApplied, records: records)
    let objectKinds: Set<Change.Kind> = [.peer, .route, .proxy, .datapath]
    if part0.changes.contains(where: { !objectKinds.contains($0.kind) }) { return nil }
    func isTouched(_ change: Change) -> Bool {
        switch change.object {
        case .peer(let device, _, let peer, _): touched.peers[device]?.contains(peer.publicKey) ?? false
        case .route(let route, _): touched.routes.contains(RouteIdentity(route))
        case .proxy(let entry, _):
            observed.links.first { $0.index == entry.interfaceIndex }.map {
                touched.proxies.contains(TouchedObjects.ProxyPlace(device: $0.name, address: entry.address))
            } ?? false
        case .datapath(let entry): touched.datapath.contains(entry)
        default: false
        }
    }
    func objects(_ plan: Plan, touched: Bool) -> [String] {
        plan.changes.filter { objectKinds.contains($0.kind) && isTouched($0) == touched }.map(\.description)
    }
    func counted<T: Hashable>(_ items: [T]) -> [T: Int] { items.reduce(into: [:]) { $0[$1, default: 0] += 1 } }
    XCTAssertEqual(part1.changes.map(\.description), objects(full1, touched: true), "seed \(seed): touched changes")
    XCTAssertEqual(part0.changes.map(\.description), objects(full0, touched: true), "seed \(seed): touched changes, old")
    XCTAssertEqual(objects(full1, touched: false), objects(full0, touched: false), "seed \(seed): untouched changes")
    XCTAssertEqual(full1.changes.filter { !objectKinds.contains($0.kind) }, full0.changes.filter { !objectKinds.contains($0.kind) },
                   "seed \(seed): device and sysctl changes")
    var pending = counted(full0.pending)
    for item in part0.pending { pending[item, default: 0] -= 1 }
    for item in part1.pending { pending[item, default: 0] += 1 }
    XCTAssertEqual(pending.filter { $0.value != 0 }, counted(full1.pending), "seed \(seed): pending")
    var conflicts = counted(full0.conflicts)
    for item in part0.conflicts { conflicts[item, default: 0] -= 1 }
    for item in part1.conflicts { conflicts[item, default: 0] += 1 }
    XCTAssertEqual(conflicts.filter { $0.value != 0 }, counted(full1.conflicts), "seed \(seed): conflicts")
    XCTAssertEqual((full0.refused.filter { $0.kind == .sysctl } + part1.refused).sorted { $0.kind < $1.kind }, full1.refused,
                   "seed \(seed): refused")
    XCTAssertEqual(full1.violations, full0.violations, "seed \(seed)")
    return (touched, part1)
}
