import Foundation
import Glibc
import Netlink
import XCTest

/// The interfaces a run builds in each namespace before wgkeeper starts.
public struct ModelTopology: Sendable {
    /// Real WireGuard: the daemon creates `wg0`. Otherwise `wg0` is a veth (peers stay pending).
    public var wireGuard: Bool
    /// `lan0.100` is a real 802.1Q VLAN on `lan0`; otherwise a veth with that name.
    public var vlan: Bool

    public init(wireGuard: Bool, vlan: Bool) {
        self.wireGuard = wireGuard
        self.vlan = vlan
    }

    public var universe: ModelUniverse {
        var u = ModelUniverse()
        u.unmanaged = (wireGuard ? [] : ["wg0p"]) + ["lan0p"] + (vlan ? [] : ["lanvp"]) + ["lan1p", "ext0p"]
        return u
    }

    /// One `ip -batch` (each process the test spawns costs tens of milliseconds).
    public func build(_ ns: TestNamespace) throws {
        var commands: [String] = []
        func veth(_ a: String, _ b: String) {
            commands += ["link add \(a) type veth peer name \(b)", "link set \(a) up", "link set \(b) up"]
        }
        if !wireGuard { veth("wg0", "wg0p") }
        veth("lan0", "lan0p")
        if vlan {
            commands += ["link add link lan0 name lan0.100 type vlan id 100", "link set lan0.100 up"]
        } else {
            veth("lan0.100", "lanvp")
        }
        veth("lan1", "lan1p")
        veth("ext0", "ext0p")
        try shell(["ip", "-n", ns.name, "-batch", "-"], input: commands.joined(separator: "\n") + "\n")
    }
}

public struct ModelFailure: CustomStringConvertible {
    /// Index into the sequence that was played; `phase` says when in that step.
    public var step: Int
    public var phase: String
    public var diff: [String]
    /// The daemon's last log lines at the failure.
    public var log: String = ""
    public var kinds: Set<String> { KernelSnapshot.kinds(diff) }
    /// "+route", "-sysctl", …: which kinds went missing or appeared, and whether at cleanup.
    public var signature: Set<String> {
        var result = Set(diff.compactMap { line -> String? in
            guard let sign = line.first, let kind = KernelSnapshot.kinds([line]).first else { return nil }
            return "\(sign)\(kind)"
        })
        if phase.contains("cleanup") { result.insert("cleanup") }
        return result
    }
    /// A shrinking candidate reproduces this failure when it shows at least the same signature.
    public func isReproduced(by other: ModelFailure) -> Bool {
        other.signature.isSuperset(of: signature) && other.signature.contains("cleanup") == signature.contains("cleanup")
    }
    public var description: String { "step \(step) (\(phase)):\n" + ModelFailure.render(diff) }

    /// The diff, at most 40 lines (the rest counted).
    public static func render(_ diff: [String]) -> String {
        let shown = diff.prefix(40).map { "    " + $0 }
        return (shown + (diff.count > 40 ? ["    … \(diff.count - 40) more lines"] : [])).joined(separator: "\n")
    }
}

/// The last 16 KiB of a daemon's output, read as it comes (an unread pipe would block the daemon),
/// and every change it logged as applied or failed since the last `takeChanges()`.
final class LogTail: @unchecked Sendable {
    private let lock = NSLock()
    private var buffer = Data()
    private var partial = Data()
    private var changes: [String] = []
    private var appliedCount = 0

    func follow(_ pipe: Pipe) {
        lock.lock()
        partial = Data()
        lock.unlock()
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.lock()
            self.buffer.append(data)
            if self.buffer.count > 16_384 { self.buffer = self.buffer.suffix(16_384) }
            self.partial.append(data)
            while let end = self.partial.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: self.partial[self.partial.startIndex..<end], as: UTF8.self)
                self.partial = Data(self.partial[(end + 1)...])
                if let change = LogTail.change(in: line) {
                    self.changes.append(change)
                    if line.contains("applied: ") { self.appliedCount += 1 }
                }
            }
            self.lock.unlock()
        }
    }

    /// The change a daemon's `applied: <change> reason=…` or `failed: <change> attempt=…` line
    /// names, as `wgkeeper plan` prints it.
    static func change(in line: String) -> String? {
        for (marker, metadata) in [("applied: ", " reason="), ("failed: ", " attempt=")] {
            guard let start = line.range(of: marker) else { continue }
            let rest = line[start.upperBound...]
            return String(rest.range(of: metadata, options: .backwards).map { rest[..<$0.lowerBound] } ?? rest)
        }
        return nil
    }

    /// The changes logged since the last call, and how many of them were applied.
    func takeChanges() -> (changes: [String], applied: Int) {
        lock.lock()
        defer { lock.unlock() }
        let taken = (changes, appliedCount)
        changes = []
        appliedCount = 0
        return taken
    }

    var text: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: buffer, as: UTF8.self)
    }
}

/// What the test did to the kernel that the daemon must leave alone.
struct Overlay {
    var lines: Set<String> = []
    var sysctls: [String: String] = [:]   // "iface key" → value
    var peers: [Int: String] = [:]        // foreign WireGuard peers: id → allowed IP

    mutating func expected(from reference: KernelSnapshot, config: ModelConfig?, wireGuard: Bool) -> KernelSnapshot {
        var lines = reference.lines.union(self.lines)
        // After cleanup (config nil) a wg0 the daemon created is gone, and with it what hung off it.
        let gone = wireGuard && config == nil ? "wg0" : nil
        if let gone { lines = lines.filter { !$0.contains(" dev \(gone) ") } }
        for (key, value) in sysctls where !(config?.managedSysctls.contains(key) ?? false) && !(gone.map { key.hasPrefix($0 + " ") } ?? false) {
            lines = lines.filter { !$0.hasPrefix("sysctl \(key) ") }
            lines.insert("sysctl \(key) \(value)")
        }
        if config?.prunePeers ?? true { peers = [:] }
        if wireGuard, config != nil {
            for (id, ip) in peers {
                lines.insert(KernelSnapshot.peerLine(dev: "wg0", key: ModelUniverse.publicKey(peer: id).base64,
                                                     endpoint: "(none)", allowed: ip, keepalive: "off"))
            }
        }
        return KernelSnapshot(lines: lines)
    }
}

/// Plays step sequences against `wgkeeper run` in a namespace and compares the kernel after
/// every step with what a fresh daemon makes of the same configuration in a clean namespace.
public final class ModelRun {
    public struct Settings {
        public var seed: UInt64
        public var steps: Int
        public var features = ModelFeatures()
        public var featureSpec = ""
        public var only: [Int]?
        /// Steps get this long to shrink; configurations and drift half of it each.
        public var shrinkBudget: Duration = .seconds(60)
        public var settle: Duration = .seconds(2)
        public var keepGoing = false
        /// How long a start or reload may take to say READY=1.
        public var readyWithin: Duration = .seconds(10)
        public var testFilter: String
        /// How a replay line runs the test (the VM variant goes through Tests/Scenarios/vm/run.sh).
        public var replayRunner: String?

        /// From the environment: WGK_MODEL_SEED, _STEPS, _FEATURES, _ONLY, _SHRINK_SECONDS, _SETTLE_MS, _KEEP_GOING.
        public static func fromEnvironment(defaultSteps: Int, testFilter: String) -> Settings {
            let env = ProcessInfo.processInfo.environment
            var s = Settings(seed: env["WGK_MODEL_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1...999_999_999),
                             steps: env["WGK_MODEL_STEPS"].flatMap { Int($0) } ?? defaultSteps, testFilter: testFilter)
            s.featureSpec = env["WGK_MODEL_FEATURES"] ?? ""
            s.features.apply(s.featureSpec)
            s.only = env["WGK_MODEL_ONLY"].map { $0.split(separator: ",").compactMap { Int($0) } }
            if let seconds = env["WGK_MODEL_SHRINK_SECONDS"].flatMap({ Int($0) }) { s.shrinkBudget = .seconds(seconds) }
            if let ms = env["WGK_MODEL_SETTLE_MS"].flatMap({ Int($0) }) { s.settle = .milliseconds(ms) }
            s.keepGoing = env["WGK_MODEL_KEEP_GOING"] == "1"
            return s
        }
    }

    let test: XCTestCase
    let topology: ModelTopology
    public var settings: Settings
    let work: URL
    let keyText: String
    let mainPins: String
    let referencePins: String
    var references: [ModelConfig: KernelSnapshot] = [:]
    public private(set) var referenceRuns = 0
    public private(set) var replays = 0
    /// Reloads that planned only the objects their change touched (`touched_plans` moved).
    public private(set) var touchedReloads = 0
    let cleanupCommand: Bool

    public init(_ test: XCTestCase, topology: ModelTopology, settings: Settings) throws {
        self.test = test
        self.topology = topology
        self.settings = settings
        if topology.wireGuard { self.settings.features.peerDrift = true }
        if topology.vlan { self.settings.features.clsact = true }   // the VM's 6.1 kernel has no TCX
        work = URL(fileURLWithPath: try scratchDirectory("wgk-model"))
        keyText = PrivateKey.generate().key.base64 + "\n"
        mainPins = work.appendingPathComponent("pins-main").path
        referencePins = work.appendingPathComponent("pins-reference").path
        // bpffs mounts in this process's mount namespace: the daemon (under `ip netns exec`)
        // sees the same file system, and the test can list and dump what it pinned.
        for root in [mainPins, referencePins] {
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try shell("mount", "-t", "bpf", "bpffs", root)
        }
        let (work, mainPins, referencePins) = (work, mainPins, referencePins)
        test.addTeardownBlock {
            for root in [mainPins, referencePins] {
                ModelRun.clearPins(root)
                _ = try? shell("umount", "-l", root)
            }
            try? FileManager.default.removeItem(at: work)
        }
        // ArgumentParser answers `X --help` for an unknown X with the top help: look for the subcommand.
        cleanupCommand = ((try? shell(DaemonHarness.binary, "--help")) ?? "").split(separator: "\n")
            .contains { $0.trimmingCharacters(in: .whitespaces).hasPrefix("cleanup ") }
    }

    static func clearPins(_ root: String) {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where !entry.hasSuffix(".debug") {
            try? FileManager.default.removeItem(atPath: "\(root)/\(entry)")
        }
    }

    func harness(_ ns: TestNamespace) throws -> DaemonHarness {
        let h = try DaemonHarness(test, ns: ns)
        try keyText.write(toFile: h.keyPath, atomically: false, encoding: .utf8)
        chmod(h.keyPath, 0o600)
        return h
    }

    func yaml(_ config: ModelConfig, _ h: DaemonHarness, pins: String) -> String {
        config.yaml(statusSocket: h.socketPath, pinRoot: pins, keyFile: h.keyPath)
    }

    // MARK: the model: a fresh daemon on a clean namespace

    func reference(_ config: ModelConfig) throws -> KernelSnapshot {
        if let known = references[config] { return known }
        referenceRuns += 1
        let t0 = ContinuousClock.now
        let ns = try TestNamespace(for: test)
        defer {
            _ = try? shell("ip", "netns", "del", ns.name)
            ModelRun.clearPins(referencePins)
        }
        try topology.build(ns)
        let h = try harness(ns)
        defer { h.finish() }
        try h.writeConfig(yaml(config, h, pins: referencePins))
        let a = ContinuousClock.now
        do {
            try h.start(readyWithin: settings.readyWithin)
        } catch {
            // A configuration the daemon refuses is the generator's bug unless the README's configuration reference allows it.
            if let problem = try? shell(DaemonHarness.binary, "check", "--config", h.configPath), !problem.isEmpty {
                throw TestFailure("a fresh daemon failed on a configuration `wgkeeper check` accepts (\(config.summary)): \(error)")
            }
            throw TestFailure("generator bug: `wgkeeper check` refuses a generated configuration (\(config.summary)): \(error)")
        }
        let b = ContinuousClock.now
        // READY=1 comes after the first reconcile: the fresh state is complete by then.
        usleep(50_000)
        let snapshot = try KernelSnapshot.read(ns, pinRoot: referencePins, wireGuard: topology.wireGuard)
        let c = ContinuousClock.now
        h.stop()
        if ProcessInfo.processInfo.environment["WGK_MODEL_VERBOSE"] == "1" {
            print("model: reference: setup \(a - t0), start \(b - a), settle+read \(c - b), stop \(ContinuousClock.now - c)")
        }
        references[config] = snapshot
        return snapshot
    }

    /// The fresh start against the configuration's own claims: every wanted route, proxy entry,
    /// sysctl (and peer) present, no other route or proxy entry with our protocol, programs on
    /// the LAN and tunnel exactly when `redirect` is on. Catches what a fresh daemon gets wrong
    /// too (which the comparison with a fresh daemon cannot see).
    func claimsDiff(_ config: ModelConfig, _ reference: KernelSnapshot) -> [String]? {
        let (required, owned) = config.claimLines(wireGuard: topology.wireGuard)
        var diff = required.subtracting(reference.lines).sorted().map { "- configured, missing: \($0)" }
        let ours = reference.lines.filter { ($0.hasPrefix("route ") || $0.hasPrefix("proxy ")) && $0.contains(" proto 77") }
        diff += ours.subtracting(owned).sorted().map { "+ not configured, present: \($0)" }
        let attached = reference.lines.filter { $0.hasPrefix("tcx ") || $0.hasPrefix("filter ") }
        if let g = config.gateway, g.redirect {
            for dev in [g.lan, "wg0"] where !attached.contains(where: { $0.hasPrefix("tcx \(dev) ingress ") || $0.hasPrefix("filter \(dev) ingress ") }) {
                diff.append("- configured, missing: a program on \(dev) ingress (redirect: true)")
            }
        } else {
            diff += attached.sorted().map { "+ not configured, present: \($0) (redirect off)" }
        }
        return diff.isEmpty ? nil : diff
    }

    // MARK: playing a sequence

    func converge(_ ns: TestNamespace, to expected: KernelSnapshot) throws -> [String]? {
        let deadline = ContinuousClock.now + settings.settle
        while true {
            let actual = try KernelSnapshot.read(ns, pinRoot: mainPins, wireGuard: topology.wireGuard)
            if actual == expected { return nil }
            if ContinuousClock.now >= deadline { return KernelSnapshot.diff(expected: expected, actual: actual) }
            usleep(100_000)
        }
    }

    /// `wgkeeper plan` on a kernel that equals the configuration must list no change (docs/ARCHITECTURE.md, data flow:
    /// an already-correct kernel yields zero changes; plan shows what run would do).
    func planDiff(_ h: DaemonHarness) throws -> [String]? {
        let text = try shell(["ip", "netns", "exec", h.ns.name, DaemonHarness.binary, "plan", "--json", "--config", h.configPath],
                             allowedExitCodes: [0, 2])
        guard let plan = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            return ["+ plan: unreadable output: \(text.prefix(200))"]
        }
        let changes = (plan["changes"] as? [Any]) ?? []
        if changes.isEmpty { return nil }
        return changes.map { change -> String in
            let data = (try? JSONSerialization.data(withJSONObject: change, options: [.sortedKeys])) ?? Data()
            return "+ plan lists a change on a converged kernel: plan \(String(decoding: data, as: UTF8.self))"
        }
    }

    /// What `wgkeeper plan` says `run` will do from the kernel as it is now: the changes, and the
    /// objects it holds back (those on a device the same pass creates are written after it).
    struct PlanLines {
        var changes: Set<String>
        var pending: [String]
        var createdLinks: [String]
        var createsLink: Bool { !createdLinks.isEmpty }
    }

    func planLines(_ h: DaemonHarness) throws -> PlanLines {
        let text = try shell(["ip", "netns", "exec", h.ns.name, DaemonHarness.binary, "plan", "--json", "--config", h.configPath],
                             allowedExitCodes: [0, 2])
        guard let plan = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw TestFailure("`wgkeeper plan --json` printed something that is not JSON: \(text.prefix(200))")
        }
        let changes = ((plan["changes"] as? [[String: Any]]) ?? []).compactMap { $0["line"] as? String }
        let pending = ((plan["pending"] as? [[String: Any]]) ?? []).compactMap { $0["object"] as? String }
        let created = changes.filter { $0.hasPrefix("+ link ") }.map { String($0.split(separator: " ")[2]) }
        return PlanLines(changes: Set(changes), pending: pending, createdLinks: created)
    }

    /// The promise (docs/ARCHITECTURE.md, data flow) that `plan` lists what `run` then does, checked on one step: the plan
    /// taken just before the step against the changes the daemon logged while applying it
    /// (applied or failed). A change `run` makes on a device it creates in the same pass was
    /// pending in the plan. Nil when they agree or when the daemon lost log lines (said so).
    func planRunDiff(_ planned: PlanLines, _ h: DaemonHarness, log: LogTail, appliedBefore: Int, droppedBefore: Int) throws -> [String]? {
        let status = try h.status()
        let appliedNow = (status["changes_applied"] as? Int) ?? 0
        let droppedNow = (status["log_lines_dropped"] as? Int) ?? 0
        if droppedNow != droppedBefore {
            print("model: the daemon dropped \(droppedNow - droppedBefore) log lines: plan and run not compared at this step")
            return nil
        }
        // The status round trip put the loop past its writes; the lines may still be in the pipe.
        var logged = log.takeChanges()
        let deadline = ContinuousClock.now + .seconds(2)
        while logged.applied < appliedNow - appliedBefore, ContinuousClock.now < deadline {
            usleep(20_000)
            let more = log.takeChanges()
            logged = (logged.changes + more.changes, logged.applied + more.applied)
        }
        let done = Set(logged.changes)
        if ProcessInfo.processInfo.environment["WGK_MODEL_VERBOSE"] == "1" {
            print("model: plan listed \(planned.changes.count) changes (\(planned.pending.count) pending); run logged \(logged.changes.count), \(logged.applied) applied")
        }
        func body(_ line: String) -> String { String(line.drop { $0 != " " }.dropFirst()) }
        var diff = planned.changes.subtracting(done).sorted().map { "- planned, not written by run: \(body($0)) [\($0.prefix(1))]" }
        for line in done.subtracting(planned.changes).sorted() {
            let object = body(line)
            // Written after a link the same pass creates: what the plan held back for it, and the
            // new device's own key and port (counted by the link's change, not as pending).
            if planned.pending.contains(where: { object == $0 || object.hasPrefix($0 + " ") }) && planned.createsLink { continue }
            if planned.createdLinks.contains(where: { object.hasPrefix("device \($0) ") }) { continue }
            diff.append("+ written by run, not planned: \(object) [\(line.prefix(1))]")
        }
        return diff.isEmpty ? nil : diff
    }

    func run(_ drift: Drift, in ns: TestNamespace, overlay: inout Overlay) {
        var ok = true
        for command in drift.commands {
            if (try? shell(["ip", "netns", "exec", ns.name] + command)) == nil { ok = false }
        }
        guard ok else { return }   // e.g. the object was not there: nothing changed
        if let line = drift.foreignLine { overlay.lines.insert(line) }
        if case let .sysctl(iface, key, value, true) = drift { overlay.sysctls["\(iface) \(key)"] = value }
        if case let .foreignPeer(id, ip) = drift { overlay.peers[id] = ip }
    }

    func cleanup(_ h: DaemonHarness) throws {
        h.stop()
        if cleanupCommand {
            try shell(["ip", "netns", "exec", h.ns.name, DaemonHarness.binary, "cleanup", "--config", h.configPath])
        } else {
            // Until `wgkeeper cleanup` exists: a run that cleans up on stop.
            try h.start(extraArguments: ["--cleanup"], readyWithin: settings.readyWithin)
            h.stop()
        }
    }

    /// Plays `steps` from a clean namespace; the first failure, or nil. `log` sees progress.
    public func play(_ steps: [ModelStep], log: ((String) -> Void)? = nil) throws -> ModelFailure? {
        replays += 1
        let ns = try TestNamespace(for: test)
        defer {
            _ = try? shell("ip", "netns", "del", ns.name)
            ModelRun.clearPins(mainPins)
        }
        try topology.build(ns)
        let baseline = try KernelSnapshot.read(ns, pinRoot: mainPins, wireGuard: topology.wireGuard)
        let h = try harness(ns)
        let daemonLog = LogTail()
        defer { h.finish() }
        var overlay = Overlay()
        let started = ContinuousClock.now
        let verbose = ProcessInfo.processInfo.environment["WGK_MODEL_VERBOSE"] == "1"
        for (i, step) in steps.enumerated() {
            let t0 = ContinuousClock.now
            let fresh = try reference(step.config)
            if let diff = claimsDiff(step.config, fresh) {
                return ModelFailure(step: i, phase: "a fresh start does not do what the configuration says", diff: diff)
            }
            let expected = overlay.expected(from: fresh, config: step.config, wireGuard: topology.wireGuard)
            let t1 = ContinuousClock.now
            try h.writeConfig(yaml(step.config, h, pins: mainPins))
            // The plan from the kernel as it stands, then the step: what run writes must be it.
            let planned = try planLines(h)
            var (appliedBefore, droppedBefore, touchedBefore) = (0, 0, 0)
            if i > 0, !step.restart {
                let status = try h.status()
                appliedBefore = (status["changes_applied"] as? Int) ?? 0
                droppedBefore = (status["log_lines_dropped"] as? Int) ?? 0
                touchedBefore = (status["touched_plans"] as? Int) ?? 0
            }
            _ = daemonLog.takeChanges()
            if i == 0 {
                try h.start(readyWithin: settings.readyWithin)
                daemonLog.follow(h.output)
            } else if step.restart {
                h.output.fileHandleForReading.readabilityHandler = nil
                h.stop()
                try h.start(readyWithin: settings.readyWithin)
                daemonLog.follow(h.output)
            } else {
                guard let process = h.process else { throw TestFailure("wgkeeper is not running at step \(i)") }
                kill(process.processIdentifier, SIGHUP)
                try h.waitForNotification(timeout: settings.readyWithin) { $0.contains("RELOADING=1") }
                try h.waitForNotification(timeout: settings.readyWithin) { $0.contains("READY=1") }
            }
            let t2 = ContinuousClock.now
            if let diff = try converge(ns, to: expected) {
                return ModelFailure(step: i, phase: i == 0 ? "start" : step.restart ? "restart" : "reload", diff: diff, log: daemonLog.text)
            }
            if let diff = try planRunDiff(planned, h, log: daemonLog, appliedBefore: appliedBefore, droppedBefore: droppedBefore) {
                return ModelFailure(step: i, phase: "`wgkeeper plan` before the \(i == 0 ? "start" : step.restart ? "restart" : "reload") against what it wrote",
                                    diff: diff, log: daemonLog.text)
            }
            if let diff = try planDiff(h) {
                return ModelFailure(step: i, phase: "`wgkeeper plan` after the \(i == 0 ? "start" : step.restart ? "restart" : "reload")", diff: diff,
                                    log: daemonLog.text)
            }
            if i > 0, !step.restart, ((try h.status())["touched_plans"] as? Int ?? 0) > touchedBefore { touchedReloads += 1 }
            if verbose { print("model: step \(i): reference \(t1 - t0), apply \(t2 - t1), converge \(ContinuousClock.now - t2)") }
            if !step.drift.isEmpty {
                for drift in step.drift { run(drift, in: ns, overlay: &overlay) }
                let expected = overlay.expected(from: try reference(step.config), config: step.config, wireGuard: topology.wireGuard)
                if let diff = try converge(ns, to: expected) {
                    return ModelFailure(step: i, phase: "after drift: \(step.drift.map(\.description).joined(separator: " | "))", diff: diff,
                                        log: daemonLog.text)
                }
            }
            if let log, (i + 1) % 25 == 0 {
                log("step \(i + 1)/\(steps.count) ok (\(ContinuousClock.now - started), \(referenceRuns) reference runs)")
            }
        }
        // The end: cleanup leaves the namespace as before the first start (plus what others added).
        try cleanup(h)
        let expected = overlay.expected(from: baseline, config: nil, wireGuard: topology.wireGuard)
        let actual = try KernelSnapshot.read(ns, pinRoot: mainPins, wireGuard: topology.wireGuard)
        if actual != expected {
            return ModelFailure(step: steps.count, phase: cleanupCommand ? "after `wgkeeper cleanup`" : "after `run --cleanup` and SIGTERM (no `wgkeeper cleanup` yet)",
                                diff: KernelSnapshot.diff(expected: expected, actual: actual))
        }
        return nil
    }

    // MARK: shrinking

    /// Delta debugging over the step list: drop chunks while the sequence still fails with a
    /// difference of the same signature (`isReproduced`), each attempt from a clean namespace. Returns kept indices.
    public func shrink(_ steps: [ModelStep], failure: ModelFailure, log: (String) -> Void) -> (indices: [Int], failure: ModelFailure) {
        let deadline = ContinuousClock.now + settings.shrinkBudget
        var kept = Array(0..<min(steps.count, failure.step + 1))
        var best = failure
        func fails(_ candidate: [Int]) -> ModelFailure? {
            guard !candidate.isEmpty, ContinuousClock.now < deadline else { return nil }
            var sequence = candidate.map { steps[$0] }
            sequence[0].restart = false
            guard let f = try? play(sequence), failure.isReproduced(by: f) else { return nil }
            return f
        }
        var n = 2
        while kept.count >= 2 && ContinuousClock.now < deadline {
            let size = (kept.count + n - 1) / n
            var reduced = false
            for start in stride(from: 0, to: kept.count, by: size) {
                var candidate = kept
                candidate.removeSubrange(start..<min(start + size, kept.count))
                if let f = fails(candidate) {
                    kept = Array(candidate.prefix(f.step + 1 == candidate.count + 1 ? candidate.count : f.step + 1))
                    best = f
                    n = max(n - 1, 2)
                    reduced = true
                    log("shrunk to \(kept.count) steps")
                    break
                }
            }
            if !reduced {
                if n >= kept.count { break }
                n = min(kept.count, n * 2)
            }
        }
        return (kept, best)
    }

    /// Then the configurations themselves, the same edit in every step: without explicit routes,
    /// without explicit proxies, without chunks of the peers (same rule as above).
    public func shrinkConfigs(_ steps: [ModelStep], failure: ModelFailure, log: (String) -> Void) -> ([ModelStep], ModelFailure) {
        let deadline = ContinuousClock.now + settings.shrinkBudget / 2
        var current = steps
        var best = failure
        func attempt(_ what: String, _ edit: (inout ModelConfig) -> Void) -> Bool {
            guard ContinuousClock.now < deadline else { return false }
            var candidate = current
            for i in candidate.indices { edit(&candidate[i].config) }
            guard candidate != current, let f = try? play(candidate), failure.isReproduced(by: f) else { return false }
            current = candidate
            best = f
            log("configurations shrunk: \(what)")
            return true
        }
        _ = attempt("no explicit routes") { $0.routes = [] }
        _ = attempt("no explicit proxies") { $0.proxies = [] }
        var ids = Array(Set(current.flatMap { $0.config.peers.map(\.id) })).sorted()
        var chunk = max(1, ids.count / 2)
        while !ids.isEmpty && ContinuousClock.now < deadline {
            var removedAny = false
            for start in stride(from: 0, to: ids.count, by: chunk) {
                let drop = Set(ids[start..<min(start + chunk, ids.count)])
                if attempt("without peers \(drop.sorted())", { $0.peers.removeAll { drop.contains($0.id) } }) {
                    ids.removeAll { drop.contains($0) }
                    removedAny = true
                    break
                }
            }
            if !removedAny {
                if chunk == 1 { break }
                chunk = max(1, chunk / 2)
            }
        }
        return (current, best)
    }

    /// Then the drift of each kept step, one operation at a time (same rule as above).
    public func shrinkDrift(_ steps: [ModelStep], failure: ModelFailure, log: (String) -> Void) -> ([ModelStep], ModelFailure) {
        let deadline = ContinuousClock.now + settings.shrinkBudget / 2
        var current = steps
        var best = failure
        for i in current.indices {
            var j = 0
            while j < current[i].drift.count && ContinuousClock.now < deadline {
                var candidate = current
                candidate[i].drift.remove(at: j)
                if let f = try? play(candidate), failure.isReproduced(by: f) {
                    current = candidate
                    best = f
                    log("dropped a drift operation of step \(i)")
                } else {
                    j += 1
                }
            }
        }
        return (current, best)
    }

    // MARK: the whole test

    public func sequence() -> [ModelStep] {
        var generator = ModelGenerator(seed: settings.seed, features: settings.features, universe: topology.universe)
        let all = generator.steps(settings.steps)
        guard let only = settings.only else { return all }
        var picked = only.filter { $0 < all.count }.map { all[$0] }
        if !picked.isEmpty { picked[0].restart = false }
        return picked
    }

    func replayCommand(only: [Int]? = nil) -> String {
        var env = ["WGK_MODEL_SEED=\(settings.seed)", "WGK_MODEL_STEPS=\(settings.steps)"]
        if !settings.featureSpec.isEmpty { env.append("WGK_MODEL_FEATURES=\(settings.featureSpec)") }
        if let only { env.append("WGK_MODEL_ONLY=\(only.map(String.init).joined(separator: ","))") }
        if let runner = settings.replayRunner {
            return "VM_PASS_ENV=\"\(env.map { String($0.split(separator: "=")[0]) }.joined(separator: " "))\" " + env.joined(separator: " ") + " " + runner
        }
        return env.joined(separator: " ") + " swift test --skip-build --filter \(settings.testFilter)"
    }

    /// Generates, plays, and on failure shrinks and reports; throws the report.
    public func check() throws {
        let steps = sequence()
        print("model: seed \(settings.seed), \(steps.count) steps, features '\(settings.featureSpec)', cleanup via \(cleanupCommand ? "`wgkeeper cleanup`" : "`run --cleanup` (no `wgkeeper cleanup` in this build)")")
        print("model: replay with: \(replayCommand(only: settings.only))")
        let started = ContinuousClock.now
        var failures: [(ModelFailure, [Int])] = []
        var offset = 0
        var remaining = steps
        let original = settings.only ?? Array(0..<steps.count)
        while !remaining.isEmpty {
            guard let failure = try play(remaining, log: { print("model: \($0)") }) else { break }
            let global = offset + failure.step
            print("model: FAILED at step \(global) (\(failure.phase)) after \(ContinuousClock.now - started)")
            print("model: configuration: \(global < steps.count ? steps[global].config.summary : "(cleanup)")")
            print(ModelFailure.render(failure.diff))
            if !failure.log.isEmpty {
                print("model: the daemon's last log lines:\n" + failure.log.split(separator: "\n").suffix(15).map { "    | " + $0 }.joined(separator: "\n"))
            }
            failures.append((failure, Array(original[offset..<min(original.count, global + 1)])))
            guard settings.keepGoing, failure.step + 1 < remaining.count else { break }
            // Look past it: start over, fresh, from the next step.
            offset = global + 1
            remaining = Array(steps[offset...])
            remaining[0].restart = false
        }
        print("model: played \(steps.count) steps in \(ContinuousClock.now - started), \(referenceRuns) reference runs; \(touchedReloads) reloads planned only the objects they touched")
        guard let (first, indices) = failures.first else { return }
        var report = ["model-based test failed: seed \(settings.seed)", "first failure: " + first.description]
        if settings.shrinkBudget > .zero {
            let shrinkStart = ContinuousClock.now
            let sub = indices.map { steps[original.firstIndex(of: $0)!] }
            var relative = first
            relative.step = min(first.step, sub.count - 1)
            let (kept, stepShrunk) = shrink(sub, failure: relative) { print("model: \($0)") }
            let keptOriginal = kept.map { indices[$0] }
            var keptSteps = kept.map { sub[$0] }
            keptSteps[0].restart = false
            let (smaller, configShrunk) = shrinkConfigs(keptSteps, failure: stepShrunk) { print("model: \($0)") }
            let (minimal, shrunk) = shrinkDrift(smaller, failure: configShrunk) { print("model: \($0)") }
            report.append("shrunk in \(ContinuousClock.now - shrinkStart) to \(kept.count) steps (original indices \(keptOriginal)):")
            for (n, step) in minimal.enumerated() {
                let what = n == 0 ? step.config.summary : step.config.delta(from: minimal[n - 1].config)
                report.append("  \(n). [\(keptOriginal[n])] \(n == 0 ? "start" : step.restart ? "restart" : "reload"): \(what)")
                if !step.drift.isEmpty { report.append("       then drift: \(step.drift.map(\.description).joined(separator: " | "))") }
            }
            report.append("shrunk failure: " + shrunk.description)
            if !shrunk.log.isEmpty {
                report.append("the daemon's last log lines:\n" + shrunk.log.split(separator: "\n").suffix(12).map { "    | " + $0 }.joined(separator: "\n"))
            }
            report.append("replay the shrunk step list (configurations and drift as generated, before their own shrinking): \(replayCommand(only: keptOriginal))")
        }
        report.append("replay the seed: \(replayCommand(only: settings.only))")
        if failures.count > 1 {
            report.append("\(failures.count) failures in all (WGK_MODEL_KEEP_GOING=1):")
            for (f, idx) in failures { report.append("  at original step \(idx.last ?? -1): kinds \(f.kinds.sorted()) — \(f.diff.first ?? "")") }
        }
        throw TestFailure(report.joined(separator: "\n"))
    }
}
