import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// Configurations built to crash or exhaust the parser or the loop, dropped into `conf.d` of a
/// running daemon: the reload is refused, the daemon lives on and the kernel keeps its state.
final class HostileConfigTests: XCTestCase {
    private func kernelState(_ ns: TestNamespace) throws -> [String] {
        let routes = try ns.ip("-6", "route", "show", "proto", "77")
        let proxies = try ns.ip("-6", "neigh", "show", "proxy")
        let sysctls = try ns.namespace.perform {
            try ["forwarding", "proxy_ndp"].map { try Sysctl.ipv6(interface: "private0", $0).read() }
        }
        return [routes, proxies] + sysctls
    }

    func testHostileFilesInConfDAreRefusedAndTheDaemonKeepsItsState() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        let confD = h.directory.appendingPathComponent("conf.d").path
        try FileManager.default.createDirectory(atPath: confD, withIntermediateDirectories: true)
        try h.writeConfig(h.gatewayConfig(
            runtime: ["include_dir: \(confD)", "wireguard_poll: 200ms", "proxy_poll: 200ms"],
            peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])],
            gateway: ["proxy_ndp: true", "redirect: false"]))
        try h.start()
        let pid = h.process!.processIdentifier
        let before = try kernelState(ns)
        XCTAssertTrue(before[0].contains("2001:db8:1::100"), before[0])
        let writes = try h.writes()

        var bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...9 { bomb += "a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ") + "]\n" }
        bomb += "routes: *a9\n"
        let huge = String(repeating: "999999999h", count: 3_000)
        let hostile = [
            ("crash.yaml", "routes: " + String(repeating: "[", count: 20_000) + "\n", "crash.yaml:1:40: nested deeper than 32 levels (the limit)"),
            ("bomb.yaml", bomb, "bomb.yaml:4:45: aliases expand to more than 10000 nodes (the limit)"),
            // Once accepted, this overflowed the event loop's millisecond arithmetic (SIGILL).
            ("intervals.yaml", "runtime: {resync: \(huge)}\n",
             "intervals.yaml:1:19: resync: \"\(huge.prefix(60))…\" (30000 bytes) is longer than 24h (the limit)"),
        ]
        for (name, text, expected) in hostile {
            let path = (confD as NSString).appendingPathComponent(name)
            try text.write(toFile: path, atomically: false, encoding: .utf8)
            let start = ContinuousClock.now
            XCTAssertEqual(kill(pid, SIGHUP), 0)
            try eventually(within: .seconds(3), "the reload with \(name) refused") {
                (try h.status()["config_errors"] as? [String])?.contains { $0.hasSuffix(expected) } == true
            }
            XCTAssertLessThan(ContinuousClock.now - start, .seconds(2), "refusing \(name)")
            XCTAssertTrue(h.process?.isRunning == true, "the daemon died on \(name): \(h.log)")
            let status = try h.status()
            XCTAssertEqual(status["config_generation"] as? Int, 1, "the running generation stays")
            XCTAssertEqual(try kernelState(ns), before, "kernel state after \(name)")
            XCTAssertEqual(try h.writes(), writes, "nothing written after \(name)")
            try FileManager.default.removeItem(atPath: path)
        }

        // Still the same process, still repairing.
        XCTAssertEqual(h.process?.processIdentifier, pid)
        try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0", "proto", "77")
        try eventually(within: .seconds(2), "deleted route restored") { try kernelState(ns) == before }
    }
}
