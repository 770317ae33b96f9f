import Datapath
import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The whole gateway (README, "The problem it solves") on Debian's 6.1 kernel (no TCX: the clsact path), with
/// real WireGuard: a client namespace exchanges UDP with a LAN host through the gateway namespace.
final class DatapathVMTests: XCTestCase {
    static let client = "2001:db8:1::100"
    static let lanHost = "2001:db8:1::10"

    func testClsactDatapathCarriesTrafficBetweenAWireGuardClientAndTheLAN() throws {
        XCTAssertEqual(AttachMode.preferred, .clsact, "this tier runs on a kernel without TCX")
        let lab = try WireGuardLab(for: self)
        let (gateway, client, host, pinRoot) = (lab.gateway, lab.client, lab.host, lab.pinRoot)
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
        // The qdisc is made again, and said to be ours (so that cleanup removes it).
        XCTAssertEqual(try gateway.namespace.perform { try restarted.attach(lanIndex: lanIndex, tunnelIndex: tunnelIndex) },
                       [.createdQdisc(interfaceIndex: tunnelIndex),
                        .attached(.tunnelIngress, .clsact, programID: restarted.programIDs[.tunnelIngress]!)])
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
