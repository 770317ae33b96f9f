import Foundation
import XCTest

/// Reads a captured datagram (see Fixtures/capture.sh): hex bytes, `#` lines are comments.
func fixture(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> [UInt8] {
    let url = try XCTUnwrap(Bundle.module.url(forResource: name, withExtension: "hex", subdirectory: "Fixtures"),
                            "fixture \(name).hex is missing", file: file, line: line)
    let text = try String(contentsOf: url, encoding: .utf8)
    return text.split(separator: "\n").filter { !$0.hasPrefix("#") }
        .flatMap { $0.split(separator: " ") }
        .map { UInt8($0, radix: 16)! }
}

/// The sequence number a captured request was sent with (bytes 8..<12, little endian).
func sequence(of bytes: [UInt8]) -> UInt32 {
    bytes[8..<12].reversed().reduce(0) { $0 << 8 | UInt32($1) }
}

func hex(_ bytes: [UInt8]) -> String {
    stride(from: 0, to: bytes.count, by: 16).map { row in
        bytes[row..<min(row + 16, bytes.count)].map { String(format: "%02x", $0) }.joined(separator: " ")
    }.joined(separator: "\n")
}
