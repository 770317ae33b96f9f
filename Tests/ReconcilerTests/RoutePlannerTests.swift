import Glibc
import Netlink
import Reconciler
import XCTest

/// `RoutePlanner` (the event path's plan of a few route identities) against `plan` (the full
/// plan, which resyncs and every other reconcile still use): on random desired states, kernels
/// and records, and random sets of identities, the incremental plan gives exactly the full
/// plan's route changes at those identities, in the same order, and its route conflicts there.
final class RoutePlannerTests: XCTestCase {
    static let pool = (1...10).map { F.prefix("2001:db8:1::\($0)/128") } + (1...3).map { F.prefix("2001:db8:\($0 + 20)::/64") }
        + [F.prefix("2001:db8:1::/64")]
    static let links = [Link(index: 2, name: "eth0"), Link(index: 5, name: "wg0", kind: "wireguard", flags: UInt32(IFF_UP)),
                        Link(index: 6, name: "private0"), Link(index: 7, name: "wg9", kind: "wireguard")]

    private func randomDesired(_ g: inout SeededRandom) -> DesiredState {
        var pool = Self.pool.shuffled(using: &g)
        let peers = (0..<Int.random(in: 0...5, using: &g)).map { i in
            DesiredPeer(name: "p\(i)", publicKey: F.key(UInt8(i + 1)),
                        allowedIPs: (0..<Int.random(in: 0...3, using: &g)).compactMap { _ in pool.popLast() })
        }
        var desired = F.desired(peers: peers)
        if Bool.random(using: &g) {
            desired.gateway = DesiredGateway(tunnel: "wg0", lan: "private0", lanPrefix: F.prefix("2001:db8:1::/64"),
                                             allowUnsafeAllowedIPs: Int.random(in: 0..<4, using: &g) == 0)
        }
        for _ in 0..<Int.random(in: 0...4, using: &g) {
            let route = DesiredRoute(destination: Self.pool.randomElement(using: &g)!,
                                     device: ["wg0", "private0", "gone0"].randomElement(using: &g)!,
                                     gateway: Bool.random(using: &g) ? F.address("fe80::1") : nil,
                                     table: [254, 100].randomElement(using: &g)!, metric: [1024, 10].randomElement(using: &g)!)
            if !desired.routes.contains(where: { $0.identity == route.identity }) { desired.routes.append(route) }
        }
        return desired
    }

    private func randomRoutes(_ g: inout SeededRandom) -> [Route] {
        var routes: [Route] = []
        for _ in 0..<Int.random(in: 0...18, using: &g) {
            let route = F.route(Self.pool.randomElement(using: &g)!.description, [2, 5, 6, 7].randomElement(using: &g)!,
                                proto: [77, 77, 77, 4, 2].randomElement(using: &g)!, metric: [1024, 1024, 10].randomElement(using: &g)!,
                                table: [254, 254, 100].randomElement(using: &g)!, gateway: Bool.random(using: &g) ? "fe80::2" : nil)
            // Several routes at one identity only with different next hops, as the kernel keeps them.
            if !routes.contains(where: { RouteIdentity($0) == RouteIdentity(route) && $0.sameNextHop(route) }) { routes.append(route) }
        }
        return routes
    }

    func testIncrementalPlanEqualsTheFullPlanAtTheTouchedIdentities() {
        var compared = 0, nonEmpty = 0
        for seed in UInt64(1)...2000 {
            var g = SeededRandom(seed: seed)
            let desired = randomDesired(&g)
            var links = Self.links
            if Int.random(in: 0..<6, using: &g) == 0 { links.removeAll { $0.name == "private0" } }
            if Int.random(in: 0..<8, using: &g) == 0 { links.removeAll { $0.name == "wg0" } }
            // The LAN's own addresses: some inside a peer's allowed IPs (the safety rule holds those back).
            var addresses: [Address] = []
            if Bool.random(using: &g) {
                addresses.append(Address(prefix: F.prefix("2001:db8:1::\(Int.random(in: 1...10, using: &g))/64"), interfaceIndex: 6))
            }
            var records = Records()
            if Int.random(in: 0..<3, using: &g) == 0 { records.createdDevices.insert("wg9") }
            let routes = randomRoutes(&g)
            let observed = ObservedState(links: links, routes: routes, addresses: addresses, wireGuard: [:])

            let full = plan(desired, observed, records: records)
            let planner = RoutePlanner(desired: desired, inputs: .init(generation: 1, links: links, addresses: addresses,
                                                                       createdDevices: records.createdDevices), records: records)
            let byIdentity = Dictionary(grouping: routes, by: RouteIdentity.init)
            // Identities from both sides, and some that neither holds.
            let candidates = Set(desired.routes.map(\.identity) + routes.map(RouteIdentity.init)
                + Self.pool.map { RouteIdentity(table: 254, destination: $0, metric: 1024) })
            for _ in 0..<4 {
                let touched = Set(candidates.filter { _ in Int.random(in: 0..<3, using: &g) == 0 })
                let incremental = planner.plan(touching: touched) { byIdentity[$0] ?? [] }
                let expected = full.changes.filter { $0.routeIdentity.map(touched.contains) ?? false }
                XCTAssertEqual(incremental.changes, expected, "seed \(seed), touched \(touched.sorted())")
                let subjects = planner.conflictSubjects(at: touched)
                let expectedConflicts = full.conflicts.filter { $0.kind == .route && subjects.contains($0.desired) }
                XCTAssertEqual(incremental.conflicts, expectedConflicts, "seed \(seed)")
                XCTAssertTrue(incremental.pending.isEmpty && incremental.refused.isEmpty)
                compared += 1
                if !expected.isEmpty { nonEmpty += 1 }
            }
            // Every identity at once: all of the full plan's route changes and conflicts.
            let all = planner.plan(touching: candidates) { byIdentity[$0] ?? [] }
            XCTAssertEqual(all.changes, full.changes.filter { $0.kind == .route }, "seed \(seed)")
            XCTAssertEqual(all.conflicts, full.conflicts.filter { $0.kind == .route }, "seed \(seed)")
        }
        // The generator must exercise the interesting cases, not compare empty plans.
        XCTAssertGreaterThan(nonEmpty, compared / 4)
    }
}
