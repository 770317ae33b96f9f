import Datapath
import Foundation
import Netlink
import TestSupport
import XCTest

/// The datapath's ICMPv6 errors seen by real tools through real WireGuard (6.1, clsact):
/// traceroute shows the gateway's hop both ways, tracepath learns the MTU of either side.
final class ICMPErrorVMTests: XCTestCase {
    static let gatewayLAN = "2001:db8:1::1"

    func testTracerouteShowsTheGatewayAndTracepathLearnsBothMTUs() throws {
        let lab = try WireGuardLab(for: self)
        let gateway = lab.gateway
        // The gateway's own LAN address (a /128, as the README has it), kept with its stack.
        try gateway.ip("-6", "addr", "add", "\(Self.gatewayLAN)/128", "dev", "lan0", "nodad")
        let lanIndex = try gateway.index(of: "lan0")
        let tunnelIndex = try gateway.index(of: "wg0")
        let datapath = try Datapath(pinRoot: lab.pinRoot, tunnel: "wg0")
        try gateway.namespace.perform { _ = try datapath.attach(lanIndex: lanIndex, tunnelIndex: tunnelIndex) }
        try datapath.set(.redirect, for: IPPrefix("\(WireGuardLab.client)/128")!, in: .clients)
        try datapath.set(.redirect, for: IPPrefix("2001:db8:1::/64")!, in: .lan)
        try datapath.set(.pass, for: IPPrefix("\(Self.gatewayLAN)/128")!, in: .lan)
        let source = IPv6Address(Self.gatewayLAN)!
        XCTAssertTrue(try datapath.configure(ICMPErrorSettings(lanSource: source, tunnelSource: source, tunnelMTU: 1420, lanMTU: 1500)))

        // Client → LAN host: hop 1 is the gateway (Time Exceeded through the tunnel).
        let outbound = try traceroute(from: lab.client, to: WireGuardLab.lanHost)
        XCTAssertEqual(outbound, [Self.gatewayLAN, WireGuardLab.lanHost], "traceroute from the client")
        // LAN host → client: hop 1 is the gateway (Time Exceeded on the LAN).
        let inbound = try traceroute(from: lab.host, to: WireGuardLab.client)
        XCTAssertEqual(inbound, [Self.gatewayLAN, WireGuardLab.client], "traceroute from the LAN")

        // LAN host → client with 1500-byte probes: Packet Too Big 1420 from the gateway.
        let path = try shell("ip", "netns", "exec", lab.host.name, "tracepath", "-n", "-m", "3", WireGuardLab.client)
        XCTAssertTrue(path.contains("pmtu 1420"), path)
        XCTAssertTrue(path.contains("reached"), path)
        let route = try shell("ip", "-n", lab.host.name, "-6", "route", "get", WireGuardLab.client)
        XCTAssertTrue(route.contains("mtu 1420"), "the LAN host cached the path MTU: \(route)")

        // Client → LAN host over a LAN of MTU 1280: Packet Too Big 1280 through the tunnel.
        try gateway.ip("link", "set", "lan0", "mtu", "1280")
        XCTAssertTrue(try datapath.configure(ICMPErrorSettings(lanSource: source, tunnelSource: source, tunnelMTU: 1420, lanMTU: 1280)))
        let back = try shell("ip", "netns", "exec", lab.client.name, "tracepath", "-n", "-m", "3", WireGuardLab.lanHost)
        XCTAssertTrue(back.contains("pmtu 1280"), back)
        XCTAssertTrue(back.contains("reached"), back)
        print(path + back)

        // Still right without the program's help: the kernel's Address Unreachable for a LAN
        // address nobody holds reaches the client (bpf_redirect_neigh queues on the neighbour).
        let ping = try shell("bash", "-c", "ip netns exec \(lab.client.name) ping -n -c 1 -W 8 2001:db8:1::99; true")
        XCTAssertTrue(ping.contains("Address unreachable"), ping)

        let counters = try datapath.counters()
        XCTAssertGreaterThanOrEqual(counters.timeExceeded, 2, "\(counters)")
        XCTAssertGreaterThanOrEqual(counters.packetTooBig, 2, "\(counters)")
        XCTAssertEqual(counters.errors, 0, "\(counters)")
        print("datapath counters after traceroute and tracepath: \(counters)")
    }

    /// The hops traceroute6 printed, in order ("*" for one that did not answer).
    private func traceroute(from namespace: TestNamespace, to destination: String) throws -> [String] {
        let output = try shell("ip", "netns", "exec", namespace.name, "traceroute", "-6", "-n", "-q", "1", "-w", "3",
                               "-m", "4", destination)
        print(output)
        return output.split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            return fields.count >= 2 ? String(fields[1]) : nil
        }
    }
}
