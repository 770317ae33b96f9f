@testable import Config
import Foundation
import Glibc
import Netlink
import Reconciler
import TestSupport
import XCTest

/// A change to the main file's peer items alone is a delta that parses those items
/// (`ConfigLoader.mainFileDelta`). Whatever the change, the outcome must be a fresh load's: the
/// same desired state, files and errors. The edits here are made to break the argument the
/// delta rests on (`FileSegments`): items whose text runs on into the next (an unterminated
/// quote or flow mapping), lines left of the list's column, document markers, anchors and
/// aliases, tags with handles, `-` alone on its line, line breaks other than LF, a list moved,
/// re-indented or emptied, the file without a final line break, changes next to a drop-in's.
final class MainFileDeltaTests: XCTestCase {
    private var fixture: ConfigFixture!
    private var main: String { fixture.path("wgkeeper.yaml") }
    private var confD: String { fixture.path("conf.d") }

    override func setUpWithError() throws {
        fixture = try ConfigFixture(for: self)
        try fixture.writeKey("wg1.key")
        try fixture.makeDirectory("conf.d")
    }

    private var loads = 0, accepted = 0, mainDeltas = 0

    @discardableResult
    private func assertSameAsFresh(_ cache: ConfigCache, _ context: @autoclosure () -> String, file: StaticString = #filePath,
                                   line: UInt = #line) -> (outcome: LoadOutcome, delta: Bool) {
        tickPastTimestamps()
        let cached = LoadOutcome(ConfigLoader().load(path: main, cache: cache))
        let delta = cache.lastLoad.mainFile
        let fresh = LoadOutcome(ConfigLoader().load(path: main))
        XCTAssertEqual(cached, fresh, "\(context())\(delta ? " (main file delta)" : "")", file: file, line: line)
        if delta { XCTAssertNotNil(cached.desired, "a delta with errors: \(context())", file: file, line: line) }
        loads += 1
        if cached.desired != nil { accepted += 1 }
        if delta { mainDeltas += 1 }
        tickPastTimestamps()
        return (cached, delta)
    }

    private struct Rng {
        var g: SeededGenerator
        mutating func below(_ n: Int) -> Int { Int(g.next() % UInt64(n)) }
        mutating func chance(_ n: Int) -> Bool { below(n) == 0 }
    }

    private static let keys = (0..<48).map { _ in PrivateKey.generate().publicKey.base64 }

    /// Item texts after `- `: `P` is the item's own column as spaces (for its later lines), `I`
    /// the list's column, `N` the peer's number, `K` its key, `A` its address. The first ones
    /// read as a peer; the rest (from `hostile`) test the delta's argument.
    private static let styles: [String] = [
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]",
        "{name: pN, public_key: \"K\", allowed_ips: [\"A\"]}",
        "{name: pN,\nP public_key: \"K\", allowed_ips: [\"A\"]}",
        "name: pN  # c\nP# a note\n\nPpublic_key: K\nPallowed_ips:\nP  - A",
        "name: >-\nP  pN\nPpublic_key: 'K'\nPallowed_ips: [A]",
        "\"name\": pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\",\nP  ]",
        "name: pN\n# at column 1\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]",
        "? name\nP: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]",
        "name:\tpN\nPpublic_key: \"K\"   \nPallowed_ips: [\"A\"]\t",
        "{name: pN, public_key: \"K\", allowed_ips: [\"A\"]}   # c\n\n",
        "!!map {name: pN, public_key: \"K\", allowed_ips: [\"A\"]}",
    ]
    private static let hostile: [String] = [
        "name: \"pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]",
        "{name: pN, public_key: \"K\", allowed_ips: [\"A\"]",
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]\n  x: 1",
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]\n---",
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]\n...",
        "&aN {name: pN, public_key: \"K\", allowed_ips: [\"A\"]}",
        "{name: pN, public_key: \"K\", allowed_ips: *nope}",
        "!e!x {name: pN, public_key: \"K\", allowed_ips: [\"A\"]}",
        "\nPname: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]",
        "name: pN\rPpublic_key: \"K\"\rPallowed_ips: [\"A\"]",
        "name: pN\u{2028}Ppublic_key: \"K\"\u{2028}Pallowed_ips: [\"A\"]",
        "name: pN\u{85}Ppublic_key: \"K\"\u{85}Pallowed_ips: [\"A\"]",
        "",
        "name: |+\nP  pN\n\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]",
        "- name: pN\nP  public_key: \"K\"\nP  allowed_ips: [\"A\"]",
        "name: 'pN\nI- name: x'\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]",
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]\nI-",
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]\nIx: 1",
        "name: pN\n\tpublic_key: \"K\"\nPallowed_ips: [\"A\"]",
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]\nPname: again",
        "name: pN\nPpublic_key: \"not a key\"\nPallowed_ips: [\"A\"]",
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"2001:db8:1::/64\"]",
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]\nPpreshared_key_file: alice.psk",
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]\nPendpoint: \"[2001:db8:1::1]:51820\"",
        "\u{FEFF}name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"]",
        "name: pN\nPpublic_key: \"K\"\nPallowed_ips: [\"A\"] #",
    ]

    private struct Item {
        var number: Int
        var address: Int
        var style = 0
        var hostile: Int?
    }

    private struct Document {
        var lists: [[Item]]
        var indent = 4, pad = 1
        var crlf = false, bom = false, finalBreak = true, documentEnd = false
        var comment: String?
        var port = 51820
        var gatewayFirst = false
        var includeDir = false
        var dropIn = 900

        func render() -> String {
            var text = (bom ? "\u{FEFF}" : "") + (comment.map { "# \($0)\n" } ?? "")
            let gateway = "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\"}\n"
            if gatewayFirst { text += gateway }
            if includeDir { text += "runtime:\n  include_dir: conf.d\n" }
            text += "wireguard:\n"
            for (d, list) in lists.enumerated() {
                text += "  wg\(d):\n    private_key_file: wg\(d).key\n" + (d == 0 ? "    listen_port: \(port)\n" : "")
                guard !list.isEmpty else { continue }
                text += "    peers:\n"
                let column = String(repeating: " ", count: indent), own = String(repeating: " ", count: indent + 1 + pad)
                for item in list {
                    let body = item.hostile.map { MainFileDeltaTests.hostile[$0] } ?? MainFileDeltaTests.styles[item.style]
                    let address = d == 0 ? "2001:db8:1::\(item.address)/128" : "2001:db8:2::\(item.address)/128"
                    let filled = body.replacingOccurrences(of: "\nP", with: "\n" + own).replacingOccurrences(of: "\nI", with: "\n" + column)
                        .replacingOccurrences(of: "pN", with: "p\(item.number)").replacingOccurrences(of: "aN", with: "a\(item.number)")
                        .replacingOccurrences(of: "A", with: address).replacingOccurrences(of: "K", with: MainFileDeltaTests.keys[item.number % 48])
                    text += column + "-" + String(repeating: " ", count: pad) + filled + "\n"
                }
            }
            if !gatewayFirst { text += gateway }
            if documentEnd { text += "...\n" }
            if !finalBreak { text.removeLast() }
            return crlf ? text.replacingOccurrences(of: "\n", with: "\r\n") : text
        }
    }

    // MARK: the property

    func testMainFileDeltaEqualsFreshLoadAfterRandomEdits() throws {
        for seed in [31, 32, 33, 34, 35, 36] as [UInt64] {
            try runRandomEdits(seed: seed, steps: 45)
        }
        print("main file deltas: \(mainDeltas) of \(loads) loads, \(accepted) accepted")
        XCTAssertGreaterThan(mainDeltas, loads / 4, "\(mainDeltas) of \(loads) loads were main file deltas")
        XCTAssertGreaterThan(accepted - mainDeltas, loads / 10, "loads accepted the whole way")
        XCTAssertGreaterThan(loads - accepted, loads / 10, "loads refused")
    }

    private func runRandomEdits(seed: UInt64, steps: Int) throws {
        var random = Rng(g: SeededGenerator(seed: seed))
        var next = 0
        func newItem() -> Item {
            next += 1
            return Item(number: next, address: next, style: random.below(3))
        }
        var document = Document(lists: [(0..<8).map { _ in newItem() }, random.chance(2) ? (0..<3).map { _ in newItem() } : []])
        try fixture.write("wgkeeper.yaml", document.render())
        try fixture.write("conf.d/a.yaml", "wireguard:\n  wg0:\n    peers:\n      - {name: d0, public_key: \"\(Self.keys[47])\", allowed_ips: [\"2001:db8:1::900/128\"]}\n")
        let cache = ConfigCache.settled()
        var failed = assertSameAsFresh(cache, "seed \(seed), start").outcome.desired == nil
        for step in 0..<steps {
            // A refused file is mostly mended at once (its hostile items and taken names), so that
            // most loads start from one that was accepted, as a delta does.
            if failed, !random.chance(4) {
                for l in document.lists.indices {
                    var names = Set<Int>()
                    for i in document.lists[l].indices {
                        document.lists[l][i].hostile = nil
                        if !names.insert(document.lists[l][i].number).inserted {
                            document.lists[l][i] = newItem()
                        }
                    }
                }
            }
            let d = document.lists[1].isEmpty || random.below(4) > 0 ? 0 : 1
            var list = document.lists[d]
            let i = list.isEmpty ? 0 : random.below(list.count)
            var what: String
            var dropInToo = false
            switch random.below(20) {
            case 0, 1, 2, 3:
                guard !list.isEmpty else { fallthrough }
                list[i].address = 100 + random.below(200)
                what = "item \(i) of \(d): address \(list[i].address)"
            case 4, 5:
                guard !list.isEmpty else { fallthrough }
                list[i].style = random.below(Self.styles.count)
                list[i].hostile = nil
                what = "item \(i) of \(d): style \(list[i].style)"
            case 6, 7, 8:
                guard !list.isEmpty else { fallthrough }
                list[i].hostile = random.below(Self.hostile.count)
                what = "item \(i) of \(d): hostile \(list[i].hostile!)"
            case 9, 10:
                let at = random.below(list.count + 1)
                list.insert(newItem(), at: at)
                list[at].style = random.below(Self.styles.count)
                what = "item inserted at \(at) of \(d), style \(list[at].style)"
            case 11:
                guard !list.isEmpty else { fallthrough }
                list.remove(at: i)
                what = "item \(i) of \(d) removed"
            case 12:
                guard list.count > 1 else { fallthrough }
                let j = random.below(list.count)
                list.swapAt(i, j)
                what = "items \(i) and \(j) of \(d) swapped"
            case 13:
                guard list.count > 1 else { fallthrough }
                list[i].number = list[(i + 1) % list.count].number
                what = "item \(i) of \(d) named as the next"
            case 14:
                guard !list.isEmpty else { fallthrough }
                list[i].address = 100 + random.below(200)
                dropInToo = true
                what = "item \(i) of \(d): address \(list[i].address), and the drop-in changed"
            case 15:
                (document.indent, document.pad) = [(4, 1), (6, 1), (4, 3), (5, 2)][random.below(4)]
                what = "list at column \(document.indent), \(document.pad) after -"
            case 16:
                switch random.below(6) {
                case 0: document.crlf.toggle(); what = "CR LF \(document.crlf)"
                case 1: document.bom.toggle(); what = "byte order mark \(document.bom)"
                case 2: document.finalBreak.toggle(); what = "final line break \(document.finalBreak)"
                case 3: document.documentEnd.toggle(); what = "document end \(document.documentEnd)"
                case 4: document.gatewayFirst.toggle(); what = "gateway first \(document.gatewayFirst)"
                default: document.includeDir.toggle(); what = "include_dir \(document.includeDir)"
                }
            case 17:
                document.port += 1
                what = "listen port \(document.port)"
            case 18:
                document.comment = [nil, "top", "é ☃"][random.below(3)]
                what = "comment \(document.comment ?? "none")"
            default:
                what = "written again unchanged"
            }
            document.lists[d] = list
            try fixture.write("wgkeeper.yaml", document.render())
            if dropInToo {
                document.dropIn += 1
                try fixture.write("conf.d/a.yaml", "wireguard:\n  wg0:\n    peers:\n      - {name: d0, public_key: \"\(Self.keys[47])\", allowed_ips: [\"2001:db8:1::\(document.dropIn)/128\"]}\n")
            }
            let (outcome, delta) = assertSameAsFresh(cache, "seed \(seed), step \(step): \(what)")
            failed = outcome.desired == nil
            if dropInToo, document.includeDir { XCTAssertFalse(delta, "a main file delta while a drop-in changed: seed \(seed), step \(step)") }
        }
    }

    // MARK: single cases

    private func peers(_ count: Int, moved: Int? = nil, style: Int = 0) -> Document {
        Document(lists: [(0..<count).map { Item(number: $0, address: $0 == moved ? 500 + $0 : $0 + 1, style: style) }, []])
    }

    func testOnlyTheChangedItemIsParsedAndTheNextWholeLoadParsesTheFileAgain() throws {
        try fixture.write("wgkeeper.yaml", peers(40).render())
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        XCTAssertEqual(cache.lastLoad.peersDecoded, 40)
        try fixture.write("wgkeeper.yaml", peers(40, moved: 17).render())
        let (moved, delta) = assertSameAsFresh(cache, "moved")
        XCTAssertTrue(delta)
        XCTAssertEqual(cache.lastLoad, ConfigCache.Statistics(filesRead: 1, filesParsed: 0, peersDecoded: 1, delta: true, mainFile: true))
        XCTAssertEqual(moved.desired?.routes.filter { $0.destination.description == "2001:db8:1::517/128" }.count, 1)
        // Unchanged since: nothing read, the kept outcome again.
        assertSameAsFresh(cache, "unchanged")
        XCTAssertEqual(cache.lastLoad, ConfigCache.Statistics(filesRead: 0, delta: true, mainFile: true))
        // A change outside the items: the file is parsed again, its peers decoded again (its
        // kept tree is outdated).
        var other = peers(40, moved: 17)
        other.port = 51821
        try fixture.write("wgkeeper.yaml", other.render())
        XCTAssertFalse(assertSameAsFresh(cache, "port").delta)
        XCTAssertEqual(cache.lastLoad.filesParsed, 1)
        XCTAssertEqual(cache.lastLoad.peersDecoded, 40)
        // Then items again: a delta.
        try fixture.write("wgkeeper.yaml", { var d = other; d.lists[0].remove(at: 3); return d.render() }())
        XCTAssertTrue(assertSameAsFresh(cache, "removed").delta)
    }

    func testHostileItemTextsAreEachAsAFreshLoadReadsThem() throws {
        for (h, _) in Self.hostile.enumerated() {
            for at in [0, 5] {
                var document = peers(6)
                try fixture.write("wgkeeper.yaml", document.render())
                let cache = ConfigCache.settled()
                assertSameAsFresh(cache, "hostile \(h) at \(at): first")
                document.lists[0][at].hostile = h
                try fixture.write("wgkeeper.yaml", document.render())
                assertSameAsFresh(cache, "hostile \(h) at \(at)")
                document.lists[0][at].hostile = nil
                document.lists[0][(at + 1) % 6].address = 300
                try fixture.write("wgkeeper.yaml", document.render())
                assertSameAsFresh(cache, "hostile \(h) at \(at), then undone")
                // Whatever came before, the file was just loaded whole or as a delta: the next
                // change of an item is a delta.
                document.lists[0][(at + 2) % 6].address = 301
                try fixture.write("wgkeeper.yaml", document.render())
                XCTAssertTrue(assertSameAsFresh(cache, "hostile \(h) at \(at), then another item").delta, "hostile \(h) at \(at)")
            }
        }
    }

    func testTheLastItemOfAFileWithoutAFinalLineBreak() throws {
        var document = peers(5)
        document.lists.removeLast()
        document.gatewayFirst = true
        document.finalBreak = false
        try fixture.write("wgkeeper.yaml", document.render())
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        document.lists[0][4].address = 77
        try fixture.write("wgkeeper.yaml", document.render())
        // The new last item ends without a line break: parsed with one after it, it could read
        // otherwise (a block scalar's last line), so the file is read whole.
        XCTAssertFalse(assertSameAsFresh(cache, "last item").delta)
        document.lists[0][1].address = 78
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertTrue(assertSameAsFresh(cache, "another item").delta)
        document.lists[0].append(Item(number: 9, address: 99))
        try fixture.write("wgkeeper.yaml", document.render())
        assertSameAsFresh(cache, "appended")
    }

    func testEmptiedListAndNewListAreReadWhole() throws {
        var document = peers(3)
        document.lists[1] = [Item(number: 20, address: 1)]
        try fixture.write("wgkeeper.yaml", document.render())
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        // Its last item removed, `peers:` would read as null: not a delta.
        let text = document.render().replacingOccurrences(of: "    peers:\n    - name: p20\n      public_key: \"\(Self.keys[20])\"\n      allowed_ips: [\"2001:db8:2::1/128\"]\n", with: "    peers:\n")
        XCTAssertNotEqual(text, document.render())
        try fixture.write("wgkeeper.yaml", text)
        XCTAssertFalse(assertSameAsFresh(cache, "emptied").delta)
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertFalse(assertSameAsFresh(cache, "filled again").delta)
    }

    func testNoMainFileDeltaWithAnAnchorInTheFileOrAPolicy() throws {
        var document = peers(4)
        document.lists[0][2].hostile = 5  // an anchor
        try fixture.write("wgkeeper.yaml", document.render())
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        document.lists[0][0].address = 60
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertFalse(assertSameAsFresh(cache, "anchored").delta)
        document.lists[0][2].hostile = nil
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertFalse(assertSameAsFresh(cache, "anchor gone").delta)
        document.lists[0][0].address = 61
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertTrue(assertSameAsFresh(cache, "no anchor").delta)

        let policy = "policy: {client_to_lan: deny}\n"
        try fixture.write("wgkeeper.yaml", document.render() + policy)
        assertSameAsFresh(cache, "policy")
        document.lists[0][0].address = 62
        try fixture.write("wgkeeper.yaml", document.render() + policy)
        XCTAssertFalse(assertSameAsFresh(cache, "policy, item").delta)
    }

    /// After a delta the main file's kept tree is outdated; loads that need it whole start
    /// again with the file parsed anew: a key file rewritten, a drop-in that is more than peers.
    func testLoadsThatNeedTheOutdatedTreeWholeParseTheFileAgain() throws {
        var document = peers(6)
        document.includeDir = true
        try fixture.write("wgkeeper.yaml", document.render())
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        document.lists[0][2].address = 90
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertTrue(assertSameAsFresh(cache, "main").delta)
        // The device's key rewritten: not a delta; the main file is parsed again.
        try fixture.writeKey("wg0.key")
        XCTAssertFalse(assertSameAsFresh(cache, "key").delta)
        XCTAssertEqual(cache.lastLoad.filesParsed, 1)
        XCTAssertEqual(cache.lastLoad.peersDecoded, 6)
        document.lists[0][3].address = 91
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertTrue(assertSameAsFresh(cache, "main again").delta)
        // A drop-in with another section: the tree is needed whole.
        try fixture.write("conf.d/z.yaml", "routes: []\n")
        XCTAssertFalse(assertSameAsFresh(cache, "a drop-in with a section").delta)
        XCTAssertEqual(cache.lastLoad.peersDecoded, 6)
        try FileManager.default.removeItem(atPath: confD + "/z.yaml")
        assertSameAsFresh(cache, "that drop-in removed")
        // A drop-in of peers after a delta: a drop-in delta, the main file's outdated tree taken
        // for its other sections.
        document.lists[0][4].address = 92
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertTrue(assertSameAsFresh(cache, "main, then").delta)
        try fixture.write("conf.d/p.yaml", "wireguard:\n  wg0:\n    peers:\n      - {name: d9, public_key: \"\(Self.keys[45])\", allowed_ips: [\"2001:db8:1::909/128\"]}\n")
        XCTAssertTrue(assertSameAsFresh(cache, "a drop-in of peers").outcome.desired != nil)
        XCTAssertTrue(cache.lastLoad.delta && !cache.lastLoad.mainFile, "\(cache.lastLoad)")
        XCTAssertEqual(cache.lastLoad.filesParsed, 1, "the drop-in alone")
    }

    func testIncludeDirectoryChangedWithTheMainFileIsReadWhole() throws {
        var document = peers(4)
        document.includeDir = true
        try fixture.write("wgkeeper.yaml", document.render())
        let dropIn = { (n: Int) in "wireguard:\n  wg0:\n    peers:\n      - {name: d0, public_key: \"\(Self.keys[47])\", allowed_ips: [\"2001:db8:1::\(n)/128\"]}\n" }
        try fixture.write("conf.d/a.yaml", dropIn(900))
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        document.lists[0][1].address = 70
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertTrue(assertSameAsFresh(cache, "main").delta)
        // Both changed: the watch names the drop-in.
        document.lists[0][1].address = 71
        try fixture.write("wgkeeper.yaml", document.render())
        try fixture.write("conf.d/a.yaml", dropIn(901))
        XCTAssertFalse(assertSameAsFresh(cache, "both").delta)
        // A drop-in added and one of the main file's peers inserted before its peer.
        document.lists[0].insert(Item(number: 30, address: 30), at: 0)
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertTrue(assertSameAsFresh(cache, "inserted").delta)
        try fixture.write("conf.d/b.yaml", dropIn(902).replacingOccurrences(of: "d0", with: "d1").replacingOccurrences(of: Self.keys[47], with: Self.keys[46]))
        assertSameAsFresh(cache, "drop-in added after the main file's delta")
        document.lists[0].remove(at: 2)
        try fixture.write("wgkeeper.yaml", document.render())
        XCTAssertTrue(assertSameAsFresh(cache, "removed").delta)
        try fixture.write("conf.d/b.yaml", dropIn(903).replacingOccurrences(of: "d0", with: "d1").replacingOccurrences(of: Self.keys[47], with: Self.keys[46]))
        assertSameAsFresh(cache, "drop-in changed after the main file's delta")
    }
}
