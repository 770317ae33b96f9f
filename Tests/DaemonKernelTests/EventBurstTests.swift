import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// Events are folded as they are queued and acted on at once (no fixed delay), yet a burst of
/// them still costs a bounded number of reconciles, not one per event.
final class EventBurstTests: XCTestCase {
    private let count = 1000

    private func destination(_ i: Int) -> String { "2001:db8:3::\(String(i, radix: 16))/128" }

    private func start() throws -> (TestNamespace, DaemonHarness) {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        var tail = "routes:\n"
        for i in 0..<count { tail += "  - {destination: \"\(destination(i))\", device: wg0}\n" }
        // Long timers: every reconcile counted below is one the events caused.
        try h.writeConfig(h.gatewayConfig(runtime: ["wireguard_poll: 1h", "proxy_poll: 1h", "resync: 1h"],
                                          peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])],
                                          tail: tail))
        try h.start()
        try eventually(within: .seconds(10), "\(count) routes installed") { try self.ours(ns).count == self.count }
        // The start's own follow-ups (its writes' events, netconf after the sysctls, the veths'
        // link-local addresses leaving DAD) settle first: no reconcile for 1.5 s.
        var last = -1, quiet = 0
        try eventually(within: .seconds(20), "reconciles settle") {
            let now = try self.reconciles(h)
            quiet = now == last ? quiet + 1 : 0
            last = now
            usleep(500_000)
            return quiet >= 3
        }
        return (ns, h)
    }

    private func ours(_ ns: TestNamespace) throws -> [Route] {
        try ns.rtnetlink().routes(family: .inet6).filter { $0.protocolNumber == 77 && $0.destination.description.hasPrefix("2001:db8:3::") }
    }

    private func reconciles(_ h: DaemonHarness) throws -> Int { try XCTUnwrap(try h.status()["reconciles"] as? Int) }

    /// 1 000 routes deleted in one netlink batch (one sendmsg): all back, in a handful of reconciles.
    func testThousandDeletionsAtOnceCostAFewReconciles() throws {
        let (ns, h) = try start()
        let before = try reconciles(h)
        let routes = try ours(ns)
        let netlink = try ns.rtnetlink()
        let results = try netlink.perform(routes.map { $0.deleteRequest() })
        XCTAssertEqual(results.filter { if case .failure = $0 { true } else { false } }.count, 0)
        let took = try eventually(within: .seconds(10), "\(count) routes repaired") { try self.ours(ns).count == self.count }
        // Let any follow-up pass (the daemon folding its own writes) finish before counting.
        usleep(300_000)
        let after = try reconciles(h)
        print("1000 deletions in one batch: repaired in \(took), \(after - before) reconciles")
        XCTAssertGreaterThan(after - before, 0)
        XCTAssertLessThanOrEqual(after - before, 8, "a burst of \(count) events must not cost one reconcile each")
    }

    /// One deletion is repaired without a fixed delay, and costs at most two reconciles (the
    /// repair, and the pass that folds the daemon's own write), both planning only that route.
    func testSingleDeletionIsRepairedAtOnce() throws {
        let (ns, h) = try start()
        let before = try h.status()
        try ns.ip("-6", "route", "del", destination(7), "dev", "wg0", "proto", "77")
        try eventually(within: .seconds(2), "route repaired") { try self.ours(ns).count == self.count }
        usleep(300_000)
        let after = try h.status()
        let reconciles = try XCTUnwrap(after["reconciles"] as? Int) - XCTUnwrap(before["reconciles"] as? Int)
        let routeOnly = try XCTUnwrap(after["route_reconciles"] as? Int) - XCTUnwrap(before["route_reconciles"] as? Int)
        XCTAssertLessThanOrEqual(reconciles, 2)
        XCTAssertEqual(routeOnly, reconciles, "a route event plans only its route")
    }

    /// A route event planned alone still sees a foreign route at its identity: the conflict is
    /// reported and the foreign route left alone; once it goes, ours comes back.
    func testConflictFromAnEventIsReportedAndResolved() throws {
        let (ns, h) = try start()
        // Replaced in place by a foreign one (a deletion first would race the repair).
        try ns.ip("-6", "route", "replace", destination(9), "dev", "wg0", "proto", "static")
        try eventually(within: .seconds(2), "conflict reported") {
            (try h.status()["conflicts"] as? [String])?.contains { $0.contains(self.destination(9).replacingOccurrences(of: "/128", with: "")) } == true
        }
        XCTAssertEqual(try ours(ns).count, count - 1)
        try ns.ip("-6", "route", "del", destination(9), "dev", "wg0", "proto", "static")
        try eventually(within: .seconds(2), "ours back, conflict gone") {
            try self.ours(ns).count == self.count && (try h.status()["conflicts"] as? [String])?.isEmpty == true
        }
    }
}
