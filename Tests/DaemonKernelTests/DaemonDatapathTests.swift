import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The daemon drives the datapath (host kernel: TCX): programs attached to both devices,
/// map entries reconciled like any other object, adopted untouched across a restart.
final class DaemonDatapathTests: XCTestCase {
    func testAttachesReconcilesMapEntriesAndAdoptsOnRestart() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let pinRoot = try h.mountPinRoot(self)
        try h.writeConfig(h.gatewayConfig(
            runtime: ["proxy_poll: 200ms"], pinRoot: pinRoot,
            peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128", "2001:db8:5::/64"])],
            gateway: ["redirect: true"]))
        try h.start()
        let status = try h.status()
        let datapath = try XCTUnwrap(status["datapath"] as? [String: Any], "\(status)")
        XCTAssertEqual(datapath["attach_mode"] as? String, "tcx")
        XCTAssertNotNil((datapath["counters"] as? [String: Any])?["lan_to_tunnel"])
        XCTAssertNotNil((datapath["counters"] as? [String: Any])?["time_exceeded"])
        // ICMPv6 errors: the LAN's /128 serves both sides (the tunnel has no global address).
        XCTAssertEqual(datapath["icmp_errors"] as? [String: String], [
            "lan": "from 2001:db8:1::1 (found on private0)", "tunnel": "from 2001:db8:1::1 (found on wg0 or private0)",
        ])
        let config = try shell("bpftool", "-j", "map", "dump", "pinned", "\(pinRoot)/wg0/config")
        let value = try XCTUnwrap(((try JSONSerialization.jsonObject(with: Data(config.utf8)) as? [[String: Any]])?.first?["value"] as? [String])
            .map { $0.compactMap { UInt8($0.dropFirst(2), radix: 16) } }, config)
        XCTAssertEqual(value.count, 64)
        XCTAssertEqual(Array(value[8..<20]), [0xdc, 0x05, 0, 0, 0xdc, 0x05, 0, 0, 0xe8, 0x03, 0, 0], "MTUs 1500 (veth), 1000 ms")
        XCTAssertEqual(Array(value[24..<40]), IPv6Address("2001:db8:1::1")!.bytes)
        let datapathKind = try XCTUnwrap((status["kinds"] as? [String: [String: Int]])?["datapath"])
        XCTAssertEqual(datapathKind["in_sync"], 3, "\(datapathKind)")

        let clients = "\(pinRoot)/wg0/client_prefixes"
        func clientKeys() throws -> Int {
            let dump = try shell("bpftool", "-j", "map", "dump", "pinned", clients)
            return (try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [Any])?.count ?? -1
        }
        XCTAssertEqual(try clientKeys(), 2)
        // The gateway's own address inside the LAN prefix stays with the stack: a pass entry.
        let lanMap = try shell("bpftool", "-j", "map", "dump", "pinned", "\(pinRoot)/wg0/lan_prefixes")
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(lanMap.utf8)) as? [Any])?.count, 2, lanMap)
        // Drift: an entry deleted behind the daemon's back comes back within proxy_poll.
        let key = ["0x80", "0", "0", "0"] + IPv6Address("2001:db8:1::100")!.bytes.map { String(format: "0x%02x", $0) }
        try shell(["bpftool", "map", "delete", "pinned", clients, "key"] + key)
        // (The next proxy_poll may already have put it back: no assertion on the gap.)
        try eventually(within: .seconds(2), "map entry restored") { try clientKeys() == 2 }

        // Restart: the programs and entries are adopted; nothing is written.
        let programs = { try XCTUnwrap((try h.status()["datapath"] as? [String: Any])?["programs"] as? [String: Int]) }
        let ids = try programs()
        XCTAssertEqual(Set(ids.keys), ["lan_ingress", "tunnel_ingress"])
        h.stop()
        try h.start()
        usleep(300_000)
        XCTAssertEqual(try h.writes(), 0, "a restart must adopt the datapath without writing")
        XCTAssertEqual(try programs(), ids, "the same programs stay attached")
        for id in ids.values { XCTAssertNoThrow(try shell("bpftool", "prog", "show", "id", "\(id)")) }
    }
}
