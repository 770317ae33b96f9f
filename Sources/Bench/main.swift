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

/// Issue 5's figure: from an external route deletion to the route being back, through a
/// running daemon, over `deletions` deletions (p50/p99). The namespace holds `peers` derived routes.
func benchRepair(peers: Int, deletions: Int) throws {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("wgkeeper").path
    guard FileManager.default.isExecutableFile(atPath: binary) else { throw BenchError("\(binary) missing: build the wgkeeper product") }
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wgk-bench-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let key = directory.appendingPathComponent("wg0.key").path
    try (PrivateKey.generate().key.base64 + "\n").write(toFile: key, atomically: false, encoding: .utf8)
    chmod(key, 0o600)
    var yaml = """
    runtime:
      status_socket: \(directory.path)/status.sock
      bpf_pin_root: \(directory.path)/bpf
      proxy_poll: 2s
      wireguard_poll: 2s
    wireguard:
      wg0:
        private_key_file: \(key)
        peers:

    """
    for i in 0..<peers {
        yaml += "      - {name: p\(i), public_key: \"\(PrivateKey.generate().publicKey.base64)\", allowed_ips: [\(IPPrefix("2001:db8:1::\(String(i + 1, radix: 16))/128")!)]}\n"
    }
    yaml += "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\", proxy_ndp: true, redirect: false}\n"
    let config = directory.appendingPathComponent("wgkeeper.yaml").path
    try yaml.write(toFile: config, atomically: true, encoding: .utf8)

    let name = "wgk-bench-\(UInt32.random(in: 0...UInt32.max))"
    try shell(["ip", "netns", "add", name])
    defer { _ = try? shell(["ip", "netns", "del", name]) }
    for (a, b) in [("wg0", "wg0p"), ("private0", "lanp")] {
        try shell(["ip", "-n", name, "link", "add", a, "type", "veth", "peer", "name", b])
        try shell(["ip", "-n", name, "link", "set", a, "up"])
        try shell(["ip", "-n", name, "link", "set", b, "up"])
    }
    let namespace = try NetworkNamespace(named: name)
    let (netlink, events) = try namespace.perform { (try RTNetlink(), try NetlinkSocket.events([.ipv6Route])) }
    let daemon = Process()
    daemon.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    daemon.arguments = ["ip", "netns", "exec", name, binary, "run", "--config", config, "--log-level", "warning"]
    try daemon.run()
    defer { daemon.terminate(); daemon.waitUntilExit() }

    let oif = try namespace.perform { try RTNetlink().link(named: "wg0")!.index }
    let target = Route(destination: IPPrefix("2001:db8:1::1/128")!, protocolNumber: 77, outputInterface: oif, metric: 1024)
    let start = ContinuousClock.now
    while try !netlink.routes(family: .inet6).contains(target) {
        if ContinuousClock.now - start > .seconds(30) { throw BenchError("the daemon never installed \(target)") }
        usleep(10_000)
    }
    usleep(200_000)
    _ = try events.readEvents()
    var latencies: [Double] = []
    for _ in 0..<deletions {
        try netlink.socket.perform(target.deleteRequest())
        let deleted = ContinuousClock.now
        var back = false
        while !back {
            for event in try events.waitForEvents(timeout: .seconds(5)) {
                if case .newRoute(let route) = event, route == target { back = true }
            }
            if ContinuousClock.now - deleted > .seconds(5) { throw BenchError("route not repaired within 5 s") }
        }
        let d = ContinuousClock.now - deleted
        latencies.append(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }
    latencies.sort()
    func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] * 1e3 }
    print(String(format: "repair latency (%d derived routes, %d deletions): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms",
                 peers, deletions, percentile(0.5), percentile(0.9), percentile(0.99), latencies.last! * 1e3))
}

signal(SIGPIPE, SIG_IGN)
let arguments = CommandLine.arguments.dropFirst()
let count = arguments.dropFirst().first.flatMap { Int($0) } ?? 10_000
do {
    switch arguments.first ?? "routes" {
    case "routes": try benchRoutes(count: count, runs: 5)
    case "wireguard": try benchWireGuard(count: count, runs: 5)
    case "repair": try benchRepair(peers: count, deletions: 1000)
    default: throw BenchError("usage: wgkeeper-bench routes|wireguard|repair [N]")
    }
} catch {
    FileHandle.standardError.write(Data("wgkeeper-bench: \(error)\n".utf8))
    exit(1)
}
