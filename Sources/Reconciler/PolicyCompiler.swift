import Netlink

/// The policy in the datapath's representation (bpf/datapath.bpf.c, `policy_*` maps):
///
/// - every client prefix (the tunnel peers' allowed IPs) maps to a *class*: the peers that the
///   same set of peer- or group-specific rules name share one; class 0 is the peers that only
///   `from: any` rules apply to;
/// - an entry per (class, destination prefix) holds the protocol/port items of every rule
///   of that class (its own and `any`) whose destination contains the prefix, in rule order.
///   The longest match for (class, LAN address) therefore holds every rule that applies, so a
///   packet costs one hash probe for its class, one per destination length until a hit (the
///   lengths in use, longest first), and a scan of at most `itemsPerEntry` items;
/// - one word holds the defaults and which of the two map sets is live.
public struct CompiledPolicy: Hashable, Sendable {
    /// Items an entry holds (`POLICY_ITEMS`).
    public static let itemsPerEntry = 16
    /// Rules the counters have room for (`POLICY_RULES_MAX`).
    public static let maximumRules = 4096
    /// Client prefixes, and (class, destination) entries, of one generation: half the slots of
    /// `policy_sources_*` and `policy_rules_*` (open-addressing tables, `POLICY_*_SLOTS`).
    public static let maximumEntries = 65536
    /// Protocol/port items of all entries together (`POLICY_ITEM_SLOTS`).
    public static let maximumItems = 262_144
    /// Distinct destination prefix lengths (`POLICY_LENGTHS`): a packet probes the rules' hash
    /// once per length, longest first, until one holds its (class, destination).
    public static let maximumLengths = 8
    /// Peers named by the rules in all, each group counted with its members (a peer named by
    /// two rules counts twice): the work of compiling is linear in it, so it is bounded before
    /// anything is built (4 096 rules from a group of 65 536 peers would be 268 million).
    public static let maximumMemberships = 1 << 22

    public struct Item: Hashable, Sendable, CustomStringConvertible {
        /// 0: any protocol.
        public var proto: UInt8
        public var rule: UInt16
        public var ports: PortRange

        public init(proto: UInt8, rule: UInt16, ports: PortRange) {
            self.proto = proto
            self.rule = rule
            self.ports = ports
        }

        public var description: String { "rule \(rule) proto \(proto) ports \(ports)" }
    }

    public struct Key: Hashable, Sendable, Comparable, CustomStringConvertible {
        public var policyClass: UInt32
        public var destination: IPPrefix

        public init(policyClass: UInt32, destination: IPPrefix) {
            self.policyClass = policyClass
            self.destination = destination
        }

        public static func < (a: Key, b: Key) -> Bool { (a.policyClass, a.destination) < (b.policyClass, b.destination) }
        public var description: String { "class \(policyClass) \(destination)" }
    }

    public var clientToLAN: DesiredPolicy.ClientToLAN
    public var lanToClient: DesiredPolicy.LANToClient
    /// Client prefix → class.
    public var sources: [IPPrefix: UInt32]
    public var entries: [Key: [Item]]
    public var ruleCount: Int

    public init(clientToLAN: DesiredPolicy.ClientToLAN, lanToClient: DesiredPolicy.LANToClient, sources: [IPPrefix: UInt32],
                entries: [Key: [Item]], ruleCount: Int) {
        self.clientToLAN = clientToLAN
        self.lanToClient = lanToClient
        self.sources = sources
        self.entries = entries
        self.ruleCount = ruleCount
    }

    /// The destination prefix lengths the entries use, longest first (the programs' probe order).
    public var lengths: [UInt8] { Set(entries.keys.map(\.destination.length)).sorted(by: >) }

    /// Bits of the `policy_select` word (`POLICY_*` in bpf/datapath.bpf.c).
    public static let generationBit: UInt32 = 1
    public static let clientDenyBit: UInt32 = 2
    public static let lanShift: UInt32 = 2
    public static let lanMask: UInt32 = 3 << 2
    public static let seedShift: UInt32 = 8
    public static let seedMask: UInt32 = 7 << 8

    /// The word that selects map set `generation` (0 or 1) with these defaults, and the set's
    /// hash seed (0-7, `PolicyTables`).
    public func selectWord(generation: UInt32, seed: UInt32 = 0) -> UInt32 {
        let lan: UInt32 = switch lanToClient {
        case .allow: 0
        case .deny: 1
        case .replies: 2
        }
        return (generation & 1) | (clientToLAN == .deny ? Self.clientDenyBit : 0) | (lan << Self.lanShift)
            | (seed << Self.seedShift & Self.seedMask)
    }

    /// Nothing to look up: both defaults allow (the word alone says so).
    public var allowsEverything: Bool { clientToLAN == .allow && lanToClient != .deny }
    /// The programs never consult the maps: both defaults are `allow`. Installed as no policy.
    public var isInert: Bool { clientToLAN == .allow && lanToClient == .allow }

    /// The Swift twin of the programs' lookup, over this representation: what `evaluate` on
    /// the rules says, the compiled form must say too (unit-tested on random rule sets).
    public func evaluate(_ packet: PolicyPacket) -> PolicyVerdict {
        if let verdict = DesiredPolicy(clientToLAN: clientToLAN, lanToClient: lanToClient).defaultVerdict(packet.direction) { return verdict }
        let policyClass = Self.longestMatch(sources, packet.client).map { sources[$0]! } ?? 0
        let candidates = entries.keys.filter { $0.policyClass == policyClass && $0.destination.contains(.v6(packet.lanHost)) }
        guard let key = candidates.max(by: { $0.destination.length < $1.destination.length }) else { return .denied }
        let anyProtocol = packet.isErrorAboutOwnPacket
        for item in entries[key]! {
            if anyProtocol { return .allowed(rule: Int(item.rule)) }
            if item.proto != 0, item.proto != packet.proto { continue }
            if !item.ports.contains(packet.lanPort) { continue }
            return .allowed(rule: Int(item.rule))
        }
        return .denied
    }

    static func longestMatch<V>(_ table: [IPPrefix: V], _ address: IPv6Address) -> IPPrefix? {
        table.keys.filter { $0.contains(.v6(address)) }.max { $0.length < $1.length }
    }
}

/// Which peer a client address belongs to: the tunnel peers' allowed IPs, longest match.
public struct PolicyClients: Sendable {
    public var prefixes: [IPPrefix: String]

    public init(peers: [DesiredPeer]) {
        var prefixes: [IPPrefix: String] = [:]
        for peer in peers {
            for prefix in peer.allowedIPs where prefix.family == .inet6 { prefixes[prefix.canonical] = peer.name }
        }
        self.prefixes = prefixes
    }

    public func peer(of address: IPv6Address) -> String? {
        CompiledPolicy.longestMatch(prefixes, address).map { prefixes[$0]! }
    }
}

public struct PolicyCompileError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    /// The rule the problem is about, when one is.
    public var rule: Int?
}

extension DesiredPolicy {
    private static func tooManyEntries(_ count: Int, counted: Bool) -> PolicyCompileError {
        PolicyCompileError(
            description: "the rules compile to \(counted ? "" : "more than ")\(counted ? count : CompiledPolicy.maximumEntries) datapath entries (the maps hold \(CompiledPolicy.maximumEntries): one per destination for each set of peers sharing the same rules, the rules for any peer in every set); use groups so that peers share rule sets",
            rule: nil)
    }

    /// Compiles for the peers of the gateway's tunnel; errors name what does not fit the maps.
    public func compile(clients: PolicyClients) -> Result<CompiledPolicy, PolicyCompileError> {
        guard rules.count <= CompiledPolicy.maximumRules else {
            return .failure(PolicyCompileError(description: "more than \(CompiledPolicy.maximumRules) rules", rule: nil))
        }
        // The items of each rule, once.
        let items: [[CompiledPolicy.Item]] = rules.enumerated().map { index, rule in
            let ranges = rule.ports.isEmpty ? [PortRange.all] : rule.ports
            return ranges.map { CompiledPolicy.Item(proto: rule.proto?.rawValue ?? 0, rule: UInt16(index), ports: $0) }
        }
        let anyRules = rules.indices.filter { rules[$0].source == .any }
        // Classes: the set of specific rules naming each peer.
        var rulesOfPeer: [String: [Int]] = [:]
        for (index, rule) in rules.enumerated() {
            guard case .peers(let names) = rule.source else { continue }
            for name in names { rulesOfPeer[name, default: []].append(index) }
        }
        var classOfRuleSet: [[Int]: UInt32] = [:]
        var classOfPeer: [String: UInt32] = [:]
        for name in rulesOfPeer.keys.sorted() {
            let set = rulesOfPeer[name]!
            if let existing = classOfRuleSet[set] {
                classOfPeer[name] = existing
            } else {
                let next = UInt32(classOfRuleSet.count + 1)
                classOfRuleSet[set] = next
                classOfPeer[name] = next
            }
        }
        // Entries counted before any is made: each class has the rules for any peer's
        // destinations and its own (16 384 classes × 4 000 rules for any peer took 3 GB and a
        // minute before the count was refused).
        let anyDestinations = Set(anyRules.map { rules[$0].destination })
        var entryCount = anyDestinations.count
        for set in classOfRuleSet.keys {
            var own = Set<IPPrefix>()
            for index in set where !anyDestinations.contains(rules[index].destination) { own.insert(rules[index].destination) }
            entryCount += anyDestinations.count + own.count
            if entryCount > CompiledPolicy.maximumEntries { break }
        }
        guard entryCount <= CompiledPolicy.maximumEntries else { return .failure(Self.tooManyEntries(entryCount, counted: false)) }
        var compiled = CompiledPolicy(clientToLAN: clientToLAN, lanToClient: lanToClient, sources: [:], entries: [:], ruleCount: rules.count)
        for (prefix, name) in clients.prefixes { compiled.sources[prefix] = classOfPeer[name] ?? 0 }

        var classes: [(UInt32, [Int])] = [(0, anyRules)]
        for (set, policyClass) in classOfRuleSet { classes.append((policyClass, (set + anyRules).sorted())) }
        for (policyClass, ruleIndexes) in classes {
            // The rules containing a destination are found through its ancestors at the lengths
            // in use: linear in the rules, not quadratic (4 096 rules to distinct addresses).
            var byDestination: [IPPrefix: [Int]] = [:]
            for index in ruleIndexes { byDestination[rules[index].destination, default: []].append(index) }
            let lengths = Set(byDestination.keys.map(\.length)).sorted()
            for destination in byDestination.keys {
                var containing: [Int] = []
                for length in lengths where length <= destination.length {
                    let ancestor = IPPrefix(address: destination.address.masked(to: Int(length)), length: length)
                    containing += byDestination[ancestor] ?? []
                }
                containing.sort()
                var entry: [CompiledPolicy.Item] = []
                var seen = Set<CompiledPolicy.Item>()
                for index in containing {
                    for item in items[index] {
                        // An item already there for an earlier rule matches first: drop the copy.
                        var shape = item
                        shape.rule = 0
                        if seen.insert(shape).inserted { entry.append(item) }
                    }
                }
                guard entry.count <= CompiledPolicy.itemsPerEntry else {
                    return .failure(PolicyCompileError(
                        description: "\(destination) gathers \(entry.count) protocol/port ranges from the rules that contain it (the datapath holds \(CompiledPolicy.itemsPerEntry) per destination and peer); merge port ranges or split the destination",
                        rule: ruleIndexes.first { rules[$0].destination == destination }))
                }
                compiled.entries[CompiledPolicy.Key(policyClass: policyClass, destination: destination)] = entry
            }
        }
        guard compiled.entries.count <= CompiledPolicy.maximumEntries else { return .failure(Self.tooManyEntries(compiled.entries.count, counted: true)) }
        let itemCount = compiled.entries.values.reduce(0) { $0 + $1.count }
        guard itemCount <= CompiledPolicy.maximumItems else {
            return .failure(PolicyCompileError(
                description: "the rules compile to \(itemCount) protocol/port items over their datapath entries (the maps hold \(CompiledPolicy.maximumItems)); use groups so that peers share rule sets, or merge port ranges",
                rule: nil))
        }
        guard compiled.lengths.count <= CompiledPolicy.maximumLengths else {
            return .failure(PolicyCompileError(
                description: "the rules' destinations use \(compiled.lengths.count) different prefix lengths (\(compiled.lengths.map { "/\($0)" }.joined(separator: ", "))); the datapath probes at most \(CompiledPolicy.maximumLengths)",
                rule: nil))
        }
        guard compiled.sources.count <= CompiledPolicy.maximumEntries else {
            return .failure(PolicyCompileError(description: "more than \(CompiledPolicy.maximumEntries) client prefixes", rule: nil))
        }
        return .success(compiled)
    }
}
