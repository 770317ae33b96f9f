import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The daemon with real WireGuard (VM tier): it creates `wg0`, configures it, and repairs
/// peers changed behind its back within `wireguard_poll`.
final class DaemonVMTests: XCTestCase {
    private let alice = PrivateKey.generate().publicKey
    private let bob = PrivateKey.generate().publicKey

    private func start() throws -> (TestNamespace, DaemonHarness) {
        let ns = try TestNamespace(for: self)
        try ns.addVeth("private0", "lanp")
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(h.gatewayConfig(
            runtime: ["wireguard_poll: 300ms", "proxy_poll: 300ms"], wireGuard: ["listen_port: 51820"],
            peers: [TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"],
                             extra: [#"endpoint: "[2001:db8:ff::2]:51820""#, "persistent_keepalive: 25"]),
                    TestPeer("bob", bob, allowedIPs: ["2001:db8:1::101/128"])],
            gateway: ["proxy_ndp: true", "redirect: false"]))
        try h.start()
        return (ns, h)
    }

    private func peers(_ ns: TestNamespace) throws -> [String: [String]] {
        var found: [String: [String]] = [:]
        for line in try shell("ip", "netns", "exec", ns.name, "wg", "show", "wg0", "dump").split(separator: "\n").dropFirst() {
            let fields = line.split(separator: "\t").map(String.init)
            found[fields[0]] = Array(fields.dropFirst())
        }
        return found
    }

    private func configured(_ ns: TestNamespace) throws -> Bool {
        let p = try peers(ns)
        return p[alice.base64]?[2] == "2001:db8:1::100/128" && p[alice.base64]?[6] == "25"
            && p[bob.base64]?[2] == "2001:db8:1::101/128" && p.count == 2
            && (try? ns.ipJSON("-6", "route", "show", "proto", "77", "dev", "wg0").count) ?? 0 == 2
    }

    func testCreatesTheDeviceAndRestoresPeersChangedWithWgSet() throws {
        let (ns, h) = try start()
        XCTAssertTrue(try configured(ns), "wg0 created and configured at start")
        XCTAssertEqual(try peers(ns)[alice.base64]?[1], "[2001:db8:ff::2]:51820")

        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", bob.base64, "remove")
        let removed = try eventually(within: .seconds(5), "removed peer restored") { try configured(ns) }
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", alice.base64,
                  "allowed-ips", "2001:db8:1::100/128,2001:db8:9::/64", "persistent-keepalive", "0")
        let changed = try eventually(within: .seconds(5), "changed peer restored") { try configured(ns) }
        let stranger = PrivateKey.generate().publicKey
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", stranger.base64, "allowed-ips", "2001:db8:7::/64")
        try eventually(within: .seconds(5), "unknown peer pruned") { try peers(ns)[stranger.base64] == nil }
        print("peer repair after wg set: removed \(removed), changed \(changed) (wireguard_poll 300ms, TCG)")
        XCTAssertTrue(h.process!.isRunning)
    }

    func testRoamingEndpointIsNotFought() throws {
        let (ns, _) = try start()
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", alice.base64, "endpoint", "[2001:db8:ff::99]:4000")
        usleep(1_500_000)  // several polls
        XCTAssertEqual(try peers(ns)[alice.base64]?[1], "[2001:db8:ff::99]:4000")
    }

    /// README, `peers[].endpoint`: a host-name endpoint is resolved when applied and again while the peer stays
    /// quiet (135 s; shortened here). `ip netns exec` reads /etc/netns/NAME/hosts as /etc/hosts.
    func testHostNameEndpointIsResolvedAndReResolved() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth("private0", "lanp")
        let hosts = "/etc/netns/\(ns.name)"
        try FileManager.default.createDirectory(atPath: hosts, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: hosts) }
        try "2001:db8:ff::5 peer.wgkeeper.test\n".write(toFile: "\(hosts)/hosts", atomically: true, encoding: .utf8)
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(h.gatewayConfig(
            runtime: ["wireguard_poll: 300ms"],
            peers: [TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"], extra: [#"endpoint: "peer.wgkeeper.test:51820""#])],
            gateway: nil))
        try h.start(environment: ["WGKEEPER_RERESOLVE_SECONDS": "1"])
        // The name is looked up off the loop: the peer follows within moments of READY=1.
        try eventually(within: .seconds(2), "endpoint resolved and applied") { try peers(ns)[alice.base64]?[1] == "[2001:db8:ff::5]:51820" }
        // In place, not by rename: the daemon sees the file through a bind mount of this inode.
        try "2001:db8:ff::6 peer.wgkeeper.test\n".write(toFile: "\(hosts)/hosts", atomically: false, encoding: .utf8)
        let moved = try eventually(within: .seconds(10), "endpoint follows the name") {
            try peers(ns)[alice.base64]?[1] == "[2001:db8:ff::6]:51820"
        }
        print("re-resolved endpoint applied after \(moved) (re-resolve interval 1 s, TCG)")
    }

    func testDeletedDeviceIsRecreatedAndFullyConfigured() throws {
        let (ns, h) = try start()
        try ns.ip("link", "del", "wg0")
        let back = try eventually(within: .seconds(10), "wg0 recreated with peers and routes") {
            (try? configured(ns)) == true
        }
        let dump = try shell("ip", "netns", "exec", ns.name, "wg", "show", "wg0", "dump").split(separator: "\n")[0].split(separator: "\t")
        XCTAssertEqual(String(dump[2]), "51820")
        print("wg0 recreated and configured in \(back) (TCG)")
        XCTAssertTrue(h.process!.isRunning)
    }

    /// A real VLAN LAN (8021q, which the VM's kernel has): its sysctls are set under their dotted
    /// name; then `wgkeeper cleanup` deletes the wg0 it created and leaves the namespace as before.
    func testAVLANLANGetsItsSysctlsAndCleanupLeavesTheNamespaceAsBefore() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth("lanp", "lanq")
        try ns.ip("link", "add", "link", "lanp", "name", "lanp.100", "type", "vlan", "id", "100")
        try ns.ip("link", "set", "lanp.100", "up")
        func sysctl(_ interface: String, _ name: String) throws -> String {
            try shell("ip", "netns", "exec", ns.name, "cat", "/proc/sys/net/ipv6/conf/\(interface)/\(name)")
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func snapshot() throws -> [String] {
            var lines = try ns.ip("-o", "link", "show").split(separator: "\n").map { String($0.split(separator: ":")[1]) }
            lines += try ns.ip("-6", "route", "show", "table", "all").split(separator: "\n").map(String.init)
            lines += try ns.ip("-6", "neigh", "show", "proxy").split(separator: "\n").map(String.init)
            for interface in ["lanp", "lanp.100", "all", "default"] {
                for name in ["forwarding", "proxy_ndp"] { lines.append("\(interface) \(name) = \(try sysctl(interface, name))") }
            }
            return lines
        }
        try eventually(within: .seconds(10), "link-local addresses settled") {
            try ns.ip("-6", "route", "show", "table", "local").split(separator: "\n").filter { $0.hasPrefix("local fe80") }.count == 3
        }
        let before = try snapshot()
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(h.gatewayConfig(
            runtime: ["wireguard_poll: 300ms", "proxy_poll: 300ms"], wireGuard: ["listen_port: 51820"],
            peers: [TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"])], gateway: nil, tail: """
            gateway:
              tunnel: wg0
              lan: lanp.100
              lan_prefix: 2001:db8:1::/64
              redirect: false
            """))
        try h.start()
        XCTAssertEqual(try sysctl("lanp.100", "forwarding"), "1")
        XCTAssertEqual(try sysctl("lanp.100", "proxy_ndp"), "1")
        XCTAssertEqual(try sysctl("lanp", "forwarding"), "0", "the parent is not the LAN")
        XCTAssertEqual(try ns.ipJSON("-6", "neigh", "show", "proxy").first?["dev"] as? String, "lanp.100")
        XCTAssertEqual(try peers(ns)[alice.base64]?[2], "2001:db8:1::100/128")
        h.stop()
        _ = try shell("ip", "netns", "exec", ns.name, DaemonHarness.binary, "cleanup", "--config", h.configPath)
        XCTAssertEqual(try snapshot(), before)
    }
    /// `prune_peers: false` keeps the operator's peers, but a peer wgkeeper configured goes when
    /// the configuration drops it, across a restart (records.json), and `cleanup` removes the
    /// ones it configured, even those a reload since dropped from the configuration.
    func testWithoutPruningThePeersWgkeeperConfiguredStillGoAndTheOperatorsStay() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth("private0", "lanp")
        try ns.ip("link", "add", "wg0", "type", "wireguard")
        let stranger = PrivateKey.generate().publicKey
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", stranger.base64, "allowed-ips", "2001:db8:7::/64")
        let h = try DaemonHarness(self, ns: ns)
        let carol = PrivateKey.generate().publicKey
        func config(_ peers: [TestPeer]) -> String {
            h.gatewayConfig(runtime: ["wireguard_poll: 300ms"], wireGuard: ["prune_peers: false"], peers: peers, gateway: nil)
        }
        let a = TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"])
        let b = TestPeer("bob", bob, allowedIPs: ["2001:db8:1::101/128"])
        let c = TestPeer("carol", carol, allowedIPs: ["2001:db8:1::102/128"])
        try h.writeConfig(config([a, b, c]))
        try h.start()
        XCTAssertEqual(Set(try peers(ns).keys), [stranger.base64, alice.base64, bob.base64, carol.base64])

        try h.writeConfig(config([a, c]))
        _ = try h.ask("reload")
        try eventually(within: .seconds(5), "bob, which wgkeeper added, goes") {
            Set(try peers(ns).keys) == [stranger.base64, alice.base64, carol.base64]
        }
        // Restarted, it still knows alice was its own.
        h.stop()
        try h.writeConfig(config([c]))
        try h.start()
        try eventually(within: .seconds(5), "alice goes after a restart") { Set(try peers(ns).keys) == [stranger.base64, carol.base64] }
        // Carol leaves the configuration while the daemon is stopped: cleanup still removes her.
        h.stop()
        try h.writeConfig(config([]))
        _ = try shell("ip", "netns", "exec", ns.name, DaemonHarness.binary, "cleanup", "--config", h.configPath)
        XCTAssertEqual(Set(try peers(ns).keys), [stranger.base64], "only the operator's peer is left")
        XCTAssertEqual(try ns.ip("-o", "link", "show", "wg0").isEmpty, false, "wg0 was the operator's: it stays")
    }

    /// Reloads that edit peers plan those peers alone (`touched_plans`), with real WireGuard:
    /// `wg show` holds the configured peers after each (an edit, a removal, an addition with an
    /// endpoint, a peer changed behind the daemon's back just before a reload), and a restart
    /// of the last configuration writes nothing.
    func testPeerEditsByReloadPlanThosePeersAloneAndAgreeWithAFreshStart() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth("private0", "lanp")
        let h = try DaemonHarness(self, ns: ns)
        let carol = PrivateKey.generate().publicKey, dave = PrivateKey.generate().publicKey
        func write(_ peers: [TestPeer]) throws {
            try h.writeConfig(h.gatewayConfig(runtime: ["wireguard_poll: 300ms", "proxy_poll: 300ms", "resync: 600s"],
                                              wireGuard: ["listen_port: 51820"], peers: peers, gateway: ["proxy_ndp: true", "redirect: false"]))
        }
        let a = TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"])
        var b = TestPeer("bob", bob, allowedIPs: ["2001:db8:1::101/128"], extra: [#"endpoint: "[2001:db8:ff::2]:51820""#])
        let c = TestPeer("carol", carol, allowedIPs: ["2001:db8:1::102/128"])
        try write([a, b, c])
        try h.start()
        func touched() throws -> Int { try XCTUnwrap(try h.status()["touched_plans"] as? Int) }
        let start = try touched()

        // bob gets another address and a keepalive, carol goes, dave comes with an endpoint.
        b.allowedIPs = ["2001:db8:1::111/128", "2001:db8:5::/64"]
        b.extra.append("persistent_keepalive: 25")
        let d = TestPeer("dave", dave, allowedIPs: ["2001:db8:1::103/128"], extra: [#"endpoint: "[2001:db8:ff::3]:51820""#])
        try write([a, b, d])
        _ = try h.ask("reload")
        XCTAssertEqual(try touched(), start + 1, "peers alone changed")
        var p = try peers(ns)
        XCTAssertEqual(Set(p.keys), [alice.base64, bob.base64, dave.base64])
        XCTAssertEqual(p[bob.base64]?[2].split(separator: ",").map(String.init).sorted(), ["2001:db8:1::111/128", "2001:db8:5::/64"])
        XCTAssertEqual(p[bob.base64]?[6], "25")
        XCTAssertEqual(p[bob.base64]?[1], "[2001:db8:ff::2]:51820")
        XCTAssertEqual(p[dave.base64]?[1], "[2001:db8:ff::3]:51820")
        let routes = { Set(try ns.ipJSON("-6", "route", "show", "proto", "77", "dev", "wg0").compactMap { $0["dst"] as? String }) }
        XCTAssertEqual(try routes(), ["2001:db8:1::100", "2001:db8:1::111", "2001:db8:5::/64", "2001:db8:1::103"])
        XCTAssertEqual((try h.status()["kinds"] as? [String: [String: Int]])?["peer"]?["in_sync"], 3)

        // alice changed behind the daemon's back just before a reload that edits dave: the
        // reload's read of the device sees it, and alice is put back too.
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", alice.base64, "allowed-ips", "2001:db8:9::/64")
        let d2 = TestPeer("dave", dave, allowedIPs: ["2001:db8:1::104/128"], extra: [#"endpoint: "[2001:db8:ff::3]:51820""#])
        try write([a, b, d2])
        _ = try h.ask("reload")
        try eventually(within: .seconds(5), "alice restored and dave moved") {
            let p = try peers(ns)
            return p[alice.base64]?[2] == "2001:db8:1::100/128" && p[dave.base64]?[2] == "2001:db8:1::104/128"
        }
        p = try peers(ns)
        XCTAssertEqual(Set(p.keys), [alice.base64, bob.base64, dave.base64])

        // A fresh start of the same configuration finds nothing to write.
        h.stop()
        try h.start()
        usleep(500_000)
        XCTAssertEqual(try h.writes(), 0, "the reloads left the kernel as a full plan wants it")
    }

    /// A reload that drops a peer wgkeeper configured plans that peer alone (`touched_plans`), and
    /// forgets it as a full plan does once it is gone: with `prune_peers: false`, the operator may
    /// then add a peer with that key by hand, and it stays (a full plan of the reload would have
    /// forgotten the key; a touched plan that left it recorded removed the operator's peer at the
    /// next poll).
    func testAPeerATouchedReloadDroppedIsForgottenAndTheOperatorsPeerWithItsKeyStays() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth("private0", "lanp")
        try ns.ip("link", "add", "wg0", "type", "wireguard")
        let h = try DaemonHarness(self, ns: ns)
        func config(_ peers: [TestPeer]) -> String {
            h.gatewayConfig(runtime: ["wireguard_poll: 300ms", "resync: 600s"], wireGuard: ["prune_peers: false"], peers: peers, gateway: nil)
        }
        let a = TestPeer("alice", alice, allowedIPs: ["2001:db8:1::100/128"])
        let b = TestPeer("bob", bob, allowedIPs: ["2001:db8:1::101/128"])
        try h.writeConfig(config([a, b]))
        try h.start()
        XCTAssertEqual(Set(try peers(ns).keys), [alice.base64, bob.base64])
        usleep(500_000)
        let touched = try XCTUnwrap(try h.status()["touched_plans"] as? Int)

        try h.writeConfig(config([a]))
        _ = try h.ask("reload")
        XCTAssertEqual(try h.status()["touched_plans"] as? Int, touched + 1, "bob's removal was planned alone")
        try eventually(within: .seconds(5), "bob, which wgkeeper added, goes") { Set(try peers(ns).keys) == [alice.base64] }
        // The operator takes bob over by hand: no longer wgkeeper's, so it stays.
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", bob.base64, "allowed-ips", "2001:db8:9::/64")
        usleep(1_500_000)
        XCTAssertEqual(Set(try peers(ns).keys), [alice.base64, bob.base64], "the operator's bob stays, as after a full plan")
        XCTAssertTrue(h.process!.isRunning)
    }
}
