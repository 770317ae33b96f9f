@testable import Netlink
import XCTest

/// The dump state machine, fed the replies a kernel sends (the real kernel cannot be made to
/// interrupt a dump on cue; the kernel tier covers real dumps under concurrent change).
final class DumpCollectorTests: XCTestCase {
    private let multi: UInt16 = 2        // NLM_F_MULTI
    private let interrupted: UInt16 = 16 // NLM_F_DUMP_INTR

    private func item(_ value: UInt8, flags: UInt16 = 2, sequence: UInt32 = 7) -> Message {
        Message(type: 100, flags: flags, sequence: sequence, portID: 0, payload: [value])
    }

    private func done(flags: UInt16 = 2, status: Int32 = 0) -> Message {
        Message(type: 3, flags: flags, sequence: 7, portID: 0, payload: withUnsafeBytes(of: status, Array.init))
    }

    private let decode: (Message) throws -> UInt8? = { $0.payload.first }

    func testCollectsAcrossDatagramsUntilDone() throws {
        var collector = DumpCollector<UInt8>(sequence: 7, context: "dump")
        guard case .more = try collector.feed([item(1), item(2)], decode: decode) else { return XCTFail() }
        guard case .done(let items) = try collector.feed([item(3), done()], decode: decode) else { return XCTFail() }
        XCTAssertEqual(items, [1, 2, 3])
    }

    func testIgnoresOtherSequences() throws {
        var collector = DumpCollector<UInt8>(sequence: 7, context: "dump")
        guard case .done(let items) = try collector.feed([item(9, sequence: 6), item(1), done()], decode: decode) else { return XCTFail() }
        XCTAssertEqual(items, [1])
    }

    func testInterruptedFlagOnAnyReplyMeansRedo() throws {
        var collector = DumpCollector<UInt8>(sequence: 7, context: "dump")
        _ = try collector.feed([item(1), item(2, flags: multi | interrupted)], decode: decode)
        guard case .interrupted = try collector.feed([item(3), done()], decode: decode) else { return XCTFail() }
    }

    func testInterruptedFlagOnDone() throws {
        var collector = DumpCollector<UInt8>(sequence: 7, context: "dump")
        guard case .interrupted = try collector.feed([item(1), done(flags: multi | interrupted)], decode: decode) else { return XCTFail() }
    }

    func testErrorStatusInDoneIsThrown() {
        var collector = DumpCollector<UInt8>(sequence: 7, context: "dump routes")
        XCTAssertThrowsError(try collector.feed([done(status: -95)], decode: decode)) { error in
            XCTAssertEqual((error as? NetlinkError)?.errno?.rawValue, 95)
            XCTAssertTrue("\(error)".hasPrefix("dump routes: "))
        }
    }

    /// A reply that does not decode is thrown once the dump is over, so that the rest of the
    /// dump is read (the kernel runs one dump per socket at a time); the first one is thrown.
    func testADecodeErrorIsThrownAtTheEndOfTheDump() throws {
        struct Refused: Error, Equatable { var value: UInt8 }
        let refusing: (Message) throws -> UInt8? = { if $0.payload.first! >= 2 { throw Refused(value: $0.payload.first!) }; return $0.payload.first }
        var collector = DumpCollector<UInt8>(sequence: 7, context: "dump")
        guard case .more = try collector.feed([item(1), item(2)], decode: refusing) else { return XCTFail("thrown before the dump's end") }
        guard case .more = try collector.feed([item(3)], decode: refusing) else { return XCTFail("thrown before the dump's end") }
        XCTAssertThrowsError(try collector.feed([item(4), done()], decode: refusing)) { XCTAssertEqual($0 as? Refused, Refused(value: 2)) }
        // Interrupted: the dump is done again, whatever did not decode in it.
        var again = DumpCollector<UInt8>(sequence: 7, context: "dump")
        guard case .interrupted = try again.feed([item(2), done(flags: multi | interrupted)], decode: refusing) else { return XCTFail() }
    }
}
