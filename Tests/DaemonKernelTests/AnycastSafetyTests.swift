import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// docs/ARCHITECTURE.md, "Kernel facts": LAN forwarding = 1 with a global prefix shorter than /127 on the LAN makes the
/// gateway join that prefix's subnet-router anycast. wgkeeper refuses unless allowed.
final class AnycastSafetyTests: XCTestCase {
    private func start(allow: Bool) throws -> (TestNamespace, DaemonHarness) {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/64")
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(h.gatewayConfig(peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])],
                                          gateway: ["redirect: false", "allow_lan_anycast: \(allow)"]))
        try h.start()
        return (ns, h)
    }

    private func forwarding(_ ns: TestNamespace) throws -> String {
        try ns.namespace.perform { try Sysctl.ipv6(interface: "private0", "forwarding").read() }
    }

    private func globalAnycast(_ ns: TestNamespace) throws -> [String] {
        try shell("ip", "netns", "exec", ns.name, "cat", "/proc/net/anycast6").split(separator: "\n")
            .filter { $0.contains("private0") && !$0.contains("fe80") }.map(String.init)
    }

    private func check(_ h: DaemonHarness, _ prefix: String) throws -> [String: Any]? {
        (try h.status()["safety"] as? [[String: Any]])?.first { ($0["name"] as? String)?.hasPrefix(prefix) == true }
    }

    func testRefusesForwardingWhileTheLANHoldsAShortPrefixThenProceedsWhenFixed() throws {
        let (ns, h) = try start(allow: false)
        XCTAssertEqual(try forwarding(ns), "0")
        XCTAssertEqual(try globalAnycast(ns), [])
        // Refused is its own column, not a failure, and not "in sync".
        let status = try h.status()
        XCTAssertEqual((status["failed"] as? [[String: Any]])?.count, 0)
        let refused = try XCTUnwrap(status["refused"] as? [[String: Any]])
        let why = try XCTUnwrap(refused.first?["reason"] as? String)
        XCTAssertTrue(why.contains("2001:db8:1::1/64") && why.contains("anycast") && why.contains("allow_lan_anycast"), why)
        let sysctls = try XCTUnwrap((status["kinds"] as? [String: Any])?["sysctl"] as? [String: Int])
        XCTAssertEqual(sysctls["refused"], 1)
        XCTAssertEqual(sysctls["in_sync"], 1, "proxy_ndp only")
        XCTAssertTrue(h.notifications.contains { $0.contains("1 refused") }, "\(h.notifications)")
        XCTAssertEqual(try check(h, "lan addresses")?["ok"] as? Bool, false)
        // Routes and proxy entries are not held back by the refusal.
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "proto", "77").count, 2)

        // The operator follows the advice: a /128 instead of the /64.
        try ns.ip("-6", "addr", "del", "2001:db8:1::1/64", "dev", "private0")
        try ns.ip("-6", "addr", "add", "2001:db8:1::1/128", "dev", "private0", "nodad")
        try eventually(within: .seconds(2), "forwarding turned on") { try forwarding(ns) == "1" }
        XCTAssertEqual(try globalAnycast(ns), [])
        XCTAssertEqual(try check(h, "lan anycast")?["ok"] as? Bool, true)
        XCTAssertEqual((try h.status()["failed"] as? [[String: Any]])?.count, 0)
        XCTAssertEqual((try h.status()["refused"] as? [[String: Any]])?.count, 0)
    }

    func testAllowedAnycastIsAppliedAndReported() throws {
        let (ns, h) = try start(allow: true)
        XCTAssertEqual(try forwarding(ns), "1")
        XCTAssertEqual(try globalAnycast(ns).count, 1, "the kernel joined 2001:db8:1::")
        let held = try XCTUnwrap(try check(h, "lan anycast"))
        XCTAssertTrue((held["detail"] as? String)?.contains("2001:db8:1::") == true, "\(held)")
        XCTAssertEqual(held["ok"] as? Bool, true)
    }
}
