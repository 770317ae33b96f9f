@testable import Config
import Foundation
import Glibc
import Netlink
import Reconciler
import TestSupport
import XCTest

/// A reload whose changed drop-in files hold peers alone is a delta of the last load
/// (`ConfigLoader.dropInDelta`): it must give exactly what a fresh load of the same files gives,
/// and where a fresh load reports an error, the delta must not be taken.
final class DropInDeltaTests: XCTestCase {
    private var fixture: ConfigFixture!
    private var main: String { fixture.path("wgkeeper.yaml") }
    private var confD: String { fixture.path("conf.d") }

    override func setUpWithError() throws {
        fixture = try ConfigFixture(for: self)
        try fixture.writeKey("wg1.key")
        try fixture.makeDirectory("conf.d")
    }

    private var loads = 0, accepted = 0, deltas = 0, watched = 0

    @discardableResult
    private func assertSameAsFresh(_ cache: ConfigCache, _ context: @autoclosure () -> String, limits: ConfigLimits = .standard,
                                   file: StaticString = #filePath, line: UInt = #line) -> (outcome: LoadOutcome, delta: Bool) {
        tickPastTimestamps()
        let cached = LoadOutcome(ConfigLoader(limits: limits).load(path: main, cache: cache))
        let delta = cache.lastLoad.delta
        let fresh = LoadOutcome(ConfigLoader(limits: limits).load(path: main))
        XCTAssertEqual(cached, fresh, "\(context())\(delta ? " (delta)" : "")", file: file, line: line)
        if delta { XCTAssertNotNil(cached.desired, "a delta with errors: \(context())", file: file, line: line) }
        loads += 1
        if cached.desired != nil { accepted += 1 }
        if delta { deltas += 1 }
        if cache.lastLoad.watched { watched += 1 }
        tickPastTimestamps()
        return (cached, delta)
    }

    private func write(_ name: String, _ text: String) throws {
        try text.write(toFile: confD + "/" + name, atomically: false, encoding: .utf8)
    }

    private func mainText(ndp: String, unsafe: Bool, extra: String = "") -> String {
        """
        runtime:
          include_dir: conf.d
        wireguard:
          wg0:
            private_key_file: wg0.key
            peers:
              - {name: m0, public_key: "\(ConfigFixture.alice)", allowed_ips: ["2001:db8:1::f0/128"], endpoint: "[2001:db8:77::1]:51820"}
          wg1:
            private_key_file: wg1.key
        gateway: {tunnel: wg0, lan: private0, lan_prefix: "2001:db8:1::/64", ndp: \(ndp), allow_unsafe_allowed_ips: \(unsafe)}
        routes:
          - {destination: "2001:db8:9::/64", device: wg0}
          - {destination: "2001:db8:a::/64", device: private0}
        proxies:
          - {address: "2001:db8:1::beef", device: private0}
        \(extra)
        """
    }

    // MARK: the property

    /// Random edits of a drop-in directory of one or two peers per file (the layout a delta is
    /// for), and of the main file now and then: peers changed, files added, removed and renamed,
    /// and every kind of collision a delta must not miss (a name, key or prefix taken twice, a
    /// prefix inside another's, an endpoint inside a tunnel prefix, an explicit route's or
    /// proxy's address, the device's own key, unsafe prefixes, a wide prefix inside the LAN),
    /// as well as files a delta does not take (a setting beside the peers, a preshared key file,
    /// an unknown device). After each, the cached load equals a fresh one.
    func testDeltaEqualsFreshLoadAfterRandomEdits() throws {
        for seed in [101, 102, 103, 104, 105] as [UInt64] {
            try runRandomEdits(seed: seed, steps: 40, watches: seed % 2 == 1)
        }
        print("deltas: \(deltas) of \(loads) loads (\(watched) told by the watch), \(accepted) accepted")
        XCTAssertGreaterThan(deltas, loads / 4, "\(deltas) of \(loads) loads were deltas")
        XCTAssertGreaterThan(watched, deltas / 4, "\(watched) of \(deltas) deltas were told by the watch")
        XCTAssertGreaterThan(deltas - watched, deltas / 4, "\(deltas - watched) of \(deltas) deltas read every file's lstat")
        XCTAssertGreaterThan(loads - accepted, loads / 10, "\(loads - accepted) of \(loads) loads refused")
    }

    private func runRandomEdits(seed: UInt64, steps: Int, watches: Bool) throws {
        var random = SeededGenerator(seed: seed)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: confD)) ?? [] { try FileManager.default.removeItem(atPath: confD + "/" + name) }
        let ownKey = try XCTUnwrap(WireGuardKey(base64: try String(contentsOfFile: fixture.path("wg0.key"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines))).base64
        let ownPublic = try XCTUnwrap(PrivateKey(base64: ownKey)).publicKey.base64
        let keys = (0..<80).map { _ in PrivateKey.generate().publicKey.base64 }
        var ndp = "kernel", unsafe = false
        try fixture.write("wgkeeper.yaml", mainText(ndp: ndp, unsafe: unsafe))
        var serial = 0

        // Files written with a collision (or what a delta does not take), until rewritten.
        var bad = Set<String>()
        var collide = false
        func peer(_ r: inout SeededGenerator) -> String {
            serial += 1
            var name = "p\(serial)", key = keys[serial % keys.count]
            var ips = ["2001:db8:1::\(String(serial + 0x100, radix: 16))/128"]
            var endpoint = r.below(3) == 0 ? ", endpoint: \"[2001:db8:66::\(serial)]:51820\"" : ""
            var extra = ""
            switch collide ? r.below(19) : 19 {
            case 0: name = "p\(r.below(serial) + 1)"                                 // a name taken twice (maybe)
            case 1: key = keys[r.below(keys.count)]                                   // a key taken twice (maybe)
            case 2: ips = ["2001:db8:1::\(String(r.below(serial) + 0x101, radix: 16))/128"]  // an address taken twice (maybe)
            case 3: ips.append("2001:db8:1::/120")                                     // wide, inside the LAN, holds others
            case 4: ips = ["2001:db8:2::/48"]; if r.below(2) == 0 { ips.append("2001:db8:2:5::/64") }  // outside, nested in one peer
            case 5: ips = ["2001:db8:2:\(r.below(3))::/64"]                           // inside another peer's /48 (maybe)
            case 6: endpoint = ", endpoint: \"[2001:db8:2::\(r.below(3) + 1)]:51820\""  // inside a tunnel prefix (maybe)
            case 7: endpoint = ", endpoint: \"[2001:db8:9::1]:51820\""                 // inside an explicit route via the tunnel
            case 8: ips = ["2001:db8:9::/64"]                                          // an explicit route's destination
            case 9: ips = ["2001:db8:1::beef/128"]                                     // an explicit proxy's address
            case 10: key = ownPublic                                                   // the device's own key
            case 11: key = ownKey                                                      // its private key
            case 12: ips = ["::/0"]
            case 13: ips = ["fe80::\(serial)/128"]
            case 14: extra = ", preshared_key_file: ../alice.psk"
            case 15: ips = ["2001:db8:77::/64"]                                        // holds m0's endpoint
            case 16: ips = ["2001:db8:66::/64"]                                        // holds other peers' endpoints
            case 17: ips = ["2001:db8:1::f0/128"]                                      // m0's
            case 18: name = "m0"
            default: break
            }
            return "      - {name: \(name), public_key: \"\(key)\", allowed_ips: [\(ips.map { "\"\($0)\"" }.joined(separator: ", "))]\(endpoint)\(extra)}\n"
        }
        func fragment(_ r: inout SeededGenerator) -> String {
            var text = "wireguard:\n"
            let device = r.below(6) == 0 ? "wg1" : r.below(60) == 0 ? "wg9" : "wg0"
            text += "  \(device):\n    peers:\n"
            for _ in 0..<(r.below(5) == 0 ? 2 : 1) { text += peer(&r) }
            if r.below(8) == 0 { text += "  \(device == "wg0" ? "wg1" : "wg0"):\n    peers:\n" + peer(&r) }
            if collide, r.below(20) == 0 { text += "    listen_port: 51821\n" }
            return text
        }
        /// A file's new text: one edit in three collides with something.
        func edit(_ name: String, _ r: inout SeededGenerator) throws {
            collide = r.below(3) == 0
            if !collide, r.below(20) == 0 { try fixture.writeKey("wg1.key") }  // a device key changed too
            try self.write(name, fragment(&r))
            if collide { bad.insert(name) } else { bad.remove(name) }
        }
        func files() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: confD)) ?? []).filter { $0.hasSuffix(".yaml") }.sorted()
        }

        for i in 0..<12 { try self.write("\(100 + 7 * i)-start.yaml", fragment(&random)) }
        let cache = ConfigCache.settled(watches: watches)
        assertSameAsFresh(cache, "seed \(seed), start")
        for step in 0..<steps {
            let present = files()
            var what = ""
            // Now and then several edits land in one reload.
            for _ in 0..<(random.below(4) == 0 ? 1 + random.below(3) : 1) {
                bad.formIntersection(files())
                if let name = bad.sorted().first, random.below(2) == 0 {
                    if random.below(3) == 0 {
                        try FileManager.default.removeItem(atPath: confD + "/" + name)
                        bad.remove(name)
                        what += "remove \(name) (bad); "
                    } else {
                        collide = false
                        try self.write(name, fragment(&random))
                        bad.remove(name)
                        what += "repair \(name); "
                    }
                    continue
                }
                switch present.isEmpty ? 0 : random.below(12) {
                case 0, 1:
                    let name = "\(100 + random.below(90))-new.yaml"
                    try edit(name, &random)
                    what += "add \(name); "
                case 2:
                    let name = present[random.below(present.count)]
                    try? FileManager.default.removeItem(atPath: confD + "/" + name)
                    what += "remove \(name); "
                case 3:
                    let from = present[random.below(present.count)]
                    let to = "\(100 + random.below(90))-moved.yaml"
                    rename(confD + "/" + from, confD + "/" + to)
                    if bad.remove(from) != nil { bad.insert(to) }
                    what += "rename \(from) to \(to); "
                case 4:
                    if random.below(3) == 0 {
                        ndp = random.below(2) == 0 ? "kernel" : "datapath"
                        unsafe = random.below(4) == 0
                        try fixture.write("wgkeeper.yaml", mainText(ndp: ndp, unsafe: unsafe))
                        what += "main file: ndp \(ndp), unsafe \(unsafe); "
                    } else {
                        try write("050-empty.yaml", random.below(2) == 0 ? "" : "wireguard: {}\n")
                        what += "050-empty.yaml; "
                    }
                case 5:
                    // The files that sort first and last: their peers head and end the lists.
                    let name = random.below(2) == 0 ? "000-first.yaml" : "999-last.yaml"
                    try edit(name, &random)
                    what += "rewrite \(name); "
                default:
                    let name = present[random.below(present.count)]
                    try edit(name, &random)
                    what += "rewrite \(name); "
                }
            }
            assertSameAsFresh(cache, "seed \(seed), step \(step): \(what)")
        }
    }

    // MARK: what a delta reads

    /// One changed file of many: only its peer is decoded, by a delta; the next whole load
    /// (the main file changed) takes the kept peers where the deltas moved them.
    func testDeltaDecodesTheChangedFileAloneAndAWholeLoadAfterItKeepsThePeersWhereTheyMoved() throws {
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        func peer(_ n: Int) -> String {
            "wireguard:\n  wg0:\n    peers:\n      - {name: c\(n), public_key: \"\(PrivateKey.generate().publicKey.base64)\", allowed_ips: [\"2001:db8:1::\(String(0x1000 + n, radix: 16))/128\"]}\n"
        }
        for n in 0..<50 { try write(String(format: "%03d.yaml", n * 2), peer(n)) }
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "start")
        XCTAssertFalse(cache.lastLoad.delta)

        // Nothing changed (the watch says so of the drop-ins): the kept outcome again.
        XCTAssertTrue(assertSameAsFresh(cache, "unchanged").delta)
        XCTAssertEqual(cache.lastLoad, ConfigCache.Statistics(filesRead: 0, filesParsed: 0, peersDecoded: 0, delta: true, mainFile: true))

        try write("040.yaml", peer(100))
        XCTAssertTrue(assertSameAsFresh(cache, "one changed").delta)
        XCTAssertEqual(cache.lastLoad, ConfigCache.Statistics(filesRead: 1, filesParsed: 1, peersDecoded: 1, delta: true, watched: true))

        // Counts change: files after the change point move.
        try write("041.yaml", peer(101) + "      - {name: c102, public_key: \"\(PrivateKey.generate().publicKey.base64)\", allowed_ips: [\"2001:db8:1::2000/128\"]}\n")
        try FileManager.default.removeItem(atPath: confD + "/010.yaml")
        XCTAssertTrue(assertSameAsFresh(cache, "one added with two peers, one removed").delta)
        XCTAssertEqual(cache.lastLoad.peersDecoded, 2)

        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false, extra: "# changed\n"))
        XCTAssertFalse(assertSameAsFresh(cache, "main changed: a whole load").delta)
        XCTAssertEqual(cache.lastLoad.peersDecoded, 3, "the main file's peer and the two the delta took; the others were kept where they moved")
        XCTAssertTrue(assertSameAsFresh(cache, "unchanged again").delta)
    }

    /// A device's key file changed: the reload reads it again and goes the whole way.
    func testChangedDeviceKeyIsReadAgain() throws {
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        try write("10.yaml", "wireguard:\n  wg1:\n    peers:\n      - {name: c1, public_key: \"\(ConfigFixture.bob)\", allowed_ips: [\"2001:db8:3::1/128\"]}\n")
        let cache = ConfigCache.settled()
        let first = assertSameAsFresh(cache, "start").outcome
        try fixture.writeKey("wg1.key")
        let second = assertSameAsFresh(cache, "key changed")
        XCTAssertFalse(second.delta)
        XCTAssertNotEqual(first.desired?.devices[1].privateKey, second.outcome.desired?.devices[1].privateKey)
    }

    // MARK: what the watch does not see

    private func onePeer(_ name: String, _ address: Int) -> String {
        "wireguard:\n  wg0:\n    peers:\n      - {name: \(name), public_key: \"\(PrivateKey.generate().publicKey.base64)\", allowed_ips: [\"2001:db8:1::\(address)/128\"]}\n"
    }

    /// Edits the watch of the directory is not told of: a file reached through a symbolic link
    /// (its target changed in place), a file with a second hard link (written through the other
    /// name), a file made a symbolic link. Each is read at every load, and each reload equals a
    /// fresh load.
    func testFilesTheWatchCannotSeeAreReadAtEveryLoad() throws {
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        try fixture.write("elsewhere/target.yaml", onePeer("linked", 11))
        try fixture.write("elsewhere/second.yaml", onePeer("other", 21))
        XCTAssertEqual(symlink(fixture.path("elsewhere/target.yaml"), confD + "/10-linked.yaml"), 0)
        XCTAssertEqual(link(fixture.path("elsewhere/second.yaml"), confD + "/20-hard.yaml"), 0)
        try write("30-plain.yaml", onePeer("plain", 31))
        for n in 0..<20 { try write("5\(String(format: "%02d", n)).yaml", onePeer("c\(n)", 100 + n)) }
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "start")
        XCTAssertTrue(assertSameAsFresh(cache, "unchanged").delta)
        XCTAssertTrue(cache.lastLoad.watched)
        XCTAssertEqual(cache.lastLoad.filesParsed, 0)

        // Same size, and the mtime put back: only reading the target tells.
        func rewrite(_ path: String, _ from: String, _ to: String) throws {
            var info = stat()
            stat(path, &info)
            let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: from, with: to)
            let fd = open(path, O_WRONLY | O_TRUNC)
            XCTAssertGreaterThanOrEqual(fd, 0)
            _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
            close(fd)
            var times = [info.st_atim, info.st_mtim]
            utimensat(AT_FDCWD, path, &times, 0)
        }
        try rewrite(fixture.path("elsewhere/target.yaml"), "::11/", "::12/")
        let linked = assertSameAsFresh(cache, "symbolic link's target changed")
        XCTAssertTrue(linked.delta)
        XCTAssertEqual(linked.outcome.desired?.devices[0].peers.first { $0.name == "linked" }?.allowedIPs.map(\.description), ["2001:db8:1::12/128"])

        try rewrite(fixture.path("elsewhere/second.yaml"), "::21/", "::22/")
        let hard = assertSameAsFresh(cache, "written through the other hard link")
        XCTAssertEqual(hard.outcome.desired?.devices[0].peers.first { $0.name == "other" }?.allowedIPs.map(\.description), ["2001:db8:1::22/128"])

        // A plain file replaced by a symbolic link: read from then on.
        try fixture.write("elsewhere/plain.yaml", onePeer("plain", 32))
        XCTAssertEqual(symlink(fixture.path("elsewhere/plain.yaml"), confD + "/.tmp"), 0)
        XCTAssertEqual(rename(confD + "/.tmp", confD + "/30-plain.yaml"), 0)
        assertSameAsFresh(cache, "plain file made a link")
        try rewrite(fixture.path("elsewhere/plain.yaml"), "::32/", "::33/")
        let plain = assertSameAsFresh(cache, "its target changed")
        XCTAssertEqual(plain.outcome.desired?.devices[0].peers.first { $0.name == "plain" }?.allowedIPs.map(\.description), ["2001:db8:1::33/128"])
        XCTAssertTrue(plain.delta)

        // A target made group-writable: refused, as a fresh load refuses it.
        chmod(fixture.path("elsewhere/target.yaml"), 0o664)
        XCTAssertNil(assertSameAsFresh(cache, "target group-writable").outcome.desired)
        chmod(fixture.path("elsewhere/target.yaml"), 0o644)
        assertSameAsFresh(cache, "target trusted again")
    }

    /// The kernel facts `IncludeWatch` rests on, on this kernel: a watch of a directory names an
    /// entry written, `chmod`ed, created, renamed or removed there, and a file written through a
    /// shared mapping once its writer closes it; it says nothing of a write through a second
    /// hard link elsewhere, nor of such a link being made (hence those files are read at every
    /// load); an overflow or the directory's removal ends it (`lost`).
    func testWatchFactsOnThisKernel() throws {
        try write("a.yaml", "a\n")
        try write("m.yaml", "m\n")
        // A local file system, by statfs and by the mount's type alike.
        XCTAssertTrue(IncludeWatch.localMountTypes.contains(try XCTUnwrap(IncludeWatch.mountType(of: confD))))
        let watch = try XCTUnwrap(IncludeWatch(directory: confD), "a watch on \(confD)")
        XCTAssertEqual(watch.drain().names, [])
        try "b\n".write(toFile: confD + "/a.yaml", atomically: false, encoding: .utf8)
        XCTAssertEqual(watch.drain().names, ["a.yaml"])
        chmod(confD + "/a.yaml", 0o600)
        XCTAssertEqual(watch.drain().names, ["a.yaml"])

        XCTAssertEqual(link(confD + "/a.yaml", fixture.path("second")), 0)
        var changes = watch.drain()
        XCTAssertEqual(changes.names, [], "a second link made elsewhere: no event")
        let fd = open(fixture.path("second"), O_WRONLY | O_APPEND)
        _ = "c\n".withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
        changes = watch.drain()
        XCTAssertEqual(changes.names, [], "written through the other link: no event")

        let m = open(confD + "/m.yaml", O_RDWR)
        let map = try XCTUnwrap(mmap(nil, 2, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0))
        map.storeBytes(of: UInt8(ascii: "z"), as: UInt8.self)
        msync(map, 2, MS_SYNC)
        XCTAssertEqual(watch.drain().names, [], "a write through a mapping: no event yet")
        munmap(map, 2)
        close(m)
        XCTAssertEqual(watch.drain().names, ["m.yaml"], "its writer closed it")

        XCTAssertEqual(rename(confD + "/a.yaml", confD + "/b.yaml"), 0)
        changes = watch.drain()
        XCTAssertEqual(changes.names, ["a.yaml", "b.yaml"])
        XCTAssertTrue(changes.listing)
        XCTAssertFalse(changes.lost)
        for name in try FileManager.default.contentsOfDirectory(atPath: confD) { try FileManager.default.removeItem(atPath: confD + "/" + name) }
        XCTAssertEqual(rmdir(confD), 0)
        XCTAssertTrue(watch.drain().lost, "the directory removed")
    }

    /// The include directory moved away and another put in its place: the old watch ends, the
    /// load reads every file and watches the new directory.
    func testReplacedIncludeDirectoryIsReadWhole() throws {
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        for n in 0..<5 { try write("\(n).yaml", onePeer("c\(n)", 100 + n)) }
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "start")
        XCTAssertTrue(assertSameAsFresh(cache, "unchanged").delta)
        XCTAssertEqual(rename(confD, fixture.path("conf.old")), 0)
        try fixture.makeDirectory("conf.d")
        for n in 0..<5 { try write("\(n).yaml", onePeer("d\(n)", 200 + n)) }
        assertSameAsFresh(cache, "replaced")
        XCTAssertFalse(cache.lastLoad.watched, "every file read")
        XCTAssertEqual(cache.lastLoad.filesRead, 5, "the new directory's five files")
        try write("2.yaml", onePeer("e2", 300))
        let after = assertSameAsFresh(cache, "a file of the new directory changed")
        XCTAssertTrue(after.delta)
        XCTAssertTrue(cache.lastLoad.watched)
        // The old directory's files change unseen: they are no longer read.
        try "garbage: [".write(toFile: fixture.path("conf.old/1.yaml"), atomically: false, encoding: .utf8)
        XCTAssertNotNil(assertSameAsFresh(cache, "old directory changed").outcome.desired)
    }

    /// A changed drop-in that names an include directory itself is refused, as in a fresh load.
    func testNestedIncludeDirInAChangedFileIsRefused() throws {
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        try write("1.yaml", onePeer("c1", 101))
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "start")
        try write("1.yaml", onePeer("c1", 101) + "runtime: {include_dir: x}\n")
        XCTAssertNil(assertSameAsFresh(cache, "nested").outcome.desired)
    }

    /// Creates a file in the include directory whose name is `bytes` (any bytes, not only UTF-8).
    private func writeRaw(_ bytes: [UInt8], _ text: String) throws {
        let path = Array((confD + "/").utf8) + bytes + [0]
        let fd = path.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { open($0.baseAddress!, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        }
        XCTAssertGreaterThanOrEqual(fd, 0)
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }

    private func unlinkRaw(_ bytes: [UInt8]) {
        let path = Array((confD + "/").utf8) + bytes + [0]
        _ = path.withUnsafeBufferPointer { buffer in buffer.withMemoryRebound(to: CChar.self) { unlink($0.baseAddress!) } }
    }

    /// A drop-in whose name is not UTF-8: a fresh load reads the name as decoded (a U+FFFD in
    /// place of the byte), finds no such file and refuses; the watch's event names the same
    /// decoded name, which a delta must not take for a file that went.
    func testANameThatIsNotUTF8IsRefusedAsByAFreshLoad() throws {
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        for n in 0..<3 { try write("\(n).yaml", onePeer("c\(n)", 100 + n)) }
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "start")
        XCTAssertTrue(assertSameAsFresh(cache, "unchanged").delta)
        let name: [UInt8] = [0xFF] + Array(".yaml".utf8)
        defer { unlinkRaw(name) }
        try writeRaw(name, onePeer("odd", 50))
        XCTAssertNil(assertSameAsFresh(cache, "a name that is not UTF-8").outcome.desired)
        unlinkRaw(name)
        XCTAssertNotNil(assertSameAsFresh(cache, "removed").outcome.desired)
    }

    /// Two drop-ins whose names differ only in Unicode normalisation (`é` as one scalar, and as
    /// `e` with a combining accent): different files, both read by a fresh load, though Swift's
    /// strings compare them equal.
    func testNamesEqualUnderUnicodeNormalisationAreDifferentFiles() throws {
        let composed = Array("\u{E9}.yaml".utf8), decomposed = Array("e\u{301}.yaml".utf8)
        XCTAssertNotEqual(composed, decomposed)
        defer { unlinkRaw(composed); unlinkRaw(decomposed) }
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        for n in 0..<3 { try write("\(n).yaml", onePeer("c\(n)", 100 + n)) }
        try writeRaw(composed, onePeer("composed", 11))
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "start")
        XCTAssertTrue(assertSameAsFresh(cache, "unchanged").delta)
        try writeRaw(decomposed, onePeer("decomposed", 12))
        let added = assertSameAsFresh(cache, "the decomposed name added")
        XCTAssertEqual(Set(added.outcome.desired?.devices[0].peers.map(\.name) ?? []).isSuperset(of: ["composed", "decomposed"]), true)
        assertSameAsFresh(cache, "unchanged again")
        try writeRaw(composed, onePeer("composed2", 13))
        try writeRaw(decomposed, onePeer("decomposed2", 14))
        assertSameAsFresh(cache, "both changed")
        unlinkRaw(composed)
        assertSameAsFresh(cache, "the composed name removed")
        try writeRaw(decomposed, onePeer("decomposed3", 15))
        assertSameAsFresh(cache, "the decomposed one changed")
        try writeRaw(composed, onePeer("composed3", 16))
        assertSameAsFresh(cache, "the composed name back")
    }

    /// Devices defined in drop-ins, with peers-only files of theirs added before and after the
    /// defining file and removed: the device list and the peers as a fresh load has them.
    func testDevicesDefinedInDropIns() throws {
        try fixture.writeKey("wga.key")
        try fixture.writeKey("wgb.key")
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        try write("10-a.yaml", "wireguard:\n  wga:\n    private_key_file: \(fixture.path("wga.key"))\n")
        try write("20-b.yaml", "wireguard:\n  wgb:\n    private_key_file: \(fixture.path("wgb.key"))\n")
        for n in 0..<3 { try write("3\(n).yaml", onePeer("c\(n)", 100 + n)) }
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "start")
        XCTAssertTrue(assertSameAsFresh(cache, "unchanged").delta)
        let peer = "wireguard:\n  wgb:\n    peers:\n      - {name: b1, public_key: \"\(PrivateKey.generate().publicKey.base64)\", allowed_ips: [\"2001:db8:5::1/128\"]}\n"
        try write("05-b-peers.yaml", peer)
        let added = assertSameAsFresh(cache, "a peers-only file of wgb before the files defining wga and wgb")
        XCTAssertEqual(added.outcome.desired?.devices.first { $0.name == "wgb" }?.peers.map(\.name), ["b1"])
        try FileManager.default.removeItem(atPath: confD + "/05-b-peers.yaml")
        assertSameAsFresh(cache, "removed again")
        try write("25-b-peers.yaml", peer)
        XCTAssertTrue(assertSameAsFresh(cache, "after the defining file: its place holds").delta)
    }

    /// More events than inotify queues (`max_queued_events`, 16 384 by default): 20 000 files
    /// touched, one of them changed too. The events lost, the next load reads every file.
    func testQueueOverflowMeansAWholeRead() throws {
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        let count = 20_000
        func name(_ n: Int) -> String { String(format: "%05d.yaml", n) }
        func peer(_ n: Int, _ address: Int) -> String {
            "wireguard: {wg0: {peers: [{name: p\(n), public_key: \"\(keys[n])\", allowed_ips: [\"2001:db8:2::\(String(address, radix: 16))/128\"]}]}}\n"
        }
        let keys = (0..<count).map { _ in PrivateKey.generate().publicKey.base64 }
        for n in 0..<count { try write(name(n), peer(n, n + 1)) }
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "start")
        var times = [timespec(tv_sec: 0, tv_nsec: (1 << 30) - 1), timespec(tv_sec: 0, tv_nsec: (1 << 30) - 1)]
        for n in 0..<count { utimensat(AT_FDCWD, confD + "/" + name(n), &times, 0) }
        try write(name(12_345), peer(12_345, 0xFFFF))
        let after = assertSameAsFresh(cache, "every file touched, one changed")
        XCTAssertFalse(cache.lastLoad.watched)
        XCTAssertEqual(after.outcome.desired?.devices[0].peers.first { $0.name == "p12345" }?.allowedIPs.map(\.description), ["2001:db8:2::ffff/128"])
        try write(name(17), peer(17, 0xFFFE))
        XCTAssertTrue(assertSameAsFresh(cache, "one more changed").delta)
        XCTAssertTrue(cache.lastLoad.watched)
    }

    /// With a policy, a changed peer could change what a group means: no delta.
    func testNoDeltaWithAPolicy() throws {
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false, extra: "policy: {client_to_lan: deny}\n"))
        try write("10.yaml", "wireguard:\n  wg0:\n    peers:\n      - {name: c1, public_key: \"\(ConfigFixture.bob)\", allowed_ips: [\"2001:db8:1::1/128\"]}\n")
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "start")
        try write("10.yaml", "wireguard:\n  wg0:\n    peers:\n      - {name: c1, public_key: \"\(ConfigFixture.bob)\", allowed_ips: [\"2001:db8:1::2/128\"]}\n")
        XCTAssertFalse(assertSameAsFresh(cache, "changed").delta)
    }

    // MARK: collisions the random edits seldom make

    private func peer(_ name: String, _ ips: [String], endpoint: String? = nil, key: String = PrivateKey.generate().publicKey.base64) -> String {
        return "      - {name: \(name), public_key: \"\(key)\", allowed_ips: [\(ips.map { "\"\($0)\"" }.joined(separator: ", "))]"
            + (endpoint.map { ", endpoint: \"\($0)\"" } ?? "") + "}\n"
    }

    private func peers(_ items: String..., on device: String = "wg0") -> String {
        "wireguard:\n  \(device):\n    peers:\n" + items.joined()
    }

    /// After a load of `before` that succeeded, drop-in edits (`after`) that a fresh load
    /// refuses (`reason`, in one of its errors): the cached load must refuse them too, not take
    /// them as a delta.
    private func assertRefused(_ what: String, because reason: String, before: [String: String], after: [String: String], limits: ConfigLimits = .standard,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: confD)) ?? [] { try FileManager.default.removeItem(atPath: confD + "/" + name) }
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        for (name, text) in before { try write(name, text) }
        let cache = ConfigCache.settled()
        XCTAssertNotNil(assertSameAsFresh(cache, "\(what): before", limits: limits, file: file, line: line).outcome.desired,
                        "\(what): before", file: file, line: line)
        for (name, text) in after { try write(name, text) }
        let errors = assertSameAsFresh(cache, what, limits: limits, file: file, line: line).outcome.errors
        XCTAssertTrue(errors.contains { $0.contains(reason) }, "\(what): a fresh load refuses it (\(reason)): \(errors)", file: file, line: line)
    }

    func testDeltaRefusesWhatAFreshLoadRefuses() throws {
        let before = ["10.yaml": peers(peer("c1", ["2001:db8:1::1/128"])),
                      "20.yaml": peers(peer("c2", ["2001:db8:1::2/128"], key: ConfigFixture.bob))]
        // A kept peer's name (on another device); the device's own public key.
        try assertRefused("a kept peer's name", because: "peer name \"c2\" is already used", before: before,
                          after: ["10.yaml": peers(peer("c2", ["2001:db8:1::3/128"]), on: "wg1")])
        let own = try XCTUnwrap(PrivateKey(base64: try String(contentsOfFile: fixture.path("wg0.key"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines))).publicKey.base64
        try assertRefused("the device's own key", because: "own public key", before: before,
                          after: ["10.yaml": peers(peer("c1", ["2001:db8:1::1/128"], key: own))])
        // A kept peer's key on the same device.
        try assertRefused("a kept peer's key", because: "of peer c2 is already used by peer c1", before: before,
                          after: ["10.yaml": peers(peer("c1", ["2001:db8:1::1/128"], key: ConfigFixture.bob))])
        // A kept peer's prefix, on the other device (on the same, one holds the other).
        try assertRefused("a kept peer's prefix on another device", because: "is already claimed", before: before,
                          after: ["20.yaml": peers(peer("c2", ["2001:db8:1::1/128"]), on: "wg1")])
        // A new prefix inside a kept peer's, and one holding a kept peer's (outside the LAN).
        let wide = ["10.yaml": peers(peer("c1", ["2001:db8:2::/48"])), "20.yaml": peers(peer("c2", ["2001:db8:1::2/128"]))]
        try assertRefused("a new prefix inside a kept peer's", because: "lies inside", before: wide,
                          after: ["20.yaml": peers(peer("c2", ["2001:db8:2:1::/64"]))])
        let narrow = ["10.yaml": peers(peer("c1", ["2001:db8:2:1::/64"])), "20.yaml": peers(peer("c2", ["2001:db8:1::2/128"]))]
        try assertRefused("a new prefix holding a kept peer's", because: "lies inside", before: narrow,
                          after: ["20.yaml": peers(peer("c2", ["2001:db8:2::/48"]))])
        // Inside the LAN prefix but not a /128 (and holding no other peer's prefix).
        try assertRefused("a prefix inside the LAN, not a host", because: "is not a /128", before: before,
                          after: ["10.yaml": peers(peer("c1", ["2001:db8:1:0:1::/96"]))])
        // Two peers of one delta, one's prefix inside the other's: in two files, and in one.
        try assertRefused("nested prefixes of new peers in two files", because: "lies inside", before: before,
                          after: ["10.yaml": peers(peer("c1", ["2001:db8:2::/48"])), "20.yaml": peers(peer("c2", ["2001:db8:2:1::/64"]))])
        try assertRefused("nested prefixes of new peers in one file", because: "lies inside", before: before,
                          after: ["10.yaml": peers(peer("c1", ["2001:db8:2::/48"]), peer("c3", ["2001:db8:2:1::/64"]))])
        // A new peer's endpoint inside a new tunnel prefix: its own, and another new peer's.
        try assertRefused("an endpoint inside its own new prefix", because: "holds its own endpoint", before: before,
                          after: ["10.yaml": peers(peer("c1", ["2001:db8:3::/48"], endpoint: "[2001:db8:3::1]:51820"))])
        try assertRefused("an endpoint inside another new peer's prefix", because: "holds the endpoint", before: before,
                          after: ["10.yaml": peers(peer("c1", ["2001:db8:3::/48"])),
                                  "20.yaml": peers(peer("c2", ["2001:db8:1::2/128"], endpoint: "[2001:db8:3::1]:51820"), on: "wg1")])
        // A new endpoint inside a kept tunnel prefix; a kept endpoint inside a new one.
        try assertRefused("a new endpoint inside a kept peer's prefix", because: "holds the endpoint", before: ["10.yaml": peers(peer("c1", ["2001:db8:3::/48"]))],
                          after: ["20.yaml": peers(peer("c2", ["2001:db8:1::2/128"], endpoint: "[2001:db8:3::1]:51820"), on: "wg1")])
        try assertRefused("a kept endpoint inside a new peer's prefix", because: "holds the endpoint",
                          before: ["10.yaml": peers(peer("c1", ["2001:db8:1::1/128"], endpoint: "[2001:db8:3::1]:51820"))],
                          after: ["20.yaml": peers(peer("c2", ["2001:db8:3::/48"]))])
        // An endpoint inside an explicit route via the tunnel; a prefix that is that route's
        // destination, or the explicit proxy's address; a link-local prefix; the device's own key.
        try assertRefused("an endpoint inside an explicit route via the tunnel", because: "route 2001:db8:9::/64 via wg0 holds", before: before,
                          after: ["10.yaml": peers(peer("c1", ["2001:db8:1::1/128"], endpoint: "[2001:db8:9::1]:51820"))])
        try assertRefused("an explicit route's destination", because: "conflicts with the route", before: before, after: ["10.yaml": peers(peer("c1", ["2001:db8:9::/64"]))])
        try assertRefused("the destination of an explicit route on the LAN", because: "conflicts with the route", before: before, after: ["10.yaml": peers(peer("c1", ["2001:db8:a::/64"]))])
        try assertRefused("an explicit proxy's address", because: "conflicts with the proxy entry", before: before, after: ["10.yaml": peers(peer("c1", ["2001:db8:1::beef/128"]))])
        try assertRefused("a link-local prefix", because: "overlaps link-local", before: before, after: ["10.yaml": peers(peer("c1", ["fe80::1/128"]))])
    }

    /// A preshared key file is read at every load: a changed file naming one is no delta.
    func testNoDeltaWithAPresharedKeyFile() throws {
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        try write("10.yaml", peers(peer("c1", ["2001:db8:1::1/128"])))
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "start")
        try write("10.yaml", peers(peer("c1", ["2001:db8:1::1/128"]).replacingOccurrences(of: "}\n", with: ", preshared_key_file: ../alice.psk}\n")))
        let changed = assertSameAsFresh(cache, "a preshared key file named")
        XCTAssertNotNil(changed.outcome.desired)
        XCTAssertFalse(changed.delta)
    }

    /// The limits count what a delta adds: m0, c1 and c2 are 3 peers; their 3 allowed IPs, the
    /// 2 routes and the proxy 6 objects.
    func testDeltaRefusesWhatPassesTheLimits() throws {
        let before = ["10.yaml": peers(peer("c1", ["2001:db8:1::1/128"])), "20.yaml": peers(peer("c2", ["2001:db8:1::2/128"]))]
        var limits = ConfigLimits()
        limits.peers = 3
        try assertRefused("a peer past the limit", because: "more than 3 peers", before: before,
                          after: ["30.yaml": peers(peer("c3", ["2001:db8:1::3/128"]))], limits: limits)
        limits = ConfigLimits()
        limits.objects = 6
        try assertRefused("an allowed IP past the limit", because: "more than 6 allowed IPs", before: before,
                          after: ["10.yaml": peers(peer("c1", ["2001:db8:1::1/128", "2001:db8:1::11/128"]))], limits: limits)
    }
}

private extension SeededGenerator {
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

extension DropInDeltaTests {
    /// An include directory empty at first, then given a file that is not peers alone (as the
    /// system tier does): the reload reads it.
    func testEmptyDirectoryThenAFileWithOtherSections() throws {
        try fixture.write("wgkeeper.yaml", mainText(ndp: "kernel", unsafe: false))
        let cache = ConfigCache.settled()
        XCTAssertNotNil(assertSameAsFresh(cache, "empty").outcome.desired)
        try write("extra.yaml", "proxies:\n  - address: 2001:db8:1::200\n    device: private0\n")
        let added = assertSameAsFresh(cache, "a file of proxies")
        XCTAssertEqual(added.outcome.desired?.proxies.contains { $0.address.description == "2001:db8:1::200" }, true)
        try write("broken.yaml", "proxies:\n  - address: nowhere\n    device: private0\n")
        XCTAssertNil(assertSameAsFresh(cache, "a broken file").outcome.desired)
    }
}
