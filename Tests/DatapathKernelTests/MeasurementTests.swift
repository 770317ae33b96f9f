import CBPF
import Datapath
import Foundation
import Netlink
import TestSupport
import XCTest

/// Timings worth knowing for the daemon's loop; printed, with loose bounds only.
final class MeasurementTests: XCTestCase {
    func testTimings() throws {
        let lab = try Lab(for: self)
        var lines: [String] = []
        func measure<T>(_ label: String, _ body: () throws -> T) rethrows -> T {
            let start = DispatchTime.now()
            let result = try body()
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
            lines.append(label.padding(toLength: 48, withPad: " ", startingAt: 0) + String(format: "%9.2f ms", ms))
            return result
        }

        let first = try measure("first start: mount, load, pin") { try lab.datapath() }
        try measure("first attach (TCX, both hooks)") { _ = try lab.attach(first) }
        let clients = Dictionary(uniqueKeysWithValues: (1...10_000).map {
            (IPPrefix("2001:db8:2::\(String($0, radix: 16))/128")!, PrefixAction.redirect)
        })
        XCTAssertEqual(try measure("synchronize 10 000 client entries (empty map)") { try first.synchronize(.clients, to: clients) }, [:])
        XCTAssertEqual(try measure("read 10 000 entries") { try first.entries(in: .clients) }.count, 10_000)
        XCTAssertEqual(try measure("synchronize 10 000 entries, no change") { try first.synchronize(.clients, to: clients) }, [:])
        let second = try measure("restart: adopt maps, load to compare tags") { try lab.datapath() }
        XCTAssertEqual(try measure("restart attach (no change)") { try lab.attach(second) }, [])
        XCTAssertTrue(try measure("state (drift check)") { try lab.state(second) }.isInSync)
        _ = try measure("counters") { try second.counters() }

        // Per-packet cost of lan_ingress, by BPF_PROG_TEST_RUN (a redirect is not carried out).
        // Repeats reuse one skb, whose hop limit the program decrements: 250 repeats from 255.
        // Test runs see the frame as arriving on loopback, whose MAC is all zeros.
        // Configured as the daemon does, so the redirect path pays for the MTU check too.
        let source = IPv6Address(Lab.gatewayAddress)!
        try second.configure(ICMPErrorSettings(lanSource: source, tunnelSource: source, tunnelMTU: 1420, intervalMilliseconds: 0))
        let program = bpf_obj_get("\(second.pinDirectory)/lan_ingress")
        XCTAssertGreaterThanOrEqual(program, 0)
        defer { close(program) }
        for (label, destination, verdict) in [("redirected", "2001:db8:2::2710", 7), ("passed (no match)", "2001:db8:3::1", -1)] {
            let frame = Packet.ethernet(to: [0, 0, 0, 0, 0, 0], from: lab.hostMAC,
                                        Packet.test(from: Lab.hostAddress, to: destination, hopLimit: 255, sequence: 1))
            var total: UInt64 = 0
            let rounds = 2000
            for _ in 0..<rounds {
                let (result, retval, duration, _) = programTestRun(program, frame, repeat: 250)
                XCTAssertEqual(result, 0)
                XCTAssertEqual(retval, verdict, label)
                total += UInt64(duration)
            }
            lines.append("lan_ingress, \(label), 10k prefixes".padding(toLength: 48, withPad: " ", startingAt: 0)
                         + String(format: "%9d ns/packet", Int(total / UInt64(rounds))))
        }
        // The error paths: each run turns its skb into the error, so one repetition per run.
        let expired = Packet.test(from: Lab.hostAddress, to: "2001:db8:2::2710", hopLimit: 1, sequence: 1)
        let tooBig = Packet.big(from: Lab.hostAddress, to: "2001:db8:2::2710", length: 1500, sequence: 2)
        for (label, packet, type, field) in [("Time Exceeded sent", expired, UInt8(3), UInt32(0)),
                                              ("Packet Too Big sent (1500 → 1280)", tooBig, 2, 1420)] {
            let frame = Packet.ethernet(to: [0, 0, 0, 0, 0, 0], from: lab.hostMAC, packet)
            var total: UInt64 = 0
            let rounds = 2000
            for round in 0..<rounds {
                let (result, retval, duration, output) = programTestRun(program, frame, repeat: 1)
                XCTAssertEqual(result, 0)
                XCTAssertEqual(retval, 7, label)
                total += UInt64(duration)
                if round == 0 {
                    XCTAssertEqual(Array(output.prefix(6)), lab.hostMAC, "\(label): back to the sender")
                    try ICMPError.check(Array(output.dropFirst(14)), type: type, code: 0, field: field, from: source,
                                        to: IPv6Address(Lab.hostAddress)!, quoting: packet)
                }
            }
            lines.append("lan_ingress, \(label)".padding(toLength: 48, withPad: " ", startingAt: 0)
                         + String(format: "%9d ns/packet", Int(total / UInt64(rounds))))
        }
        XCTAssertEqual(try second.counters().timeExceeded, 2000)
        print("datapath timings:\n" + lines.joined(separator: "\n"))
    }
}
