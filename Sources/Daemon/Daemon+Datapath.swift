import Datapath
import FoundationEssentials
import Logging
import Netlink
import Reconciler

/// The pinned TC programs' map entries, as the reconciler's `DatapathMaps` seam sees them:
/// LAN→tunnel entries live in the clients map, tunnel→LAN entries in the LAN map, both
/// with the redirect action. Pass entries are the daemon's own business (`ensureDatapath`).
public final class DatapathMapsAdapter: DatapathMaps {
    let datapath: Datapath
    let tunnel: String
    private(set) var writes = 0

    init(_ datapath: Datapath, tunnel: String) {
        self.datapath = datapath
        self.tunnel = tunnel
    }

    static func map(_ direction: DatapathDirection) -> PrefixMap { direction == .lanToTunnel ? .clients : .lan }

    public func entries() throws -> Set<DatapathEntry> {
        try Self.redirects { try datapath.entries(in: Self.map($0)) }
    }

    /// The LAN map as `ensureDatapath` read it (for the pass entries), with the read's digest
    /// when nothing was written to the map after it.
    struct LANRead {
        var entries: [IPPrefix: PrefixAction]
        var digest: ReadDigest?
    }

    enum Read {
        /// Both maps hold the bytes that `previous` was made of; `byCount`: the client map was
        /// taken as unchanged from its entry count alone, not read.
        case unchanged(byCount: Bool)
        /// Both maps' redirect entries, and the digest of the reads (nil: not to be compared with).
        case read(Set<DatapathEntry>, ReadDigest?)
    }

    /// The client map's last full read: the kernel's memory figure for it just before, how many
    /// entries the read found, and its digest.
    private var lastClients: (footprint: UInt64, count: Int, digest: ReadDigest)?
    /// Whether the client map's memory figure moves with its entry count here (Linux 6.4 on);
    /// turned off for good if two full reads ever contradict it.
    private(set) var footprintCountsEntries = Datapath.footprintCountsEntries

    /// Both maps' redirect entries, unless their bytes are the ones `previous` was made of (the
    /// proxy poll's read, where the client map holds an entry per client). Each map is read once
    /// per poll: the LAN map as `lan` when the caller has just read it (`ensureDatapath`).
    ///
    /// `counting` (the proxy poll's read, not a resync's): the client map, the big one (an entry
    /// per client, walked from the trie's root for each), is not read when the kernel's count of
    /// its entries has not moved since its last full read; its bytes are then taken to be those
    /// of that read. An entry added or removed by someone else is seen by the next poll; one
    /// overwritten in place (the same count) by the next full read (a resync's). Reading all
    /// 10 000 entries every 2 s was most of an idle gateway's CPU time.
    func read(lan: LANRead?, unless previous: ReadDigest?, counting: Bool = false) throws -> Read {
        var clients: PrefixMapRead?
        var clientsDigest: ReadDigest
        if counting, footprintCountsEntries, previous != nil, let last = lastClients,
           let now = datapath.footprint(.clients), now == last.footprint {
            clientsDigest = last.digest
        } else {
            // The figure before the read: a change between the two is seen by the next poll.
            let footprint = datapath.footprint(.clients)
            let read = try datapath.read(.clients)
            if let footprint {
                if let last = lastClients, last.count != read.count, last.footprint == footprint {
                    footprintCountsEntries = false
                }
                lastClients = (footprint, read.count, read.digest)
            } else {
                lastClients = nil
            }
            clients = read
            clientsDigest = read.digest
        }
        let lanEntries: [IPPrefix: PrefixAction], lanDigest: ReadDigest?
        if let lan {
            (lanEntries, lanDigest) = (lan.entries, lan.digest)
        } else {
            let read = try datapath.read(.lan)
            (lanEntries, lanDigest) = (try read.entries(), read.digest)
        }
        var digest: ReadDigest?
        if let lanDigest {
            var builder = ReadDigest.Builder()
            builder.combine(clientsDigest)
            builder.combine(lanDigest)
            digest = builder.finalize()
        }
        if let digest, digest == previous { return .unchanged(byCount: clients == nil) }
        // The LAN map moved: both maps' entries are needed, the client map's read now.
        guard let clients else { return try read(lan: lan, unless: previous) }
        let entries = try Self.redirects { $0 == .tunnelToLAN ? lanEntries : try clients.entries() }
        return .read(entries, digest)
    }

    /// The redirect entries of both maps, as the reconciler sees them.
    static func redirects(_ read: (DatapathDirection) throws -> [IPPrefix: PrefixAction]) rethrows -> Set<DatapathEntry> {
        var found: Set<DatapathEntry> = []
        for direction in [DatapathDirection.lanToTunnel, .tunnelToLAN] {
            for (prefix, action) in try read(direction) where action == .redirect {
                found.insert(DatapathEntry(direction: direction, prefix: prefix))
            }
        }
        return found
    }

    /// What `wgkeeper plan` sees: the pinned maps of an earlier run, or none (empty: `run`
    /// creates them and writes every entry).
    public static func pinnedEntries(pinRoot: String, tunnel: String) throws -> Set<DatapathEntry> {
        try redirects { try Datapath.pinnedEntries(pinRoot: pinRoot, tunnel: tunnel, in: map($0)) ?? [:] }
    }

    public func insert(_ entry: DatapathEntry) throws {
        writes += 1
        lastClients = nil
        try datapath.set(.redirect, for: entry.prefix, in: Self.map(entry.direction))
    }

    public func insert(_ entries: [DatapathEntry]) -> [DatapathEntry: String] {
        var failed: [DatapathEntry: String] = [:]
        for direction in [DatapathDirection.lanToTunnel, .tunnelToLAN] {
            let these = entries.filter { $0.direction == direction }
            guard !these.isEmpty else { continue }
            writes += these.count
            lastClients = nil
            let errors = datapath.set(.redirect, for: these.map(\.prefix), in: Self.map(direction))
            for entry in these { if let error = errors[entry.prefix] { failed[entry] = "\(error)" } }
        }
        return failed
    }

    public func remove(_ entry: DatapathEntry) throws {
        writes += 1
        lastClients = nil
        try datapath.remove(entry.prefix, from: Self.map(entry.direction))
    }
}

extension Daemon {
    /// The access policy: what the maps hold is read back when the desired policy changed or
    /// the select word is not the one last seen (a restart, someone else's write), and a whole
    /// new generation is installed only when it differs, so a restart with the same policy
    /// changes nothing and a reload or a repair swaps atomically.
    func ensurePolicy(_ datapath: Datapath, _ desired: CompiledPolicy?) throws {
        let wanted = desired.flatMap { $0.isInert ? nil : $0 }
        let word = try datapath.policyWord()
        if !policyReadBackDue, let installed = installedPolicy, installed.word == word, installed.policy == wanted { return }
        // Installed before and wanted unchanged: what the maps hold now was changed by someone else.
        let repair = installedPolicy.map { $0.policy == wanted } ?? false
        if try datapath.installedPolicy() != wanted {
            let swap = try datapath.install(policy: wanted)
            datapathWrites += 1
            changesApplied += 1  // a reload that changed only the policy says so
            let what = wanted.map { "access policy (generation \(swap.generation): \($0.ruleCount) rules, \(swap.sources) client prefixes, \(swap.entries) entries)" }
                ?? "no access policy (everything allowed both ways)"
            if repair {
                logger.warning("datapath: the policy maps or select word were changed behind wgkeeper's back; reinstalled \(what)")
            } else {
                logger.info("datapath: installed \(what)")
            }
        }
        installedPolicy = (wanted, try datapath.policyWord())
        policyReadBackDue = false
    }

    /// Loads (or adopts) the programs, attaches them to both devices, and keeps the pass
    /// entries for the gateway's own addresses inside the LAN prefix.
    /// Attaching is idempotent; it runs at start, on link events and every `proxy_poll`.
    /// Returns the LAN map as it holds now (read here for the pass entries, so the poll does
    /// not read it again); nil when it was not read.
    @discardableResult
    func ensureDatapath() -> DatapathMapsAdapter.LANRead? {
        removeUnwantedDatapath()
        guard let wanted = desired.datapath else {
            neighbourDiscovery = NeighbourDiscoveryState()
            synchronizeSolicitedNodeGroups(lan: nil)
            return nil
        }
        guard let lan = link(named: wanted.lan),
              let tunnel = link(named: wanted.tunnel)
        else {
            neighbourDiscovery = NeighbourDiscoveryState()
            synchronizeSolicitedNodeGroups(lan: nil)
            let missing = [wanted.lan, wanted.tunnel].filter { link(named: $0) == nil }
            datapathProblem = "device \(missing.joined(separator: " and ")) missing"
            // A fresh start would attach nothing: no program stays on either device meanwhile (the
            // tunnel's would still redirect to the former LAN's index). The maps stay pinned.
            do {
                let stale = try Datapath.detachLinks(pinRoot: runtime.bpfPinRoot, tunnel: wanted.tunnel, wanted: [:])
                for hook in stale { datapathWrites += 1; logger.info("datapath: detached \(hook) (its device is missing)") }
            } catch {
                logger.error("datapath: cannot detach what the configuration no longer wants", metadata: ["error": "\(error)"])
            }
            return nil
        }
        // Whatever happens to the maps, the groups follow the LAN (retried every proxy_poll).
        if desired.datapath?.neighbourDiscovery != nil { neighbourDiscovery.answered = answeredAddresses(lan: lan, answering: true) }
        defer { synchronizeSolicitedNodeGroups(lan: lan) }
        do {
            // Pins removed behind our back (rm -r, another instance): load and pin again.
            if let current = datapathMaps, !FileManager.default.fileExists(atPath: current.datapath.pinDirectory) {
                logger.warning("datapath: pins under \(current.datapath.pinDirectory) disappeared; loading again")
                datapathMaps = nil
            }
            if datapathMaps == nil || datapathMaps!.tunnel != wanted.tunnel {
                let datapath = try Datapath(pinRoot: runtime.bpfPinRoot, tunnel: wanted.tunnel)
                datapathMaps = DatapathMapsAdapter(datapath, tunnel: wanted.tunnel)
                if !datapath.recreatedMaps.isEmpty {
                    logger.warning("datapath maps recreated empty (their definition changed, or that of another of the policy's maps, which go together)", metadata: ["maps": "\(datapath.recreatedMaps)"])
                }
            }
            let datapath = datapathMaps!.datapath
            // The policy goes into the programs' maps before they are attached: programs loaded
            // with a map created afresh (its pin removed, its definition changed by an upgrade)
            // would otherwise allow everything until it is filled. Should this fail, nothing
            // new is attached, and programs already attached keep the policy they have.
            try ensurePolicy(datapath, wanted.policy)
            for change in try datapath.attach(lanIndex: lan.index, tunnelIndex: tunnel.index) {
                datapathWrites += 1
                logger.info("datapath: \(change)")
                if case .createdQdisc(let index) = change, let name = kernel.links[index]?.name {
                    records.createdQdiscs.insert(name)
                    records.interfaceIndexes[name] = index
                    saveRecords()
                }
            }
            // The gateway's own addresses inside a LAN prefix stay with the stack: a client's
            // packet for the gateway itself must not be pushed out onto the LAN. (Clients' own
            // addresses inside the LAN prefix are kept off the LAN by the program itself.)
            let lanPrefixes = wanted.entries.filter { $0.direction == .tunnelToLAN }.map(\.prefix)
            let pass = Set(kernel.addressList.map { IPPrefix.host($0.prefix.address) }.filter { own in
                lanPrefixes.contains { $0.contains(own) }
            })
            let read = try datapath.read(.lan)
            // The read's digest vouches for what it read, not for what is written after it.
            var current = DatapathMapsAdapter.LANRead(entries: try read.entries(), digest: read.digest)
            for prefix in pass where current.entries[prefix] != .pass {
                try datapath.set(.pass, for: prefix, in: .lan)
                current.entries[prefix] = .pass
                current.digest = nil
                datapathWrites += 1
            }
            for (prefix, action) in current.entries where action == .pass && !pass.contains(prefix) {
                try datapath.remove(prefix, from: .lan)
                current.entries[prefix] = nil
                current.digest = nil
                datapathWrites += 1
            }
            let (icmp, lanLine, tunnelLine) = ICMPSources.settings(wanted.icmp, lan: lan, tunnel: tunnel,
                                                                   addresses: kernel.addressList)
            if try datapath.configure(icmp) {
                datapathWrites += 1
                logger.info("datapath: \(icmp)")
                if icmp.lanSource == nil || icmp.tunnelSource == nil || [lanLine, tunnelLine].contains(where: { $0.contains(ICMPSources.notHeld) }) {
                    logger.warning("datapath: ICMPv6 errors to the LAN \(lanLine); to the clients \(tunnelLine)")
                }
            }
            datapathICMP = ["lan": lanLine, "tunnel": tunnelLine]
            try synchronizeNeighbourDiscovery(datapath, lan: lan)
            datapathProblem = nil
            return current
        } catch {
            if datapathProblem != "\(error)" { logger.error("datapath: \(error)") }
            datapathProblem = "\(error)"
            return nil
        }
    }

    var datapathStatus: StatusReport.Datapath? {
        guard desired.datapath != nil else { return nil }
        guard let datapath = datapathMaps?.datapath else {
            return StatusReport.Datapath(attachMode: "not loaded: \(datapathProblem ?? "pending")", counters: [:])
        }
        var counters: [String: UInt64] = [:]
        if let c = try? datapath.counters() { counters = c.byName }
        var mode = datapath.mode.description
        if let datapathProblem { mode += " (problem: \(datapathProblem))" }
        let programs = Dictionary(uniqueKeysWithValues: datapath.programIDs.map { ($0.key.rawValue, $0.value) })
        let neighbourDiscovery = neighbourDiscoveryStatus
        let joined = solicitedNodeGroups.memberships
        // Groups are joined only while the program answers address resolution, not probes alone.
        let resolving = desired.datapath?.neighbourDiscovery != nil || self.neighbourDiscovery.handover != nil
        let groups = !resolving ? nil
            : ["joined": joined.count, "not_joined": solicitedNodeFailures.keys.filter { !joined.contains($0) }.count]
        return StatusReport.Datapath(attachMode: mode, counters: counters, programs: programs, icmpErrors: datapathICMP,
                                     neighbourDiscovery: neighbourDiscovery, solicitedNodeGroups: groups,
                                     policy: policyStatus(datapath))
    }

    /// The desired policy with the live generation's counters; nil without a policy section.
    func policyStatus(_ datapath: Datapath) -> StatusReport.Policy? {
        guard let policy = desired.policy else { return nil }
        let counters = (try? datapath.policyCounters(ruleCount: policy.rules.count)) ?? PolicyCounters()
        let flows = policy.lanToClient == .replies ? try? datapath.policyFlows() : nil
        return StatusReport.Policy(
            clientToLan: policy.clientToLAN.rawValue, lanToClient: policy.lanToClient.rawValue,
            deniedToLan: counters.clientToLANDenied, deniedToClients: counters.lanToClientDenied,
            rules: policy.rules.enumerated().map { index, rule in
                StatusReport.Policy.Rule(rule: rule.description, packets: index < counters.rules.count ? counters.rules[index] : 0)
            },
            replyFlows: flows.map { .init(remembered: $0.remembered, recent: $0.recent, capacity: $0.capacity, timeoutSeconds: $0.timeoutSeconds) })
    }

    /// Attachments and pins are keyed by interface and tunnel: whatever the configuration no
    /// longer wants goes (another tunnel's pin directory, our filter on a former LAN, all of it
    /// with `redirect: false`). Filters are looked for on every interface only when the wanted
    /// pair changed or after a full read, not at every poll.
    func removeUnwantedDatapath() {
        let wanted = desired.datapath
        for tunnel in Datapath.pinnedTunnels(pinRoot: runtime.bpfPinRoot) where tunnel != wanted?.tunnel {
            if datapathMaps?.tunnel == tunnel { datapathMaps = nil }
            do {
                try Datapath.removePins(pinRoot: runtime.bpfPinRoot, tunnel: tunnel)
                datapathWrites += 1
                logger.info("datapath: detached and unpinned tunnel \(tunnel) (no longer configured)")
            } catch {
                logger.error("datapath: cannot remove the pins of tunnel \(tunnel)", metadata: ["error": "\(error)"])
            }
        }
        if wanted == nil, datapathMaps != nil {
            datapathMaps = nil
            kernel.datapath = nil
        }
        // Our filters stay only on a complete pair: with either device missing nothing is attached.
        let pair = [wanted?.lan, wanted?.tunnel].compactMap { $0.flatMap { link(named: $0)?.index } }
        let keep = pair.count == 2 ? pair : []
        guard filterScanFor != keep else { return }
        do {
            let others = kernel.links.keys.filter { !keep.contains($0) }.sorted()
            for index in try Datapath.removeFilters(from: others) {
                datapathWrites += 1
                logger.info("datapath: removed the filter from \(kernel.links[index]?.name ?? "index \(index)") (no longer configured)")
            }
            try removeCreatedQdiscs(except: keep)
            filterScanFor = keep
        } catch {
            logger.error("datapath: cannot remove filters no longer wanted", metadata: ["error": "\(error)"])
        }
    }

    /// Cleanup: every tunnel's pins under the pin root and our filter on every interface.
    func uninstallDatapath(pinRoot: String) -> Bool {
        datapathMaps = nil
        var ok = true
        for tunnel in Datapath.pinnedTunnels(pinRoot: pinRoot) {
            do {
                try Datapath.removePins(pinRoot: pinRoot, tunnel: tunnel)
                logger.info("cleanup detached and unpinned the datapath of \(tunnel)")
            } catch {
                ok = false
                logger.error("cleanup of the datapath of \(tunnel) failed", metadata: ["error": "\(error)"])
            }
        }
        do {
            for index in try Datapath.removeFilters(from: kernel.links.keys.sorted()) {
                logger.info("cleanup removed the datapath filter from \(kernel.links[index]?.name ?? "index \(index)")")
            }
            try removeCreatedQdiscs(except: [])
        } catch {
            ok = false
            logger.error("cleanup of datapath filters failed", metadata: ["error": "\(error)"])
        }
        return ok
    }

    /// The clsact qdiscs wgkeeper created (kernels without TCX) on devices it no longer attaches
    /// to go with its filter, so the device is as it was before.
    func removeCreatedQdiscs(except keep: [Int32]) throws {
        for name in records.createdQdiscs.sorted() {
            let index = link(named: name)?.index
            if let index, keep.contains(index) { continue }
            if let index {
                try Datapath.removeQdisc(interfaceIndex: index)
                datapathWrites += 1
                logger.info("datapath: removed the clsact qdisc wgkeeper created on \(name)")
            }
            records.createdQdiscs.remove(name)
            saveRecords()
        }
    }
}
