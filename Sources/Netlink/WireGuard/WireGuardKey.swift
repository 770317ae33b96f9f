import CNetlink
import FoundationEssentials
import Glibc
import SystemPackage
import X25519

/// A 32-byte WireGuard key. Public keys print as base64; the secret kinds wrap it and redact.
/// The bytes are held in the value itself (four words), not in an array of their own: a
/// gateway holds tens of thousands of keys (configured, kernel, records), and an array would
/// add a 64-byte allocation to each.
public struct WireGuardKey: Hashable, Sendable, CustomStringConvertible {
    /// The key's bytes in order, eight to a word, big-endian (so words compare as the bytes do).
    private let words: (UInt64, UInt64, UInt64, UInt64)

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        var words: [UInt64] = [0, 0, 0, 0]
        for (i, byte) in bytes.enumerated() { words[i / 8] = words[i / 8] << 8 | UInt64(byte) }
        self.words = (words[0], words[1], words[2], words[3])
    }

    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for word in [words.0, words.1, words.2, words.3] {
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: word >> UInt64(shift))) }
        }
        return out
    }

    public static func == (a: Self, b: Self) -> Bool { a.words == b.words }

    /// Byte order: what a sorted list of keys (`LastApplied`) is searched by.
    public static func precedes(_ a: Self, _ b: Self) -> Bool { a.words < b.words }

    /// Accepts exactly the 44-character standard base64 that `wg` prints (one `=` of padding),
    /// and only its canonical form: the unused low bits of the last character must be zero.
    /// Decoded by hand (43 characters of 6 bits, the last one's low 2 bits zero, then `=`): a
    /// configuration of 10 000 peers decodes 10 000 keys on every load, and Foundation's decode
    /// plus re-encode (to check the form) cost more than the rest of a peer's decoding.
    public init?(base64 text: some StringProtocol) {
        typealias Words = (UInt64, UInt64, UInt64, UInt64)
        let decoded: Words?? = text.utf8.withContiguousStorageIfAvailable(Self.decode)
        guard let words = decoded ?? Array(text.utf8).withUnsafeBufferPointer(Self.decode) else { return nil }
        self.words = words
    }

    private static func decode(_ text: UnsafeBufferPointer<UInt8>) -> (UInt64, UInt64, UInt64, UInt64)? {
        guard text.count == 44, text[43] == UInt8(ascii: "=") else { return nil }
        var out: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        var accumulator: UInt32 = 0
        var bits = 0
        var used = 0
        for i in 0..<43 {
            let c = text[i]
            let value: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = c - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = c - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = c - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            default: return nil
            }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                let byte = UInt64(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                switch used / 8 {
                case 0: out.0 = out.0 << 8 | byte
                case 1: out.1 = out.1 << 8 | byte
                case 2: out.2 = out.2 << 8 | byte
                default: out.3 = out.3 << 8 | byte
                }
                used += 1
            }
        }
        // 43 × 6 = 258 bits: 32 bytes and 2 bits left over, which must be zero (the canonical form).
        guard used == 32, bits == 2, accumulator & 0b11 == 0 else { return nil }
        return out
    }

    /// Standard base64, 44 characters with one `=`: encoded by hand, as it is decoded (records
    /// and status spell every peer's key).
    public var base64: String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        let bytes = bytes
        return String(unsafeUninitializedCapacity: 44) { out in
            var at = 0
            for i in stride(from: 0, to: 32, by: 3) {
                let triple = UInt32(bytes[i]) << 16 | UInt32(i + 1 < 32 ? bytes[i + 1] : 0) << 8 | UInt32(i + 2 < 32 ? bytes[i + 2] : 0)
                for k in 0..<4 { out[at + k] = alphabet[Int(triple >> UInt32(18 - 6 * k) & 0x3F)] }
                at += 4
            }
            out[43] = UInt8(ascii: "=")  // 32 bytes: the last group holds two, so one character of padding
            return 44
        }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
    }
    public var description: String { base64 }
    public var isZero: Bool { words == (0, 0, 0, 0) }
}

/// A private key. Never printed, logged or put in an error: `description` is redacted.
public struct PrivateKey: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public let key: WireGuardKey

    public init(_ key: WireGuardKey) { self.key = key }

    public init?(base64 text: some StringProtocol) {
        guard let key = WireGuardKey(base64: text) else { return nil }
        self.key = key
    }

    /// The Curve25519 public key, as `wg pubkey` derives it.
    public var publicKey: WireGuardKey { WireGuardKey(bytes: X25519.publicKey(key.bytes))! }

    /// 32 bytes from getrandom(2), clamped, as `wg genkey` makes them.
    public static func generate() -> PrivateKey {
        var bytes = [UInt8](repeating: 0, count: 32)
        var used = 0
        while used < bytes.count {
            let n = bytes.withUnsafeMutableBytes { getrandom($0.baseAddress! + used, $0.count - used, 0) }
            if n < 0, errno == EINTR { continue }
            precondition(n > 0, "getrandom: \(Errno(rawValue: errno))")
            used += n
        }
        return PrivateKey(WireGuardKey(bytes: X25519.clamp(bytes))!)
    }

    public var description: String { "(private key)" }
    public var debugDescription: String { description }
}

/// A preshared key; redacted like a private key.
public struct PresharedKey: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public let key: WireGuardKey

    public init(_ key: WireGuardKey) { self.key = key }

    public init?(base64 text: some StringProtocol) {
        guard let key = WireGuardKey(base64: text) else { return nil }
        self.key = key
    }

    public var description: String { "(preshared key)" }
    public var debugDescription: String { description }
}

/// Why a key file was refused. Never contains any of the file's content, nor the path it was
/// asked for: that text may itself be a key pasted where its file name belongs.
public struct KeyFileError: Error, Sendable, CustomStringConvertible {
    public let problem: String
    public var description: String { problem }

    init(_ problem: String) { self.problem = problem }
}

/// Reads a base64 key from a regular file that belongs to one of `owners` (root and the user
/// running this, by default) and that no group or other user may read or write, like
/// `wg setconf` expects. A symbolic link is followed: the file it names is what is checked.
public func readSecretKeyFile(_ path: String, owners: Set<uid_t> = [0, geteuid()]) throws(KeyFileError) -> WireGuardKey {
    var info = stat()
    // Refuse a FIFO or device before opening it: opening either can block or have effects.
    guard stat(path, &info) == 0 else { throw KeyFileError("cannot read the key file: \(Errno(rawValue: errno))") }
    guard info.st_mode & S_IFMT == S_IFREG else { throw KeyFileError("the key file is not a regular file") }
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
    guard fd >= 0 else { throw KeyFileError("cannot read the key file: \(Errno(rawValue: errno))") }
    defer { close(fd) }
    // The checks that matter are made on what was opened, so a swap after `stat` gains nothing.
    guard fstat(fd, &info) == 0 else { throw KeyFileError("cannot read the key file: \(Errno(rawValue: errno))") }
    guard info.st_mode & S_IFMT == S_IFREG else { throw KeyFileError("the key file is not a regular file") }
    guard owners.contains(info.st_uid) else {
        let allowed = owners.sorted().map { $0 == 0 ? "root" : "uid \($0)" }.joined(separator: " or ")
        throw KeyFileError("the key file belongs to uid \(info.st_uid), not to \(allowed); run chown root on it")
    }
    guard info.st_mode & 0o077 == 0 else {
        let access = info.st_mode & 0o044 != 0 ? "readable" : "writable or executable"
        let octal = String(info.st_mode & 0o7777, radix: 8)
        throw KeyFileError("the key file is \(access) by group or others (mode \(String(repeating: "0", count: max(0, 4 - octal.count)) + octal)); run chmod 600 on it")
    }
    var buffer = [UInt8](repeating: 0, count: 4096)
    var used = 0
    while used < buffer.count {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + used, $0.count - used) }
        if n < 0, errno == EINTR { continue }
        guard n >= 0 else { throw KeyFileError("cannot read the key file: \(Errno(rawValue: errno))") }
        if n == 0 { break }
        used += n
    }
    let text = String(decoding: buffer[..<used], as: UTF8.self).trimmingWhitespace()
    guard let key = WireGuardKey(base64: text) else {
        throw KeyFileError("the key file does not hold a 44-character base64 WireGuard key")
    }
    return key
}
