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
        let program = bpf_obj_get("\(second.pinDirectory)/lan_ingress")
        XCTAssertGreaterThanOrEqual(program, 0)
        defer { close(program) }
        for (label, destination, verdict) in [("redirected", "2001:db8:2::2710", 7), ("passed (no match)", "2001:db8:3::1", -1)] {
            let frame = Packet.ethernet(to: [0, 0, 0, 0, 0, 0], from: lab.hostMAC,
                                        Packet.test(from: Lab.hostAddress, to: destination, hopLimit: 255, sequence: 1))
            var total: UInt64 = 0
            let rounds = 2000
            for _ in 0..<rounds {
                let (result, retval, duration) = programTestRun(program, frame, repeat: 250)
                XCTAssertEqual(result, 0)
                XCTAssertEqual(retval, verdict, label)
                total += UInt64(duration)
            }
            lines.append("lan_ingress, \(label), 10k prefixes".padding(toLength: 48, withPad: " ", startingAt: 0)
                         + String(format: "%9d ns/packet", Int(total / UInt64(rounds))))
        }
        print("datapath timings:\n" + lines.joined(separator: "\n"))
    }
}

/// One BPF_PROG_TEST_RUN: (status, the program's verdict, average ns per repetition).
private func programTestRun(_ program: Int32, _ frame: [UInt8], repeat count: Int32) -> (Int32, Int, UInt32) {
    var input = frame
    var output = [UInt8](repeating: 0, count: 256)
    var opts = bpf_test_run_opts()
    opts.sz = MemoryLayout<bpf_test_run_opts>.size
    opts.repeat = count
    opts.data_size_in = UInt32(input.count)
    opts.data_size_out = UInt32(output.count)
    let result = input.withUnsafeMutableBytes { inputBytes in
        output.withUnsafeMutableBytes { outputBytes in
            opts.data_in = UnsafeRawPointer(inputBytes.baseAddress)
            opts.data_out = outputBytes.baseAddress
            return bpf_prog_test_run_opts(program, &opts)
        }
    }
    return (result, Int(Int32(bitPattern: opts.retval)), opts.duration)
}
