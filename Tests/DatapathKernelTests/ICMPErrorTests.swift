import Datapath
import Foundation
import Netlink
import TestSupport
import XCTest

/// The programs answer like a router (RFC 4443): Time Exceeded and Packet Too Big, built in
/// the skb and sent back out of the device the packet came in on, checked byte by byte.
final class ICMPErrorTests: XCTestCase {
    static let lanSource = IPv6Address(Lab.gatewayAddress)!
    static let tunnelSource = IPv6Address("2001:db8:ff::1")!

    private func gateway(_ settings: ICMPErrorSettings = ICMPErrorSettings(lanSource: lanSource, tunnelSource: tunnelSource))
        throws -> (Lab, Datapath) {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath()
        try lab.attach(datapath)
        try lab.configureEntries(datapath)
        XCTAssertTrue(try datapath.configure(settings))
        XCTAssertFalse(try datapath.configure(settings), "unchanged settings write nothing")
        XCTAssertEqual(try datapath.icmpErrorSettings(), settings)
        return (lab, datapath)
    }

    func testTimeExceededTowardTheLAN() throws {
        let (lab, datapath) = try gateway()
        let invoking = Packet.test(from: Lab.hostAddress, to: Lab.clientAddress, hopLimit: 1, sequence: 7)
        try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC, invoking))
        let frames = lab.capture.drain().filter { $0.count > 54 && $0[12] == 0x86 && $0[13] == 0xdd && $0[20] == 58 }
        XCTAssertEqual(frames.count, 1)
        let frame = try XCTUnwrap(frames.first)
        XCTAssertEqual(Array(frame[0..<6]), lab.hostMAC, "back to the sender's MAC")
        XCTAssertEqual(Array(frame[6..<12]), lab.lanMAC, "from the gateway's MAC")
        try ICMPError.check(Array(frame[14...]), type: 3, code: 0, field: 0, from: Self.lanSource,
                            to: IPv6Address(Lab.hostAddress)!, quoting: invoking)
        XCTAssertTrue(lab.receivedOnTunnel().isEmpty)
        let counters = try datapath.counters()
        XCTAssertEqual(counters.hopLimitExpired, 1)
        XCTAssertEqual(counters.timeExceeded, 1)
        XCTAssertEqual(counters.errors, 0)
    }

    func testTimeExceededTowardTheTunnel() throws {
        let (lab, datapath) = try gateway()
        let invoking = Packet.test(from: Lab.clientAddress, to: Lab.hostAddress, hopLimit: 1, sequence: 8)
        try lab.tun.write(invoking)
        let packets = lab.tun.drain().filter { $0.count > 40 && $0[6] == 58 && $0[40] < 128 }
        XCTAssertEqual(packets.count, 1)
        try ICMPError.check(try XCTUnwrap(packets.first), type: 3, code: 0, field: 0, from: Self.tunnelSource,
                            to: IPv6Address(Lab.clientAddress)!, quoting: invoking)
        XCTAssertTrue(lab.receivedOnLAN().isEmpty)
        XCTAssertEqual(try datapath.counters().timeExceeded, 1)
    }

    func testPacketTooBigTowardTheLANQuotesWhatFitsIn1280Bytes() throws {
        let (lab, datapath) = try gateway(ICMPErrorSettings(lanSource: Self.lanSource, tunnelSource: Self.tunnelSource, tunnelMTU: 1420))
        let invoking = Packet.big(from: Lab.hostAddress, to: Lab.clientAddress, length: 1500, sequence: 9)
        let fits = Packet.big(from: Lab.hostAddress, to: Lab.clientAddress, length: 1420, sequence: 10)
        try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC, invoking))
        try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC, fits))
        let frames = lab.capture.drain().filter { $0.count > 54 && $0[12] == 0x86 && $0[13] == 0xdd && $0[20] == 58 }
        XCTAssertEqual(frames.count, 1)
        let error = Array(try XCTUnwrap(frames.first)[14...])
        XCTAssertEqual(error.count, 1280)
        try ICMPError.check(error, type: 2, code: 0, field: 1420, from: Self.lanSource,
                            to: IPv6Address(Lab.hostAddress)!, quoting: invoking)
        XCTAssertEqual(lab.receivedOnTunnel().map(\.0), [10], "the packet that fits goes on")
        let counters = try datapath.counters()
        XCTAssertEqual(counters.packetTooBig, 1)
        XCTAssertEqual(counters.lanToTunnel, 1)
    }

    func testPacketTooBigTowardTheTunnel() throws {
        let (lab, datapath) = try gateway(ICMPErrorSettings(lanSource: Self.lanSource, tunnelSource: Self.tunnelSource, lanMTU: 1280))
        let invoking = Packet.big(from: Lab.clientAddress, to: Lab.hostAddress, length: 1281, sequence: 11)
        try lab.tun.write(invoking)
        try lab.sendFromTunnel(sequence: 12)
        let packets = lab.tun.drain().filter { $0.count > 40 && $0[6] == 58 && $0[40] < 128 }
        XCTAssertEqual(packets.count, 1)
        try ICMPError.check(try XCTUnwrap(packets.first), type: 2, code: 0, field: 1280, from: Self.tunnelSource,
                            to: IPv6Address(Lab.clientAddress)!, quoting: invoking)
        XCTAssertEqual(lab.receivedOnLAN().map(\.0), [12])
        XCTAssertEqual(try datapath.counters().packetTooBig, 1)
    }

    /// Six at once per destination, then one per interval (inet_peer_xrlim_allow); Packet
    /// Too Big is exempt, as with the kernel's default ratemask.
    func testRateLimitPerDestination() throws {
        let (lab, datapath) = try gateway(ICMPErrorSettings(lanSource: Self.lanSource, tunnelSource: Self.tunnelSource,
                                                            tunnelMTU: 1420, intervalMilliseconds: 60_000))
        for sequence in UInt32(0)..<10 { try lab.sendFromLAN(sequence: sequence, hopLimit: 1) }
        // Another destination has its own bucket.
        let other = "2001:db8:1::11"
        for sequence in UInt32(20)..<22 {
            try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC,
                                                 Packet.test(from: other, to: Lab.clientAddress, hopLimit: 1, sequence: sequence)))
        }
        for sequence in UInt32(30)..<40 {
            try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC,
                                                 Packet.big(from: Lab.hostAddress, to: Lab.clientAddress, length: 1500, sequence: sequence)))
        }
        let errors = lab.capture.drain().filter { $0.count > 62 && $0[20] == 58 }
            .map { (type: $0[54], destination: IPv6Address(bytes: $0[(14 + 24)..<(14 + 40)])!) }
        XCTAssertEqual(errors.filter { $0.type == 3 && $0.destination == IPv6Address(Lab.hostAddress)! }.count, 6)
        XCTAssertEqual(errors.filter { $0.type == 3 && $0.destination == IPv6Address(other)! }.count, 2)
        XCTAssertEqual(errors.filter { $0.type == 2 }.count, 10)
        let counters = try datapath.counters()
        XCTAssertEqual(counters.timeExceeded, 8)
        XCTAssertEqual(counters.rateLimited, 4)
        XCTAssertEqual(counters.packetTooBig, 10)
    }

    /// Spoofed sources each have a fresh bucket; the global one (1000/s, bursts of 50, as
    /// net.ipv4.icmp_msgs_per_sec and icmp_msgs_burst) still holds the flood.
    func testGlobalRateLimitHoldsAFloodFromManySources() throws {
        let (lab, datapath) = try gateway(ICMPErrorSettings(lanSource: Self.lanSource, tunnelSource: Self.tunnelSource))
        let start = DispatchTime.now()
        for sequence in UInt32(0)..<200 {
            let source = "2001:db8:1::1:\(String(sequence, radix: 16))"
            try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC,
                                                 Packet.test(from: source, to: Lab.clientAddress, hopLimit: 1, sequence: sequence)))
        }
        let elapsedMilliseconds = Int((DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1_000_000)
        _ = lab.capture.drain()
        let counters = try datapath.counters()
        XCTAssertEqual(counters.timeExceeded + counters.rateLimited, 200)
        XCTAssertGreaterThanOrEqual(counters.timeExceeded, 50)
        XCTAssertLessThanOrEqual(counters.timeExceeded, UInt64(50 + elapsedMilliseconds + 1), "one more per millisecond after the burst")
    }

    /// Without a source for a side nothing is sent to it: expired packets go to the stack (which
    /// drops them), oversized ones go on.
    func testNoSourceSendsNothing() throws {
        let (lab, datapath) = try gateway(ICMPErrorSettings(tunnelSource: Self.tunnelSource, tunnelMTU: 1420))
        try lab.sendFromLAN(sequence: 1, hopLimit: 1)
        try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC,
                                             Packet.big(from: Lab.hostAddress, to: Lab.clientAddress, length: 1500, sequence: 2)))
        XCTAssertTrue(lab.capture.drain().filter { $0.count > 54 && $0[20] == 58 && $0[54] < 128 }.isEmpty)
        XCTAssertEqual(lab.receivedOnTunnel().map(\.0), [2])
        let counters = try datapath.counters()
        XCTAssertEqual(counters.hopLimitExpired, 1)
        XCTAssertEqual(counters.timeExceeded + counters.packetTooBig + counters.errors, 0)
    }

    /// RFC 4443 2.4 (e): never an error about an ICMPv6 error, nor to a multicast source.
    func testNoErrorAboutAnError() throws {
        let (lab, datapath) = try gateway()
        let unreachable = Packet.ipv6(from: Lab.hostAddress, to: Lab.clientAddress, hopLimit: 1, nextHeader: 58,
                                      payload: [1, 3, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 40))
        try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC, unreachable))
        let echo = Packet.ipv6(from: Lab.hostAddress, to: Lab.clientAddress, hopLimit: 1, nextHeader: 58,
                               payload: [128, 0, 0, 0, 0, 1, 0, 1])
        try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC, echo))
        _ = lab.capture.drain()
        XCTAssertEqual(try datapath.counters().timeExceeded, 1, "only the echo request gets one")
    }

    /// The ICMPv6 header looked for behind extension headers (the kernel's is_ineligible): an
    /// error behind Destination Options gets nothing, an echo request behind them does, and so
    /// does a fragment other than the first (it carries no ICMPv6 header to look at).
    func testNoErrorAboutAnErrorBehindExtensionHeaders() throws {
        let (lab, datapath) = try gateway()
        let options: [UInt8] = [1, 0] + [1, 4, 0, 0, 0, 0]  // PadN over the 6 bytes left
        let unreachable = Packet.ipv6(from: Lab.hostAddress, to: Lab.clientAddress, hopLimit: 1, nextHeader: 60,
                                      payload: [58] + options.dropFirst() + [1, 3, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 40))
        let echo = Packet.ipv6(from: Lab.hostAddress, to: Lab.clientAddress, hopLimit: 1, nextHeader: 60,
                               payload: [58] + options.dropFirst() + [128, 0, 0, 0, 0, 1, 0, 1])
        // Hop-by-hop, then a fragment at offset 8 whose payload starts like an error.
        let later = Packet.ipv6(from: Lab.hostAddress, to: Lab.clientAddress, hopLimit: 1, nextHeader: 0,
                                payload: [44, 0, 1, 4, 0, 0, 0, 0] + [58, 0, 0, 8, 0, 0, 0, 1] + [1, 3, 0, 0, 0, 0, 0, 0])
        for packet in [unreachable, echo, later] {
            try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC, packet))
        }
        let errors = lab.capture.drain().filter { $0.count > 54 && $0[20] == 58 && $0[54] == 3 }
        XCTAssertEqual(errors.count, 2, "for the echo request and the later fragment")
        XCTAssertEqual(try datapath.counters().hopLimitExpired, 3)
        XCTAssertEqual(try datapath.counters().timeExceeded, 2)
    }

    /// A router forwards nothing from a link-local, multicast, unspecified or loopback source
    /// (ip6_forward): such packets go to the stack (which, forwarding nothing, drops them).
    func testPacketsFromSourcesARouterDoesNotForwardAreNotRedirected() throws {
        let (lab, datapath) = try gateway()
        for (sequence, source) in [(1, "fe80::10"), (2, "febf::10"), (3, "ff02::1"), (4, "::"), (5, "::1"), (6, Lab.hostAddress)] {
            try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC,
                                                 Packet.test(from: source, to: Lab.clientAddress, sequence: UInt32(sequence))))
        }
        XCTAssertEqual(lab.receivedOnTunnel().map(\.0), [6])
        for (sequence, source) in [(11, "fe80::5"), (12, Lab.clientAddress)] {
            try lab.tun.write(Packet.test(from: source, to: Lab.hostAddress, sequence: UInt32(sequence)))
        }
        XCTAssertEqual(lab.receivedOnLAN().map(\.0), [12])
        XCTAssertEqual(try datapath.counters().lanToTunnel, 1)
        XCTAssertEqual(try datapath.counters().tunnelToLan, 1)
    }

    /// A LAN host's own UDP packets cross the veth with their checksum still to be filled in
    /// (CHECKSUM_PARTIAL). The error built from one keeps that state, and the stack fills the
    /// quoted checksum in at egress, after the error's: with the gateway's checksum offload
    /// off (the fill done in software, before the frame leaves) the error must still be right.
    func testErrorsAboutPacketsWithAPendingChecksumAreRightOnTheWire() throws {
        let (lab, datapath) = try gateway(ICMPErrorSettings(lanSource: Self.lanSource, tunnelSource: Self.tunnelSource, tunnelMTU: 1420))
        _ = try shell("ip", "netns", "exec", lab.gateway.name, "ethtool", "-K", "lan0", "tx", "off")
        _ = try lab.host.ip("-6", "route", "add", Lab.clientPrefix.description, "via", Lab.gatewayAddress, "dev", "host0")
        let hopLimits = try sendUDP(in: lab, hopLimit: 1, payload: 100) + (try sendUDP(in: lab, hopLimit: 64, payload: 1500 - 48))
        XCTAssertEqual(hopLimits, 2)
        let errors = lab.capture.drain().filter { $0.count > 54 && $0[12] == 0x86 && $0[13] == 0xdd && $0[20] == 58 && $0[54] < 128 }
            .map { Array($0[14...]) }
        XCTAssertEqual(errors.map { $0[40] }.sorted(), [2, 3], "Packet Too Big and Time Exceeded")
        for error in errors {
            XCTAssertEqual(ICMPError.checksum(error), 0, "type \(error[40]): checksum on the wire")
            XCTAssertEqual(error[48 + 6], 17, "quoting the UDP packet")
        }
        XCTAssertEqual(try datapath.counters().errors, 0)
    }

    /// A UDP GSO send (UDP_SEGMENT) from a LAN host crosses the veth as one aggregate; its
    /// segments are larger than the tunnel's MTU, so it gets Packet Too Big, as the forwarding
    /// path's per-segment check would send, and nothing of it enters the tunnel.
    func testPacketTooBigForAGSOAggregateWhoseSegmentsDoNotFit() throws {
        let (lab, datapath) = try gateway(ICMPErrorSettings(lanSource: Self.lanSource, tunnelSource: Self.tunnelSource, tunnelMTU: 1420))
        _ = try lab.gateway.ip("link", "set", "wgt0", "mtu", "1420")
        _ = try shell("ip", "netns", "exec", lab.gateway.name, "ethtool", "-K", "lan0", "tx", "off")
        _ = try lab.host.ip("-6", "route", "add", Lab.clientPrefix.description, "via", Lab.gatewayAddress, "dev", "host0")
        XCTAssertEqual(try sendUDP(in: lab, hopLimit: 64, payload: 4 * 1452, segment: 1452), 1)
        XCTAssertEqual(try sendUDP(in: lab, hopLimit: 64, payload: 4 * 1300, segment: 1300), 1)
        let errors = lab.capture.drain().filter { $0.count > 54 && $0[12] == 0x86 && $0[13] == 0xdd && $0[20] == 58 && $0[54] < 128 }
            .map { Array($0[14...]) }
        XCTAssertEqual(errors.count, 1)
        if let error = errors.first {
            XCTAssertEqual(error[40], 2)
            XCTAssertEqual(error[44..<48].reduce(0) { $0 << 8 | UInt32($1) }, 1420)
            XCTAssertEqual(ICMPError.checksum(error), 0)
            XCTAssertLessThanOrEqual(error.count, 1280)
        }
        let tunnel = try lab.gateway.namespace.perform { lab.tun.drain() }.filter { $0.count > 40 && $0[6] == 17 }
        XCTAssertEqual(tunnel.count, 4, "only the segments that fit: \(tunnel.map(\.count))")
        XCTAssertTrue(tunnel.allSatisfy { $0.count == 40 + 8 + 1300 })
        XCTAssertEqual(try datapath.counters().packetTooBig, 1)
    }

    /// Sends one UDP datagram from the LAN host to the client (`segment`: with UDP_SEGMENT);
    /// returns the number of sends that succeeded.
    private func sendUDP(in lab: Lab, hopLimit: Int32, payload: Int, segment: Int32? = nil) throws -> Int {
        try lab.host.namespace.perform {
            let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
            defer { close(fd) }
            var hops = hopLimit
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_UNICAST_HOPS, &hops, socklen_t(MemoryLayout<Int32>.size))
            if var size = segment {
                guard setsockopt(fd, Int32(IPPROTO_UDP), 103 /* UDP_SEGMENT */, &size, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
                    throw TestFailure("UDP_SEGMENT: \(errno)")
                }
            }
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = UInt16(9).bigEndian
            withUnsafeMutableBytes(of: &address.sin6_addr) { $0.copyBytes(from: IPv6Address(Lab.clientAddress)!.bytes) }
            let data = [UInt8](repeating: 0x5a, count: payload)
            let sent = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, data, data.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
            guard sent == payload else { throw TestFailure("sendto: \(sent), errno \(errno)") }
            return 1
        }
    }
}

extension Packet {
    /// A test packet of `length` bytes in all (IPv6 header included), numbered like `test`.
    static func big(from source: String, to destination: String, length: Int, sequence: UInt32) -> [UInt8] {
        let head = marker + withUnsafeBytes(of: sequence.bigEndian, Array.init)
        let filler = (0..<(length - 40 - head.count)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        return ipv6(from: source, to: destination, payload: head + filler)
    }
}

enum ICMPError {
    /// Checks an ICMPv6 error (bare IPv6) field by field, its checksum summed here, and that it
    /// quotes the invoking packet from its first byte as far as 1280 bytes allow.
    static func check(_ packet: [UInt8], type: UInt8, code: UInt8, field: UInt32, from source: IPv6Address,
                      to destination: IPv6Address, quoting invoking: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws {
        guard packet.count >= 48 else { return XCTFail("\(packet.count) bytes", file: file, line: line) }
        XCTAssertLessThanOrEqual(packet.count, 1280, file: file, line: line)
        XCTAssertEqual(packet[0] >> 4, 6, file: file, line: line)
        XCTAssertEqual(Int(packet[4]) << 8 | Int(packet[5]), packet.count - 40, "payload length", file: file, line: line)
        XCTAssertEqual(packet[6], 58, "next header", file: file, line: line)
        XCTAssertEqual(packet[7], 64, "hop limit", file: file, line: line)
        XCTAssertEqual(IPv6Address(bytes: packet[8..<24]), source, file: file, line: line)
        XCTAssertEqual(IPv6Address(bytes: packet[24..<40]), destination, file: file, line: line)
        XCTAssertEqual(packet[40], type, file: file, line: line)
        XCTAssertEqual(packet[41], code, file: file, line: line)
        XCTAssertEqual(packet[44..<48].reduce(0) { $0 << 8 | UInt32($1) }, field, file: file, line: line)
        XCTAssertEqual(checksum(packet), 0, "the checksum over the pseudo-header and message", file: file, line: line)
        let quote = Array(packet[48...])
        XCTAssertEqual(quote.count, min(invoking.count, 1280 - 48), file: file, line: line)
        XCTAssertEqual(quote, Array(invoking.prefix(quote.count)), "quote", file: file, line: line)
    }

    /// RFC 1071 over the RFC 8200 pseudo-header and the ICMPv6 message; 0 when it is correct.
    static func checksum(_ packet: [UInt8]) -> UInt16 {
        let message = Array(packet[40...])
        let length = UInt32(message.count)
        var bytes = Array(packet[8..<40]) + withUnsafeBytes(of: length.bigEndian, Array.init) + [0, 0, 0, 58] + message
        if bytes.count % 2 == 1 { bytes.append(0) }
        var sum: UInt32 = 0
        for index in stride(from: 0, to: bytes.count, by: 2) { sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1]) }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }
}
