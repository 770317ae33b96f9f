import Foundation
import Netlink
import XCTest

final class WireGuardKeyTests: XCTestCase {
    // Pairs made with `wg genkey | tee /dev/stderr | wg pubkey`.
    private let pairs = [
        ("2As9tEf+36RioiEC4YPH2RQCyfwOVbLFXU3j7TgmFFs=", "JFoFSECFkH2RezlOjBiUcrnZ9FDIwuSDGz6ZRkUGlWw="),
        ("WHLBTKRKz4P2h45Aa9XIavFR0DcOfD4HY94lVk2sv2k=", "yB9LhVReJoXWWdtS+QtxS9lXg0lxkFnysuCHJUhUmBE="),
    ]

    func testPublicKeyDerivationMatchesWg() throws {
        for (privateText, publicText) in pairs {
            let key = try XCTUnwrap(PrivateKey(base64: privateText))
            XCTAssertEqual(key.publicKey.base64, publicText)
        }
    }

    func testRejectsAnythingButACanonical44CharacterKey() {
        let good = pairs[0].1
        XCTAssertNotNil(WireGuardKey(base64: good))
        let bad = [
            "", String(good.dropLast()), good + "=", " " + good, good.replacingOccurrences(of: "=", with: "A"),
            String(good.dropLast(2)) + "==",                          // 31 bytes
            "JFoFSECFkH2RezlOjBiUcrnZ9FDIwuSDGz6ZRkUGlWx=",           // non-zero trailing bits: not canonical
            "JFoFSECFkH2RezlOjBiUcrnZ9FDIwuSDGz6ZRkUGlW-=",           // URL-safe alphabet
            "JFoFSECFkH2RezlOjBiUcrnZ9FDIwuSDGz6ZRkUG\nWw=",
            String(repeating: "A", count: 43) + "=" + "A",
        ]
        for text in bad { XCTAssertNil(WireGuardKey(base64: text), text) }
    }

    /// The hand-written decoder against Foundation's: every 32-byte value round-trips, every
    /// other last character (non-zero spare bits) and every character outside the alphabet is refused.
    func testDecoderAgreesWithFoundation() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let text = Data(bytes).base64EncodedString()
            XCTAssertEqual(WireGuardKey(base64: text)?.bytes, bytes, text)
            XCTAssertEqual(WireGuardKey(base64: Substring(text))?.bytes, bytes, "a Substring too")
            var chars = Array(text.utf8)
            for c in Set(0...255).subtracting(Set(chars[42...42].map(Int.init))) {
                chars[42] = UInt8(c)
                let other = String(decoding: chars, as: UTF8.self)
                let foundation = Data(base64Encoded: other).flatMap { $0.base64EncodedString() == other && $0.count == 32 ? Array($0) : nil }
                XCTAssertEqual(WireGuardKey(base64: other)?.bytes, foundation, other)
            }
        }
        XCTAssertEqual(Set([pairs[0].1, pairs[1].1].compactMap(WireGuardKey.init(base64:))).count, 2, "keys hash by their bytes")
    }

    func testSecretsNeverPrint() throws {
        let secret = pairs[0].0
        let key = try XCTUnwrap(PrivateKey(base64: secret))
        let psk = try XCTUnwrap(PresharedKey(base64: "LlaUI4z5ZjkgKrlbvf4P76rJ8Zin7knajTcoed5yx2c="))
        for text in ["\(key)", String(describing: key), String(reflecting: key), "\(psk)", String(reflecting: psk),
                     "\(WireGuardDeviceChange(privateKey: key))",
                     "\(WireGuardPeerChange(publicKey: key.publicKey, presharedKey: psk))"] {
            XCTAssertFalse(text.contains(secret), text)
            XCTAssertFalse(text.contains("LlaUI4z5"), text)
        }
    }

    func testKeyFileMustBePrivate() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wgk-keys-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("wg0.key").path
        try (pairs[0].0 + "\n").write(toFile: path, atomically: false, encoding: .utf8)

        chmod(path, 0o600)
        XCTAssertEqual(try readSecretKeyFile(path).base64, pairs[0].0)

        for mode: mode_t in [0o640, 0o604, 0o644] {
            chmod(path, mode)
            XCTAssertThrowsError(try readSecretKeyFile(path)) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains("readable by group or others"), text)
                XCTAssertTrue(text.contains("chmod 600"), text)
                XCTAssertFalse(text.contains(pairs[0].0), text)
            }
        }
        XCTAssertThrowsError(try readSecretKeyFile(dir.appendingPathComponent("missing").path)) {
            XCTAssertTrue("\($0)".contains("cannot read the key file"))
        }
        chmod(path, 0o600)
        try "not a key\n".write(toFile: path, atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try readSecretKeyFile(path)) { XCTAssertFalse("\($0)".contains("not a key")) }
    }

    func testEndpointParsing() {
        XCTAssertEqual(Endpoint("[2001:db8:ff::2]:51820")?.description, "[2001:db8:ff::2]:51820")
        XCTAssertEqual(Endpoint("192.0.2.1:51820")?.description, "192.0.2.1:51820")
        for bad in ["2001:db8::2:51820", "[2001:db8::2]", "192.0.2.1", "192.0.2.1:70000", "[192.0.2.1]:1", "host:1"] {
            XCTAssertNil(Endpoint(bad), bad)
        }
    }
}
