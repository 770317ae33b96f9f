import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// Reloads that add, remove or edit peers plan those peers' objects alone (`touched_plans`):
/// the kernel, read with iproute2 and bpftool, holds what the configuration says after each,
/// a conflict and a refusal come and go with their peer, a change of anything else plans in
/// full, and at the end a fresh start of the same configuration finds nothing to write and
/// reports what the reloads left in status.
final class TouchedReloadTests: XCTestCase {
    private let keys = (0..<5).map { _ in PrivateKey.generate().publicKey }

    func testPeerEditsPlanTheirObjectsAloneAndAFreshStartAgrees() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let pinRoot = try h.mountPinRoot(self)
        func write(_ peers: [TestPeer], listenPort: Int = 51820) throws {
            try h.writeConfig(h.gatewayConfig(runtime: ["proxy_poll: 200ms", "wireguard_poll: 200ms", "resync: 600s"], pinRoot: pinRoot,
                                              wireGuard: ["listen_port: \(listenPort)"], peers: peers, gateway: ["redirect: true"]))
        }
        var alice = TestPeer("alice", keys[0], allowedIPs: ["2001:db8:1::100/128"])
        var bob = TestPeer("bob", keys[1], allowedIPs: ["2001:db8:1::101/128", "2001:db8:5::/64"])
        let carol = TestPeer("carol", keys[2], allowedIPs: ["2001:db8:1::102/128"])
        try write([alice, bob, carol])
        try h.start()

        func ours() throws -> Set<String> {
            Set(try ns.ipJSON("-6", "route", "show", "proto", "77").map { "\($0["dst"] as! String) \($0["dev"] as! String)" })
        }
        func proxies() throws -> Set<String> { Set(try ns.ipJSON("-6", "neigh", "show", "proxy").compactMap { $0["dst"] as? String }) }
        /// The client map's keys as addresses/lengths, read with bpftool.
        func clients() throws -> Set<String> {
            let dump = try shell("bpftool", "-j", "map", "dump", "pinned", "\(pinRoot)/wg0/client_prefixes")
            let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [[String: Any]], dump)
            return Set(try entries.map { entry in
                let bytes = try XCTUnwrap(entry["key"] as? [String]).compactMap { UInt8($0.dropFirst(2), radix: 16) }
                let length = Int(bytes[0]) | Int(bytes[1]) << 8
                return "\(IPv6Address(bytes: Array(bytes[4..<20]))!)/\(length)"
            })
        }
        func touched() throws -> Int { try XCTUnwrap(try h.status()["touched_plans"] as? Int) }
        func reload() throws {
            let output = try h.ask("reload")["output"] as? String ?? ""
            XCTAssertFalse(output.contains("error"), output)
        }
        let lanRoute = "2001:db8:1::/64 private0"
        XCTAssertEqual(try ours(), [lanRoute, "2001:db8:1::100 wg0", "2001:db8:1::101 wg0", "2001:db8:5::/64 wg0", "2001:db8:1::102 wg0"])
        XCTAssertEqual(try clients(), ["2001:db8:1::100/128", "2001:db8:1::101/128", "2001:db8:5::/64", "2001:db8:1::102/128"])
        let start = try touched()

        // bob moves: his old route, proxy entry and map entry go, the new ones come; six writes.
        bob.allowedIPs = ["2001:db8:1::111/128", "2001:db8:5::/64"]
        try write([alice, bob, carol])
        var writes = try h.writes()
        try reload()
        XCTAssertEqual(try touched(), start + 1, "a moved peer plans its objects alone")
        XCTAssertEqual(try h.writes() - writes, 6)
        XCTAssertEqual(try ours(), [lanRoute, "2001:db8:1::100 wg0", "2001:db8:1::111 wg0", "2001:db8:5::/64 wg0", "2001:db8:1::102 wg0"])
        XCTAssertEqual(try proxies(), ["2001:db8:1::100", "2001:db8:1::111", "2001:db8:1::102"])
        XCTAssertEqual(try clients(), ["2001:db8:1::100/128", "2001:db8:1::111/128", "2001:db8:5::/64", "2001:db8:1::102/128"])

        // dave's address is held by a foreign route (a conflict), erin's by the gateway itself
        // (refused by the safety rule): both show in status, and nothing of ours replaces them.
        try ns.ip("-6", "route", "add", "2001:db8:1::103/128", "dev", "wg0", "proto", "static")
        let dave = TestPeer("dave", keys[3], allowedIPs: ["2001:db8:1::103/128"])
        let erin = TestPeer("erin", keys[4], allowedIPs: ["2001:db8:1::1/128", "2001:db8:1::104/128"])
        try write([alice, dave, bob, carol, erin])
        try reload()
        XCTAssertEqual(try touched(), start + 2)
        var status = try h.status()
        let conflicts = try XCTUnwrap(status["conflicts"] as? [String])
        XCTAssertTrue(conflicts.contains { $0.contains("2001:db8:1::103") }, "\(conflicts)")
        let refused = try XCTUnwrap(status["refused"] as? [[String: Any]]).compactMap { $0["object"] as? String }
        XCTAssertTrue(refused.contains("route 2001:db8:1::1/128 dev wg0"), "\(refused)")
        XCTAssertTrue(refused.contains("peer erin dev wg0"), "\(refused)")
        XCTAssertEqual(try ours(), [lanRoute, "2001:db8:1::100 wg0", "2001:db8:1::111 wg0", "2001:db8:5::/64 wg0", "2001:db8:1::102 wg0",
                                    "2001:db8:1::104 wg0"])
        XCTAssertEqual(try proxies(), ["2001:db8:1::100", "2001:db8:1::111", "2001:db8:1::102", "2001:db8:1::103", "2001:db8:1::104"])
        XCTAssertFalse(try clients().contains("2001:db8:1::1/128"), "the gateway's own address never goes into the tunnel")
        let kinds = { (status: [String: Any]) in try XCTUnwrap(status["kinds"] as? [String: [String: Int]]) }
        let counts = try kinds(status)
        XCTAssertEqual(counts["route"]?["conflict"], 1, "\(counts)")
        XCTAssertEqual(try kinds(status)["peer"]?["pending"], 5, "no WireGuard on the host: every peer pending")

        // alice and erin go, and dave with them: their entries, conflict and refusals go too.
        alice.allowedIPs = ["2001:db8:1::100/128"]
        try write([bob, carol])
        writes = try h.writes()
        try reload()
        XCTAssertEqual(try touched(), start + 3)
        status = try h.status()
        XCTAssertEqual(status["conflicts"] as? [String], [])
        XCTAssertEqual((status["refused"] as? [Any])?.count, 0)
        XCTAssertEqual(try kinds(status)["peer"]?["pending"], 2)
        XCTAssertEqual(try ours(), [lanRoute, "2001:db8:1::111 wg0", "2001:db8:5::/64 wg0", "2001:db8:1::102 wg0"])
        XCTAssertEqual(try proxies(), ["2001:db8:1::111", "2001:db8:1::102"])
        XCTAssertEqual(try clients(), ["2001:db8:1::111/128", "2001:db8:5::/64", "2001:db8:1::102/128"])
        XCTAssertEqual(try h.writes() - writes, 8, "alice's and erin's route, proxy entry and map entry, dave's proxy entry and map entry")
        XCTAssertTrue(try ns.ip("-6", "route", "show", "2001:db8:1::103/128").contains("proto static"), "the foreign route stays")

        // A device setting changed with a peer: planned in full.
        try write([bob, carol, alice], listenPort: 51821)
        try reload()
        XCTAssertEqual(try touched(), start + 3, "a device's setting is not an object: a full plan")
        XCTAssertTrue(try ours().contains("2001:db8:1::100 wg0"))

        // What a fresh start of the same configuration finds: nothing to write, the same status.
        status = try h.status()
        h.stop()
        try h.start()
        usleep(300_000)
        XCTAssertEqual(try h.writes(), 0, "the reloads left the kernel as a full plan wants it")
        let fresh = try h.status()
        XCTAssertEqual(try kinds(fresh), try kinds(status))
        XCTAssertEqual(fresh["conflicts"] as? [String], status["conflicts"] as? [String])
        XCTAssertEqual((fresh["refused"] as? [Any])?.count, (status["refused"] as? [Any])?.count)
    }
}
