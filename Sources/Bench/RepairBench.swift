import Foundation
import Netlink

// Issue 9, row 3: from an external route deletion to the route being back, for wgkeeper and
// for BIRD 2 re-installing its own static route, in the same kind of namespace.

/// Deletes the route to `destination` up to `deletions` times (or until `budget` runs out) and
/// times each until an RTM_NEWROUTE for it arrives; milliseconds.
func repairLatencies(in namespace: NetworkNamespace, destination: IPPrefix, deletions: Int, budget: Duration, timeout: Duration) throws -> [Double] {
    let (netlink, events) = try namespace.perform { (try RTNetlink(), try NetlinkSocket.events([.ipv6Route])) }
    func current() throws -> Route? { try netlink.routes(family: .inet6).first { $0.destination == destination } }
    let start = ContinuousClock.now
    while try current() == nil {
        if ContinuousClock.now - start > .seconds(30) { throw BenchError("\(destination) never installed") }
        usleep(10_000)
    }
    usleep(200_000)
    _ = try events.readEvents()
    var latencies: [Double] = []
    let end = ContinuousClock.now + budget
    while latencies.count < deletions, ContinuousClock.now < end {
        guard let route = try current() else { usleep(1000); continue }
        try netlink.socket.perform(route.deleteRequest())
        let deleted = ContinuousClock.now
        var back = false
        while !back {
            for event in try events.waitForEvents(timeout: timeout) {
                if case .newRoute(let route) = event, route.destination == destination { back = true }
            }
            if !back, ContinuousClock.now - deleted > timeout { throw BenchError("\(destination) not repaired within \(timeout)") }
        }
        latencies.append((ContinuousClock.now - deleted).milliseconds)
    }
    return latencies
}

func benchRepair(peers: Int, deletions: Int, birdBudget: Duration) throws {
    let directory = try scratchDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    let destination = IPPrefix("\(peerAddress(0))/128")!

    var config = GatewayConfig(directory: directory, peers: peers, timers: "2s")
    config.resync = "60s"
    try config.write()
    let ours = try withGatewayNamespace { name, namespace in
        let daemon = try GatewayDaemon(namespace: name, config: config)
        defer { daemon.stop() }
        _ = try daemon.wait(for: "READY=1")
        return try repairLatencies(in: namespace, destination: destination, deletions: deletions, budget: .seconds(120), timeout: .seconds(5))
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
            for i in 0..<peers { conf += "  route \(peerAddress(i))/128 via \"wg0\";\n" }
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
            return try repairLatencies(in: namespace, destination: destination, deletions: deletions, budget: birdBudget, timeout: .seconds(5))
        }
    } catch {
        birdNote = "BIRD run failed: \(error)"
    }

    let oursSummary = Summary(ours, percentiles: true)
    let birdSummary = bird.isEmpty ? nil : Summary(bird, percentiles: true)
    var figure = Figure(row: 3, what: "drift repair latency, externally deleted route (\(peers) routes installed)", unit: "ms",
                        ours: oursSummary, anchorName: birdSummary == nil ? nil : "BIRD 2 (static + kernel, scan time 1)",
                        anchor: birdSummary, target: "p99 < 10 ms and lower than BIRD's",
                        met: oursSummary.p99! < 10 && (birdSummary.map { oursSummary.p99! < $0.p99! } ?? false))
    figure.notes.append("wgkeeper: \(ours.count) deletions; repaired from the RTM_DELROUTE event")
    if let birdSummary {
        figure.notes.append("BIRD: \(bird.count) deletions (time budget \(Int(birdBudget.seconds)) s); median \(String(format: "%.0f", birdSummary.median)) ms")
    }
    if !birdNote.isEmpty { figure.notes.append(birdNote) }
    figure.emit()
}
