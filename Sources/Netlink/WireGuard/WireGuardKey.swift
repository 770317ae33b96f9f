import CNetlink
import FoundationEssentials
import Glibc
import SystemPackage
import X25519

/// A 32-byte WireGuard key. Public keys print as base64; the secret kinds wrap it and redact.
public struct WireGuardKey: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        self.bytes = Array(bytes)
    }

    /// Accepts exactly the 44-character standard base64 that `wg` prints (one `=` of padding),
    /// and only its canonical form: the unused low bits of the last character must be zero.
    /// Decoded by hand (43 characters of 6 bits, the last one's low 2 bits zero, then `=`): a
    /// configuration of 10 000 peers decodes 10 000 keys on every load, and Foundation's decode
    /// plus re-encode (to check the form) cost more than the rest of a peer's decoding.
    public init?(base64 text: some StringProtocol) {
        let decoded: [UInt8]?? = text.utf8.withContiguousStorageIfAvailable(Self.decode)
        guard let bytes = decoded ?? Array(text.utf8).withUnsafeBufferPointer(Self.decode) else { return nil }
        self.bytes = bytes
    }

    private static func decode(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard text.count == 44, text[43] == UInt8(ascii: "=") else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
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
                out[used] = UInt8(truncatingIfNeeded: accumulator >> UInt32(bits))
                used += 1
            }
        }
        // 43 × 6 = 258 bits: 32 bytes and 2 bits left over, which must be zero (the canonical form).
        guard used == 32, bits == 2, accumulator & 0b11 == 0 else { return nil }
        return out
    }

    public var base64: String { Data(bytes).base64EncodedString() }

    /// The 32 bytes in one go (the synthesised hash feeds them to the hasher one at a time).
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
    public var description: String { base64 }
    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }
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
