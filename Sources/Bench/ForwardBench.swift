import Foundation
import Glibc

/// Issue 9, row 8 (needs ip6tnl and TC/BPF: run in the VM): iperf3 TCP between a client
/// namespace and a LAN host namespace across a gateway namespace, two gateways side by side:
///
/// - **datapath**: `wgkeeper run` (redirect: true) attaches its TC programs to `wg0` and
///   `private0`; `all.forwarding = 0`, so nothing crosses the gateway except through them;
/// - **forwarding**: no daemon, `all.forwarding = 1`, the same route, proxy entry and sysctls
///   written by hand.
///
/// The tunnel stand-in `wg0` is an `ip6tnl` (ip6ip6) device, a real L3 device without crypto,
/// whose other end sits in the client namespace over a veth underlay. Runs alternate between
/// the two gateways so that drift of the (emulated) machine hits both alike.
func benchForwarding(runs: Int, duration: Int) throws {
    guard (try? shell(["iperf3", "--version"])) != nil else { throw BenchError("iperf3 missing (scripts/bench installs it)") }
    let namespaces = NamespaceSet()
    defer { namespaces.removeAll() }
    let namespace = namespaces.add
    let client = peerAddress(0), lanHost = "2001:db8:1::10", lanPrefix = "2001:db8:1::/64", udpPayload = 64

    /// One gateway between a client and a LAN host; returns the three namespace names.
    func topology() throws -> (gateway: String, client: String, host: String) {
        let g = try namespace(), c = try namespace(), h = try namespace()
        func ip(_ ns: String, _ args: String...) throws { try shell(["ip", "-n", ns] + args) }
        try ip(g, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1", "netns", c)
        try ip(g, "-6", "addr", "add", "fd00::1/64", "dev", "ul0", "nodad")
        try ip(g, "link", "set", "ul0", "up")
        try ip(c, "-6", "addr", "add", "fd00::2/64", "dev", "ul1", "nodad")
        try ip(c, "link", "set", "ul1", "up")
        try ip(g, "link", "add", "wg0", "type", "ip6tnl", "mode", "ip6ip6", "local", "fd00::1", "remote", "fd00::2", "encaplimit", "none")
        try ip(g, "link", "set", "wg0", "up")
        try ip(c, "link", "add", "tnl1", "type", "ip6tnl", "mode", "ip6ip6", "local", "fd00::2", "remote", "fd00::1", "encaplimit", "none")
        try ip(c, "-6", "addr", "add", "\(client)/128", "dev", "tnl1", "nodad")
        try ip(c, "link", "set", "tnl1", "up")
        try ip(c, "-6", "route", "add", lanPrefix, "dev", "tnl1")
        try ip(g, "link", "add", "private0", "type", "veth", "peer", "name", "host0", "netns", h)
        try ip(g, "link", "set", "private0", "up")
        try ip(g, "-6", "route", "add", lanPrefix, "dev", "private0")
        try ip(h, "-6", "addr", "add", "\(lanHost)/64", "dev", "host0", "nodad")
        try ip(h, "link", "set", "host0", "up")
        return (g, c, h)
    }

    let ours = try topology(), kernel = try topology()
    // Plain forwarding: what the daemon derives (route via wg0, proxy entry, sysctls on the
    // LAN device), but all.forwarding = 1 and no programs.
    try shell(["ip", "-n", kernel.gateway, "-6", "route", "add", "\(client)/128", "dev", "wg0"])
    try shell(["ip", "-n", kernel.gateway, "-6", "neigh", "add", "proxy", client, "dev", "private0"])
    for key in ["private0.proxy_ndp=1", "private0.forwarding=1", "all.forwarding=1"] {
        try shell(["ip", "netns", "exec", kernel.gateway, "sysctl", "-qw", "net.ipv6.conf.\(key)"])
    }
    // The datapath: the daemon with one peer (the client's /128) and redirect on. wg0 is not a
    // WireGuard device, so the peer stays pending; route, proxy entry, sysctls and the
    // programs with their two map entries are applied.
    // Not under /tmp: scripts/bench shares the host's /tmp with the VM over 9p (VM_RWDIRS),
    // where unix sockets (notify, status) cannot be bound.
    let directory = URL(fileURLWithPath: "/run/wgk-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    var config = GatewayConfig(directory: directory, peers: 1)
    config.redirect = true
    config.timers = "5s"
    try config.write()
    let daemon = try GatewayDaemon(namespace: ours.gateway, config: config)
    defer { daemon.stop() }
    _ = try daemon.wait(for: "READY=1")
    // The programs and entries are in place once the status says so.
    let deadline = ContinuousClock.now + .seconds(60)
    var datapathStatus: [String: Any] = [:]
    while true {
        datapathStatus = try daemon.request("status")["datapath"] as? [String: Any] ?? [:]
        let attached = (datapathStatus["programs"] as? [String: Any])?.count ?? 0
        if attached >= 2, try daemon.status().inSync("datapath") >= 2 { break }
        guard ContinuousClock.now < deadline else { throw BenchError("datapath not attached within 60 s: \(datapathStatus)\n\(daemon.log.suffix(2000))") }
        usleep(200_000)
    }
    let forwarding = try shell(["ip", "netns", "exec", ours.gateway, "sysctl", "-n", "net.ipv6.conf.all.forwarding"])
        .trimmingCharacters(in: .whitespacesAndNewlines)
    guard forwarding == "0" else { throw BenchError("datapath gateway has all.forwarding = \(forwarding)") }

    // iperf3 keeps a scratch file per stream in $TMPDIR: not the VM's 9p /tmp, where it fails.
    // One iperf3 server per LAN host; a ping first (neighbour discovery, proxy NDP) proves the path.
    var servers: [Process] = []
    defer { for server in servers where server.isRunning { server.terminate(); server.waitUntilExit() } }
    for side in [ours, kernel] {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["ip", "netns", "exec", side.host, "env", "TMPDIR=/run", "iperf3", "-s", "-B", lanHost]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        servers.append(server)
        try shell(["ip", "netns", "exec", side.client, "ping", "-6", "-c", "3", "-i", "0.5", "-W", "10", lanHost])
    }
    /// One iperf3 run: TCP (one stream) or UDP (`udp`: as fast as it can send, 64-byte payloads);
    /// the receiver's Mbit/s and packets per second.
    func iperf(_ side: (gateway: String, client: String, host: String), reverse: Bool, udp: Bool) throws -> (mbps: Double, pps: Double) {
        var arguments = ["ip", "netns", "exec", side.client, "env", "TMPDIR=/run", "iperf3", "-c", lanHost, "-t", "\(duration)", "-O", "1", "-J"]
        if udp { arguments += ["-u", "-b", "0", "-l", "\(udpPayload)"] }
        if reverse { arguments.append("-R") }
        var problem = ""
        for _ in 0..<10 { // the server may still be starting; iperf3 -J reports its errors in the JSON
            let output = try shell(["bash", "-c", arguments.joined(separator: " ") + " || true"])
            guard let json = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] else {
                problem = String(output.prefix(300)); usleep(500_000); continue
            }
            if let end = json["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
               let bits = received["bits_per_second"] as? Double, bits > 0 {
                let bytes = received["bytes"] as? Double ?? 0, seconds = received["seconds"] as? Double ?? 1
                return (bits / 1e6, udp ? bytes / Double(udpPayload) / seconds : .nan)
            }
            problem = "\(json["error"] ?? "no end.sum_received")"
            usleep(500_000)
        }
        throw BenchError("iperf3 \(reverse ? "-R " : "")via \(side.gateway): \(problem)")
    }

    let counters = { (try? daemon.request("status")["datapath"] as? [String: Any])?["counters"] as? [String: Any] ?? [:] }
    let before = counters()
    for udp in [false, true] {
        for reverse in [false, true] {
            var datapath: [(mbps: Double, pps: Double)] = [], plain: [(mbps: Double, pps: Double)] = []
            for _ in 0..<runs {
                datapath.append(try iperf(ours, reverse: reverse, udp: udp))
                plain.append(try iperf(kernel, reverse: reverse, udp: udp))
            }
            let direction = reverse ? "LAN host → client (iperf3 -R)" : "client → LAN host"
            let unit = udp ? "kpackets/s" : "Mbit/s"
            let value: ((mbps: Double, pps: Double)) -> Double = { udp ? $0.pps / 1000 : $0.mbps }
            let mine = Summary(datapath.map(value)), anchor = Summary(plain.map(value))
            let what = udp ? "UDP, \(udpPayload)-byte payloads, received packets/s, \(direction)" : "TCP \(direction)"
            var figure = Figure(row: 8, what: "\(what) through the TC programs, tunnel stand-in ip6tnl (VM)", unit: unit,
                                ours: mine, anchorName: "all.forwarding = 1", anchor: anchor, target: "≥ 0.95×",
                                met: mine.median / anchor.median >= 0.95)
            figure.notes.append("iperf3 \(udp ? "-u -b 0 -l \(udpPayload) " : "")-t \(duration) -O 1, runs alternating datapath / forwarding; datapath runs: "
                                + datapath.map { String(format: "%.0f", value($0)) }.joined(separator: ", ")
                                + "; forwarding runs: " + plain.map { String(format: "%.0f", value($0)) }.joined(separator: ", ") + " \(unit)")
            if udp && reverse {
                let after = counters()
                let delta = after.keys.sorted().map { key in
                    "\(key) +\(((after[key] as? Int) ?? 0) - ((before[key] as? Int) ?? 0))"
                }
                figure.notes.append("datapath counters over all runs: \(delta.joined(separator: ", ")); datapath gateway all.forwarding = 0")
            }
            figure.emit()
        }
    }
}
