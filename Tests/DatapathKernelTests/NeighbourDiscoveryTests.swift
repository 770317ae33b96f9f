import CBPF
import Datapath
import Foundation
import Netlink
import TestSupport
import XCTest

/// `ndp: datapath` (bpf/ndp.h): lan_ingress turns a Neighbor Solicitation for a client into
/// the Neighbor Advertisement, run with BPF_PROG_TEST_RUN against golden frames (written out
/// by hand from RFC 4861 4.3/4.4, checksums by an independent implementation); anything else
/// leaves the program as it came.
///
/// Test runs see a frame as arriving on loopback, whose MAC is all zeros: a unicast
/// solicitation is sent to that MAC to count as the gateway's own (PACKET_HOST).
final class NeighbourDiscoveryTests: XCTestCase {
    static let lanMAC: [UInt8] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
    static let hostMAC = "02 00 00 00 00 10"
    /// A client inside the LAN prefix; the lab's clients map also holds 2001:db8:2::/64.
    static let client = IPPrefix("2001:db8:1::105/128")!

    // Layers separated by "|": Ethernet | IPv6 | ICMPv6 header, target | options.
    /// From 2001:db8:1::10 to the client itself (neighbour unreachability detection).
    static let unicastSolicitation = frame("""
        00 00 00 00 00 00  \(hostMAC)  86 dd |
        60 00 00 00  00 20 3a ff  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 00 10  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 01 05 |
        87 00 ea 4b  00 00 00 00  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 01 05 |
        01 01 \(hostMAC)
        """)
    /// Address resolution: to the client's solicited-node group ff02::1:ff00:105.
    static let multicastSolicitation = frame("""
        33 33 ff 00 01 05  \(hostMAC)  86 dd |
        60 00 00 00  00 20 3a ff  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 00 10  ff 02 00 00 00 00 00 00 00 00 00 01 ff 00 01 05 |
        87 00 1a 01  00 00 00 00  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 01 05 |
        01 01 \(hostMAC)
        """)
    /// Duplicate address detection: from ::, no source link-layer option.
    static let dadSolicitation = frame("""
        33 33 ff 00 01 05  \(hostMAC)  86 dd |
        60 00 00 00  00 18 3a ff  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ff 02 00 00 00 00 00 00 00 00 00 01 ff 00 01 05 |
        87 00 4a e4  00 00 00 00  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 01 05
        """)
    /// The answer to either of the first two: to the host, from the client's address, Solicited
    /// and Override set (Router clear), the LAN's MAC as target link-layer address.
    static let advertisement = frame("""
        \(hostMAC)  02 11 22 33 44 55  86 dd |
        60 00 00 00  00 20 3a ff  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 01 05  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 00 10 |
        88 00 21 c2  60 00 00 00  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 01 05 |
        02 01 02 11 22 33 44 55
        """)
    /// The answer to duplicate address detection: to all nodes (ff02::1, 33:33:00:00:00:01),
    /// Override only (RFC 4861 7.2.4: not "solicited").
    static let dadAdvertisement = frame("""
        33 33 00 00 00 01  02 11 22 33 44 55  86 dd |
        60 00 00 00  00 20 3a ff  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 01 05  ff 02 00 00 00 00 00 00 00 00 00 00 00 00 00 01 |
        88 00 90 88  20 00 00 00  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 01 05 |
        02 01 02 11 22 33 44 55
        """)

    static func frame(_ text: String) -> [UInt8] {
        text.split(whereSeparator: { $0 == " " || $0 == "|" || $0 == "\n" }).map { UInt8($0, radix: 16)! }
    }

    private var lab: Lab!
    private var datapath: Datapath!
    private var program: Int32 = -1

    override func setUpWithError() throws {
        lab = try Lab(for: self)
        datapath = try lab.datapath()
        try lab.attach(datapath)
        try lab.configureEntries(datapath)
        try datapath.set(.redirect, for: Self.client, in: .clients)
        XCTAssertTrue(try datapath.configure(NeighbourDiscoverySettings(answersSolicitations: true, lanMAC: Self.lanMAC)))
        XCTAssertEqual(try datapath.neighbourDiscoverySettings(),
                       NeighbourDiscoverySettings(answersSolicitations: true, lanMAC: Self.lanMAC))
        program = bpf_obj_get("\(datapath.pinDirectory)/lan_ingress")
        XCTAssertGreaterThanOrEqual(program, 0)
    }

    override func tearDown() {
        if program >= 0 { close(program) }
    }

    /// Runs lan_ingress once on `frame`: its verdict and the frame as it left.
    private func run(_ frame: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> (Int, [UInt8]) {
        let (status, verdict, _, output) = programTestRun(program, frame, repeat: 1)
        XCTAssertEqual(status, 0, "BPF_PROG_TEST_RUN", file: file, line: line)
        return (verdict, output)
    }

    private func assertAnswered(_ solicitation: [UInt8], with expected: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let (verdict, output) = run(solicitation, file: file, line: line)
        XCTAssertEqual(verdict, 7, "TC_ACT_REDIRECT (back out of the LAN)", file: file, line: line)
        XCTAssertEqual(output.count, 86, file: file, line: line)
        XCTAssertEqual(output, expected, "\n got \(hex(output))\nwant \(hex(expected))", file: file, line: line)
        XCTAssertEqual(ICMPError.checksum(Array(output.dropFirst(14))), 0, "checksum", file: file, line: line)
    }

    private func assertPassed(_ frame: [UInt8], _ why: String, file: StaticString = #filePath, line: UInt = #line) {
        let (verdict, output) = run(frame, file: file, line: line)
        XCTAssertEqual(verdict, -1, "\(why): TC_ACT_UNSPEC, to the kernel", file: file, line: line)
        XCTAssertEqual(output, frame, "\(why): untouched", file: file, line: line)
    }

    func testTheGoldenFramesCarryCorrectChecksums() {
        for frame in [Self.unicastSolicitation, Self.multicastSolicitation, Self.dadSolicitation, Self.advertisement, Self.dadAdvertisement] {
            XCTAssertEqual(ICMPError.checksum(Array(frame.dropFirst(14))), 0, hex(frame))
        }
    }

    func testUnicastSolicitationIsAnswered() throws {
        assertAnswered(Self.unicastSolicitation, with: Self.advertisement)
        XCTAssertEqual(try datapath.counters().solicitationsAnswered, 1)
    }

    func testSolicitedNodeMulticastSolicitationIsAnswered() throws {
        assertAnswered(Self.multicastSolicitation, with: Self.advertisement)
        XCTAssertEqual(try datapath.counters().solicitationsAnswered, 1)
    }

    func testDuplicateAddressDetectionIsAnsweredToAllNodes() throws {
        assertAnswered(Self.dadSolicitation, with: Self.dadAdvertisement)
        XCTAssertEqual(try datapath.counters().solicitationsAnswered, 1)
    }

    /// A target that is no client, the gateway's own address (its pass entry), and a client
    /// outside the LAN prefix: the kernel decides.
    func testOtherTargetsGoToTheKernel() throws {
        for (target, why) in [("2001:db8:1::99", "not in the clients map"), ("2001:db8:1::1", "the gateway's own address"),
                              ("2001:db8:2::5", "a client outside the LAN prefix")] {
            assertPassed(Self.solicitation(for: target), why)
        }
        // The same builder's frame for the client is answered: the cases differ in the target only.
        XCTAssertEqual(run(Self.solicitation(for: "2001:db8:1::105")).0, 7)
        XCTAssertEqual(try datapath.counters().solicitationsAnswered, 1)
    }

    /// RFC 4861 7.1.1: whatever fails validation is not answered (the kernel drops it).
    func testMalformedSolicitationsGoToTheKernel() throws {
        var frame = Self.multicastSolicitation
        assertPassed(Array(frame.prefix(70)), "truncated inside the target")
        assertPassed(Array(frame.prefix(frame.count - 8)), "IPv6 payload length beyond the frame")
        frame[80] ^= 0x01
        assertPassed(frame, "wrong checksum")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", hopLimit: 64), "hop limit not 255")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", code: 1), "code not 0")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", options: [1, 0, 0, 0, 0, 0, 0, 0]), "an option of length 0")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", options: [1, 2, 0, 0, 0, 0, 0, 0]), "an option past the end")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", source: "::", options: [1, 1, 2, 0, 0, 0, 0, 0x10]),
                     "from :: with a source link-layer option")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", destination: "2001:db8:1::10"), "to neither the target nor its group")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", destination: "2001:db8:1::105", source: "::"),
                     "duplicate address detection sent unicast")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", ethernetDestination: [0x02, 0, 0, 0, 0, 0x99]),
                     "a frame for another host (PACKET_OTHERHOST)")
        // What ip6_rcv_core drops before neighbour discovery: answering would put an
        // advertisement to ff02::1 or ::1 on the wire.
        assertPassed(Self.solicitation(for: "2001:db8:1::105", source: "ff02::1"), "from a multicast source")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", source: "::1"), "from loopback")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", destination: "::1"), "to loopback")
        var version4 = Self.solicitation(for: "2001:db8:1::105")
        version4[14] = 0x40 | (version4[14] & 0x0f)
        assertPassed(version4, "IP version 4 in the IPv6 header")
        XCTAssertEqual(try datapath.counters().solicitationsAnswered, 0)
    }

    /// `ndp: kernel`: the program leaves every solicitation alone.
    func testNothingIsAnsweredWhenTheKernelAnswers() throws {
        XCTAssertTrue(try datapath.configure(NeighbourDiscoverySettings()))
        assertPassed(Self.multicastSolicitation, "ndp: kernel")
        assertPassed(Self.dadSolicitation, "ndp: kernel")
        XCTAssertEqual(try datapath.counters().solicitationsAnswered, 0)
    }

    /// `ndp: kernel` with the LAN's MAC: only a solicitation sent to the client's address
    /// itself (a reachability probe) is answered; address resolution is the proxy entries'.
    func testKernelModeAnswersUnicastProbesOnly() throws {
        let probes = NeighbourDiscoverySettings(answersUnicastProbes: true, lanMAC: Self.lanMAC)
        XCTAssertTrue(try datapath.configure(probes))
        XCTAssertEqual(try datapath.neighbourDiscoverySettings(), probes)
        XCTAssertFalse(probes.answersSolicitations)
        assertAnswered(Self.unicastSolicitation, with: Self.advertisement)
        assertPassed(Self.multicastSolicitation, "to the solicited-node group")
        assertPassed(Self.dadSolicitation, "duplicate address detection")
        assertPassed(Self.solicitation(for: "2001:db8:1::105", ethernetDestination: [0, 0, 0, 0, 0, 0]),
                     "to the group in a frame to the gateway's MAC")
        assertPassed(Self.solicitation(for: "2001:db8:1::106", destination: "2001:db8:1::106"), "not a client")
        XCTAssertEqual(try datapath.counters().solicitationsAnswered, 1)
    }

    /// A solicitation built here (checksum by `ICMPError.checksum`), for the cases that vary one field.
    static func solicitation(for target: String, destination: String? = nil, source: String = "2001:db8:1::10",
                             hopLimit: UInt8 = 255, code: UInt8 = 0, options: [UInt8]? = nil,
                             ethernetDestination: [UInt8]? = nil) -> [UInt8] {
        let targetAddress = IPv6Address(target)!
        let group = targetAddress.solicitedNodeGroup
        let options = options ?? ([1, 1] + frame(hostMAC))
        var message: [UInt8] = [135, code, 0, 0, 0, 0, 0, 0] + targetAddress.bytes + options
        var packet = Packet.ipv6(from: source, to: destination ?? group.description, hopLimit: hopLimit, nextHeader: 58, payload: message)
        let sum = ICMPError.checksum(packet)
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        packet = Array(packet.prefix(40)) + message
        let mac = ethernetDestination ?? (destination == nil ? [0x33, 0x33] + group.bytes.suffix(4) : [0, 0, 0, 0, 0, 0])
        return Packet.ethernet(to: mac, from: frame(hostMAC), packet)
    }
}

private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
