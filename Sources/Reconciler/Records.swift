import Netlink

/// What wgkeeper changed that the kernel cannot tag with a protocol number: the value of each
/// sysctl before wgkeeper's first write, and the WireGuard devices it created; and the claim
/// (protocol, pin root) it wrote them under. Kept in `runtime.state_dir` (under /run by
/// default), so it outlives a restart but not a reboot, exactly like the sysctls and devices.
public struct Records: Codable, Hashable, Sendable {
    /// Value found before the first write, by `Sysctl.key`.
    public var sysctls: [String: String]
    /// WireGuard devices wgkeeper created: removed when the configuration stops naming them.
    public var createdDevices: Set<String>
    /// Devices on which wgkeeper created the clsact qdisc (kernels without TCX): removed with
    /// our filter.
    public var createdQdiscs: Set<String> = []
    /// The peers (base64 public keys) wgkeeper configured, by device: with `prune_peers: false`
    /// these are still removed when the configuration stops naming them, as a fresh start on a
    /// clean kernel would not have them; the other peers there are the operator's.
    public var peers: [String: Set<String>] = [:]
    /// The interface index each recorded name had: a record follows its device through a
    /// rename, and dies with it (a new device under the same name is not the one recorded).
    public var interfaceIndexes: [String: Int32]
    /// The claim the records were written under; a start under another one is refused.
    public var routeProtocol: UInt8?
    public var pinRoot: String?

    public init(sysctls: [String: String] = [:], createdDevices: Set<String> = [], interfaceIndexes: [String: Int32] = [:],
                peers: [String: Set<String>] = [:], routeProtocol: UInt8? = nil, pinRoot: String? = nil) {
        self.sysctls = sysctls
        self.peers = peers
        self.createdDevices = createdDevices
        self.interfaceIndexes = interfaceIndexes
        self.routeProtocol = routeProtocol
        self.pinRoot = pinRoot
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sysctls = try c.decodeIfPresent([String: String].self, forKey: .sysctls) ?? [:]
        createdDevices = try c.decodeIfPresent(Set<String>.self, forKey: .createdDevices) ?? []
        createdQdiscs = try c.decodeIfPresent(Set<String>.self, forKey: .createdQdiscs) ?? []
        peers = try c.decodeIfPresent([String: Set<String>].self, forKey: .peers) ?? [:]
        interfaceIndexes = try c.decodeIfPresent([String: Int32].self, forKey: .interfaceIndexes) ?? [:]
        routeProtocol = try c.decodeIfPresent(UInt8.self, forKey: .routeProtocol)
        pinRoot = try c.decodeIfPresent(String.self, forKey: .pinRoot)
    }

    /// What in these records wgkeeper could not have written, or nil. A restore writes what the
    /// file says, so only the sysctls wgkeeper manages (a LAN's `forwarding` and `proxy_ndp`,
    /// never `all` or `default`) with small integer values, interface names and keys are accepted.
    public var problem: String? {
        func badName(_ name: String) -> Bool {
            name.isEmpty || name.utf8.count > 15 || name.contains("/") || name == "." || name == ".."
                || name.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7f }
        }
        for (key, value) in sysctls.sorted(by: { $0.key < $1.key }) {
            let sysctl = Sysctl(key)
            guard let interface = sysctl.interface, let name = sysctl.name, ["forwarding", "proxy_ndp"].contains(name),
                  !["all", "default"].contains(interface), !badName(interface)
            else { return "sysctl \(key) is not one wgkeeper manages" }
            guard (1...3).contains(value.utf8.count), value.utf8.allSatisfy({ (48...57).contains($0) }) else {
                return "sysctl \(key) holds \(value.debugDescription), not a value wgkeeper found there"
            }
        }
        let names = createdDevices.union(createdQdiscs).union(interfaceIndexes.keys).union(peers.keys)
        if let name = names.sorted().first(where: badName) { return "\(name.debugDescription) is not an interface name" }
        for (device, keys) in peers {
            if let key = keys.sorted().first(where: { WireGuardKey(base64: $0) == nil }) {
                return "peer \(key.debugDescription) of \(device) is not a WireGuard public key"
            }
        }
        return nil
    }

    /// Nothing left to restore or remove (the claim alone is not worth keeping).
    public var isEmpty: Bool { sysctls.isEmpty && createdDevices.isEmpty && createdQdiscs.isEmpty && peers.isEmpty }

    /// Before configuring peers on `device`: remember them as wgkeeper's. Returns whether the
    /// records changed (and must be saved before the write).
    public mutating func recordPeers<S: Sequence>(_ keys: S, device: String, interfaceIndex: Int32?) -> Bool
    where S.Element == WireGuardKey {
        var set = peers[device] ?? []
        let count = set.count
        for key in keys { set.insert(key.base64) }
        guard set.count != count else { return false }
        peers[device] = set
        if let interfaceIndex { interfaceIndexes[device] = interfaceIndex }
        return true
    }

    /// Whether wgkeeper configured this peer on `device`.
    public func configuredPeer(_ key: WireGuardKey, device: String) -> Bool {
        peers[device]?.contains(key.base64) ?? false
    }

    /// Forgets peers of `device` that are gone. Returns whether the records changed.
    public mutating func forgetPeers(device: String, keeping present: (String) -> Bool) -> Bool {
        guard let set = peers[device] else { return false }
        let kept = set.filter(present)
        guard kept.count != set.count else { return false }
        peers[device] = kept.isEmpty ? nil : kept
        return true
    }

    /// Before writing `sysctl`: remember what it held, unless an earlier write already did.
    /// Returns whether the records changed (and must be saved before the write).
    public mutating func recordBeforeWrite(_ sysctl: Sysctl, previous: String?, interfaceIndex: Int32?) -> Bool {
        guard sysctls[sysctl.key] == nil, let previous else { return false }
        sysctls[sysctl.key] = previous
        if let interface = sysctl.interface, let interfaceIndex { interfaceIndexes[interface] = interfaceIndex }
        return true
    }

    /// Brings the records in line with the links there are now: a recorded device that was
    /// renamed takes its records along; one that is gone (or replaced by another device under
    /// its name) takes them with it. Returns whether anything changed.
    public mutating func follow(_ links: [Link]) -> Bool {
        let byIndex = Dictionary(links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
        let names = Set(links.map(\.name)).union(["all", "default"])
        // Where each recorded name's records go now: the device's current name, or nowhere.
        func target(_ name: String) -> String? {
            if let index = interfaceIndexes[name] { return byIndex[index] }
            return names.contains(name) ? name : nil  // recorded without an index: by name alone
        }
        var moved = Records(routeProtocol: routeProtocol, pinRoot: pinRoot)
        for (key, value) in sysctls {
            let sysctl = Sysctl(key)
            guard let interface = sysctl.interface, let name = sysctl.name else { continue }
            guard let now = target(interface) else { continue }
            moved.sysctls[Sysctl.ipv6(interface: now, name).key] = value
        }
        for name in createdDevices { if let now = target(name) { moved.createdDevices.insert(now) } }
        for name in createdQdiscs { if let now = target(name) { moved.createdQdiscs.insert(now) } }
        for (name, keys) in peers { if let now = target(name) { moved.peers[now, default: []].formUnion(keys) } }
        for (_, index) in interfaceIndexes { if let now = byIndex[index] { moved.interfaceIndexes[now] = index } }
        guard moved != self else { return false }
        self = moved
        return true
    }
}

extension Sysctl {
    /// The interface of a `net/ipv6/conf/<interface>/<name>` key.
    public var interface: String? { parts?.interface }

    /// The setting's name in a `net/ipv6/conf/<interface>/<name>` key.
    public var name: String? { parts?.name }

    private var parts: (interface: String, name: String)? {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "net", parts[2] == "conf" else { return nil }
        return (String(parts[3]), String(parts[4]))
    }
}
