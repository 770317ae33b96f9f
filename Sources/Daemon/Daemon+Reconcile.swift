import Config
import Foundation
import Logging
import Netlink
import Reconciler

/// Plan, apply, remember what failed and when to retry it.
extension Daemon {
    static let firstRetry: Duration = .seconds(1)
    static let maxRetry: Duration = .seconds(60)

    var netlinkWrites: Int { rtnetlink.writeCount + wireGuardWrites + sysctlWrites + datapathWrites + (datapathMaps?.writes ?? 0) }

    func reconcile() {
        let start = ContinuousClock.now
        reconcileAt = nil
        if !reads.isEmpty { readKernel() }
        ensureDevices()

        let plan = Reconciler.plan(desired, observed, lastApplied: lastApplied)
        let now = ContinuousClock.now
        // A change that failed waits out its backoff; the rest go ahead.
        var due = plan.changes.filter { failures[$0.subject].map { $0.refused || $0.retryAt <= now } ?? true }
        // LAN forwarding stays off while it would make the gateway claim the LAN's anycast.
        due.removeAll { change in
            guard let why = refusal(for: change) else { return false }
            if failures[change.subject]?.error != why { logger.error("\(why)") }
            failures[change.subject] = Failure(kind: .sysctl, error: why, attempts: (failures[change.subject]?.attempts ?? 0) + 1,
                                               retryAt: .now + Daemon.maxRetry, refused: true)
            return true
        }
        // A peer whose endpoint name has not resolved waits; the lookup runs off the loop.
        var held: [Pending] = []
        due.removeAll { change in
            guard let why = endpointHold(change) else { return false }
            held.append(Pending(kind: change.kind, object: change.subject, reason: why))
            return true
        }
        var applied = 0
        if !due.isEmpty {
            let endpoints = resolvedEndpoints
            let applier = KernelApplier(rtnetlink: rtnetlink, wireGuard: wireGuard, datapath: datapathMaps, resolve: { endpoints[$0] })
            let results = applier.apply(due)
            sysctlWrites += due.filter { $0.kind == .sysctl }.count
            for result in results { record(result) }
            applied = results.filter(\.succeeded).count
            // Our own route writes are already queued as events: fold them in now, and re-read
            // the kinds the kernel does not notify, so the next plan starts from the truth.
            drainEvents()
            let kinds = Set(due.map(\.kind))
            if kinds.contains(.proxy) { reads.insert(.proxies) }
            if kinds.contains(.sysctl) { reads.insert(.sysctls) }
            if kinds.contains(.peer) || kinds.contains(.link) { reads.insert(.wireGuard) }
            // Map writes are synchronous and exact: fold the successful ones into the cache
            // rather than walk both maps again.
            for result in results where result.succeeded {
                guard case .datapath(let entry) = result.change.object else { continue }
                if result.change.action == .remove { datapathEntries?.remove(entry) } else { datapathEntries?.insert(entry) }
            }
            if !reads.isEmpty { readKernel() }
        }
        // Objects no longer planned are no longer failing.
        let planned = Set(plan.changes.map(\.subject))
        failures = failures.filter { planned.contains($0.key) }

        // What status reports as outstanding: the planned changes that did not go through.
        var outstanding = plan
        if applied > 0 {
            let done = Set(due.map(\.subject)).subtracting(failures.keys)
            outstanding.changes.removeAll { done.contains($0.subject) }
        }
        let heldSubjects = Set(held.map(\.object))
        outstanding.changes.removeAll { heldSubjects.contains($0.subject) }
        outstanding.pending += held
        lastPlan = outstanding
        changesApplied += applied
        reconciles += 1
        lastReconcile = Date()
        lastReconcileDuration = ContinuousClock.now - start
        for violation in plan.violations { logger.error("safety check failed: \(violation)") }
        if !due.isEmpty || !plan.violations.isEmpty { notifier.status(statusLine) }
        // Anything still planned and not failing (a write that raced a change) gets another pass.
        if due.count > applied, failures.isEmpty { schedule(after: .milliseconds(50)) }
    }

    func record(_ result: ChangeResult) {
        let change = result.change
        guard let error = result.error else {
            logger.info("applied: \(change)", metadata: ["reason": "\(change.reason)"])
            failures[change.subject] = nil
            if case .peer(let device, _, let peerChange, let host) = change.object, host != nil {
                lastResolved[LastApplied.PeerKey(device: device, publicKey: peerChange.publicKey)] = Date().timeIntervalSince1970
            }
            if case .peer(let device, _, let peerChange, _) = change.object,
               let peer = desired.devices.first(where: { $0.name == device })?.peers.first(where: { $0.publicKey == peerChange.publicKey }) {
                lastApplied.record(device: device, publicKey: peer.publicKey, endpoint: peer.endpoint)
            }
            return
        }
        let attempts = (failures[change.subject]?.attempts ?? 0) + 1
        let delay = min(Daemon.firstRetry * Int(1 << min(attempts - 1, 10)), Daemon.maxRetry)
        failures[change.subject] = Failure(kind: change.kind, error: error, attempts: attempts, retryAt: .now + delay)
        logger.error("failed: \(change)", metadata: ["error": "\(error)", "attempt": "\(attempts)", "retry_in": "\(delay)"])
    }

    /// Parses and validates first; an invalid configuration changes nothing but status.
    func reload() -> ReloadReply {
        reloads += 1
        notifier.reloading()
        defer { notifier.ready(status: statusLine) }
        switch ConfigLoader().load(path: options.configPath) {
        case .failure(let errors):
            configErrors = errors.errors.map(\.description)
            for error in configErrors { logger.error("reload refused: \(error)") }
            return ReloadReply(ok: false, configGeneration: generation, errors: configErrors, changesApplied: 0)
        case .success(let config):
            let before = changesApplied
            let old = runtime
            loaded = config
            generation += 1
            configErrors = []
            refreshEndpoints()
            if config.configuration.runtime.statusSocket != old.statusSocket || config.configuration.runtime.bpfPinRoot != old.bpfPinRoot {
                logger.warning("status_socket and bpf_pin_root take effect on restart")
            }
            if config.configuration.runtime.routeProtocol != old.routeProtocol {
                logger.warning("route_protocol changed: routes and proxy entries tagged \(old.routeProtocol) are no longer wgkeeper's and stay in place")
            }
            // The caches hold every route and proxy entry; only what the new desired state adds
            // (sysctl keys, devices) needs reading.
            readSysctls()
            let newDevices = desired.devices.map(\.name).filter { wireGuardDevices[$0] == nil }
            try? readWireGuard(only: newDevices)
            logger.info("reloaded", metadata: ["generation": "\(generation)", "summary": "\(config.summary)"])
            reconcile()
            return ReloadReply(ok: true, configGeneration: generation, errors: [], changesApplied: changesApplied - before)
        }
    }

    /// `--cleanup`: removes exactly what wgkeeper owns: routes and proxy entries carrying its
    /// protocol, and the peers of the devices it manages. Sysctls and devices stay.
    func cleanup() {
        reads = [.everything]
        readKernel()
        let owned = runtime.routeProtocol
        var requests = routes.values.filter { $0.protocolNumber == owned }.map { $0.deleteRequest() }
        requests += proxies.filter { $0.protocolNumber == owned }.map { $0.deleteRequest() }
        do {
            let failed = try rtnetlink.perform(requests).filter { if case .failure = $0 { return true }; return false }.count
            logger.info("cleanup removed \(requests.count - failed) routes and proxy entries", metadata: ["failed": "\(failed)"])
        } catch {
            logger.error("cleanup failed", metadata: ["error": "\(error)"])
        }
        uninstallDatapath()
        for device in desired.devices where wireGuardDevices[device.name] != nil {
            do {
                try wireGuard?.apply(device: device.name, WireGuardDeviceChange(replacePeers: true))
                logger.info("cleanup removed the peers of \(device.name)")
            } catch {
                logger.error("cleanup of \(device.name) failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
