import ArgumentParser
import Daemon
import FoundationEssentials
import Glibc

/// `wgkeeper status`: ask a running daemon what it holds, what failed, and why.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a running daemon's state (per-kind counts, failures, peers, safety checks).")

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json, prometheus
    }

    @Option(name: .long, help: "The daemon's status socket.")
    var socket: String = "/run/wgkeeper/status.sock"

    @Option(name: .long, help: ArgumentHelp(
        "text (for people), json (the raw reply) or prometheus (the text exposition format, for node-exporter's textfile "
            + "collector; `wgkeeper_up 0` and exit status 1 when the daemon does not answer).", valueName: "FORMAT"))
    var format: Format = .text

    @Flag(name: .long, help: "Same as --format json.")
    var json = false

    @Option(name: .long, help: ArgumentHelp(
        "Write to FILE instead of standard output, atomically: a temporary file beside it, renamed over it (mode 0644).",
        valueName: "FILE"))
    var output: String?

    func validate() throws {
        if json, format != .text, format != .json { throw ValidationError("--json and --format \(format) disagree") }
    }

    func run() throws {
        let format = json ? .json : self.format
        let data: Data
        let report: StatusReport?
        do {
            data = try askDaemon(socket: socket, command: "status")
            report = format == .json ? nil : try decodeReply(StatusReport.self, data)
        } catch {
            printToStandardError("\(error)")
            // A collector keeps the last file it read: say the daemon is down rather than keep quiet.
            if format == .prometheus { try emit(PrometheusText.down()) }
            throw ExitCode(1)
        }
        // JSON: the reply as it came, whatever it says.
        guard let report else { return try emit(String(decoding: data, as: UTF8.self) + "\n") }
        if format == .prometheus {
            try emit(PrometheusText.render(report, now: Date().timeIntervalSince1970))
        } else {
            try emit(render(report) + "\n")
        }
    }

    func emit(_ text: String) throws {
        guard let output else {
            print(text, terminator: "")
            return
        }
        do { try replaceFile(output, with: text) } catch {
            printToStandardError("\(error)")
            throw ExitCode(1)
        }
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
            if let line = datapath.neighbourDiscovery { lines.append("  neighbour discovery: \(line)") }
            if let policy = datapath.policy {
                lines.append("  policy: client_to_lan \(policy.clientToLan), lan_to_client \(policy.lanToClient); denied to the LAN \(policy.deniedToLan), to the clients \(policy.deniedToClients)")
                for (index, rule) in policy.rules.enumerated() { lines.append("    \(index): \(rule.rule) (\(rule.packets) packets)") }
                if let flows = policy.replyFlows {
                    lines.append("    reply flows (UDP, echo): \(flows.recent) seen within \(flows.timeoutSeconds) s, \(flows.remembered) remembered, room for \(flows.capacity)")
                }
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

/// Writes `text` as one replacement of `path`: a new file beside it (mkstemp, so nothing planted
/// at a guessable name is followed), flushed, then renamed over `path`. A reader sees the old
/// file or the new one, never half of one. Mode 0644: node-exporter reads it as its own user.
func replaceFile(_ path: String, with text: String) throws {
    let directory = path.lastIndex(of: "/").map { String(path[...$0]) } ?? ""
    let name = path.lastIndex(of: "/").map { String(path[path.index(after: $0)...]) } ?? path
    var template = Array((directory + "." + name + ".XXXXXX").utf8CString)
    let fd = mkstemp(&template)
    guard fd >= 0 else { throw CLIError("cannot create a file in \(directory.isEmpty ? "." : directory): \(String(cString: strerror(errno)))") }
    let temporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    var renamed = false
    defer {
        if !renamed { unlink(temporary) }
    }
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if n > 0 { offset += n; continue }
        if n < 0, errno == EINTR { continue }
        let why = String(cString: strerror(errno))
        close(fd)
        throw CLIError("cannot write \(temporary): \(why)")
    }
    guard fchmod(fd, 0o644) == 0, fsync(fd) == 0 else {
        let why = String(cString: strerror(errno))
        close(fd)
        throw CLIError("cannot write \(temporary): \(why)")
    }
    close(fd)
    guard rename(temporary, path) == 0 else { throw CLIError("cannot rename \(temporary) to \(path): \(String(cString: strerror(errno)))") }
    renamed = true
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
