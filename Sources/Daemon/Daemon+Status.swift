import FoundationEssentials
import Glibc
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
            c.pending = pendingByKind[kind] ?? 0
            c.failed = failures.values.filter { $0.kind == kind }.count
            c.conflict = lastPlan.conflicts.filter { $0.kind == kind }.count
            // A peer with several refused allowed IPs is listed once for each, counted once.
            c.refused = Set(lastPlan.refused.filter { $0.kind == kind }.map(\.object)).count
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
        if let datapath = desired.datapath {
            safety.append(ForwardFilters.safetyCheck(forwardChains(), datapath: datapath, policy: desired.policy))
        }
        safety.sort { $0.name < $1.name }
        return StatusReport(
            version: Daemon.version, pid: getpid(), configGeneration: generation, configFiles: loaded.configuration.files,
            configErrors: configErrors, lastReconcile: lastReconcile?.timeIntervalSince1970,
            lastReconcileDurationMs: lastReconcileDuration?.milliseconds,
            reconciles: reconciles, netlinkWrites: netlinkWrites, changesApplied: changesApplied, resyncs: resyncs,
            overflows: kernel.overflows, reloads: reloads,
            statusSocket: .init(clients: server?.clients.count ?? 0, refused: server?.refused ?? 0, evicted: server?.evicted ?? 0, busy: server?.busy ?? 0),
            logLinesDropped: JournalLogHandler.dropped, kinds: kindCounts(),
            failed: failures.sorted { $0.key < $1.key }.prefix(Daemon.listedObjects).map { subject, failure in
                .init(kind: failure.kind.description, object: subject, error: failure.error, attempts: failure.attempts,
                      nextRetryInSeconds: max(0, Double(now.duration(to: failure.retryAt).components.seconds)))
            },
            // Pending objects and conflicts by kind and text: a full plan lists them in its own order
            // (by device, then name; routes by identity), which a reload's touched plan (and, for
            // conflicts, a route event's plan) cannot rebuild when it puts its part in place.
            pending: lastPlan.pending.sorted { ($0.kind, $0.object, $0.reason) < ($1.kind, $1.object, $1.reason) }
                .prefix(Daemon.listedObjects).map { .init(kind: $0.kind.description, object: $0.object, reason: $0.reason) },
            // (Conflicts are not cut to the listed ones: beyond those, listed as they are, unsorted.)
            conflicts: (lastPlan.conflicts.count > Daemon.listedObjects ? lastPlan.conflicts.prefix(Daemon.listedObjects).map(\.description)
                        : lastPlan.conflicts.sorted { ($0.kind, $0.description) < ($1.kind, $1.description) }.map(\.description)),
            refused: lastPlan.refused.prefix(Daemon.listedObjects).map { .init(kind: $0.kind.description, object: $0.object, reason: $0.reason) },
            peers: peers, endpoints: endpointStatus, datapath: datapathStatus, safety: safety,
            reconcileDuration: metrics.histogram, changesAppliedByKind: ReconcileMetrics.byName(metrics.applied),
            repairs: ReconcileMetrics.byName(metrics.repairs), reloadFailures: metrics.reloadFailures,
            routeReconciles: routeReconciles, skippedPlans: skippedPlans, touchedPlans: touchedPlans, configDeltas: configDeltas, unchangedReads: unchangedReads)
    }

    /// Answers what the status clients asked this turn: at most one request each. Reload
    /// requests wait for the next reload, which answers all of them at once.
    func serveStatusRequests() {
        guard let server else { return }
        var encodedStatus: String?
        for (fd, request) in server.takeRequests(now: .now) {
            switch request {
            case .success(.status):
                if encodedStatus == nil { encodedStatus = Daemon.encode(statusReport()) }
                server.reply(fd, encodedStatus!)
            case .success(.reload):
                server.awaitReload(fd)
                reloadRequested = true
            case .failure(let error):
                server.reply(fd, Daemon.encode(ErrorReply(error: error.description)))
            }
        }
    }

    /// One reload for every request since the last one started (SIGHUP or the socket), no
    /// sooner than `reloadSpacing` after the previous one finished: a flood of requests costs a
    /// few reloads, not one each. The file is read off the loop (`ConfigReader`), one read at a
    /// time; requests that arrive during a read are answered by one more read after it, since
    /// they may be about a file written after the first read began.
    func reloadIfRequested() {
        guard reloadRequested, !reloadInFlight, ContinuousClock.now >= nextReloadAllowed else { return }
        reloadRequested = false
        reloadInFlight = true
        reloads += 1
        notifier.reloading()
        server?.beginReload()
        configReader.start(options.configPath)
    }

    /// The read is done: the outcome is applied (or refused) here, on the loop, then the
    /// waiting clients get the reply and systemd READY=1, unless a request that came during the
    /// read makes another one due: systemd stays in "reloading" (RELOADING=1 may come twice)
    /// until the file as it was at its last request is applied, so `systemctl reload` does
    /// not return early.
    func finishReload() {
        guard let (outcome, took, statistics) = configReader.take() else { return }
        reloadInFlight = false
        let start = ContinuousClock.now
        let reply = reload(outcome)
        if statistics?.delta == true, reply.ok { configDeltas += 1 }
        logger.debug("reloaded in", metadata: ["read_ms": "\(took.milliseconds)", "apply_ms": "\((ContinuousClock.now - start).milliseconds)",
                                               "files_read": "\(statistics?.filesRead ?? 0)", "files_parsed": "\(statistics?.filesParsed ?? 0)",
                                               "delta": "\(statistics?.delta ?? false)", "watched": "\(statistics?.watched ?? false)",
                                               "main_file": "\(statistics?.mainFile ?? false)"])
        if !reloadRequested { notifier.ready(status: statusLine) }
        nextReloadAllowed = .now + Daemon.reloadSpacing
        server?.answerReloads(Daemon.encode(reply))
        if housekeepingDue {
            housekeepingDue = false
            _ = currentRoutePlanner()
            releaseFreedMemory()
        }
    }

    static func encode<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? #"{"error":"encoding failed"}"#
    }
}

extension Daemon {
    /// How long a read of the host's netfilter forward chains serves status requests: two dumps
    /// of every chain and rule are not made for each of many requests a second.
    static let forwardChainsLifetime: Duration = .seconds(2)

    /// The host's netfilter forward chains that filter IPv6 (`NetfilterForwarding.chains`), read
    /// again when the last read is older than `forwardChainsLifetime`.
    func forwardChains() -> Result<[String], Error> {
        let now = ContinuousClock.now
        if let (read, at) = forwardChainsRead, now - at < Self.forwardChainsLifetime { return read }
        let read = Result { try NetfilterForwarding.chains() }
        forwardChainsRead = (read, now)
        return read
    }
}
