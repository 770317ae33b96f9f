import CBPF
import Glibc
import Netlink
import Reconciler

/// The policy's counters of the live generation, summed over every CPU.
public struct PolicyCounters: Equatable, Sendable {
    /// Client packets to the LAN that no rule allowed (`client_to_lan: deny`).
    public var clientToLANDenied: UInt64 = 0
    /// LAN packets to a client denied (`lan_to_client: deny`, or `replies` with no rule).
    public var lanToClientDenied: UInt64 = 0
    /// Packets each rule allowed, in rule order (only counted where a default denies).
    public var rules: [UInt64] = []

    public init() {}
}

/// What one `install(policy:)` did.
public struct PolicySwap: Equatable, Sendable {
    /// The map set the policy now lives in.
    public var generation: UInt32
    public var sources: Int
    public var entries: Int
}

extension Datapath {
    static let policySlots = CompiledPolicy.maximumRules + 2
    /// Time the programs get to finish with a set that was switched away from before it is
    /// rewritten: a program runs for microseconds inside an RCU read section.
    static let policyGrace: Duration = .milliseconds(50)

    /// The `policy_select` word: live generation and defaults (`CompiledPolicy.selectWord`).
    public func policyWord() throws -> UInt32 {
        var key: UInt32 = 0
        var value: UInt32 = 0
        try check(bpf_map_lookup_elem(map("policy_select").raw, &key, &value), "read map", "policy_select")
        return value
    }

    func writePolicyWord(_ word: UInt32) throws {
        var key: UInt32 = 0
        var value = word
        try check(bpf_map_update_elem(map("policy_select").raw, &key, &value, UInt64(BPF_ANY)), "write map", "policy_select")
    }

    /// Installs `policy` (nil: everything allowed, today's behaviour) without a moment in which
    /// neither the old nor the new one holds: the set not in use is emptied and filled, its
    /// counters zeroed, then one 4-byte store of the select word makes it live. A program reads
    /// the word once per packet, so each packet meets one policy whole.
    @discardableResult
    public func install(policy: CompiledPolicy?) throws -> PolicySwap {
        let current = try policyWord()
        guard let policy, !policy.isInert else {
            // Allow-all needs no set: keep the live one (and its counters), clear the defaults.
            try writePolicyWord(current & CompiledPolicy.generationBit)
            try forgetFragments()
            return PolicySwap(generation: current & 1, sources: 0, entries: 0)
        }
        let next = (current & 1) ^ 1
        if let last = lastPolicySwap {
            let waited = ContinuousClock.now - last
            if waited < Self.policyGrace { sleepFor(Self.policyGrace - waited) }
        }
        let tables: PolicyTables
        do { tables = try PolicyTables(policy) } catch {
            throw DatapathError("lay out", "policy tables", code: E2BIG, detail: "\(error)")
        }
        let lengths = tables.lengths
        guard lengths.count <= CompiledPolicy.maximumLengths else {
            throw DatapathError("write map", "policy_info", code: E2BIG, detail: "\(lengths.count) destination prefix lengths")
        }
        let sourcePrefixes = map("policy_source_prefixes_\(next)").raw
        try Self.clear(sourcePrefixes, keySize: 20, "policy_source_prefixes_\(next)")
        try zeroPolicyCounters(generation: next, slots: policy.ruleCount + 2)
        // Each table holds both generations, generation g from g × its size.
        try writeArray("policy_sources", from: Int(next) * PolicyTables.sourceSlots, tables.sources, size: PolicyTables.sourceSize)
        try writeArray("policy_rules", from: Int(next) * PolicyTables.ruleSlots, tables.rules, size: PolicyTables.ruleSize)
        try writeArray("policy_items", from: Int(next) * PolicyTables.itemSlots, tables.items, size: PolicyTables.itemSize)
        var shorter = false
        for (prefix, policyClass) in policy.sources where !prefix.isHost {
            shorter = true
            var value = policyClass
            var key = try Self.key(prefix, .clients)
            try check(bpf_map_update_elem(sourcePrefixes, &key, &value, UInt64(BPF_ANY)), "write \(prefix) to map", "policy_source_prefixes_\(next)")
        }
        // struct policy_info: flags, length count, the lengths longest first, rule count, seed,
        // the lengths class 0 has entries at, padding, the masks.
        var info = PolicyTables.le32(shorter ? 1 : 0) + PolicyTables.le32(UInt32(lengths.count))
            + lengths + [UInt8](repeating: 0, count: CompiledPolicy.maximumLengths - lengths.count)
            + PolicyTables.le32(UInt32(policy.ruleCount)) + PolicyTables.le32(tables.seed) + PolicyTables.le32(tables.defaultLengths)
            + PolicyTables.le32(0) + tables.lengthMasks
        var infoKey = next
        try check(bpf_map_update_elem(map("policy_info").raw, &infoKey, &info, UInt64(BPF_ANY)), "write map", "policy_info")
        try writePolicyWord(policy.selectWord(generation: next, seed: tables.seed))
        try forgetFragments()
        lastPolicySwap = .now
        return PolicySwap(generation: next, sources: policy.sources.count, entries: policy.entries.count)
    }

    /// After a switch: the fragments the last policy let start are judged by the new one (the
    /// programs already ignore entries of the other generation; emptied, none is left for when
    /// that generation is live again). An entry a packet wrote while the word changed carries
    /// the old generation.
    private func forgetFragments() throws {
        try Self.clear(map("policy_fragments").raw, keySize: 36, "policy_fragments")
    }

    /// The live policy as the maps hold it (nil: none, both defaults allow): compared with
    /// the desired one, it tells a restart that nothing needs installing and a periodic check
    /// that nobody changed the maps.
    public func installedPolicy() throws -> CompiledPolicy? {
        try Self.readPolicy { self.map($0).raw }
    }

    /// The policy in force as a previous run pinned it, read without loading anything (for
    /// `wgkeeper plan`); nil when there is none or nothing is pinned for `tunnel`.
    public static func pinnedPolicy(pinRoot: String, tunnel: String) throws -> CompiledPolicy? {
        let directory = pinDirectory(pinRoot: pinRoot, tunnel: tunnel)
        var open: [String: Descriptor] = [:]
        for name in ["policy_select", "policy_info", "policy_sources", "policy_rules", "policy_items", "policy_source_prefixes_0", "policy_source_prefixes_1"] {
            guard let fd = try Descriptor.pinned("\(directory)/\(name)") else { return nil }
            open[name] = fd
        }
        return try readPolicy { open[$0]!.raw }
    }

    static func readPolicy(_ map: (String) throws -> Int32) throws -> CompiledPolicy? {
        var selectKey: UInt32 = 0
        var word: UInt32 = 0
        try check(bpf_map_lookup_elem(try map("policy_select"), &selectKey, &word), "read map", "policy_select")
        guard word & ~CompiledPolicy.generationBit != 0 else { return nil }
        // Bits no policy sets, or the fourth LAN mode (which the programs take for "neither
        // allow, deny nor replies": the rules alone, no opening denied).
        let known = CompiledPolicy.generationBit | CompiledPolicy.clientDenyBit | CompiledPolicy.lanMask | CompiledPolicy.seedMask
        let lan: DesiredPolicy.LANToClient
        switch (word & CompiledPolicy.lanMask) >> CompiledPolicy.lanShift {
        case 0: lan = .allow
        case 1: lan = .deny
        case 2: lan = .replies
        default: return CompiledPolicy.inconsistent
        }
        guard word & ~known == 0 else { return CompiledPolicy.inconsistent }
        let generation = word & 1
        var infoKey = generation
        var info = [UInt8](repeating: 0, count: PolicyTables.infoSize)
        try check(bpf_map_lookup_elem(try map("policy_info"), &infoKey, &info), "read map", "policy_info")
        // The programs hash clients with the word's seed, entries with the same one.
        guard Int(PolicyTables.u32(info, 4)) <= CompiledPolicy.maximumLengths,
              PolicyTables.u32(info, 20) == (word & CompiledPolicy.seedMask) >> CompiledPolicy.seedShift else { return CompiledPolicy.inconsistent }
        var policy = CompiledPolicy(clientToLAN: word & CompiledPolicy.clientDenyBit != 0 ? .deny : .allow, lanToClient: lan,
                                    sources: [:], entries: [:], ruleCount: Int(PolicyTables.u32(info, 16)))
        let lengthCount = min(Int(PolicyTables.u32(info, 4)), CompiledPolicy.maximumLengths)
        let tables = PolicyTables(seed: PolicyTables.u32(info, 20), lengths: Array(info[8..<(8 + lengthCount)]),
                                  defaultLengths: PolicyTables.u32(info, 24),
                                  sources: try readArray(try map("policy_sources"), from: Int(generation) * PolicyTables.sourceSlots,
                                                         slots: PolicyTables.sourceSlots, size: PolicyTables.sourceSize, "policy_sources"),
                                  rules: try readArray(try map("policy_rules"), from: Int(generation) * PolicyTables.ruleSlots,
                                                       slots: PolicyTables.ruleSlots, size: PolicyTables.ruleSize, "policy_rules"),
                                  items: try readArray(try map("policy_items"), from: Int(generation) * PolicyTables.itemSlots,
                                                       slots: PolicyTables.itemSlots, size: PolicyTables.itemSize, "policy_items"))
        // The masks the programs AND destinations with are those of the lengths.
        guard tables.policy(into: &policy), Array(info[PolicyTables.masksOffset..<PolicyTables.infoSize]) == tables.lengthMasks else { return CompiledPolicy.inconsistent }
        // Shorter client prefixes are looked up only when the flag says there are any.
        if PolicyTables.u32(info, 0) & 1 != 0 {
            for (key, value) in try Self.allEntries(try map("policy_source_prefixes_\(generation)"), keySize: 20, valueSize: 4, "policy_source_prefixes_\(generation)") {
                guard let prefix = Self.prefix(fromKey: key[...]) else { continue }
                policy.sources[prefix] = PolicyTables.u32(value, 0)
            }
        }
        return policy
    }

    /// Chunk of array elements per BPF_MAP_LOOKUP_BATCH / BPF_MAP_UPDATE_BATCH.
    static let arrayChunk = 16_384

    /// Elements `from..<from + slots` of an ARRAY map, `size` bytes each, in index order: in
    /// batches where the kernel takes them (5.6 on), one lookup each otherwise.
    static func readArray(_ fd: Int32, from: Int, slots: Int, size: Int, _ name: String) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: slots * size)
        var done = 0
        // A batch goes on after the key in `token`: the one before `from`.
        var token = UInt32(truncatingIfNeeded: from - 1), next: UInt32 = 0
        var batched = true
        while done < slots {
            var count = UInt32(min(Self.arrayChunk, slots - done))
            var keys = [UInt32](repeating: 0, count: Int(count))
            var values = [UInt8](repeating: 0, count: Int(count) * size)
            let status = from + done == 0
                ? wgk_map_lookup_batch(fd, nil, &next, &keys, &values, &count)
                : wgk_map_lookup_batch(fd, &token, &next, &keys, &values, &count)
            let code = status == -1 ? errno : -status
            _ = LibbpfLog.take()
            if status < 0, code != ENOENT {
                guard done == 0 else { throw DatapathError("read map", name, code: code, detail: "batch lookup") }
                batched = false
                break
            }
            for i in 0..<Int(count) {
                let index = Int(keys[i]) - from
                guard index >= 0, index < slots else { continue }
                result.replaceSubrange((index * size)..<(index * size + size), with: values[(i * size)..<(i * size + size)])
            }
            done += Int(count)
            token = next
            if status < 0 || count == 0 { break }
        }
        if !batched {
            var value = [UInt8](repeating: 0, count: size)
            for index in 0..<slots {
                var key = UInt32(from + index)
                try check(bpf_map_lookup_elem(fd, &key, &value), "read map", name)
                result.replaceSubrange((index * size)..<(index * size + size), with: value)
            }
        }
        return result
    }

    /// Writes elements `from..<from + bytes.count / size` of an ARRAY map from `bytes`.
    func writeArray(_ name: String, from: Int, _ bytes: [UInt8], size: Int) throws {
        let fd = map(name).raw
        let slots = bytes.count / size
        var start = 0
        while start < slots {
            let count = min(Self.arrayChunk, slots - start)
            let keys = (start..<(start + count)).map { UInt32(from + $0) }
            let values = Array(bytes[(start * size)..<((start + count) * size)])
            var written = UInt32(count)
            let status = wgk_map_update_batch(fd, keys, values, &written)
            _ = LibbpfLog.take()
            if status != 0 {
                // No batch update here (before 5.6): one element at a time, from where it stopped.
                for index in (start + Int(written))..<slots {
                    var key = UInt32(from + index)
                    var value = Array(bytes[(index * size)..<(index * size + size)])
                    try check(bpf_map_update_elem(fd, &key, &value, UInt64(BPF_ANY)), "write map", name)
                }
                return
            }
            start += count
        }
    }

    static func allEntries(_ fd: Int32, keySize: Int, valueSize: Int, _ name: String) throws -> [([UInt8], [UInt8])] {
        try allKeys(fd, keySize: keySize, name).compactMap { key in
            var key = key
            var value = [UInt8](repeating: 0, count: valueSize)
            let found = bpf_map_lookup_elem(fd, &key, &value)
            if found == -ENOENT { return nil }  // deleted since the walk
            try check(found, "read map", name)
            return (key, value)
        }
    }

    /// Every key of a (small, cold-path) map, walked from the first.
    static func allKeys(_ fd: Int32, keySize: Int, _ name: String) throws -> [[UInt8]] {
        var keys: [[UInt8]] = []
        var key = [UInt8](repeating: 0, count: keySize)
        var next = key
        var first = true
        while true {
            let status = first ? bpf_map_get_next_key(fd, nil, &next) : bpf_map_get_next_key(fd, &key, &next)
            first = false
            if status == -ENOENT { break }
            try check(status, "iterate map", name)
            keys.append(next)
            key = next
        }
        return keys
    }

    /// The counters of the live generation, for the first `ruleCount` rules.
    public func policyCounters(ruleCount: Int) throws -> PolicyCounters {
        let generation = try policyWord() & 1
        let sums = try readPolicyCounters(generation: generation, slots: min(ruleCount, CompiledPolicy.maximumRules) + 2)
        var counters = PolicyCounters()
        counters.clientToLANDenied = sums[0]
        counters.lanToClientDenied = sums[1]
        counters.rules = Array(sums.dropFirst(2))
        return counters
    }

    func readPolicyCounters(generation: UInt32, slots: Int) throws -> [UInt64] {
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { throw DatapathError("count possible CPUs for", "policy_counters", code: -Int32(cpus)) }
        let fd = map("policy_counters").raw
        return try (0..<slots).map { slot in
            var key = UInt32(Int(generation) * Self.policySlots + slot)
            var values = [UInt64](repeating: 0, count: cpus)
            try check(bpf_map_lookup_elem(fd, &key, &values), "read map", "policy_counters")
            return values.reduce(0, &+)
        }
    }

    func zeroPolicyCounters(generation: UInt32, slots: Int) throws {
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { throw DatapathError("count possible CPUs for", "policy_counters", code: -Int32(cpus)) }
        let fd = map("policy_counters").raw
        var zeros = [UInt64](repeating: 0, count: cpus)
        for slot in 0..<min(slots, Self.policySlots) {
            var key = UInt32(Int(generation) * Self.policySlots + slot)
            try check(bpf_map_update_elem(fd, &key, &zeros, UInt64(BPF_ANY)), "zero map", "policy_counters")
        }
    }

    /// Deletes every entry: the keys are gathered first (a hash map walked from its first key
    /// after each delete would rescan its buckets every time), then deleted one by one.
    static func clear(_ fd: Int32, keySize: Int, _ name: String) throws {
        for var key in try allKeys(fd, keySize: keySize, name) {
            let deleted = bpf_map_delete_elem(fd, &key)
            if deleted != -ENOENT { try check(deleted, "delete from map", name) }
        }
    }
}

private func sleepFor(_ duration: Duration) {
    let (seconds, attoseconds) = duration.components
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) == -1, errno == EINTR { request = remaining }
}

extension CompiledPolicy {
    /// What a read-back gives for maps that hold what no compiled policy does (a select word or
    /// masks changed behind wgkeeper's back): equal to no desired policy, so it is reinstalled.
    public static let inconsistent = CompiledPolicy(clientToLAN: .deny, lanToClient: .deny, sources: [:], entries: [:], ruleCount: -1)
}
