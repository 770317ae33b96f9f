import Foundation
import Glibc

/// Issue 16: the daemon's CPU while nothing changes, N peers with the datapath on (redirect:
/// true: programs attached, N client entries in the LPM map), the default polls (proxy and
/// WireGuard every 2 s) and the default resync (60 s). utime + stime from /proc/PID/stat over
/// the window, after convergence. `ndpDatapath`: `gateway.ndp: datapath` (no proxy entries; the
/// daemon holds N solicited-node groups).
/// `wireGuard`: `wg0` is a real WireGuard device holding the N peers, so the WireGuard poll
/// reads them (the VM; the host kernel has no WireGuard).
func benchIdle(count: Int, window: Int, ndpDatapath: Bool = false, wireGuard: Bool = false) throws {
    let directory = try scratchDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    var config = GatewayConfig(directory: directory, peers: count, timers: "2s")
    config.resync = "60s"
    config.redirect = true
    config.ndp = ndpDatapath ? "datapath" : nil
    let proxies = ndpDatapath ? 0 : count
    try config.write()
    let peers = wireGuard ? count : 0
    let (percent, notes) = try withGatewayNamespace(wireGuard: wireGuard) { name, _ in
        let daemon = try GatewayDaemon(namespace: name, config: config)
        defer { daemon.stop() }
        _ = try daemon.wait(for: "READY=1", timeout: .seconds(300))
        var status = try daemon.status()
        let deadline = ContinuousClock.now + .seconds(120)
        while status.inSync("route") < count || status.inSync("proxy") < proxies || status.inSync("datapath") < count
                || status.inSync("peer") < peers {
            if ContinuousClock.now > deadline { throw BenchError("not in sync 120 s after READY: \(status.raw["kinds"] ?? "")\n\(daemon.log.suffix(2000))") }
            usleep(200_000)
            status = try daemon.status()
        }
        sleep(5)
        let pid = daemon.process.processIdentifier
        let before = try cpuTicks(pid: pid), statusBefore = try daemon.status()
        let start = ContinuousClock.now
        // `WGK_BENCH_IDLE_PERF=FILE`: the window is profiled (`perf record -g` on the daemon).
        if let output = ProcessInfo.processInfo.environment["WGK_BENCH_IDLE_PERF"] {
            _ = try shell(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-p", "\(pid)", "-o", output, "--", "sleep", "\(window)"])
        } else {
            sleep(UInt32(window))
        }
        let after = try cpuTicks(pid: pid), statusAfter = try daemon.status()
        let elapsed = (ContinuousClock.now - start).seconds
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let percent = Double(after - before) / ticks / elapsed * 100
        let reconciles = statusAfter.reconciles - statusBefore.reconciles
        let routeOnly = (statusAfter.raw["route_reconciles"] as? Int).flatMap { a in (statusBefore.raw["route_reconciles"] as? Int).map { a - $0 } }
        var notes = ["utime + stime of the daemon over \(String(format: "%.1f", elapsed)) s: \(after - before) ticks (\(Int(ticks)) per second); "
            + "reconciles meanwhile: \(reconciles)\(routeOnly.map { " (\($0) of them planned routes only or nothing)" } ?? ""); resyncs: \(statusAfter.resyncs - statusBefore.resyncs)"
            + (statusAfter.skippedPlans.flatMap { a in statusBefore.skippedPlans.map { " (full plans skipped: \(a - $0))" } } ?? "") + "; "
            + "netlink writes: \(statusAfter.netlinkWrites - statusBefore.netlinkWrites)"
            + unchangedReads(statusBefore, statusAfter)]
        notes.append("\(count) peers, \(count) routes, \(ndpDatapath ? "ndp: datapath (no proxy entries, \(count) solicited-node groups)" : "\(count) proxy entries"), \(count) client entries in the LPM map plus the LAN prefix; "
            + (wireGuard ? "wg0 a WireGuard device holding the \(count) peers (the WireGuard poll reads them all)" : "no WireGuard on the host kernel (peers pending, so the WireGuard poll reads nothing)"))
        return (percent, notes)
    }
    var figure = Figure(row: 9, what: "idle CPU, N = \(count) peers\(wireGuard ? " on WireGuard" : ""), redirect on\(ndpDatapath ? ", ndp: datapath" : ""), default polls (2 s) and resync (60 s)", unit: "% of a core",
                        ours: Summary([percent]), target: "≤ 0.5 %", met: percent <= 0.5)
    figure.notes = notes
    figure.emit()
}

/// utime + stime of a process, in clock ticks.
func cpuTicks(pid: Int32) throws -> Int {
    let text = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
    // Fields after the command name (which may hold spaces) in parentheses.
    guard let close = text.lastIndex(of: ")") else { throw BenchError("malformed /proc/\(pid)/stat") }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    guard fields.count > 13, let utime = Int(fields[11]), let stime = Int(fields[12]) else { throw BenchError("malformed /proc/\(pid)/stat") }
    return utime + stime
}

/// The polls that found their read unchanged during the window, when the daemon reports them.
func unchangedReads(_ before: Status, _ after: Status) -> String {
    func counts(_ status: Status) -> [String: Int] {
        ((status.raw["unchanged_reads"] as? [String: Any]) ?? [:]).compactMapValues { ($0 as? NSNumber)?.intValue ?? ($0 as? Int) }
    }
    let a = counts(after), b = counts(before)
    guard !a.isEmpty else { return "" }
    return "; polls that read what they read before (nothing decoded): "
        + a.keys.sorted().map { "\($0) \(a[$0]! - (b[$0] ?? 0))" }.joined(separator: ", ")
}
