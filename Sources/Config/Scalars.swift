import Glibc
import Netlink
import Reconciler

/// Parsers for the scalar types of the configuration: each returns nil for text it refuses.
enum Scalars {
    /// A value as an error repeats it: quoted, and cut short so that a stray megabyte stays out
    /// of the journal.
    /// A value that holds a key is never repeated (see `holdsKey`).
    /// Control and format characters (a newline, an escape sequence, a bidirectional override)
    /// are shown as `\u{…}`: a value cannot forge a line of `check`'s output or of the journal,
    /// nor drive the terminal.
    static func quoted(_ text: String) -> String {
        if holdsKey(text) { return keyNotShown }
        let shown = text.count <= 64 ? String(text) : String(text.prefix(60))
        let escaped = shown.unicodeScalars.map { scalar -> String in
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator:
                "\\u{\(String(scalar.value, radix: 16))}"
            default:
                String(scalar)
            }
        }.joined()
        return text.count <= 64 ? "\"\(escaped)\"" : "\"\(escaped)…\" (\(text.utf8.count) bytes)"
    }

    /// A path (or a dotted key path) as a message shows it: whole, unless it holds a key.
    static func shown(_ path: String) -> String { holdsKey(path) ? keyNotShown : path }

    static let keyNotShown = "(a value that looks like a key, not shown)"

    /// Whether `text` holds something that looks like a WireGuard key: 44 characters of base64
    /// ending in `=` that `WireGuardKey(base64:)` accepts, alone or inside longer text. A private
    /// key pasted into the wrong field must not reach the journal or `status` through an error.
    static func holdsKey(_ text: some StringProtocol) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count >= 44 else { return false }
        var run = 0  // base64 characters (other than `=`) just before index i
        for (i, byte) in bytes.enumerated() {
            if byte == UInt8(ascii: "=") {
                if run >= 43, WireGuardKey(base64: String(decoding: bytes[(i - 43)...i], as: UTF8.self)) != nil { return true }
                run = 0
            } else if isBase64(byte) {
                run += 1
            } else {
                run = 0
            }
        }
        return false
    }

    private static func isBase64(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "+"), UInt8(ascii: "/"): true
        default: false
        }
    }

    static let longestInterval = Duration.seconds(24 * 3600)

    static func bool(_ text: String) -> Bool? {
        switch text {
        case "true": true
        case "false": false
        default: nil
        }
    }

    /// Decimal digits only: no sign, no hex, no YAML-style `1_000`.
    static func integer(_ text: String, in range: ClosedRange<UInt64>) -> UInt64? {
        guard !text.isEmpty, text.count <= 20, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
              let value = UInt64(text), range.contains(value) else { return nil }
        return value
    }

    /// `500ms`, `2s`, `1m`, `1h`, or a sum such as `1m30s`; never zero.
    /// `allowZero`: also `0` (bare) and zero in units, for the keys where 0 means "off".
    static func duration(_ text: String, allowZero: Bool = false) -> Duration? {
        if allowZero, text == "0" { return .zero }
        var total = Duration.zero
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, digits.count <= 9, let value = Int64(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            let unit = rest.prefix { $0.isASCII && $0.isLetter }
            rest = rest.dropFirst(unit.count)
            switch unit {
            case "ms": total += .milliseconds(value)
            case "s": total += .seconds(value)
            case "m": total += .seconds(value * 60)
            case "h": total += .seconds(value * 3600)
            default: return nil
            }
        }
        return total > .zero || allowZero ? total : nil
    }

    /// An IPv6 address written alone.
    static func ipv6Address(_ text: String) -> IPAddress? {
        var text = text
        return text.withUTF8 { bytes in
            guard !bytes.contains(UInt8(ascii: "/")), let address = inet6(bytes[...]) else { return nil }
            return .v6(address)
        }
    }

    /// `address/length`, both required. Parsed here on the bytes (inet_pton for the address)
    /// rather than through the generic `IPPrefix(_:)`: a configuration holds one per allowed IP.
    static func ipv6Prefix(_ text: String) -> IPPrefix? {
        var text = text
        return text.withUTF8 { bytes in
            guard let slash = bytes.firstIndex(of: UInt8(ascii: "/")) else { return nil }
            let digits = bytes[(slash + 1)...]
            guard (1...3).contains(digits.count), digits.allSatisfy({ (48...57).contains($0) }) else { return nil }
            let length = digits.reduce(0) { $0 * 10 + Int($1 - 48) }
            guard length <= 128, let address = inet6(bytes[..<slash]) else { return nil }
            return IPPrefix(address: .v6(address), length: UInt8(length))
        }
    }

    /// inet_pton(AF_INET6) on UTF-8 bytes; nil for anything it refuses (and anything longer
    /// than the longest IPv6 text, so the copy stays on the stack).
    private static func inet6(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> IPv6Address? {
        // A NUL would end inet_pton's string early: `::1` followed by one and anything is no address.
        guard bytes.count < 64, !bytes.contains(0) else { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer -> IPv6Address? in
            for (i, byte) in bytes.enumerated() { buffer[i] = CChar(bitPattern: byte) }
            buffer[bytes.count] = 0
            var raw = in6_addr()
            guard inet_pton(AF_INET6, buffer.baseAddress!, &raw) == 1 else { return nil }
            return withUnsafeBytes(of: raw) {
                IPv6Address(high: UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self)),
                            low: UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
            }
        }
    }

    /// What the kernel accepts as an interface name (`dev_valid_name()`): 1–15 bytes, not `.`
    /// or `..`, no `/`, `:` or white space; and printable ASCII only (a NUL would cut the name
    /// short in a sysctl path: `all\0` is `all`).
    static func isInterfaceName(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 15 && text != "." && text != ".."
            && text.utf8.allSatisfy { (0x21...0x7e).contains($0) && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: ":") }
    }

    /// Names `dev_valid_name()` accepts that wgkeeper must never configure, and why: `all` and
    /// `default` are sysctl directories, not devices (`all.forwarding = 1` makes the host a
    /// router everywhere), and `lo` is the host's own loopback.
    static let reservedInterfaces = [
        "all": "net.ipv6.conf.all is every interface at once (its forwarding = 1 makes the host a router on every link)",
        "default": "net.ipv6.conf.default is the template for interfaces created later, not an interface",
        "lo": "it is the loopback interface",
    ]
    /// A group name as useradd(8) accepts it (`[a-z_][a-z0-9_-]*`, an optional trailing `$`,
    /// at most 32), or a group number.
    static func isGroup(_ text: String) -> Bool {
        if let number = UInt32(text) { return number != UInt32.max }
        guard let first = text.unicodeScalars.first, text.utf8.count <= 32 else { return false }
        let body = text.hasSuffix("$") ? String(text.dropLast()) : text
        let allowed: (Unicode.Scalar) -> Bool = { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" }
        return (("a"..."z").contains(first) || first == "_") && !body.isEmpty && body.unicodeScalars.allSatisfy(allowed)
    }

    /// ASCII letters (the only ASCII characters Unicode calls alphabetic), digits and `. _ @ + -`,
    /// checked byte by byte: a byte past ASCII is never allowed, so no multi-byte character passes.
    static func isPeerName(_ text: String) -> Bool {
        guard let first = text.utf8.first, text.utf8.count <= 64 else { return false }
        let allowed: (UInt8) -> Bool = {
            switch $0 {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "@"), UInt8(ascii: "+"), UInt8(ascii: "-"): true
            default: false
            }
        }
        return first != UInt8(ascii: "-") && text.utf8.allSatisfy(allowed)
    }

    /// `[2001:db8::1]:51820`, `192.0.2.1:51820` or `vpn.example.com:51820`.
    static func endpoint(_ text: String) -> ConfiguredEndpoint? {
        if let endpoint = Endpoint(text) {
            return endpoint.port == 0 ? nil : .address(endpoint)
        }
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let host = String(text[..<colon])
        guard let port = integer(String(text[text.index(after: colon)...]), in: 1...65535),
              !host.isEmpty, host.utf8.count <= 253, !host.hasPrefix("["), IPAddress(host) == nil else { return nil }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        let valid = labels.allSatisfy { label in
            !label.isEmpty && label.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
        // All-numeric labels would be a mistyped IPv4 address, not a host name.
        guard valid, !labels.allSatisfy({ $0.allSatisfy(\.isNumber) }) else { return nil }
        return .host(host, port: UInt16(port))
    }
}
