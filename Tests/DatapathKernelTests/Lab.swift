import Datapath
import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The gateway (README, "The problem it solves") in miniature: namespace `gateway` holds a veth end `lan0` (the
/// LAN) and a TUN device `wgt0` (the tunnel); namespace `host` holds the other veth end
/// `host0`, a LAN host with 2001:db8:1::10/64. VPN clients live in 2001:db8:2::/64.
final class Lab {
    static let lanPrefix = IPPrefix("2001:db8:1::/64")!
    static let clientPrefix = IPPrefix("2001:db8:2::/64")!
    static let gatewayAddress = "2001:db8:1::1"
    static let hostAddress = "2001:db8:1::10"
    static let clientAddress = "2001:db8:2::5"

    let gateway: TestNamespace
    let host: TestNamespace
    let tun: TunDevice
    let capture: PacketSocket
    let lanIndex: Int32
    let tunnelIndex: Int32
    let hostIndex: Int32
    let lanMAC: [UInt8]
    let hostMAC: [UInt8]
    /// A fresh directory for this test; `Datapath` mounts a bpffs on it.
    let pinRoot: String

    init(for test: XCTestCase) throws {
        gateway = try TestNamespace(for: test)
        host = try TestNamespace(for: test)
        for namespace in [gateway, host] {
            // Addresses usable at once; the gateway forwards nowhere, as in production.
            try namespace.namespace.perform {
                for key in ["all/accept_dad", "default/accept_dad", "all/forwarding", "default/forwarding"] {
                    try Sysctl("net/ipv6/conf/\(key)").write("0")
                }
            }
        }
        try gateway.ip("link", "add", "lan0", "type", "veth", "peer", "name", "host0", "netns", host.name)
        try gateway.ip("link", "set", "lan0", "up")
        try host.ip("link", "set", "host0", "up")
        try host.ip("-6", "addr", "add", "\(Self.hostAddress)/64", "dev", "host0", "nodad")
        try gateway.ip("-6", "addr", "add", "\(Self.gatewayAddress)/128", "dev", "lan0", "nodad")
        try gateway.ip("-6", "route", "add", Self.lanPrefix.description, "dev", "lan0")
        tun = try gateway.namespace.perform { try TunDevice(name: "wgt0") }
        try gateway.ip("link", "set", "wgt0", "up")
        try gateway.ip("-6", "route", "add", Self.clientPrefix.description, "dev", "wgt0")

        lanIndex = try gateway.index(of: "lan0")
        tunnelIndex = try gateway.index(of: "wgt0")
        hostIndex = try host.index(of: "host0")
        lanMAC = mac(try XCTUnwrap(gateway.ipJSON("link", "show", "dev", "lan0").first?["address"] as? String))
        hostMAC = mac(try XCTUnwrap(host.ipJSON("link", "show", "dev", "host0").first?["address"] as? String))
        let hostIndex = self.hostIndex
        capture = try host.namespace.perform { try PacketSocket(interfaceIndex: hostIndex) }

        let pinRoot = "/tmp/wgk-bpf-\(UInt32.random(in: 0...UInt32.max))"
        self.pinRoot = pinRoot
        test.addTeardownBlock {
            // Pinned links hold attachments; the namespaces' devices go with them anyway.
            while umount2(pinRoot, Int32(MNT_DETACH)) == 0 {}
            try? FileManager.default.removeItem(atPath: pinRoot)
        }
    }

    /// A datapath instance for `wgt0` on this lab's pin root (a "daemon start").
    func datapath(mode: AttachMode? = nil) throws -> Datapath {
        try Datapath(pinRoot: pinRoot, tunnel: "wgt0", mode: mode)
    }

    @discardableResult
    func attach(_ datapath: Datapath) throws -> [AttachChange] {
        try gateway.namespace.perform { try datapath.attach(lanIndex: lanIndex, tunnelIndex: tunnelIndex) }
    }

    func state(_ datapath: Datapath) throws -> DatapathState {
        try gateway.namespace.perform { try datapath.state(lanIndex: lanIndex, tunnelIndex: tunnelIndex) }
    }

    /// The desired entries of the gateway: clients to the tunnel, the LAN to the LAN, and the
    /// gateway's own LAN address to its stack.
    static let desiredClients: [IPPrefix: PrefixAction] = [clientPrefix: .redirect]
    static let desiredLAN: [IPPrefix: PrefixAction] = [lanPrefix: .redirect, IPPrefix(gatewayAddress)!: .pass]

    func configureEntries(_ datapath: Datapath) throws {
        XCTAssertEqual(try datapath.synchronize(.clients, to: Self.desiredClients), [:])
        XCTAssertEqual(try datapath.synchronize(.lan, to: Self.desiredLAN), [:])
    }

    /// A test packet from a VPN client into the tunnel, for the LAN host.
    func sendFromTunnel(sequence: UInt32, hopLimit: UInt8 = 64, to destination: String = Lab.hostAddress) throws {
        try tun.write(Packet.test(from: Self.clientAddress, to: destination, hopLimit: hopLimit, sequence: sequence))
    }

    /// A test frame from the LAN host to the gateway's MAC, for a VPN client.
    func sendFromLAN(sequence: UInt32, hopLimit: UInt8 = 64, to destination: String = Lab.clientAddress) throws {
        try capture.send(Packet.ethernet(to: lanMAC, from: hostMAC,
                                         Packet.test(from: Self.hostAddress, to: destination, hopLimit: hopLimit, sequence: sequence)))
    }

    /// Test packets that reached the LAN host: (sequence, hop limit), after checking the
    /// Ethernet header the neighbour subsystem wrote.
    func receivedOnLAN(quiet: Int32 = 300) -> [(UInt32, UInt8)] {
        capture.drain(quiet: quiet).compactMap { frame in
            guard frame.count > 14, frame[12] == 0x86, frame[13] == 0xdd else { return nil }
            let packet = Array(frame[14...])
            guard let sequence = Packet.sequence(ofIPv6: packet) else { return nil }
            XCTAssertEqual(Array(frame[0..<6]), hostMAC, "destination MAC of packet \(sequence)")
            XCTAssertEqual(Array(frame[6..<12]), lanMAC, "source MAC of packet \(sequence)")
            return (sequence, Packet.hopLimit(ofIPv6: packet))
        }
    }

    /// Test packets that left through the tunnel: (sequence, hop limit).
    func receivedOnTunnel(quiet: Int32 = 300) -> [(UInt32, UInt8)] {
        tun.drain(quiet: quiet).compactMap { packet in
            Packet.sequence(ofIPv6: packet).map { ($0, Packet.hopLimit(ofIPv6: packet)) }
        }
    }
}
