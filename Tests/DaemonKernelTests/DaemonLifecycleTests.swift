import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// Pending devices, failing objects, `--cleanup`, and journald priorities.
final class DaemonLifecycleTests: XCTestCase {
    private func config(_ h: DaemonHarness, extra: String = "") -> String {
        h.gatewayConfig(runtime: ["proxy_poll: 200ms"], peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])], tail: extra)
    }

    private func ours(_ ns: TestNamespace) throws -> Int { try ns.ipJSON("-6", "route", "show", "proto", "77").count }

    func testMissingLANIsPendingUntilItAppears() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth("wg0", "wg0p")
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(config(h))
        try h.start()
        let pending = try XCTUnwrap(try h.status()["pending"] as? [[String: Any]])
        XCTAssertTrue(pending.contains { ($0["reason"] as? String)?.contains("private0") == true }, "\(pending)")
        XCTAssertEqual(try ours(ns), 1, "the tunnel route does not wait for the LAN")

        try ns.addVeth("private0", "lanp")
        try eventually(within: .seconds(1), "LAN objects applied when the LAN appears") {
            try ours(ns) == 2 && (try ns.ipJSON("-6", "neigh", "show", "proxy").count) == 1
        }
        // What stays pending is WireGuard's (this host kernel has none), nothing of the LAN's.
        let stillPending = try XCTUnwrap(try h.status()["pending"] as? [[String: Any]])
        XCTAssertFalse(stillPending.contains { ($0["reason"] as? String)?.contains("private0") == true }, "\(stillPending)")
    }

    func testAFailingObjectKeepsItsErrorBacksOffAndHoldsNothingBack() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        // A gateway that is not on-link: the kernel refuses this route, every time.
        try h.writeConfig(config(h, extra: """
        routes:
          - destination: 2001:db8:4::/64
            device: wg0
            gateway: 2001:db8:77::1
        """))
        try h.start()
        XCTAssertEqual(try ours(ns), 2, "the other routes are in place")
        let failed = try XCTUnwrap((try h.status()["failed"] as? [[String: Any]])?.first)
        XCTAssertTrue((failed["object"] as? String)?.contains("2001:db8:4::/64") == true, "\(failed)")
        XCTAssertFalse((failed["error"] as? String ?? "").isEmpty)
        let firstAttempts = failed["attempts"] as? Int ?? 0
        // Backoff: 1 s, 2 s, 4 s…: after 2.5 s at most three attempts, not one per event.
        // Distinct addresses: twenty random ones out of 9 999 collided about once in fifty runs ("File exists").
        for i in 1...20 { try ns.ip("-6", "route", "add", "2001:db8:99::\(i)/128", "dev", "wg0") }
        usleep(2_500_000)
        let later = try XCTUnwrap((try h.status()["failed"] as? [[String: Any]])?.first)
        let attempts = later["attempts"] as? Int ?? 0
        XCTAssertGreaterThan(attempts, firstAttempts)
        XCTAssertLessThanOrEqual(attempts, firstAttempts + 2)
    }

    func testCleanupRemovesExactlyWhatItOwnsAndLogsCarryPriorities() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        try ns.ip("-6", "route", "add", "2001:db8:99::/64", "dev", "wg0", "proto", "static")
        try ns.ip("-6", "neigh", "add", "proxy", "2001:db8:1::999", "dev", "private0")
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(config(h))
        try h.start(extraArguments: ["--cleanup"], journalStream: true)
        XCTAssertEqual(try ours(ns), 2)
        h.stop()
        XCTAssertEqual(try ours(ns), 0, "--cleanup removes wgkeeper's routes")
        XCTAssertEqual(try ns.ipJSON("-6", "neigh", "show", "proxy").compactMap { $0["dst"] as? String }, ["2001:db8:1::999"],
                       "only the foreign proxy entry is left")
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "proto", "static").count, 1, "the foreign route stays")
        let lines = h.finalLog().split(separator: "\n")
        XCTAssertFalse(lines.isEmpty)
        for line in lines { XCTAssertTrue(line.range(of: #"^<[0-7]>"#, options: .regularExpression) != nil, "no priority: \(line)") }
        XCTAssertTrue(lines.contains { $0.hasPrefix("<6>applied: + route 2001:db8:1::100/128") }, "\(lines)")
    }
}

/// A real ENOBUFS: the daemon's event queue shrunk to a few kilobytes and flooded.
final class DaemonOverflowTests: XCTestCase {
    func testEventOverflowMeansFullResyncAndNothingIsMissed() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(h.gatewayConfig(runtime: ["resync: 1h"],
                                          peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])]))
        try h.start(environment: ["WGKEEPER_EVENT_BUFFER": "4096"])
        // Stop the daemon's loop from reading while the flood lands, then delete our route in it.
        kill(h.process!.processIdentifier, SIGSTOP)
        let batch = (1...3000).map { "route add 2001:db8:77::\(String($0, radix: 16))/128 dev wg0 proto static" } + [
            "route del 2001:db8:1::100/128 dev wg0 proto 77",
        ]
        try shell(["ip", "-6", "-n", ns.name, "-batch", "-"], input: batch.joined(separator: "\n") + "\n")
        kill(h.process!.processIdentifier, SIGCONT)
        try eventually(within: .seconds(3), "route restored after the overflow") {
            (try ns.ipJSON("-6", "route", "show", "2001:db8:1::100/128", "proto", "77")).count == 1
        }
        XCTAssertGreaterThan(try h.status()["overflows"] as? Int ?? 0, 0, "the overflow was seen and counted")
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "proto", "static").count, 3000, "foreign routes untouched")
    }
}
