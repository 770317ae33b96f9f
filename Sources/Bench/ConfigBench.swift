import Config
import Foundation

// Row 4's configuration reading alone, in this process (no daemon, no namespace): where a
// reload's time goes before the reconcile. Not a row of its own: figures "also measured".

/// Loads of N peers, one file and one file per peer in conf.d: fresh (no cache, as `check` and
/// a start do) and after one peer's address changed, with the cache of the previous load (as
/// the daemon's reload does). `runs` of each.
func benchConfigLoad(count: Int, runs: Int, confD layouts: [Bool] = [false, true]) throws {
    guard geteuid() == 0 else { throw BenchError("config: run as root (the loader trusts only root's files outside the caller's own)") }
    for confD in layouts {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var config = GatewayConfig(directory: directory, peers: count, timers: "1s")
        config.confD = confD
        try config.write()
        // Older than `ConfigCache.settled`, as files on a running gateway are.
        usleep(4_000_000)
        // The thread's CPU time beside the wall time: other work on the machine stretches the
        // second, not the first.
        var cpu: [Double] = []
        func load(_ cache: ConfigCache?) throws -> Double {
            var outcome: Result<LoadedConfig, ConfigErrors>!
            let before = threadCPUTime()
            let ms = seconds { outcome = ConfigLoader().load(path: config.path, cache: cache) } * 1e3
            cpu.append((threadCPUTime() - before) * 1e3)
            if case .failure(let errors) = outcome { throw BenchError("configuration refused:\n\(errors)") }
            return ms
        }
        var fresh: [Double] = []
        for _ in 0..<runs { fresh.append(try load(nil)) }
        let freshCPU = cpu
        cpu = []
        let cache = ConfigCache()
        let first = try load(cache)
        cpu = []
        var cached: [Double] = []
        let peer = count / 2
        for k in 0..<runs {
            config.moved = k % 2 == 0 ? [peer] : []
            try config.write(peers: [peer])
            cached.append(try load(cache))
        }
        let layout = confD ? "one file per peer in conf.d" : "one file"
        var figure = Figure(row: 0, what: "configuration load, \(count) peers, \(layout), in-process: reload of 1 changed peer with the cache",
                            unit: "ms", ours: Summary(cached), anchorName: "fresh load (no cache)", anchor: Summary(fresh),
                            target: "—", met: nil)
        figure.notes.append("CPU time of the loading thread: with the cache \(Summary(cpu).text("ms")); fresh \(Summary(freshCPU).text("ms"))")
        let last = cache.lastLoad
        figure.notes.append("last cached load: \(last.filesRead) files read, \(last.filesParsed) parsed, \(last.peersDecoded) peers decoded; first load into an empty cache: \(String(format: "%.1f", first)) ms")
        figure.emit()
    }
}
