import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// `gateway.ndp: datapath` with the daemon: a LAN host resolves VPN clients to the gateway's
/// LAN MAC and pings them, while the gateway's LAN keeps forwarding = 0, proxy_ndp = 0 and an
/// ordinary global /64. The tunnel is a TUN device standing in for wg0 (this kernel has no
/// WireGuard); the test answers the pings that come out of it.
final class NeighbourDiscoveryGatewayTests: XCTestCase {
    static let alice = "2001:db8:1::100"
    static let bob = "2001:db8:1::101"

    private var gateway: TestNamespace!
    private var host: TestNamespace!
    private var tun: TunDevice!
    private var daemon: DaemonHarness!
    private var pinRoot = ""
    private let keys = (PrivateKey.generate().publicKey, PrivateKey.generate().publicKey)

    /// The gateway with `lanAddress` on private0 and the daemon started with `ndp`.
    private func start(lanAddress: String, ndp: String, peers: [String] = [alice, bob]) throws {
        gateway = try TestNamespace(for: self)
        host = try TestNamespace(for: self)
        try gateway.ip("link", "add", "private0", "type", "veth", "peer", "name", "lanp", "netns", host.name)
        try gateway.ip("link", "set", "private0", "up")
        try gateway.ip("-6", "addr", "add", lanAddress, "dev", "private0", "nodad")
        try host.ip("link", "set", "lanp", "up")
        try host.ip("-6", "addr", "add", "2001:db8:1::10/64", "dev", "lanp", "nodad")
        tun = try gateway.namespace.perform { try TunDevice(name: "wg0") }
        try gateway.ip("link", "set", "wg0", "up")
        daemon = try DaemonHarness(self, ns: gateway)
        pinRoot = try daemon.mountPinRoot(self)
        try daemon.writeConfig(config(ndp: ndp, peers: peers))
        try daemon.start()
    }

    private func config(ndp: String, peers: [String]) -> String {
        let all = [("alice", Self.alice, keys.0), ("bob", Self.bob, keys.1)]
        return daemon.gatewayConfig(runtime: ["proxy_poll: 200ms"], pinRoot: pinRoot,
                                    peers: all.filter { peers.contains($0.1) }.map { TestPeer($0.0, $0.2, allowedIPs: ["\($0.1)/128"]) },
                                    gateway: ["redirect: true", "ndp: \(ndp)"])
    }

    private func reload(ndp: String, peers: [String] = [alice, bob]) throws {
        try daemon.writeConfig(config(ndp: ndp, peers: peers))
        let answer = try daemon.ask("reload")["output"] as? String ?? ""
        XCTAssertFalse(answer.contains("refused"), answer)
    }

    private func groups() throws -> String { try gateway.ip("-6", "maddr", "show", "dev", "private0") }
    private func lanSysctls() throws -> [String] { try ["forwarding", "proxy_ndp"].map { try gateway.sysctl("private0", $0) } }
    private func proxies() throws -> Int { try gateway.ipJSON("-6", "neigh", "show", "proxy").count }
    private var gatewayMAC: String {
        get throws { try XCTUnwrap(gateway.ipJSON("link", "show", "dev", "private0").first?["address"] as? String) }
    }

    private func neighbourDiscovery() throws -> String {
        (try daemon.status()["datapath"] as? [String: Any])?["neighbour_discovery"] as? String ?? "(none)"
    }

    private func answered() throws -> Int {
        ((try daemon.status()["datapath"] as? [String: Any])?["counters"] as? [String: Any])?["solicitations_answered"] as? Int ?? -1
    }

    /// Pings `address` from the LAN host `count` times, answering each echo request that comes
    /// out of the tunnel as the client would; true when every ping was answered.
    private func ping(_ address: String, count: Int = 3) throws -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ip", "netns", "exec", host.name, "ping", "-6", "-n", "-q", "-c", "\(count)", "-i", "0.2", "-W", "2", address]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        while process.isRunning {
            for packet in tun.drain(quiet: 50) where packet.count >= 48 && packet[6] == 58 && packet[40] == 128 {
                var reply = Array(packet[0..<8]) + Array(packet[24..<40]) + Array(packet[8..<24]) + Array(packet[40...])
                reply[7] = 64
                reply[40] = 129
                reply[42] = 0
                reply[43] = 0
                let sum = ICMPError.checksum(reply)
                reply[42] = UInt8(sum >> 8)
                reply[43] = UInt8(sum & 0xff)
                try tun.write(reply)
            }
        }
        return process.terminationStatus == 0
    }

    func testLANHostResolvesAndPingsClientsWithTheLANLeftAsItWas() throws {
        try start(lanAddress: "2001:db8:1::1/64", ndp: "datapath")
        XCTAssertEqual(try lanSysctls(), ["0", "0"], "forwarding and proxy_ndp of the LAN untouched")
        XCTAssertEqual(try gateway.sysctl("all", "forwarding"), "0")
        XCTAssertEqual(try proxies(), 0, "no proxy entry")
        let joined = try groups()
        XCTAssertTrue(joined.contains("ff02::1:ff00:100") && joined.contains("ff02::1:ff00:101"), joined)
        let line = try neighbourDiscovery()
        XCTAssertTrue(line.contains("for 2 addresses with \(try gatewayMAC); 2 solicited-node groups joined on private0 through 1 sockets"), line)

        XCTAssertTrue(try ping(Self.alice), "the LAN host pings a client")
        let entry = try XCTUnwrap(try host.ipJSON("-6", "neigh", "show", Self.alice, "dev", "lanp").first)
        let mac = try gatewayMAC
        XCTAssertEqual(entry["lladdr"] as? String, mac, "resolved to the gateway's LAN MAC: \(entry)")
        XCTAssertGreaterThanOrEqual(try answered(), 1)
        // Neighbour unreachability detection later probes by unicast: answered too.
        try host.ip("-6", "neigh", "change", Self.alice, "dev", "lanp", "lladdr", mac, "nud", "probe")
        try eventually(within: .seconds(5), "unicast probe answered") {
            let state = try host.ipJSON("-6", "neigh", "show", Self.alice, "dev", "lanp").first?["state"] as? [String]
            return state == ["REACHABLE"]
        }

        // Duplicate address detection for a client's address fails on the LAN: it is taken.
        try host.ip("-6", "addr", "add", "\(Self.bob)/64", "dev", "lanp")
        try eventually(within: .seconds(5), "DAD failed for bob's address") {
            try host.ip("-6", "addr", "show", "dev", "lanp").contains("dadfailed")
        }
        try host.ip("-6", "addr", "del", "\(Self.bob)/64", "dev", "lanp")

        // The safety checks hold: no anycast, the /64 is fine with forwarding off.
        let safety = try XCTUnwrap(try daemon.status()["safety"] as? [[String: Any]])
        XCTAssertTrue(safety.allSatisfy { $0["ok"] as? Bool == true }, "\(safety)")

        // A new LAN MAC is advertised from the link event on.
        try gateway.ip("link", "set", "private0", "address", "02:00:00:00:77:01")
        let followed = try eventually(within: .seconds(2), "the program answers with the new MAC") {
            try neighbourDiscovery().contains("with 02:00:00:00:77:01")
        }
        print("new LAN MAC in the program's config after \(followed)")
        try host.ip("-6", "neigh", "flush", "dev", "lanp")
        XCTAssertTrue(try ping(Self.alice))
        XCTAssertEqual(try host.ipJSON("-6", "neigh", "show", Self.alice, "dev", "lanp").first?["lladdr"] as? String, "02:00:00:00:77:01")

        // A client leaves: its group is left.
        try reload(ndp: "datapath", peers: [Self.alice])
        XCTAssertFalse(try groups().contains("ff02::1:ff00:101"))
        XCTAssertTrue(try groups().contains("ff02::1:ff00:100"))

        // A restart joins again (the sockets died with the old daemon) and writes nothing.
        daemon.stop()
        XCTAssertFalse(try groups().contains("ff02::1:ff00:100"), "memberships end with the daemon")
        try daemon.start()
        XCTAssertTrue(try groups().contains("ff02::1:ff00:100"))
        XCTAssertEqual(try daemon.writes(), 0, "a restart writes nothing")
        try host.ip("-6", "neigh", "flush", "dev", "lanp")
        XCTAssertTrue(try ping(Self.alice), "resolved again after the restart")
    }

    /// `ndp: kernel`: the proxy entries answer address resolution, but the kernel answers a
    /// LAN host's unicast reachability probe for a client only on its forwarding path, closed by
    /// all.forwarding = 0 (kernel fact 28): lan_ingress answers those, and only those.
    func testKernelModeReachabilityProbesAreAnswered() throws {
        try start(lanAddress: "2001:db8:1::1/128", ndp: "kernel")
        XCTAssertEqual(try lanSysctls(), ["1", "1"])
        XCTAssertEqual(try gateway.sysctl("all", "forwarding"), "0")
        XCTAssertTrue(try ping(Self.alice), "resolved by the kernel's proxy entry")
        XCTAssertEqual(try answered(), 0, "address resolution is the kernel's")
        let mac = try gatewayMAC
        XCTAssertEqual(try host.ipJSON("-6", "neigh", "show", Self.alice, "dev", "lanp").first?["lladdr"] as? String, mac)
        for round in 1...2 {
            try host.ip("-6", "neigh", "change", Self.alice, "dev", "lanp", "lladdr", mac, "nud", "probe")
            try eventually(within: .seconds(5), "unicast probe \(round) answered") {
                let state = try host.ipJSON("-6", "neigh", "show", Self.alice, "dev", "lanp").first?["state"] as? [String]
                return state == ["REACHABLE"]
            }
        }
        XCTAssertGreaterThanOrEqual(try answered(), 2, "by lan_ingress")
        XCTAssertNil((try daemon.status()["datapath"] as? [String: Any])?["solicited_node_groups"], "no groups to count")
        // The kernel fact itself: with the daemon stopped and the program's flag cleared (by
        // bpftool), the same probe goes unanswered though the proxy entry and LAN forwarding stay.
        daemon.stop()
        let config = "\(pinRoot)/wg0/config"
        let read = try JSONSerialization.jsonObject(with: Data(try shell("bpftool", "-j", "map", "lookup", "pinned", config,
                                                                          "key", "0", "0", "0", "0").utf8)) as? [String: Any]
        var value = try XCTUnwrap(read?["value"] as? [String]).map { UInt8($0.dropFirst(2), radix: 16)! }
        XCTAssertEqual(value[20], 2, "CONFIG_ANSWER_UNICAST_NS alone")
        value[20] = 0
        try shell(["bpftool", "map", "update", "pinned", config, "key", "0", "0", "0", "0", "value"] + value.map { "\($0)" })
        XCTAssertEqual(try proxies(), 2)
        try host.ip("-6", "neigh", "change", Self.alice, "dev", "lanp", "lladdr", mac, "nud", "probe")
        try eventually(within: .seconds(6), "the probe fails unanswered without the program") {
            let state = try host.ipJSON("-6", "neigh", "show", Self.alice, "dev", "lanp").first?["state"] as? [String]
            return state == ["FAILED"] || state == nil
        }
        // A restart repairs the flag, and nothing else is written.
        try daemon.start()
        XCTAssertEqual(try daemon.writes(), 1, "the program's config only")
        XCTAssertTrue(try ping(Self.alice), "resolved again by the proxy entry")
        try host.ip("-6", "neigh", "change", Self.alice, "dev", "lanp", "lladdr", mac, "nud", "probe")
        try eventually(within: .seconds(5), "unicast probe answered after the restart") {
            let state = try host.ipJSON("-6", "neigh", "show", Self.alice, "dev", "lanp").first?["state"] as? [String]
            return state == ["REACHABLE"]
        }
        // A restart that finds it as it should be writes nothing.
        daemon.stop()
        try daemon.start()
        XCTAssertEqual(try daemon.writes(), 0, "a restart writes nothing")
        // proxy_ndp: false leaves neighbour discovery to whatever the operator runs: no answers.
        try daemon.writeConfig(daemon.gatewayConfig(runtime: ["proxy_poll: 200ms"], pinRoot: pinRoot,
                                                    peers: [TestPeer("alice", keys.0, allowedIPs: ["\(Self.alice)/128"])],
                                                    gateway: ["redirect: true", "ndp: kernel", "proxy_ndp: false"]))
        XCTAssertFalse((try daemon.ask("reload")["output"] as? String ?? "").contains("refused"))
        XCTAssertEqual(try neighbourDiscovery(), "(none)")
        let counted = try answered()
        try host.ip("-6", "neigh", "change", Self.alice, "dev", "lanp", "lladdr", mac, "nud", "probe")
        try eventually(within: .seconds(6), "the probe fails unanswered") {
            let state = try host.ipJSON("-6", "neigh", "show", Self.alice, "dev", "lanp").first?["state"] as? [String]
            return state == ["FAILED"] || state == nil
        }
        XCTAssertEqual(try answered(), counted)
    }

    /// Reloads between the modes: kernel → datapath removes our proxy entries and restores the
    /// LAN's sysctls to what they were; datapath → kernel puts them back.
    func testSwitchingModesByReload() throws {
        // Kernel mode needs a LAN without a global prefix shorter than /127 (the anycast rule).
        // (wgkeeper's own route for the LAN prefix covers the /128's missing on-link route.)
        try start(lanAddress: "2001:db8:1::1/128", ndp: "kernel")
        XCTAssertEqual(try lanSysctls(), ["1", "1"])
        XCTAssertEqual(try proxies(), 2)
        XCTAssertEqual(try neighbourDiscovery(), "the kernel's proxy entries answer address resolution; "
                       + "lan_ingress answers the unicast reachability probes with \(try gatewayMAC)")
        XCTAssertTrue(try ping(Self.alice), "kernel mode: the kernel answers")

        try reload(ndp: "datapath")
        XCTAssertEqual(try lanSysctls(), ["0", "0"], "restored")
        XCTAssertEqual(try proxies(), 0)
        XCTAssertTrue(try groups().contains("ff02::1:ff00:100"))
        try host.ip("-6", "neigh", "flush", "dev", "lanp")
        let before = try answered()
        XCTAssertTrue(try ping(Self.alice), "datapath mode: the program answers")
        XCTAssertGreaterThan(try answered(), before)

        try reload(ndp: "kernel")
        XCTAssertEqual(try lanSysctls(), ["1", "1"])
        XCTAssertEqual(try proxies(), 2)
        try host.ip("-6", "neigh", "flush", "dev", "lanp")
        let counted = try answered()
        XCTAssertTrue(try ping(Self.alice), "kernel mode again")
        XCTAssertEqual(try answered(), counted, "the program no longer answers")
        XCTAssertTrue(try groups().contains("ff02::1:ff00:100"), "the kernel's proxy entry holds the group now")
    }
}
