import Datapath
import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// Issue 16: a poll whose read returns the bytes the cache was decoded from skips decoding and
/// planning. The skip must never hide drift: after many identical polls, a proxy entry or a map
/// entry deleted behind the daemon's back is back by the next poll, and so is one deleted
/// again right after its repair (when the cache holds a write the last read did not see). The
/// resync is an hour away, so only the polls can repair.
final class UnchangedPollTests: XCTestCase {
    static let poll = 500

    private func setUp(resync: String = "1h") throws -> (TestNamespace, DaemonHarness, String) {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let pinRoot = try h.mountPinRoot(self)
        let peers = (0..<20).map { TestPeer("p\($0)", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::\(String(0x100 + $0, radix: 16))/128"]) }
        try h.writeConfig(h.gatewayConfig(
            runtime: ["proxy_poll: \(Self.poll)ms", "wireguard_poll: 1h", "resync: \(resync)"], pinRoot: pinRoot, peers: peers,
            gateway: ["proxy_ndp: true", "redirect: true"]))
        try h.start()
        return (ns, h, pinRoot)
    }

    /// `struct prefix_key` of `address`/128 as bpftool takes it.
    private func clientKey(_ address: String) -> [String] {
        ["0x80", "0", "0", "0"] + IPv6Address(address)!.bytes.map { String(format: "0x%02x", $0) }
    }

    /// Whether the client map holds `address` with the redirect action (`PrefixAction`, 32 bits
    /// little endian: 1), as bpftool reads it.
    private func redirects(_ clients: String, _ address: String) -> Bool {
        guard let text = try? shell(["bpftool", "-j", "map", "lookup", "pinned", clients, "key"] + clientKey(address)),
              let entry = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return false }
        return (entry["value"] as? [String]) == ["0x01", "0x00", "0x00", "0x00"]
    }

    private func unchanged(_ h: DaemonHarness, _ part: String) throws -> Int {
        (try h.status()["unchanged_reads"] as? [String: Int])?[part] ?? 0
    }

    /// Waits for `count` more polls of `part` that found nothing new.
    private func identicalPolls(_ h: DaemonHarness, _ part: String, _ count: Int) throws {
        let before = try unchanged(h, part)
        try eventually(within: .milliseconds(Self.poll * (count + 4)), "\(count) unchanged \(part) polls") {
            try unchanged(h, part) >= before + count
        }
    }

    /// Within one poll (plus the time to read, plan and write: less than another poll).
    private var onePoll: Duration { .milliseconds(Self.poll + Self.poll * 3 / 4) }

    func testProxyEntryDeletedAfterIdenticalPollsIsRepairedByTheNextPoll() throws {
        let (ns, h, _) = try setUp()
        func present() throws -> Bool {
            try ns.ipJSON("-6", "neigh", "show", "proxy").contains { $0["dst"] as? String == "2001:db8:1::10a" }
        }
        XCTAssertTrue(try present())
        try identicalPolls(h, "proxies", 5)
        let writes = try h.writes()
        try ns.ip("-6", "neigh", "del", "proxy", "2001:db8:1::10a", "dev", "private0")
        let took = try eventually(within: onePoll, "proxy entry restored by the next poll") { try present() }
        XCTAssertEqual(try h.writes(), writes + 1, "only the missing entry is written")
        // Again at once, before the next poll: the read after the write must not vouch for it.
        try ns.ip("-6", "neigh", "del", "proxy", "2001:db8:1::10a", "dev", "private0")
        try eventually(within: onePoll, "proxy entry deleted again, restored again") { try present() }
        try identicalPolls(h, "proxies", 2)
        print("proxy entry restored \(took) after the deletion (proxy_poll \(Self.poll) ms)")
    }

    func testMapEntryDeletedAfterIdenticalPollsIsRepairedByTheNextPoll() throws {
        let (_, h, pinRoot) = try setUp()
        let clients = "\(pinRoot)/wg0/client_prefixes"
        let key = clientKey("2001:db8:1::10a")
        func present() -> Bool { (try? shell(["bpftool", "map", "lookup", "pinned", clients, "key"] + key)) != nil }
        func entries() throws -> Int {
            (try JSONSerialization.jsonObject(with: Data(try shell("bpftool", "-j", "map", "dump", "pinned", clients).utf8)) as? [Any])?.count ?? -1
        }
        XCTAssertEqual(try entries(), 20)
        try identicalPolls(h, "datapath", 5)
        try shell(["bpftool", "map", "delete", "pinned", clients, "key"] + key)
        // (The next poll may already have put it back: no assertion on the gap.)
        let took = try eventually(within: onePoll, "map entry restored by the next poll") { present() }
        // Again at once: the cache holds the write folded in, not a read of it.
        try shell(["bpftool", "map", "delete", "pinned", clients, "key"] + key)
        try eventually(within: onePoll, "map entry deleted again, restored again") { present() }
        // Someone else's entry added: the count moved, so the next poll reads the map.
        let foreign = clientKey("2001:db8:1::999")
        try identicalPolls(h, "datapath", 2)
        try shell(["bpftool", "map", "update", "pinned", clients, "key"] + foreign + ["value", "1", "0", "0", "0"])
        try eventually(within: onePoll, "someone else's map entry removed by the next poll") {
            (try? shell(["bpftool", "map", "lookup", "pinned", clients, "key"] + foreign)) == nil
        }
        XCTAssertEqual(try entries(), 20)
        try identicalPolls(h, "datapath", 2)
        print("map entry restored \(took) after the deletion (proxy_poll \(Self.poll) ms)")
    }

    /// Issue 16, row 9: a poll reads the client map (an entry per client, the largest part of an
    /// idle gateway's reads) only when the kernel's count of its entries moved since the last full
    /// read. Linux 6.4 on counts an LPM trie's entries in its memory figure (`bytes_memlock`,
    /// checked here with bpftool). An entry overwritten in place keeps the count: the next
    /// resync, which reads every entry, repairs it; so does one deleted and another added
    /// between two polls.
    ///
    /// Before 6.4 the figure is fixed by the map's size: every poll reads the map, so the poll
    /// repairs what the resync repairs on 6.4 on (Debian 12's own kernel is 6.1).
    func testAMapEntryOverwrittenInPlaceIsRepairedByTheResync() throws {
        // The daemon's own gate: the kernel release, by uname.
        guard Datapath.footprintCountsEntries else { return try overwrittenInPlaceRepairedByAPoll() }
        let resync = 2_500
        let (_, h, pinRoot) = try setUp(resync: "\(resync)ms")
        let clients = "\(pinRoot)/wg0/client_prefixes"
        let key = clientKey
        func memlock() throws -> Int {
            (try JSONSerialization.jsonObject(with: Data(try shell("bpftool", "-j", "map", "show", "pinned", clients).utf8)) as? [String: Any])?["bytes_memlock"] as? Int ?? -1
        }
        func redirects(_ address: String) -> Bool { self.redirects(clients, address) }
        // The kernel fact, read independently: the figure moves with one entry more.
        // The daemon is stopped meanwhile: its next poll would otherwise remove the entry before
        // bpftool reads the figure (it did, 2 runs in 8).
        let before = try memlock()
        let daemon = try XCTUnwrap(h.process?.processIdentifier)
        kill(daemon, SIGSTOP)
        let added = Result {
            try shell(["bpftool", "map", "update", "pinned", clients, "key"] + key("2001:db8:1::999") + ["value", "1", "0", "0", "0"])
            return try memlock()
        }
        kill(daemon, SIGCONT)
        XCTAssertGreaterThan(try added.get(), before, "bytes_memlock counts the entries")
        try eventually(within: .milliseconds(Self.poll * 2 + Self.poll * 3 / 4), "the added entry removed by a poll") {
            (try? shell(["bpftool", "map", "lookup", "pinned", clients, "key"] + key("2001:db8:1::999"))) == nil
        }
        XCTAssertEqual(try memlock(), before)
        // Polls that went by the count alone.
        try identicalPolls(h, "datapath_counted", 3)
        XCTAssertTrue(redirects("2001:db8:1::10a"))
        let resyncs = try h.status()["resyncs"] as? Int ?? -1
        // Overwritten in place (redirect → pass): the same count.
        try shell(["bpftool", "map", "update", "pinned", clients, "key"] + key("2001:db8:1::10a") + ["value", "0", "0", "0", "0"])
        let changed = ContinuousClock.now
        XCTAssertFalse(redirects("2001:db8:1::10a"))
        try eventually(within: .milliseconds(resync + Self.poll * 2), "the overwritten entry's action restored by the resync") {
            redirects("2001:db8:1::10a")
        }
        let took = ContinuousClock.now - changed
        XCTAssertGreaterThan(try h.status()["resyncs"] as? Int ?? -1, resyncs, "a resync repaired it, not a poll")
        // Deleted and another added between two polls: the same count again.
        try identicalPolls(h, "datapath_counted", 1)
        let pair = ["bpftool", "batch", "file", "-"]
        _ = try shell(pair, input: "map delete pinned \(clients) key \(key("2001:db8:1::10b").joined(separator: " "))\n"
                          + "map update pinned \(clients) key \(key("2001:db8:1::998").joined(separator: " ")) value 1 0 0 0\n")
        try eventually(within: .milliseconds(resync + Self.poll * 2), "deleted entry restored and the added one removed by the resync") {
            redirects("2001:db8:1::10b") && (try? shell(["bpftool", "map", "lookup", "pinned", clients, "key"] + key("2001:db8:1::998"))) == nil
        }
        try identicalPolls(h, "datapath_counted", 2)
        print("map entry overwritten in place restored \(took) after (resync \(resync) ms, proxy_poll \(Self.poll) ms)")
    }

    /// Before Linux 6.4: no poll goes by the count; an entry overwritten in place is repaired by
    /// the next poll, the resync an hour away.
    private func overwrittenInPlaceRepairedByAPoll() throws {
        let (_, h, pinRoot) = try setUp()
        let clients = "\(pinRoot)/wg0/client_prefixes"
        let key = clientKey("2001:db8:1::10a")
        func redirects() -> Bool { self.redirects(clients, "2001:db8:1::10a") }
        try identicalPolls(h, "datapath", 3)
        XCTAssertTrue(redirects())
        try shell(["bpftool", "map", "update", "pinned", clients, "key"] + key + ["value", "0", "0", "0", "0"])
        try eventually(within: onePoll, "the overwritten entry's action restored by the next poll") { redirects() }
        try identicalPolls(h, "datapath", 2)
        XCTAssertEqual(try unchanged(h, "datapath_counted"), 0, "no poll went by the count")
    }

    /// A reload takes the maps' entries from the cache rather than reading every client's back,
    /// and folds its own proxy writes in rather than dumping the table: neither may hide drift
    /// made just before it. A map entry and a proxy entry deleted right before a reload that adds
    /// a peer are back by the next poll, with the new peer's.
    func testAReloadRightAfterDriftLeavesItToTheNextPoll() throws {
        let (ns, h, pinRoot) = try setUp()
        let clients = "\(pinRoot)/wg0/client_prefixes"
        let key = clientKey
        func inMap(_ address: String) -> Bool { (try? shell(["bpftool", "map", "lookup", "pinned", clients, "key"] + key(address))) != nil }
        func proxied(_ address: String) throws -> Bool {
            try ns.ipJSON("-6", "neigh", "show", "proxy").contains { $0["dst"] as? String == address }
        }
        for round in 0..<3 {
            try identicalPolls(h, "datapath", 2)
            try shell(["bpftool", "map", "delete", "pinned", clients, "key"] + key("2001:db8:1::10a"))
            try ns.ip("-6", "neigh", "del", "proxy", "2001:db8:1::10b", "dev", "private0")
            let added = "2001:db8:1::\(String(0x200 + round, radix: 16))"
            let peers = (0..<20).map { TestPeer("p\($0)", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::\(String(0x100 + $0, radix: 16))/128"]) }
                + (0...round).map { TestPeer("n\($0)", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::\(String(0x200 + $0, radix: 16))/128"]) }
            try h.writeConfig(h.gatewayConfig(
                runtime: ["proxy_poll: \(Self.poll)ms", "wireguard_poll: 1h", "resync: 1h"], pinRoot: pinRoot, peers: peers,
                gateway: ["proxy_ndp: true", "redirect: true"]))
            let reply = try h.ask("reload")
            XCTAssertTrue((reply["output"] as? String)?.hasPrefix("reloaded") == true, "\(reply)")
            XCTAssertTrue(inMap(added), "the reload wrote the new peer's entry")
            XCTAssertTrue(try proxied(added), "and its proxy entry")
            try eventually(within: onePoll, "round \(round): map entry deleted before the reload restored by the next poll") { inMap("2001:db8:1::10a") }
            try eventually(within: onePoll, "round \(round): proxy entry deleted before the reload restored by the next poll") {
                try proxied("2001:db8:1::10b")
            }
        }
        try identicalPolls(h, "datapath", 2)
        try identicalPolls(h, "proxies", 2)
        let writes = try h.writes()
        try identicalPolls(h, "proxies", 3)
        XCTAssertEqual(try h.writes(), writes, "quiet again: the polls after the folded writes wrote nothing")
    }

    /// A proxy poll's dump runs off the loop and is dropped when the loop's own proxy writes
    /// overtake it. Those writes are folded into the cache, not read back, so the dropped dump was
    /// the poll's only look at what others changed. With a large table (a slow dump) and reloads
    /// one after another, each writing a proxy entry, the polls' dumps are overtaken; an entry
    /// deleted behind the daemon's back must still be back within a few polls, not wait for the
    /// reloads to stop (the resync is an hour away).
    func testProxyPollsOvertakenByTheLoopsOwnWritesStillRepair() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        // Someone else's entries (no protocol): the dump and its decoding take a while.
        let foreign = (0..<40_000).map { "neigh add proxy 2001:db8:2::\(String($0, radix: 16)) dev private0\n" }.joined()
        _ = try shell(["ip", "-n", ns.name, "-6", "-batch", "-"], input: foreign)
        let peers = (0..<20).map { TestPeer("p\($0)", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::\(String(0x100 + $0, radix: 16))/128"]) }
        let extra = TestPeer("n", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::200/128"])
        func config(_ withExtra: Bool) -> String {
            h.gatewayConfig(runtime: ["proxy_poll: \(Self.poll)ms", "wireguard_poll: 1h", "resync: 1h"],
                            peers: peers + (withExtra ? [extra] : []), gateway: ["proxy_ndp: true", "redirect: false"])
        }
        try h.writeConfig(config(false))
        try h.start()
        func proxied(_ address: String) -> Bool { (try? ns.ip("-6", "neigh", "get", "proxy", address, "dev", "private0")) != nil }
        try eventually(within: .seconds(10), "started") { proxied("2001:db8:1::10a") }
        try ns.ip("-6", "neigh", "del", "proxy", "2001:db8:1::10a", "dev", "private0")
        let deleted = ContinuousClock.now
        var reloads = 0
        while !proxied("2001:db8:1::10a"), ContinuousClock.now - deleted < .milliseconds(Self.poll * 12) {
            reloads += 1
            try h.writeConfig(config(reloads % 2 == 1))
            _ = try h.ask("reload")
        }
        let took = ContinuousClock.now - deleted
        print("proxy entry deleted during back-to-back reloads: back after \(took), \(reloads) reloads (proxy_poll \(Self.poll) ms)")
        XCTAssertTrue(proxied("2001:db8:1::10a"), "repaired while the reloads went on")
        XCTAssertLessThan(took, .milliseconds(Self.poll * 4), "within a few polls")
    }

    /// A resync that read nothing new skips its full plan (`skipped_plans`), and one that reads
    /// drift no event told of (a proxy entry deleted: the kernel does not notify those; the proxy
    /// poll is an hour away) plans and repairs it; then the resyncs are quiet again.
    func testResyncSkipsItsPlanUntilItReadsDriftNoEventReported() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let peers = (0..<20).map { TestPeer("p\($0)", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::\(String(0x100 + $0, radix: 16))/128"]) }
        try h.writeConfig(h.gatewayConfig(runtime: ["proxy_poll: 1h", "wireguard_poll: 1h", "resync: 300ms"], peers: peers,
                                          gateway: ["proxy_ndp: true"]))
        try h.start()
        func counts() throws -> (resyncs: Int, skipped: Int) {
            let status = try h.status()
            return (status["resyncs"] as? Int ?? -1, status["skipped_plans"] as? Int ?? -1)
        }
        func quietResyncs(_ n: Int) throws {
            let before = try counts()
            try eventually(within: .seconds(5), "\(n) resyncs that skip their plan") {
                let now = try counts()
                return now.resyncs >= before.resyncs + n && now.skipped >= before.skipped + n
            }
        }
        func present() throws -> Bool {
            try ns.ipJSON("-6", "neigh", "show", "proxy").contains { $0["dst"] as? String == "2001:db8:1::10a" }
        }
        try quietResyncs(3)
        let writes = try h.writes()
        try ns.ip("-6", "neigh", "del", "proxy", "2001:db8:1::10a", "dev", "private0")
        try eventually(within: .seconds(2), "proxy entry restored by a resync") { try present() }
        XCTAssertEqual(try h.writes(), writes + 1, "only the missing entry is written")
        try quietResyncs(3)
        // A sysctl changed behind its back (its netconf event makes the next read find it).
        try ns.namespace.perform { try Sysctl.ipv6(interface: "private0", "proxy_ndp").write("0") }
        try eventually(within: .seconds(2), "proxy_ndp restored") {
            try ns.namespace.perform { try Sysctl.ipv6(interface: "private0", "proxy_ndp").read() } == "1"
        }
        try quietResyncs(3)
        XCTAssertEqual(try h.writes(), writes + 2, "the quiet resyncs wrote nothing")
    }

    /// A resync that skips its plan still says what persists, as one that plans does: a
    /// conflict (another program's route at a peer's identity) is logged again at each resync.
    func testASkippedResyncLogsAPersistingConflictAgain() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        try ns.ip("-6", "route", "add", "2001:db8:1::10a/128", "dev", "wg0", "proto", "static")
        let h = try DaemonHarness(self, ns: ns)
        let peers = (0..<20).map { TestPeer("p\($0)", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::\(String(0x100 + $0, radix: 16))/128"]) }
        try h.writeConfig(h.gatewayConfig(runtime: ["proxy_poll: 1h", "wireguard_poll: 1h", "resync: 300ms"], peers: peers))
        try h.start()
        func counts() throws -> (resyncs: Int, skipped: Int) {
            let status = try h.status()
            return (status["resyncs"] as? Int ?? -1, status["skipped_plans"] as? Int ?? -1)
        }
        let before = try counts()
        try eventually(within: .seconds(5), "3 resyncs that skip their plan") {
            let now = try counts()
            return now.resyncs >= before.resyncs + 3 && now.skipped >= before.skipped + 3
        }
        XCTAssertEqual((try h.status()["conflicts"] as? [String])?.count, 1, "the skipped plans keep what status shows")
        let after = try counts()
        h.stop()
        let said = h.finalLog().split(separator: "\n").filter { $0.contains("conflict:") && $0.contains("2001:db8:1::10a") }
        XCTAssertGreaterThanOrEqual(said.count, 1 + (after.resyncs - before.resyncs), "once at start and once per resync:\n\(said.joined(separator: "\n"))")
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "2001:db8:1::10a/128", "proto", "static").count, 1, "left alone")
    }

    /// A resync that dumps the routes it last read decodes nothing; a route event in between
    /// drops the digest, so the next resync decodes, and the one after it is quiet again.
    func testResyncOfAnUnchangedRouteTableDecodesNothing() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let peers = (0..<50).map { TestPeer("p\($0)", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::\(String(0x100 + $0, radix: 16))/128"]) }
        try h.writeConfig(h.gatewayConfig(runtime: ["proxy_poll: 1h", "wireguard_poll: 1h", "resync: 300ms"], peers: peers))
        try h.start()
        func counts() throws -> (resyncs: Int, unchanged: Int) {
            let status = try h.status()
            return (status["resyncs"] as? Int ?? -1, (status["unchanged_reads"] as? [String: Int])?["routes"] ?? 0)
        }
        func quietResyncs(_ n: Int) throws {
            let before = try counts()
            try eventually(within: .seconds(5), "\(n) resyncs that decode no route") {
                let now = try counts()
                return now.resyncs >= before.resyncs + n && now.unchanged >= before.unchanged + n
            }
        }
        try quietResyncs(3)
        let writes = try h.writes()
        let before = try counts()
        // Deleted behind the daemon's back: the event repairs it, and the cache's digest goes.
        try ns.ip("-6", "route", "del", "2001:db8:1::10a/128", "dev", "wg0")
        try eventually(within: .seconds(2), "route restored") {
            !(try ns.ip("-6", "route", "show", "2001:db8:1::10a/128", "proto", "77")).isEmpty
        }
        XCTAssertEqual(try h.writes(), writes + 1)
        // The next resync decodes (the table moved since its digest), then they are quiet again.
        try eventually(within: .seconds(3), "resyncs after the repair") { try counts().resyncs >= before.resyncs + 3 }
        let after = try counts()
        XCTAssertLessThan(after.unchanged - before.unchanged, after.resyncs - before.resyncs, "one resync decoded the routes")
        try quietResyncs(3)
        XCTAssertEqual(try h.writes(), writes + 1, "the resyncs wrote nothing")
    }
}
