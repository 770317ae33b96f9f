import CLinux
import Config
import FoundationEssentials
import Glibc
import Logging
import Netlink
import Reconciler

/// The long-running controller: one thread, one loop, all state owned here (docs/ARCHITECTURE.md, data flow).
///
/// The kernel state is cached from dumps and kept current from rtnetlink events; kinds the
/// kernel does not notify (proxy entries, WireGuard peers) are re-read on their poll timers.
/// Each reconcile plans against the cache, applies, and drains the events its own writes
/// caused, so the cache is exact again before the next plan.
public final class Daemon {
    public struct Options: Sendable {
        public var configPath: String
        public var cleanupOnExit: Bool
        /// False for `wgkeeper cleanup`: no status socket (one that answers means a daemon runs).
        public var listen: Bool
        public init(configPath: String, cleanupOnExit: Bool = false, listen: Bool = true) {
            self.configPath = configPath
            self.cleanupOnExit = cleanupOnExit
            self.listen = listen
        }
    }

    struct Failure {
        var kind: Change.Kind
        var error: String
        var attempts: Int
        var retryAt: ContinuousClock.Instant
    }

    /// Events read per `readEvents` call while draining the event socket.
    static let eventsPerRead = 4096
    static let reloadSpacing: Duration = .milliseconds(100)
    static let version = "0.1.0-dev"

    let options: Options
    var logger: Logger
    let notifier = Notifier()
    let loop: EventLoop
    var loaded: LoadedConfig
    var generation = 1
    var configErrors: [String] = []

    let rtnetlink: RTNetlink
    let events: NetlinkSocket
    /// nil until the WireGuard generic netlink family exists (re-checked at each read).
    var wireGuard: WireGuardNetlink?
    var server: StatusServer?
    var instanceLock: InstanceLock?

    /// The kernel as last seen, kept current by events (and by polls for what has none).
    var kernel = KernelCache()
    /// What wgkeeper changed that carries no protocol tag, persisted in `runtime.state_dir`.
    var records: Records
    /// Cleanup only: the records file could not be read; it is left in place and cleanup fails.
    var recordsUnreadable = false
    /// The last error saving the records, said once until a save succeeds again.
    var recordSaveError: String?
    let recordStore: RecordStore
    /// Any write of it (an applied peer) drops `quietPlan`: `plan` reads it.
    var lastApplied: LastApplied { didSet { quietPlan = nil } }
    /// When each host-name endpoint was last resolved (seconds since the epoch).
    var lastResolved: [LastApplied.PeerKey: Double] = [:]
    let resolver: EndpointResolver
    let configReader: ConfigReader
    /// The proxy poll's dump, off the loop.
    let proxyReader: ProxyReader
    /// Counts the loop's own reads and writes of proxy entries: an off-loop dump started before
    /// one of them is older than the cache and is dropped.
    var proxyEpoch = 0
    /// `proxyEpoch` after the loop's last read of the proxy entries: an off-loop dump started
    /// after it and overtaken only by the loop's writes (folded in, not read) is the poll's only
    /// look at what others did, and is not just dropped (`finishProxyRead`).
    var proxyReadEpoch = 0
    /// Set by a reload whose datapath part was not already stale: the next read of that part
    /// checks the attachments and settings against the new configuration, but takes the map
    /// entries from the cache (our writes are folded in, and what others write is the polls'
    /// business) instead of reading every client's entry back. Consumed by that read.
    var datapathMapsTrusted = false
    /// Host-name endpoints of the configuration and what their lookups said.
    var resolutions: [HostEndpoint: HostResolution] = [:]
    /// Quiet peers whose name is being looked up again (README, configuration reference).
    var reresolving: Set<LastApplied.PeerKey> = []
    var nextEndpointCheck: ContinuousClock.Instant?

    // Scheduling.
    var reconcileAt: ContinuousClock.Instant? = .now
    /// The next reconcile must plan everything (a timer, a reload, a retry, a resolution). When
    /// false, what changed decides: route events alone plan only their routes (`routePlanner`),
    /// a poll that read nothing new plans nothing.
    var fullPlanDue = true
    /// Plans the routes a route event touched; remade when its inputs change.
    var routePlanner: RoutePlanner?
    /// The last full plan that had nothing to write, with what it was made from: while none of
    /// that changed, a full plan is not made again (`QuietPlan`).
    var quietPlan: QuietPlan?
    var nextWireGuardPoll: ContinuousClock.Instant = .now
    var nextProxyPoll: ContinuousClock.Instant = .now
    var nextResync: ContinuousClock.Instant = .now
    var nextWatchdog: ContinuousClock.Instant = .now
    var stopRequested = false
    /// A reload was asked for (SIGHUP or the socket) and has not started yet.
    var reloadRequested = false
    /// The configuration is being read on `configReader`; requests meanwhile wait for the next read.
    var reloadInFlight = false
    /// A touched reload's route planner rebuild and memory trim, made once its clients have
    /// their reply (`finishReload`).
    var housekeepingDue = false
    var nextReloadAllowed: ContinuousClock.Instant = .now
    var netlinkHealthy = true

    // What status shows.
    var failures: [String: Failure] = [:]
    /// The last plan's outstanding part, its pending objects cut to `listedObjects` (a gateway
    /// whose WireGuard cannot be read has every peer pending); `pendingByKind` counts them all.
    var lastPlan = Plan()
    var pendingByKind: [Change.Kind: Int] = [:]
    var lastStatusLine = ""
    var lastReconcile: Date?
    var lastReconcileDuration: Duration?
    var reconciles = 0
    /// Of which planned only the routes route events touched.
    var routeReconciles = 0
    /// Of which were due to plan in full (a resync) and did not, their inputs being the last quiet plan's.
    var skippedPlans = 0
    /// Of which were reloads that planned only the objects their change touched (`reconcileTouched`).
    var touchedPlans = 0
    /// Reloads whose read was a delta of the last (`ConfigLoader.dropInDelta`).
    var configDeltas = 0
    /// Polls whose read was the bytes the cache was decoded from (not decoded), by part.
    var unchangedReads: [String: Int] = [:]
    /// WireGuard devices whose last poll found their dump changed (roaming endpoints on a busy
    /// gateway do that poll after poll): their next poll keeps the replies as it walks them, so a
    /// change costs one dump, not a walk and a second dump to decode.
    var wireGuardChanging: Set<String> = []
    /// The last read of the host's netfilter forward chains, and when (`forwardChains()`).
    var forwardChainsRead: (Result<[String], Error>, ContinuousClock.Instant)?
    var changesApplied = 0
    var resyncs = 0
    var reloads = 0
    var metrics = ReconcileMetrics()
    var sysctlWrites = 0
    var wireGuardWrites: Int { wireGuard?.writeCount ?? 0 }
    var datapathMaps: DatapathMapsAdapter?
    var datapathProblem: String?
    /// Where the datapath's ICMPv6 errors come from, one line per side, for status.
    var datapathICMP: [String: String] = [:]
    var datapathWrites = 0
    /// The access policy last found or installed in the maps, and the select word then: while
    /// the word is unchanged and the desired policy the same, nothing is read back.
    var installedPolicy: (policy: CompiledPolicy?, word: UInt32)?
    /// Set by a resync: the policy maps are read back in full even when the word is unchanged.
    var policyReadBackDue = false
    /// The datapath's next read is a proxy poll's: the client map is read only if its entry
    /// count moved (`DatapathMapsAdapter.read`); anything else that marks it stale reads it all.
    var datapathCountingRead = false
    /// Said once: the kernel's figure for the client map contradicted its entry count.
    var footprintWarned = false
    /// The interfaces our filters were last looked for beside (nil: look again).
    var filterScanFor: [Int32]?
    /// `ndp: datapath`: the clients' solicited-node groups joined on the LAN, and what failed.
    let solicitedNodeGroups = MulticastMemberships()
    var solicitedNodeFailures: [MulticastMembership: String] = [:]
    /// Whom lan_ingress answers for, and why while it does so for `ndp: kernel`.
    var neighbourDiscovery = NeighbourDiscoveryState()
    var solicitedNodeTarget: SolicitedNodeTarget?

    var runtime: RuntimeSettings { loaded.configuration.runtime }

    /// What the daemon keeps of a load: the desired state, the runtime settings and the files
    /// read. The sections (each peer with where it was written) are for errors, and the
    /// `ConfigCache` keeps what the next load needs of them.
    static func kept(_ config: LoadedConfig) -> LoadedConfig {
        var config = config
        config.configuration.devices = []
        config.configuration.routes = []
        config.configuration.proxies = []
        return config
    }
    var desired: DesiredState { loaded.desired }

    /// Loads and validates the configuration and opens every socket. Nothing is written yet.
    public init(options: Options, logger: Logger) throws {
        self.options = options
        self.logger = logger
        // One malloc arena for every thread. The configuration and proxy readers run on threads
        // of their own, and glibc would give each an arena whose freed pages the loop's
        // allocations never reuse: a reload's resident peak would be both arenas' (186 against
        // 151 MiB at 50 000 peers). The threads seldom allocate at the same time.
        mallopt(M_ARENA_MAX, 1)
        // A running daemon keeps each file's tree and its decoded peers for its reloads
        // (`ConfigCache`); a one-shot use (cleanup) has no reload to keep them for.
        let cache = options.listen ? ConfigCache() : nil
        switch ConfigLoader().load(path: options.configPath, cache: cache) {
        case .success(let config): loaded = Daemon.kept(config)
        case .failure(let errors): throw DaemonError("invalid configuration:\n\(errors)", configuration: true)
        }
        lastApplied = LastApplied(loaded.desired)
        recordStore = RecordStore(directory: loaded.configuration.runtime.stateDir)
        do {
            records = try recordStore.load()
        } catch where !options.listen {
            // Cleanup still removes what the protocol and the pins claim; only the restores are lost.
            logger.error("\(error); cleanup goes on without them: no sysctl is restored, no created device deleted")
            records = Records()
            recordsUnreadable = true
        }
        loop = try EventLoop()
        resolver = try EndpointResolver()
        configReader = try ConfigReader(cache: cache)
        proxyReader = try ProxyReader()
        rtnetlink = try RTNetlink()
        // WGKEEPER_EVENT_BUFFER shrinks the event queue so tests can make the kernel overflow it.
        let eventBuffer = ProcessInfo.processInfo.environment["WGKEEPER_EVENT_BUFFER"].flatMap { Int($0) } ?? 32 << 20
        events = try NetlinkSocket(.route, groups: RouteGroup.allCases.map(\.rawValue), receiveBufferBytes: eventBuffer)
        wireGuard = try? WireGuardNetlink()
        if wireGuard == nil, !loaded.desired.devices.isEmpty {
            logger.warning("WireGuard's generic netlink family is not there yet; looked for again at each read")
        }
        guard let lock = try InstanceLock() else {
            throw DaemonError(options.listen
                ? "another wgkeeper runs in this network namespace; two would fight over the same objects (stop it first)"
                : "a wgkeeper daemon runs in this network namespace: it would put back what cleanup removes; stop it first (systemctl stop wgkeeper)")
        }
        instanceLock = lock
        if options.listen {
            let access = try StatusAccess(statusGroup: loaded.configuration.runtime.statusGroup)
            server = try StatusServer(path: loaded.configuration.runtime.statusSocket, access: access, loop: loop)
            if let group = access.group, let closed = access.directoryClosedToGroup(socketPath: loaded.configuration.runtime.statusSocket) {
                let mode = String(closed.mode, radix: 8)
                logger.warning("runtime.status_group: members of \(group.name) cannot reach the status socket: directory \(closed.path) (mode \(mode), group \(closed.gid)) lets them through only with mode 0755 (under the unit: RuntimeDirectoryMode=0755 in the drop-in, README)")
            }
        }
        try claim()
    }

    // MARK: - the loop

    enum Token: UInt64 {
        case signals = 1, events = 2, resolver = 4, configReader = 8, proxyReader = 16
    }

    /// The claim (route protocol, pin root) is recorded with the records: a daemon started under
    /// another claim than the one its records were written under would orphan the old one, so
    /// it refuses; `cleanup` uses the recorded claim, whatever the configuration says now.
    func claim() throws {
        let now = runtime
        var differs: [String] = []
        if let recorded = records.routeProtocol, recorded != now.routeProtocol { differs.append("route_protocol \(recorded) (now \(now.routeProtocol))") }
        if let recorded = records.pinRoot, recorded != now.bpfPinRoot { differs.append("bpf_pin_root \(recorded) (now \(now.bpfPinRoot))") }
        if !differs.isEmpty {
            guard options.listen else {
                logger.notice("cleanup uses the claim recorded in \(recordStore.path): \(differs.joined(separator: ", "))")
                return
            }
            throw DaemonError("the state in \(recordStore.path) was written under \(differs.joined(separator: " and ")): "
                + "starting now would leave everything tagged with the old values behind. Run `wgkeeper cleanup` first "
                + "(it uses the recorded values), then start", configuration: true)
        }
        guard options.listen, records.routeProtocol == nil || records.pinRoot == nil else { return }
        records.routeProtocol = now.routeProtocol
        records.pinRoot = now.bpfPinRoot
        do { try recordStore.save(records) } catch {
            throw DaemonError("cannot record wgkeeper's state in \(recordStore.path): \(error); runtime.state_dir must be writable")
        }
    }

    /// `wgkeeper cleanup`: see `cleanup()`. Returns the exit status.
    public func cleanupAndExit() -> Int32 {
        logger.info("cleanup: removing what wgkeeper owns and restoring what it changed")
        return cleanup() ? 0 : 1
    }

    public func run() throws -> Int32 {
        try SignalPipe.install([SIGHUP, SIGTERM, SIGINT])
        signal(SIGPIPE, SIG_IGN)
        try loop.add(SignalPipe.readEnd, token: Token.signals.rawValue)
        try loop.add(events.fileDescriptor, token: Token.events.rawValue)
        try loop.add(resolver.wakeFD, token: Token.resolver.rawValue)
        try loop.add(configReader.wakeFD, token: Token.configReader.rawValue)
        try loop.add(proxyReader.wakeFD, token: Token.proxyReader.rawValue)
        logger.info("starting", metadata: ["config": "\(options.configPath)", "summary": "\(loaded.summary)"])
        for line in loaded.absentPolicyNames { logger.warning("policy: \(line)") }

        refreshEndpoints()
        awaitFirstLookups(within: .milliseconds(200))
        reconcile()
        // The first reconcile read everything: the poll and resync timers start from here.
        nextWireGuardPoll = .now + runtime.wireGuardPoll
        nextProxyPoll = .now + runtime.proxyPoll
        nextResync = .now + runtime.resync
        notifier.ready(status: statusLine)
        logger.info("ready", metadata: ["status": "\(statusLine)"])

        while !stopRequested {
            let ready = loop.wait(until: nextDeadline)
            for item in ready { handle(item) }
            runTimers(now: .now)
            serveStatusRequests()
            reloadIfRequested()
            if let at = reconcileAt, at <= .now { reconcile() }
        }

        notifier.stopping()
        logger.info("stopping; kernel state stays in place\(options.cleanupOnExit ? " except what --cleanup removes" : "")")
        if options.cleanupOnExit { cleanup() }
        server = nil
        return 0
    }

    var nextDeadline: ContinuousClock.Instant? {
        var candidates = [nextWireGuardPoll, nextProxyPoll, nextResync]
        if let reconcileAt { candidates.append(reconcileAt) }
        if notifier.watchdogInterval != nil { candidates.append(nextWatchdog) }
        if let at = server?.nextDeadline { candidates.append(at) }
        if server?.hasRequests == true { candidates.append(.now) }
        if reloadRequested, !reloadInFlight { candidates.append(nextReloadAllowed) }
        if let nextEndpointCheck { candidates.append(nextEndpointCheck) }
        if let retry = failures.values.map(\.retryAt).min() { candidates.append(retry) }
        return candidates.min()
    }

    /// A reconcile after `delay`; `full: false` when only what changed in the kernel needs a look
    /// (events, polls): the reconcile then plans in full only if more than routes changed.
    func schedule(after delay: Duration = .zero, full: Bool = true) {
        if full { fullPlanDue = true }
        let at = ContinuousClock.now + delay
        if reconcileAt == nil || at < reconcileAt! { reconcileAt = at }
    }

    func runTimers(now: ContinuousClock.Instant) {
        if now >= nextWireGuardPoll {
            nextWireGuardPoll = now + runtime.wireGuardPoll
            if !desired.devices.isEmpty { kernel.stale.insert(.wireGuard); schedule(full: false) }
        }
        if now >= nextProxyPoll {
            nextProxyPoll = now + runtime.proxyPoll
            // The proxy entries are dumped off the loop (`finishProxyRead` takes the result);
            // the datapath's maps are read here.
            if !proxyReader.start(epoch: proxyEpoch, unless: kernel.proxyDigest) { kernel.stale.insert(.proxies) }
            if !kernel.stale.contains(.datapath) { datapathCountingRead = true }
            kernel.stale.insert(.datapath)
            schedule(full: false)
        }
        if now >= nextResync {
            nextResync = now + runtime.resync
            // A full re-read. A dump whose bytes are those a part of the cache was decoded from
            // (its digest, dropped by any change to that part since) is not decoded again: the
            // cache holds what decoding it would give.
            kernel.stale = Set(KernelCache.Part.allCases)
            datapathCountingRead = false
            filterScanFor = nil
            // Safety violations and conflicts that persist are logged again once per resync.
            lastPlan.violations = []
            lastPlan.conflicts = []
            // The policy maps are read back in full: an entry changed behind our back is repaired.
            policyReadBackDue = true
            resyncs += 1
            // Records deleted behind the daemon's back are written again (a restart would lose them).
            if !records.isEmpty, !FileManager.default.fileExists(atPath: recordStore.path) {
                logger.warning("\(recordStore.path) disappeared; writing it again")
                saveRecords()
            }
            schedule()
        }
        if failures.values.contains(where: { $0.retryAt <= now }) { schedule() }
        if let interval = notifier.watchdogInterval, now >= nextWatchdog {
            nextWatchdog = now + interval
            // Only a loop that turns and talks to the kernel may say it is alive.
            if netlinkHealthy { notifier.watchdog() }
        }
        server?.expire(at: now)
        if let at = nextEndpointCheck, now >= at { refreshEndpoints(now: now) }
    }

    func handle(_ ready: EventLoop.Ready) {
        switch ready.token {
        case Token.signals.rawValue:
            for signal in SignalPipe.drain() {
                switch signal {
                case SIGHUP:
                    logger.info("SIGHUP: reloading")
                    reloadRequested = true
                default:
                    logger.info("signal \(signal): stopping")
                    stopRequested = true
                }
            }
        case Token.events.rawValue:
            drainEvents()
        case Token.resolver.rawValue:
            applyResolutions()
        case Token.configReader.rawValue:
            finishReload()
        case Token.proxyReader.rawValue:
            finishProxyRead()
        case server?.listenerToken:
            server?.acceptWaiting(now: .now)
        default:
            if let server, let fd = server.fd(forToken: ready.token) { server.service(fd, ready) }
        }
    }
}
