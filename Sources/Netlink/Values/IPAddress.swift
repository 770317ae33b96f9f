import Glibc

/// An IPv4 address, kept in host byte order.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init?(_ text: some StringProtocol) {
        var raw = in_addr()
        guard inet_pton(AF_INET, String(text), &raw) == 1 else { return nil }
        value = UInt32(bigEndian: raw.s_addr)
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 4 else { return nil }
        value = bytes.reduce(0) { $0 << 8 | UInt32($1) }
    }

    public var bytes: [UInt8] { withUnsafeBytes(of: value.bigEndian, Array.init) }

    public var description: String {
        var raw = in_addr(s_addr: value.bigEndian)
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &raw, &text, socklen_t(text.count))
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (a: Self, b: Self) -> Bool { a.value < b.value }
}

/// An IPv6 address as two 64-bit halves in host byte order, so prefix arithmetic is plain integer work.
public struct IPv6Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public init?(_ text: some StringProtocol) {
        var raw = in6_addr()
        guard inet_pton(AF_INET6, String(text), &raw) == 1 else { return nil }
        (high, low) = withUnsafeBytes(of: raw) { (UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self)),
                                                  UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self))) }
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        let all = Array(bytes)
        high = all[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        low = all[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
    }

    public var bytes: [UInt8] {
        withUnsafeBytes(of: high.bigEndian, Array.init) + withUnsafeBytes(of: low.bigEndian, Array.init)
    }

    /// fe80::/10
    public var isLinkLocal: Bool { high >> 54 == 0x3FA }
    /// ff00::/8
    public var isMulticast: Bool { high >> 56 == 0xFF }
    /// ::
    public var isUnspecified: Bool { high == 0 && low == 0 }
    /// ::1
    public var isLoopback: Bool { high == 0 && low == 1 }
    /// ::ffff:0:0/96, an IPv4 address in IPv6's clothes (RFC 4291 2.5.5.2): never on an IPv6 wire.
    public var isIPv4Mapped: Bool { high == 0 && low >> 32 == 0xFFFF }

    public var description: String {
        var raw = in6_addr()
        withUnsafeMutableBytes(of: &raw) { $0.copyBytes(from: bytes) }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (a: Self, b: Self) -> Bool { (a.high, a.low) < (b.high, b.low) }

    /// The address with every bit past `length` cleared.
    public func masked(to length: Int) -> IPv6Address {
        let highMask: UInt64 = length >= 64 ? .max : (length <= 0 ? 0 : ~(UInt64.max >> length))
        let lowMask: UInt64 = length >= 128 ? .max : (length <= 64 ? 0 : ~(UInt64.max >> (length - 64)))
        return IPv6Address(high: high & highMask, low: low & lowMask)
    }
}

public enum AddressFamily: UInt8, Sendable, Hashable, CustomStringConvertible {
    case inet = 2
    case inet6 = 10

    public var description: String { self == .inet ? "inet" : "inet6" }
}

public enum IPAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    public init?(_ text: some StringProtocol) {
        if let v6 = IPv6Address(text) {
            self = .v6(v6)
        } else if let v4 = IPv4Address(text) {
            self = .v4(v4)
        } else {
            return nil
        }
    }

    public init?(bytes: some Collection<UInt8>) {
        switch bytes.count {
        case 4: self = .v4(IPv4Address(bytes: bytes)!)
        case 16: self = .v6(IPv6Address(bytes: bytes)!)
        default: return nil
        }
    }

    public var family: AddressFamily {
        if case .v4 = self { return .inet }
        return .inet6
    }

    public var bitWidth: Int { family == .inet ? 32 : 128 }

    public var bytes: [UInt8] {
        switch self {
        case .v4(let a): a.bytes
        case .v6(let a): a.bytes
        }
    }

    public var description: String {
        switch self {
        case .v4(let a): a.description
        case .v6(let a): a.description
        }
    }

    public static func < (a: Self, b: Self) -> Bool {
        switch (a, b) {
        case (.v4(let x), .v4(let y)): x < y
        case (.v6(let x), .v6(let y)): x < y
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }

    public func masked(to length: Int) -> IPAddress {
        switch self {
        case .v4(let a):
            let mask: UInt32 = length >= 32 ? .max : (length <= 0 ? 0 : ~(UInt32.max >> length))
            return .v4(IPv4Address(a.value & mask))
        case .v6(let a):
            return .v6(a.masked(to: length))
        }
    }
}

/// An address with a prefix length: a route destination, an allowed IP, an interface address.
public struct IPPrefix: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var length: UInt8

    public init(address: IPAddress, length: UInt8) {
        precondition(Int(length) <= address.bitWidth, "prefix length past the address width")
        self.address = address
        self.length = length
    }

    /// Parses `addr/len`, or a bare address as a host prefix. Rejects lengths past the address width.
    public init?(_ text: some StringProtocol) {
        // The first `/` found by byte, not by `split`: allowed IPs are parsed by the ten thousand.
        let slash = text.utf8.firstIndex(of: UInt8(ascii: "/"))
        guard let address = IPAddress(slash.map { text[..<$0] } ?? text[...]) else { return nil }
        var length = address.bitWidth
        if let slash {
            let digits = text[text.index(after: slash)...]
            guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let n = Int(digits), n <= address.bitWidth else { return nil }
            length = n
        }
        self.init(address: address, length: UInt8(length))
    }

    public static func host(_ address: IPAddress) -> IPPrefix {
        IPPrefix(address: address, length: UInt8(address.bitWidth))
    }

    public var family: AddressFamily { address.family }
    public var isHost: Bool { Int(length) == address.bitWidth }
    /// True when no bit past the prefix length is set (what the kernel stores for a route).
    public var isCanonical: Bool { address.masked(to: Int(length)) == address }
    public var canonical: IPPrefix { IPPrefix(address: address.masked(to: Int(length)), length: length) }

    public func contains(_ other: IPAddress) -> Bool {
        other.family == family && other.masked(to: Int(length)) == address.masked(to: Int(length))
    }

    public func contains(_ other: IPPrefix) -> Bool {
        other.length >= length && contains(other.address)
    }

    public var description: String { "\(address)/\(length)" }

    public static func < (a: Self, b: Self) -> Bool { (a.address, a.length) < (b.address, b.length) }
}
