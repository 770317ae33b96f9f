/// A fingerprint of bytes read from the kernel (a dump's replies, a map's entries), so that a
/// poll can tell "exactly what was read last time" without decoding it again. Equal digests of
/// different bytes would take a collision of a keyed hash nobody outside the process can aim at.
public struct ReadDigest: Hashable, Sendable, CustomStringConvertible {
    let value: Int

    public var description: String { String(UInt(bitPattern: value), radix: 16) }

    /// A digest no read is made to equal (a random value): for bytes a fingerprint cannot
    /// vouch for, so that the next poll decodes again.
    public static func unmatched() -> ReadDigest { ReadDigest(value: Int.random(in: .min ... .max)) }

    /// Feeds bytes in; the digest covers them and the boundaries between the pieces. One
    /// SipHash-1-3 state under the process's random key: 64 bits, a keyed PRF, so two different
    /// byte sequences not chosen with the key in hand (nothing outside the process has it) give
    /// the same digest with a chance of 2^-64 per comparison. One state, not two: hashing is
    /// most of what an unchanged poll costs in user time (one pass over a 2 MB WireGuard dump
    /// is ≈ 1.3 ms here).
    public struct Builder {
        private var hasher = Hasher()

        public init() {
            hasher.combine(0x7767_6b31)
        }

        public mutating func combine(_ value: UInt64) {
            hasher.combine(value)
        }

        /// A piece of bytes, prefixed with its length (so pieces cannot run into each other).
        public mutating func combine(piece bytes: UnsafeRawBufferPointer) {
            hasher.combine(UInt64(bytes.count))
            hasher.combine(bytes: bytes)
        }

        /// Bytes with no length before them: for a fingerprint that says the length itself.
        public mutating func combine(run bytes: UnsafeRawBufferPointer) {
            hasher.combine(bytes: bytes)
        }

        /// Another digest, as one piece (a read made of several reads).
        public mutating func combine(_ digest: ReadDigest) {
            combine(UInt64(UInt(bitPattern: digest.value)))
        }

        public func finalize() -> ReadDigest {
            ReadDigest(value: hasher.finalize())
        }
    }
}
