import Foundation
import Netlink
import X25519
import XCTest

final class X25519Tests: XCTestCase {
    private func bytes(_ hex: String) -> [UInt8] {
        var result: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            result.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return result
    }

    private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// RFC 7748 section 5.2, the two single vectors (the second u has its top bit set: masked).
    func testRFC7748Vectors() {
        let vectors = [
            ("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
             "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
             "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"),
            ("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
             "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
             "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"),
        ]
        for (scalar, u, expected) in vectors {
            XCTAssertEqual(hex(X25519.scalarMultiply(bytes(scalar), bytes(u))), expected)
        }
    }

    /// RFC 7748 section 5.2, iterated: k = X25519(k, u), u = the previous k, from k = u = 9.
    /// (The 1,000,000-iteration value is left out: minutes in a debug build.)
    func testRFC7748Iterations() {
        var k = [9] + [UInt8](repeating: 0, count: 31)
        var u = k
        for i in 1...1000 {
            (k, u) = (X25519.scalarMultiply(k, u), k)
            if i == 1 { XCTAssertEqual(hex(k), "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079") }
        }
        XCTAssertEqual(hex(k), "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
    }

    /// RFC 7748 section 6.1: both public keys and the shared secret each side computes.
    func testRFC7748DiffieHellman() {
        let alice = bytes("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
        let bob = bytes("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
        let alicePublic = X25519.publicKey(alice), bobPublic = X25519.publicKey(bob)
        XCTAssertEqual(hex(alicePublic), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        XCTAssertEqual(hex(bobPublic), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        XCTAssertEqual(hex(X25519.scalarMultiply(alice, bobPublic)), shared)
        XCTAssertEqual(hex(X25519.scalarMultiply(bob, alicePublic)), shared)
    }

    /// u = 0 and u = p (which reduces to 0) have order dividing 8: every clamped scalar gives 0;
    /// p + 9 is the base point again, non-canonical, and must be reduced rather than refused.
    func testNonCanonicalAndLowOrderInputs() {
        let scalar = bytes("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
        let zero = [UInt8](repeating: 0, count: 32)
        let p = [0xed] + [UInt8](repeating: 0xff, count: 30) + [0x7f]
        XCTAssertEqual(X25519.scalarMultiply(scalar, zero), zero)
        XCTAssertEqual(X25519.scalarMultiply(scalar, p), zero)
        var pPlus9 = p
        pPlus9[0] = 0xf6
        XCTAssertEqual(X25519.scalarMultiply(scalar, pPlus9), X25519.publicKey(scalar))
    }

    func testGeneratedKeysAreClampedAndDistinct() {
        let keys = (0..<64).map { _ in PrivateKey.generate().key.bytes }
        for key in keys {
            XCTAssertEqual(key[0] & 7, 0)
            XCTAssertEqual(key[31] & 0xc0, 0x40)
        }
        XCTAssertEqual(Set(keys).count, keys.count)
    }

    /// Against wireguard-tools: `wg pubkey` for 300 keys (from generate(), and raw random bytes
    /// that `wg pubkey` clamps itself) in one shell, one key per line.
    func testPublicKeysMatchWgPubkey() throws {
        guard let wg = ["/usr/bin/wg", "/usr/local/bin/wg"].first(where: FileManager.default.isExecutableFile(atPath:)) else {
            throw XCTSkip("wg (wireguard-tools) is not installed")
        }
        var rng = SystemRandomNumberGenerator()
        let keys = (0..<300).map { i in
            i % 2 == 0 ? PrivateKey.generate() : PrivateKey(WireGuardKey(bytes: (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })!)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "while read -r key; do printf '%s\\n' \"$key\" | \(wg) pubkey || exit 1; done"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data(keys.map { $0.key.base64 + "\n" }.joined().utf8))
        try input.fileHandleForWriting.close()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let expected = printed.split(separator: "\n").map(String.init)
        XCTAssertEqual(expected.count, keys.count)
        for (key, wgPublic) in zip(keys, expected) { XCTAssertEqual(key.publicKey.base64, wgPublic) }
    }
}
