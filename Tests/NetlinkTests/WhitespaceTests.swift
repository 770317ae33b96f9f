import Foundation
import Netlink
import XCTest

/// Netlink's `trimmingWhitespace` against the Foundation calls it replaces.
final class WhitespaceTests: XCTestCase {
    func testTrimsLikeFoundation() {
        let texts = ["", " ", "\n", "1\n", "  1  ", "\t4096\t87380\t6291456\n", "\r\nkey=\r\n", "\u{00A0}x\u{2003}", "\u{2028}x\u{0085}",
                     "\u{000B}\u{000C}x\u{000C}", "a b", " a\nb ", "é\u{0301} ", "\u{3000}全角\u{3000}", "x\u{200B}"]
        for text in texts {
            XCTAssertEqual(text.trimmingWhitespace(), text.trimmingCharacters(in: .whitespacesAndNewlines), text.debugDescription)
            XCTAssertEqual(text.trimmingWhitespace(newlines: false), text.trimmingCharacters(in: .whitespaces), text.debugDescription)
        }
    }
}
