import Crypto
import Foundation
import SystemPackage

/// A 32-byte WireGuard key. Public keys print as base64; the secret kinds wrap it and redact.
public struct WireGuardKey: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        self.bytes = Array(bytes)
    }

    /// Accepts exactly the 44-character standard base64 that `wg` prints (one `=` of padding),
    /// and only its canonical form: the unused low bits of the last character must be zero.
    public init?(base64 text: some StringProtocol) {
        guard text.utf8.count == 44, text.hasSuffix("="), !text.dropLast().contains("="),
              let data = Data(base64Encoded: String(text)), data.count == 32,
              data.base64EncodedString() == text
        else { return nil }
        bytes = Array(data)
    }

    public var base64: String { Data(bytes).base64EncodedString() }
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
    public var publicKey: WireGuardKey {
        let secret = try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: key.bytes)
        return WireGuardKey(bytes: secret.publicKey.rawRepresentation)!
    }

    public static func generate() -> PrivateKey {
        PrivateKey(WireGuardKey(bytes: Curve25519.KeyAgreement.PrivateKey().rawRepresentation)!)
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

/// Why a key file was refused. Never contains any of the file's content.
public struct KeyFileError: Error, Sendable, CustomStringConvertible {
    public let path: String
    public let problem: String
    public var description: String { "\(path): \(problem)" }
}

/// Reads a base64 key from a file that only its owner may read (like `wg setconf` expects).
public func readSecretKeyFile(_ path: String) throws(KeyFileError) -> WireGuardKey {
    var info = stat()
    guard stat(path, &info) == 0 else {
        throw KeyFileError(path: path, problem: "cannot read key file: \(Errno(rawValue: errno))")
    }
    guard info.st_mode & S_IFMT == S_IFREG else { throw KeyFileError(path: path, problem: "key file is not a regular file") }
    guard info.st_mode & 0o077 == 0 else {
        throw KeyFileError(path: path, problem: String(
            format: "key file is readable by group or others (mode %04o); run: chmod 600 %@", info.st_mode & 0o7777, path))
    }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw KeyFileError(path: path, problem: "cannot read key file")
    }
    let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    guard let key = WireGuardKey(base64: text) else {
        throw KeyFileError(path: path, problem: "key file does not hold a 44-character base64 WireGuard key")
    }
    return key
}
