import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The daemon on the host kernel (no WireGuard here: `wg0` is a veth, so routes, proxy
/// entries and sysctls are enforced and peers stay pending).
final class DaemonTests: XCTestCase {
    private let alice = PrivateKey.generate().publicKey
    private let bob = PrivateKey.generate().publicKey

    private func config(_ h: DaemonHarness, extraRoute: String = "2001:db8:2::/64", broken: Bool = false) -> String {
        h.gatewayConfig(
            runtime: ["route_protocol: 77", "wireguard_poll: 200ms", "proxy_poll: 200ms", "resync: 60s"],
            wireGuard: ["listen_port: 51820"],
            peers: [TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"]),
                    TestPeer("bob", bob, allowedIPs: ["2001:db8:1::101/128"])],
            gateway: ["proxy_ndp: true", "redirect: false"],
            tail: """
            routes:
              - destination: \(extraRoute)
                device: wg0\(broken ? "\n    metric: many" : "")
            """)
    }

    private func setUp() throws -> (TestNamespace, DaemonHarness) {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(config(h))
        return (ns, h)
    }

    private func ourRoutes(_ ns: TestNamespace) throws -> [String: String] {
        var found: [String: String] = [:]
        for route in try ns.ipJSON("-6", "route", "show", "proto", "77") {
            found[route["dst"] as! String] = "\(route["dev"] as! String) \(route["metric"] as? Int ?? 0)"
        }
        return found
    }

    private func proxies(_ ns: TestNamespace) throws -> Set<String> {
        Set(try ns.ipJSON("-6", "neigh", "show", "proxy").compactMap { $0["dst"] as? String })
    }

    private let expectedRoutes = [
        "2001:db8:1::100": "wg0 1024", "2001:db8:1::101": "wg0 1024",
        "2001:db8:1::/64": "private0 1024", "2001:db8:2::/64": "wg0 1024",
    ]

    func testConvergesThenRepairsRouteAndProxyDrift() throws {
        let (ns, h) = try setUp()
        try h.start()
        XCTAssertEqual(try ourRoutes(ns), expectedRoutes)
        XCTAssertEqual(try proxies(ns), ["2001:db8:1::100", "2001:db8:1::101"])
        try ns.namespace.perform {
            XCTAssertEqual(try Sysctl.ipv6(interface: "private0", "proxy_ndp").read(), "1")
            XCTAssertEqual(try Sysctl.ipv6(interface: "private0", "forwarding").read(), "1")
        }

        // A deleted route is back within 1 s.
        try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0", "proto", "77")
        try eventually(within: .seconds(1), "deleted route restored") { try ourRoutes(ns) == expectedRoutes }

        // A route moved to another device is moved back.
        try ns.ip("-6", "route", "replace", "2001:db8:2::/64", "dev", "private0", "proto", "77")
        try eventually(within: .seconds(1), "changed route corrected") { try ourRoutes(ns) == expectedRoutes }

        // Our route replaced by one at another metric: the stray goes, ours comes back.
        try ns.ip("-6", "route", "del", "2001:db8:2::/64", "dev", "wg0", "proto", "77")
        try ns.ip("-6", "route", "add", "2001:db8:2::/64", "dev", "wg0", "proto", "77", "metric", "5")
        try eventually(within: .seconds(1), "metric corrected") { try ourRoutes(ns) == expectedRoutes }

        // A deleted proxy entry is back within proxy_poll (200 ms) plus slack.
        try ns.ip("-6", "neigh", "del", "proxy", "2001:db8:1::101", "dev", "private0")
        try eventually(within: .seconds(1), "proxy entry restored") { try proxies(ns).contains("2001:db8:1::101") }

        // proxy_ndp switched off is switched back on (netconf event).
        try ns.namespace.perform { try Sysctl.ipv6(interface: "private0", "proxy_ndp").write("0") }
        try eventually(within: .seconds(1), "proxy_ndp restored") {
            try ns.namespace.perform { try Sysctl.ipv6(interface: "private0", "proxy_ndp").read() } == "1"
        }
    }

    /// Our route given attributes wgkeeper never sets, keeping its device and next hop (`ip route
    /// change`): an MTU lock, a preference, a source address, an SRv6 encapsulation that sends
    /// the client's traffic to another host. Each is drift, replaced by the route as configured,
    /// as a fresh start on a clean kernel has it.
    func testOurRouteGivenAttributesWeNeverSetIsReplaced() throws {
        let (ns, h) = try setUp()
        try h.start()
        func plain(_ destination: String) throws -> Bool {
            let route = try ns.ipJSON("-6", "route", "show", destination, "proto", "77")
            return route.count == 1 && route[0]["dev"] as? String == "wg0" && route[0]["metrics"] == nil && route[0]["encap"] == nil
                && route[0]["prefsrc"] == nil && (route[0]["pref"] as? String ?? "medium") == "medium"
        }
        XCTAssertTrue(try plain("2001:db8:1::100/128"))
        let changes: [[String]] = [
            ["mtu", "lock", "1280"], ["pref", "high"], ["hoplimit", "1"],
            ["encap", "seg6", "mode", "inline", "segs", "2001:db8:99::99"],
        ]
        for change in changes {
            try shell(["ip", "-n", ns.name, "-6", "route", "change", "2001:db8:1::100/128", "dev", "wg0", "proto", "77", "metric", "1024"] + change)
            try eventually(within: .seconds(2), "route with \(change.joined(separator: " ")) replaced") { try plain("2001:db8:1::100/128") }
        }
        XCTAssertEqual(try ourRoutes(ns), expectedRoutes)
    }

    /// Our proxy entry given the router flag (`ip neigh replace proxy … router`), which wgkeeper
    /// never sets: the kernel's advertisements for the client would say it is a router. Written
    /// again without it by the next proxy poll.
    func testOurProxyEntryGivenTheRouterFlagIsWrittenAgain() throws {
        let (ns, h) = try setUp()
        try h.start()
        func flagged() throws -> Bool {
            let entry = try ns.ipJSON("-6", "neigh", "show", "proxy", "2001:db8:1::101")
            return entry.first?.keys.contains("router") == true  // iproute2: "router": null
        }
        XCTAssertFalse(try flagged())
        try ns.ip("-6", "neigh", "replace", "proxy", "2001:db8:1::101", "dev", "private0", "router", "proto", "77")
        XCTAssertTrue(try flagged(), "the flag as iproute2 shows it")
        try eventually(within: .seconds(2), "router flag cleared") { try !flagged() }
        XCTAssertEqual(try proxies(ns), ["2001:db8:1::100", "2001:db8:1::101"])
    }

    func testForeignRouteInTheSameTableIsLeftAlone() throws {
        let (ns, h) = try setUp()
        try ns.ip("-6", "route", "add", "2001:db8:99::/64", "dev", "wg0", "proto", "static")
        try ns.ip("-6", "route", "add", "2001:db8:2::/64", "dev", "wg0", "proto", "static", "metric", "7")
        try h.start()
        try ns.ip("-6", "route", "del", "2001:db8:1::101/128", "dev", "wg0")  // cause a reconcile
        try eventually(within: .seconds(1), "repair") { try ourRoutes(ns) == expectedRoutes }
        let foreign = try ns.ipJSON("-6", "route", "show", "proto", "static").compactMap { $0["dst"] as? String }
        XCTAssertEqual(Set(foreign), ["2001:db8:99::/64", "2001:db8:2::/64"])
    }

    func testRestartWithTheKernelAlreadyCorrectWritesNothing() throws {
        let (ns, h) = try setUp()
        try h.start()
        XCTAssertGreaterThan(try h.writes(), 0)
        h.stop()
        XCTAssertEqual(try ourRoutes(ns), expectedRoutes, "stopping leaves the kernel state in place")

        // Cross-check with an independent watcher: nothing route- or neighbour-shaped changes.
        let monitor = Process()
        monitor.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        monitor.arguments = ["ip", "-n", ns.name, "monitor", "route", "neigh", "netconf"]
        let seen = Pipe()
        monitor.standardOutput = seen
        try monitor.run()
        usleep(200_000)
        try h.start()
        usleep(500_000)
        XCTAssertEqual(try h.writes(), 0, "a restart on a correct kernel must write nothing")
        monitor.terminate()
        monitor.waitUntilExit()
        // The kernel's own churn (link-local addresses finishing DAD) is not ours: keep what
        // a write of ours would show: our protocol, proxy entries, forwarding/proxy_neigh.
        let ours = String(decoding: seen.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .split(separator: "\n").filter { $0.contains("proto 77") || $0.contains("proxy") || $0.contains("forwarding") }
        XCTAssertEqual(ours, [], "ip monitor saw writes")
    }

    func testReloadInvalidKeepsStateValidAppliesOnlyTheDifference() throws {
        let (ns, h) = try setUp()
        try h.start()
        let before = try h.writes()

        try h.writeConfig(config(h, broken: true))
        kill(h.process!.processIdentifier, SIGHUP)
        try eventually(within: .seconds(3), "refused reload shows in status") {
            (try h.status()["config_errors"] as? [String])?.isEmpty == false
        }
        let errors = try h.status()["config_errors"] as! [String]
        XCTAssertTrue(errors.contains { $0.contains("wgkeeper.yaml:") && $0.contains("metric") }, "\(errors)")
        XCTAssertEqual(try ourRoutes(ns), expectedRoutes)
        XCTAssertEqual(try h.writes(), before)

        try h.writeConfig(config(h, extraRoute: "2001:db8:3::/64"))
        kill(h.process!.processIdentifier, SIGHUP)
        var expected = expectedRoutes
        expected["2001:db8:2::/64"] = nil
        expected["2001:db8:3::/64"] = "wg0 1024"
        try eventually(within: .seconds(3), "reload applied") { try ourRoutes(ns) == expected }
        XCTAssertEqual(try h.writes() - before, 2, "one route removed, one added: two writes")
        XCTAssertEqual(try h.status()["config_generation"] as? Int, 2)
        XCTAssertEqual((try h.status()["config_errors"] as? [String])?.count, 0)
    }

    func testSystemdNotificationsInOrder() throws {
        let (_, h) = try setUp()
        try h.start(watchdogUsec: 400_000)
        XCTAssertTrue(h.notifications.last!.contains("STATUS="), h.notifications.last!)
        try h.waitForNotification { $0.contains("WATCHDOG=1") }
        kill(h.process!.processIdentifier, SIGHUP)
        try h.waitForNotification { $0.contains("RELOADING=1") }
        let reloading = h.notifications.last!
        XCTAssertTrue(reloading.contains("MONOTONIC_USEC="), reloading)
        try h.waitForNotification { $0.contains("READY=1") }
        try h.waitForNotification { $0.contains("WATCHDOG=1") }
        kill(h.process!.processIdentifier, SIGTERM)
        try h.waitForNotification { $0.contains("STOPPING=1") }
        let order = h.notifications.compactMap { n -> String? in
            ["READY=1", "RELOADING=1", "STOPPING=1"].first { n.contains($0) }
        }
        XCTAssertEqual(order, ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"])
    }

    func testStatusSocketAbuseDoesNotStopRepairs() throws {
        let (ns, h) = try setUp()
        try h.start()
        // A client that connects and says nothing, one that floods, one that never reads.
        var abusers: [Int32] = []
        for _ in 0..<3 { abusers.append(try connectUnix(h.socketPath)) }
        let flood = [UInt8](repeating: UInt8(ascii: "x"), count: 1 << 20)
        _ = flood.withUnsafeBytes { send(abusers[1], $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        let many = Array(String(repeating: #"{"command":"status"}"# + "\n", count: 2000).utf8)
        _ = many.withUnsafeBytes { send(abusers[2], $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        defer { abusers.forEach { close($0) } }

        // Concurrent well-behaved clients all get answers, and drift is still repaired.
        let group = DispatchGroup()
        let answered = Counter()
        for _ in 0..<8 {
            DispatchQueue.global().async(group: group) {
                if (try? h.status()["config_generation"]) != nil { answered.increment() }
            }
        }
        try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0", "proto", "77")
        try eventually(within: .seconds(1), "repair while clients misbehave") { try ourRoutes(ns) == expectedRoutes }
        XCTAssertEqual(group.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(answered.value, 8)
        XCTAssertTrue(h.process!.isRunning)
    }

    /// A service manager that stops reading its notify socket must not freeze the loop:
    /// the socket's queue (net.unix.max_dgram_qlen, 10 by default) fills with STATUS= lines.
    func testUnreadNotifySocketDoesNotStallRepairs() throws {
        let (ns, h) = try setUp()
        try h.start()
        for round in 1...30 {
            try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0", "proto", "77")
            try eventually(within: .seconds(1), "repair \(round) with nobody reading notifications") { try ourRoutes(ns) == expectedRoutes }
        }
        XCTAssertNotNil(try h.status()["pid"])
    }

    func testSecondDaemonOnTheSameSocketRefusesAndStaleSocketIsReplaced() throws {
        let (_, h) = try setUp()
        try h.start()
        let second = try? shell(["ip", "netns", "exec", h.ns.name, DaemonHarness.binary, "run", "--config", h.configPath])
        XCTAssertNil(second, "a second daemon must refuse to start")
        h.stop(signal: SIGKILL)  // leaves a stale socket file behind
        XCTAssertTrue(FileManager.default.fileExists(atPath: h.socketPath))
        try h.start()
        XCTAssertNotNil(try h.status()["pid"])
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
