import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// A careless operator on a gateway with real traffic (VM tier): two clients keep handshakes
/// and counters moving (a keepalive a second) while `wg set ... remove`, `wg set ...
/// allowed-ips`, `wg syncconf` and a stranger peer change the device behind the daemon's back.
/// Between changes the WireGuard poll finds the device unchanged but for traffic and decodes
/// nothing (`WireGuardFingerprint`); every change must still be found and repaired within a
/// few polls, and `status` must give each peer's current handshake and counters all along:
/// never figures from before a peer was removed and put back, never figures the kernel has
/// not reached.
final class TrafficDriftVMTests: XCTestCase {
    private struct Figures: CustomStringConvertible {
        var handshake: Int
        var received: UInt64
        var transmitted: UInt64
        var description: String { "handshake \(handshake) rx \(received) tx \(transmitted)" }
        func atMost(_ other: Figures) -> Bool {
            handshake <= other.handshake && received <= other.received && transmitted <= other.transmitted
        }
    }

    func testOperatorChangesWhileHandshakesHappenAreRepairedAndStatusFollowsTheCounters() throws {
        let gateway = try TestNamespace(for: self)
        try gateway.addVeth("private0", "lanp")
        let h = try DaemonHarness(self, ns: gateway)
        let aliceKey = PrivateKey.generate(), carolKey = PrivateKey.generate()
        let alice = aliceKey.publicKey, carol = carolKey.publicKey
        let bob = PrivateKey.generate().publicKey, dave = PrivateKey.generate().publicKey
        let configured: [WireGuardKey: Set<String>] = [
            alice: ["2001:db8:1::100/128"], bob: ["2001:db8:1::101/128"], carol: ["2001:db8:1::102/128"],
            dave: ["2001:db8:1::103/128", "2001:db8:1::104/128"],
        ]
        try h.writeConfig(h.gatewayConfig(
            runtime: ["wireguard_poll: 300ms", "proxy_poll: 300ms"], wireGuard: ["listen_port: 51820"],
            peers: [TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"]),
                    TestPeer("bob", bob, allowedIPs: ["2001:db8:1::101/128"]),
                    TestPeer("carol", carol, allowedIPs: ["2001:db8:1::102/128"]),
                    TestPeer("dave", dave, allowedIPs: ["2001:db8:1::103/128", "2001:db8:1::104/128"])],
            gateway: ["redirect: false"]))
        try h.start()
        let gatewayPrivate = try String(contentsOfFile: h.keyPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let gatewayKey = try XCTUnwrap(WireGuardKey(base64: try shell(["wg", "pubkey"], input: gatewayPrivate + "\n")
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        _ = try WireGuardClient(for: self, underlay: 1, gateway: gateway, gatewayKey: gatewayKey, address: "2001:db8:1::100", privateKey: aliceKey, keepalive: 1)
        _ = try WireGuardClient(for: self, underlay: 2, gateway: gateway, gatewayKey: gatewayKey, address: "2001:db8:1::102", privateKey: carolKey, keepalive: 1)

        func wg(_ arguments: String...) throws { _ = try shell(["ip", "netns", "exec", gateway.name, "wg"] + arguments) }
        /// The kernel's peers: allowed IPs and figures (`wg show dump`: handshake in seconds).
        func kernel() throws -> [String: (ips: Set<String>, figures: Figures)] {
            var found: [String: (Set<String>, Figures)] = [:]
            for line in try shell("ip", "netns", "exec", gateway.name, "wg", "show", "wg0", "dump").split(separator: "\n").dropFirst() {
                let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
                let ips = f[3] == "(none)" ? [] : Set(f[3].split(separator: ",").map(String.init))
                found[f[0]] = (ips, Figures(handshake: Int(f[4]) ?? -1, received: UInt64(f[5]) ?? 0, transmitted: UInt64(f[6]) ?? 0))
            }
            return found
        }
        /// The status reply's peers, handshake cut to whole seconds as `wg` prints it.
        func reported() throws -> [String: Figures] {
            var found: [String: Figures] = [:]
            for peer in try XCTUnwrap(try h.status()["peers"] as? [[String: Any]]) {
                let handshake = (peer["latest_handshake"] as? Double).map { Int($0.rounded(.down)) } ?? 0
                found[try XCTUnwrap(peer["public_key"] as? String)] = Figures(
                    handshake: handshake, received: (peer["received_bytes"] as? NSNumber)?.uint64Value ?? 0,
                    transmitted: (peer["transmitted_bytes"] as? NSNumber)?.uint64Value ?? 0)
            }
            return found
        }
        func inSync() throws -> Bool {
            let peers = try kernel()
            return peers.count == configured.count && configured.allSatisfy { peers[$0.key.base64]?.ips == $0.value }
        }
        func unchangedReads() throws -> Int { (try h.status()["unchanged_reads"] as? [String: Int])?["wireguard"] ?? 0 }
        /// Status gives the peer's current figures: eventually between two kernel reads taken
        /// around it (the poll that took them may be a few hundred milliseconds old, so a
        /// keepalive just before the first read keeps it below for a moment), and never above
        /// what the kernel holds.
        func followsTheKernel(_ key: WireGuardKey, _ what: String) throws {
            var last = ""
            do {
                try eventually(within: .seconds(8), "\(what): status has \(key)'s current figures") {
                    let before = try XCTUnwrap(try kernel()[key.base64]).figures
                    guard let shown = try reported()[key.base64] else { last = "not in status"; return false }
                    let after = try XCTUnwrap(try kernel()[key.base64]).figures
                    last = "kernel \(before) … \(after), status \(shown)"
                    XCTAssertTrue(shown.atMost(after), "\(what): status ahead of the kernel: \(last)")
                    return before.atMost(shown)
                }
            } catch {
                XCTFail("\(error): \(last)")
            }
        }
        func repaired(_ what: String) throws {
            let took = try eventually(within: .seconds(8), "\(what) repaired") { try inSync() }
            print("\(what): repaired after \(took) (wireguard_poll 300ms, TCG)")
        }

        XCTAssertTrue(try inSync(), "wg0 configured at start")
        try eventually(within: .seconds(30), "both clients' handshakes") {
            let peers = try kernel()
            return (peers[alice.base64]?.figures.handshake ?? 0) > 0 && (peers[carol.base64]?.figures.handshake ?? 0) > 0
        }
        try followsTheKernel(alice, "traffic alone")
        try followsTheKernel(carol, "traffic alone")
        // Those polls decoded nothing: the fast path is the one under test.
        let reads = try unchangedReads()
        try eventually(within: .seconds(8), "polls that decode nothing") { try unchangedReads() > reads + 3 }

        try wg("set", "wg0", "peer", bob.base64, "remove")
        try repaired("a quiet peer removed")
        try followsTheKernel(alice, "after bob came back")

        try wg("set", "wg0", "peer", alice.base64, "allowed-ips", "2001:db8:1::100/128,2001:db8:9::/64")
        try repaired("a busy peer's allowed IPs widened")
        try followsTheKernel(alice, "after alice's allowed IPs")

        // `wg syncconf` from a file the operator got wrong: dave missing, carol's address mistyped.
        let file = h.directory.appendingPathComponent("wg0.conf").path
        try """
        [Interface]
        PrivateKey = \(gatewayPrivate)
        ListenPort = 51820

        [Peer]
        PublicKey = \(alice.base64)
        AllowedIPs = 2001:db8:1::100/128

        [Peer]
        PublicKey = \(bob.base64)
        AllowedIPs = 2001:db8:1::101/128

        [Peer]
        PublicKey = \(carol.base64)
        AllowedIPs = 2001:db8:9::102/128

        """.write(toFile: file, atomically: true, encoding: .utf8)
        try wg("syncconf", "wg0", file)
        try repaired("wg syncconf dropping a peer and changing another")
        try followsTheKernel(alice, "after syncconf")
        try followsTheKernel(carol, "after syncconf")

        let stranger = PrivateKey.generate().publicKey
        try wg("set", "wg0", "peer", stranger.base64, "allowed-ips", "2001:db8:7::/64")
        try repaired("a stranger added")

        // A busy peer removed: put back with nothing counted; status must not keep the old figures.
        let beforeRemoval = try XCTUnwrap(try kernel()[carol.base64]).figures
        XCTAssertGreaterThan(beforeRemoval.received, 0)
        try wg("set", "wg0", "peer", carol.base64, "remove")
        try repaired("a busy peer removed")
        try followsTheKernel(carol, "after carol was put back")
        try followsTheKernel(alice, "after carol was put back")

        // A burst of changes between two polls, the last one undoing the first.
        try wg("set", "wg0", "peer", dave.base64, "remove")
        try wg("set", "wg0", "peer", bob.base64, "allowed-ips", "2001:db8:1::101/128,2001:db8:1::105/128")
        try wg("set", "wg0", "peer", dave.base64, "allowed-ips", "2001:db8:1::103/128,2001:db8:1::104/128")
        try repaired("a burst of changes")
        try followsTheKernel(alice, "after the burst")

        let peers = try kernel(), shown = try reported()
        XCTAssertEqual(Set(shown.keys), Set(peers.keys), "status lists the kernel's peers")
        XCTAssertTrue(h.process!.isRunning)
    }

    /// wireguard.ko unloaded and loaded again while the daemon is stopped (SIGSTOP), wg0 gone:
    /// the family comes back under another id, and the daemon, which recreates wg0 through
    /// rtnetlink, must look the family up again to read and configure it.
    func testTheWireGuardFamilyReloadedUnderAnotherIdIsFoundAgain() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth("private0", "lanp")
        let h = try DaemonHarness(self, ns: ns)
        let alice = PrivateKey.generate().publicKey
        try h.writeConfig(h.gatewayConfig(
            runtime: ["wireguard_poll: 300ms"], wireGuard: ["listen_port: 51820"],
            peers: [TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"])], gateway: ["redirect: false"]))
        try h.start()
        func inSync() -> Bool {
            (try? shell("ip", "netns", "exec", ns.name, "wg", "show", "wg0", "allowed-ips"))?.contains("2001:db8:1::100/128") == true
        }
        XCTAssertTrue(inSync())
        let before = try WireGuardNetlink().familyID
        let pid = h.process!.processIdentifier
        kill(pid, SIGSTOP)
        var resumed = false
        defer { if !resumed { kill(pid, SIGCONT) } }
        _ = try ns.ip("link", "del", "wg0")
        guard (try? shell("rmmod", "wireguard")) != nil else { throw XCTSkip("wireguard.ko cannot be unloaded here (built in, or in use)") }
        _ = try shell("modprobe", "wireguard")
        let after = try WireGuardNetlink().familyID
        guard after != before else { throw XCTSkip("the family came back under the same id (\(after))") }
        kill(pid, SIGCONT)
        resumed = true
        let took = try eventually(within: .seconds(20), "wg0 recreated and configured through the family's new id") { inSync() }
        print("family \(before) → \(after): wg0 configured again after \(took) (TCG)")
        XCTAssertTrue(h.process!.isRunning)
    }
}
