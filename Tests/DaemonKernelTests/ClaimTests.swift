import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// What a careless or hostile operator found in the first cut of the ownership rules, each
/// now a test: other tools' pins, an unrecordable sysctl, renamed and missing LANs, a changed
/// claim across a restart, two daemons, pins removed behind the daemon's back, STATUS=.
final class ClaimTests: XCTestCase {
    let alice = TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])

    private func config(_ h: DaemonHarness, lan: String = "private0", redirect: Bool = false, pinRoot: String? = nil,
                        runtime: [String] = []) -> String {
        h.gatewayConfig(lan: lan, redirect: redirect, pinRoot: pinRoot, runtime: runtime, peers: [alice])
    }

    private func lab() throws -> (TestNamespace, DaemonHarness) {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        return (ns, try DaemonHarness(self, ns: ns))
    }

    private func bpffs(_ h: DaemonHarness) throws -> String { try h.mountPinRoot(self) }

    func testAnotherToolsPinsUnderThePinRootAreNeverTouched() throws {
        let (_, h) = try lab()
        let pinRoot = try bpffs(h)
        try FileManager.default.createDirectory(atPath: "\(pinRoot)/othertool", withIntermediateDirectories: true)
        try shell("bpftool", "map", "create", "\(pinRoot)/othertool/their_map", "type", "hash", "key", "4", "value", "4",
                  "entries", "4", "name", "their_map")
        try h.writeConfig(config(h, redirect: true, pinRoot: pinRoot))
        try h.start()
        usleep(600_000)  // three proxy polls
        try h.writeConfig(config(h, redirect: false, pinRoot: pinRoot))
        _ = try h.ask("reload")
        h.stop()
        _ = try shell("ip", "netns", "exec", h.ns.name, DaemonHarness.binary, "cleanup", "--config", h.configPath)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(pinRoot)/othertool/their_map"), "another tool's pin survives")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(pinRoot)/wg0"), "ours is gone")
    }

    func testASysctlWhoseValueCannotBeRecordedIsNotWritten() throws {
        let (ns, h) = try lab()
        try h.writeConfig(config(h, runtime: ["state_dir: \(h.directory.path)/state"]))
        try FileManager.default.createDirectory(atPath: "\(h.directory.path)/state", withIntermediateDirectories: true)
        try h.writeConfig(config(h, redirect: false, runtime: ["state_dir: \(h.directory.path)/state"]))
        try h.start()
        XCTAssertEqual(try ns.sysctl("private0", "forwarding"), "1")
        // Saving the records now fails (a directory where the temporary file goes).
        try FileManager.default.createDirectory(atPath: "\(h.directory.path)/state/records.json.tmp", withIntermediateDirectories: true)
        try ns.addVeth("private1", "lanp1")
        try h.writeConfig(config(h, lan: "private1", runtime: ["state_dir: \(h.directory.path)/state"]))
        _ = try h.ask("reload")
        XCTAssertEqual(try ns.sysctl("private1", "forwarding"), "0", "not written: its value could not be recorded")
        let failed = try XCTUnwrap(try h.status()["failed"] as? [[String: Any]])
        XCTAssertTrue(failed.contains { ($0["error"] as? String)?.contains("cannot be recorded") == true }, "\(failed)")
        // Once the records can be saved again, the write goes through.
        try FileManager.default.removeItem(atPath: "\(h.directory.path)/state/records.json.tmp")
        try eventually(within: .seconds(5), "written after the backoff") { try ns.sysctl("private1", "forwarding") == "1" }
    }

    func testRecordsFollowARenameAndDieWithTheDevice() throws {
        let (ns, h) = try lab()
        try shell("ip", "netns", "exec", ns.name, "sysctl", "-qw", "net.ipv6.conf.private0.proxy_ndp=2")
        try h.writeConfig(config(h))
        try h.start()
        XCTAssertEqual(try ns.sysctl("private0", "proxy_ndp"), "1")
        // Renamed under the daemon: no longer the configured LAN; its values come back under the new name.
        try ns.ip("link", "set", "private0", "down")
        try ns.ip("link", "set", "private0", "name", "renamed0")
        try ns.ip("link", "set", "renamed0", "up")
        try eventually(within: .seconds(2), "the renamed device gets its values back") {
            try ns.sysctl("renamed0", "proxy_ndp") == "2" && (try ns.sysctl("renamed0", "forwarding")) == "0"
        }
        // A new device under the recorded name is another device: nothing is restored onto it.
        try ns.addVeth("private0", "lanq")
        try eventually(within: .seconds(2), "the new LAN is configured") { try ns.sysctl("private0", "proxy_ndp") == "1" }
        h.stop()
        try ns.ip("link", "del", "private0")
        try ns.addVeth("private0", "lanr")
        try shell("ip", "netns", "exec", ns.name, "sysctl", "-qw", "net.ipv6.conf.private0.proxy_ndp=1")
        _ = try shell("ip", "netns", "exec", ns.name, DaemonHarness.binary, "cleanup", "--config", h.configPath)
        XCTAssertEqual(try ns.sysctl("private0", "proxy_ndp"), "1", "a stale record is not restored onto a new device")
    }

    func testAMissingLANKeepsNeitherOurRouteNorOurProgram() throws {
        let (ns, h) = try lab()
        let pinRoot = try bpffs(h)
        try h.writeConfig(config(h, redirect: true, pinRoot: pinRoot))
        try h.start()
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(pinRoot)/wg0/lan_ingress_link"))
        try h.writeConfig(config(h, lan: "lanZ", redirect: true, pinRoot: pinRoot))
        _ = try h.ask("reload")
        // Nothing attached at all, as on a fresh start: the tunnel's program would still redirect
        // to the former LAN.
        try eventually(within: .seconds(2), "nothing of ours on the former LAN, nothing on the tunnel") {
            (try ns.ipJSON("-6", "route", "show", "dev", "private0", "proto", "77")).isEmpty
                && !FileManager.default.fileExists(atPath: "\(pinRoot)/wg0/lan_ingress_link")
                && !FileManager.default.fileExists(atPath: "\(pinRoot)/wg0/tunnel_ingress_link")
        }
        let pending = try XCTUnwrap(try h.status()["pending"] as? [[String: Any]])
        XCTAssertTrue(pending.contains { ($0["reason"] as? String)?.contains("lanZ") == true }, "\(pending)")
        // The LAN appears: both programs are attached again.
        try ns.ip("link", "set", "private0", "down")
        try ns.ip("link", "set", "private0", "name", "lanZ")
        try ns.ip("link", "set", "lanZ", "up")
        try eventually(within: .seconds(3), "attached again on lanZ and wg0") {
            FileManager.default.fileExists(atPath: "\(pinRoot)/wg0/lan_ingress_link")
                && FileManager.default.fileExists(atPath: "\(pinRoot)/wg0/tunnel_ingress_link")
        }
    }

    /// The LAN renamed under a running daemon: the tunnel's program goes with the LAN's.
    func testARenamedLANTakesTheTunnelsProgramAlong() throws {
        let (ns, h) = try lab()
        let pinRoot = try bpffs(h)
        try h.writeConfig(config(h, redirect: true, pinRoot: pinRoot))
        try h.start()
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(pinRoot)/wg0/tunnel_ingress_link"))
        try ns.ip("link", "set", "private0", "down")
        try ns.ip("link", "set", "private0", "name", "lanX")
        try ns.ip("link", "set", "lanX", "up")
        try eventually(within: .seconds(3), "nothing attached") {
            !FileManager.default.fileExists(atPath: "\(pinRoot)/wg0/lan_ingress_link")
                && !FileManager.default.fileExists(atPath: "\(pinRoot)/wg0/tunnel_ingress_link")
        }
        XCTAssertEqual(try ns.sysctl("lanX", "forwarding"), "0", "the renamed device got its value back")
    }

    /// records.json is what cleanup restores from: one wgkeeper could not have written is refused
    /// by run and plan, and cleanup fails and leaves it in place rather than deleting it.
    func testARecordsFileWgkeeperDidNotWriteIsRefusedAndKept() throws {
        let (ns, h) = try lab()
        let state = "\(h.directory.path)/state"
        try h.writeConfig(config(h, runtime: ["state_dir: \(state)"]))
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        for text in [#"{"sysctls":{"net/ipv6/conf/all/forwarding":"1"}}"#, #"{"sysctls":{"net/ipv4/ip_forward":"1"}}"#,
                     #"{"sysctls":{"net/ipv6/conf/private0/forwarding":"1; rm"}}"#, "", #"{"sysctls":"#] {
            try text.write(toFile: "\(state)/records.json", atomically: false, encoding: .utf8)
            XCTAssertThrowsError(try h.start(), "run refuses \(text.debugDescription)")
            XCTAssertThrowsError(try shell("ip", "netns", "exec", ns.name, DaemonHarness.binary, "plan", "--config", h.configPath),
                                 "plan refuses \(text.debugDescription)")
            XCTAssertThrowsError(try shell("ip", "netns", "exec", ns.name, DaemonHarness.binary, "cleanup", "--config", h.configPath),
                                 "cleanup fails on \(text.debugDescription)")
            XCTAssertEqual(try String(contentsOfFile: "\(state)/records.json", encoding: .utf8), text, "and leaves the file as it was")
            XCTAssertEqual(try ns.sysctl("all", "forwarding"), "0")
        }
    }

    /// LAN forwarding wgkeeper turned on goes back off when the LAN gains an address whose
    /// subnet-router anycast the kernel would join (what a fresh start would do), and the
    /// refusal is counted.
    func testForwardingWgkeeperSetIsUndoneWhenTheLANGainsAPrefix() throws {
        let (ns, h) = try lab()
        try h.writeConfig(config(h))
        try h.start()
        XCTAssertEqual(try ns.sysctl("private0", "forwarding"), "1")
        try ns.ip("-6", "addr", "add", "2001:db8:1::1/64", "dev", "private0", "nodad")
        try eventually(within: .seconds(3), "forwarding back to 0") { try ns.sysctl("private0", "forwarding") == "0" }
        let kinds = try XCTUnwrap(try h.status()["kinds"] as? [String: [String: Any]])
        XCTAssertEqual(kinds["sysctl"]?["refused"] as? Int, 1, "\(kinds)")
        try ns.ip("-6", "addr", "del", "2001:db8:1::1/64", "dev", "private0")
        try eventually(within: .seconds(3), "on again once the address is gone") { try ns.sysctl("private0", "forwarding") == "1" }
    }

    /// records.json removed under a running daemon is written again at the next resync.
    func testARecordsFileDeletedWhileRunningIsWrittenAgain() throws {
        let (ns, h) = try lab()
        let state = "\(h.directory.path)/state"
        try h.writeConfig(config(h, runtime: ["state_dir: \(state)", "resync: 1s"]))
        try h.start()
        XCTAssertEqual(try ns.sysctl("private0", "forwarding"), "1")
        try FileManager.default.removeItem(atPath: "\(state)/records.json")
        try eventually(within: .seconds(5), "written again") { FileManager.default.fileExists(atPath: "\(state)/records.json") }
        h.stop()
        _ = try shell("ip", "netns", "exec", ns.name, DaemonHarness.binary, "cleanup", "--config", h.configPath)
        XCTAssertEqual(try ns.sysctl("private0", "forwarding"), "0", "cleanup restored from the rewritten file")
    }

    func testAChangedClaimIsRefusedAtStartAndCleanupUsesTheRecordedOne() throws {
        let (ns, h) = try lab()
        try ns.ip("-6", "route", "add", "2001:db8:7::/64", "dev", "private0", "proto", "78")
        try h.writeConfig(config(h))
        try h.start()
        h.stop()
        try h.writeConfig(config(h, runtime: ["route_protocol: 78"]))
        XCTAssertThrowsError(try h.start(), "a start under another protocol than the recorded one is refused")
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "2001:db8:7::/64").count, 1, "the protocol-78 route is untouched")
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "proto", "77").count, 2, "ours is untouched too")
        _ = try shell("ip", "netns", "exec", ns.name, DaemonHarness.binary, "cleanup", "--config", h.configPath)
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "proto", "77").count, 0, "cleanup removed what the records claim")
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "2001:db8:7::/64").count, 1, "and not what the new configuration would")
        try h.start()  // the records are gone: the new claim starts afresh, and 78 is now the claim
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "proto", "78").map { $0["dst"] as? String }.compactMap { $0 }.sorted(),
                       ["2001:db8:1::/64", "2001:db8:1::100"], "under the new claim a stray 78 route is ours, and not wanted")
    }

    func testASecondDaemonInTheSameNamespaceIsRefused() throws {
        let (_, h) = try lab()
        try h.writeConfig(config(h))
        try h.start()
        let other = h.directory.appendingPathComponent("other.yaml").path
        try config(h).replacingOccurrences(of: h.socketPath, with: h.directory.appendingPathComponent("other.sock").path)
            .write(toFile: other, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try shell("ip", "netns", "exec", h.ns.name, DaemonHarness.binary, "run", "--config", other))
    }

    func testPinsRemovedBehindTheDaemonsBackAreLoadedAgain() throws {
        let (_, h) = try lab()
        let pinRoot = try bpffs(h)
        try h.writeConfig(config(h, redirect: true, pinRoot: pinRoot))
        try h.start()
        try shell("rm", "-rf", "\(pinRoot)/wg0")
        try eventually(within: .seconds(3), "pinned again") {
            FileManager.default.fileExists(atPath: "\(pinRoot)/wg0/lan_ingress_link")
                && FileManager.default.fileExists(atPath: "\(pinRoot)/wg0/tunnel_ingress_link")
        }
        let datapath = try XCTUnwrap((try h.status()["kinds"] as? [String: [String: Int]])?["datapath"])
        XCTAssertEqual(datapath["in_sync"], 2, "\(datapath)")
    }

    func testStatusLineFollowsAForeignConflict() throws {
        let (ns, h) = try lab()
        try h.writeConfig(config(h))
        try h.start()
        try ns.ip("-6", "route", "replace", "2001:db8:1::100/128", "dev", "wg0", "proto", "static")
        try h.waitForNotification { $0.contains("STATUS=") && $0.contains("1 conflicts") }
    }
}
