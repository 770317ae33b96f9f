import Daemon
import XCTest

/// The status socket's request parser: what is accepted, and that anything else is an error
/// value (never a crash), whatever the bytes.
final class StatusRequestTests: XCTestCase {
    private func parse(_ text: String) -> Result<StatusRequest, StatusRequestError> { StatusRequest.parse(Array(text.utf8)) }

    func testCommands() {
        XCTAssertEqual(parse(#"{"command":"status"}"#), .success(.status))
        XCTAssertEqual(parse(#"  { "command" : "reload" }  "#), .success(.reload))
        XCTAssertEqual(parse("{\"command\":\"status\"}\r"), .success(.status), "a CRLF line ending is whitespace")
        XCTAssertEqual(parse(#"{"id":7,"verbose":true,"x":null,"n":-1.5e3,"command":"st\u0061tus"}"#), .success(.status),
                       "other scalar members are ignored; escapes are decoded")
        XCTAssertEqual(parse(#"{"command":"stop"}"#), .failure(.unknownCommand("stop")))
    }

    func testBlankLinesAreEmpty() {
        XCTAssertEqual(parse(""), .failure(.empty))
        XCTAssertEqual(parse(" \t\r"), .failure(.empty))
    }

    func testMalformed() {
        for text in [
            "status", "{", "{}", #"{"command":"status""#, #"{"command":"status"}}"#, #"{"command":"status"} x"#,
            #"{"command":status}"#, #"{"command":["status"]}"#, #"{"command":{"a":1}}"#, #"{"command":1}"#,
            #"{"command":"status","command":"reload"}"#, #"{"command":"a\qb"}"#, #"{"command":"\ud800"}"#,
            #"{"command":"\u12"}"#, "{\"command\":\"a\u{01}\"}", #"{"command":"status",}"#, #"{"n":01,"command":"status"}"#,
            #"{"n":1.,"command":"status"}"#, #"{"n":-,"command":"status"}"#, #"["command","status"]"#, #"{"command":tru}"#,
        ] {
            guard case .failure(.malformed) = parse(text) else { return XCTFail("accepted or misclassified: \(text) → \(parse(text))") }
        }
        XCTAssertEqual(StatusRequest.parse([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), .failure(.malformed("invalid UTF-8 in a string")))
    }

    func testSizeCap() {
        let long = #"{"command":"status","pad":""# + String(repeating: "x", count: StatusRequest.maxBytes) + #""}"#
        XCTAssertEqual(parse(long), .failure(.tooLong(long.utf8.count)))
    }

    func testUnknownCommandIsEchoedBoundedAndPrintable() {
        let error = StatusRequestError.unknownCommand(String(repeating: "\u{1b}[2Jab", count: 50))
        XCTAssertFalse(error.description.contains("\u{1b}"))
        XCTAssertLessThan(error.description.count, 120)
    }

    /// Random and mutated inputs: each gives a value, none traps (a smoke test; the fuzzer goes further).
    func testRandomBytesNeverTrap() {
        var generator = SystemRandomNumberGenerator()
        let seeds = [#"{"command":"status"}"#, #"{"command":"reload","a":"\ud83d\ude00"}"#].map { Array($0.utf8) }
        for round in 0..<20_000 {
            var bytes = seeds[round % 2]
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let at = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &generator)
                case 1: bytes.remove(at: at)
                default: bytes.insert(UInt8.random(in: 0...255, using: &generator), at: at)
                }
                if bytes.isEmpty { bytes = [0x7b] }
            }
            _ = StatusRequest.parse(bytes)
        }
    }
}
