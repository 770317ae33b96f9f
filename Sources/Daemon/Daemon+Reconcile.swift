import CLinux
import Config
import FoundationEssentials
import Logging
import Netlink
import Reconciler

/// A full plan that had nothing to write, and what it was made from. `plan` is a pure function
/// of the desired state (its generation), the kernel cache (its version), the records and the
/// last applied endpoints (whose every write drops this); while all of them are as they were and
/// nothing waits for a retry, a full plan would be this one again, so a resync that read
/// nothing new does not make it.
struct QuietPlan {
    var kernelVersion: Int
    var generation: Int
    var records: Records
    /// What the plan found that a resync logs again while it persists.
    var violations: [Violation]
    var conflicts: [Conflict]
}

/// Plan, apply, remember what failed and when to retry it.
extension Daemon {
    static let firstRetry: Duration = .seconds(1)
    /// Changes applied per `KernelApplier` call.
    static let applySlice = 4096
    static let maxRetry: Duration = .seconds(60)

    var netlinkWrites: Int { rtnetlink.writeCount + wireGuardWrites + sysctlWrites + datapathWrites + (datapathMaps?.writes ?? 0) }

    /// One reconcile: reads what is stale, then plans in full, or, when route events alone
    /// changed the cache since the last plan (and nothing waits for a retry), plans only the
    /// routes they touched (`reconcileRoutes`). A poll that read nothing new plans nothing, and
    /// neither does a resync that found every input of the last quiet plan unchanged.
    func reconcile() {
        let start = ContinuousClock.now
        reconcileAt = nil
        let full = fullPlanDue || !failures.isEmpty
        fullPlanDue = false
        let readChanged = readKernel()
        if !full, !readChanged, let planner = currentRoutePlanner() {
            let (touched, beyond) = kernel.takeChanges()
            if !beyond, touched.isEmpty { return settle(start: start) }
            if !beyond {
                metrics.begin(generation: generation, previous: lastPlan, pendingKinds: Array(pendingByKind.keys), failing: failures.keys)
                return reconcileRoutes(touched, planner: planner, start: start)
            }
            logger.debug("full plan: more than routes changed in the kernel")
        } else {
            _ = kernel.takeChanges()
        }
        if !readChanged, let quiet = quietPlan, holds(quiet) { return skipPlan(quiet, start: start) }
        metrics.begin(generation: generation, previous: lastPlan, pendingKinds: Array(pendingByKind.keys), failing: failures.keys)
        logger.debug("full plan", metadata: ["due": "\(full)", "failures": "\(failures.count)", "read_changed": "\(readChanged)"])

        quietPlan = nil
        recordTakeovers()
        let planned = (version: kernel.version, records: records)
        var plan = makePlan()
        reportRefusals(plan)
        var applied = 0
        var held: [Pending] = []
        // A device the plan creates comes first: what hangs off it is planned once it exists.
        if plan.changes.contains(where: { if case .link(_, .create) = $0.object { true } else { false } }) {
            let links = due(plan.changes.filter { $0.kind == .link }, held: &held)
            applied += apply(links)
            plan = makePlan()
        }
        held = []
        let changes = due(plan.changes, held: &held)
        applied += apply(changes)
        // Objects no longer planned are no longer failing.
        if !failures.isEmpty {
            let planned = Set(plan.changes.map(\.subject))
            failures = failures.filter { planned.contains($0.key) }
        }
        forgetSettledRecords()

        // What status reports as outstanding: the planned changes that did not go through.
        // Everything planned was due and went through (a start writes 100 000 objects this
        // way): none, without a set of every change's subject.
        var outstanding = plan
        if applied > 0, failures.isEmpty, changes.count == plan.changes.count {
            outstanding.changes = []
        } else if applied > 0 {
            let done = Set(changes.map(\.subject)).subtracting(failures.keys)
            outstanding.changes.removeAll { done.contains($0.subject) }
        }
        if !held.isEmpty {
            let heldSubjects = Set(held.map(\.object))
            outstanding.changes.removeAll { heldSubjects.contains($0.subject) }
            outstanding.pending += held
        }
        let previous = lastPlan
        remember(outstanding)
        // Nothing written, held or failing, and nothing read or recorded since the plan: the
        // next full plan would be this one while its inputs stay as they are.
        if plan.changes.isEmpty, held.isEmpty, failures.isEmpty, kernel.stale.isEmpty, recordSaveError == nil,
           kernel.version == planned.version, records == planned.records {
            quietPlan = QuietPlan(kernelVersion: planned.version, generation: generation, records: planned.records,
                                  violations: plan.violations, conflicts: plan.conflicts)
        }
        // With the writes done (or refused), `ndp: kernel` may take over from lan_ingress now.
        followNeighbourDiscoveryHandover()
        changesApplied += applied
        reconciles += 1
        lastReconcile = Date()
        lastReconcileDuration = ContinuousClock.now - start
        metrics.end(duration: lastReconcileDuration ?? .zero)
        // Said once when it starts (and again at each resync), not at every reconcile.
        for violation in plan.violations where !previous.violations.contains(violation) { logger.error("safety check failed: \(violation)") }
        for conflict in plan.conflicts where !previous.conflicts.contains(conflict) { logger.warning("conflict: \(conflict)") }
        // STATUS= follows every change of the summary, whatever caused it (a foreign object too).
        let line = statusLine
        if line != lastStatusLine {
            notifier.status(line)
            lastStatusLine = line
        }
        // Anything still planned and not failing (a write that raced a change) gets another pass.
        if changes.count > applied, failures.isEmpty { schedule(after: .milliseconds(50)) }
        // Ready for the next route event, so that it pays nothing linear in the table.
        _ = currentRoutePlanner()
        releaseFreedMemory()
    }

    /// Hands the pages a full reconcile (or the load before it) freed back to the kernel. glibc
    /// returns freed memory by itself only from the top of the main heap; what a plan of 50 000
    /// objects or a reload freed elsewhere (the reader thread's arena included) would otherwise
    /// stay resident, and the daemon's size would be that of its busiest moment.
    func releaseFreedMemory() {
        malloc_trim(0)
    }

    /// Keeps `plan` as the last plan, its pending objects counted by kind and listed up to
    /// `listedObjects` (what status shows of them).
    func remember(_ plan: Plan) {
        var plan = plan
        pendingByKind = [:]
        for item in plan.pending { pendingByKind[item.kind, default: 0] += 1 }
        if plan.pending.count > Daemon.listedObjects { plan.pending = Array(plan.pending.prefix(Daemon.listedObjects)) }
        lastPlan = plan
    }

    /// The route planner for the desired state, links, addresses and records as they are now:
    /// the one kept when those are unchanged, else a new one. Nil when the kernel was not read.
    func currentRoutePlanner() -> RoutePlanner? {
        guard !kernel.stale.contains(.links), !kernel.stale.contains(.addresses) else { return nil }
        let inputs = RoutePlanner.Inputs(generation: generation, links: Array(kernel.links.values),
                                         addresses: kernel.addressList, createdDevices: records.createdDevices)
        if let routePlanner, routePlanner.inputs == inputs { return routePlanner }
        routePlanner = RoutePlanner(desired: desired, inputs: inputs, records: records)
        return routePlanner
    }

    /// Whether a full plan now would be `quiet` again: its inputs are unchanged and nothing
    /// else a full reconcile does is outstanding (a retry, a record to save, a handover of
    /// neighbour discovery to the kernel, a part left unread).
    func holds(_ quiet: QuietPlan) -> Bool {
        quiet.kernelVersion == kernel.version && quiet.generation == generation && failures.isEmpty && kernel.stale.isEmpty
            && recordSaveError == nil && neighbourDiscovery.handover == nil && quiet.records == records
    }

    /// A full plan not made (`QuietPlan`): status stays as the last plan left it, and what a
    /// resync logs again while it persists (safety violations, conflicts) is logged again.
    func skipPlan(_ quiet: QuietPlan, start: ContinuousClock.Instant) {
        for violation in quiet.violations where !lastPlan.violations.contains(violation) { logger.error("safety check failed: \(violation)") }
        for conflict in quiet.conflicts where !lastPlan.conflicts.contains(conflict) { logger.warning("conflict: \(conflict)") }
        lastPlan.violations = quiet.violations
        lastPlan.conflicts = quiet.conflicts
        skippedPlans += 1
        reconciles += 1
        lastReconcile = Date()
        lastReconcileDuration = ContinuousClock.now - start
        metrics.end(duration: lastReconcileDuration ?? .zero)
        logger.debug("full plan skipped: nothing it reads changed since the last one, which had nothing to write")
    }

    /// A poll that read nothing new: nothing to plan or apply, and status (the last plan, the
    /// failures, so its line) stays as it is; counted as a reconcile that planned nothing.
    func settle(start: ContinuousClock.Instant) {
        reconciles += 1
        routeReconciles += 1
        lastReconcile = Date()
        lastReconcileDuration = ContinuousClock.now - start
        metrics.end(duration: lastReconcileDuration ?? .zero)
    }

    /// The event path: plans and applies the routes at `touched` only, and replaces that part
    /// of the last plan (what status reports), leaving the rest as the last full plan said.
    func reconcileRoutes(_ touched: Set<RouteIdentity>, planner: RoutePlanner, start: ContinuousClock.Instant) {
        let plan = planner.plan(touching: touched) { kernel.routes[$0] ?? [] }
        var held: [Pending] = []
        let changes = due(plan.changes, held: &held)
        let applied = apply(changes)
        var outstanding = lastPlan
        outstanding.changes.removeAll { $0.routeIdentity.map(touched.contains) ?? false }
        let done = Set(changes.map(\.subject)).subtracting(failures.keys)
        outstanding.changes += plan.changes.filter { !done.contains($0.subject) }
        outstanding.changes.sort { $0.kind < $1.kind }
        let subjects = planner.conflictSubjects(at: touched)
        outstanding.conflicts.removeAll { $0.kind == .route && subjects.contains($0.desired) }
        outstanding.conflicts += plan.conflicts
        for conflict in plan.conflicts where !lastPlan.conflicts.contains(conflict) { logger.warning("conflict: \(conflict)") }
        lastPlan = outstanding
        routeReconciles += 1
        endPartialReconcile(start: start, due: changes.count, applied: applied)
    }

    /// The end of a reconcile that planned part of the state (route events, a reload's touched
    /// objects): counted, timed, `STATUS=` when its line changed, and another pass soon when a
    /// write raced a change.
    func endPartialReconcile(start: ContinuousClock.Instant, due: Int, applied: Int) {
        changesApplied += applied
        reconciles += 1
        lastReconcile = Date()
        lastReconcileDuration = ContinuousClock.now - start
        metrics.end(duration: lastReconcileDuration ?? .zero)
        let line = statusLine
        if line != lastStatusLine {
            notifier.status(line)
            lastStatusLine = line
        }
        if due > applied, failures.isEmpty { schedule(after: .milliseconds(50)) }
    }

    /// The kinds of object a reload's change can touch; a plan of them that writes anything
    /// else (a device down, its key) is not the touched objects' alone.
    static let touchableKinds: Set<Change.Kind> = [.peer, .route, .proxy, .datapath]

    /// A reload's reconcile when the new desired state differs from `previous` in objects alone
    /// (`DesiredState.touched(since:limit:)`): plans and applies those objects only, and puts
    /// their part of the outstanding plan in place of the old one. It holds only while the
    /// last plan is the kernel's whole story: nothing failing or left to write, nothing read
    /// or reported by an event since that a plan has not seen, and the old state's plan of the
    /// touched objects writes nothing. Returns false, having written nothing, when any of that
    /// fails; the caller then plans in full. Property-tested in `TouchedPlanTests`.
    ///
    /// `previous` is let go (set to nil) once read: the old state's memory is free again
    /// before the writes, and handed back to the kernel with the rest at the end.
    func reconcileTouched(previous: inout DesiredState?) -> Bool {
        // A record that could not be saved is tried again by a full plan (`recordTakeovers`).
        guard failures.isEmpty, lastPlan.changes.isEmpty, recordSaveError == nil, let old = previous else { return false }
        let objects = desired.peerCount + desired.routes.count + desired.proxies.count + (desired.datapath?.entries.count ?? 0)
        guard let touched = desired.touched(since: old, limit: max(1024, objects / 4)) else { return false }
        let start = ContinuousClock.now
        // The reload made the parts it names stale: a read that finds anything new, or an
        // event that came meanwhile, is a change no plan has seen.
        let readChanged = readKernel()
        let (routes, beyond) = kernel.takeChanges()
        guard !readChanged, routes.isEmpty, !beyond, kernel.stale.isEmpty else { return false }
        let observed = kernel.observed(touching: touched)
        let before = Reconciler.plan(old, observed, touching: touched, lastApplied: lastApplied, records: records)
        guard before.changes.isEmpty else { return false }
        _ = consume old
        previous = nil
        recordTakeovers(touching: touched)
        let plan = Reconciler.plan(desired, observed, touching: touched, lastApplied: lastApplied, records: records)
        guard plan.changes.allSatisfy({ Daemon.touchableKinds.contains($0.kind) }) else { return false }

        reconcileAt = nil
        metrics.begin(generation: generation, previous: lastPlan, pendingKinds: Array(pendingByKind.keys), failing: failures.keys)
        logger.debug("touched plan", metadata: ["objects": "\(touched.count)", "changes": "\(plan.changes.count)"])
        quietPlan = nil
        reportRefusals(plan)
        var held: [Pending] = []
        let changes = due(plan.changes, held: &held)
        let applied = apply(changes)
        // As a full reconcile does after its writes: a recorded peer of a touched key that is
        // neither configured on its device nor there any more is no longer wgkeeper's.
        forgetSettledRecords(touching: touched)

        var outstanding = lastPlan
        let done = Set(changes.map(\.subject)).subtracting(failures.keys)
        let heldSubjects = Set(held.map(\.object))
        outstanding.changes = plan.changes.filter { !done.contains($0.subject) && !heldSubjects.contains($0.subject) }
        // Pending objects and conflicts: the old state's at the touched objects go, the new
        // state's come (status counts every pending one, and lists the first `listedObjects`).
        outstanding.pending = Daemon.removingOneEach(of: before.pending, from: outstanding.pending)
        for item in before.pending { pendingByKind[item.kind, default: 0] -= 1 }
        for item in plan.pending + held { pendingByKind[item.kind, default: 0] += 1 }
        pendingByKind = pendingByKind.filter { $0.value > 0 }
        outstanding.pending += plan.pending + held
        outstanding.pending.sort { $0.kind < $1.kind }
        if outstanding.pending.count > Daemon.listedObjects { outstanding.pending.removeLast(outstanding.pending.count - Daemon.listedObjects) }
        outstanding.conflicts = Daemon.removingOneEach(of: before.conflicts, from: outstanding.conflicts) + plan.conflicts
        // The gateway-address rule's refusals are all in `plan`; the sysctls' stay.
        outstanding.refused = (lastPlan.refused.filter { $0.kind == .sysctl } + plan.refused).sorted { $0.kind < $1.kind }
        for conflict in plan.conflicts where !lastPlan.conflicts.contains(conflict) { logger.warning("conflict: \(conflict)") }
        lastPlan = outstanding

        followNeighbourDiscoveryHandover()
        touchedPlans += 1
        endPartialReconcile(start: start, due: changes.count, applied: applied)
        // The route planner for the new state, and the old state's memory handed back: after
        // the reply, which waits for nothing but the writes.
        housekeepingDue = true
        return true
    }

    /// `items` less one of them for each element of `removed` (a multiset difference), in order.
    static func removingOneEach<T: Hashable>(of removed: [T], from items: [T]) -> [T] {
        var left = Dictionary(removed.map { ($0, 1) }, uniquingKeysWith: +)
        return items.filter { item in
            guard let n = left[item], n > 0 else { return true }
            left[item] = n - 1
            return false
        }
    }

    /// A refusal is logged when it starts or its reason changes, not at every reconcile, and a
    /// reason shared by several objects (a prefix's route, proxy entry, redirect) once.
    func reportRefusals(_ plan: Plan) {
        let before = Set(lastPlan.refused.map(\.reason))
        var said: Set<String> = []
        for refusal in plan.refused where !before.contains(refusal.reason) && said.insert(refusal.reason).inserted {
            logger.error("\(refusal.reason)")
        }
    }

    func makePlan() -> Plan {
        Reconciler.plan(desired, observed, lastApplied: lastApplied, records: records)
    }

    /// The changes to make now: a failed one waits out its backoff, and a peer whose endpoint
    /// name has not resolved waits in `held` (the lookup runs off the loop).
    func due(_ changes: [Change], held: inout [Pending]) -> [Change] {
        let now = ContinuousClock.now
        // Without failures, no subject is looked up (and the plan's array is not copied).
        var due = failures.isEmpty ? changes : changes.filter { failures[$0.subject].map { $0.retryAt <= now } ?? true }
        guard due.contains(where: { endpointHold($0) != nil }) else { return due }
        due.removeAll { change in
            guard let why = endpointHold(change) else { return false }
            held.append(Pending(kind: change.kind, object: change.subject, reason: why))
            return true
        }
        return due
    }

    /// Applies `changes`, records each outcome, and brings the cache up to date with what the
    /// writes did. Returns how many succeeded.
    func apply(_ planned: [Change]) -> Int {
        let changes = recordBeforeApplying(planned)
        guard !changes.isEmpty else { return 0 }
        let endpoints = resolvedEndpoints
        let applier = KernelApplier(rtnetlink: rtnetlink, wireGuard: wireGuard, datapath: datapathMaps, resolve: { endpoints[$0] })
        var succeeded = 0
        var mapWrites: [(entry: DatapathEntry, removed: Bool)] = []
        var proxyWrites: [(entry: ProxyEntry, removed: Bool)] = [], proxyWriteFailed = false
        // In slices: a start's 100 000 writes, each result holding its change, are not all
        // held at once (each slice is still batched).
        for first in stride(from: 0, to: changes.count, by: Daemon.applySlice) {
            let results = applier.apply(Array(changes[first ..< min(first + Daemon.applySlice, changes.count)]))
            for result in results { record(result) }
            recordAfterApplying(results)
            for result in results {
                if case .proxy(let entry, _) = result.change.object {
                    if result.succeeded { proxyWrites.append((entry, result.change.action == .remove)) } else { proxyWriteFailed = true }
                }
                guard result.succeeded else { continue }
                succeeded += 1
                if case .datapath(let entry) = result.change.object { mapWrites.append((entry, result.change.action == .remove)) }
            }
        }
        sysctlWrites += changes.filter { $0.kind == .sysctl }.count
        // Our own route writes are already queued as events: fold them in now, and re-read
        // the kinds the kernel does not notify, so the next plan starts from the truth.
        drainEvents()
        let kinds = Set(changes.map(\.kind))
        if kinds.contains(.proxy) {
            // An off-loop dump begun before these writes is dropped when it comes back.
            proxyEpoch += 1
            // Acknowledged proxy writes are exact: folded in rather than the table read back.
            // After a refused one, what the kernel holds is not known: read.
            if proxyWriteFailed { kernel.stale.insert(.proxies) } else { kernel.fold(proxyWrites: proxyWrites) }
        }
        if kinds.contains(.sysctl) { kernel.stale.insert(.sysctls) }
        if kinds.contains(.link) { kernel.stale.formUnion([.links, .wireGuard, .datapath]); datapathCountingRead = false }
        if kinds.contains(.peer) { kernel.stale.insert(.wireGuard) }
        // Map writes are synchronous and exact: fold the successful ones into the cache
        // rather than walk both maps again.
        for (entry, removed) in mapWrites {
            if removed { kernel.datapath?.remove(entry) } else { kernel.datapath?.insert(entry) }
        }
        readKernel()
        return succeeded
    }

    /// Saves what a write is about to change before it does: a sysctl's value before the first
    /// write, a device about to be created. Returns the changes that may go ahead: when the
    /// records cannot be saved, a write whose earlier value would be lost is held back as failed
    /// (and retried), never made.
    func recordBeforeApplying(_ changes: [Change]) -> [Change] {
        let before = records
        var needed: Set<String> = []
        for change in changes {
            switch change.object {
            case .sysctl(let sysctl, _, let previous) where change.reason != .restore:
                let index = sysctl.interface.flatMap { link(named: $0)?.index }
                if records.recordBeforeWrite(sysctl, previous: previous, interfaceIndex: index) { needed.insert(change.subject) }
            case .link(let name, .create):
                if records.createdDevices.insert(name).inserted { needed.insert(change.subject) }
            case .peer(let device, _, let peer, _) where !peer.remove && !peer.updateOnly:
                if records.recordPeers([peer.publicKey], device: device, interfaceIndex: link(named: device)?.index) {
                    needed.insert(change.subject)
                }
            default:
                break
            }
        }
        guard !needed.isEmpty else { return changes }
        do {
            try recordStore.save(records)
            return changes
        } catch {
            records = before
            let why = "not written: what it holds now cannot be recorded for a later restore (\(error))"
            for change in changes where needed.contains(change.subject) { record(ChangeResult(change: change, error: why)) }
            return changes.filter { !needed.contains($0.subject) }
        }
    }

    func recordAfterApplying(_ results: [ChangeResult]) {
        var changed = false
        for result in results {
            switch result.change.object {
            case .sysctl(let sysctl, _, _) where result.change.reason == .restore && result.succeeded:
                changed = records.sysctls.removeValue(forKey: sysctl.key) != nil || changed
            case .link(let name, .create) where !result.succeeded:
                changed = records.createdDevices.remove(name) != nil || changed
            case .link(let name, .delete) where result.succeeded:
                changed = records.createdDevices.remove(name) != nil || changed
            default:
                break
            }
        }
        if changed { saveRecords() }
    }

    /// A sysctl is recorded when wgkeeper takes it over, even when it needs no write then: the
    /// first write may come later, repairing drift, and must not record the drifted value as
    /// the one to restore. Not saved → not recorded (so the write waits, see recordBeforeApplying).
    func recordTakeovers(touching touched: TouchedObjects? = nil) {
        let before = records
        for item in desired.sysctls where touched == nil {
            let sysctl = item.sysctl
            guard records.sysctls[sysctl.key] == nil, let current = kernel.sysctls[sysctl.key],
                  let index = link(named: item.interface)?.index else { continue }
            _ = records.recordBeforeWrite(sysctl, previous: current, interfaceIndex: index)
        }
        // A configured peer already there is wgkeeper's from now on, like one it adds.
        for device in desired.devices {
            guard let present = kernel.wireGuard?[device.name], let index = link(named: device.name)?.index else { continue }
            if let touched {
                // A reload's touched peers alone: the others were taken over before.
                guard let keys = touched.peers[device.name] else { continue }
                let configured = device.peers.lazy.map(\.publicKey).filter(keys.contains)
                let there = Set(present.peers.lazy.map(\.publicKey).filter(keys.contains))
                _ = records.recordPeers(configured.filter(there.contains), device: device.name, interfaceIndex: index)
                continue
            }
            let there = Set(present.peers.map(\.publicKey))
            _ = records.recordPeers(device.peers.map(\.publicKey).filter(there.contains), device: device.name, interfaceIndex: index)
        }
        guard records != before else { return }
        do { try recordStore.save(records) } catch {
            records = before
            if recordSaveError != "\(error)" { logger.error("cannot save records", metadata: ["error": "\(error)"]) }
            recordSaveError = "\(error)"
        }
    }

    /// A sysctl no longer managed that already holds its earlier value needs no write, and a
    /// recorded peer neither configured nor on its device any more needs no removal: forget them.
    func forgetSettledRecords(touching touched: TouchedObjects? = nil) {
        var changed = false
        if touched == nil {
            let wanted = Set(desired.sysctls.map(\.sysctl.key))
            let done = records.sysctls.filter { key, original in !wanted.contains(key) && kernel.sysctls[key] == original }
            changed = !done.isEmpty
            for key in done.keys { records.sysctls[key] = nil }
        }
        for device in records.peers.keys.sorted() {
            guard let present = kernel.wireGuard?[device] else { continue }
            let configured = desired.devices.first { $0.name == device }?.peers ?? []
            guard let touched else {
                let keep = Set(present.peers.map(\.publicKey.base64)).union(configured.map(\.publicKey.base64))
                if records.forgetPeers(device: device, keeping: keep.contains) { changed = true }
                continue
            }
            // A reload's touched peers alone (`reconcileTouched`): the others were settled by the
            // plans before. A touched key neither configured nor there any more goes.
            guard let keys = touched.peers[device] else { continue }
            let kept = Set(present.peers.lazy.map(\.publicKey).filter(keys.contains)).union(configured.lazy.map(\.publicKey).filter(keys.contains))
            let settled = Set(keys.subtracting(kept).map(\.base64))
            if !settled.isEmpty, records.forgetPeers(device: device, keeping: { !settled.contains($0) }) { changed = true }
        }
        if changed { saveRecords() }
    }

    func record(_ result: ChangeResult) {
        let change = result.change
        guard let error = result.error else {
            logger.info("applied: \(change)", metadata: ["reason": "\(change.reason)"])
            failures[change.subject] = nil
            metrics.applied(change)
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

    /// Applies a configuration read by `ConfigReader`; an invalid one changes nothing but status.
    func reload(_ outcome: ConfigReader.Outcome) -> ReloadReply {
        let result = outcome.flatMap { config in
            refusedRuntimeChange(config.configuration.runtime).map { .failure(ConfigErrors([$0])) } ?? .success(config)
        }
        switch result {
        case .failure(let errors):
            configErrors = errors.errors.map(\.description)
            metrics.reloadFailures += 1
            for error in configErrors { logger.error("reload refused: \(error)") }
            return ReloadReply(ok: false, configGeneration: generation, errors: configErrors, changesApplied: 0)
        case .success(let config):
            let before = changesApplied
            // An access policy in force that the new configuration drops (its drop-in deleted, the
            // section left empty with its lines commented out) opens the gateway both ways: said
            // as loudly as `check` says it, not only as one change applied.
            let droppedPolicy = desired.policy != nil && config.desired.policy == nil && config.desired.datapath != nil
            if config.configuration.runtime.statusSocket != runtime.statusSocket {
                logger.warning("status_socket takes effect on restart")
            }
            var previous: DesiredState? = desired
            loaded = Daemon.kept(config)
            generation += 1
            configErrors = []
            refreshEndpoints()
            // The caches hold every route and proxy entry; what depends on the desired state's
            // names (sysctl keys, devices, attachments) is read again. The datapath's map entries
            // are what the cache holds, unless a poll's read of them is already due.
            datapathMapsTrusted = !kernel.stale.contains(.datapath) && kernel.datapath != nil
            kernel.stale.formUnion([.sysctls, .wireGuard, .datapath])
            datapathCountingRead = false
            filterScanFor = nil
            logger.info("reloaded", metadata: ["generation": "\(generation)", "summary": "\(config.summary)"])
            for line in config.absentPolicyNames { logger.warning("policy: \(line)") }
            var warnings: [String] = []
            if droppedPolicy, let tunnel = desired.datapath?.tunnel {
                let line = "the access policy was removed (no policy section now): every peer of \(tunnel) reaches every LAN address on every port and every LAN host every client"
                logger.warning("policy: \(line)")
                warnings.append(line)
            }
            // A change of objects alone (peers, and what derives from them) plans those objects,
            // when nothing else waits for a plan; anything else, the whole desired state.
            if fullPlanDue || !reconcileTouched(previous: &previous) {
                previous = nil
                fullPlanDue = true
                reconcile()
            }
            // What the new generation cannot have: a safety rule holds it back (status lists each object).
            var reasons: [String] = []
            for refusal in lastPlan.refused where !reasons.contains(refusal.reason) { reasons.append(refusal.reason) }
            return ReloadReply(ok: true, configGeneration: generation, errors: [], changesApplied: changesApplied - before,
                               refusedObjects: Set(lastPlan.refused.map(\.object)).count, refused: reasons,
                               warnings: warnings + [neighbourDiscoveryHandoverLine].compactMap { $0 })
        }
    }

    /// Settings that name where wgkeeper's claim lives cannot change under a running daemon:
    /// the old claim would be orphaned (routes tagged with the old protocol, pins under the old
    /// root, records in the old directory), left in the kernel and nobody's.
    func refusedRuntimeChange(_ new: RuntimeSettings) -> ConfigError? {
        let at = SourceLocation(file: options.configPath, line: 1, column: 1)
        let migrate = "to move, stop wgkeeper, run `wgkeeper cleanup` with the old configuration, then start with the new one"
        if new.routeProtocol != runtime.routeProtocol {
            return ConfigError(at, "runtime.route_protocol cannot change from \(runtime.routeProtocol) to \(new.routeProtocol) by reload: every route and proxy entry tagged \(runtime.routeProtocol) would be left behind; \(migrate)")
        }
        if new.bpfPinRoot != runtime.bpfPinRoot {
            return ConfigError(at, "runtime.bpf_pin_root cannot change by reload: the datapath pinned under \(runtime.bpfPinRoot) would stay attached; \(migrate)")
        }
        if new.stateDir != runtime.stateDir {
            return ConfigError(at, "runtime.state_dir cannot change by reload: the records in \(runtime.stateDir) (sysctl values to restore, devices created) would be lost; \(migrate)")
        }
        return nil
    }

    /// `wgkeeper cleanup` and `run --cleanup`: removes everything wgkeeper owns and restores
    /// what it changed, so the host is as it was before the first start: routes and proxy
    /// entries with its protocol (on any interface), the datapath (every tunnel's pins under
    /// the pin root, its filters on any interface), the WireGuard devices it created, the
    /// peers it configured (now or before) on devices it did not create, and every recorded sysctl. Returns
    /// whether all of it went.
    @discardableResult
    func cleanup() -> Bool {
        var ok = true
        do {
            kernel.seed(links: try rtnetlink.links())
            kernel.seed(routes: try rtnetlink.routes(family: .inet6))
            kernel.proxies = try rtnetlink.proxyEntries()
        } catch {
            logger.error("cleanup cannot read the kernel", metadata: ["error": "\(error)"])
            return false
        }
        // A recorded device renamed since takes its records along; one gone takes them with it.
        _ = followLinks()
        let owned = records.routeProtocol ?? runtime.routeProtocol
        var requests = kernel.routes.values.joined().filter { $0.protocolNumber == owned }.map { $0.deleteRequest() }
        requests += kernel.proxies.filter { $0.protocolNumber == owned }.map { $0.deleteRequest() }
        do {
            let failed = try rtnetlink.perform(requests).filter { if case .failure = $0 { return true }; return false }.count
            if failed > 0 { ok = false }
            logger.info("cleanup removed \(requests.count - failed) routes and proxy entries", metadata: ["failed": "\(failed)"])
        } catch {
            ok = false
            logger.error("cleanup failed", metadata: ["error": "\(error)"])
        }
        if !uninstallDatapath(pinRoot: records.pinRoot ?? runtime.bpfPinRoot) { ok = false }

        if wireGuard == nil { wireGuard = try? WireGuardNetlink() }
        let created = records.createdDevices
        for name in created.sorted() {
            guard let link = link(named: name), link.kind == "wireguard" else { records.createdDevices.remove(name); continue }
            do {
                try rtnetlink.socket.perform(Link.deleteRequest(index: link.index))
                records.createdDevices.remove(name)
                logger.info("cleanup deleted \(name), which wgkeeper created")
            } catch {
                ok = false
                logger.error("cleanup cannot delete \(name)", metadata: ["error": "\(error)"])
            }
        }
        // On a device it did not create: the peers configured now and those it configured before.
        var ours = records.peers.mapValues { Set($0.compactMap { WireGuardKey(base64: $0) }) }
        for device in desired.devices { ours[device.name, default: []].formUnion(device.peers.map(\.publicKey)) }
        for (name, keys) in ours.sorted(by: { $0.key < $1.key }) where !created.contains(name) && !keys.isEmpty {
            guard link(named: name)?.kind == "wireguard" else { records.peers[name] = nil; continue }
            guard let wireGuard else {
                ok = false
                logger.error("cleanup cannot remove the peers of \(name): the WireGuard generic netlink family is not available")
                continue
            }
            let removals = keys.sorted { $0.base64 < $1.base64 }.map { WireGuardPeerChange(publicKey: $0, remove: true) }
            do {
                try wireGuard.apply(device: name, WireGuardDeviceChange(peers: removals))
                records.peers[name] = nil
                logger.info("cleanup removed the \(removals.count) peers wgkeeper configured on \(name)")
            } catch {
                ok = false
                logger.error("cleanup of the peers of \(name) failed", metadata: ["error": "\(error)"])
            }
        }
        for name in created where !records.createdDevices.contains(name) { records.peers[name] = nil }

        for (key, original) in records.sysctls.sorted(by: { $0.key < $1.key }) {
            let sysctl = Sysctl(key)
            guard let interface = sysctl.interface, ["all", "default"].contains(interface) || link(named: interface) != nil else {
                records.sysctls[key] = nil
                continue
            }
            do {
                try sysctl.write(original)
                records.sysctls[key] = nil
                logger.info("cleanup restored \(sysctl) = \(original)")
            } catch {
                ok = false
                logger.error("cleanup cannot restore \(sysctl) = \(original)", metadata: ["error": "\(error)"])
            }
        }
        if recordsUnreadable {
            // Never replace what could not be read: the operator may still recover values from it.
            logger.error("\(recordStore.path) could not be read and is left in place: sysctls it holds were not restored, devices it names not deleted")
            return false
        }
        if records.isEmpty { recordStore.remove() } else { saveRecords() }
        return ok
    }
}
