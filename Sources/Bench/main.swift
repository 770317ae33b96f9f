import Foundation
import Netlink

// wgkeeper-bench: measurements side by side with the tools operators use today.
// Each run builds fresh namespaces and removes them. Numbers go to standard output.

@discardableResult
func shell(_ arguments: [String], input: String? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let out = Pipe()
    process.standardOutput = out
    let inPipe = Pipe()
    if input != nil { process.standardInput = inPipe }
    try process.run()
    if let input {
        inPipe.fileHandleForWriting.write(Data(input.utf8))
        try inPipe.fileHandleForWriting.close()
    }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw BenchError("\(arguments.joined(separator: " ")) failed") }
    return String(decoding: data, as: UTF8.self)
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A namespace with a veth pair, removed when the closure returns.
func withNamespace<T>(_ body: (String, NetworkNamespace, Int32) throws -> T) throws -> T {
    let name = "wgk-bench-\(UInt32.random(in: 0...UInt32.max))"
    try shell(["ip", "netns", "add", name])
    defer { _ = try? shell(["ip", "netns", "del", name]) }
    try shell(["ip", "-n", name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"])
    try shell(["ip", "-n", name, "link", "set", "veth0", "up"])
    try shell(["ip", "-n", name, "link", "set", "veth1", "up"])
    let namespace = try NetworkNamespace(named: name)
    let index = try namespace.perform { try RTNetlink().link(named: "veth0")!.index }
    return try body(name, namespace, index)
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = ContinuousClock.now
    try body()
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

func hostAddress(_ i: Int) -> String { "2001:db8:\(String(i >> 16, radix: 16)):\(String(i & 0xffff, radix: 16))::1" }

/// Issue 2's figure: N routes through the batched API versus `ip -batch`, fresh namespaces each run.
func benchRoutes(count: Int, runs: Int) throws {
    var ours: [Double] = []
    var iproute: [Double] = []
    let batch = (0..<count).map { "route add \(hostAddress($0))/128 dev veth0 proto 77" }.joined(separator: "\n") + "\n"
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("wgk-bench-\(getpid()).batch")
    try batch.write(to: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: file) }
    for _ in 0..<runs {
        try withNamespace { name, _, _ in
            iproute.append(try seconds { try shell(["ip", "-6", "-n", name, "-batch", file.path]) })
        }
        try withNamespace { _, namespace, index in
            let netlink = try namespace.perform { try RTNetlink() }
            let routes = (0..<count).map {
                Route(destination: IPPrefix("\(hostAddress($0))/128")!, protocolNumber: 77, outputInterface: index, metric: 1024)
            }
            var failures = 0
            ours.append(try seconds {
                for case .failure in try netlink.perform(routes.map { $0.addRequest() }) { failures += 1 }
            })
            if failures > 0 { throw BenchError("\(failures) route adds failed") }
        }
    }
    let ratio = median(ours) / median(iproute)
    print(String(format: "routes N=%d runs=%d: wgkeeper median %.1f ms (min %.1f, max %.1f); ip -batch median %.1f ms (min %.1f, max %.1f); ratio %.2f",
                 count, runs, median(ours) * 1e3, ours.min()! * 1e3, ours.max()! * 1e3,
                 median(iproute) * 1e3, iproute.min()! * 1e3, iproute.max()! * 1e3, ratio))
}

/// A namespace holding an empty, up `wg0` (needs a kernel with WireGuard: run in the VM).
func withWireGuardNamespace<T>(_ body: (String, NetworkNamespace) throws -> T) throws -> T {
    let name = "wgk-bench-\(UInt32.random(in: 0...UInt32.max))"
    try shell(["ip", "netns", "add", name])
    defer { _ = try? shell(["ip", "netns", "del", name]) }
    try shell(["ip", "-n", name, "link", "add", "wg0", "type", "wireguard"])
    try shell(["ip", "-n", name, "link", "set", "wg0", "up"])
    return try body(name, try NetworkNamespace(named: name))
}

func report(_ what: String, _ ours: [Double], _ anchorName: String, _ anchor: [Double]) {
    print(String(format: "%@: wgkeeper median %.1f ms (min %.1f, max %.1f); %@ median %.1f ms (min %.1f, max %.1f); ratio %.2f",
                 what, median(ours) * 1e3, ours.min()! * 1e3, ours.max()! * 1e3,
                 anchorName, median(anchor) * 1e3, anchor.min()! * 1e3, anchor.max()! * 1e3, median(ours) / median(anchor)))
}

/// Issue 3's figures: N peers (one /128 each) applied to an empty device versus `wg setconf`,
/// and one read of the device versus `wg show dump`.
func benchWireGuard(count: Int, runs: Int) throws {
    let privateKey = PrivateKey.generate()
    let peers = (0..<count).map { i in
        WireGuardPeerChange(publicKey: PrivateKey.generate().publicKey,
                            allowedIPs: [IPPrefix("\(hostAddress(i))/128")!])
    }
    var conf = "[Interface]\nPrivateKey = \(privateKey.key.base64)\nListenPort = 51820\n"
    for peer in peers { conf += "\n[Peer]\nPublicKey = \(peer.publicKey.base64)\nAllowedIPs = \(peer.allowedIPs[0])\n" }
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("wgk-bench-\(getpid()).conf")
    try conf.write(to: file, atomically: true, encoding: .utf8)
    chmod(file.path, 0o600)
    defer { try? FileManager.default.removeItem(at: file) }
    let change = WireGuardDeviceChange(privateKey: privateKey, listenPort: 51820, replacePeers: true, peers: peers)

    var setconf: [Double] = [], apply: [Double] = [], show: [Double] = [], read: [Double] = []
    for _ in 0..<runs {
        try withWireGuardNamespace { name, _ in
            setconf.append(try seconds { try shell(["ip", "netns", "exec", name, "wg", "setconf", "wg0", file.path]) })
            show.append(try seconds { try shell(["ip", "netns", "exec", name, "wg", "show", "wg0", "dump"]) })
        }
        try withWireGuardNamespace { _, namespace in
            let wireguard = try namespace.perform { try WireGuardNetlink() }
            apply.append(try seconds { try wireguard.apply(device: "wg0", change) })
            var seen = 0
            read.append(try seconds { seen = try wireguard.device(named: "wg0")?.peers.count ?? 0 })
            if seen != count { throw BenchError("read back \(seen) peers, expected \(count)") }
        }
    }
    report("wireguard apply N=\(count) runs=\(runs)", apply, "wg setconf", setconf)
    report("wireguard poll N=\(count) runs=\(runs)", read, "wg show dump", show)
}

signal(SIGPIPE, SIG_IGN)
let arguments = CommandLine.arguments.dropFirst()
let count = arguments.dropFirst().first.flatMap { Int($0) } ?? 10_000
do {
    switch arguments.first ?? "routes" {
    case "routes": try benchRoutes(count: count, runs: 5)
    case "wireguard": try benchWireGuard(count: count, runs: 5)
    default: throw BenchError("usage: wgkeeper-bench routes|wireguard [N]")
    }
} catch {
    FileHandle.standardError.write(Data("wgkeeper-bench: \(error)\n".utf8))
    exit(1)
}
