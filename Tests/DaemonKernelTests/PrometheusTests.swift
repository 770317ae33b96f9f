import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// `wgkeeper status --format prometheus`, the real binary against a running daemon: a valid
/// exposition (checked by PrometheusExposition, as `promtool check metrics` would) that agrees
/// with the JSON reply, counts a repaired route and a refused reload, replaces its output file
/// atomically, and says `wgkeeper_up 0` once the daemon is gone.
final class PrometheusTests: XCTestCase {
    private let alice = PrivateKey.generate().publicKey

    private func config(_ h: DaemonHarness, broken: Bool = false) -> String {
        h.gatewayConfig(runtime: ["proxy_poll: 200ms"],
                        peers: [TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"])],
                        gateway: ["redirect: false"],
                        tail: broken ? "routes:\n  - destination: 2001:db8:2::/64\n    device: wg0\n    metric: many\n" : "")
    }

    /// Runs the built binary; returns its exit status and standard output.
    private func wgkeeper(_ arguments: String...) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: DaemonHarness.binary)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    private func scrape(_ h: DaemonHarness) throws -> (PrometheusExposition, String) {
        let (status, text) = try wgkeeper("status", "--format", "prometheus", "--socket", h.socketPath)
        XCTAssertEqual(status, 0, text)
        return (try PrometheusExposition(text), text)
    }

    func testExpositionAgreesWithStatusAndCountsRepairsAndRefusedReloads() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(config(h))
        try h.start()

        let (first, text) = try scrape(h)
        let json = try h.status()
        XCTAssertEqual(first.value("wgkeeper_up"), 1)
        XCTAssertEqual(first.value("wgkeeper_config_generation"), 1)
        XCTAssertEqual(first.values("wgkeeper_build_info").first, 1)
        let kinds = try XCTUnwrap(json["kinds"] as? [String: [String: Int]])
        for (kind, counts) in kinds {
            for (state, value) in counts {
                XCTAssertEqual(first.value("wgkeeper_objects", ["kind": kind, "state": state]), Double(value), "\(kind) \(state)")
            }
        }
        XCTAssertEqual(first.value("wgkeeper_objects", ["kind": "route", "state": "in_sync"]), 2, "the client's /128 and the LAN prefix")
        // Every reconcile is in the histogram, and the counters count from the start.
        let reconciles = try XCTUnwrap(first.value("wgkeeper_reconciles_total"))
        XCTAssertGreaterThan(reconciles, 0)
        XCTAssertLessThanOrEqual(reconciles, Double(try XCTUnwrap(try h.status()["reconciles"] as? Int)))
        XCTAssertEqual(first.value("wgkeeper_reconcile_duration_seconds_count"), reconciles)
        XCTAssertGreaterThan(try XCTUnwrap(first.value("wgkeeper_reconcile_duration_seconds_sum")), 0)
        XCTAssertEqual(first.value("wgkeeper_repairs_total", ["kind": "route"]), 0, "a start repairs nothing")
        XCTAssertGreaterThan(try XCTUnwrap(first.value("wgkeeper_changes_applied_total", ["kind": "route"])), 0)
        XCTAssertEqual(first.value("wgkeeper_netlink_writes_total"), Double(try XCTUnwrap(json["netlink_writes"] as? Int)))
        XCTAssertEqual(first.value("wgkeeper_reload_failures_total"), 0)
        // wg0 is a veth here: the peer stays pending, and nothing names a key.
        XCTAssertFalse(text.contains(alice.base64))
        XCTAssertFalse(text.contains(try String(contentsOfFile: h.keyPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))

        // Drift: a route deleted behind the daemon's back comes back, and counts as a repair.
        let appliedBefore = try XCTUnwrap(first.value("wgkeeper_changes_applied_total", ["kind": "route"]))
        try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0")
        try eventually(within: .seconds(2), "the route repaired") {
            try ns.ipJSON("-6", "route", "show", "2001:db8:1::100/128", "proto", "77").count == 1
        }
        let (repaired, _) = try scrape(h)
        XCTAssertEqual(repaired.value("wgkeeper_repairs_total", ["kind": "route"]), 1)
        XCTAssertEqual(repaired.value("wgkeeper_repairs_total", ["kind": "proxy"]), 0)
        XCTAssertEqual(repaired.value("wgkeeper_changes_applied_total", ["kind": "route"]), appliedBefore + 1)
        XCTAssertGreaterThan(try XCTUnwrap(repaired.value("wgkeeper_reconciles_total")), reconciles)

        // A refused reload: counted, flagged, and the generation stays.
        try h.writeConfig(config(h, broken: true))
        kill(h.process!.processIdentifier, SIGHUP)
        try eventually(within: .seconds(3), "the refused reload counted") {
            try scrape(h).0.value("wgkeeper_reload_failures_total") == 1
        }
        let (refused, _) = try scrape(h)
        XCTAssertEqual(refused.value("wgkeeper_config_last_reload_refused"), 1)
        XCTAssertEqual(refused.value("wgkeeper_config_generation"), 1)
        XCTAssertEqual(refused.value("wgkeeper_reloads_total"), 1)
    }

    /// `ndp: datapath`: status and the solicited-node group metrics count only what the program
    /// answers for: not a peer address refused because the gateway holds it, and nothing while
    /// the LAN device is gone (both programs are detached then, whatever the config map says).
    func testNeighbourDiscoveryStatusAndGroupMetricsTellWhatIsAnswered() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let pinRoot = try h.mountPinRoot(self)
        try h.writeConfig(h.gatewayConfig(runtime: ["proxy_poll: 200ms"], pinRoot: pinRoot, peers: [
            TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"]),
            TestPeer("mallory", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::1/128"]),
        ], gateway: ["redirect: true", "ndp: datapath"]))
        try h.start()
        func line() throws -> String { (try h.status()["datapath"] as? [String: Any])?["neighbour_discovery"] as? String ?? "(none)" }
        let mac = try XCTUnwrap(ns.ipJSON("link", "show", "dev", "private0").first?["address"] as? String)
        let answered = try line()
        XCTAssertTrue(answered.hasPrefix("answered by lan_ingress for 1 addresses with \(mac); 1 solicited-node groups joined on private0"),
                      "mallory's 2001:db8:1::1 is the gateway's, refused: \(answered)")
        XCTAssertTrue((try h.status()["refused"] as? [[String: Any]])?.contains { ($0["object"] as? String)?.contains("mallory") == true } == true)
        let maddr = try ns.ip("-6", "maddr", "show", "dev", "private0")
        XCTAssertTrue(maddr.contains("ff02::1:ff00:100"), maddr)
        var (metrics, text) = try scrape(h)
        XCTAssertEqual(metrics.value("wgkeeper_datapath_solicited_node_groups", ["state": "joined"]), 1, text)
        XCTAssertEqual(metrics.value("wgkeeper_datapath_solicited_node_groups", ["state": "not_joined"]), 0, text)

        // The LAN goes: nothing is answered, nothing joined.
        try ns.ip("link", "del", "private0")
        try eventually(within: .seconds(3), "status follows the missing LAN") { try line().hasPrefix("not answered by lan_ingress (device private0 missing)") }
        let missing = try line()
        XCTAssertFalse(missing.contains(mac), missing)
        (metrics, text) = try scrape(h)
        XCTAssertEqual(metrics.value("wgkeeper_datapath_solicited_node_groups", ["state": "joined"]), 0, text)

        // And comes back: answered again, the group joined again.
        try ns.addVeth("private0", "lanp")
        try ns.ip("-6", "addr", "add", "2001:db8:1::1/128", "dev", "private0", "nodad")
        try eventually(within: .seconds(3), "answered again") { try line().contains("for 1 addresses with ") && line().contains("; 1 solicited-node groups joined") }
        (metrics, text) = try scrape(h)
        XCTAssertEqual(metrics.value("wgkeeper_datapath_solicited_node_groups", ["state": "joined"]), 1, text)
    }

    func testOutputFileIsReplacedAtomicallyAndSaysWhenTheDaemonIsDown() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(config(h))
        try h.start()

        // The textfile collector's directory, with an older file in it.
        let directory = h.directory.appendingPathComponent("node-exporter")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        let file = directory.appendingPathComponent("wgkeeper.prom").path
        try "stale\n".write(toFile: file, atomically: false, encoding: .utf8)
        var info = stat()
        XCTAssertEqual(stat(file, &info), 0)
        let before = info.st_ino

        let (status, output) = try wgkeeper("status", "--format", "prometheus", "--socket", h.socketPath, "--output", file)
        XCTAssertEqual(status, 0)
        XCTAssertEqual(output, "", "nothing on standard output with --output")
        let written = try String(contentsOfFile: file, encoding: .utf8)
        XCTAssertEqual(try PrometheusExposition(written).value("wgkeeper_up"), 1)
        XCTAssertEqual(stat(file, &info), 0)
        XCTAssertEqual(info.st_mode & 0o7777, 0o644, "node-exporter reads it as its own user")
        XCTAssertNotEqual(info.st_ino, before, "a new file renamed over the old one, not the old one rewritten")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["wgkeeper.prom"], "no temporary file left")

        // The daemon gone: exit status 1, and the file says so instead of keeping old values.
        h.stop()
        let (downStatus, downOutput) = try wgkeeper("status", "--format", "prometheus", "--socket", h.socketPath)
        XCTAssertEqual(downStatus, 1)
        let down = try PrometheusExposition(downOutput)
        XCTAssertEqual(down.samples.map(\.name), ["wgkeeper_up"])
        XCTAssertEqual(down.value("wgkeeper_up"), 0)
        XCTAssertEqual(try wgkeeper("status", "--format", "prometheus", "--socket", h.socketPath, "--output", file).status, 1)
        XCTAssertEqual(try PrometheusExposition(try String(contentsOfFile: file, encoding: .utf8)).samples.map(\.value), [0])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["wgkeeper.prom"])
    }
}
