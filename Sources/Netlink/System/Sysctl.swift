import SystemPackage

/// A key under /proc/sys. Reads and writes act on the network namespace of the calling thread
/// at the moment the file is opened.
public struct Sysctl: Hashable, Sendable, CustomStringConvertible {
    public var key: String

    public init(_ key: String) { self.key = key }

    /// `/proc/sys/net/ipv6/conf/<interface>/<name>`. The interface name is used as it is: a
    /// VLAN's dot (`eth0.100`) stays a dot in the path (only sysctl(8)'s key notation turns it
    /// into a `/`, because its separator is the dot).
    public static func ipv6(interface: String, _ name: String) -> Sysctl {
        Sysctl("net/ipv6/conf/\(interface)/\(name)")
    }

    public var path: FilePath { FilePath("/proc/sys/\(key)") }
    /// sysctl(8)'s notation: `net.ipv6.conf.eth0/100.forwarding` for the VLAN `eth0.100`.
    public var description: String {
        key.split(separator: "/", omittingEmptySubsequences: false)
            .map { String($0.map { $0 == "." ? "/" : $0 }) }.joined(separator: ".")
    }

    public func read() throws -> String {
        let fd = try FileDescriptor.open(path, .readOnly, options: .closeOnExec)
        defer { try? fd.close() }
        var bytes = [UInt8](repeating: 0, count: 256)
        let n = try bytes.withUnsafeMutableBytes { try fd.read(into: $0) }
        return String(decoding: bytes[..<n], as: UTF8.self).trimmingWhitespace()
    }

    public func write(_ value: String) throws {
        let fd = try FileDescriptor.open(path, .writeOnly, options: .closeOnExec)
        defer { try? fd.close() }
        _ = try fd.writeAll(Array("\(value)\n".utf8))
    }

    public func readInt() throws -> Int? { Int(try read()) }
}

extension StringProtocol {
    /// Without leading and trailing white space: Foundation's `trimmingCharacters(in:)` with
    /// `.whitespacesAndNewlines`, or `.whitespaces` when `newlines` is false (FoundationEssentials
    /// has neither). Foundation's set is Unicode's White_Space plus U+200B ZERO WIDTH SPACE.
    package func trimmingWhitespace(newlines: Bool = true) -> String {
        func trimmed(_ c: Character) -> Bool { (c.isWhitespace || c == "\u{200B}") && (newlines || !c.isNewline) }
        guard let first = firstIndex(where: { !trimmed($0) }), let last = lastIndex(where: { !trimmed($0) }) else { return "" }
        return String(self[first...last])
    }
}
