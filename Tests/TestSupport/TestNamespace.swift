import Foundation
import Netlink
import XCTest

/// A throwaway network namespace for one test, removed in teardown even when the test fails.
public final class TestNamespace {
    public let name: String
    public let namespace: NetworkNamespace

    public init(for test: XCTestCase) throws {
        guard geteuid() == 0 else {
            throw TestFailure("the kernel tier needs root: network namespaces and netlink writes")
        }
        // A child that exits early must not kill the test run through a write to its pipe.
        signal(SIGPIPE, SIG_IGN)
        name = "wgk-\(UInt32.random(in: 0...UInt32.max))"
        try shell("ip", "netns", "add", name)
        let name = self.name
        test.addTeardownBlock { _ = try? shell("ip", "netns", "del", name) }
        namespace = try NetworkNamespace(named: name)
        try ip("link", "set", "lo", "up")
    }

    /// Runs `ip` inside the namespace; returns its standard output.
    @discardableResult
    public func ip(_ arguments: String...) throws -> String {
        try shell(["ip", "-n", name] + arguments)
    }

    /// `ip -j` output as JSON objects.
    public func ipJSON(_ arguments: String...) throws -> [[String: Any]] {
        let text = try shell(["ip", "-j", "-n", name] + arguments)
        if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return [] }
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
    }

    /// A veth pair inside the namespace, both ends up; returns the first end's index.
    @discardableResult
    public func addVeth(_ a: String = "veth0", _ b: String = "veth1") throws -> Int32 {
        try ip("link", "add", a, "type", "veth", "peer", "name", b)
        try ip("link", "set", a, "up")
        try ip("link", "set", b, "up")
        return try index(of: a)
    }

    /// The gateway's two devices as the daemon tests use them: `wg0` (a veth standing in for the
    /// tunnel: no WireGuard on this kernel) and the LAN `private0`, both up, with `lanAddress`
    /// (without duplicate address detection) on the LAN when given.
    public func addGatewayDevices(lanAddress: String? = nil) throws {
        try addVeth("wg0", "wg0p")
        try addVeth("private0", "lanp")
        if let lanAddress { try ip("-6", "addr", "add", lanAddress, "dev", "private0", "nodad") }
    }

    public func index(of device: String) throws -> Int32 {
        let links = try ipJSON("link", "show", "dev", device)
        return Int32(try XCTUnwrap(links.first?["ifindex"] as? Int))
    }

    public func rtnetlink() throws -> RTNetlink { try namespace.perform { try RTNetlink() } }
    public func events(_ groups: [RouteGroup] = RouteGroup.allCases, bufferBytes: Int = 32 << 20) throws -> NetlinkSocket {
        try namespace.perform { try NetlinkSocket(.route, groups: groups.map(\.rawValue), receiveBufferBytes: bufferBytes) }
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs a program, throwing with its standard error when it fails.
@discardableResult
public func shell(_ arguments: String...) throws -> String { try shell(arguments) }

@discardableResult
public func shell(_ arguments: [String], input: String? = nil, allowedExitCodes: Set<Int32> = [0]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let inPipe = Pipe()
    if input != nil { process.standardInput = inPipe }
    try process.run()
    if let input {
        inPipe.fileHandleForWriting.write(Data(input.utf8))
        try inPipe.fileHandleForWriting.close()
    }
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard allowedExitCodes.contains(process.terminationStatus) else {
        throw TestFailure("\(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(String(decoding: errors, as: UTF8.self))")
    }
    return String(decoding: output, as: UTF8.self)
}
