@testable import Config
import Foundation
import XCTest

/// A private key pasted into a field that is not a key file is never repeated by an error:
/// errors reach the journal, `check`'s output and `status`.
final class SecretEchoTests: XCTestCase {
    private var fixture: ConfigFixture!
    private let secret = PrivateKeyText.sample

    override func setUpWithError() throws {
        fixture = try ConfigFixture(for: self)
        try FileManager.default.createDirectory(atPath: fixture.path("conf.d"), withIntermediateDirectories: true)
    }

    /// The base configuration with every runtime path and `status_group` set.
    private let base = AcceptedConfigs.base.replacingOccurrences(of: "runtime:\n", with: """
        runtime:
          status_group: wgstatus
          status_socket: /run/wgk-test/status.sock
          state_dir: /run/wgk-test
          bpf_pin_root: /sys/fs/bpf/wgk-test
          include_dir: conf.d

        """)

    private func messages(_ text: String) throws -> [String] {
        switch try fixture.load(text) {
        case .success: return []
        case .failure(let errors): return errors.errors.map(\.description)
        }
    }

    func testHoldsKeyFindsAKeyAloneOrInsideText() {
        XCTAssertTrue(Scalars.holdsKey(secret))
        XCTAssertTrue(Scalars.holdsKey("[\(secret)]:51820"))
        XCTAssertTrue(Scalars.holdsKey(secret + "/64"))
        XCTAssertTrue(Scalars.holdsKey("/etc/wgkeeper/" + secret))
        XCTAssertFalse(Scalars.holdsKey(String(secret.dropLast())))
        XCTAssertFalse(Scalars.holdsKey("2001:db8::/64"))
        XCTAssertFalse(Scalars.holdsKey(String(repeating: "A", count: 42) + "B="))  // not canonical base64
        XCTAssertEqual(Scalars.quoted(secret), "(a value that looks like a key, not shown)")
    }

    /// Each value of the configuration in turn, and each mapping's keys, replaced by the key
    /// (alone, and inside longer text): no message holds it.
    func testNoErrorRepeatsAKeyPastedIntoAnyField() throws {
        let lines = base.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let pastes = [secret, "\(secret)/64", "[\(secret)]:51820", secret + String(repeating: "x", count: 100)]
        var tried = 0
        for (i, line) in lines.enumerated() {
            guard let colon = line.range(of: ": ") ?? (line.hasSuffix(":") ? line.range(of: ":", options: .backwards) : nil) else { continue }
            let indent = String(line.prefix { $0 == " " || $0 == "-" })
            var variants: [String] = []
            let keyName = line[line.startIndex..<colon.lowerBound].drop { $0 == " " || $0 == "-" }
            if keyName == "public_key" { continue }  // a key is what belongs there
            for paste in pastes {
                if colon.upperBound < line.endIndex || line.hasSuffix(": ") {
                    variants.append(String(line[..<colon.upperBound]) + "\"\(paste)\"")
                }
                // The key as a mapping key: a device name, an unknown key at this level.
                variants.append(indent + "\"\(paste)\"" + line[colon.lowerBound...])
                variants.append(String(repeating: " ", count: indent.count) + "\"\(paste)\": 1\n" + line)
            }
            for variant in variants {
                var copy = lines
                copy[i] = variant
                let found = try messages(copy.joined(separator: "\n"))
                tried += 1
                for message in found {
                    XCTAssertFalse(message.contains(secret), "line \(i + 1) as \(variant.replacingOccurrences(of: secret, with: "KEY")): \(message.replacingOccurrences(of: secret, with: "KEY"))")
                }
            }
        }
        XCTAssertGreaterThan(tried, 300)
    }

    func testRedactedMessagesKeepTheirLocation() throws {
        XCTAssertEqual(try fixture.errors(base.replacingOccurrences(of: "  lan: private0", with: "  lan: \"\(secret)\"")), [
            "wgkeeper.yaml:31:8: lan: (a value that looks like a key, not shown) is not an interface name (1–15 characters, no '/', ':' or spaces)",
        ])
        XCTAssertEqual(try fixture.errors(base.replacingOccurrences(of: "status_group: wgstatus", with: "status_group: \"\(secret)\"")), [
            "wgkeeper.yaml:2:17: status_group: expected a group name (letters, digits, _ and -, at most 32) or a group number, got (a value that looks like a key, not shown)",
        ])
        XCTAssertEqual(try fixture.errors(base.replacingOccurrences(of: "include_dir: conf.d", with: "include_dir: \"\(secret)\"")), [
            "wgkeeper.yaml:6:16: include_dir: looks like a key, not a path",
        ])
        XCTAssertEqual(try fixture.errors(base.replacingOccurrences(of: "  resync: 1m", with: "  \"\(secret)\": 1m")), [
            "wgkeeper.yaml:10:3: unknown key (a value that looks like a key, not shown) in runtime (known: \(ConfigKeys.runtime.joined(separator: ", ")))",
        ])
    }
}
