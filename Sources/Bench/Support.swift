import Foundation
import Glibc

// Processes, clocks and statistics shared by every benchmark.

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs a command to completion; throws with its standard error when it fails.
@discardableResult
func shell(_ arguments: [String], input: String? = nil) throws -> String {
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
    // Standard error is drained on its own thread so a chatty child cannot block on a full pipe.
    nonisolated(unsafe) var errData = Data()
    let reader = Thread { errData = err.fileHandleForReading.readDataToEndOfFile() }
    reader.start()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while !reader.isFinished { usleep(1000) }
    guard process.terminationStatus == 0 else {
        let message = String(decoding: errData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        throw BenchError("\(arguments.joined(separator: " ")) failed: \(message)")
    }
    return String(decoding: data, as: UTF8.self)
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    var milliseconds: Double { seconds * 1e3 }
}

/// CPU time of the calling thread, in seconds.
func threadCPUTime() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// User time of the calling thread, in seconds (getrusage's resolution: clock ticks).
func threadUserTime() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(1), &usage)  // RUSAGE_THREAD
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = ContinuousClock.now
    try body()
    return (ContinuousClock.now - start).seconds
}

/// A scratch directory, removed by the caller's `defer`: under /run/wgkeeper-bench (0755, root's)
/// as root, not /tmp, whose world-writable mode makes the loader refuse every file under it.
func scratchDirectory() throws -> URL {
    let parent = geteuid() == 0 ? URL(fileURLWithPath: "/run/wgkeeper-bench") : FileManager.default.temporaryDirectory
    try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    let url = parent.appendingPathComponent("wgk-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    return url
}

/// `wgkeeper`, built next to this executable.
/// `WGK_BENCH_WGKEEPER` names another one (an older build, for before/after figures).
func wgkeeperBinary() throws -> String {
    if let other = ProcessInfo.processInfo.environment["WGK_BENCH_WGKEEPER"], !other.isEmpty { return other }
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("wgkeeper").path
    guard FileManager.default.isExecutableFile(atPath: binary) else { throw BenchError("\(binary) missing: build the wgkeeper product") }
    return binary
}

func kernelRelease() -> String {
    var name = utsname()
    uname(&name)
    return withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// Median and spread of repeated measurements.
struct Summary: Codable {
    var runs: Int
    var median: Double
    var min: Double
    var max: Double
    var p50: Double?
    var p99: Double?

    init(_ values: [Double], percentiles: Bool = false) {
        let sorted = values.sorted()
        runs = sorted.count
        median = sorted.isEmpty ? .nan : sorted[sorted.count / 2]
        min = sorted.first ?? .nan
        max = sorted.last ?? .nan
        func at(_ p: Double) -> Double { sorted[Swift.min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        if percentiles, !sorted.isEmpty { p50 = at(0.5); p99 = at(0.99) }
    }

    func text(_ unit: String) -> String {
        if let p50, let p99 { return String(format: "p50 %.2f %@, p99 %.2f %@ (max %.2f, n=%d)", p50, unit, p99, unit, max, runs) }
        return String(format: "median %.1f %@ (min %.1f, max %.1f, n=%d)", median, unit, min, max, runs)
    }
}

/// One row of issue 9's table as measured: printed for a reader, appended as a JSON line to
/// `$WGK_BENCH_RESULTS` for `wgkeeper-bench report`.
struct Figure: Codable {
    var row: Int
    var what: String
    var unit: String
    var ours: Summary
    var anchorName: String?
    var anchor: Summary?
    var target: String
    var met: Bool?
    var notes: [String] = []
    var kernel = kernelRelease()

    var ratio: Double? { anchor.map { ours.median / $0.median } }

    func emit() {
        var figure = self
        // Figures of another daemon build (`WGK_BENCH_WGKEEPER`, scripts/bench's BENCH_BASELINE) say so.
        if let other = ProcessInfo.processInfo.environment["WGK_BENCH_WGKEEPER"], !other.isEmpty {
            figure.what += " [baseline build]"
            figure.notes.insert("daemon: \(other), the build before the change (same run, same machine)", at: 0)
            figure.met = nil
        }
        figure.write()
    }

    private func write() {
        var line = "[\(row)] \(what): wgkeeper \(ours.text(unit))"
        if let anchorName, let anchor { line += "; \(anchorName) \(anchor.text(unit)); ratio \(String(format: "%.2f", ratio!))" }
        line += "; target \(target): \(met.map { $0 ? "met" : "MISSED" } ?? "n/a")"
        for note in notes { line += "\n    \(note)" }
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
        guard let path = ProcessInfo.processInfo.environment["WGK_BENCH_RESULTS"], !path.isEmpty else { return }
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard let data = try? encoder.encode(self), let handle = FileHandle(forWritingAtPath: path) ?? {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            return FileHandle(forWritingAtPath: path)
        }() else { return }
        handle.seekToEndOfFile()
        handle.write(data + Data("\n".utf8))
        try? handle.close()
    }
}

func hostAddress(_ i: Int) -> String { "2001:db8:\(String(i >> 16, radix: 16)):\(String(i & 0xffff, radix: 16))::1" }
