import Foundation
import SystemPackage

/// A key under /proc/sys. Reads and writes act on the network namespace of the calling thread
/// at the moment the file is opened.
public struct Sysctl: Hashable, Sendable, CustomStringConvertible {
    public var key: String

    public init(_ key: String) { self.key = key }

    /// `net.ipv6.conf.<interface>.<name>`; a `.` inside an interface name (a VLAN such as
    /// `eth0.100`) is a `/` in the sysctl path, as sysctl(8) writes it.
    public static func ipv6(interface: String, _ name: String) -> Sysctl {
        Sysctl("net/ipv6/conf/\(interface.replacingOccurrences(of: ".", with: "/"))/\(name)")
    }

    public var path: FilePath { FilePath("/proc/sys/\(key)") }
    public var description: String { key.replacingOccurrences(of: "/", with: ".") }

    public func read() throws -> String {
        let fd = try FileDescriptor.open(path, .readOnly, options: .closeOnExec)
        defer { try? fd.close() }
        var bytes = [UInt8](repeating: 0, count: 256)
        let n = try bytes.withUnsafeMutableBytes { try fd.read(into: $0) }
        return String(decoding: bytes[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public func write(_ value: String) throws {
        let fd = try FileDescriptor.open(path, .writeOnly, options: .closeOnExec)
        defer { try? fd.close() }
        _ = try fd.writeAll(Array("\(value)\n".utf8))
    }

    public func readInt() throws -> Int? { Int(try read()) }
}
