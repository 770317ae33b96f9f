import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// A DNS server that never answers: name lookups must not slow repairs or stop the watchdog.
/// `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf, so the
/// daemon's resolver asks 127.0.0.1:53 inside the namespace, where a socket reads and never answers.
final class DeadDNSTests: XCTestCase {
    func testRepairsAndWatchdogCarryOnWhileANameDoesNotResolve() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let dns = try deadDNSServer(in: ns)

        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(h.gatewayConfig(
            runtime: ["wireguard_poll: 200ms", "proxy_poll: 200ms"],
            peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"],
                             extra: [#"endpoint: "vpn.wgkeeper.test:51820""#])]))
        let started = ContinuousClock.now
        try h.start(watchdogUsec: 400_000, environment: ["WGKEEPER_RESOLVE_TIMEOUT_SECONDS": "3"])
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(2), "start does not wait for the name")

        func endpoint() throws -> [String: Any] {
            let list = try XCTUnwrap(try h.status()["endpoints"] as? [[String: Any]])
            return try XCTUnwrap(list.first { $0["endpoint"] as? String == "vpn.wgkeeper.test:51820" }, "\(list)")
        }
        XCTAssertEqual(try endpoint()["state"] as? String, "resolving")
        var pfd = pollfd(fd: dns, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, 2000), 1, "the daemon's lookup reached the dead server (the test is not vacuous)")

        // While the lookup hangs: repairs keep their latency, the watchdog keeps ticking.
        let repairs = try (1...10).map { _ in try repairLatency(ns) }
        print("repair latency with dead DNS: \(repairs.map { "\(Double(milliseconds($0 * 1000)) / 1000) ms" })")
        XCTAssertTrue(repairs.allSatisfy { $0 < .milliseconds(100) }, "\(repairs)")
        let watchdogsBefore = h.notifications.filter { $0.contains("WATCHDOG=1") }.count
        for _ in 0..<5 { try h.waitForNotification(timeout: .milliseconds(600)) { $0.contains("WATCHDOG=1") } }
        XCTAssertGreaterThanOrEqual(h.notifications.filter { $0.contains("WATCHDOG=1") }.count, watchdogsBefore + 5)

        // Past the timeout the name is reported as not resolving, with the reason.
        try eventually(within: .seconds(5), "the lookup times out") { try endpoint()["state"] as? String == "unresolved" }
        XCTAssertEqual(try endpoint()["error"] as? String, "no answer within 3 s")
        XCTAssertTrue(h.process!.isRunning)
    }

    /// Deletes the tunnel route over netlink and times the daemon's re-add, as the kernel
    /// reports it (no process spawns in the measurement).
    private func repairLatency(_ ns: TestNamespace) throws -> Duration {
        let rtnetlink = try ns.rtnetlink()
        let events = try ns.events([.ipv6Route])
        let target = try XCTUnwrap(IPPrefix("2001:db8:1::100/128"))
        let route = try XCTUnwrap(try rtnetlink.routes(family: .inet6).first { $0.destination == target && $0.protocolNumber == 77 })
        // Timed from before the request: the test thread may be descheduled after the ack.
        let deleted = ContinuousClock.now
        try rtnetlink.socket.perform(route.deleteRequest())
        while ContinuousClock.now - deleted < .seconds(1) {
            for event in try events.waitForEvents(timeout: .milliseconds(100)) {
                if case .newRoute(let added) = event, added.destination == target, added.protocolNumber == 77 {
                    return ContinuousClock.now - deleted
                }
            }
        }
        throw TestFailure("the deleted route was not repaired within 1 s")
    }

    /// A UDP socket on 127.0.0.1:53 inside the namespace that never answers, and the resolv.conf
    /// pointing there; both removed in teardown.
    private func deadDNSServer(in ns: TestNamespace) throws -> Int32 {
        let created = !FileManager.default.fileExists(atPath: "/etc/netns")
        let directory = "/etc/netns/\(ns.name)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        addTeardownBlock {
            try? FileManager.default.removeItem(atPath: directory)
            if created { rmdir("/etc/netns") }  // only if empty: another test may be using it
        }
        try "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n".write(toFile: directory + "/resolv.conf", atomically: true, encoding: .utf8)
        let fd = try ns.namespace.perform { () -> Int32 in
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(53).bigEndian
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { throw TestFailure("cannot bind 127.0.0.1:53 in \(ns.name): \(String(cString: strerror(errno)))") }
            return fd
        }
        addTeardownBlock { close(fd) }
        return fd
    }
}
