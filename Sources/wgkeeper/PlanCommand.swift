import ArgumentParser
import Config
import Daemon
import Datapath
import FoundationEssentials
import Netlink
import Reconciler

/// `wgkeeper plan`: read the kernel and print what `run` would change now; changes nothing.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Print the changes `run` would make now, one per line; exit 0 when none, 2 when some, 1 on error.")

    @OptionGroup var options: ConfigOptions

    @Flag(name: .long, help: "Print the plan as one JSON object.")
    var json = false

    func run() throws {
        let loaded: LoadedConfig
        switch ConfigLoader(root: options.root).load(path: options.config) {
        case .success(let value): loaded = value
        case .failure(let errors):
            printErrors(errors)
            throw ExitCode(1)
        }
        var observed: ObservedState
        let records: Records
        do {
            records = try RecordStore(directory: loaded.configuration.runtime.stateDir).load()
        } catch {
            printToStandardError("error: \(error)")
            throw ExitCode(1)
        }
        do {
            observed = try ObservedState.read(for: loaded.desired, rtnetlink: try RTNetlink(),
                                              wireGuard: wireGuardControl(), datapath: nil, records: records)
            if let datapath = loaded.desired.datapath {
                observed.datapath = try DatapathMapsAdapter.pinnedEntries(pinRoot: loaded.configuration.runtime.bpfPinRoot,
                                                                          tunnel: datapath.tunnel)
            }
        } catch {
            printToStandardError("error: cannot read the kernel state: \(error)")
            throw ExitCode(1)
        }
        let result = plan(loaded.desired, observed, records: records)
        let programs = datapathPrograms(loaded, records: records)
        if json {
            var report = PlanReport(result)
            report.datapath = programs
            print(try report.json())
        } else {
            for change in result.changes { print(change.description) }
            for line in programs { print(line) }
            for line in observed.readProblems.map({ "? not read: \($0)" }) + notes(result) { printToStandardError(line) }
        }
        if !result.isEmpty || !programs.isEmpty { throw ExitCode(2) }
    }

    /// What `run` does to the programs and pins themselves (the map entries are changes above):
    /// pins of tunnels no longer configured go, a configured datapath not loaded yet is loaded.
    /// Whether an existing attachment sits on the right device is checked by `run` only.
    private func datapathPrograms(_ loaded: LoadedConfig, records: Records) -> [String] {
        let pinRoot = records.pinRoot ?? loaded.configuration.runtime.bpfPinRoot
        let pinned = Datapath.pinnedTunnels(pinRoot: pinRoot)
        let wanted = loaded.desired.datapath
        var lines = pinned.filter { $0 != wanted?.tunnel }.map { "- datapath programs and pins of tunnel \($0)" }
        if let wanted, !pinned.contains(wanted.tunnel) {
            lines.append("+ datapath programs on \(wanted.lan) and \(wanted.tunnel), pinned under \(pinRoot)/\(wanted.tunnel)")
        }
        if let wanted { lines += policyLines(loaded, pinRoot: pinRoot, tunnel: wanted.tunnel) }
        return lines
    }

    /// The access policy `run` would install (its rules as compiled), or remove; nothing when
    /// the pinned maps already hold it.
    private func policyLines(_ loaded: LoadedConfig, pinRoot: String, tunnel: String) -> [String] {
        let wanted = loaded.desired.datapath?.policy.flatMap { $0.isInert ? nil : $0 }
        let installed: CompiledPolicy?
        do {
            installed = try Datapath.pinnedPolicy(pinRoot: pinRoot, tunnel: tunnel)
        } catch {
            printToStandardError("? not read: the pinned policy maps: \(error)")
            installed = nil
        }
        guard installed != wanted else { return [] }
        guard let wanted, let policy = loaded.desired.policy else {
            return ["- datapath access policy (everything allowed both ways)"]
        }
        let classes = Set(wanted.sources.values).count
        var lines = ["\(installed == nil ? "+" : "~") datapath access policy: client_to_lan \(wanted.clientToLAN.rawValue), lan_to_client \(wanted.lanToClient.rawValue), "
            + "\(wanted.ruleCount) rules, \(wanted.sources.count) client prefixes in \(classes) classes, \(wanted.entries.count) entries"]
        lines += policy.rules.enumerated().map { "    \($0.offset): \($0.element)" }
        return lines
    }

    /// Conflicts, safety violations and pending objects; pending ones grouped by reason.
    private func notes(_ result: Plan) -> [String] {
        var lines = result.conflicts.map { "! conflict: \($0)" } + result.violations.map { "! unsafe: \($0)" }
            + result.refused.map { "! refused: \($0)" }
        var reasons: [String] = []
        var byReason: [String: [Pending]] = [:]
        for item in result.pending {
            if byReason[item.reason] == nil { reasons.append(item.reason) }
            byReason[item.reason, default: []].append(item)
        }
        for reason in reasons {
            let items = byReason[reason]!
            if items.count <= 5 {
                lines += items.map { "? pending \($0)" }
            } else {
                lines.append("? pending \(items.count) objects (\(items.prefix(3).map(\.object).joined(separator: ", ")), …): \(reason)")
            }
        }
        return lines
    }
}

/// WireGuard's generic-netlink client; nil where the kernel has no WireGuard, so that peers
/// show as pending instead of failing the whole plan.
func wireGuardControl() -> WireGuardControl? { try? WireGuardNetlink() }

/// The `--json` shape of a plan.
struct PlanReport: Encodable {
    struct Item: Encodable {
        var action: String
        var kind: String
        var object: String
        var reason: String
        var fields: [String]
        var detail: String
        var line: String
    }
    struct Note: Encodable {
        var kind: String
        var object: String
        var reason: String
    }

    var changes: [Item]
    var pending: [Note]
    var conflicts: [Note]
    var refused: [Note]
    var violations: [String]
    /// Programs and pins loaded or removed (lines as the text output prints them).
    var datapath: [String] = []

    init(_ plan: Plan) {
        changes = plan.changes.map { change in
            var fields: [String] = []
            let reason: String
            switch change.reason {
            case .missing: reason = "missing"
            case .unexpected: reason = "unexpected"
            case .restore: reason = "restore"
            case .differs(let list): reason = "differs"; fields = list
            }
            return Item(action: change.action.rawValue, kind: change.kind.description, object: change.subject,
                        reason: reason, fields: fields, detail: change.detail, line: change.description)
        }
        pending = plan.pending.map { Note(kind: $0.kind.description, object: $0.object, reason: $0.reason) }
        conflicts = plan.conflicts.map { Note(kind: $0.kind.description, object: $0.desired, reason: "held by a foreign \($0.foreign)") }
        refused = plan.refused.map { Note(kind: $0.kind.description, object: $0.object, reason: $0.reason) }
        violations = plan.violations.map(\.description)
    }

    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
