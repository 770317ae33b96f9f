import CBPF
@testable import Datapath
import Foundation
import Netlink
import TestSupport
import XCTest

/// 10 000 client entries written at once: one BPF_MAP_UPDATE_BATCH where the kernel takes it on
/// an LPM trie, one update each otherwise; the maps hold the same either way.
final class BatchUpdateTests: XCTestCase {
    private let prefixes = (0..<10_000).map { IPPrefix("2001:db8:1::\(String($0 >> 16 + 1, radix: 16)):\(String($0 & 0xffff, radix: 16))/128")! }

    private func write(batch: Bool?) throws -> (Duration, [IPPrefix: PrefixAction], Bool?) {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath()
        Datapath.batchUpdates = batch
        defer { Datapath.batchUpdates = nil }
        let start = ContinuousClock.now
        let failed = datapath.set(.redirect, for: prefixes, in: .clients)
        let took = ContinuousClock.now - start
        XCTAssertEqual(failed.count, 0, "\(failed.first.map { "\($0.key): \($0.value)" } ?? "")")
        return (took, try datapath.entries(in: .clients), Datapath.batchUpdates)
    }

    func testTenThousandEntriesBatchedAndOneByOneHoldTheSame() throws {
        let wanted = Dictionary(uniqueKeysWithValues: prefixes.map { ($0, PrefixAction.redirect) })
        let (batched, viaBatch, supported) = try write(batch: nil)
        let (single, oneByOne, _) = try write(batch: false)
        XCTAssertEqual(viaBatch, wanted)
        XCTAssertEqual(oneByOne, wanted)
        print("batch lookups: \(Datapath.batchLookups.map { $0 ? "taken" : "refused" } ?? "not tried")")
        print("10 000 LPM entries: \(supported == true ? "batched" : "batch refused, one by one") \(batched); one by one \(single)")
    }

    /// The batched read (BPF_MAP_LOOKUP_BATCH, 4 096 a call) and the walk (get_next_key and a
    /// lookup per entry) see the same entries, across chunk boundaries and in an empty map.
    func testBatchedReadAndWalkAgree() throws {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath()
        let fd = datapath.map(PrefixMap.clients.rawValue).raw
        XCTAssertEqual(try Datapath.read(of: fd, .clients).entries(), [:])
        for count in [1, 4096, 4097, 10_000] {
            XCTAssertEqual(datapath.set(.redirect, for: Array(prefixes.prefix(count)), in: .clients).count, 0)
            let walked = try Datapath.walkedRead(of: fd, .clients)
            XCTAssertEqual(walked.count, count)
            let read = try Datapath.read(of: fd, .clients)
            XCTAssertEqual(try read.entries(), try walked.entries())
            // Same entries, same bytes in the same order: the poll's digest does not depend on how it read.
            XCTAssertEqual(read.digest, walked.digest)
        }
        let start = ContinuousClock.now
        _ = try Datapath.read(of: fd, .clients).entries()
        let batched = ContinuousClock.now - start
        let walkStart = ContinuousClock.now
        _ = try Datapath.walkedRead(of: fd, .clients).entries()
        print("read 10 000 LPM entries: \(Datapath.batchLookups == true ? "batched" : "walked (batch refused)") \(batched); walked \(ContinuousClock.now - walkStart)")
    }

    /// An entry the kernel refuses in the middle of a batch: the ones before it are written, it
    /// fails alone, the ones after it are still written.
    func testAFailureInsideABatchFailsOnlyThatEntry() throws {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath()
        // An IPv4 prefix cannot be keyed at all; it fails before the kernel sees the batch.
        let mixed = Array(prefixes.prefix(10)) + [IPPrefix("192.0.2.0/24")!] + Array(prefixes[10..<20])
        let failed = datapath.set(.redirect, for: mixed, in: .clients)
        XCTAssertEqual(Array(failed.keys), [IPPrefix("192.0.2.0/24")!])
        XCTAssertEqual(Set(try datapath.entries(in: .clients).keys), Set(prefixes.prefix(20)))
    }
}
