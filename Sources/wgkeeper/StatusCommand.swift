import ArgumentParser
import Daemon
import FoundationEssentials
import Glibc

/// `wgkeeper status`: ask a running daemon what it holds, what failed, and why.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a running daemon's state (per-kind counts, failures, peers, safety checks).")

    @Option(name: .long, help: "The daemon's status socket.")
    var socket: String = "/run/wgkeeper/status.sock"

    @Flag(name: .long, help: "Print the raw JSON reply.")
    var json = false

    func run() throws {
        let data: Data
        do { data = try askDaemon(socket: socket, command: "status") } catch { printToStandardError("\(error)"); throw ExitCode(1) }
        if json {
            print(String(decoding: data, as: UTF8.self))
            return
        }
        let report = try decodeReply(StatusReport.self, data)
        print(render(report))
    }

    func render(_ r: StatusReport) -> String {
        var lines: [String] = []
        let age = r.lastReconcile.map { "\(oneDecimal(Date().timeIntervalSince1970 - $0))s ago" } ?? "never"
        lines.append("wgkeeper \(r.version), pid \(r.pid), config generation \(r.configGeneration) (\(r.configFiles.joined(separator: ", ")))")
        lines.append("last reconcile \(age) (\(oneDecimal(r.lastReconcileDurationMs ?? 0)) ms); \(r.reconciles) reconciles, \(r.netlinkWrites) netlink writes, "
                     + "\(r.changesApplied) changes applied, \(r.resyncs) resyncs, \(r.overflows) overflows")
        for error in r.configErrors { lines.append("config error (last reload refused): \(error)") }
        lines.append("")
        lines.append("kind        in sync  pending  failed  conflict  refused")
        for kind in ["link", "sysctl", "peer", "route", "proxy", "datapath"] {
            let c = r.kinds[kind] ?? .init()
            let columns = zip([c.inSync, c.pending, c.failed, c.conflict, c.refused], [9, 9, 8, 10, 9]).map { padded("\($0)", $1) }
            lines.append(kind + String(repeating: " ", count: max(0, 10 - kind.count)) + columns.joined())
        }
        if !r.failed.isEmpty {
            lines.append("")
            lines.append("failed:")
            for f in r.failed { lines.append("  \(f.object): \(f.error) (attempt \(f.attempts), retry in \(Int(f.nextRetryInSeconds))s)") }
        }
        if !r.pending.isEmpty {
            lines.append("")
            lines.append("pending:")
            for p in r.pending { lines.append("  \(p.object): \(p.reason)") }
        }
        for conflict in r.conflicts { lines.append("conflict: \(conflict)") }
        for refusal in r.refused { lines.append("refused: \(refusal.object): \(refusal.reason)") }
        if !r.peers.isEmpty {
            lines.append("")
            lines.append("peers:")
            let now = Date().timeIntervalSince1970
            for p in r.peers {
                let handshake = p.latestHandshake.map { "\(Int(now - $0))s ago" } ?? "never"
                lines.append("  \(p.name ?? "(unknown)") \(p.publicKey) dev \(p.device) endpoint \(p.endpoint ?? "(none)") handshake \(handshake) rx \(p.receivedBytes) tx \(p.transmittedBytes)")
            }
        }
        let unresolved = r.endpoints.filter { $0.state != "resolved" }
        if !unresolved.isEmpty {
            lines.append("")
            lines.append("endpoint names:")
            for e in unresolved { lines.append("  \(e.endpoint): \(e.error.map { "does not resolve: \($0)" } ?? e.state)") }
        }
        if let datapath = r.datapath {
            lines.append("")
            lines.append("datapath: \(datapath.attachMode); " + datapath.counters.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            for (side, line) in (datapath.icmpErrors ?? [:]).sorted(by: { $0.key < $1.key }) {
                lines.append("  icmp errors to the \(side): \(line)")
            }
        }
        if r.logLinesDropped > 0 || r.statusSocket.refused > 0 {
            lines.append("")
            lines.append("log lines dropped: \(r.logLinesDropped); status clients refused: \(r.statusSocket.refused)")
        }
        lines.append("")
        lines.append("safety:")
        for check in r.safety { lines.append("  \(check.ok ? "ok  " : "FAIL") \(check.name) \(check.detail)") }
        return lines.joined(separator: "\n")
    }
}

/// `%.1f` (String(format:) is not in FoundationEssentials).
private func oneDecimal(_ value: Double) -> String {
    var buffer = [CChar](repeating: 0, count: 512)  // any Double fits: at most 309 digits, sign, point, one decimal
    _ = withVaList([value]) { vsnprintf(&buffer, buffer.count, "%.1f", $0) }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Right-aligned in `width` columns, like `%9d`.
private func padded(_ text: String, _ width: Int) -> String {
    String(repeating: " ", count: max(0, width - text.count)) + text
}
