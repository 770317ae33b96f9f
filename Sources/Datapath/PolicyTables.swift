import Netlink
import Reconciler

/// One generation of a compiled policy laid out as bpf/policy.h probes it: open-addressing
/// tables in ARRAY maps (the verifier inlines an array lookup; a hash map's is a kernel call),
/// each map holding both generations (generation g from g × the sizes here).
///
/// - `sources` (`struct policy_source`, 24 bytes a slot): a client /128, its class, and the
///   lengths its class has entries at (bit l: `lengths[l]`) with `used`;
/// - `rules` (`struct policy_slot`, 28 bytes): class << 8 | length, the masked destination,
///   where its items start in `items` and how many (with `used`);
/// - `items` (`struct policy_item`, 8 bytes).
///
/// A key's home slot is `home(seed:…)`; it sits at most `probes` slots after it (Robin Hood
/// placement, at most half full), and the programs stop at the first empty slot. The layout is
/// a function of the policy and the seed, so read-back can tell what the programs would find.
struct PolicyTables: Equatable {
    /// Both tables have 2^slotBits slots (`POLICY_SLOT_BITS`).
    static let slotBits = 17
    static let sourceSlots = 1 << slotBits
    static let ruleSlots = 1 << slotBits
    static let itemSlots = CompiledPolicy.maximumItems
    static let probes = 16
    static let used: UInt32 = 0x8000_0000
    static let sourceSize = 24, ruleSize = 32, itemSize = 8
    /// `struct policy_slot`'s `meta`: used, the first item's index from this bit, the count below.
    static let metaFirstShift: UInt32 = 8

    /// `struct policy_item`: protocol, padding, rule, first and last port.
    static func itemBytes(_ item: CompiledPolicy.Item) -> [UInt8] {
        [item.proto, 0] + le16(item.rule) + le16(item.ports.first) + le16(item.ports.last)
    }
    /// Seeds tried before giving up (each fails only if some key is `probes` past its home).
    static let seeds: ClosedRange<UInt32> = 0...7

    /// `struct policy_info`'s size: flags, count, 8 lengths, rule count, seed, default lengths,
    /// padding, then each length's mask.
    static let infoSize = masksOffset + 16 * CompiledPolicy.maximumLengths
    static let masksOffset = 32

    var seed: UInt32
    /// The lengths the entries use, longest first (`policy_info.lengths`).
    var lengths: [UInt8]
    /// The lengths class 0 has entries at (`policy_info.default_lengths`).
    var defaultLengths: UInt32
    var sources: [UInt8]
    var rules: [UInt8]
    var items: [UInt8]

    static let multiplier: UInt64 = 0x9e37_79b9_7f4a_7c15

    /// `policy_hash` in bpf/policy.h: multiply-xor over the address's 16 bytes as two 64-bit
    /// words (little-endian here and in the programs), the product's top `slotBits`; `start` is the
    /// seed for a source, `(seed ^ length) * multiplier` for an entry (whose class then joins by XOR).
    static func hash(_ start: UInt64, _ address: [UInt32]) -> UInt32 {
        var h = (start ^ (UInt64(address[1]) << 32 | UInt64(address[0]))) &* multiplier
        h = (h ^ (UInt64(address[3]) << 32 | UInt64(address[2]))) &* multiplier
        return UInt32(truncatingIfNeeded: h >> UInt64(64 - slotBits))
    }

    /// The home slot of a source's address.
    static func home(seed: UInt32, source address: [UInt32]) -> UInt32 { hash(UInt64(seed), address) }
    /// The home slot of an entry: class << 8 | length, and the masked destination.
    static func home(seed: UInt32, tag: UInt32, destination: [UInt32]) -> UInt32 {
        hash(UInt64(seed ^ (tag & 0xff)) &* multiplier, destination) ^ classMix(tag >> 8)
    }

    /// `policy_class_mix`: a class's part of an entry's home, joined by XOR so that the programs
    /// hash the destination without waiting for the class.
    static func classMix(_ policyClass: UInt32) -> UInt32 { (policyClass &* 0x9e37_79b1) >> UInt32(32 - slotBits) }

    static func words(_ bytes: [UInt8]) -> [UInt32] {
        stride(from: 0, to: bytes.count, by: 4).map { u32(bytes, $0) }
    }

    /// The little-endian word at `offset`.
    static func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    }

    static func le32(_ value: UInt32) -> [UInt8] { [UInt8(value & 0xff), UInt8(value >> 8 & 0xff), UInt8(value >> 16 & 0xff), UInt8(value >> 24)] }
    static func le16(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xff), UInt8(value >> 8)] }

    /// An entry's tag: class << 8 | length.
    static func tag(_ key: CompiledPolicy.Key) -> UInt32 { key.policyClass << 8 | UInt32(key.destination.length) }
    static func home(seed: UInt32, _ key: CompiledPolicy.Key) -> UInt32 {
        home(seed: seed, tag: tag(key), destination: words(key.destination.canonical.address.bytes))
    }

    typealias Record = (home: (UInt32) -> UInt32, bytes: [UInt8])

    enum LayoutError: Error, Equatable {
        case tooManyItems(Int)
        case tooManySources(Int)
        case tooManyEntries(Int)
        case noSeed
    }

    /// The tables of `policy` (its /128 sources: shorter ones go to the LPM trie), with the
    /// first seed that places every key within `probes` of its home.
    init(_ policy: CompiledPolicy) throws(LayoutError) {
        let hosts = policy.sources.filter { $0.key.isHost && $0.key.family == .inet6 }
        guard hosts.count <= Self.sourceSlots / 2 else { throw .tooManySources(hosts.count) }
        guard policy.entries.count <= Self.ruleSlots / 2 else { throw .tooManyEntries(policy.entries.count) }
        let itemCount = policy.entries.values.reduce(0) { $0 + $1.count }
        guard itemCount <= Self.itemSlots else { throw .tooManyItems(itemCount) }
        let lengths = policy.lengths
        var lengthsOfClass: [UInt32: UInt32] = [:]
        for key in policy.entries.keys {
            if let l = lengths.firstIndex(of: key.destination.length) { lengthsOfClass[key.policyClass, default: 0] |= 1 << UInt32(l) }
        }
        // Items in key order: the layout depends on the policy alone.
        let keys = policy.entries.keys.sorted()
        var items: [UInt8] = []
        items.reserveCapacity(Self.itemSlots * Self.itemSize)
        var firstItem: [CompiledPolicy.Key: Int] = [:]
        for key in keys {
            firstItem[key] = items.count / Self.itemSize
            for item in policy.entries[key]! { items += Self.itemBytes(item) }
        }
        items += [UInt8](repeating: 0, count: Self.itemSlots * Self.itemSize - items.count)
        let sourceRecords: [Record] = hosts.sorted { $0.key < $1.key }.map { prefix, policyClass in
            let address = prefix.address.bytes
            let words = Self.words(address)
            return ({ Self.home(seed: $0, source: words) }, address + Self.le32(policyClass) + Self.le32((lengthsOfClass[policyClass] ?? 0) | Self.used))
        }
        let ruleRecords: [Record] = keys.map { key in
            let entryItems = policy.entries[key]!
            let meta = Self.used | UInt32(firstItem[key]!) << Self.metaFirstShift | UInt32(entryItems.count)
            return ({ Self.home(seed: $0, key) }, key.destination.canonical.address.bytes + Self.le32(Self.tag(key)) + Self.le32(meta)
                + Self.itemBytes(entryItems[0]))
        }
        for seed in Self.seeds {
            guard let sources = Self.place(sourceRecords, slots: Self.sourceSlots, size: Self.sourceSize, seed: seed),
                  let rules = Self.place(ruleRecords, slots: Self.ruleSlots, size: Self.ruleSize, seed: seed) else { continue }
            self.init(seed: seed, lengths: lengths, defaultLengths: lengthsOfClass[0] ?? 0, sources: sources, rules: rules, items: items)
            return
        }
        throw .noSeed
    }

    /// `policy_info.masks`: each length as a 16-byte mask (the programs AND it with the address),
    /// unused lengths zero.
    var lengthMasks: [UInt8] {
        (0..<CompiledPolicy.maximumLengths).flatMap { l -> [UInt8] in
            guard l < lengths.count else { return [UInt8](repeating: 0, count: 16) }
            let length = Int(lengths[l])
            return (0..<16).map { byte in
                let bits = min(max(length - byte * 8, 0), 8)
                return bits == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            }
        }
    }

    init(seed: UInt32, lengths: [UInt8], defaultLengths: UInt32, sources: [UInt8], rules: [UInt8], items: [UInt8]) {
        self.seed = seed
        self.lengths = lengths
        self.defaultLengths = defaultLengths
        self.sources = sources
        self.rules = rules
        self.items = items
    }

    /// Robin Hood linear probing: a record displaces one nearer its own home. Nil when some
    /// record would sit `probes` or more slots past its home.
    static func place(_ records: [Record], slots: Int, size: Int, seed: UInt32) -> [UInt8]? {
        let mask = slots - 1
        var table = [Int32](repeating: -1, count: slots)  // record index per slot
        var homes = records.map { Int($0.home(seed)) & mask }
        for index in records.indices {
            var current = Int32(index)
            var slot = homes[index]
            var distance = 0
            while true {
                guard distance < probes else { return nil }
                let there = table[slot]
                if there < 0 {
                    table[slot] = current
                    break
                }
                let theirs = (slot - homes[Int(there)] + slots) & mask
                if theirs < distance {
                    table[slot] = current
                    current = there
                    distance = theirs
                }
                slot = (slot + 1) & mask
                distance += 1
            }
        }
        homes = []
        var bytes = [UInt8](repeating: 0, count: slots * size)
        for (slot, index) in table.enumerated() where index >= 0 {
            bytes.replaceSubrange((slot * size)..<(slot * size + size), with: records[Int(index)].bytes)
        }
        return bytes
    }

    /// What the programs find in these tables: each used slot reachable from its home (no empty
    /// slot before it, at most `probes` on), its items, and for a source the lengths it lets
    /// the programs probe. A source whose lengths leave out one its class has entries at is
    /// dropped, and so are class 0's entries when `defaultLengths` does: the result then differs
    /// from any policy that was installed, which is what a read-back is for.
    /// False when an item holds what no compiled policy has (a port range ending before it
    /// starts, which the programs match no port with).
    func policy(into policy: inout CompiledPolicy) -> Bool {
        var consistent = true
        func reachable(_ table: [UInt8], size: Int, slots: Int, at slot: Int, home: UInt32, usedOffset: Int) -> Bool {
            let home = Int(home) & (slots - 1)
            for p in 0..<Self.probes {
                let probe = (home + p) & (slots - 1)
                if Self.u32(table, probe * size + usedOffset) & Self.used == 0 { return false }
                if probe == slot { return true }
            }
            return false
        }
        var entries: [CompiledPolicy.Key: [CompiledPolicy.Item]] = [:]
        for slot in 0..<Self.ruleSlots {
            let base = slot * Self.ruleSize
            guard Self.u32(rules, base + 20) & Self.used != 0 else { continue }
            let record = Self.words(Array(rules[base..<(base + Self.ruleSize)]))
            let length = UInt8(truncatingIfNeeded: record[4])
            guard length <= 128, lengths.contains(length),
                  let address = IPAddress(bytes: Array(rules[base..<(base + 16)])) else { continue }
            let key = CompiledPolicy.Key(policyClass: record[4] >> 8, destination: IPPrefix(address: address, length: length))
            guard key.destination.canonical.address == address,
                  reachable(rules, size: Self.ruleSize, slots: Self.ruleSlots, at: slot, home: Self.home(seed: seed, key), usedOffset: 20) else { continue }
            // Two reachable slots with one key: the programs take the one their probe meets
            // first, which a dictionary keyed by slot order need not keep (a copy written in
            // front of an entry, with other items, would read back as the entry behind it).
            if entries[key] != nil { consistent = false }
            let meta = record[5] & ~Self.used
            let first = Int(meta >> Self.metaFirstShift), count = Int(meta & 0xff)
            guard count <= CompiledPolicy.itemsPerEntry, first + count <= Self.itemSlots else { continue }
            // The programs take the first item from the slot, the others from `items`.
            if count == 0 || Array(rules[(base + 24)..<(base + 32)]) != Array(items[(first * Self.itemSize)..<((first + 1) * Self.itemSize)]) {
                consistent = false
            }
            entries[key] = (first..<(first + count)).map { i in
                let at = i * Self.itemSize
                let u16 = { (offset: Int) in UInt16(items[at + offset]) | UInt16(items[at + offset + 1]) << 8 }
                if u16(6) < u16(4) { consistent = false }
                return CompiledPolicy.Item(proto: items[at], rule: u16(2), ports: PortRange(u16(4), max(u16(4), u16(6))))
            }
        }
        var lengthsOfClass: [UInt32: UInt32] = [:]
        for key in entries.keys {
            if let l = lengths.firstIndex(of: key.destination.length) { lengthsOfClass[key.policyClass, default: 0] |= 1 << UInt32(l) }
        }
        if let needed = lengthsOfClass[0], defaultLengths & needed != needed {
            entries = entries.filter { $0.key.policyClass != 0 }
        }
        policy.entries = entries
        for slot in 0..<Self.sourceSlots {
            let base = slot * Self.sourceSize
            guard Self.u32(sources, base + 20) & Self.used != 0 else { continue }
            let record = Self.words(Array(sources[base..<(base + Self.sourceSize)]))
            let addressBytes = Array(sources[base..<(base + 16)])
            guard let address = IPAddress(bytes: addressBytes),
                  reachable(sources, size: Self.sourceSize, slots: Self.sourceSlots, at: slot,
                            home: Self.home(seed: seed, source: Self.words(addressBytes)), usedOffset: 20)
            else { continue }
            let needed = lengthsOfClass[record[4]] ?? 0
            guard record[5] & needed == needed else { continue }
            // As for entries: a second reachable slot for one client is no layout of a policy.
            if policy.sources[.host(address)] != nil { consistent = false }
            policy.sources[.host(address)] = record[4]
        }
        return consistent
    }
}
