@testable import Config
import Foundation
import Glibc
import Netlink
import Reconciler
import TestSupport
import XCTest

/// The main file delta (`ConfigLoader.mainFileDelta`) as a hostile review tried it: text edits
/// anywhere (YAML's special characters spliced in, lines doubled, swapped, appended as `echo >>`
/// does), hostile pairs of old and new text, what may follow a list's last item, half-written
/// files, limits, modes, key files, drop-ins and roots. After each, a load through the cache must
/// give what a fresh load gives. (`R23_SEEDS`, `R23_STEPS`, `R23_WSEEDS`, `R23_WSTEPS` run the
/// random ones longer.)
final class MainFileDeltaHostileTests: XCTestCase {
    private var fixture: ConfigFixture!
    private var main: String { fixture.path("wgkeeper.yaml") }

    override func setUpWithError() throws {
        fixture = try ConfigFixture(for: self)
        try fixture.writeKey("wg1.key")
        try fixture.makeDirectory("conf.d")
    }

    static let keys = (0..<64).map { _ in PrivateKey.generate().publicKey.base64 }

    /// A flow item of peer `n` at column `indent`.
    static func item(_ n: Int, indent: Int = 4, address: Int? = nil) -> String {
        String(repeating: " ", count: indent) + "- {name: p\(n), public_key: \"\(keys[n])\", allowed_ips: [\"2001:db8:1::\(address ?? n + 1)/128\"]}\n"
    }

    static let head = "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\"}\nwireguard:\n  wg0:\n    private_key_file: wg0.key\n    peers:\n"

    @discardableResult
    func same(_ cache: ConfigCache, _ context: String, file: StaticString = #filePath, line: UInt = #line) -> (LoadOutcome, Bool) {
        tickPastTimestamps()
        let cached = LoadOutcome(ConfigLoader().load(path: main, cache: cache))
        let delta = cache.lastLoad.mainFile
        let fresh = LoadOutcome(ConfigLoader().load(path: main))
        XCTAssertEqual(cached, fresh, "\(context)\(delta ? " (main file delta)" : "")", file: file, line: line)
        tickPastTimestamps()
        return (cached, delta)
    }

    func write(_ text: String) throws { try fixture.write("wgkeeper.yaml", text) }

    // MARK: defect 1: an item appended to a file whose last line has no line break

    /// The last line of the file (in the list's last item) ends without a line break; an item
    /// appended to it (`echo '- …' >>`, or an editor that adds no final break) runs on in that
    /// line: a fresh load reads it as part of the comment.
    func testItemAppendedToAFileWithoutFinalBreakAfterAComment() throws {
        let text = Self.head + Self.item(0) + Self.item(1) + "    # the end"
        try write(text)
        let cache = ConfigCache.settled()
        same(cache, "first")
        try write(text + Self.item(2))
        same(cache, "appended after the comment")
    }

    func testItemAppendedToAFileWithoutFinalBreak() throws {
        let text = Self.head + Self.item(0) + String(Self.item(1).dropLast())
        try write(text)
        let cache = ConfigCache.settled()
        same(cache, "first")
        try write(text + Self.item(2))
        same(cache, "appended to the last line")
    }
}

// MARK: random text-level edits

extension MainFileDeltaHostileTests {
    struct Rng {
        var g: SeededGenerator
        mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(g.next() % UInt64(n)) }
        mutating func chance(_ n: Int) -> Bool { below(n) == 0 }
        mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
    }

    static func short(_ o: LoadOutcome) -> String {
        if let d = o.desired {
            return d.devices.map { "\($0.name): " + $0.peers.map { "\($0.name)\($0.allowedIPs.map(\.description))\($0.endpoint.map { "\($0)" } ?? "")k\($0.persistentKeepalive)" }.joined(separator: " ") }
                .joined(separator: " | ") + " routes \(d.routes.count) files \(o.files.count)"
        }
        return o.errors.prefix(3).joined(separator: "; ")
    }

    func writeBytes(_ bytes: [UInt8], to name: String = "wgkeeper.yaml") throws {
        try Data(bytes).write(to: URL(fileURLWithPath: fixture.path(name)))
    }

    /// `old` loaded through a new cache, then `new`, then `old` again, each against a fresh load.
    func oldNewOld(_ old: String, _ new: String, _ what: String, stats: inout (loads: Int, deltas: Int, ok: Int)) throws {
        try write(old)
        let cache = ConfigCache.settled()
        compare(cache, "\(what): old", stats: &stats)
        try write(new)
        compare(cache, "\(what): new\n\(new)", stats: &stats)
        try write(old)
        compare(cache, "\(what): old again", stats: &stats)
    }

    /// Loads through the cache and fresh; false (and a failure) when they differ.
    @discardableResult
    func compare(_ cache: ConfigCache, _ context: String, limits: ConfigLimits = .standard, stats: inout (loads: Int, deltas: Int, ok: Int)) -> Bool {
        tickPastTimestamps()
        let cached = LoadOutcome(ConfigLoader(limits: limits).load(path: main, cache: cache))
        let delta = cache.lastLoad.mainFile
        let fresh = LoadOutcome(ConfigLoader(limits: limits).load(path: main))
        stats.loads += 1
        if delta { stats.deltas += 1 }
        if fresh.desired != nil { stats.ok += 1 }
        tickPastTimestamps()
        if cached != fresh {
            XCTFail("\(context)\(delta ? " (main file delta)" : "")\ncached: \(Self.short(cached))\nfresh:  \(Self.short(fresh))")
            return false
        }
        return true
    }

    static func baseText(_ r: inout Rng, includeDir: Bool) -> String {
        var t = ""
        if r.chance(3) { t += "# wgkeeper\n" }
        let gatewayFirst = r.chance(2)
        let gateway = "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\"}\n"
        if gatewayFirst { t += gateway }
        if includeDir { t += "runtime:\n  include_dir: conf.d\n" }
        t += "wireguard:\n"
        var n = 0
        for d in 0..<2 {
            t += "  wg\(d):\n    private_key_file: wg\(d).key\n"
            if r.chance(2) { t += "    listen_port: \(51820 + d)\n" }
            t += "    peers:\n"
            let col = r.pick([4, 6, 4, 8])
            let c = String(repeating: " ", count: col)
            for _ in 0..<(3 + r.below(4)) {
                t += item(n, d: d, col: c, style: r.below(5))
                n += 1
            }
            if r.chance(3) { t += "    prune_peers: true\n" }
        }
        if !gatewayFirst { t += gateway }
        return t
    }

    static func item(_ n: Int, d: Int, col c: String, style: Int, address: Int? = nil) -> String {
        let a = "2001:db8:\(d + 1)::\(address ?? n + 1)/128"
        let p = c + "  "
        switch style {
        case 0: return "\(c)- {name: p\(n), public_key: \"\(keys[n % 64])\", allowed_ips: [\"\(a)\"]}\n"
        case 1: return "\(c)- name: p\(n)\n\(p)public_key: \(keys[n % 64])\n\(p)allowed_ips: [\(a)]\n"
        case 2: return "\(c)- name: p\(n)  # c\n\(p)public_key: '\(keys[n % 64])'\n\n\(p)allowed_ips:\n\(p)  - \(a)\n\(p)persistent_keepalive: 25\n"
        case 3: return "\(c)- name: >-\n\(p)  p\(n)\n\(p)public_key: \"\(keys[n % 64])\"\n\(p)allowed_ips: [\"\(a)\",\n\(p)  ]\n"
        default: return "\(c)- name: p\(n)\n\(p)public_key: \"\(keys[n % 64])\"\n\(p)endpoint: \"[2001:db8:ff::\(n)]:51820\"\n\(p)allowed_ips: [\(a)]\n"
        }
    }

    static let specials: [String] = ["\"", "'", "{", "}", "[", "]", "#", "|", ">", "-", ":", " ", "\t", "\n", "\r", "?", "&a ", "*a", "!", "%",
                                     "@", "`", ",", "|+", "|2", ">-", "- ", ": ", " #", "\u{85}", "\u{2028}", "\u{FEFF}", "é", "\r\n", "...", "---", "~"]

    func runTextFuzz(seed: UInt64, steps: Int, includeDir: Bool, limits: ConfigLimits = .standard) throws -> (loads: Int, deltas: Int, ok: Int) {
        var r = Rng(g: SeededGenerator(seed: seed))
        var good = Array(Self.baseText(&r, includeDir: includeDir).utf8)
        try writeBytes(good)
        if includeDir {
            try fixture.write("conf.d/a.yaml", "wireguard:\n  wg0:\n    peers:\n      - {name: d0, public_key: \"\(Self.keys[63])\", allowed_ips: [\"2001:db8:1::900/128\"]}\n")
        }
        let cache = ConfigCache.settled()
        var stats = (loads: 0, deltas: 0, ok: 0)
        var failures = 0
        XCTAssertTrue(compare(cache, "seed \(seed) start", limits: limits, stats: &stats))
        var next = 100
        var text = good
        steps: for step in 0..<steps {
            var lines = text.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
            let finalBreak = text.last == 0x0A
            if finalBreak { lines.removeLast() }
            // Lines of the peers lists: from the first `peers:` on.
            let first = (lines.firstIndex { String(decoding: $0, as: UTF8.self).contains("peers:") } ?? 0) + 1
            let li = first + r.below(max(1, lines.count - first))
            var what = ""
            switch r.below(16) {
            case 0, 1, 2:
                // An address's last digit, or a name's.
                let s = String(decoding: lines[min(li, lines.count - 1)], as: UTF8.self)
                if let range = s.range(of: "::", options: .backwards), let digit = s[range.upperBound...].firstIndex(where: \.isNumber) {
                    var t = s
                    t.replaceSubrange(digit ... digit, with: String(r.below(10)))
                    lines[min(li, lines.count - 1)] = Array(t.utf8)
                    what = "digit in line \(li)"
                } else { what = "nothing" }
            case 3, 4:
                let col = String(repeating: " ", count: r.pick([4, 6, 8, 5, 2, 0]))
                let snippet = Self.item(next, d: r.below(2), col: col, style: r.below(5), address: next)
                next += 1
                lines.insert(contentsOf: snippet.dropLast().split(separator: "\n", omittingEmptySubsequences: false).map { Array($0.utf8) }, at: min(li, lines.count))
                what = "item inserted at \(li)"
            case 5:
                let col = String(repeating: " ", count: r.pick([0, 2, 4, 5, 6, 7, 8, 10]))
                let line = col + r.pick(["# x", "", "- ~", "-", "x: 1", "---", "...", "%YAML 1.1", "? a", ": b", "|", "\"", "'", "{", "]", "persistent_keepalive: 5",
                                         "endpoint: \"[2001:db8:ff::99]:1\"", "public_key: \"\(Self.keys[9])\"", "  - 2001:db8:1::77/128", "\t", "- {name: z\(next),"])
                lines.insert(Array(line.utf8), at: min(li, lines.count))
                what = "line \(line.debugDescription) at \(li)"
            case 6:
                guard li < lines.count else { fallthrough }
                lines.remove(at: li)
                what = "line \(li) removed"
            case 7, 8:
                guard li < lines.count, !lines[li].isEmpty else { fallthrough }
                let at = r.below(lines[li].count + 1)
                let s = Array(r.pick(Self.specials).utf8)
                if r.chance(2), at < lines[li].count { lines[li].replaceSubrange(at ..< at + 1, with: s) } else { lines[li].insert(contentsOf: s, at: at) }
                what = "special in line \(li) at \(at)"
            case 9:
                if r.chance(2) {
                    // An item appended as `echo '- …' >>` does: after the last byte, whatever it is.
                    let col = String(repeating: " ", count: r.pick([4, 6, 8]))
                    let snippet = Self.item(next, d: r.below(2), col: col, style: 0, address: next)
                    next += 1
                    text += Array(snippet.utf8)
                    try writeBytes(text)
                    let context = "seed \(seed) step \(step): appended \(snippet.debugDescription)\n--- text:\n\(String(decoding: text, as: UTF8.self))\n---"
                    if !compare(cache, context, limits: limits, stats: &stats) {
                        failures += 1
                        if failures >= 3 { break steps }
                    }
                    if case .success = ConfigLoader(limits: limits).load(path: main) { good = text } else { text = good }
                    continue
                }
                guard li + 1 < lines.count else { fallthrough }
                lines.swapAt(li, li + 1)
                what = "lines \(li), \(li + 1) swapped"
            case 10:
                guard li < lines.count else { fallthrough }
                lines.insert(lines[li], at: li)
                what = "line \(li) doubled"
            default:
                what = "back to the last accepted"
            }
            var new = what == "back to the last accepted" ? good : Array(lines.joined(separator: [0x0A]))
            if what != "back to the last accepted" {
                if finalBreak { new.append(0x0A) }
                if r.chance(25) {
                    if new.last == 0x0A { new.removeLast() } else { new.append(0x0A) }
                    what += ", final break toggled"
                }
            }
            text = new
            try writeBytes(text)
            let context = "seed \(seed) step \(step): \(what)\n--- text:\n\(String(decoding: text, as: UTF8.self))\n---"
            if !compare(cache, context, limits: limits, stats: &stats) {
                failures += 1
                if failures >= 3 { break }
            }
            if case .success = ConfigLoader(limits: limits).load(path: main) { good = text }
            else if r.chance(2) { text = good }
        }
        return stats
    }

    func testRandomTextEdits() throws {
        var total = (loads: 0, deltas: 0, ok: 0)
        let seeds = (ProcessInfo.processInfo.environment["R23_SEEDS"] ?? "1,2").split(separator: ",").compactMap { UInt64($0) }
        let steps = Int(ProcessInfo.processInfo.environment["R23_STEPS"] ?? "50") ?? 50
        for seed in seeds {
            let s = try runTextFuzz(seed: seed, steps: steps, includeDir: seed % 2 == 0)
            total = (total.loads + s.loads, total.deltas + s.deltas, total.ok + s.ok)
        }
        print("R23 text fuzz: \(total.loads) loads, \(total.deltas) main deltas, \(total.ok) accepted")
    }
}

// MARK: sequences with the include directory, key files, modes

extension MainFileDeltaHostileTests {
    static func dropIn(_ name: String, _ n: Int, address: Int) -> String {
        "wireguard:\n  wg0:\n    peers:\n      - {name: \(name), public_key: \"\(keys[n])\", allowed_ips: [\"2001:db8:1::\(address)/128\"]}\n"
    }

    func mainText(_ items: [Int], addresses: [Int: Int] = [:], includeDir: Bool = true, extra: String = "") -> String {
        var t = "runtime:\n  include_dir: conf.d\n"
        if !includeDir { t = "" }
        t += Self.head + items.map { Self.item($0, address: addresses[$0]) }.joined() + extra
        return t
    }

    func testSequencesWithDropInsKeysAndModes() throws {
        try fixture.write("conf.d/a.yaml", Self.dropIn("da", 60, address: 900))
        try fixture.write("conf.d/b.yaml", Self.dropIn("db", 61, address: 901))
        var items = [0, 1, 2, 3]
        try write(mainText(items))
        let cache = ConfigCache.settled()
        same(cache, "first")
        // Inserted at the start (the drop-ins' peers move).
        items.insert(4, at: 0)
        try write(mainText(items))
        XCTAssertTrue(same(cache, "inserted").1)
        // A drop-in gets another section: the load needs the main file's tree whole.
        try fixture.write("conf.d/b.yaml", Self.dropIn("db", 61, address: 901) + "routes:\n  - {destination: \"2001:db8:9::/64\", device: wg0}\n")
        same(cache, "drop-in with routes")
        try fixture.write("conf.d/b.yaml", Self.dropIn("db", 61, address: 901))
        same(cache, "drop-in back")
        items.remove(at: 2)
        try write(mainText(items))
        XCTAssertTrue(same(cache, "removed").1)
        // A drop-in refused for its mode after a delta, then trusted again.
        chmod(fixture.path("conf.d/a.yaml"), 0o666)
        same(cache, "drop-in writable by all")
        chmod(fixture.path("conf.d/a.yaml"), 0o644)
        same(cache, "drop-in trusted again")
        items.append(5)
        try write(mainText(items))
        same(cache, "appended")
        // The main file writable by all with an item changed; then trusted again.
        items.append(6)
        try write(mainText(items))
        chmod(main, 0o666)
        same(cache, "main writable by all")
        chmod(main, 0o644)
        same(cache, "main trusted again")
        // The key file rewritten with an item changed.
        try fixture.writeKey("wg0.key")
        items.append(7)
        try write(mainText(items))
        same(cache, "key rewritten")
        try fixture.writeKey("wg0.key", mode: 0o644)
        same(cache, "key readable by all")
        try fixture.writeKey("wg0.key")
        same(cache, "key again")
        // A main item taking a drop-in's name, key, address.
        try write(mainText(items) + "    - {name: da, public_key: \"\(Self.keys[40])\", allowed_ips: [\"2001:db8:1::40/128\"]}\n")
        same(cache, "main item named as a drop-in's")
        try write(mainText(items) + "    - {name: x40, public_key: \"\(Self.keys[60])\", allowed_ips: [\"2001:db8:1::40/128\"]}\n")
        same(cache, "main item keyed as a drop-in's")
        try write(mainText(items) + "    - {name: x40, public_key: \"\(Self.keys[40])\", allowed_ips: [\"2001:db8:1::900/128\"]}\n")
        same(cache, "main item with a drop-in's address")
        try write(mainText(items) + "    - {name: x40, public_key: \"\(Self.keys[40])\", allowed_ips: [\"2001:db8:1::900/120\"]}\n")
        same(cache, "main item around a drop-in's address")
        try write(mainText(items))
        same(cache, "back")
        // Drop-in change right after a main delta, then a main change.
        items.insert(8, at: 1)
        try write(mainText(items))
        same(cache, "inserted again")
        try fixture.write("conf.d/a.yaml", Self.dropIn("da", 60, address: 910))
        same(cache, "drop-in changed")
        items.remove(at: 0)
        try write(mainText(items))
        same(cache, "main again")
        try fixture.write("conf.d/c.yaml", Self.dropIn("dc", 62, address: 920))
        same(cache, "drop-in added")
        try FileManager.default.removeItem(atPath: fixture.path("conf.d/a.yaml"))
        items.insert(9, at: 0)
        try write(mainText(items))
        same(cache, "drop-in removed and main changed")
        items.insert(10, at: 0)
        try write(mainText(items))
        same(cache, "main changed")
        // The main file replaced by a symbolic link to a copy with an item changed.
        items.insert(11, at: 0)
        try fixture.write("copy.yaml", mainText(items))
        try FileManager.default.removeItem(atPath: main)
        symlink("copy.yaml", main)
        same(cache, "symlink")
        items.insert(12, at: 0)
        try fixture.write("copy.yaml", mainText(items))
        same(cache, "through the symlink")
        // The main file renamed over (a new inode) with the same bytes, then an item changed.
        try FileManager.default.removeItem(atPath: main)
        try write(mainText(items))
        same(cache, "regular again")
        items.insert(13, at: 0)
        try write(mainText(items))
        XCTAssertTrue(same(cache, "after").1)
        // The include directory's mode.
        chmod(fixture.path("conf.d"), 0o777)
        items.insert(14, at: 0)
        try write(mainText(items))
        same(cache, "include directory writable by all")
        chmod(fixture.path("conf.d"), 0o755)
        same(cache, "include directory trusted again")
        // The fixture's directory.
        chmod(fixture.directory, 0o777)
        items.insert(15, at: 0)
        try write(mainText(items))
        same(cache, "directory writable by all")
        chmod(fixture.directory, 0o755)
        same(cache, "directory trusted again")
    }

    func testLimitsAfterDeltas() throws {
        var limits = ConfigLimits.standard
        var items = Array(0..<6)
        try write(mainText(items, includeDir: false))
        let fresh = ConfigLoader().load(path: main)
        guard case .success = fresh else { return XCTFail("\(fresh)") }
        var stats = (loads: 0, deltas: 0, ok: 0)
        for (name, change) in [("peers", { (l: inout ConfigLimits) in l.peers = 7 }), ("objects", { $0.objects = 7 }),
                               ("depth", { $0.depth = 6 }), ("fileBytes", { $0.fileBytes = 1000 }), ("totalBytes", { $0.totalBytes = 1000 })] as [(String, (inout ConfigLimits) -> Void)] {
            limits = .standard
            change(&limits)
            items = Array(0..<6)
            try write(mainText(items, includeDir: false))
            let cache = ConfigCache.settled()
            compare(cache, "\(name): first", limits: limits, stats: &stats)
            for step in 0..<4 {
                items.append(20 + step)
                try write(mainText(items, includeDir: false))
                compare(cache, "\(name): \(step) appended", limits: limits, stats: &stats)
                items.removeLast()
                try write(mainText(items, includeDir: false))
                compare(cache, "\(name): \(step) removed", limits: limits, stats: &stats)
            }
            items.append(30)
            items.append(31)
            try write(mainText(items, includeDir: false))
            compare(cache, "\(name): two appended", limits: limits, stats: &stats)
        }
        // Nodes: the exact count of the file.
        for n in 35 ..< 75 {
            limits = .standard
            limits.nodes = n
            items = Array(0..<3)
            try write(mainText(items, includeDir: false))
            let cache = ConfigCache.settled()
            compare(cache, "nodes \(n): first", limits: limits, stats: &stats)
            items.append(40)
            try write(mainText(items, includeDir: false))
            compare(cache, "nodes \(n): appended", limits: limits, stats: &stats)
            items.remove(at: 0)
            try write(mainText(items, includeDir: false))
            compare(cache, "nodes \(n): removed", limits: limits, stats: &stats)
        }
        print("R23 limits: \(stats)")
    }
}

// MARK: defect 2: the kept load is taken for another main file, or another root

extension MainFileDeltaHostileTests {
    /// A cache that loaded `wgkeeper.yaml` then loads one of its drop-ins as the main file: the
    /// drop-in is a file of the kept load (`round.previous.files`), untouched, so the delta
    /// returns the kept load's outcome, which is `wgkeeper.yaml`'s.
    func testADropInLoadedAsTheMainFileThroughTheSameCache() throws {
        try fixture.write("conf.d/a.yaml", Self.dropIn("da", 60, address: 900))
        try write(mainText([0, 1]))
        let cache = ConfigCache.settled()
        same(cache, "first")
        let other = fixture.path("conf.d/a.yaml")
        tickPastTimestamps()
        let cached = LoadOutcome(ConfigLoader().load(path: other, cache: cache))
        let fresh = LoadOutcome(ConfigLoader().load(path: other))
        XCTAssertEqual(cached, fresh, "conf.d/a.yaml as the main file\ncached: \(Self.short(cached))\nfresh:  \(Self.short(fresh))")
    }

    /// The same main file loaded under another `root` (its include directory resolves elsewhere).
    func testTheSameMainFileUnderAnotherRoot() throws {
        let rootA = fixture.path("rootA"), rootB = fixture.path("rootB")
        for (root, address) in [(rootA, 900), (rootB, 950)] {
            try fixture.makeDirectory((root as NSString).lastPathComponent + "/etc/conf.d")
            chmod(root, 0o755)
            chmod(root + "/etc", 0o755)
            try Self.dropIn("da", 60, address: address).write(toFile: root + "/etc/conf.d/a.yaml", atomically: false, encoding: .utf8)
        }
        let text = "runtime:\n  include_dir: /etc/conf.d\n" + Self.head + Self.item(0) + Self.item(1)
        try write(text)
        let cache = ConfigCache.settled()
        tickPastTimestamps()
        let a = LoadOutcome(ConfigLoader(root: rootA).load(path: main, cache: cache))
        XCTAssertNotNil(a.desired, Self.short(a))
        for (step, edit) in ["unchanged", "item changed"].enumerated() {
            if step == 1 { try write(text + Self.item(2)) }
            tickPastTimestamps()
            let cached = LoadOutcome(ConfigLoader(root: rootB).load(path: main, cache: cache))
            let fresh = LoadOutcome(ConfigLoader(root: rootB).load(path: main))
            XCTAssertEqual(cached, fresh, "root B, \(edit)\ncached: \(Self.short(cached))\nfresh:  \(Self.short(fresh))")
            tickPastTimestamps()
            _ = ConfigLoader(root: rootA).load(path: main, cache: cache)
        }
    }
}

// MARK: random sequences over the main file, drop-ins, modes and keys

extension MainFileDeltaHostileTests {
    struct World {
        var lists: [[(n: Int, a: Int, style: Int)]] = [[], []]
        var indents = [4, 6]
        var port = 51820
        var dropIns: [String: [(n: Int, a: Int, d: Int)]] = [:]
        var dropInExtra: [String: String] = [:]
        var gatewayFirst = false
        var finalBreak = true

        func render() -> String {
            var t = "runtime:\n  include_dir: conf.d\n"
            let gateway = "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\"}\n"
            if gatewayFirst { t += gateway }
            t += "wireguard:\n"
            for d in 0..<2 {
                t += "  wg\(d):\n    private_key_file: wg\(d).key\n" + (d == 0 ? "    listen_port: \(port)\n" : "")
                guard !lists[d].isEmpty else { continue }
                t += "    peers:\n"
                for p in lists[d] { t += MainFileDeltaHostileTests.item(p.n, d: d, col: String(repeating: " ", count: indents[d]), style: p.style, address: p.a) }
            }
            if !gatewayFirst { t += gateway }
            if !finalBreak { t.removeLast() }
            return t
        }

        func dropIn(_ name: String) -> String {
            var t = ""
            for d in 0..<2 {
                let peers = dropIns[name]!.filter { $0.d == d }
                guard !peers.isEmpty else { continue }
                if t.isEmpty { t = "wireguard:\n" }
                t += "  wg\(d):\n    peers:\n"
                for p in peers { t += MainFileDeltaHostileTests.item(p.n, d: d, col: "      ", style: 0, address: p.a) }
            }
            return t + (dropInExtra[name] ?? "")
        }
    }

    func testRandomSequencesOverFilesModesAndKeys() throws {
        let seeds = (ProcessInfo.processInfo.environment["R23_WSEEDS"] ?? "2").split(separator: ",").compactMap { UInt64($0) }
        let steps = Int(ProcessInfo.processInfo.environment["R23_WSTEPS"] ?? "120") ?? 120
        var stats = (loads: 0, deltas: 0, ok: 0)
        for seed in seeds {
            var r = Rng(g: SeededGenerator(seed: seed))
            var w = World()
            var n = 0
            func fresh() -> Int { n += 1; return n % 60 }
            for d in 0..<2 { for _ in 0..<(2 + r.below(4)) { let k = fresh(); w.lists[d].append((k, k + 1, r.below(5))) } }
            w.indents = [r.pick([4, 6]), r.pick([4, 6, 8])]
            w.gatewayFirst = r.chance(2)
            for name in ["a.yaml", "b.yaml"] { let k = fresh(); w.dropIns[name] = [(k, k + 1, r.below(2))] }
            try? FileManager.default.removeItem(atPath: fixture.path("conf.d"))
            try fixture.makeDirectory("conf.d")
            try write(w.render())
            for name in w.dropIns.keys { try fixture.write("conf.d/\(name)", w.dropIn(name)) }
            let cache = ConfigCache.settled()
            compare(cache, "seed \(seed) start", stats: &stats)
            var failures = 0
            for step in 0..<steps {
                var what = ""
                let d = r.below(2)
                var mainChanged = true
                switch r.below(24) {
                case 0...5:
                    if w.lists[d].isEmpty { fallthrough }
                    let i = r.below(w.lists[d].count)
                    w.lists[d][i].a = r.chance(10) ? w.lists[r.below(2)].first?.a ?? 7 : 100 + r.below(100)
                    what = "address of \(d)/\(i)"
                case 6...8:
                    let k = r.chance(10) ? w.lists[1 - d].first?.n ?? fresh() : fresh()
                    let at = r.below(w.lists[d].count + 1)
                    w.lists[d].insert((k, 200 + k, r.below(5)), at: at)
                    what = "inserted \(k) at \(d)/\(at)"
                case 9, 10:
                    if w.lists[d].count < 2 { fallthrough }
                    let i = r.below(w.lists[d].count)
                    w.lists[d].remove(at: i)
                    what = "removed \(d)/\(i)"
                case 11:
                    if w.lists[d].count < 2 { fallthrough }
                    w.lists[d].swapAt(0, w.lists[d].count - 1)
                    what = "swapped \(d)"
                case 12:
                    w.port += 1
                    what = "port"
                case 13:
                    w.finalBreak.toggle()
                    what = "final break \(w.finalBreak)"
                case 14, 15:
                    mainChanged = false
                    let name = r.pick(["a.yaml", "b.yaml", "c.yaml"])
                    if w.dropIns[name] == nil || r.chance(3) { let k = fresh(); w.dropIns[name, default: []].append((k, 300 + k, r.below(2))) }
                    else { w.dropIns[name]![0].a = 400 + r.below(50) }
                    try fixture.write("conf.d/\(name)", w.dropIn(name))
                    what = "drop-in \(name) changed"
                case 16:
                    mainChanged = false
                    let name = r.pick(["a.yaml", "b.yaml", "c.yaml"])
                    guard w.dropIns[name] != nil else { what = "nothing"; break }
                    w.dropIns[name] = nil
                    w.dropInExtra[name] = nil
                    try FileManager.default.removeItem(atPath: fixture.path("conf.d/\(name)"))
                    what = "drop-in \(name) removed"
                case 17:
                    mainChanged = false
                    let name = r.pick(["a.yaml", "b.yaml"])
                    guard w.dropIns[name] != nil else { what = "nothing"; break }
                    w.dropInExtra[name] = w.dropInExtra[name] == nil ? "routes:\n  - {destination: \"2001:db8:9::/64\", device: wg1}\n" : nil
                    try fixture.write("conf.d/\(name)", w.dropIn(name))
                    what = "drop-in \(name) routes \(w.dropInExtra[name] != nil)"
                case 18:
                    mainChanged = r.chance(2)
                    let target = r.pick(["conf.d/a.yaml", "wgkeeper.yaml", "conf.d", "wg0.key"])
                    let mode: mode_t = r.chance(2) ? (target == "conf.d" ? 0o777 : 0o666) : (target == "conf.d" ? 0o755 : (target == "wg0.key" ? 0o600 : 0o644))
                    chmod(fixture.path(target), mode)
                    what = "chmod \(target) \(String(mode, radix: 8))"
                case 19:
                    mainChanged = r.chance(2)
                    try fixture.writeKey(r.pick(["wg0.key", "wg1.key"]))
                    what = "key rewritten"
                case 20:
                    // Replaced by rename: a new inode.
                    if let i = w.lists[d].indices.randomElement(using: &r.g) { w.lists[d][i].a = 500 + r.below(50) }
                    try fixture.write("new.yaml", w.render())
                    rename(fixture.path("new.yaml"), main)
                    mainChanged = false
                    what = "renamed over, \(d) changed"
                case 21:
                    // Main item change and a drop-in change together.
                    if let i = w.lists[d].indices.randomElement(using: &r.g) { w.lists[d][i].a = 600 + r.below(50) }
                    if w.dropIns["a.yaml"] != nil { w.dropIns["a.yaml"]![0].a = 650 + r.below(50); try fixture.write("conf.d/a.yaml", w.dropIn("a.yaml")) }
                    what = "main and drop-in"
                default:
                    what = "written again"
                }
                if mainChanged { try write(w.render()) }
                if !compare(cache, "seed \(seed) step \(step): \(what)\n\(w.render())", stats: &stats) {
                    failures += 1
                    if failures > 2 { break }
                }
                // Modes mended, mostly.
                if !r.chance(4) {
                    chmod(fixture.path("conf.d/a.yaml"), 0o644); chmod(main, 0o644); chmod(fixture.path("conf.d"), 0o755); chmod(fixture.path("wg0.key"), 0o600)
                }
            }
        }
        print("R23 world: \(stats)")
    }
}

// MARK: hostile texts, old and new

extension MainFileDeltaHostileTests {
    func testHostileTextPairs() throws {
        let k = Self.keys
        let h = Self.head
        func it(_ n: Int, _ c: String = "    ") -> String { Self.item(n, indent: c.count) }
        let ind = "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\"}\nwireguard:\n  wg0:\n    private_key_file: wg0.key\n    peers:\n"
        let pairs: [(String, String, String)] = [
            ("keep chomping at the list's end",
             h + it(0) + "    - name: p1\n      public_key: \(k[1])\n      allowed_ips: [2001:db8:1::2/128]\n  # c\n",
             h + it(0) + "    - name: p1\n      public_key: |+\n        \(k[1])\n\n          \n      allowed_ips: [2001:db8:1::2/128]\n"),
            ("indentation indicator",
             h + it(0) + it(1),
             h + it(0) + "    - name: |2-\n        p1\n      public_key: >1-\n        \(k[1])\n      allowed_ips: [2001:db8:1::2/128]\n"),
            ("double quoted across lines at column 0",
             h + it(0) + it(1),
             h + it(0) + "    - name: \"p1\"\n      public_key: \"\(k[1].prefix(20))\n\(k[1].dropFirst(20))\"\n      allowed_ips: [2001:db8:1::2/128]\n"),
            ("flow across lines at column 0",
             h + it(0) + it(1),
             h + it(0) + "    - {name: p1,\npublic_key: \"\(k[1])\",\n allowed_ips: [\"2001:db8:1::2/128\"]}\n"),
            ("complex key item",
             h + it(0) + it(1),
             h + it(0) + "    - ? name\n      : p1\n      ? public_key\n      : \(k[1])\n      allowed_ips: [2001:db8:1::2/128]\n"),
            ("directives, tag handles",
             "%YAML 1.1\n%TAG !e! tag:example.com,2000:\n%TAG ! tag:example.com,2001:\n---\n" + h + it(0) + it(1),
             "%YAML 1.1\n%TAG !e! tag:example.com,2000:\n%TAG ! tag:example.com,2001:\n---\n" + h + it(0) + "    - !e!peer {name: p1, public_key: \"\(k[1])\", allowed_ips: [\"2001:db8:1::2/128\"]}\n" + "    - !peer {name: p2, public_key: \"\(k[2])\", allowed_ips: [\"2001:db8:1::3/128\"]}\n"),
            ("document end after the list",
             h + it(0) + it(1) + "...\n",
             h + it(0) + it(1) + it(2) + "...\n"),
            ("document end and more after the list",
             h + it(0) + it(1) + "...\n",
             h + it(0) + it(1) + it(2) + "...\n---\nx: 1\n"),
            ("indentless, a key at the list's column after",
             ind + "    - {name: p0, public_key: \"\(k[0])\", allowed_ips: [\"2001:db8:1::1/128\"]}\n    prune_peers: true\n",
             ind + "    - {name: p0, public_key: \"\(k[0])\", allowed_ips: [\"2001:db8:1::1/128\"]}\n    - name: p1\n      public_key: \(k[1])\n      allowed_ips:\n      - 2001:db8:1::2/128\n    prune_peers: true\n"),
            ("CR LF",
             (h + it(0) + it(1)).replacingOccurrences(of: "\n", with: "\r\n"),
             (h + it(0) + it(1) + it(2)).replacingOccurrences(of: "\n", with: "\r\n")),
            ("CR LF, the new item with LF",
             (h + it(0) + it(1)).replacingOccurrences(of: "\n", with: "\r\n"),
             (h + it(0) + it(1)).replacingOccurrences(of: "\n", with: "\r\n") + it(2)),
            ("lone CR ending the last line",
             h + it(0) + String(it(1).dropLast()) + "\r",
             h + it(0) + String(it(1).dropLast()) + "\r" + it(2)),
            ("NEL ending the last line",
             h + it(0) + String(it(1).dropLast()) + "\u{85}",
             h + it(0) + String(it(1).dropLast()) + "\u{85}" + it(2)),
            ("byte order mark and multibyte before",
             "\u{FEFF}# é ☃ 𝄞\n" + h + it(0) + it(1),
             "\u{FEFF}# é ☃ 𝄞\n" + h + it(0) + "    - {name: p1, public_key: \"\(k[1])\", allowed_ips: [\"2001:db8:1::2/128\"]}  # ☃\n"),
            ("byte order mark at the start of an item's line",
             h + it(0) + it(1),
             h + it(0) + "\u{FEFF}" + it(1)),
            ("byte order mark at the start of an item's second line",
             h + it(0) + it(1),
             h + it(0) + "    - name: p1\n\u{FEFF}     public_key: \(k[1])\n      allowed_ips: [2001:db8:1::2/128]\n"),
            ("tab after the dash",
             h + it(0) + it(1),
             h + it(0) + "    -\t{name: p1, public_key: \"\(k[1])\", allowed_ips: [\"2001:db8:1::2/128\"]}\n"),
            ("item emptied to a dash",
             h + it(0) + it(1),
             h + it(0) + "    -\n"),
            ("plain scalar running into the next item's line",
             h + it(0) + it(1) + it(2),
             h + it(0) + "    - name: p1\n      public_key: \(k[1])\n      allowed_ips: [2001:db8:1::2/128]\n      endpoint: x\n" + it(2)),
            ("a line at the list's column inside the items",
             h + it(0) + it(1) + it(2),
             h + it(0) + it(1) + "    prune_peers: true\n" + it(2)),
            ("a comment line left of the list inside the items",
             h + it(0) + it(1) + it(2),
             h + it(0) + it(1) + "# c\n  # d\n" + it(2)),
            ("an item at column 0 after the list",
             h + it(0) + it(1),
             h + it(0) + it(1) + "- {name: p2, public_key: \"\(k[2])\", allowed_ips: [\"2001:db8:1::3/128\"]}\n"),
            ("a key at column 0 after the last item",
             h + it(0) + it(1),
             h + it(0) + it(1) + "routes: []\n"),
            ("a block scalar item",
             h + it(0) + it(1),
             h + it(0) + it(1) + "    - |\n      name: p2\n"),
        ]
        var stats = (loads: 0, deltas: 0, ok: 0)
        for (what, old, new) in pairs { try oldNewOld(old, new, what, stats: &stats) }
        print("R23 pairs: \(stats)")
    }
}

// MARK: reloads that see a file half written

extension MainFileDeltaHostileTests {
    /// An editor's write seen half done: every load reads a prefix of the new text (cut
    /// anywhere, mid-line too), then the whole.
    func testReloadsOfAFileHalfWritten() throws {
        var r = Rng(g: SeededGenerator(seed: 77))
        var stats = (loads: 0, deltas: 0, ok: 0)
        for round in 0..<4 {
            var items = Array(0..<6)
            let gatewayFirst = round % 2 == 0
            func text() -> [UInt8] {
                let gateway = "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\"}\n"
                var t = (gatewayFirst ? gateway : "") + "wireguard:\n  wg0:\n    private_key_file: wg0.key\n    peers:\n"
                t += items.map { Self.item($0, d: 0, col: "    ", style: $0 % 3 == 0 ? $0 % 5 : 0) }.joined()
                if !gatewayFirst { t += gateway }
                return Array(t.utf8)
            }
            let cache = ConfigCache.settled()
            try writeBytes(text())
            compare(cache, "round \(round) start", stats: &stats)
            for step in 0..<12 {
                switch r.below(3) {
                case 0: items.append(20 + step + 20 * round)
                case 1: if items.count > 2 { items.remove(at: r.below(items.count)) }
                default: items.insert(40 + step + 20 * round, at: r.below(items.count + 1))
                }
                let full = text()
                for _ in 0..<3 {
                    var cut = full.count - 1 - r.below(min(full.count - 1, 200))
                    // Half of them at a line's start (or just before its line break).
                    if r.chance(2), let end = full[..<cut].lastIndex(of: 0x0A) { cut = end + (r.chance(3) ? 0 : 1) }
                    try writeBytes(Array(full[..<cut]))
                    compare(cache, "round \(round) step \(step): first \(cut) of \(full.count) bytes", stats: &stats)
                }
                try writeBytes(full)
                compare(cache, "round \(round) step \(step): whole", stats: &stats)
            }
        }
        print("R23 half written: \(stats)")
    }
}

// MARK: the last item against what follows the list

extension MainFileDeltaHostileTests {
    func testLastItemsAgainstWhatFollowsTheList() throws {
        let k = Self.keys
        let gateway = "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\"}\n"
        let afters: [(String, Bool)] = [
            ("", true), ("", false), ("routes: []\n", true), ("  wg1:\n    private_key_file: wg1.key\n", true), ("    prune_peers: true\n", true),
            ("# c\n", true), ("# c\n", false), ("...\n", true), ("\n\n", true), ("  # c\n\n  wg1:\n    private_key_file: wg1.key\n", true),
            ("     \n", true), ("   ", false),
        ]
        let lasts: [(String, String)] = [
            ("name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::2/128]", "name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::3/128]"),
            ("name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::2/128]", "name: |+\nP  p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::3/128]"),
            ("name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::2/128]", "name: p1\nPallowed_ips: [2001:db8:1::3/128]\nPpublic_key: |-\nP  \(k[1])\n\nP  \n"),
            ("name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::2/128]", "name: p1\nPallowed_ips: [2001:db8:1::3/128]\nPpublic_key: >+\nP  \(k[1])\n"),
            ("name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::2/128]", "name: p1\nPallowed_ips: [2001:db8:1::3/128]\nPpublic_key: |\n"),
            ("name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::2/128]", "name: p1\nPallowed_ips: [2001:db8:1::3/128]\nPpublic_key: \(k[1].prefix(10))\nP  \(k[1].dropFirst(10))"),
            ("name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::2/128]", "name: p1\nPallowed_ips:\nP- 2001:db8:1::3/128\nPpublic_key: \(k[1])"),
            ("name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::2/128]", "name: p1\nPpublic_key: \(k[1])\nPallowed_ips:\nP- 2001:db8:1::3/128\n\n# after\n"),
            ("name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::2/128]", "name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::3/128]\n- {name: p2, public_key: \"\(k[2])\", allowed_ips: [\"2001:db8:1::4/128\"]}"),
            ("name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::2/128]", "name: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::3/128]\nPendpoint: \"[2001:db8:ff::1]:51820\"  # é"),
            ("{name: p1, public_key: \"\(k[1])\", allowed_ips: [\"2001:db8:1::2/128\"]}", "{name: p1, public_key: \"\(k[1])\",\nallowed_ips: [\"2001:db8:1::3/128\"]\n}"),
            ("{name: p1, public_key: \"\(k[1])\", allowed_ips: [\"2001:db8:1::2/128\"]}", "? name\n: p1\nPpublic_key: \(k[1])\nPallowed_ips: [2001:db8:1::3/128]"),
        ]
        var stats = (loads: 0, deltas: 0, ok: 0)
        for indent in [4, 6] {
            let c = String(repeating: " ", count: indent), p = String(repeating: " ", count: indent + 2)
            // Half of what may follow the list at each column (the whole of it took 47 s).
            for (a, (after, finalBreak)) in afters.enumerated() where a % 2 == indent / 2 % 2 {
                for (old, new) in lasts {
                    func render(_ last: String) -> String {
                        // `- ` at the list's column starts an item in the last text; P its item's column.
                        var body = last.replacingOccurrences(of: "\nP", with: "\n" + p).replacingOccurrences(of: "\n- ", with: "\n" + c + "- ")
                        body = body.replacingOccurrences(of: "\n:", with: "\n" + p.dropLast(2) + ":")
                        var t = gateway + "wireguard:\n  wg0:\n    private_key_file: wg0.key\n    peers:\n" + Self.item(0, indent: indent) + c + "- " + body + "\n" + after
                        if !finalBreak, t.hasSuffix("\n") { t.removeLast() }
                        return t
                    }
                    try oldNewOld(render(old), render(new), "indent \(indent), after \(after.debugDescription) \(finalBreak): \(old.debugDescription) to \(new.debugDescription)",
                                  stats: &stats)
                }
            }
        }
        print("R23 last items: \(stats)")
    }
}
