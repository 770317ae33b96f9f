import CLinux
import FoundationEssentials
import Glibc
import Logging
import Netlink
import Reconciler
import Synchronization

/// Name resolution off the loop: getaddrinfo can block for seconds on a dead DNS server, and
/// the loop must keep repairing meanwhile. Lookups run on their own threads (a few at a time);
/// answers come back through a lock-guarded mailbox and a pipe the loop watches.
final class EndpointResolver: @unchecked Sendable {
    struct Answer {
        var host: HostEndpoint
        var outcome: Result<Endpoint, EndpointLookupError>
    }

    /// Lookups running at once; a dead DNS server keeps each one busy for the resolver's timeout.
    static let maxInFlight = 8

    let wakeFD: Int32
    private let signalFD: Int32
    private let state = Mutex<(answers: [Answer], inFlight: Set<HostEndpoint>)>(([], []))
    private let lookUp: @Sendable (HostEndpoint) -> Result<Endpoint, EndpointLookupError>

    init(lookUp: @escaping @Sendable (HostEndpoint) -> Result<Endpoint, EndpointLookupError> = lookUpEndpoint) throws {
        var fds: [Int32] = [0, 0]
        guard pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { throw DaemonError("resolver pipe: \(String(cString: strerror(errno)))") }
        wakeFD = fds[0]
        signalFD = fds[1]
        self.lookUp = lookUp
    }

    deinit {
        close(wakeFD)
        close(signalFD)
    }

    /// Starts a lookup; false when one for `host` is still running or too many are.
    func resolve(_ host: HostEndpoint) -> Bool {
        let started = state.withLock { $0.inFlight.count < Self.maxInFlight && $0.inFlight.insert(host).inserted }
        guard started else { return false }
        let running = detachThread(stackSize: 256 << 10) { [self] in
            let outcome = lookUp(host)
            state.withLock {
                $0.answers.append(Answer(host: host, outcome: outcome))
                $0.inFlight.remove(host)
            }
            var byte: UInt8 = 1
            _ = write(signalFD, &byte, 1)
        }
        if !running { state.withLock { _ = $0.inFlight.remove(host) } }
        return running
    }

    func take() -> [Answer] {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(wakeFD, &buffer, buffer.count) > 0 {}
        return state.withLock { state in
            defer { state.answers = [] }
            return state.answers
        }
    }
}

/// What the loop knows about one host-name endpoint.
struct HostResolution {
    var endpoint: Endpoint?
    var error: String?
    /// A lookup has been running on the resolver since then.
    var started: ContinuousClock.Instant?
    /// When a name that did not resolve is looked up again.
    var retryAt: ContinuousClock.Instant?

    /// Why a peer with this endpoint must wait, or nil when it can be applied. A name that
    /// resolved once keeps its address while a later lookup fails.
    func holdReason(_ host: HostEndpoint) -> String? {
        if endpoint != nil { return nil }
        if let error { return "endpoint \(host.host) does not resolve: \(error)" }
        return "endpoint \(host.host): resolving"
    }

    var state: String { endpoint != nil ? "resolved" : error != nil ? "unresolved" : "resolving" }
}

extension Daemon {
    /// 135 s (README, configuration reference); WGKEEPER_RERESOLVE_SECONDS shortens it for tests.
    static let reresolveAfter: Double = ProcessInfo.processInfo.environment["WGKEEPER_RERESOLVE_SECONDS"].flatMap(Double.init) ?? 135
    /// A lookup that has not answered by then counts as failed (glibc alone may wait 5 s per
    /// server and attempt); WGKEEPER_RESOLVE_TIMEOUT_SECONDS shortens it for tests.
    static let resolveTimeout: Duration = .seconds(ProcessInfo.processInfo.environment["WGKEEPER_RESOLVE_TIMEOUT_SECONDS"].flatMap(Double.init) ?? 10)
    static let resolveRetry: Duration = .seconds(30)

    /// Why `change` must wait for its endpoint's name, or nil.
    func endpointHold(_ change: Change) -> String? {
        guard case .peer(_, _, _, let host?) = change.object else { return nil }
        return (resolutions[host] ?? HostResolution()).holdReason(host)
    }

    /// The address a resolved name gave; what the applier writes.
    var resolvedEndpoints: [HostEndpoint: Endpoint] { resolutions.compactMapValues(\.endpoint) }

    /// Starts lookups for configured names not resolved yet (or due for a retry) and gives up
    /// on lookups past their timeout. Runs at start, on reload, on answers and on its timer.
    func refreshEndpoints(now: ContinuousClock.Instant = .now) {
        var wanted = Set<HostEndpoint>()
        for device in desired.devices {
            for peer in device.peers {
                if case .host(let name, let port)? = peer.endpoint { wanted.insert(HostEndpoint(host: name, port: port)) }
            }
        }
        resolutions = resolutions.filter { wanted.contains($0.key) }
        var next: ContinuousClock.Instant?
        func wake(_ at: ContinuousClock.Instant) { next = min(next ?? at, at) }
        for host in wanted {
            var resolution = resolutions[host] ?? HostResolution()
            if let started = resolution.started {
                if now - started >= Daemon.resolveTimeout {
                    resolution.started = nil
                    resolution.error = "no answer within \(Daemon.resolveTimeout.components.seconds) s"
                    resolution.retryAt = now + Daemon.resolveRetry
                    logger.warning("endpoint \(host.host) does not resolve: \(resolution.error!)")
                    schedule()
                } else {
                    wake(started + Daemon.resolveTimeout)
                }
            }
            if resolution.started == nil, resolution.endpoint == nil {
                if (resolution.retryAt ?? now) <= now {
                    // A lookup still stuck in the resolver (past its timeout) is not doubled.
                    if resolver.resolve(host) {
                        resolution.started = now
                        wake(now + Daemon.resolveTimeout)
                    } else {
                        wake(now + .seconds(1))
                    }
                } else {
                    wake(resolution.retryAt!)
                }
            }
            resolutions[host] = resolution
        }
        nextEndpointCheck = next
    }

    /// Before the first reconcile only: names that resolve quickly (/etc/hosts, a warm cache)
    /// are in place for it, so READY=1 does not come with peers held back for no reason.
    /// A slow DNS server costs at most `within`; the lookups then finish in the background.
    func awaitFirstLookups(within: Duration) {
        let deadline = ContinuousClock.now + within
        while resolutions.values.contains(where: { $0.started != nil }) {
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else { return }
            var ready = pollfd(fd: resolver.wakeFD, events: Int16(POLLIN), revents: 0)
            _ = poll(&ready, 1, Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1))
            applyResolutions()
        }
    }

    /// Starts re-resolutions for host-name endpoints of peers that have been quiet too long.
    func reresolveQuietPeers() {
        let now = Date().timeIntervalSince1970
        for (peer, host) in hostEndpointsToResolve(desired, wireGuard: kernel.wireGuard ?? [:], now: now,
                                                   lastResolved: lastResolved, after: Daemon.reresolveAfter) {
            lastResolved[peer] = now
            reresolving.insert(peer)
            if resolutions[host]?.started == nil, resolver.resolve(host) {
                resolutions[host, default: HostResolution()].started = .now
                nextEndpointCheck = min(nextEndpointCheck ?? .now + Daemon.resolveTimeout, .now + Daemon.resolveTimeout)
            }
        }
    }

    /// Takes the resolver's answers: held-back peers may go now, and a quiet peer whose name
    /// now points elsewhere gets the new endpoint.
    func applyResolutions() {
        for answer in resolver.take() {
            guard var resolution = resolutions[answer.host] else { continue }  // no longer configured
            resolution.started = nil
            switch answer.outcome {
            case .success(let endpoint):
                resolution.endpoint = endpoint
                resolution.error = nil
                resolution.retryAt = nil
            case .failure(let error):
                resolution.error = error.description
                resolution.retryAt = .now + Daemon.resolveRetry
                logger.warning("endpoint \(answer.host.host) does not resolve: \(error)\(resolution.endpoint == nil ? "" : "; keeping the current address")")
            }
            resolutions[answer.host] = resolution
            schedule()
            if case .success(let endpoint) = answer.outcome { updateQuietPeers(answer.host, endpoint) }
        }
        refreshEndpoints()
    }

    private func updateQuietPeers(_ host: HostEndpoint, _ endpoint: Endpoint) {
        for peer in reresolving {
            guard let configured = desired.devices.first(where: { $0.name == peer.device })?.peers.first(where: { $0.publicKey == peer.publicKey }),
                  case .host(let name, let port)? = configured.endpoint, HostEndpoint(host: name, port: port) == host
            else { continue }
            reresolving.remove(peer)
            let current = kernel.wireGuard?[peer.device]?.peers.first { $0.publicKey == peer.publicKey }?.endpoint
            guard let wireGuard, current != endpoint else { continue }
            do {
                try wireGuard.apply(device: peer.device, WireGuardDeviceChange(peers: [
                    WireGuardPeerChange(publicKey: peer.publicKey, updateOnly: true, endpoint: endpoint),
                ]))
                logger.info("applied: ~ peer \(configured.name) dev \(peer.device) endpoint: \(host) now resolves to \(endpoint) (was \(current.map(\.description) ?? "none"))")
                changesApplied += 1
                kernel.stale.insert(.wireGuard)
            } catch {
                logger.error("failed: endpoint of peer \(configured.name): \(error)")
            }
        }
    }

    var endpointStatus: [StatusReport.HostEndpointState] {
        resolutions.sorted { $0.key.description < $1.key.description }.map { host, resolution in
            .init(endpoint: host.description, state: resolution.state, address: resolution.endpoint?.description, error: resolution.error)
        }
    }
}
