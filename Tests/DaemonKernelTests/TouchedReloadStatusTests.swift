import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// What status lists after a reload that planned only its touched objects is what a fresh
/// start of the same configuration lists: the same pending objects and conflicts, in the same
/// order (not only the same counts).
final class TouchedReloadStatusTests: XCTestCase {
    private let keys = (0..<4).map { _ in PrivateKey.generate().publicKey }

    func testPendingAndConflictListsAfterATouchedReloadAreAFreshStartsLists() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        func write(_ peers: [TestPeer]) throws {
            try h.writeConfig(h.gatewayConfig(runtime: ["proxy_poll: 200ms", "wireguard_poll: 200ms", "resync: 600s"], peers: peers))
        }
        // Foreign objects where bob's proxy entry and dave's route go: a conflict each. alice and
        // dave have no address in the LAN prefix: the reload writes no proxy entry (whose event
        // would make the next reconcile a full plan, which puts status in its order again).
        try ns.ip("-6", "neigh", "add", "proxy", "2001:db8:1::101", "dev", "private0")
        try ns.ip("-6", "route", "add", "2001:db8:6::/64", "dev", "wg0", "proto", "static")
        let alice = TestPeer("alice", keys[0], allowedIPs: ["2001:db8:5::/64"])
        let bob = TestPeer("bob", keys[1], allowedIPs: ["2001:db8:1::101/128"])
        let carol = TestPeer("carol", keys[2], allowedIPs: ["2001:db8:1::102/128"])
        let dave = TestPeer("dave", keys[3], allowedIPs: ["2001:db8:6::/64"])
        try write([bob, carol])
        try h.start()
        usleep(300_000)
        let touchedBefore = try XCTUnwrap(try h.status()["touched_plans"] as? Int)

        // Appended: only alice and dave are touched (a peer inserted before bob would touch bob and carol too).
        try write([bob, carol, alice, dave])
        let output = try h.ask("reload")["output"] as? String ?? ""
        XCTAssertFalse(output.contains("error"), output)
        let reloaded = try h.status()
        XCTAssertEqual(reloaded["touched_plans"] as? Int, touchedBefore + 1, "alice and dave were planned alone")

        h.stop()
        try h.start()
        usleep(300_000)
        let fresh = try h.status()
        func pending(_ status: [String: Any]) -> [String] {
            ((status["pending"] as? [[String: Any]]) ?? []).compactMap { $0["object"] as? String }
        }
        XCTAssertEqual(pending(fresh).count, 5, "wg0 (a veth here) and its four peers")
        XCTAssertEqual(pending(reloaded), pending(fresh), "the pending list")
        XCTAssertEqual((fresh["conflicts"] as? [String])?.count, 2, "bob's proxy entry and dave's route")
        XCTAssertEqual(reloaded["conflicts"] as? [String], fresh["conflicts"] as? [String], "the conflicts list")
    }
}
