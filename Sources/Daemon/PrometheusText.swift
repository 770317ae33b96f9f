/// `wgkeeper status --format prometheus`: the status reply in Prometheus's text exposition
/// format (0.0.4), for node-exporter's textfile collector. The client renders it from the JSON
/// reply, so the daemon serves nothing new. Peers are labelled with their device and configured
/// name, never a key: a peer the configuration does not name is only counted.
public enum PrometheusText {
    /// Every family of `report`; `now` (seconds since the epoch) dates the handshake ages.
    public static func render(_ report: StatusReport, now: Double) -> String {
        var out = Exposition()
        out.family("wgkeeper_up", .gauge, "Whether the daemon answered on its status socket.") { $0.sample(1) }
        out.family("wgkeeper_build_info", .gauge, "The running daemon's version, as a label.") {
            $0.sample(["version": report.version], 1)
        }
        out.family("wgkeeper_config_generation", .gauge, "Configuration generation: 1 at start, one more for each reload that took effect.") {
            $0.sample(report.configGeneration)
        }
        out.family("wgkeeper_config_last_reload_refused", .gauge, "1 while the last reload was refused (the previous generation is enforced), else 0.") {
            $0.sample(report.configErrors.isEmpty ? 0 : 1)
        }
        out.family("wgkeeper_reloads_total", .counter, "Reloads performed (SIGHUP and status socket requests, coalesced).") {
            $0.sample(report.reloads)
        }
        if let failures = report.reloadFailures {
            out.family("wgkeeper_reload_failures_total", .counter, "Reloads refused: an invalid configuration or a changed claim.") {
                $0.sample(failures)
            }
        }

        out.family("wgkeeper_objects", .gauge, "Desired objects by kind and state; each is counted once, in_sync only when nothing else holds.") { f in
            for kind in kinds(report.kinds.keys) {
                let c = report.kinds[kind] ?? .init()
                for (state, value) in [("in_sync", c.inSync), ("pending", c.pending), ("failed", c.failed), ("conflict", c.conflict), ("refused", c.refused)] {
                    f.sample(["kind": kind, "state": state], value)
                }
            }
        }
        out.family("wgkeeper_reconciles_total", .counter, "Reconciles run: plan against the cached kernel state, then apply.") {
            $0.sample(report.reconciles)
        }
        if let h = report.reconcileDuration {
            out.family("wgkeeper_reconcile_duration_seconds", .histogram, "How long each reconcile took, reading the kernel and applying included.") { f in
                for (bound, count) in zip(h.upperBoundsSeconds, h.cumulativeCounts) {
                    f.sample("_bucket", ["le": number(bound)], count)
                }
                f.sample("_bucket", ["le": "+Inf"], h.count)
                f.sample("_sum", [:], number(h.sumSeconds))
                f.sample("_count", [:], h.count)
            }
        }
        if let last = report.lastReconcile {
            out.family("wgkeeper_last_reconcile_timestamp_seconds", .gauge, "When the last reconcile ended, in seconds since the epoch.") {
                $0.sample([:], number(last))
            }
        }
        out.family("wgkeeper_netlink_writes_total", .counter, "Writes to the kernel: netlink requests, sysctl writes and BPF map updates.") {
            $0.sample(report.netlinkWrites)
        }
        out.family("wgkeeper_changes_applied_total", .counter, "Changes the kernel accepted, by kind.") { f in
            if let byKind = report.changesAppliedByKind {
                for kind in kinds(byKind.keys) { f.sample(["kind": kind], byKind[kind] ?? 0) }
            } else {
                f.sample(report.changesApplied)
            }
        }
        if let repairs = report.repairs {
            out.family("wgkeeper_repairs_total", .counter, "Changes that put back an object that had been in sync (drift repaired), by kind.") { f in
                for kind in kinds(repairs.keys) { f.sample(["kind": kind], repairs[kind] ?? 0) }
            }
        }
        out.family("wgkeeper_resyncs_total", .counter, "Full re-reads of the kernel state on the resync timer.") { $0.sample(report.resyncs) }
        out.family("wgkeeper_event_overflows_total", .counter, "Kernel event queue overflows (ENOBUFS), each followed by a full re-read.") {
            $0.sample(report.overflows)
        }
        out.family("wgkeeper_safety_check_ok", .gauge, "1 while the safety check passes, 0 while it fails.") { f in
            for check in report.safety { f.sample(["check": check.name], check.ok ? 1 : 0) }
        }

        out.family("wgkeeper_peers", .gauge, "WireGuard peers on each managed device; configured=\"false\": peers the configuration does not name.") { f in
            for device in Set(report.peers.map(\.device)).sorted() {
                let named = report.peers.filter { $0.device == device && $0.name != nil }.count
                let all = report.peers.filter { $0.device == device }.count
                f.sample(["device": device, "configured": "true"], named)
                f.sample(["device": device, "configured": "false"], all - named)
            }
        }
        let named = report.peers.filter { $0.name != nil }.sorted { ($0.device, $0.name!) < ($1.device, $1.name!) }
        out.family("wgkeeper_peer_latest_handshake_age_seconds", .gauge, "Seconds since the peer's latest handshake (+Inf: none yet).") { f in
            for p in named {
                f.sample(["device": p.device, "peer": p.name!], number(p.latestHandshake.map { max(0, now - $0) } ?? .infinity))
            }
        }
        out.family("wgkeeper_peer_receive_bytes_total", .counter, "Bytes received from the peer, as WireGuard counts them.") { f in
            for p in named { f.sample(["device": p.device, "peer": p.name!], String(p.receivedBytes)) }
        }
        out.family("wgkeeper_peer_transmit_bytes_total", .counter, "Bytes sent to the peer, as WireGuard counts them.") { f in
            for p in named { f.sample(["device": p.device, "peer": p.name!], String(p.transmittedBytes)) }
        }
        out.family("wgkeeper_endpoint_names", .gauge, "Host-name endpoints by lookup state.") { f in
            for state in ["resolved", "resolving", "unresolved"] {
                f.sample(["state": state], report.endpoints.filter { $0.state == state }.count)
            }
        }

        if let datapath = report.datapath {
            let mode = datapath.attachMode.prefix { $0 != " " && $0 != ":" }
            let loaded = !datapath.attachMode.hasPrefix("not loaded")
            out.family("wgkeeper_datapath_loaded", .gauge, "1 while the TC redirect programs are loaded and attached.") { $0.sample(loaded ? 1 : 0) }
            if loaded {
                out.family("wgkeeper_datapath_info", .gauge, "How the TC programs are attached (tcx or clsact), as a label.") {
                    $0.sample(["attach_mode": String(mode)], 1)
                }
            }
            out.family("wgkeeper_datapath_packets_total", .counter, "The TC programs' counters, summed over every CPU, by counter.") { f in
                for (name, value) in datapath.counters.sorted(by: { $0.key < $1.key }) { f.sample(["counter": name], String(value)) }
            }
            if let groups = datapath.solicitedNodeGroups {
                out.family("wgkeeper_datapath_solicited_node_groups", .gauge,
                           "The clients' solicited-node groups on the LAN while the LAN program answers them: joined, or not joined (retried).") { f in
                    for state in ["joined", "not_joined"] { f.sample(["state": state], groups[state] ?? 0) }
                }
            }
            if let policy = datapath.policy {
                out.family("wgkeeper_policy_packets_total", .counter,
                           "Packets the access policy counted: denied by each direction's default, allowed by each rule (index and text).") { f in
                    f.sample(["verdict": "denied", "direction": "client_to_lan"], String(policy.deniedToLan))
                    f.sample(["verdict": "denied", "direction": "lan_to_client"], String(policy.deniedToClients))
                    for (index, rule) in policy.rules.enumerated() {
                        f.sample(["verdict": "allowed", "rule": String(index), "description": rule.rule], String(rule.packets))
                    }
                }
                if let flows = policy.replyFlows {
                    out.family("wgkeeper_policy_reply_flows", .gauge,
                               "lan_to_client: replies: the clients' UDP and echo flows remembered, and those seen within the timeout.") { f in
                        f.sample(["state": "remembered"], flows.remembered)
                        f.sample(["state": "recent"], flows.recent)
                    }
                    out.family("wgkeeper_policy_reply_flows_capacity", .gauge, "Flows the replies table holds at most.") { $0.sample(flows.capacity) }
                }
            }
        }
        out.family("wgkeeper_log_lines_dropped_total", .counter, "Log lines dropped because standard error or the journal would have blocked.") {
            $0.sample(report.logLinesDropped)
        }
        out.family("wgkeeper_status_clients", .gauge, "Clients connected to the status socket.") { $0.sample(report.statusSocket.clients) }
        out.family("wgkeeper_status_clients_refused_total", .counter, "Status socket connections refused by the peer-credential check.") {
            $0.sample(report.statusSocket.refused)
        }
        out.family("wgkeeper_status_clients_evicted_total", .counter, "Idle status socket clients closed to make room for new ones.") {
            $0.sample(report.statusSocket.evicted)
        }
        return out.text
    }

    /// What a collection says when the daemon does not answer: `wgkeeper_up 0` and nothing else.
    public static func down() -> String {
        var out = Exposition()
        out.family("wgkeeper_up", .gauge, "Whether the daemon answered on its status socket.") { $0.sample(0) }
        return out.text
    }

    /// The kinds in plan order, then any the daemon adds later, by name.
    static func kinds(_ names: some Collection<String>) -> [String] {
        let order = ["link", "sysctl", "peer", "route", "proxy", "datapath"]
        return order.filter(names.contains) + names.filter { !order.contains($0) }.sorted()
    }

    /// A sample value: integers exactly, `+Inf`/`-Inf`/`NaN` as the format spells them.
    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    /// A label value between double quotes: backslash, double quote and line feed escaped.
    static func escapeLabel(_ value: String) -> String { escape(value, quote: true) }

    /// HELP text: backslash and line feed escaped.
    static func escapeHelp(_ text: String) -> String { escape(text, quote: false) }

    private static func escape(_ text: String, quote: Bool) -> String {
        var out = ""
        for c in text.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\"" where quote: out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

/// Families in the order written, each HELP and TYPE once, then its samples; a family without
/// samples is left out.
struct Exposition {
    enum Kind: String { case gauge, counter, histogram }

    struct Family {
        fileprivate var lines: [String] = []
        let name: String

        mutating func sample(_ value: Int) { sample("", [:], String(value)) }
        mutating func sample(_ labels: KeyValuePairs<String, String>, _ value: Int) { sample("", labels, String(value)) }
        mutating func sample(_ labels: KeyValuePairs<String, String>, _ value: String) { sample("", labels, value) }
        mutating func sample(_ suffix: String, _ labels: KeyValuePairs<String, String>, _ value: Int) { sample(suffix, labels, String(value)) }

        mutating func sample(_ suffix: String, _ labels: KeyValuePairs<String, String>, _ value: String) {
            let set = labels.map { "\($0.key)=\"\(PrometheusText.escapeLabel($0.value))\"" }.joined(separator: ",")
            lines.append("\(name)\(suffix)\(set.isEmpty ? "" : "{\(set)}") \(value)")
        }
    }

    private(set) var text = ""

    mutating func family(_ name: String, _ kind: Kind, _ help: String, _ fill: (inout Family) -> Void) {
        var family = Family(name: name)
        fill(&family)
        guard !family.lines.isEmpty else { return }
        text += "# HELP \(name) \(PrometheusText.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
        text += family.lines.map { $0 + "\n" }.joined()
    }
}
