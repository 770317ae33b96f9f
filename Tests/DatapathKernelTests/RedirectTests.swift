import Datapath
import Foundation
import Netlink
import TestSupport
import XCTest

/// Both programs move packets, on TCX (the host kernel) and on clsact (forced, as on 6.1).
final class RedirectTests: XCTestCase {
    func testRedirectsBothWaysWithTCX() throws {
        try exerciseRedirects(mode: .tcx)
    }

    func testRedirectsBothWaysWithClsact() throws {
        try exerciseRedirects(mode: .clsact)
    }

    func testPreferredModeOnThisKernelIsTCX() {
        // The host kernel is ≥ 6.6; the VM tier (6.1) checks the other branch.
        XCTAssertEqual(AttachMode.preferred, .tcx)
    }

    private func exerciseRedirects(mode: AttachMode) throws {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath(mode: mode)
        XCTAssertEqual(datapath.mode, mode)
        let changes = try lab.attach(datapath)
        let ids = datapath.programIDs
        // With clsact, the qdisc each device lacked is created and said to be ours.
        let created = { (index: Int32) -> [AttachChange] in mode == .clsact ? [.createdQdisc(interfaceIndex: index)] : [] }
        XCTAssertEqual(changes, [.configured(lanIndex: lab.lanIndex, tunnelIndex: lab.tunnelIndex)]
            + created(lab.lanIndex) + [.attached(.lanIngress, mode, programID: ids[.lanIngress]!)]
            + created(lab.tunnelIndex) + [.attached(.tunnelIngress, mode, programID: ids[.tunnelIngress]!)])
        try lab.configureEntries(datapath)
        XCTAssertTrue(try lab.state(datapath).isInSync)
        try assertAttachedOnlyBy(mode, lab)

        // Tunnel → LAN: delivered with the LAN host's MAC (neighbour resolution), hop limit 63.
        try lab.sendFromTunnel(sequence: 1)
        try lab.sendFromTunnel(sequence: 2, hopLimit: 1)             // expired: to the stack
        try lab.sendFromTunnel(sequence: 3, to: Lab.gatewayAddress)  // the gateway's own: to the stack
        try lab.sendFromTunnel(sequence: 4, hopLimit: 2)
        // LAN → tunnel.
        try lab.sendFromLAN(sequence: 11)
        try lab.sendFromLAN(sequence: 12, hopLimit: 1)
        try lab.sendFromLAN(sequence: 13, to: "2001:db8:3::1")    // not a client
        try lab.capture.send(Packet.ethernet(to: [0x02, 0, 0, 0, 0, 0x99], from: lab.hostMAC,  // another host's frame
                                             Packet.test(from: Lab.hostAddress, to: Lab.clientAddress, sequence: 14)))
        try lab.capture.send(Packet.ipv4Frame(to: lab.lanMAC, from: lab.hostMAC))
        try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC,
                                             Packet.neighbourSolicitation(from: Lab.hostAddress, to: Lab.clientAddress)))

        let lan = lab.receivedOnLAN()
        XCTAssertEqual(lan.map(\.0), [1, 4])
        XCTAssertEqual(lan.map(\.1), [63, 1])
        let tunnel = try lab.gateway.namespace.perform { lab.tun.drain() }
        XCTAssertEqual(tunnel.compactMap(Packet.sequence(ofIPv6:)), [11], "only the client-bound test packet leaves through the tunnel")
        XCTAssertEqual(tunnel.compactMap { Packet.sequence(ofIPv6: $0) == 11 ? Packet.hopLimit(ofIPv6: $0) : nil }, [63])
        XCTAssertFalse(tunnel.contains { $0.count > 40 && $0[6] == 58 && $0[40] == 135 }, "neighbour solicitation redirected")
        XCTAssertFalse(tunnel.contains { $0.first.map { $0 >> 4 == 4 } ?? false }, "IPv4 redirected")

        let counters = try datapath.counters()
        XCTAssertEqual(counters.tunnelToLan, 2)
        XCTAssertEqual(counters.lanToTunnel, 1)
        XCTAssertEqual(counters.hopLimitExpired, 2)
        XCTAssertEqual(counters.errors, 0)
        XCTAssertGreaterThanOrEqual(counters.passed, 5, "other destination, other MAC, IPv4, NS, the gateway's own address")
        XCTAssertEqual(counters.byName["lan_to_tunnel"], 1)
        XCTAssertEqual(counters.byName["hop_limit_expired"], 2)
    }

    /// As deployed (README, `allowed_ips`): client /128s inside the LAN prefix, answered by proxy NDP.
    func testClientInsideTheLANPrefixIsNeverSentToTheLAN() throws {
        let lab = try Lab(for: self)
        let client = "2001:db8:1::100"
        // A LAN host claiming the client's address would receive a wrongly redirected packet.
        try lab.host.ip("-6", "addr", "add", "\(client)/64", "dev", "host0", "nodad")
        let datapath = try lab.datapath()
        try lab.attach(datapath)
        try datapath.set(.redirect, for: IPPrefix("\(client)/128")!, in: .clients)
        XCTAssertEqual(try datapath.synchronize(.lan, to: Lab.desiredLAN), [:])

        try lab.sendFromTunnel(sequence: 1, to: client)
        try lab.sendFromTunnel(sequence: 2)
        try lab.sendFromLAN(sequence: 3, to: client)
        XCTAssertEqual(lab.receivedOnLAN().map(\.0), [2])
        XCTAssertEqual(lab.receivedOnTunnel().map(\.0), [3])
        let counters = try datapath.counters()
        XCTAssertEqual(counters.tunnelToLan, 1)
        XCTAssertEqual(counters.lanToTunnel, 1)
    }

    /// Tunnel → LAN takes two ways: with the LAN host's neighbour entry valid, the next hop goes
    /// to `bpf_redirect_neigh` (no route lookup per packet); without one, the kernel looks the
    /// route up and keeps its dst on the packet, so that a failed resolution still sends Address
    /// Unreachable back to the client, as the forwarding path does.
    func testTunnelToLANBeforeAndAfterResolutionAndToAnAbsentHost() throws {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath()
        try lab.attach(datapath)
        try lab.configureEntries(datapath)

        try lab.sendFromTunnel(sequence: 1)  // no neighbour entry yet: resolved on the way
        XCTAssertEqual(lab.receivedOnLAN().map(\.0), [1])
        let state = try XCTUnwrap(lab.gateway.ipJSON("-6", "neigh", "show", Lab.hostAddress, "dev", "lan0").first?["state"] as? [String])
        XCTAssertEqual(state, ["REACHABLE"])
        for sequence in UInt32(2)...UInt32(5) { try lab.sendFromTunnel(sequence: sequence) }  // entry valid
        XCTAssertEqual(lab.receivedOnLAN().map(\.0), [2, 3, 4, 5])

        let absent = "2001:db8:1::99"
        try lab.sendFromTunnel(sequence: 6, to: absent)
        // Three solicitations a second apart, then the error (type 1, code 3) back through the tunnel.
        let errors = try lab.gateway.namespace.perform { lab.tun.drain(quiet: 5000) }
            .filter { $0.count >= 48 && $0[6] == 58 && $0[40] == 1 }
        XCTAssertEqual(errors.count, 1, "one Destination Unreachable for the packet to \(absent)")
        if let error = errors.first {
            XCTAssertEqual(error[41], 3, "code 3: address unreachable")
            XCTAssertEqual(Array(error[24..<40]), IPv6Address(Lab.clientAddress)!.bytes, "sent to the client")
            XCTAssertEqual(Packet.sequence(ofIPv6: Array(error[48...])), 6, "quoting the packet")
        }
        XCTAssertTrue(lab.receivedOnLAN(quiet: 100).isEmpty)
        XCTAssertEqual(try datapath.counters().tunnelToLan, 6)
        XCTAssertEqual(try datapath.counters().errors, 0)
    }

    /// The next hop the program hands over follows policy routing: a rule sending one LAN
    /// address through another host wins over that address's own valid neighbour entry.
    func testTunnelToLANFollowsPolicyRouting() throws {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath()
        try lab.attach(datapath)
        try lab.configureEntries(datapath)
        // bpf_fib_lookup answers only for a device that forwards (ndp: kernel sets the LAN's).
        _ = try shell("ip", "netns", "exec", lab.gateway.name, "sysctl", "-qw", "net.ipv6.conf.lan0.forwarding=1")
        let routed = "2001:db8:1::60"
        _ = try lab.gateway.ip("-6", "neigh", "replace", routed, "lladdr", "02:00:00:00:60:60", "dev", "lan0", "nud", "permanent")
        _ = try lab.gateway.ip("-6", "route", "add", "\(routed)/128", "via", Lab.hostAddress, "dev", "lan0", "table", "100")
        _ = try lab.gateway.ip("-6", "rule", "add", "to", "\(routed)/128", "lookup", "100")
        try lab.sendFromTunnel(sequence: 1)  // resolves the host: its entry is valid from then on
        XCTAssertEqual(lab.receivedOnLAN().map(\.0), [1])
        try lab.sendFromTunnel(sequence: 2, to: routed)
        try lab.sendFromTunnel(sequence: 3, to: routed)
        // receivedOnLAN checks each frame's destination MAC: the host's, as the rule says.
        XCTAssertEqual(lab.receivedOnLAN().map(\.0), [2, 3])
    }

    func testErrorsNameTheOperationInterfaceAndKernelMessage() throws {
        let lab = try Lab(for: self)
        for mode in AttachMode.allCases {
            let datapath = try lab.datapath(mode: mode)
            XCTAssertThrowsError(try lab.gateway.namespace.perform {
                try datapath.attach(lanIndex: 9999, tunnelIndex: lab.tunnelIndex)
            }) { error in
                let error = error as? DatapathError
                XCTAssertEqual(error?.object, "interface 9999", "\(mode)")
                XCTAssertEqual(error?.code, ENODEV, "\(mode): \(String(describing: error))")
                XCTAssertTrue(error?.description.contains("No such device") ?? false, "\(mode): \(String(describing: error))")
            }
        }
    }

    /// The other mode's hook is empty: `tc filter show` for clsact, the link pins for TCX.
    private func assertAttachedOnlyBy(_ mode: AttachMode, _ lab: Lab) throws {
        let filters = try lab.gateway.ip("-d", "-j", "link", "show", "lan0")  // keeps the namespace alive
        XCTAssertFalse(filters.isEmpty)
        let tcFilters = try shell("tc", "-n", lab.gateway.name, "filter", "show", "dev", "lan0", "ingress")
        let links = FileManager.default.fileExists(atPath: "\(lab.pinRoot)/wgt0/lan_ingress_link")
        switch mode {
        case .tcx:
            XCTAssertTrue(links, "TCX link pinned")
            XCTAssertFalse(tcFilters.contains("bpf"), "no cls_bpf filter in TCX mode: \(tcFilters)")
        case .clsact:
            XCTAssertFalse(links, "no TCX link in clsact mode")
            XCTAssertTrue(tcFilters.contains("lan_ingress") && tcFilters.contains("direct-action"), tcFilters)
        }
    }
}
