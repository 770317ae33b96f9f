import Glibc
import Netlink
import Reconciler
import XCTest

/// `plan(_:_:touching:)` against the full plan with two configured WireGuard devices (wg0 the
/// tunnel, wg1 a second one): peers moved from one device to the other (the same key on both
/// at once is allowed), either device with `prune_peers: false`, records of peers on both and
/// on an unconfigured device, foreign and drifted peers on both. The same properties as
/// `TouchedPlanTests`, which keeps every peer on wg0.
final class TouchedPlanTwoDeviceTests: XCTestCase {
    static let pool = (1...12).map { F.prefix("2001:db8:1::\($0)/128") } + (1...4).map { F.prefix("2001:db8:\($0 + 20)::/64") }
    static let lanPrefix = F.prefix("2001:db8:1::/64")
    static let links = [Link(index: 2, name: "eth0"), Link(index: 5, name: "wg0", kind: "wireguard", flags: UInt32(IFF_UP)),
                        Link(index: 6, name: "private0"), Link(index: 7, name: "wg1", kind: "wireguard", flags: UInt32(IFF_UP)),
                        Link(index: 8, name: "wg9", kind: "wireguard", flags: UInt32(IFF_UP))]

    /// The desired state a configuration with these peers on wg0 and wg1 derives.
    func desired(_ wg0: [DesiredPeer], _ wg1: [DesiredPeer], prune: (Bool, Bool), gateway: Bool) -> DesiredState {
        var d = DesiredState(routeProtocol: 77)
        d.devices = [DesiredWireGuardDevice(name: "wg0", privateKey: F.privateKey, listenPort: 51820, prunePeers: prune.0, peers: wg0),
                     DesiredWireGuardDevice(name: "wg1", prunePeers: prune.1, peers: wg1)]
        d.sysctls = [DesiredSysctl(interface: "private0", name: "forwarding", value: "1"),
                     DesiredSysctl(interface: "private0", name: "proxy_ndp", value: "1")]
        d.routes = [DesiredRoute(destination: Self.lanPrefix, device: "private0", origin: .lanPrefix)]
            + wg0.flatMap { peer in peer.allowedIPs.map { DesiredRoute(destination: $0, device: "wg0", origin: .peer(peer.name)) } }
        d.proxies = wg0.flatMap { peer in
            peer.allowedIPs.filter { Self.lanPrefix.contains($0) && $0.isHost }
                .map { DesiredProxy(address: $0.address, device: "private0", origin: .peer(peer.name)) }
        }
        d.datapath = DesiredDatapath(lan: "private0", tunnel: "wg0", entries:
            [DatapathEntry(direction: .tunnelToLAN, prefix: Self.lanPrefix)]
            + wg0.flatMap { $0.allowedIPs.map { DatapathEntry(direction: .lanToTunnel, prefix: $0) } })
        if gateway { d.gateway = DesiredGateway(tunnel: "wg0", lan: "private0", lanPrefix: Self.lanPrefix) }
        return d
    }

    func peer(_ i: Int, _ pool: inout [IPPrefix], _ g: inout SeededRandom) -> DesiredPeer {
        DesiredPeer(name: "p\(i)", publicKey: F.key(UInt8(i)), persistentKeepalive: [0, 25].randomElement(using: &g)!,
                    allowedIPs: (0..<Int.random(in: 0...2, using: &g)).compactMap { _ in pool.popLast() })
    }

    func testPeersMovedBetweenTwoDevicesPlanAsTheFullPlan() {
        var compared = 0, moved = 0
        for seed in UInt64(1)...3000 {
            var g = SeededRandom(seed: seed)
            var pool = Self.pool.shuffled(using: &g)
            var wg0: [DesiredPeer] = [], wg1: [DesiredPeer] = []
            for i in 0..<Int.random(in: 0...5, using: &g) {
                if Bool.random(using: &g) { wg0.append(peer(i, &pool, &g)) } else { wg1.append(peer(i, &pool, &g)) }
            }
            let prune = (Int.random(in: 0..<3, using: &g) != 0, Int.random(in: 0..<3, using: &g) != 0)
            let gateway = Bool.random(using: &g)
            let old = desired(wg0, wg1, prune: prune, gateway: gateway)
            // The edit: a peer moved to the other device (at a random place), added, removed, or given a new address.
            var new0 = wg0, new1 = wg1
            var didMove = false
            for _ in 0..<Int.random(in: 1...2, using: &g) {
                switch Int.random(in: 0..<4, using: &g) {
                case 0 where !new0.isEmpty:
                    let p = new0.remove(at: Int.random(in: 0..<new0.count, using: &g))
                    new1.insert(p, at: Int.random(in: 0...new1.count, using: &g))
                    didMove = true
                case 1 where !new1.isEmpty:
                    let p = new1.remove(at: Int.random(in: 0..<new1.count, using: &g))
                    new0.insert(p, at: Int.random(in: 0...new0.count, using: &g))
                    didMove = true
                case 2:
                    let used = Set((new0 + new1).map(\.name))
                    guard let i = (0..<8).first(where: { !used.contains("p\($0)") }) else { break }
                    let added = peer(i, &pool, &g)
                    if Bool.random(using: &g) { new0.append(added) } else { new1.insert(added, at: 0) }
                case 3 where !new0.isEmpty:
                    let p = Int.random(in: 0..<new0.count, using: &g)
                    pool += new0[p].allowedIPs
                    pool.shuffle(using: &g)
                    new0[p].allowedIPs = (0..<Int.random(in: 0...2, using: &g)).compactMap { _ in pool.popLast() }
                default:
                    if !new1.isEmpty { new1.removeLast() } else if !new0.isEmpty { new0.removeFirst() }
                }
            }
            // The same key on both devices is allowed; a name is unique: drop a second one.
            var seen = Set<String>()
            new0 = new0.filter { seen.insert($0.name).inserted }
            new1 = new1.filter { seen.insert($0.name).inserted }
            let new = desired(new0, new1, prune: prune, gateway: gateway)

            // The kernel: mostly the old state, with drift, foreign peers and, on wg9, recorded ones.
            func kernelPeers(_ peers: [DesiredPeer]) -> [WireGuardPeer] {
                var result = peers.filter { _ in Int.random(in: 0..<6, using: &g) != 0 }.map { F.kernelPeer($0) }
                for _ in 0..<Int.random(in: 0...2, using: &g) {
                    let key = F.key(UInt8.random(in: 0...9, using: &g))
                    if !result.contains(where: { $0.publicKey == key }) { result.append(WireGuardPeer(publicKey: key, allowedIPs: [])) }
                }
                return result
            }
            let wireGuard = [
                "wg0": WireGuardDevice(name: "wg0", index: 5, privateKey: F.privateKey, listenPort: 51820, peers: kernelPeers(wg0)),
                "wg1": WireGuardDevice(name: "wg1", index: 7, peers: kernelPeers(wg1)),
                "wg9": WireGuardDevice(name: "wg9", index: 8, peers: [WireGuardPeer(publicKey: F.key(3), allowedIPs: [])]),
            ]
            var routes = old.routes.filter { _ in Int.random(in: 0..<6, using: &g) != 0 }.map {
                F.route($0.destination.description, $0.device == "wg0" ? 5 : 6)
            }
            if Bool.random(using: &g) { routes.append(F.route(Self.pool.randomElement(using: &g)!.description, 7)) }
            let observed = ObservedState(
                links: Self.links, routes: routes,
                proxies: old.proxies.filter { _ in Int.random(in: 0..<6, using: &g) != 0 }.map { F.proxy($0.address.description) },
                sysctls: ["net/ipv6/conf/private0/forwarding": "1", "net/ipv6/conf/private0/proxy_ndp": "1"],
                wireGuard: wireGuard, datapath: Set(old.datapath!.entries.filter { _ in Int.random(in: 0..<6, using: &g) != 0 }))
            var records = Records()
            for device in ["wg0", "wg1", "wg9"] where Bool.random(using: &g) {
                _ = records.recordPeers((0..<3).map { _ in F.key(UInt8.random(in: 0...9, using: &g)) }, device: device,
                                        interfaceIndex: nil)
            }
            let lastApplied: LastApplied? = Bool.random(using: &g) ? nil : LastApplied(old)

            guard checkTouchedPlan(old: old, new: new, observed: observed, lastApplied: lastApplied, records: records, seed: seed) != nil
            else { continue }
            compared += 1
            if didMove { moved += 1 }
        }
        XCTAssertGreaterThan(compared, 2000, "compared")
        XCTAssertGreaterThan(moved, 500, "moved")
    }
}
