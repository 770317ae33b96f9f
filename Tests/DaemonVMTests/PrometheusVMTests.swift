import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// `status --format prometheus` with real WireGuard (VM tier): per-peer series named by device
/// and peer name, a real handshake's age, a peer the configuration does not name only counted,
/// a peer removed behind the daemon's back counted as a repair, and never a key in the text.
/// Counters that move with traffic reach it through polls that decode nothing.
final class PrometheusVMTests: XCTestCase {
    func testPeerSeriesFromARealHandshake() throws {
        let gateway = try TestNamespace(for: self)
        let client = try TestNamespace(for: self)
        try gateway.addVeth("private0", "lanp")
        // The underlay: a veth from the gateway into the client's namespace.
        try gateway.ip("link", "add", "ul0", "type", "veth", "peer", "name", "ul1", "netns", client.name)
        try gateway.ip("-6", "addr", "add", "fd00::1/64", "dev", "ul0", "nodad")
        try gateway.ip("link", "set", "ul0", "up")
        try client.ip("-6", "addr", "add", "fd00::2/64", "dev", "ul1", "nodad")
        try client.ip("link", "set", "ul1", "up")

        let h = try DaemonHarness(self, ns: gateway)
        let laptop = PrivateKey.generate()
        let laptopKey = h.directory.appendingPathComponent("laptop.key").path
        try (laptop.key.base64 + "\n").write(toFile: laptopKey, atomically: false, encoding: .utf8)
        let bob = PrivateKey.generate().publicKey
        try h.writeConfig(h.gatewayConfig(
            runtime: ["wireguard_poll: 300ms"], wireGuard: ["listen_port: 51820", "prune_peers: false"],
            peers: [TestPeer("alice-laptop", laptop.publicKey, allowedIPs: ["2001:db8:1::100/128"]),
                    TestPeer("bob", bob, allowedIPs: ["2001:db8:1::101/128"])],
            gateway: ["redirect: false"]))
        try h.start()
        let stranger = PrivateKey.generate().publicKey
        try shell("ip", "netns", "exec", gateway.name, "wg", "set", "wg0", "peer", stranger.base64, "allowed-ips", "2001:db8:7::/64")

        // The laptop: wg1 towards the gateway, a keepalive every second starts the handshake.
        let gatewayPublic = try shell(["wg", "pubkey"], input: try String(contentsOfFile: h.keyPath, encoding: .utf8))
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try client.ip("link", "add", "wg1", "type", "wireguard")
        try shell("ip", "netns", "exec", client.name, "wg", "set", "wg1", "private-key", laptopKey, "peer", gatewayPublic,
                  "endpoint", "[fd00::1]:51820", "allowed-ips", "2001:db8:1::/64", "persistent-keepalive", "1")
        try client.ip("link", "set", "wg1", "up")

        func scrape() throws -> (PrometheusExposition, String) {
            let text = try shell(DaemonHarness.binary, "status", "--format", "prometheus", "--socket", h.socketPath)
            return (try PrometheusExposition(text), text)
        }
        let alice = ["device": "wg0", "peer": "alice-laptop"]
        let waited = try eventually(within: .seconds(20), "alice's handshake in the exposition") {
            (try scrape().0.value("wgkeeper_peer_latest_handshake_age_seconds", alice) ?? .infinity) < 60
        }
        print("handshake visible in the exposition after \(waited) (TCG)")
        let (metrics, text) = try scrape()
        XCTAssertEqual(metrics.value("wgkeeper_peer_latest_handshake_age_seconds", ["device": "wg0", "peer": "bob"]), .infinity)
        XCTAssertGreaterThan(try XCTUnwrap(metrics.value("wgkeeper_peer_transmit_bytes_total", alice)), 0)
        XCTAssertEqual(metrics.value("wgkeeper_peers", ["device": "wg0", "configured": "true"]), 2)
        XCTAssertEqual(metrics.value("wgkeeper_peers", ["device": "wg0", "configured": "false"]), 1, "the operator's own peer, counted")
        XCTAssertEqual(Set(metrics.samples.compactMap { $0.labels["peer"] }), ["alice-laptop", "bob"])
        for key in [laptop.publicKey.base64, bob.base64, stranger.base64, gatewayPublic] {
            XCTAssertFalse(text.contains(key), "a key in the exposition")
        }

        // The keepalives keep alice's counters moving: each poll finds the device unchanged but
        // for them (nothing decoded), and the exposition follows them all the same.
        func unchangedReads() throws -> Int { (try h.status()["unchanged_reads"] as? [String: Int])?["wireguard"] ?? 0 }
        let received = try XCTUnwrap(metrics.value("wgkeeper_peer_receive_bytes_total", alice))
        let reads = try unchangedReads()
        try eventually(within: .seconds(10), "alice's counters moving on polls that decode nothing") {
            try unchangedReads() > reads + 2 && (try scrape().0.value("wgkeeper_peer_receive_bytes_total", alice) ?? 0) > received
        }

        // bob removed behind the daemon's back: put back within a poll, counted as a repair.
        XCTAssertEqual(metrics.value("wgkeeper_repairs_total", ["kind": "peer"]), 0)
        try shell("ip", "netns", "exec", gateway.name, "wg", "set", "wg0", "peer", bob.base64, "remove")
        try eventually(within: .seconds(5), "bob put back and counted") {
            try scrape().0.value("wgkeeper_repairs_total", ["kind": "peer"]) == 1
        }
        XCTAssertEqual(try scrape().0.value("wgkeeper_peers", ["device": "wg0", "configured": "true"]), 2)
    }
}
