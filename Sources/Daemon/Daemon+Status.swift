import Foundation
import Netlink
import Reconciler

/// The status socket's requests and the one-line summary systemd shows.
extension Daemon {
    /// Failed, pending and conflicting objects are listed up to this many each (the per-kind
    /// counts cover all of them), so a reply stays small on a gateway where everything is pending.
    static let listedObjects = 1000

    var statusLine: String {
        let counts = kindCounts().values
        func total(_ field: KeyPath<StatusReport.KindCounts, Int>) -> Int { counts.reduce(0) { $0 + $1[keyPath: field] } }
        var line = "\(total(\.inSync)) in sync, \(total(\.pending)) pending, \(total(\.failed)) failed, "
            + "\(total(\.conflict)) conflicts, \(total(\.refused)) refused; \(desired.peerCount) peers"
        if !lastPlan.violations.isEmpty { line += "; SAFETY: \(lastPlan.violations.count) check(s) failing" }
        if !configErrors.isEmpty { line += "; last reload refused" }
        return line
    }

    /// Per kind, each desired object counted once: failed, refused, in conflict, pending, still
    /// to be written, or (only when none of those) in sync.
    func kindCounts() -> [String: StatusReport.KindCounts] {
        let totals: [Change.Kind: Int] = [
            .link: desired.devices.count, .sysctl: desired.sysctls.count, .peer: desired.peerCount,
            .route: desired.routes.count, .proxy: desired.proxies.count, .datapath: desired.datapath?.entries.count ?? 0,
        ]
        var counts: [String: StatusReport.KindCounts] = [:]
        for (kind, total) in totals {
            var c = StatusReport.KindCounts()
            c.pending = lastPlan.pending.filter { $0.kind == kind }.count
            c.failed = failures.values.filter { $0.kind == kind }.count
            c.conflict = lastPlan.conflicts.filter { $0.kind == kind }.count
            c.refused = lastPlan.refused.filter { $0.kind == kind }.count
            let unwritten = lastPlan.changes.filter { $0.kind == kind && $0.action != .remove && $0.reason != .restore && failures[$0.subject] == nil }.count
            c.inSync = max(0, total - c.pending - c.failed - c.conflict - c.refused - unwritten)
            counts[kind.description] = c
        }
        return counts
    }

    func statusReport() -> StatusReport {
        let now = ContinuousClock.now
        var peers: [StatusReport.Peer] = []
        for device in desired.devices {
            let names = Dictionary(device.peers.map { ($0.publicKey, $0.name) }, uniquingKeysWith: { a, _ in a })
            for peer in kernel.wireGuard?[device.name]?.peers ?? [] {
                peers.append(.init(device: device.name, name: names[peer.publicKey], publicKey: peer.publicKey.base64,
                                   endpoint: peer.endpoint?.description, latestHandshake: peer.latestHandshake,
                                   receivedBytes: peer.receivedBytes, transmittedBytes: peer.transmittedBytes))
            }
        }
        var safety = desired.safetyChecks.map { check in
            let actual = kernel.sysctls[check.sysctl.key]
            return StatusReport.SafetyCheck(name: check.sysctl.description, ok: actual == check.expected,
                                            detail: "is \(actual ?? "unreadable"), must be \(check.expected): \(check.why)")
        }
        safety += anycastSafety
        safety.sort { $0.name < $1.name }
        return StatusReport(
            version: Daemon.version, pid: getpid(), configGeneration: generation, configFiles: loaded.configuration.files,
            configErrors: configErrors, lastReconcile: lastReconcile?.timeIntervalSince1970,
            lastReconcileDurationMs: lastReconcileDuration.map { Double($0.components.attoseconds) / 1e15 + Double($0.components.seconds) * 1e3 },
            reconciles: reconciles, netlinkWrites: netlinkWrites, changesApplied: changesApplied, resyncs: resyncs,
            overflows: kernel.overflows, kinds: kindCounts(),
            failed: failures.sorted { $0.key < $1.key }.prefix(Daemon.listedObjects).map { subject, failure in
                .init(kind: failure.kind.description, object: subject, error: failure.error, attempts: failure.attempts,
                      nextRetryInSeconds: max(0, Double(now.duration(to: failure.retryAt).components.seconds)))
            },
            pending: lastPlan.pending.prefix(Daemon.listedObjects).map { .init(kind: $0.kind.description, object: $0.object, reason: $0.reason) },
            conflicts: lastPlan.conflicts.prefix(Daemon.listedObjects).map(\.description),
            refused: lastPlan.refused.prefix(Daemon.listedObjects).map { .init(kind: $0.kind.description, object: $0.object, reason: $0.reason) },
            peers: peers, datapath: datapathStatus, safety: safety)
    }

    func handleClient(_ fd: Int32, _ ready: EventLoop.Ready) {
        guard let server else { return }
        if ready.writable, !server.flush(fd) { return dropClient(fd) }
        if ready.readable || ready.hangup {
            guard let lines = server.read(fd) else { return dropClient(fd) }
            for line in lines where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                if !server.reply(fd, answer(line)) { return dropClient(fd) }
            }
        }
        if server.isFinished(fd) { return dropClient(fd) }
        loop.modify(fd, token: UInt64(fd) + 1000, readable: !server.isReadClosed(fd), writable: server.wantsWrite(fd))
    }

    func dropClient(_ fd: Int32) {
        loop.remove(fd)
        server?.drop(fd)
    }

    func answer(_ line: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        func encode<T: Encodable>(_ value: T) -> String {
            (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? #"{"error":"encoding failed"}"#
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let command = object["command"] as? String
        else { return encode(ErrorReply(error: #"expected one JSON object per line, such as {"command":"status"}"#)) }
        switch command {
        case "status": return encode(statusReport())
        case "reload":
            logger.info("reload requested on the status socket")
            return encode(reload())
        default: return encode(ErrorReply(error: "unknown command \(command.prefix(40)); known: status, reload"))
        }
    }
}
