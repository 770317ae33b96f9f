import Foundation
import Glibc

// `wgkeeper-bench report`: the figures a run appended to its results file, as BENCHMARKS.md.

let tableRows: [(Int, String)] = [
    (1, "cold converge of N routes + N proxy entries"), (2, "no-op reconcile at N = 10 000"),
    (3, "drift repair latency at 1 000 and 50 000 routes"), (4, "reload with 1 changed peer among 10 000"),
    (5, "resident memory at 10 000 and 50 000 objects"), (6, "apply 10 000 WireGuard peers (VM)"),
    (7, "one WireGuard poll at 10 000 peers (VM)"), (8, "packets forwarded LAN ↔ tunnel stand-in"),
    (9, "idle CPU at 10 000 peers, default polls"), (10, "per-packet cost of each TC program path (BPF_PROG_TEST_RUN)"),
]

func machineDescription() -> [String] {
    let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
        .map { $0.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: .whitespaces) } ?? "unknown"
    let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
    let total = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }
        .flatMap { Double($0.split(separator: " ", omittingEmptySubsequences: true)[1]) }.map { $0 / 1024 / 1024 } ?? .nan
    let formatter = ISO8601DateFormatter()
    return [
        "date: \(formatter.string(from: Date()))",
        "machine: \(model), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs online, \(String(format: "%.1f", total)) GiB memory",
        "host kernel: \(kernelRelease())",
    ]
}

func cell(_ summary: Summary, _ unit: String) -> String {
    if let p50 = summary.p50, let p99 = summary.p99 {
        return String(format: "p50 %.2f / p99 %.2f %@ (n=%d)", p50, p99, unit, summary.runs)
    }
    let precision = summary.median < 10 ? "%.2f" : "%.1f"
    return String(format: "\(precision) %@ (\(precision)–\(precision), n=%d)", summary.median, unit, summary.min, summary.max, summary.runs)
}

func writeReport(results: [String], notes: String?, output: String) throws {
    let decoder = JSONDecoder()
    decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    var figures: [Figure] = []
    for path in results {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n") where !line.isEmpty {
            figures.append(try decoder.decode(Figure.self, from: Data(line.utf8)))
        }
    }
    var md = "# Benchmarks\n\n"
    md += "Written by `make bench` (`scripts/bench`, which runs `wgkeeper-bench`); do not edit by hand, edit `scripts/bench-notes.md`.\n"
    md += "Each figure is the median over repeated runs with its spread (min–max, or p50/p99 for latencies), and its ratio to the\n"
    md += "anchor measured in the same run (wgkeeper ÷ anchor: below 1 is faster, except throughput, where above 1 is faster).\n\n"
    for line in machineDescription() { md += "- \(line)\n" }
    let kernels = Set(figures.map(\.kernel)).subtracting([kernelRelease()])
    if !kernels.isEmpty { md += "- VM kernel (rows \(Set(figures.filter { $0.kernel != kernelRelease() }.map(\.row)).sorted().map(String.init).joined(separator: ", "))): \(kernels.sorted().joined(separator: ", ")), Debian's, under QEMU TCG (no KVM): absolute times and throughputs are slow, ratios hold\n" }
    md += "\n| # | what | wgkeeper | anchor, same run | ratio | target | met |\n|---|---|---|---|---|---|---|\n"
    for (row, title) in tableRows {
        let measured = figures.filter { $0.row == row }
        if measured.isEmpty { md += "| \(row) | \(title) | not measured in this run | | | | see notes |\n" }
        for figure in measured {
            let anchor = figure.anchor.map { "\(figure.anchorName ?? ""): \(cell($0, figure.unit))" } ?? "—"
            let ratio = figure.ratio.map { String(format: "%.2f×", $0) } ?? "—"
            let met = figure.met.map { $0 ? "yes" : "**no**" } ?? "—"
            md += "| \(row) | \(figure.what) | \(cell(figure.ours, figure.unit)) | \(anchor) | \(ratio) | \(figure.target) | \(met) |\n"
        }
    }
    let extra = figures.filter { $0.row == 0 }
    if !extra.isEmpty {
        md += "\nAlso measured (not in issue 9's table):\n\n"
        for figure in extra {
            md += "- \(figure.what): \(cell(figure.ours, figure.unit)); \(figure.anchorName ?? ""): \(figure.anchor.map { cell($0, figure.unit) } ?? "—"); ratio \(figure.ratio.map { String(format: "%.2f×", $0) } ?? "—")\n"
        }
    }
    md += "\n## Details of this run\n\n"
    for figure in figures where !figure.notes.isEmpty {
        md += "- row \(figure.row), \(figure.what) (kernel \(figure.kernel)):\n"
        for note in figure.notes { md += "  - \(note)\n" }
    }
    if let notes { md += "\n" + notes }
    try md.write(toFile: output, atomically: true, encoding: .utf8)
}
