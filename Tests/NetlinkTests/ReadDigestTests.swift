@testable import Netlink
import XCTest

/// The poll digest (`ReadDigest`): NH blocks under SipHash. Equal bytes give equal digests at
/// every length around the block size; any one changed byte, and any other cut into pieces,
/// gives another; NH's 128-bit sum agrees with a reference computed limb by limb.
final class ReadDigestTests: XCTestCase {
    private func digest(_ pieces: [UInt8]...) -> ReadDigest {
        var builder = ReadDigest.Builder()
        for piece in pieces { piece.withUnsafeBytes { builder.combine(piece: $0) } }
        return builder.finalize()
    }

    private func bytes(_ count: Int, seed: Int = 1) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 131 &+ seed &* 7919) >> 3 ^ $0) }
    }

    func testEqualBytesEqualDigestsAtEveryLengthAroundABlock() {
        for count in [0, 1, 15, 16, 17, 1023, 1024, 1025, 2047, 2048, 5000] {
            XCTAssertEqual(digest(bytes(count)), digest(bytes(count)), "\(count) bytes")
            if count > 0 { XCTAssertNotEqual(digest(bytes(count)), digest(bytes(count - 1)), "\(count) bytes and one fewer") }
        }
    }

    func testAnyOneChangedByteChangesTheDigest() {
        let original = bytes(3 * 1024 + 300)
        let reference = digest(original)
        for position in original.indices {
            for delta: UInt8 in [1, 0x80] {
                var changed = original
                changed[position] &+= delta
                XCTAssertNotEqual(digest(changed), reference, "byte \(position) +\(delta)")
            }
        }
    }

    func testPiecesCannotRunIntoEachOther() {
        let whole = bytes(2100)
        XCTAssertNotEqual(digest(whole), digest(Array(whole[..<1024]), Array(whole[1024...])))
        XCTAssertNotEqual(digest(Array(whole[..<1024]), Array(whole[1024...])), digest(Array(whole[..<1000]), Array(whole[1000...])))
        XCTAssertNotEqual(digest([], whole), digest(whole))
    }

    /// NH of a block, computed with 32-bit limbs (a schoolbook product and sum mod 2^128).
    func testNHAgreesWithALimbByLimbReference() {
        var random = SystemRandomNumberGenerator()
        for round in 0..<50 {
            var block = (0..<1024).map { _ in UInt8.random(in: 0...255, using: &random) }
            // Words near 2^64 - 1 make every carry happen.
            if round % 2 == 0 { for i in stride(from: 0, to: 1024, by: 8) where i % 24 == 0 { for j in 0..<8 { block[i + j] = 0xff } } }
            var key = (0..<128).map { _ in UInt64.random(in: .min ... .max, using: &random) }
            if round % 3 == 0 { for i in stride(from: 0, to: 128, by: 3) { key[i] = .max } }
            let (high, low) = block.withUnsafeBytes { b in key.withUnsafeBufferPointer { ReadDigest.nh(b.baseAddress!, $0.baseAddress!) } }
            var sum = [UInt32](repeating: 0, count: 4)  // mod 2^128, little-endian limbs
            for i in stride(from: 0, to: 128, by: 2) {
                let a = block.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) } &+ key[i]
                let b = block.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: i * 8 + 8, as: UInt64.self) } &+ key[i + 1]
                let x = [UInt32(truncatingIfNeeded: a), UInt32(truncatingIfNeeded: a >> 32)]
                let y = [UInt32(truncatingIfNeeded: b), UInt32(truncatingIfNeeded: b >> 32)]
                var product = [UInt64](repeating: 0, count: 4)
                for p in 0..<2 {
                    for q in 0..<2 {
                        let partial = UInt64(x[p]) * UInt64(y[q])
                        product[p + q] += partial & 0xffff_ffff
                        product[p + q + 1] += partial >> 32
                    }
                }
                var carry: UInt64 = 0
                for limb in 0..<4 {
                    let total = UInt64(sum[limb]) + product[limb] + carry
                    sum[limb] = UInt32(truncatingIfNeeded: total)
                    carry = total >> 32
                }
            }
            XCTAssertEqual(low, UInt64(sum[1]) << 32 | UInt64(sum[0]), "round \(round), low word")
            XCTAssertEqual(high, UInt64(sum[3]) << 32 | UInt64(sum[2]), "round \(round), high word")
        }
    }
}
