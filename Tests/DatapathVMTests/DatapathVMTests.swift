import Datapath
import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The whole gateway of DESIGN §1 on Debian's 6.1 kernel (no TCX: the clsact path), with
/// real WireGuard: a client namespace exchanges UDP with a LAN host through the gateway namespace.
final class DatapathVMTests: XCTestCase {
    static let client = "2001:db8:1::100"
    static let lanHost = "2001:db8:1::10"

    func testClsactDatapathCarriesTrafficBetweenAWireGuardClientAndTheLAN() throws {
        XCTAssertEqual(AttachMode.preferred, .clsact, "this tier runs on a kernel without TCX")
        let gateway = try TestNamespace(for: self)
        let client = try TestNamespace(for: self)
        let host = try TestNamespace(for: self)
        for namespace in [gateway, client, host] {
            try namespace.namespace.perform {
                for key in ["all/accept_dad", "default/accept_dad", "all/forwarding", "default/forwarding"] {
                    try Sysctl("net/ipv6/conf/\(key)").write("0")
                }
            }
        }
        // Underlay between client and gateway; the LAN between gateway and host.
        try gateway.ip("link", "add", "ul0", "type", "veth", "peer", "name", "ul1", "netns", client.name)
        try gateway.ip("-6", "addr", "add", "fd00::1/64", "dev", "ul0", "nodad")
        try gateway.ip("link", "set", "ul0", "up")
        try client.ip("-6", "addr", "add", "fd00::2/64", "dev", "ul1", "nodad")
        try client.ip("link", "set", "ul1", "up")
        try gateway.ip("link", "add", "lan0", "type", "veth", "peer", "name", "host0", "netns", host.name)
        try gateway.ip("link", "set", "lan0", "up")
        try gateway.ip("-6", "route", "add", "2001:db8:1::/64", "dev", "lan0")
        try host.ip("-6", "addr", "add", "\(Self.lanHost)/64", "dev", "host0", "nodad")
        try host.ip("link", "set", "host0", "up")

        // WireGuard both ends, configured with wireguard-tools.
        let gatewayKey = try shell("wg", "genkey").trimmingCharacters(in: .whitespacesAndNewlines)
        let clientKey = try shell("wg", "genkey").trimmingCharacters(in: .whitespacesAndNewlines)
        let gatewayPublic = try shell(["wg", "pubkey"], input: gatewayKey).trimmingCharacters(in: .whitespacesAndNewlines)
        let clientPublic = try shell(["wg", "pubkey"], input: clientKey).trimmingCharacters(in: .whitespacesAndNewlines)
        let keys = FileManager.default.temporaryDirectory.appendingPathComponent("wgk-vm-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: keys, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: keys) }
        try gatewayKey.write(to: keys.appendingPathComponent("gateway"), atomically: true, encoding: .utf8)
        try clientKey.write(to: keys.appendingPathComponent("client"), atomically: true, encoding: .utf8)

        try gateway.ip("link", "add", "wg0", "type", "wireguard")
        try shell("ip", "netns", "exec", gateway.name, "wg", "set", "wg0", "listen-port", "51820",
                  "private-key", keys.appendingPathComponent("gateway").path,
                  "peer", clientPublic, "allowed-ips", "\(Self.client)/128")
        try gateway.ip("link", "set", "wg0", "up")
        try gateway.ip("-6", "route", "add", "\(Self.client)/128", "dev", "wg0")
        try client.ip("link", "add", "wg1", "type", "wireguard")
        try shell("ip", "netns", "exec", client.name, "wg", "set", "wg1",
                  "private-key", keys.appendingPathComponent("client").path,
                  "peer", gatewayPublic, "allowed-ips", "2001:db8:1::/64", "endpoint", "[fd00::1]:51820")
        try client.ip("-6", "addr", "add", "\(Self.client)/128", "dev", "wg1", "nodad")
        try client.ip("link", "set", "wg1", "up")
        try client.ip("-6", "route", "add", "2001:db8:1::/64", "dev", "wg1")

        // Proxy NDP on the LAN, as the reconciler sets it up.
        try gateway.ip("-6", "neigh", "add", "proxy", Self.client, "dev", "lan0")
        try gateway.namespace.perform {
            try Sysctl.ipv6(interface: "lan0", "proxy_ndp").write("1")
            try Sysctl.ipv6(interface: "lan0", "forwarding").write("1")
        }

        let pinRoot = "/tmp/wgk-vm-bpf-\(UInt32.random(in: 0...UInt32.max))"
        addTeardownBlock {
            while umount2(pinRoot, Int32(MNT_DETACH)) == 0 {}
            try? FileManager.default.removeItem(atPath: pinRoot)
        }
        let lanIndex = try gateway.index(of: "lan0")
        let tunnelIndex = try gateway.index(of: "wg0")
        let clientSocket = try client.namespace.perform { try UDPSocket(bind: Self.client, port: 7000) }
        let hostSocket = try host.namespace.perform { try UDPSocket(bind: Self.lanHost, port: 7000) }
        // Control: with all.forwarding = 0 and no datapath, nothing crosses the gateway.
        try clientSocket.send(Array("control".utf8), to: Self.lanHost, port: 7000)
        XCTAssertNil(hostSocket.receive(timeout: 2000))

        let datapath = try Datapath(pinRoot: pinRoot, tunnel: "wg0")
        XCTAssertEqual(datapath.mode, .clsact)
        try gateway.namespace.perform { _ = try datapath.attach(lanIndex: lanIndex, tunnelIndex: tunnelIndex) }
        try datapath.set(.redirect, for: IPPrefix("\(Self.client)/128")!, in: .clients)
        try datapath.set(.redirect, for: IPPrefix("2001:db8:1::/64")!, in: .lan)

        // Requests take wg0 → LAN, replies LAN → wg0.
        try exchange(5, clientSocket, hostSocket)
        var counters = try datapath.counters()
        XCTAssertGreaterThanOrEqual(counters.tunnelToLan, 5, "\(counters)")
        XCTAssertGreaterThanOrEqual(counters.lanToTunnel, 4, "\(counters)")
        XCTAssertEqual(counters.errors, 0)

        // A restart adopts everything and writes nothing.
        let restarted = try Datapath(pinRoot: pinRoot, tunnel: "wg0")
        XCTAssertEqual(restarted.programIDs, datapath.programIDs)
        XCTAssertEqual(try gateway.namespace.perform { try restarted.attach(lanIndex: lanIndex, tunnelIndex: tunnelIndex) }, [])

        // Drift: the tunnel's qdisc deleted → seen, repaired, traffic flows again.
        try shell("tc", "-n", gateway.name, "qdisc", "del", "dev", "wg0", "clsact")
        let state = try gateway.namespace.perform { try restarted.state(lanIndex: lanIndex, tunnelIndex: tunnelIndex) }
        XCTAssertEqual(state.tunnel, .detached)
        XCTAssertEqual(try gateway.namespace.perform { try restarted.attach(lanIndex: lanIndex, tunnelIndex: tunnelIndex) },
                       [.attached(.tunnelIngress, .clsact, programID: restarted.programIDs[.tunnelIngress]!)])
        try exchange(3, clientSocket, hostSocket)
        counters = try restarted.counters()
        XCTAssertGreaterThanOrEqual(counters.tunnelToLan, 8, "\(counters)")
    }

    /// `count` request/reply rounds between the client and the LAN host; each must arrive.
    private func exchange(_ count: Int, _ client: UDPSocket, _ host: UDPSocket) throws {
        for round in 0..<count {
            let payload = Array("wgkeeper \(round)".utf8)
            try client.send(payload, to: Self.lanHost, port: 7000)
            let request = try XCTUnwrap(host.receive(timeout: 10_000), "request \(round) did not reach the LAN host")
            XCTAssertEqual(request.bytes, payload)
            XCTAssertEqual(request.from, Self.client)
            try host.send(request.bytes, to: request.from, port: request.port)
            let reply = try XCTUnwrap(client.receive(timeout: 10_000), "reply \(round) did not reach the client")
            XCTAssertEqual(reply.bytes, payload)
            XCTAssertEqual(reply.from, Self.lanHost)
        }
    }
}
