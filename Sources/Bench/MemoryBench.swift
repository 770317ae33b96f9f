import Foundation
import Glibc
import Netlink

// Row 5 by itself (issue 16, compact state): the daemon's resident memory at N peers, after
// convergence and after reloads of one moved peer, and `wgkeeper check`'s peak on the same file.

/// One `wgkeeper run` with N peers in one file: converged (every route and proxy entry in the
/// kernel), then `reloads` reloads that move one peer's address and back, then stopped.
/// VmRSS after convergence and after the reloads, VmHWM (the peak) before the stop; `wgkeeper
/// check` of the same file, its peak from `wait4`. `WGK_BENCH_WRAP` (e.g. `heaptrack -o FILE`)
/// runs the daemon under that command, for a heap profile of the same procedure;
/// `WGK_BENCH_ON_MEASURE`, a shell command run at each measurement with `PID` (the daemon's)
/// and `WHEN` (`converged`, `reloaded`) in its environment, takes a snapshot there (e.g.
/// `vgdb --pid=$PID detailed_snapshot /tmp/massif.$WHEN` with `valgrind --tool=massif` as the wrap).
func benchMemory(count: Int, reloads: Int) throws {
    let directory = try scratchDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    var config = GatewayConfig(directory: directory, peers: count, timers: "30s")
    try config.write()
    let checkPeak = try peakOfCommand([try wgkeeperBinary(), "check", "--config", config.path])

    let wrapped = !(ProcessInfo.processInfo.environment["WGK_BENCH_WRAP"] ?? "").isEmpty
    var converged = (rss: 0.0, hwm: 0.0), reloaded = (rss: 0.0, hwm: 0.0)
    var convergeSeconds = 0.0
    try withGatewayNamespace { name, namespace in
        let netlink = try namespace.perform { try RTNetlink() }
        let daemon = try GatewayDaemon(namespace: name, config: config)
        defer { daemon.stop() }
        _ = try daemon.wait(for: "READY=1", timeout: .seconds(600))
        while try kernelObjects(netlink) < 2 * count {
            if ContinuousClock.now - daemon.started > .seconds(600) { throw BenchError("not converged after 600 s") }
            usleep(20_000)
        }
        convergeSeconds = (ContinuousClock.now - daemon.started).seconds
        // The reconcile that follows the one that converged (re-reads, a second pass) is over
        // by then: what is measured is what the daemon holds, not what a plan holds meanwhile.
        // `WGK_BENCH_SETTLE` (seconds) lengthens it for a daemon slowed by a profiler.
        usleep(UInt32(1_000_000 * (ProcessInfo.processInfo.environment["WGK_BENCH_SETTLE"].flatMap { Double($0) } ?? 2)))
        let pid = try daemonPid(under: daemon.process.processIdentifier)
        converged = try daemon.memory(pid: pid)
        try onMeasure(pid: pid, when: "converged")
        let peer = count / 2
        for k in 0..<reloads {
            config.moved = k % 2 == 0 ? [peer] : []
            try config.write()
            usleep(150_000)  // reloads are spaced 100 ms apart by the daemon
            let reply = try daemon.request("reload", timeout: wrapped ? 600 : 30)
            guard reply["ok"] as? Bool == true else { throw BenchError("reload refused: \(reply)") }
        }
        // The reload's housekeeping (its memory handed back) follows its reply, in the same loop
        // turn. (Not a status request: its reply's encoding would be measured too.)
        usleep(200_000)
        reloaded = try daemon.memory(pid: pid)
        try onMeasure(pid: pid, when: "reloaded")
    }
    var figure = Figure(row: 5, what: "resident memory after convergence, N = \(count) peers (N routes, N proxies, N peers pending)",
                        unit: "MiB", ours: Summary([converged.rss]), target: count >= 50_000 ? "< 64 MiB, peak < 96 MiB" : "—",
                        met: count >= 50_000 ? converged.rss < 64 && reloaded.hwm < 96 : nil)
    figure.notes.append(String(format: "after %d reloads of one moved peer: VmRSS %.1f MiB; peak (VmHWM) over start, convergence and reloads %.1f MiB",
                               reloads, reloaded.rss, reloaded.hwm))
    figure.notes.append(String(format: "VmHWM at convergence %.1f MiB (converged %.1f s after exec); `wgkeeper check` of the same file: peak %.1f MiB",
                               converged.hwm, convergeSeconds, checkPeak))
    figure.emit()
}

/// The first process named `wgkeeper` in the tree under `root` (`ip netns exec` execs it, a
/// wrapper such as heaptrack starts it as a child), else `root` itself (valgrind execs its tool,
/// which runs the daemon in its own process under its own name).
func daemonPid(under root: Int32) throws -> Int32 {
    var queue = [root]
    while !queue.isEmpty {
        let pid = queue.removeFirst()
        let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        if comm == "wgkeeper" { return pid }
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        for task in tasks {
            let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? ""
            queue += children.split(separator: " ").compactMap { Int32($0) }
        }
    }
    guard kill(root, 0) == 0 else { throw BenchError("no wgkeeper process under \(root)") }
    return root
}

/// Runs a command to completion and returns its peak resident memory (ru_maxrss) in MiB.
func peakOfCommand(_ arguments: [String]) throws -> Double {
    var pid: pid_t = 0
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    guard posix_spawn(&pid, arguments[0], &actions, nil, argv, environ) == 0 else { throw BenchError("cannot start \(arguments[0])") }
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 {
        guard errno == EINTR else { throw BenchError("wait4: errno \(errno)") }
    }
    guard status == 0 else { throw BenchError("\(arguments.joined(separator: " ")) exited with status \(status)") }
    return Double(usage.ru_maxrss) / 1024
}

/// `WGK_BENCH_ON_MEASURE`, if set, run through `sh -c` with `PID` and `WHEN` set.
func onMeasure(pid: Int32, when: String) throws {
    guard let command = ProcessInfo.processInfo.environment["WGK_BENCH_ON_MEASURE"], !command.isEmpty else { return }
    try shell(["env", "PID=\(pid)", "WHEN=\(when)", "sh", "-c", command])
}
