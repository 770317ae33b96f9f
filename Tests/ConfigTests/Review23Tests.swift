@testable import Config
import Foundation
import Glibc
import Netlink
import Reconciler
import TestSupport
import XCTest

/// Review of the main file delta (ad079d2): edits after which a load through the cache must
/// give what a fresh load gives.
final class Review23Tests: XCTestCase {
    private var fixture: ConfigFixture!
    private var main: String { fixture.path("wgkeeper.yaml") }

    override func setUpWithError() throws {
        fixture = try ConfigFixture(for: self)
        try fixture.writeKey("wg1.key")
        try FileManager.default.createDirectory(atPath: fixture.path("conf.d"), withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
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
