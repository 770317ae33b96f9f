import Foundation
import Glibc
import Netlink

// Issue 9 row 3 and issue 16: from an external route deletion to the route being back, for
// wgkeeper at several table sizes and, at the smallest, for FRR's zebra (staticd routes; its
// default `zebra work-queue 10` and tuned to 1) and BIRD 2 re-installing their own routes, each
// in the same kind of namespace and timed by the same independent observer.

/// An observer independent of whoever deletes and whoever repairs: an rtnetlink event socket of
/// its own, read on a thread of its own at SCHED_FIFO priority, stamping each IPv6 route event
/// with the monotonic clock as it is received. (Netlink gives no kernel timestamp: SO_TIMESTAMP
/// yields no control message on it. At real-time priority the thread runs as soon as the
/// kernel queues the event, ahead of the daemon that is woken by the same event.)
final class RouteObserver: @unchecked Sendable {
    struct Seen {
        var at: ContinuousClock.Instant
        var added: Bool
        var destination: IPPrefix
    }

    private let condition = NSCondition()
    private var seen: [Seen] = []
    private var stopped = false
    private var finished = false
    private let socket: NetlinkSocket
    /// Whether the thread got SCHED_FIFO (it needs root); said in the figure's notes.
    private(set) var realtime = false
    /// Receive errors (ENOBUFS: events lost), said in the notes.
    private(set) var overflows = 0

    init(in namespace: NetworkNamespace) throws {
        socket = try namespace.perform { try NetlinkSocket.events([.ipv6Route]) }
        let thread = Thread { [unowned self] in self.run() }
        thread.start()
    }

    deinit { stop() }

    private func run() {
        var parameters = sched_param(sched_priority: 50)
        let fifo = pthread_setschedparam(pthread_self(), SCHED_FIFO, &parameters) == 0
        condition.withLock { realtime = fifo }
        while !condition.withLock({ stopped }) {
            var pfd = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 50) > 0 else { continue }
            // One datagram at a time, one message at a time: a message that does not decode (or an
            // overflow) loses nothing else.
            var events: [RouteEvent] = []
            while true {
                do {
                    guard let messages = try socket.receiveNow() else { break }
                    for message in messages { if let event = try? RouteEvent.decode(message) { events.append(event) } }
                } catch {
                    condition.withLock { overflows += 1 }
                }
            }
            let now = ContinuousClock.now
            var found: [Seen] = []
            for event in events {
                switch event {
                case .newRoute(let route), .replacedRoute(let route): found.append(Seen(at: now, added: true, destination: route.destination))
                case .deletedRoute(let route): found.append(Seen(at: now, added: false, destination: route.destination))
                default: break
                }
            }
            guard !found.isEmpty else { continue }
            condition.withLock {
                seen += found
                condition.broadcast()
            }
        }
        condition.withLock { finished = true; condition.broadcast() }
    }

    func stop() {
        condition.withLock {
            stopped = true
            while !finished { _ = condition.wait(until: Date() + 1) }
        }
    }

    /// How many events were seen so far: `event(after:)` looks only at later ones.
    var mark: Int { condition.withLock { seen.count } }

    /// The first event for `destination` of that kind after `mark`, waiting up to `timeout`.
    func event(for destination: IPPrefix, added: Bool, after mark: Int, timeout: Duration) -> Seen? {
        let deadline = Date() + timeout.seconds
        return condition.withLock {
            while true {
                if mark < seen.count, let hit = seen[mark...].first(where: { $0.destination == destination && $0.added == added }) { return hit }
                if !condition.wait(until: deadline) { return nil }
            }
        }
    }
}

/// Repair latencies (milliseconds) in `namespace`, each from the observer's stamp of the kernel's
/// RTM_DELROUTE to its stamp of the RTM_NEWROUTE putting the route back. Deletions go through
/// `ip -6 route del` (the deleter's own timing is no part of the figure), spread over
/// `destinations`, each after a random pause of 5–25 ms, up to `deletions` or until `budget`.
func repairLatencies(namespace name: String, _ namespace: NetworkNamespace, destinations: [IPPrefix], device: String,
                     deletions: Int, budget: Duration, timeout: Duration) throws -> (latencies: [Double], realtime: Bool, missed: Int) {
    let observer = try RouteObserver(in: namespace)
    defer { observer.stop() }
    let netlink = try namespace.perform { try RTNetlink() }
    let first = destinations[0]
    let start = ContinuousClock.now
    while try !netlink.routes(family: .inet6).contains(where: { $0.destination == first }) {
        if ContinuousClock.now - start > .seconds(120) { throw BenchError("\(first) never installed") }
        usleep(20_000)
    }
    // The start's follow-ups (its own writes' events, netconf after the sysctls, link-local
    // addresses leaving DAD) are over before the first deletion, for wgkeeper and anchors alike.
    sleep(10)
    var latencies: [Double] = [], stamps: [Double] = []
    let end = ContinuousClock.now + budget
    var k = 0, missed = 0, unrepaired = 0, refused = 0
    while latencies.count < deletions, ContinuousClock.now < end {
        let destination = destinations[k % destinations.count]
        k += 1
        usleep(UInt32.random(in: 5_000...25_000))
        let mark = observer.mark
        do {
            try shell(["ip", "-6", "-n", name, "route", "del", destination.description, "dev", device])
            refused = 0
        } catch {
            // Not there (yet): the next one. Always refused: the namespace or its routes are gone.
            refused += 1
            if refused >= 50 { throw BenchError("50 deletions in a row refused, the last: \(error)") }
            continue
        }
        guard let deleted = observer.event(for: destination, added: false, after: mark, timeout: .seconds(5)) else {
            missed += 1
            if missed > 10 { throw BenchError("the observer saw no deletion of \(destination) (\(missed) times)") }
            continue
        }
        guard let back = observer.event(for: destination, added: true, after: mark, timeout: timeout) else {
            // Not back: counted, said in the notes, and the run goes on (BIRD's scan has left a
            // route out for longer than its period under load).
            unrepaired += 1
            if unrepaired > 10 { throw BenchError("\(destination) not repaired within \(timeout) (\(unrepaired) times)") }
            continue
        }
        latencies.append((back.at - deleted.at).milliseconds)
        stamps.append((deleted.at - start).milliseconds)
    }
    // WGK_BENCH_SAMPLES=FILE: each sample as "ms since the start, latency ms", for a look at the tail.
    if let path = ProcessInfo.processInfo.environment["WGK_BENCH_SAMPLES"], !path.isEmpty {
        let lines = zip(stamps, latencies).map { String(format: "%.1f %.3f\n", $0, $1) }.joined()
        if let handle = FileHandle(forWritingAtPath: path) ?? (FileManager.default.createFile(atPath: path, contents: nil) ? FileHandle(forWritingAtPath: path) : nil) {
            handle.seekToEndOfFile()
            handle.write(Data("# \(destinations.count) destinations\n\(lines)".utf8))
            try? handle.close()
        }
    }
    if missed > 0 || observer.overflows > 0 || unrepaired > 0 {
        print("observer: \(missed) deletions not seen, \(observer.overflows) receive errors, \(unrepaired) not repaired within \(timeout)")
    }
    return (latencies, observer.realtime, missed + observer.overflows + unrepaired)
}

/// FRR's zebra and staticd started by hand in the namespace (`-u frr -g frr`), `routes` as
/// `ipv6 route PREFIX wg0`; runs `body` while they run.
func withZebra<T>(namespace name: String, directory: URL, routes: [IPPrefix], workQueue: Int, _ body: () throws -> T) throws -> T {
    let run = directory.appendingPathComponent("frr-\(workQueue)")
    try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
    try "hostname bench\nzebra work-queue \(workQueue)\n".write(to: run.appendingPathComponent("zebra.conf"), atomically: true, encoding: .utf8)
    try ("hostname bench\n" + routes.map { "ipv6 route \($0) wg0\n" }.joined())
        .write(to: run.appendingPathComponent("staticd.conf"), atomically: true, encoding: .utf8)
    try shell(["chown", "-R", "frr:frr", run.path])
    var processes: [Process] = []
    defer { for process in processes.reversed() where process.isRunning { process.terminate(); process.waitUntilExit() } }
    for daemon in ["zebra", "staticd"] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ip", "netns", "exec", name, "/usr/lib/frr/\(daemon)", "-u", "frr", "-g", "frr",
                             "-f", run.appendingPathComponent("\(daemon).conf").path,
                             "-i", run.appendingPathComponent("\(daemon).pid").path,
                             "-z", run.appendingPathComponent("zserv.api").path,
                             "--vty_socket", run.path, "-A", "127.0.0.1", "-P", "0",
                             "--log", "file:" + run.appendingPathComponent("\(daemon).log").path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        processes.append(process)
        if daemon == "zebra" {
            // staticd connects to zebra's socket: wait for it.
            let deadline = ContinuousClock.now + .seconds(20)
            while !FileManager.default.fileExists(atPath: run.appendingPathComponent("zserv.api").path) {
                guard process.isRunning, ContinuousClock.now < deadline else { throw BenchError("zebra did not start: \(frrLog(run, "zebra"))") }
                usleep(20_000)
            }
        }
    }
    do { return try body() } catch { throw BenchError("\(error); zebra: \(frrLog(run, "zebra")); staticd: \(frrLog(run, "staticd"))") }
}

private func frrLog(_ run: URL, _ daemon: String) -> String {
    String(((try? String(contentsOf: run.appendingPathComponent("\(daemon).log"), encoding: .utf8)) ?? "").suffix(800))
}

/// Row 3: wgkeeper at each size of `sizes` (its own p99 at the largest against the smallest,
/// target ≤ 1.2×); at the smallest also FRR zebra (work-queue 10 and 1) and BIRD 2.
func benchRepair(sizes: [Int], deletions: Int, birdBudget: Duration) throws {
    let directory = try scratchDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    let smallest = sizes.min()!
    var ours: [Int: Summary] = [:]
    var lost: [Int: Int] = [:]
    var realtime = true
    for size in sizes {
        var config = GatewayConfig(directory: directory, peers: size, timers: "2s")
        config.resync = "60s"
        try config.write()
        // Peers spread over the table, so the same route is not deleted each time.
        let destinations = stride(from: 0, to: size, by: max(1, size / 97)).map { IPPrefix("\(peerAddress($0))/128")! }
        let measured = try withGatewayNamespace { name, namespace in
            let daemon = try GatewayDaemon(namespace: name, config: config)
            defer { daemon.stop() }
            _ = try daemon.wait(for: "READY=1", timeout: .seconds(300))
            return try repairLatencies(namespace: name, namespace, destinations: destinations, device: "wg0",
                                       deletions: deletions, budget: .seconds(120), timeout: .seconds(5))
        }
        realtime = realtime && measured.realtime
        ours[size] = Summary(measured.latencies, percentiles: true)
        lost[size] = measured.missed
    }
    let base = ours[smallest]!
    let observerNote = "timed by an independent observer: an rtnetlink event socket of the benchmark's own, read by a thread at "
        + (realtime ? "SCHED_FIFO priority" : "normal priority (SCHED_FIFO refused)")
        + ", from its stamp of the kernel's RTM_DELROUTE to its stamp of the RTM_NEWROUTE; deletions by `ip -6 route del`, 5–25 ms apart, spread over 97 routes"

    // Anchors at the smallest size, same routes, same observer (WGK_BENCH_ANCHORS=0: none, for a quick look).
    if ProcessInfo.processInfo.environment["WGK_BENCH_ANCHORS"] == "0" {
        for size in sizes.sorted() {
            var figure = Figure(row: 3, what: "drift repair latency, externally deleted route (\(size) routes installed)", unit: "ms",
                                ours: ours[size]!, target: "—", met: nil)
            figure.notes.append("samples lost: \(lost[size] ?? 0); \(observerNote)")
            figure.emit()
        }
        return
    }
    let destinations = stride(from: 0, to: smallest, by: max(1, smallest / 97)).map { IPPrefix("\(peerAddress($0))/128")! }
    let all = (0..<smallest).map { IPPrefix("\(peerAddress($0))/128")! }
    for workQueue in [10, 1] {
        var zebraNote = ""
        var zebra: [Double] = []
        do {
            zebra = try withGatewayNamespace { name, namespace in
                try withZebra(namespace: name, directory: directory, routes: all, workQueue: workQueue) {
                    try repairLatencies(namespace: name, namespace, destinations: destinations, device: "wg0",
                                        deletions: deletions, budget: .seconds(120), timeout: .seconds(5)).latencies
                }
            }
        } catch {
            zebraNote = "zebra run failed: \(error)"
        }
        let zebraSummary = zebra.isEmpty ? nil : Summary(zebra, percentiles: true)
        let tuned = workQueue == 1
        var figure = Figure(row: 3, what: "drift repair latency, externally deleted route (\(smallest) routes installed)", unit: "ms",
                            ours: base, anchorName: zebraSummary == nil ? nil : "FRR \(frrVersion()) zebra + staticd, work-queue \(workQueue)\(tuned ? " (tuned)" : " (default)")",
                            anchor: zebraSummary,
                            target: tuned ? "p99 < 10 ms and below tuned zebra's" : "p99 < 10 ms",
                            met: base.p99! < 10 && (!tuned || (zebraSummary.map { base.p99! < $0.p99! } ?? false)))
        figure.notes.append("wgkeeper: \(base.runs) deletions, repaired from the RTM_DELROUTE event (samples lost: \(lost[smallest] ?? 0)); \(observerNote)")
        if let zebraSummary {
            figure.notes.append("zebra (work-queue \(workQueue) ms): \(zebraSummary.runs) deletions of its staticd routes (`ipv6 route PREFIX wg0`), re-installed by zebra when the kernel reports its route deleted; same observer")
        }
        if !zebraNote.isEmpty { figure.notes.append(zebraNote) }
        figure.emit()
    }

    var bird: [Double] = []
    var birdNote = ""
    do {
        bird = try withGatewayNamespace { name, namespace in
            var conf = """
            router id 192.0.2.1;
            protocol device { }
            protocol kernel { ipv6 { export all; import none; }; scan time 1; }
            protocol static {
              ipv6;

            """
            for prefix in all { conf += "  route \(prefix) via \"wg0\";\n" }
            conf += "}\n"
            let confPath = directory.appendingPathComponent("bird.conf").path
            try conf.write(toFile: confPath, atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["ip", "netns", "exec", name, "bird", "-f", "-c", confPath,
                                 "-s", directory.appendingPathComponent("bird.ctl").path, "-P", directory.appendingPathComponent("bird.pid").path]
            let log = directory.appendingPathComponent("bird.log").path
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            process.standardError = FileHandle(forWritingAtPath: log)
            process.standardOutput = FileHandle(forWritingAtPath: log)
            try process.run()
            defer { process.terminate(); process.waitUntilExit() }
            return try repairLatencies(namespace: name, namespace, destinations: destinations, device: "wg0",
                                       deletions: deletions, budget: birdBudget, timeout: .seconds(15)).latencies
        }
    } catch {
        birdNote = "BIRD run failed: \(error)"
    }
    let birdSummary = bird.isEmpty ? nil : Summary(bird, percentiles: true)
    var figure = Figure(row: 3, what: "drift repair latency, externally deleted route (\(smallest) routes installed)", unit: "ms",
                        ours: base, anchorName: birdSummary == nil ? nil : "BIRD 2 (static + kernel, scan time 1)",
                        anchor: birdSummary, target: "p99 < 10 ms and lower than BIRD's",
                        met: base.p99! < 10 && (birdSummary.map { base.p99! < $0.p99! } ?? false))
    if let birdSummary {
        figure.notes.append("BIRD: \(bird.count) deletions (time budget \(Int(birdBudget.seconds)) s); median \(String(format: "%.0f", birdSummary.median)) ms; same observer")
    }
    if !birdNote.isEmpty { figure.notes.append(birdNote) }
    figure.emit()

    // wgkeeper against itself: the larger tables.
    for size in sizes.sorted() where size != smallest {
        let summary = ours[size]!
        var scale = Figure(row: 3, what: "drift repair latency, externally deleted route (\(size) routes installed)", unit: "ms",
                           ours: summary, anchorName: "wgkeeper, \(smallest) routes", anchor: base,
                           target: "p99 ≤ 1.2× p99 at \(smallest)", met: summary.p99! <= 1.2 * base.p99!)
        scale.notes.append("wgkeeper: \(summary.runs) deletions (time budget 120 s; samples lost: \(lost[size] ?? 0)), \(size) routes and \(size) proxy entries installed, polls every 2 s; p99 ratio \(String(format: "%.2f", summary.p99! / base.p99!))×; \(observerNote)")
        scale.emit()
    }
}

/// `zebra --version`'s version, e.g. 8.4.4.
func frrVersion() -> String {
    let text = (try? shell(["/usr/lib/frr/zebra", "--version"])) ?? ""
    return text.split(separator: "\n").first?.split(separator: " ").last.map(String.init) ?? "?"
}
