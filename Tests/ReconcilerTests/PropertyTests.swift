import Glibc
import Netlink
import Reconciler
import XCTest

/// SplitMix64: small, seeded, reproducible.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What the kernel does with each change, as far as `plan` can observe it. Fails the test when
/// a change touches an object wgkeeper does not own.
struct KernelModel {
    var state: ObservedState
    let routeProtocol: UInt8
    let managed: Set<String>
    var createdDevices: Set<String> = []
    var violations: [String] = []

    mutating func apply(_ changes: [Change]) {
        for change in changes { apply(change) }
    }

    private mutating func apply(_ change: Change) {
        switch change.object {
        case .link(let name, .create(let kind)):
            guard state.link(named: name) == nil else { return violations.append("create over an existing link \(name)") }
            let index = (state.links.map(\.index).max() ?? 0) + 1
            state.links.append(Link(index: index, name: name, kind: kind))
            state.wireGuard?[name] = WireGuardDevice(name: name, index: index)
        case .link(let name, .setUp(let index)):
            guard managed.contains(name), let i = state.links.firstIndex(where: { $0.index == index }) else {
                return violations.append("set up unmanaged link \(name)")
            }
            state.links[i].flags |= UInt32(IFF_UP)
        case .link(let name, .delete(let index)):
            guard createdDevices.contains(name) else { return violations.append("deleted link \(name) wgkeeper did not create") }
            // The kernel takes the device's routes and proxy entries with it.
            state.links.removeAll { $0.index == index }
            state.routes.removeAll { $0.outputInterface == index }
            state.proxies.removeAll { $0.interfaceIndex == index }
            state.wireGuard?[name] = nil
        case .wireGuardDevice(let name, let c):
            guard managed.contains(name) else { return violations.append("touched unmanaged device \(name)") }
            if let key = c.privateKey { state.wireGuard![name]!.privateKey = key }
            if let port = c.listenPort { state.wireGuard![name]!.listenPort = port }
        case .sysctl(let sysctl, let value, _):
            state.sysctls[sysctl.key] = value
        case .peer(let device, _, let c, let host):
            guard managed.contains(device), var dev = state.wireGuard?[device] else { return violations.append("peer on \(device)") }
            if c.remove {
                dev.peers.removeAll { $0.publicKey == c.publicKey }
            } else {
                var index = dev.peers.firstIndex { $0.publicKey == c.publicKey }
                if index == nil {
                    if c.updateOnly { return }
                    dev.peers.append(WireGuardPeer(publicKey: c.publicKey))
                    index = dev.peers.count - 1
                }
                var peer = dev.peers[index!]
                if let psk = c.presharedKey { peer.presharedKey = psk.key.isZero ? nil : psk }
                if let endpoint = c.endpoint { peer.endpoint = endpoint }
                if host != nil { peer.endpoint = Endpoint("[2001:db8:ff::53]:51820") }
                if let keepalive = c.persistentKeepalive { peer.persistentKeepalive = keepalive }
                if c.replaceAllowedIPs { peer.allowedIPs = [] }
                // WireGuard moves an allowed IP from whichever peer held it.
                for i in dev.peers.indices { dev.peers[i].allowedIPs.removeAll { c.allowedIPs.contains($0) } }
                peer.allowedIPs.removeAll { c.allowedIPs.contains($0) }
                peer.allowedIPs += c.allowedIPs
                dev.peers[index!] = peer
            }
            state.wireGuard![device] = dev
        case .route(let route, _):
            let identity = RouteIdentity(route)
            let existing = state.routes.firstIndex { RouteIdentity($0) == identity && $0.family == .inet6 }
            switch change.action {
            case .add:
                if existing != nil { return violations.append("add over an existing route \(route)") }
                state.routes.append(route)
            case .replace:
                // NLM_F_REPLACE | NLM_F_CREATE: a route that went meanwhile (with its device) is created.
                guard let existing else { return state.routes.append(route) }
                guard state.routes[existing].protocolNumber == routeProtocol else {
                    return violations.append("replace of a route that is not ours: \(route)")
                }
                state.routes[existing] = route
            case .remove:
                guard route.protocolNumber == routeProtocol, let i = state.routes.firstIndex(of: route) else {
                    return violations.append("remove of a route that is not ours: \(route)")
                }
                state.routes.remove(at: i)
            }
        case .proxy(let entry, _):
            let i = state.proxies.firstIndex { $0.address == entry.address && $0.interfaceIndex == entry.interfaceIndex }
            if change.action == .remove {
                guard let i, state.proxies[i].protocolNumber == routeProtocol else { return violations.append("remove of foreign \(entry)") }
                state.proxies.remove(at: i)
            } else {
                if i != nil { return violations.append("add over an existing \(entry)") }
                state.proxies.append(entry)
            }
        case .datapath(let entry):
            if change.action == .remove { state.datapath?.remove(entry) } else { state.datapath?.insert(entry) }
        }
    }
}

final class PropertyTests: XCTestCase {
    static let pool = (1...12).map { F.prefix("2001:db8:1::\($0)/128") } + (1...4).map { F.prefix("2001:db8:\($0 + 20)::/64") }
    static let links = [Link(index: 2, name: "eth0"), Link(index: 5, name: "wg0", kind: "wireguard", flags: UInt32(IFF_UP)),
                        Link(index: 6, name: "private0"), Link(index: 7, name: "wg9", kind: "wireguard")]

    func randomDesired(_ g: inout SeededRandom) -> DesiredState {
        var pool = Self.pool.shuffled(using: &g)
        let peers = (0..<Int.random(in: 0...5, using: &g)).map { i -> DesiredPeer in
            let ips = (0..<Int.random(in: 0...3, using: &g)).compactMap { _ in pool.popLast() }
            let endpoint: ConfiguredEndpoint? = [nil, .address(Endpoint("[2001:db8:ff::\(i + 1)]:51820")!), .host("h\(i).example", port: 1)]
                .randomElement(using: &g)!
            return DesiredPeer(name: "p\(i)", publicKey: F.key(UInt8(i * 3 + Int.random(in: 0...2, using: &g))),
                               presharedKey: Bool.random(using: &g) ? F.psk : nil, endpoint: endpoint,
                               persistentKeepalive: [0, 25].randomElement(using: &g)!, allowedIPs: ips)
        }
        var desired = F.desired(peers: peers, prune: Int.random(in: 0..<4, using: &g) != 0)
        // Some explicit routes in other tables and metrics, on either device.
        for _ in 0..<Int.random(in: 0...2, using: &g) {
            let route = DesiredRoute(destination: Self.pool.randomElement(using: &g)!, device: ["wg0", "private0"].randomElement(using: &g)!,
                                     gateway: Bool.random(using: &g) ? F.address("fe80::1") : nil,
                                     table: [254, 100].randomElement(using: &g)!, metric: [1024, 10].randomElement(using: &g)!)
            if !desired.routes.contains(where: { $0.identity == route.identity }) { desired.routes.append(route) }
        }
        if Int.random(in: 0..<5, using: &g) == 0 { desired.datapath = nil }
        return desired
    }

    func randomObserved(_ g: inout SeededRandom) -> ObservedState {
        var links = Self.links
        if Int.random(in: 0..<6, using: &g) == 0 { links.removeAll { $0.name == "private0" } }
        if Int.random(in: 0..<6, using: &g) == 0 { links[1].flags = 0 }
        if Int.random(in: 0..<8, using: &g) == 0 { links.remove(at: 1) }
        var routes: [Route] = []
        for _ in 0..<Int.random(in: 0...14, using: &g) {
            let route = F.route(Self.pool.randomElement(using: &g)!.description, [2, 5, 6, 7].randomElement(using: &g)!,
                                proto: [77, 77, 4, 2].randomElement(using: &g)!, metric: [1024, 1024, 10].randomElement(using: &g)!,
                                table: [254, 254, 100].randomElement(using: &g)!, gateway: Bool.random(using: &g) ? "fe80::2" : nil)
            if !routes.contains(where: { RouteIdentity($0) == RouteIdentity(route) }) { routes.append(route) }
        }
        var proxies: [ProxyEntry] = []
        for _ in 0..<Int.random(in: 0...8, using: &g) {
            let entry = F.proxy(Self.pool.randomElement(using: &g)!.address.description, [2, 6].randomElement(using: &g)!,
                                proto: [77, 77, 0].randomElement(using: &g)!)
            if !proxies.contains(where: { $0.address == entry.address && $0.interfaceIndex == entry.interfaceIndex }) { proxies.append(entry) }
        }
        func peers() -> [WireGuardPeer] {
            var pool = Self.pool.shuffled(using: &g)
            var keys = Set<WireGuardKey>()
            return (0..<Int.random(in: 0...6, using: &g)).compactMap { _ in
                let key = F.key(UInt8.random(in: 0...16, using: &g))
                guard keys.insert(key).inserted else { return nil }
                return WireGuardPeer(publicKey: key, presharedKey: Bool.random(using: &g) ? F.psk : nil,
                                     endpoint: Bool.random(using: &g) ? Endpoint("[2001:db8:ee::1]:9") : nil,
                                     persistentKeepalive: [0, 25, 5].randomElement(using: &g)!,
                                     allowedIPs: (0..<Int.random(in: 0...3, using: &g)).compactMap { _ in pool.popLast() })
            }
        }
        let wireGuard: [String: WireGuardDevice]? = Int.random(in: 0..<8, using: &g) == 0 ? nil : [
            "wg0": WireGuardDevice(name: "wg0", index: 5, privateKey: Bool.random(using: &g) ? F.privateKey : nil,
                                   listenPort: [0, 51820].randomElement(using: &g)!, peers: peers()),
            "wg9": WireGuardDevice(name: "wg9", index: 7, peers: peers()),
        ]
        var datapath: Set<DatapathEntry>? = Set(Self.pool.filter { _ in Bool.random(using: &g) }.map { DatapathEntry(direction: .lanToTunnel, prefix: $0) })
        if Int.random(in: 0..<6, using: &g) == 0 { datapath = nil }
        return ObservedState(links: links, routes: routes, proxies: proxies,
                             sysctls: ["net/ipv6/conf/private0/forwarding": ["0", "1"].randomElement(using: &g)!,
                                       "net/ipv6/conf/eth0/proxy_ndp": ["0", "1"].randomElement(using: &g)!],
                             wireGuard: wireGuard, datapath: datapath)
    }

    /// What an earlier run recorded: eth0's proxy_ndp before it wrote 1, maybe a device it created.
    func randomRecords(_ g: inout SeededRandom) -> Records {
        var records = Records()
        if Bool.random(using: &g) { records.sysctls["net/ipv6/conf/eth0/proxy_ndp"] = "0" }
        if Int.random(in: 0..<4, using: &g) == 0 { records.createdDevices.insert("wg9") }
        return records
    }

    /// Applying plan(d, o) to a model of o yields a kernel whose plan against d is empty, and no
    /// change ever touches a foreign route or proxy entry (another protocol), an unmanaged device
    /// or its peers, or a device wgkeeper did not create.
    func testApplyingThePlanConverges() {
        for seed in UInt64(1)...600 {
            var g = SeededRandom(seed: seed)
            let desired = randomDesired(&g)
            let observed = randomObserved(&g)
            let lastApplied: LastApplied? = Bool.random(using: &g) ? nil : LastApplied(randomDesired(&g))
            var records = randomRecords(&g)
            let first = plan(desired, observed, lastApplied: lastApplied, records: records)
            XCTAssertEqual(plan(desired, observed, lastApplied: lastApplied, records: records), first, "seed \(seed): not deterministic")

            var model = KernelModel(state: observed, routeProtocol: desired.routeProtocol, managed: desired.managedInterfaces,
                                    createdDevices: records.createdDevices)
            // As the daemon does: a device the plan creates first, then a fresh plan against it.
            var applied = first.changes
            if first.changes.contains(where: { if case .link(_, .create) = $0.object { true } else { false } }) {
                model.apply(first.changes.filter { $0.kind == .link })
                records.createdDevices.formUnion(first.changes.compactMap { if case .link(let name, .create) = $0.object { name } else { nil } })
                applied = plan(desired, model.state, lastApplied: lastApplied, records: records).changes
            }
            model.apply(applied)
            XCTAssertEqual(model.violations, [], "seed \(seed)")
            for change in applied where change.reason == .restore {
                if case .sysctl(let sysctl, _, _) = change.object { records.sysctls[sysctl.key] = nil }
            }

            let second = plan(desired, model.state, lastApplied: LastApplied(desired), records: records)
            XCTAssertEqual(second.changes.map(\.description), [], "seed \(seed): not converged after \(applied.map(\.description))")

            // Ours is our protocol, on any interface; nothing of another protocol ever changes.
            // (What sat on a device wgkeeper created and then deleted went with the device.)
            let kept = Set(model.state.links.map(\.index))
            let foreignRoutes = { (state: ObservedState) in
                state.routes.filter { $0.protocolNumber != desired.routeProtocol && kept.contains($0.outputInterface ?? 0) }
            }
            XCTAssertEqual(Set(foreignRoutes(model.state)), Set(foreignRoutes(observed)), "seed \(seed): a foreign route changed")
            let foreignProxies = { (state: ObservedState) in
                state.proxies.filter { $0.protocolNumber != desired.routeProtocol && kept.contains($0.interfaceIndex) }
            }
            XCTAssertEqual(Set(foreignProxies(model.state)), Set(foreignProxies(observed)), "seed \(seed): a foreign proxy changed")
            let wanted = Set(desired.routes.map(\.identity))
            XCTAssertEqual(model.state.routes.filter { $0.protocolNumber == desired.routeProtocol && !wanted.contains(RouteIdentity($0)) }, [],
                           "seed \(seed): a route of ours that is not desired stayed")
            if !records.createdDevices.contains("wg9") {
                XCTAssertEqual(model.state.wireGuard?["wg9"], observed.wireGuard?["wg9"], "seed \(seed): an unmanaged device's peers changed")
            }
        }
    }
}
