import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The claim under change: nothing left on an interface that leaves the configuration, sysctls
/// restored from records that outlive a restart, a dotted (VLAN-style) name, `redirect: false`,
/// a refused `route_protocol` change, conflicts counted as such, and `wgkeeper cleanup`
/// leaving the namespace as it was. Read back with iproute2, /proc/sys and bpftool.
final class OwnershipTests: XCTestCase {
    let alice = TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128", "2001:db8:5::/64"])

    private func config(_ h: DaemonHarness, lan: String = "private0", redirect: Bool = false, pinRoot: String? = nil,
                        runtime: [String] = []) -> String {
        h.gatewayConfig(lan: lan, redirect: redirect, pinRoot: pinRoot, runtime: runtime, peers: [alice])
    }

    /// Routes (every table) and proxy entries with protocol 77, as `dst dev` lines.
    private func owned(_ ns: TestNamespace) throws -> [String] {
        let routes = try ns.ipJSON("-6", "route", "show", "table", "all", "proto", "77").map { "route \($0["dst"] ?? "?") dev \($0["dev"] ?? "?")" }
        let proxies = try ns.ipJSON("-6", "neigh", "show", "proxy").filter { ($0["protocol"] as? String) == "77" || ($0["protocol"] as? String) == "wgkeeper" }
            .map { "proxy \($0["dst"] ?? "?") dev \($0["dev"] ?? "?")" }
        return (routes + proxies).sorted()
    }

    /// Everything an operator could compare: routes of every table, proxy entries, and the
    /// IPv6 sysctls wgkeeper may touch on every interface.
    private func snapshot(_ ns: TestNamespace, _ interfaces: [String]) throws -> [String] {
        var lines = try ns.ip("-6", "route", "show", "table", "all").split(separator: "\n").map(String.init)
        lines += try ns.ip("-6", "neigh", "show", "proxy").split(separator: "\n").map(String.init)
        for interface in interfaces + ["all", "default"] {
            for name in ["forwarding", "proxy_ndp"] { lines.append("\(interface) \(name) = \(try ns.sysctl(interface, name))") }
        }
        return lines
    }

    func testMovingTheLANLeavesNothingBehindAndRecordsOutliveARestart() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth("wg0", "wg0p")
        try ns.addVeth("lan0.100", "lanp1")  // a VLAN-style name: the sysctl path keeps the dot
        try ns.addVeth("lan1", "lanp2")
        let interfaces = ["wg0", "lan0.100", "lan1"]
        // Wait for the link-local addresses (6 veth ends) so the snapshot is settled.
        try eventually(within: .seconds(5), "link-local addresses") {
            try ns.ip("-6", "route", "show", "table", "local").split(separator: "\n").filter { $0.hasPrefix("local fe80") }.count == 6
        }
        let before = try snapshot(ns, interfaces)
        let h = try DaemonHarness(self, ns: ns)

        try h.writeConfig(config(h, lan: "lan0.100"))
        try h.start()
        XCTAssertEqual(try ns.sysctl("lan0.100", "forwarding"), "1")
        XCTAssertEqual(try ns.sysctl("lan0.100", "proxy_ndp"), "1")
        XCTAssertEqual(try owned(ns), ["proxy 2001:db8:1::100 dev lan0.100", "route 2001:db8:1::/64 dev lan0.100",
                                       "route 2001:db8:1::100 dev wg0", "route 2001:db8:5::/64 dev wg0"])

        // Reload with the LAN moved: the old LAN keeps nothing of ours and gets its values back.
        try h.writeConfig(config(h, lan: "lan1"))
        _ = try h.ask("reload")
        try eventually(within: .seconds(2), "the LAN moved") {
            try owned(ns) == ["proxy 2001:db8:1::100 dev lan1", "route 2001:db8:1::/64 dev lan1",
                              "route 2001:db8:1::100 dev wg0", "route 2001:db8:5::/64 dev wg0"]
        }
        XCTAssertEqual(try ns.sysctl("lan0.100", "forwarding"), "0")
        XCTAssertEqual(try ns.sysctl("lan0.100", "proxy_ndp"), "0")
        XCTAssertEqual(try ns.sysctl("lan1", "forwarding"), "1")

        // Stopped, moved back, started: what lan1 held before comes from the records on disk.
        h.stop()
        try h.writeConfig(config(h, lan: "lan0.100"))
        try h.start()
        XCTAssertEqual(try ns.sysctl("lan1", "forwarding"), "0")
        XCTAssertEqual(try ns.sysctl("lan1", "proxy_ndp"), "0")
        XCTAssertEqual(try ns.sysctl("lan0.100", "forwarding"), "1")
        XCTAssertEqual(try owned(ns).filter { $0.contains("lan1") }, [])

        // A route of ours on an interface the configuration never named is ours all the same.
        try ns.ip("-6", "route", "add", "2001:db8:66::/64", "dev", "lan1", "proto", "77")
        try ns.ip("-6", "route", "add", "2001:db8:67::/64", "dev", "lan1", "proto", "static")
        try eventually(within: .seconds(1), "a stray route of ours removed") { try owned(ns).allSatisfy { !$0.contains("2001:db8:66::") } }
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "2001:db8:67::/64").count, 1, "another protocol's route stays")
        try ns.ip("-6", "route", "del", "2001:db8:67::/64", "dev", "lan1")

        // Cleanup with the daemon stopped: the namespace is as it was before the first start.
        h.stop()
        let cleanup = try shell("ip", "netns", "exec", ns.name, DaemonHarness.binary, "cleanup", "--config", h.configPath)
        XCTAssertEqual(try snapshot(ns, interfaces), before, cleanup)
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.directory.appendingPathComponent("records.json").path),
                       "nothing left to restore")
    }

    /// wg0 and private0 as veths, a daemon running the gateway between them.
    private func startGateway() throws -> (TestNamespace, DaemonHarness) {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(config(h, lan: "private0"))
        try h.start()
        return (ns, h)
    }

    func testCleanupRefusesWhileTheDaemonRuns() throws {
        let (ns, h) = try startGateway()
        XCTAssertThrowsError(try shell("ip", "netns", "exec", ns.name, DaemonHarness.binary, "cleanup", "--config", h.configPath))
        XCTAssertEqual(try owned(ns).count, 4, "nothing was removed")
    }

    func testRouteProtocolCannotChangeByReload() throws {
        let (ns, h) = try startGateway()
        try h.writeConfig(config(h, lan: "private0", runtime: ["route_protocol: 78"]))
        XCTAssertThrowsError(try h.ask("reload"))
        let errors = try XCTUnwrap(try h.status()["config_errors"] as? [String])
        XCTAssertTrue(errors.first?.contains("route_protocol cannot change from 77 to 78") == true, "\(errors)")
        XCTAssertTrue(errors.first?.contains("wgkeeper cleanup") == true, "the error says how to migrate: \(errors)")
        XCTAssertEqual(try owned(ns).count, 4, "the running state is kept")
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "table", "all", "proto", "78").count, 0)
    }

    func testAConflictIsCountedAsOneAndNotInSync() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        // Another program holds the identity of one desired route.
        try ns.ip("-6", "route", "add", "2001:db8:5::/64", "dev", "wg0", "proto", "static")
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(config(h, lan: "private0"))
        try h.start()
        let status = try h.status()
        let routes = try XCTUnwrap((status["kinds"] as? [String: [String: Int]])?["route"])
        XCTAssertEqual(routes["conflict"], 1, "\(routes)")
        XCTAssertEqual(routes["in_sync"], 2, "\(routes)")
        XCTAssertEqual((status["conflicts"] as? [String])?.count, 1)
        XCTAssertTrue(h.notifications.contains { $0.contains("1 conflicts") }, "\(h.notifications)")
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "2001:db8:5::/64", "proto", "static").count, 1, "left alone")
    }

    func testRedirectOffDetachesAndUnpinsEverything() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        try ns.addVeth("private1", "lanp1")
        let h = try DaemonHarness(self, ns: ns)
        let pinRoot = try h.mountPinRoot(self)
        // bpftool 7.1 (Debian 12) does not show which device a TCX link is on, and links are
        // global, not per namespace: follow the ids of the links pinned in our own bpffs.
        func linkIDs() throws -> [String: Int] {
            var ids: [String: Int] = [:]
            for hook in ["lan_ingress", "tunnel_ingress"] {
                let path = "\(pinRoot)/wg0/\(hook)_link"
                guard FileManager.default.fileExists(atPath: path) else { continue }
                let text = try shell("bpftool", "-j", "link", "show", "pinned", path)
                ids[hook] = (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["id"] as? Int
            }
            return ids
        }
        func live() throws -> Set<Int> {
            let text = try shell("bpftool", "-j", "link", "show")
            return Set((try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] ?? []).compactMap { $0["id"] as? Int })
        }
        // A fresh bpffs already holds the kernel's maps.debug and progs.debug (bpf_preload).
        func pins() throws -> [String] {
            try FileManager.default.subpathsOfDirectory(atPath: pinRoot).filter { !$0.hasSuffix(".debug") }.sorted()
        }

        try h.writeConfig(config(h, lan: "private0", redirect: true, pinRoot: pinRoot))
        try h.start()
        let first = try linkIDs()
        XCTAssertEqual(Set(first.keys), ["lan_ingress", "tunnel_ingress"])
        XCTAssertTrue(Set(first.values).isSubset(of: try live()))
        // The LAN moves: the LAN program gets a new link, the old one is gone from the kernel.
        try h.writeConfig(config(h, lan: "private1", redirect: true, pinRoot: pinRoot))
        _ = try h.ask("reload")
        try eventually(within: .seconds(2), "the LAN program moved") { try linkIDs()["lan_ingress"] != first["lan_ingress"] }
        XCTAssertEqual(try linkIDs()["tunnel_ingress"], first["tunnel_ingress"], "the tunnel's link is kept")
        XCTAssertFalse(try live().contains(first["lan_ingress"]!), "the link on the former LAN is detached")
        let second = try linkIDs()
        // redirect: false means nothing attached and nothing pinned.
        try h.writeConfig(config(h, lan: "private1", redirect: false, pinRoot: pinRoot))
        _ = try h.ask("reload")
        try eventually(within: .seconds(2), "the datapath removed") { (try pins()).isEmpty }
        XCTAssertTrue(try live().isDisjoint(with: second.values), "no link of ours is left")
        XCTAssertNil(try h.status()["datapath"] as? [String: Any])
    }
}
