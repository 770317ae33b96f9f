@testable import Config
import Foundation
import Netlink
import XCTest

/// The digests a parse takes of `peers` items from their text (`Tree.itemDigest`): equal
/// exactly where the node walk's are, or absent.
final class ItemDigestTests: XCTestCase {
    /// Each scalar's text found at the byte offsets the reader gives for its event, through a
    /// byte order mark, CR LF, two- and three-byte characters and a line separator.
    func testEventOffsetsAreBytesWhereLibyamlCountsCharacters() {
        let text = "\u{FEFF}# é\r\nk: [\"ü\u{2028}x\", y, ☃é]\r\nl: zz\n"
        XCTAssertEqual(Self.scalarTexts(text), ["k", "\"ü\u{2028}x\"", "y", "☃é", "l", "zz"])
    }

    /// The text between the byte offsets the reader gives for each scalar's event.
    static func scalarTexts(_ text: String) -> [String] {
        var found: [String] = []
        Array(text.utf8).withUnsafeBufferPointer { bytes in
            YAMLEventReader.read(bytes) { reader in
                while let event = try? reader.next() {
                    if case .streamEnd = event { break }
                    guard case .node(.scalar, _) = event else { continue }
                    found.append(String(decoding: bytes[reader.startOffset ..< reader.endOffset], as: UTF8.self))
                }
            }
        }
        return found
    }

    /// The items' digests of a parse with them, in order (nil: none taken from the text).
    private func digests(_ text: String) -> [ReadDigest?] {
        var budget = Tree.Budget(.standard)
        var errors = ConfigErrorList(limit: 10)
        var bytes = Array(text.utf8)
        let tree = bytes.withUnsafeMutableBufferPointer { Tree.parse(UnsafeBufferPointer($0), file: "f.yaml", itemDigests: true, budget: &budget, errors: &errors) }
        guard let items = tree?.lookup("wireguard", "wg0", "peers")?.items else {
            XCTFail("no peers in \(text)")
            return []
        }
        return items.map { $0.storage.itemDigest($0.index) }
    }

    private func peers(_ items: [String], indent: String = "    ") -> String {
        "wireguard:\n  wg0:\n\(indent)peers:\n" + items.map { "\(indent)  - \($0)\n" }.joined()
    }

    func testEqualTextAtTheSamePlaceHasTheSameDigestAndADifferentOneElsewhere() {
        let a = digests(peers(["{name: a}", "{name: b}", "{name: c}"]))
        XCTAssertEqual(a.count, 3)
        XCTAssertTrue(a.allSatisfy { $0 != nil })
        XCTAssertEqual(a, digests(peers(["{name: a}", "{name: b}", "{name: c}"])))
        XCTAssertEqual(a, digests(peers(["{name: a}", "{name: b}", "{name: c}"]) + "# after\n"))
        // Another line, another column, another text (another file's are never compared).
        XCTAssertNotEqual(a[1], digests("\n" + peers(["{name: a}", "{name: b}", "{name: c}"]))[1])
        XCTAssertNotEqual(a[1], digests(peers(["{name: a}", " {name: b}", "{name: c}"]))[1])
        XCTAssertEqual(a[0], digests(peers(["{name: a}", "{name:  b}", "{name: c}"]))[0])
        XCTAssertNotEqual(a[1], digests(peers(["{name: a}", "{name:  b}", "{name: c}"]))[1])
        // The item at the same place in a list that starts elsewhere: not told from its text.
        let moved = digests("wireguard:\n  wg0:\n    peers:\n    -   {name: a}\n")
        XCTAssertNotEqual(digests(peers(["{name: a}"]))[0], moved[0])
    }

    /// Characters of several bytes, a byte order mark and CR LF before an item move its bytes,
    /// not its place: the same digest.
    func testBytesBeforeAnItemDoNotCount() {
        let items = ["{name: a}", "{name: b}"]
        let plain = digests("# x\n" + peers(items))
        XCTAssertEqual(plain, digests("\u{FEFF}# x\n" + peers(items)))
        XCTAssertEqual(plain, digests("# x\r\n" + peers(items)))
        XCTAssertEqual(plain[1], digests("# x\n" + peers(["{name: é}", "{name: b}"]))[1])
        XCTAssertNotEqual(plain[0], digests("# x\n" + peers(["{name: é}", "{name: b}"]))[0])
    }

    /// An item holding an alias, or one that is an alias, is left to the node walk; its anchor
    /// in another item does not keep that one from its text digest.
    func testItemsWithAliasesHaveNoTextDigest() {
        let d = digests(peers(["{name: a, allowed_ips: &ips [x]}", "{name: b, allowed_ips: *ips}", "&c {name: c}", "*c", "{name: d}"]))
        XCTAssertNotNil(d[0])
        XCTAssertNil(d[1])
        XCTAssertNotNil(d[2])
        XCTAssertNil(d[3])
        XCTAssertNotNil(d[4])
    }

    /// Only mappings that are items of a `peers` list get one, and only when asked for.
    func testOnlyPeersItemsAndOnlyWhenAsked() {
        var budget = Tree.Budget(.standard)
        var errors = ConfigErrorList(limit: 10)
        let text = peers(["{name: a}"]) + "routes: [{destination: x}]\n"
        var bytes = Array(text.utf8)
        let tree = bytes.withUnsafeMutableBufferPointer { Tree.parse(UnsafeBufferPointer($0), file: "f", itemDigests: true, budget: &budget, errors: &errors) }
        XCTAssertEqual(tree?.storage.itemDigests.count, 1)
        XCTAssertEqual(Tree.parse(text, file: "f", budget: &budget, errors: &errors)?.storage.itemDigests.count, 0)
    }
}
