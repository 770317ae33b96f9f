@testable import Config
import Foundation
import Glibc
import Netlink
import Reconciler
import TestSupport
import XCTest

/// Cases found by mutation testing of the main file delta (`ConfigLoader.mainFileDelta`,
/// `FileSegments`, the outdated tree's handling in `ConfigLoader`): each one a guard that no
/// other test needed. Whatever the change, a load through the cache must give what a fresh
/// load gives.
final class MainFileDeltaMutationTests: XCTestCase {
    private var fixture: ConfigFixture!
    private var main: String { fixture.path("wgkeeper.yaml") }

    override func setUpWithError() throws {
        fixture = try ConfigFixture(for: self)
        try fixture.makeDirectory("conf.d")
    }

    private static let keys = (0..<16).map { _ in PrivateKey.generate().publicKey.base64 }

    private static func item(_ n: Int, address: Int? = nil, indent: Int = 4) -> String {
        String(repeating: " ", count: indent) + "- {name: p\(n), public_key: \"\(keys[n])\", allowed_ips: [\"2001:db8:1::\(address ?? n + 1)/128\"]}\n"
    }

    private func text(_ addresses: [Int], includeDir: Bool = false, keyFile: String = "wg0.key") -> String {
        (includeDir ? "runtime:\n  include_dir: conf.d\n" : "")
            + "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\"}\nwireguard:\n  wg0:\n    private_key_file: \(keyFile)\n    peers:\n"
            + addresses.enumerated().map { Self.item($0.offset, address: $0.element) }.joined()
    }

    @discardableResult
    private func assertSameAsFresh(_ cache: ConfigCache, _ context: String, at path: String? = nil, file: StaticString = #filePath,
                                   line: UInt = #line) -> (outcome: LoadOutcome, delta: Bool) {
        let path = path ?? main
        tickPastTimestamps()
        let cached = LoadOutcome(ConfigLoader().load(path: path, cache: cache))
        let delta = cache.lastLoad.mainFile
        let fresh = LoadOutcome(ConfigLoader().load(path: path))
        XCTAssertEqual(cached, fresh, "\(context)\(delta ? " (main file delta)" : "")", file: file, line: line)
        XCTAssertNotNil(fresh.desired, "\(context): \(fresh.errors)", file: file, line: line)
        tickPastTimestamps()
        return (cached, delta)
    }

    /// A drop-in reached through a symbolic link is not seen by the include directory's watch
    /// (`KeptLoad.unwatched`): changed together with a main file's item, the load is not a main
    /// file delta, and reads it.
    func testASymlinkedDropInChangedWithAMainFileItem() throws {
        let dropIn = { (address: Int) in
            "wireguard:\n  wg0:\n    peers:\n      - {name: d0, public_key: \"\(Self.keys[15])\", allowed_ips: [\"2001:db8:1::\(address)/128\"]}\n"
        }
        try fixture.write("target.yaml", dropIn(900))
        try FileManager.default.createSymbolicLink(atPath: fixture.path("conf.d/a.yaml"), withDestinationPath: fixture.path("target.yaml"))
        var addresses = [1, 2, 3, 4]
        try fixture.write("wgkeeper.yaml", text(addresses, includeDir: true))
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        addresses[1] = 70
        try fixture.write("wgkeeper.yaml", text(addresses, includeDir: true))
        try fixture.write("target.yaml", dropIn(901))
        let (outcome, delta) = assertSameAsFresh(cache, "the main file's item and the linked drop-in")
        XCTAssertFalse(delta)
        XCTAssertEqual(outcome.desired?.routes.filter { $0.destination.description == "2001:db8:1::901/128" }.count, 1)
    }

    /// A main file whose tree a delta outdated, then read as another main file's drop-in: its
    /// outdated tree (the peers before the delta) is not taken for it, it is parsed again.
    func testAnOutdatedMainFileReadAsADropInOfAnother() throws {
        let other = fixture.path("conf.d/a.yaml")
        var addresses = [1, 2, 3, 4]
        let key = fixture.path("wg0.key")
        try fixture.write("conf.d/a.yaml", text(addresses, keyFile: key))
        try fixture.write("wgkeeper.yaml", "runtime:\n  include_dir: conf.d\n")
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "a.yaml as the main file", at: other)
        addresses[2] = 71
        try fixture.write("conf.d/a.yaml", text(addresses, keyFile: key))
        XCTAssertTrue(assertSameAsFresh(cache, "a.yaml's item", at: other).delta)
        let (outcome, _) = assertSameAsFresh(cache, "wgkeeper.yaml, with a.yaml its drop-in")
        XCTAssertEqual(outcome.desired?.routes.filter { $0.destination.description == "2001:db8:1::71/128" }.count, 1)
    }

    /// New items that define an anchor and use it: were they taken as a delta, the item using
    /// the alias would be kept as a piece of the file whose value a later delta of the anchor's
    /// item would not change. Such items are not a delta (`ListRecorder.viable`).
    func testNewItemsWithAnAnchorAndItsAlias() throws {
        let keepalive = { (seconds: Int) in
            "    - {name: p1, public_key: \"\(Self.keys[1])\", allowed_ips: [\"2001:db8:1::2/128\"], persistent_keepalive: &ka \(seconds)}\n"
                + "    - {name: p5, public_key: \"\(Self.keys[5])\", allowed_ips: [\"2001:db8:1::6/128\"], persistent_keepalive: *ka}\n"
        }
        let plain = text([1, 2, 3])
        try fixture.write("wgkeeper.yaml", plain)
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        let before = plain.components(separatedBy: Self.item(1, address: 2))
        XCTAssertEqual(before.count, 2)
        try fixture.write("wgkeeper.yaml", before[0] + keepalive(25) + before[1])
        assertSameAsFresh(cache, "items with an anchor and an alias")
        try fixture.write("wgkeeper.yaml", before[0] + keepalive(30) + before[1])
        assertSameAsFresh(cache, "the anchor's value changed")
    }

    /// The same cache loaded by a loader with other limits: a limit the delta does not check
    /// again (the number of include files) is one the kept load was not made under, so the load
    /// is not a delta of it.
    func testTheSameCacheUnderOtherLimits() throws {
        var addresses = [1, 2, 3]
        try fixture.write("wgkeeper.yaml", text(addresses, includeDir: true))
        for name in ["a", "b"] {
            try fixture.write("conf.d/\(name).yaml", "wireguard:\n  wg0:\n    peers:\n      - {name: d\(name), public_key: \"\(Self.keys[name == "a" ? 14 : 15])\", allowed_ips: [\"2001:db8:1::9\(name == "a" ? 1 : 2)/128\"]}\n")
        }
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        addresses[0] = 73
        try fixture.write("wgkeeper.yaml", text(addresses, includeDir: true))
        var limits = ConfigLimits.standard
        limits.includeFiles = 1
        tickPastTimestamps()
        let cached = LoadOutcome(ConfigLoader(limits: limits).load(path: main, cache: cache))
        let fresh = LoadOutcome(ConfigLoader(limits: limits).load(path: main))
        XCTAssertEqual(cached, fresh, cache.lastLoad.mainFile ? "(main file delta)" : "")
        XCTAssertNil(fresh.desired, "two include files, one allowed")
    }

    /// A list that ends the file: its text after it is empty, and an item appended to it is a
    /// delta (the empty piece is not taken as unchanged at the front: the change is next to the
    /// list's last item), which parses that item alone.
    func testAnItemAppendedToAListThatEndsTheFile() throws {
        let head = "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\"}\nwireguard:\n  wg0:\n    private_key_file: wg0.key\n    peers:\n"
        var text = head + Self.item(0) + Self.item(1) + Self.item(2)
        try fixture.write("wgkeeper.yaml", text)
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        text += Self.item(3)
        try fixture.write("wgkeeper.yaml", text)
        XCTAssertTrue(assertSameAsFresh(cache, "appended").delta)
        XCTAssertEqual(cache.lastLoad, ConfigCache.Statistics(filesRead: 1, filesParsed: 0, peersDecoded: 1, delta: true, mainFile: true))
    }

    /// Without an include directory: after a delta, a key file rewritten needs the main file's
    /// outdated tree whole (its peers are the ones before the delta): the file is parsed again.
    func testAKeyRewrittenAfterADeltaWithoutAnIncludeDirectory() throws {
        var addresses = [1, 2, 3, 4, 5]
        try fixture.write("wgkeeper.yaml", text(addresses))
        let cache = ConfigCache.settled()
        assertSameAsFresh(cache, "first")
        addresses[3] = 72
        try fixture.write("wgkeeper.yaml", text(addresses))
        XCTAssertTrue(assertSameAsFresh(cache, "item").delta)
        try fixture.writeKey("wg0.key")
        let (outcome, delta) = assertSameAsFresh(cache, "key rewritten")
        XCTAssertFalse(delta)
        XCTAssertEqual(cache.lastLoad.filesParsed, 1)
        XCTAssertEqual(outcome.desired?.routes.filter { $0.destination.description == "2001:db8:1::72/128" }.count, 1)
    }
}
