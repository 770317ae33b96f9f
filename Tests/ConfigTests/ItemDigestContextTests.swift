@testable import Config
import Foundation
import Netlink
import TestSupport
import XCTest

/// The soundness of `Tree.itemDigest` checked directly: across random documents that put
/// a small pool of item texts in many contexts (directives, document markers, a byte order
/// mark, CR LF, lists indented and written otherwise, indentless lists, anchors and tags on
/// the list, block and flow items, block scalars with indicators and chomping, multi-line
/// plain and quoted scalars, tabs, trailing comments and blanks, what follows the list or
/// nothing, a final line break or none), two items with equal text digests always have equal
/// trees, node for node and location for location (the node walk's digest).
final class ItemDigestContextTests: XCTestCase {
    private struct Rng {
        var g: SeededGenerator
        mutating func below(_ n: Int) -> Int { Int(g.next() % UInt64(n)) }
        mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
    }

    /// Item texts; `P` stands for the item's own column as spaces (its continuation lines).
    private static let items: [String] = [
        "name: a",
        "name: a\nP public_key: b",
        "name: a\nPpublic_key: b",
        "{name: a, public_key: b}",
        "{name: a,\n public_key: b}",
        "{name: a,\nP public_key: b}",
        "name: |\nP  x\nP  y",
        "name: |2\nP   x",
        "name: |1\nP   x",
        "name: |+\nP  x\n",
        "name: |+\nP  x\n\n",
        "name: |-\nP  x\n",
        "name: >\nP  a\nP  b\n",
        "name: >2-\nP    a\nP   b",
        "name: \"a\nP b\"",
        "name: 'a\n\nP b'",
        "name: a\nP b",
        "name: a\nP  b",
        "? name\nP: a",
        "&x {name: a}",
        "!!map {name: a}",
        "!!map\nPname: a",
        "&y\nPname: a",
        "name: a # c",
        "name:\ta",
        "name: a   ",
        "name: a\nP# c\nPpublic_key: b",
        "name: a\n\nPpublic_key: b",
        "name: é\nPpublic_key: ☃",
        "name: \"𝄞\u{2028}x\"",
        "name: a\u{85}Ppublic_key: b",
        "name: a\nPallowed_ips:\nP- x\nP- y",
        "name: a\nPallowed_ips:\nP  - x",
        "name: [x,\ny]",
        "name: a\nPpeers:\nP- name: b",
        "name: a\nP<<: {public_key: b}",
        "name: \"a\\\nP  b\"",
        "name: a\nP? public_key\nP: b",
        "name: !e!t a",
        "name: a\nPx: \"\\u00e9\"",
        "{name: a}   # c",
        "{ ? name : a }",
    ]

    private func render(_ r: inout Rng) -> String {
        if r.below(6) == 0 {
            // A flow document: the list's items in flow mappings at any depth.
            let items = (0..<(1 + r.below(3))).map { _ in r.pick(["{name: a}", "{name: a, public_key: b}", "name: a", "{name: é}", "{name: a,\n public_key: b}"]) }
            let list = "[" + items.joined(separator: r.pick([", ", ",\n", " ,"])) + "]"
            return r.pick(["", "# c\n", "\u{FEFF}"]) + r.pick([
                "{wireguard: {wg0: {peers: \(list)}}}\n",
                "wireguard: {wg0: {peers: \(list)}}\n",
                "wireguard:\n  wg0: {peers: \(list)}\n",
                "wireguard:\n  wg0: {x: 1, peers: \(list)}\n",
                "{wireguard: {wg0: {x: [1], peers: \(list)}}}",
            ])
        }
        var text = r.pick(["", "", "\u{FEFF}"])
        text += r.pick(["", "# c\n", "%YAML 1.1\n---\n", "%TAG !e! tag:x,2000:\n---\n", "---\n", "# é\n"])
        let dev = r.pick(["  wg0:\n", "  wg1:\n", "  wg0: &d\n", "  wg0: !!map\n"])
        text += "wireguard:\n" + dev
        let peersColumn = r.pick([4, 4, 3, 5])
        let flow = r.below(4) == 0
        text += String(repeating: " ", count: peersColumn) + "peers:" + r.pick(["", "", " &l", " !!seq", " # c"])
        let count = 1 + r.below(3)
        if flow {
            text += " ["
            for i in 0..<count {
                let item = r.pick(Self.items.filter { !$0.contains("P") && !$0.hasPrefix("name: |") && !$0.hasPrefix("name: >") })
                text += item + (i < count - 1 ? r.pick([", ", ",\n  ", " , "]) : "")
            }
            text += r.pick(["]\n", " ]\n", "\n  ]\n"])
        } else {
            text += "\n"
            let dash = peersColumn + r.pick([0, 1, 2])
            for _ in 0..<count {
                let spaces = r.pick([1, 1, 2, 3])
                let column = dash + 1 + spaces
                let pad = String(repeating: " ", count: column)
                let item = r.pick(Self.items).replacingOccurrences(of: "P", with: pad)
                text += String(repeating: " ", count: dash) + "-" + (r.below(6) == 0 ? "\t" + String(repeating: " ", count: spaces - 1) : String(repeating: " ", count: spaces))
                text += item + "\n"
                if r.below(5) == 0 { text += r.pick(["\n", "# c\n", "   \n", "  # é\n"]) }
            }
        }
        text += r.pick(["", "", "    listen_port: 1\n", "  wg2: {}\n", "gateway: {}\n", "...\n", "# end\n", "\n\n"])
        if r.below(4) == 0, text.hasSuffix("\n") { text.removeLast() }
        switch r.below(8) {
        case 0: text = text.replacingOccurrences(of: "\n", with: "\r\n")
        case 1:
            // Each line break one of LF, CR LF, CR, NEL, LS at random.
            var mixed = ""
            for c in text { mixed += c == "\n" ? r.pick(["\n", "\r\n", "\r", "\u{85}", "\u{2028}"]) : String(c) }
            text = mixed
        default: break
        }
        return text
    }

    /// Each item digest of `tree` (parsed from `text`) against those seen before: an equal one
    /// must come with an equal node walk (false, after failing, when it does not); `equalPairs`
    /// counts equal digests from different documents.
    static func compare(_ tree: Tree, text: [UInt8], seen: inout [ReadDigest: (walk: ReadDigest, text: [UInt8])],
                        equalPairs: inout Int) -> Bool {
        let walked = tree.withoutItemDigests
        for entry in tree.storage.itemDigests {
            let walk = Tree(walked.storage, entry.node).digest
            if let known = seen[entry.digest] {
                if known.text != text { equalPairs += 1 }
                if known.walk != walk {
                    XCTFail("equal text digests, different trees:\n---\n\(String(decoding: known.text, as: UTF8.self).debugDescription)\n---\n\(String(decoding: text, as: UTF8.self).debugDescription)")
                    return false
                }
            } else {
                seen[entry.digest] = (walk, text)
            }
        }
        return true
    }

    func testEqualTextDigestsOnlyForEqualTreesInRandomContexts() {
        var r = Rng(g: SeededGenerator(seed: 19))
        var seen: [ReadDigest: (walk: ReadDigest, text: [UInt8])] = [:]
        var parsed = 0, equalPairs = 0
        for _ in 0..<20000 {
            let text = render(&r)
            var budget = Tree.Budget(.standard)
            var errors = ConfigErrorList(limit: 10)
            var bytes = Array(text.utf8)
            guard let tree = bytes.withUnsafeMutableBufferPointer({
                Tree.parse(UnsafeBufferPointer($0), file: "f.yaml", itemDigests: true, budget: &budget, errors: &errors)
            }), errors.isEmpty else { continue }
            parsed += 1
            guard Self.compare(tree, text: Array(text.utf8), seen: &seen, equalPairs: &equalPairs) else { return }
        }
        XCTAssertGreaterThan(parsed, 5000, "documents parsed without an error")
        XCTAssertGreaterThan(equalPairs, 2000, "items told again by their text in another document")
        print("parsed \(parsed), equal digests in different documents \(equalPairs)")
    }

    /// Documents of the generator mutated byte by byte (YAML's indicators, spaces, breaks,
    /// multi-byte characters): parsing with item digests never traps (an item's range is read
    /// from the reader's offsets), and the tree is the one parsed without them; and equal text
    /// digests (an item whose context a mutation changed) only for equal trees.
    func testMutatedDocumentsParseAsWithoutDigests() {
        var r = Rng(g: SeededGenerator(seed: 1919))
        var seen: [ReadDigest: (walk: ReadDigest, text: [UInt8])] = [:]
        var equalPairs = 0
        let alphabet: [[UInt8]] = ["-", ":", " ", "\n", "\r", "\t", "{", "}", "[", "]", ",", "?", "&", "*", "!", "|", ">", "#", "'", "\"", "é", "☃", "𝄞", "\u{2028}", "\u{85}", "\u{FEFF}", "a", "peers"].map { Array($0.utf8) }
        var parsed = 0
        for _ in 0..<Int(ProcessInfo.processInfo.environment["ITEM_DIGEST_ROUNDS"] ?? "30000")! {
            var bytes = Array(render(&r).utf8)
            for _ in 0..<(1 + r.below(3)) {
                let at = r.below(bytes.count + 1)
                switch r.below(3) {
                case 0: bytes.insert(contentsOf: r.pick(alphabet), at: at)
                case 1: if at < bytes.count { bytes.remove(at: at) }
                default: if at < bytes.count { bytes.replaceSubrange(at ..< at + 1, with: r.pick(alphabet)) }
                }
            }
            guard String(validating: bytes, as: UTF8.self) != nil else { continue }
            var budget = Tree.Budget(.standard), plainBudget = Tree.Budget(.standard)
            var errors = ConfigErrorList(limit: 10), plainErrors = ConfigErrorList(limit: 10)
            let (tree, plain) = bytes.withUnsafeBufferPointer {
                (Tree.parse($0, file: "f.yaml", itemDigests: true, budget: &budget, errors: &errors),
                 Tree.parse($0, file: "f.yaml", budget: &plainBudget, errors: &plainErrors))
            }
            XCTAssertEqual(tree.map { $0.withoutItemDigests.digest }, plain.map(\.digest))
            XCTAssertEqual(errors.count, plainErrors.count)
            guard let tree, errors.isEmpty else { continue }
            parsed += 1
            guard Self.compare(tree, text: bytes, seen: &seen, equalPairs: &equalPairs) else { return }
        }
        XCTAssertGreaterThan(parsed, 3000)
        XCTAssertGreaterThan(equalPairs, 900)
        print("mutated: parsed \(parsed), equal digests in different documents \(equalPairs)")
    }

    /// Long lines of characters of one to four bytes, across libyaml's input buffer (16 KiB):
    /// each single-line plain scalar's text is found at the byte offsets of its event.
    func testOffsetsAcrossLongLinesOfWideCharacters() {
        var r = Rng(g: SeededGenerator(seed: 7))
        let pieces = ["a", "é", "☃", "𝄞", "x y", "\u{FEFF}"]
        for _ in 0..<20 {
            var text = r.pick(["", "\u{FEFF}", "# é\r\n"]) + "k:\n"
            var expected: [String] = []
            for _ in 0..<(2 + r.below(4)) {
                var word = "w"
                for _ in 0..<r.below(12000) { word += r.pick(pieces) }
                word += "z"
                expected.append(word)
                text += "  - " + word + r.pick(["\n", "\r\n", "\u{2028}", "\u{85}", "  # \(r.pick(pieces))\n"])
            }
            XCTAssertEqual(ItemDigestTests.scalarTexts(text), ["k"] + expected)
        }
    }
}
