/// A fingerprint of bytes read from the kernel (a dump's replies, a map's entries), so that a
/// poll can tell "exactly what was read last time" without decoding it again. Two SipHash
/// states with this process's random key, 128 bits together: equal digests of different bytes
/// would take a collision of a keyed hash nobody outside the process can aim at.
public struct ReadDigest: Hashable, Sendable, CustomStringConvertible {
    let first: Int
    let second: Int

    public var description: String {
        String(UInt(bitPattern: first), radix: 16) + String(UInt(bitPattern: second), radix: 16)
    }

    /// Feeds bytes in; the digest covers them and the boundaries between the pieces.
    public struct Builder {
        private var first = Hasher()
        private var second = Hasher()

        public init() {
            first.combine(0x7767_6b31)
            second.combine(0x7767_6b32)
        }

        public mutating func combine(_ value: UInt64) {
            first.combine(value)
            second.combine(value)
        }

        /// A piece of bytes, prefixed with its length (so pieces cannot run into each other).
        public mutating func combine(piece bytes: UnsafeRawBufferPointer) {
            combine(UInt64(bytes.count))
            first.combine(bytes: bytes)
            second.combine(bytes: bytes)
        }

        /// Another digest, as one piece (a read made of several reads).
        public mutating func combine(_ digest: ReadDigest) {
            combine(UInt64(UInt(bitPattern: digest.first)))
            combine(UInt64(UInt(bitPattern: digest.second)))
        }

        public func finalize() -> ReadDigest {
            ReadDigest(first: first.finalize(), second: second.finalize())
        }
    }
}
