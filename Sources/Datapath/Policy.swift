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
            return PolicySwap(generation: current & 1, sources: 0, entries: 0)
        }
        let next = (current & 1) ^ 1
        if let last = lastPolicySwap {
            let waited = ContinuousClock.now - last
            if waited < Self.policyGrace { sleepFor(Self.policyGrace - waited) }
        }
        let sources = map("policy_sources_\(next)").raw, sourcePrefixes = map("policy_source_prefixes_\(next)").raw
        let rules = map("policy_rules_\(next)").raw
        try Self.clear(sources, keySize: 16, "policy_sources_\(next)")
        try Self.clear(sourcePrefixes, keySize: 20, "policy_source_prefixes_\(next)")
        try Self.clear(rules, keySize: 24, "policy_rules_\(next)")
        try zeroPolicyCounters(generation: next, slots: policy.ruleCount + 2)
        var shorter = false
        for (prefix, policyClass) in policy.sources {
            var value = policyClass
            if prefix.isHost {
                var key = prefix.address.bytes
                try check(bpf_map_update_elem(sources, &key, &value, UInt64(BPF_ANY)), "write \(prefix) to map", "policy_sources_\(next)")
            } else {
                shorter = true
                var key = try Self.key(prefix, .clients)
                try check(bpf_map_update_elem(sourcePrefixes, &key, &value, UInt64(BPF_ANY)), "write \(prefix) to map", "policy_source_prefixes_\(next)")
            }
        }
        for (key, items) in policy.entries {
            var keyBytes = try Self.policyKey(key)
            var value = Self.policyEntry(items)
            try check(bpf_map_update_elem(rules, &keyBytes, &value, UInt64(BPF_ANY)), "write \(key) to map", "policy_rules_\(next)")
        }
        // struct policy_info: flags, length count, the lengths longest first.
        let lengths = policy.lengths
        guard lengths.count <= CompiledPolicy.maximumLengths else {
            throw DatapathError("write map", "policy_info", code: E2BIG, detail: "\(lengths.count) destination prefix lengths")
        }
        var info = withUnsafeBytes(of: UInt32(shorter ? 1 : 0)) { Array($0) } + withUnsafeBytes(of: UInt32(lengths.count)) { Array($0) }
            + lengths + [UInt8](repeating: 0, count: CompiledPolicy.maximumLengths - lengths.count)
            + withUnsafeBytes(of: UInt32(policy.ruleCount)) { Array($0) }
        var infoKey = next
        try check(bpf_map_update_elem(map("policy_info").raw, &infoKey, &info, UInt64(BPF_ANY)), "write map", "policy_info")
        try writePolicyWord(policy.selectWord(generation: next))
        lastPolicySwap = .now
        return PolicySwap(generation: next, sources: policy.sources.count, entries: policy.entries.count)
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
        for name in ["policy_select", "policy_info"] + (0...1).flatMap({ ["policy_sources_\($0)", "policy_source_prefixes_\($0)", "policy_rules_\($0)"] }) {
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
        let generation = word & 1
        var infoKey = generation
        var info = [UInt8](repeating: 0, count: 20)
        try check(bpf_map_lookup_elem(try map("policy_info"), &infoKey, &info), "read map", "policy_info")
        func word32(_ offset: Int) -> UInt32 { info[offset..<(offset + 4)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
        let lan: DesiredPolicy.LANToClient = switch (word & CompiledPolicy.lanMask) >> CompiledPolicy.lanShift {
        case 0: .allow
        case 1: .deny
        default: .replies
        }
        var policy = CompiledPolicy(clientToLAN: word & CompiledPolicy.clientDenyBit != 0 ? .deny : .allow, lanToClient: lan,
                                    sources: [:], entries: [:], ruleCount: Int(word32(16)))
        for (key, value) in try Self.allEntries(try map("policy_sources_\(generation)"), keySize: 16, valueSize: 4, "policy_sources_\(generation)") {
            guard let address = IPAddress(bytes: key) else { continue }
            policy.sources[IPPrefix.host(address)] = value.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        }
        for (key, value) in try Self.allEntries(try map("policy_source_prefixes_\(generation)"), keySize: 20, valueSize: 4, "policy_source_prefixes_\(generation)") {
            guard let prefix = Self.prefix(fromKey: key) else { continue }
            policy.sources[prefix] = value.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        }
        let entrySize = 8 + 8 * CompiledPolicy.itemsPerEntry
        for (key, value) in try Self.allEntries(try map("policy_rules_\(generation)"), keySize: 24, valueSize: entrySize, "policy_rules_\(generation)") {
            func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 { bytes[offset..<(offset + 4)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
            func u16(_ offset: Int) -> UInt16 { value[offset..<(offset + 2)].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) } }
            let length = u32(key, 4)
            guard length <= 128, let address = IPAddress(bytes: key[8..<24]) else { continue }
            let count = min(Int(u32(value, 0)), CompiledPolicy.itemsPerEntry)
            let items = (0..<count).map { i in
                let at = 8 + 8 * i
                return CompiledPolicy.Item(proto: value[at], rule: u16(at + 2), ports: PortRange(u16(at + 4), max(u16(at + 4), u16(at + 6))))
            }
            policy.entries[CompiledPolicy.Key(policyClass: u32(key, 0), destination: IPPrefix(address: address, length: UInt8(length)))] = items
        }
        return policy
    }

    static func allEntries(_ fd: Int32, keySize: Int, valueSize: Int, _ name: String) throws -> [([UInt8], [UInt8])] {
        var result: [([UInt8], [UInt8])] = []
        var key = [UInt8](repeating: 0, count: keySize)
        var next = key
        var first = true
        while true {
            let status = first ? bpf_map_get_next_key(fd, nil, &next) : bpf_map_get_next_key(fd, &key, &next)
            first = false
            if status == -ENOENT { break }
            try check(status, "iterate map", name)
            key = next
            var value = [UInt8](repeating: 0, count: valueSize)
            let found = bpf_map_lookup_elem(fd, &key, &value)
            if found == -ENOENT { continue }
            try check(found, "read map", name)
            result.append((key, value))
        }
        return result
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
        for var key in keys {
            let deleted = bpf_map_delete_elem(fd, &key)
            if deleted != -ENOENT { try check(deleted, "delete from map", name) }
        }
    }

    /// `struct policy_key`: class, prefix length, the prefix's address (bits past it clear).
    static func policyKey(_ key: CompiledPolicy.Key) throws -> [UInt8] {
        guard case .v6 = key.destination.address else {
            throw DatapathError("write \(key) to map", "policy_rules", code: EAFNOSUPPORT, detail: "the datapath is IPv6 only")
        }
        return withUnsafeBytes(of: key.policyClass) { Array($0) } + withUnsafeBytes(of: UInt32(key.destination.length)) { Array($0) }
            + key.destination.canonical.address.bytes
    }

    /// `struct policy_entry`: count, padding, then `POLICY_ITEMS` items of 8 bytes.
    static func policyEntry(_ items: [CompiledPolicy.Item]) -> [UInt8] {
        precondition(items.count <= CompiledPolicy.itemsPerEntry)
        var bytes = withUnsafeBytes(of: UInt32(items.count)) { Array($0) } + [0, 0, 0, 0]
        for item in items {
            bytes += [item.proto, 0]
            bytes += withUnsafeBytes(of: item.rule) { Array($0) }
            bytes += withUnsafeBytes(of: item.ports.first) { Array($0) }
            bytes += withUnsafeBytes(of: item.ports.last) { Array($0) }
        }
        bytes += [UInt8](repeating: 0, count: (CompiledPolicy.itemsPerEntry - items.count) * 8)
        return bytes
    }
}

private func sleepFor(_ duration: Duration) {
    let (seconds, attoseconds) = duration.components
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) == -1, errno == EINTR { request = remaining }
}
