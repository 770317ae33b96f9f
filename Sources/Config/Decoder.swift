import Netlink
import Reconciler

/// A mapping's entries by key. A section has a handful of keys: they are searched, which costs
/// less than hashing them into a table for every peer; a table is built past `Fields.scanned`.
struct Fields {
    private let entries: [Tree.Entry]
    private let index: [String: Int]?
    static let scanned = 16

    init(_ entries: [Tree.Entry]) {
        self.entries = entries
        // As a dictionary built entry by entry would: a key given twice (merging keeps keys
        // unique, so only in principle) answers with its last entry.
        index = entries.count > Self.scanned
            ? Dictionary(entries.enumerated().map { ($1.key, $0) }, uniquingKeysWith: { _, last in last }) : nil
    }

    subscript(key: String) -> Tree.Entry? {
        if let index { return index[key].map { entries[$0] } }
        return entries.last { $0.key == key }
    }

    /// Each key once.
    var keys: [String] {
        var seen = Set<String>()
        return entries.map(\.key).filter { seen.insert($0).inserted }
    }
}

/// Walks the merged tree, turning nodes into typed sections and collecting every problem.
/// Key files are not read here: `ConfigLoader` does that after the shape is known.
struct Decoder {
    var errors = ConfigErrorList()
    var includeDir: (path: String, location: SourceLocation)?
    var limits = ConfigLimits.standard
    /// Peers decoded by the last load, by where their list item starts; see `decodePeer(_:name:device:index:)`.
    var peerMemo: PeerMemo?

    struct PeerMemo {
        /// What the last load kept: each file's tree with the peers decoded from it, and the
        /// desired devices those name.
        let previous: ConfigCache.State
        /// The trees this load keeps, by file: a peer decoded from one of them is kept for the next load.
        let kept: [String: TreeStorage]
        /// What this load decoded without an error, by file, in reading order: the next load's
        /// (complete once `flush()` has put `current`'s in).
        private(set) var next: [String: [KeptPeer]] = [:]
        var decoded = 0
        /// The file of the last item decoded, with what the memo holds for it: the items of
        /// one file mostly follow one another, so that is looked up once for them, not for
        /// each (four lookups by file name and a copy of its `CachedFile` cost 2 ms a reload
        /// of 10 000 peers).
        private(set) var current: Place?

        struct Place {
            let file: String
            /// The tree whose items are read.
            let storage: TreeStorage
            /// The file's kept peers and its own (`CachedFile`), none when it was not kept.
            let peers: [KeptPeer]
            let ownPeers: [DesiredPeer]
            let unchanged: Bool
            /// The tree this load keeps for the file, if it does.
            let kept: TreeStorage?
            /// Where in `previous.peers` the next item's peer is looked for first (they are in
            /// the order of their places, as the items come).
            var cursor = 0
            var next: [KeptPeer] = []
        }

        /// (Whether a file's tree is the one the cache kept is told by the tree itself, `enter`.)
        init(previous: ConfigCache.State, kept: [String: TreeStorage]) {
            self.previous = previous
            self.kept = kept
        }

        /// `current` made the place of `file`, whose items this load reads in `storage`.
        /// Unchanged is the tree read, not the file's name: a file read twice in one load (a
        /// main file in its own include directory) may have been reused once and parsed anew
        /// once (written in between), and only the tree kept last is kept (`ConfigLoader.read`).
        mutating func enter(_ file: String, storage: TreeStorage) {
            if let current, current.file == file, current.storage === storage { return }
            flush()
            let cached = previous.files[file]
            // The kept tree itself: the file was unchanged, its items are told by their nodes.
            // Any other tree of it was parsed in this load: by their digests.
            let unchanged = cached.map { $0.tree.storage === storage } ?? false
            current = Place(file: file, storage: storage, peers: cached?.peers ?? [], ownPeers: cached?.ownPeers ?? [], unchanged: unchanged,
                            kept: kept[file] === storage ? storage : nil)
        }

        /// The peer kept for the item at `at` in the current file, if any: where it stands in the
        /// last load's devices too.
        mutating func kept(at: SourceLocation) -> (KeptPeer, DesiredPeer)? {
            let cursor = current!.cursor
            let index: Int
            if cursor < current!.peers.count, current!.peers[cursor].line == UInt32(clamping: at.line),
               current!.peers[cursor].column == UInt32(clamping: at.column) {
                index = cursor
            } else {
                guard let found = CachedFile.index(of: at, in: current!.peers) else { return nil }
                index = found
            }
            current!.cursor = index + 1
            let kept = current!.peers[index]
            return CachedFile.peer(kept, own: current!.ownPeers, devices: previous.devices).map { (kept, $0) }
        }

        mutating func keep(_ peer: KeptPeer) { current!.next.append(peer) }

        mutating func flush() {
            guard let place = current else { return }
            current = nil
            guard !place.next.isEmpty else { return }
            // The file's list as it is, unless an earlier place of the file had some (a file's
            // devices are read in turn with other files'): one lookup, no other list made.
            if let earlier = next.updateValue(place.next, forKey: place.file) { next[place.file] = earlier + place.next }
        }
    }

    mutating func fail(_ at: SourceLocation, _ message: @autoclosure () -> String) { errors.append(at, message()) }

    // MARK: shapes

    /// The entries of a mapping, after reporting unknown keys; nil (with an error) when `tree` is no mapping.
    mutating func mapping(_ tree: Tree, _ name: String, known: [String]?) -> Fields? {
        switch tree.node {
        case .null:
            return Fields([])
        case .mapping(let entries, _):
            guard let known else { return Fields(entries) }
            var result: [Tree.Entry] = []
            result.reserveCapacity(entries.count)
            for entry in entries {
                if !known.contains(entry.key) {
                    fail(entry.keyLocation, "unknown key \(Scalars.quoted(entry.key)) in \(name) (known: \(known.joined(separator: ", ")))")
                    continue
                }
                result.append(entry)
            }
            return Fields(result)
        default:
            fail(tree.location, "\(name): expected a mapping, got \(tree.kindName)")
            return nil
        }
    }

    mutating func list(_ tree: Tree?, _ name: String) -> [Tree] {
        switch tree?.node {
        case nil, .null: return []
        case .sequence(let items, _)?: return items
        case .some:
            let other = tree!
            fail(other.location, "\(name): expected a list, got \(other.kindName)")
            return []
        }
    }

    /// The scalar text of a key, or nil when absent (or with an error when not a scalar).
    mutating func scalar(_ entry: Tree.Entry?) -> (text: String, at: SourceLocation)? {
        guard let entry else { return nil }
        switch entry.value.node {
        case .null: return nil
        case .scalar(let text, let at): return (text, at)
        default:
            fail(entry.value.location, "\(entry.key): expected a single value, got \(entry.value.kindName)")
            return nil
        }
    }

    mutating func required(_ entries: Fields, _ key: String, in name: String, at: SourceLocation) -> (text: String, at: SourceLocation)? {
        if entries[key] == nil || (entries[key].map { $0.value.kind == .null } ?? true) {
            fail(at, "\(name): missing required key \"\(key)\"")
            return nil
        }
        return scalar(entries[key])
    }

    // MARK: typed values

    mutating func parse<T>(_ entry: Tree.Entry?, _ expected: String, _ parser: (String) -> T?) -> T? {
        guard let (text, at) = scalar(entry) else { return nil }
        guard let value = parser(text) else {
            fail(at, "\(entry!.key): expected \(expected), got \(Scalars.quoted(text))")
            return nil
        }
        return value
    }

    mutating func bool(_ entry: Tree.Entry?) -> Bool? { parse(entry, "true or false", Scalars.bool) }

    mutating func integer(_ entry: Tree.Entry?, _ range: ClosedRange<UInt64>) -> UInt64? {
        parse(entry, "an integer from \(range.lowerBound) to \(range.upperBound)") { Scalars.integer($0, in: range) }
    }

    mutating func duration(_ entry: Tree.Entry?, allowZero: Bool = false) -> Duration? {
        guard let (text, at) = scalar(entry) else { return nil }
        guard let value = Scalars.duration(text, allowZero: allowZero) else {
            fail(at, "\(entry!.key): \(Scalars.quoted(text)) is not an interval (write it like \(allowZero ? "0, " : "")500ms, 2s, 1m or 1m30s)")
            return nil
        }
        // The event loop turns deadlines into milliseconds: keep them far from overflowing.
        guard value <= Scalars.longestInterval else {
            fail(at, "\(entry!.key): \(Scalars.quoted(text)) is longer than 24h (the limit)")
            return nil
        }
        return value
    }

    mutating func interfaceName(_ text: String, _ key: String, at: SourceLocation) -> String? {
        guard Scalars.isInterfaceName(text) else {
            fail(at, "\(key): \(Scalars.quoted(text)) is not an interface name (1–15 characters, no '/', ':' or spaces)")
            return nil
        }
        if let why = Scalars.reservedInterfaces[text] {
            fail(at, "\(key): \(Scalars.quoted(text)) cannot be configured: \(why)")
            return nil
        }
        return text
    }

    mutating func interface(_ entry: Tree.Entry?) -> String? {
        guard let (text, at) = scalar(entry) else { return nil }
        return interfaceName(text, entry!.key, at: at)
    }

    mutating func prefix(_ text: String, _ key: String, at: SourceLocation) -> IPPrefix? {
        guard let prefix = Scalars.ipv6Prefix(text) else {
            fail(at, "\(key): \(Scalars.quoted(text)) is not an IPv6 prefix")
            return nil
        }
        guard prefix.isCanonical else {
            fail(at, "\(key): \(text) has bits set past the prefix length; did you mean \(prefix.canonical)?")
            return nil
        }
        return prefix
    }

    mutating func address(_ entry: Tree.Entry?) -> IPAddress? {
        guard let (text, at) = scalar(entry) else { return nil }
        guard let address = Scalars.ipv6Address(text) else {
            fail(at, "\(entry!.key): \(Scalars.quoted(text)) is not an IPv6 address")
            return nil
        }
        return address
    }

    /// `icmp_source_*`: the source of the datapath's ICMPv6 errors, which their receiver must
    /// accept as a unicast address of the gateway (RFC 4443 2.2). A client gets its errors
    /// through its WireGuard peer, whose allowed IPs never cover link-local (`linkLocal: false`).
    mutating func icmpSource(_ entry: Tree.Entry?, linkLocal: Bool) -> IPAddress? {
        guard let address = address(entry), case .v6(let v6) = address, let (_, at) = scalar(entry) else { return nil }
        let key = entry!.key
        let what: String? = v6.isUnspecified ? "the unspecified address (errors would not be sent at all)"
            : v6.isLoopback ? "the loopback address"
            : v6.isMulticast ? "a multicast address"
            : v6.isIPv4Mapped ? "an IPv4-mapped address"
            : !linkLocal && v6.isLinkLocal ? "link-local: a client's WireGuard peer would drop an error from it (its allowed IPs never cover fe80::/10); use a global address of the gateway inside lan_prefix or on the tunnel"
            : nil
        guard let what else { return address }
        fail(at, "\(key): \(v6) is \(what); an ICMPv6 error's source must be a unicast address the gateway holds (RFC 4443 2.2)")
        return nil
    }

    mutating func path(_ entry: Tree.Entry?) -> (String, SourceLocation)? {
        guard let (text, at) = scalar(entry) else { return nil }
        guard !text.isEmpty, !text.utf8.contains(0) else {
            fail(at, "\(entry!.key): expected a file path")
            return nil
        }
        return (text, at)
    }

    /// A path the daemon creates or mounts things under: absolute (the daemon runs in `/` under
    /// systemd, so a relative one would land wherever it was started), without `.` or `..`
    /// components (what it names must be what is checked and shown), never a pasted key.
    /// `include_dir` may be relative: it is resolved against the main file, not the working directory.
    mutating func runtimePath(_ entry: Tree.Entry?, relativeAllowed: Bool = false) -> (String, SourceLocation)? {
        guard let (text, at) = path(entry) else { return nil }
        if let problem = Self.runtimePathProblem(text, relativeAllowed: relativeAllowed) {
            fail(at, "\(entry!.key): \(problem)")
            return nil
        }
        return (text, at)
    }

    static func runtimePathProblem(_ text: String, relativeAllowed: Bool) -> String? {
        if Scalars.holdsKey(text) { return "looks like a key, not a path" }
        guard relativeAllowed || text.hasPrefix("/") else {
            return "\(Scalars.quoted(text)) is not an absolute path (it would depend on the daemon's working directory)"
        }
        guard !text.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else {
            return "\(Scalars.quoted(text)) has a . or .. component; write the path it stands for"
        }
        return nil
    }

    // MARK: sections

    mutating func decode(_ tree: Tree) -> Configuration {
        var config = Configuration()
        guard let top = mapping(tree, "the configuration", known: ConfigKeys.top) else { return config }
        // An empty section is the same as an absent one.
        let section = { (key: String) -> Tree.Entry? in
            guard let entry = top[key], entry.value.kind != .null else { return nil }
            return entry
        }
        if let runtime = section("runtime") { config.runtime = decodeRuntime(runtime) }
        if let wireguard = section("wireguard") { config.devices = decodeDevices(wireguard) }
        if let gateway = section("gateway") { config.gateway = decodeGateway(gateway) }
        for (i, item) in list(top["routes"]?.value, "routes").enumerated() {
            if let route = decodeRoute(item, "routes[\(i)]") { config.routes.append(route) }
        }
        for (i, item) in list(top["proxies"]?.value, "proxies").enumerated() {
            if let proxy = decodeProxy(item, "proxies[\(i)]") { config.proxies.append(proxy) }
        }
        if let policy = section("policy") { config.policy = decodePolicy(policy, limits: limits) }
        return config
    }

    private mutating func decodeRuntime(_ entry: Tree.Entry) -> RuntimeSettings {
        var runtime = RuntimeSettings()
        guard let map = mapping(entry.value, "runtime", known: ConfigKeys.runtime) else { return runtime }
        if let (text, at) = runtimePath(map["status_socket"]) {
            // sun_path holds 108 bytes with the terminating NUL.
            if text.utf8.count > 107 { fail(at, "status_socket: longer than 107 bytes, the most a Unix socket path can be") } else { runtime.statusSocket = text }
        }
        if let (text, _) = runtimePath(map["bpf_pin_root"]) { runtime.bpfPinRoot = text }
        if let (text, _) = runtimePath(map["state_dir"]) { runtime.stateDirectory = text }
        if let (text, at) = scalar(map["status_group"]) {
            if Scalars.isGroup(text) {
                runtime.statusGroup = text
            } else {
                fail(at, "status_group: expected a group name (letters, digits, _ and -, at most 32) or a group number, got \(Scalars.quoted(text))")
            }
        }
        if let (text, at) = scalar(map["route_protocol"]) {
            if let value = Scalars.integer(text, in: 1...255) {
                if let name = ConfigKeys.reservedRouteProtocols[UInt8(value)] {
                    fail(at, "route_protocol: \(value) is the kernel's \"\(name)\" protocol; tagging with it would claim another owner's routes (pick an unused number, such as 77)")
                } else {
                    runtime.routeProtocol = UInt8(value)
                }
            } else {
                fail(at, "route_protocol: expected an integer from 1 to 255, got \(Scalars.quoted(text))")
            }
        }
        if let value = duration(map["wireguard_poll"]) { runtime.wireGuardPoll = value }
        if let value = duration(map["proxy_poll"]) { runtime.proxyPoll = value }
        if let value = duration(map["resync"]) { runtime.resync = value }
        if let (text, at) = runtimePath(map["include_dir"], relativeAllowed: true) { includeDir = (text, at) }
        return runtime
    }

    private mutating func decodeDevices(_ entry: Tree.Entry) -> [DeviceSection] {
        guard let map = mapping(entry.value, "wireguard", known: nil) else { return [] }
        var devices: [DeviceSection] = []
        for name in map.keys.sorted() {
            let deviceEntry = map[name]!
            guard let name = interfaceName(name, "wireguard", at: deviceEntry.keyLocation),
                  let fields = mapping(deviceEntry.value, "wireguard.\(name)", known: ConfigKeys.device) else { continue }
            var device = DeviceSection(name: name, location: deviceEntry.keyLocation)
            if let file = path(fields["private_key_file"]) {
                device.privateKeyFile = file
            } else if fields["private_key_file"] == nil {
                fail(deviceEntry.keyLocation, "wireguard.\(name): missing required key \"private_key_file\"")
            }
            if let port = integer(fields["listen_port"], 1...65535) { device.listenPort = UInt16(port) }
            if let prune = bool(fields["prune_peers"]) { device.prunePeers = prune }
            let items = list(fields["peers"]?.value, "wireguard.\(name).peers")
            device.peers.reserveCapacity(items.count)
            for (i, item) in items.enumerated() {
                if let peer = decodePeer(item, name: "wireguard.\(name).peers[\(i)]", device: devices.count, index: device.peers.count) {
                    device.peers.append(peer)
                }
            }
            devices.append(device)
        }
        return devices
    }

    /// A peer's list item whose tree equals, node for node and location for location, one the
    /// last load decoded without an error decodes to the same section without an error (decoding
    /// a peer reads nothing but its own tree), so that section is taken as it is. Anything else
    /// is decoded; what decodes without an error is kept for the next load, as the place of its
    /// item in its file's kept tree and the place (`device`, `index`) its section takes in the
    /// configuration's devices.
    private mutating func decodePeer(_ tree: Tree, name: @autoclosure () -> String, device: Int, index: Int) -> PeerSection? {
        guard peerMemo != nil else { return decodePeer(tree, name()) }
        let at = tree.location
        peerMemo!.enter(at.file, storage: tree.storage)
        var section: PeerSection?
        var digest: ReadDigest?
        if let (kept, peer) = peerMemo!.kept(at: at),
           peerMemo!.current!.unchanged ? kept.node == tree.index : kept.digest == Self.digest(of: tree, known: &digest) {
            digest = kept.digest
            section = Self.section(tree, peer)
        } else if tree.isKeptPeer {
            // Only the cache's own peer can stand for a reduced item: a bug if it is not there.
            fail(at, "internal error: the configuration cache lost a peer it kept; reload again (the cache is rebuilt)")
            return nil
        } else {
            let before = errors.count
            peerMemo!.decoded += 1
            section = decodePeer(tree, name())
            guard errors.count == before else { return section }
        }
        // Kept for the next load only where it stands in a tree this load keeps.
        if section != nil, peerMemo!.current!.kept === tree.storage {
            peerMemo!.keep(KeptPeer(at, node: tree.index, digest: Self.digest(of: tree, known: &digest), device: device, index: index))
        }
        return section
    }

    /// `tree`'s digest, computed once.
    private static func digest(of tree: Tree, known: inout ReadDigest?) -> ReadDigest {
        if let known { return known }
        known = tree.digest
        return known!
    }

    /// The section `decodePeer` made of `tree`, which decoded without an error to `peer`: the
    /// places of its parts read from the tree again. The preshared key is read after decoding
    /// (`ConfigLoader.readKeys`), as for a decoded peer.
    /// Read without an array of the entries: once per kept peer at every load.
    private static func section(_ tree: Tree, _ peer: DesiredPeer) -> PeerSection {
        var peer = peer
        peer.presharedKey = nil
        var presharedKeyFile: (String, SourceLocation)?
        var allowed: [SourceLocation] = []
        var endpointLocation: SourceLocation?
        // A key given twice would answer with its last entry, as `Fields` does (parsing refuses it).
        tree.forEachEntry(named: ["allowed_ips", "preshared_key_file", "endpoint"]) { name, value in
            switch name {
            case 0: allowed = value.itemLocations
            case 1: presharedKeyFile = value.text.map { ($0, value.location) }
            default: endpointLocation = value.location
            }
        }
        return PeerSection(location: tree.location, presharedKeyFile: presharedKeyFile, peer: peer, allowedIPLocations: allowed,
                           endpointLocation: endpointLocation)
    }

    mutating func decodePeer(_ tree: Tree, _ name: String) -> PeerSection? {
        guard let fields = mapping(tree, name, known: ConfigKeys.peer) else { return nil }
        let at = tree.location
        let peerName = required(fields, "name", in: name, at: at)
        let key = required(fields, "public_key", in: name, at: at)
        var ok = peerName != nil && key != nil
        if let (text, at) = peerName, !Scalars.isPeerName(text) {
            fail(at, "name: \(Scalars.quoted(text)) is not a peer name (letters, digits and . _ @ + -, at most 64)")
            ok = false
        }
        var publicKey: WireGuardKey?
        if let (text, at) = key {
            publicKey = WireGuardKey(base64: text)
            if publicKey == nil {
                fail(at, "public_key: not a WireGuard key (44 characters of base64, as `wg pubkey` prints)")
                ok = false
            }
        }
        var allowed: [IPPrefix] = []
        var allowedAt: [SourceLocation] = []
        var listed: [IPPrefix: SourceLocation] = [:]
        for item in list(fields["allowed_ips"]?.value, "allowed_ips") {
            guard case .scalar(let text, let itemAt) = item.node else {
                fail(item.location, "allowed_ips: expected an IPv6 prefix, got \(item.kindName)")
                ok = false
                continue
            }
            if let prefix = prefix(text, "allowed_ips", at: itemAt) {
                if let first = listed[prefix] {
                    fail(itemAt, "allowed_ips: \(prefix) is listed twice (first at \(first))")
                } else {
                    listed[prefix] = itemAt
                    allowed.append(prefix)
                    allowedAt.append(itemAt)
                }
            } else {
                ok = false
            }
        }
        let errorCount = errors.count
        let endpoint = parse(fields["endpoint"], "an endpoint such as [2001:db8::1]:51820 or vpn.example.com:51820", Scalars.endpoint)
        let keepalive = integer(fields["persistent_keepalive"], 0...65535)
        let presharedKeyFile = path(fields["preshared_key_file"])
        guard ok, errors.count == errorCount, let (text, _) = peerName, let publicKey else { return nil }
        return PeerSection(location: at, presharedKeyFile: presharedKeyFile,
                           peer: DesiredPeer(name: text, publicKey: publicKey, endpoint: endpoint,
                                             persistentKeepalive: UInt16(keepalive ?? 0), allowedIPs: allowed),
                           allowedIPLocations: allowedAt, endpointLocation: fields["endpoint"]?.value.location)
    }

    private mutating func decodeGateway(_ entry: Tree.Entry) -> GatewaySection? {
        guard let fields = mapping(entry.value, "gateway", known: ConfigKeys.gateway) else { return nil }
        let at = entry.keyLocation
        let tunnel = required(fields, "tunnel", in: "gateway", at: at).flatMap { interfaceName($0.text, "tunnel", at: $0.at) }
        let lan = required(fields, "lan", in: "gateway", at: at).flatMap { interfaceName($0.text, "lan", at: $0.at) }
        let lanPrefix = required(fields, "lan_prefix", in: "gateway", at: at).flatMap { prefix($0.text, "lan_prefix", at: $0.at) }
        let proxyNDP = bool(fields["proxy_ndp"]), redirect = bool(fields["redirect"]), anycast = bool(fields["allow_lan_anycast"])
        let unsafeAllowedIPs = bool(fields["allow_unsafe_allowed_ips"])
        if let tunnel, let lan, tunnel == lan, let (_, lanAt) = scalar(fields["lan"]) {
            fail(lanAt, "lan: the LAN and the tunnel must be different interfaces")
        }
        guard let tunnel, let lan, let lanPrefix else { return nil }
        var gateway = GatewaySection(location: at, tunnel: tunnel, lan: lan, lanPrefix: lanPrefix)
        gateway.proxyNDP = proxyNDP ?? true
        gateway.redirect = redirect ?? true
        if let ndp = parse(fields["ndp"], "kernel or datapath", { NeighbourDiscoveryMode(rawValue: $0) }) {
            gateway.ndp = ndp
            if ndp == .datapath, !gateway.redirect, let (_, ndpAt) = scalar(fields["ndp"]) {
                fail(ndpAt, "ndp: datapath needs redirect: true (the LAN's TC program answers the solicitations)")
            }
        }
        gateway.allowLANAnycast = anycast ?? false
        gateway.allowUnsafeAllowedIPs = unsafeAllowedIPs ?? false
        gateway.icmpSourceLAN = icmpSource(fields["icmp_source_lan"], linkLocal: true)
        gateway.icmpSourceTunnel = icmpSource(fields["icmp_source_tunnel"], linkLocal: false)
        if let interval = duration(fields["icmp_ratelimit"], allowZero: true) {
            if interval <= .seconds(3600) {
                gateway.icmpRateLimit = interval
            } else if let (_, at) = scalar(fields["icmp_ratelimit"]) {
                fail(at, "icmp_ratelimit: at most 1h (0 limits nothing)")
            }
        }
        return gateway
    }

    private mutating func decodeRoute(_ tree: Tree, _ name: String) -> RouteEntry? {
        guard let fields = mapping(tree, name, known: ConfigKeys.route) else { return nil }
        let destination = required(fields, "destination", in: name, at: tree.location)
            .flatMap { prefix($0.text, "destination", at: $0.at) }
        let device = required(fields, "device", in: name, at: tree.location).flatMap { interfaceName($0.text, "device", at: $0.at) }
        let gateway = address(fields["gateway"])
        var table = Route.mainTable
        if let (text, at) = scalar(fields["table"]) {
            if let value = Scalars.integer(text, in: 1...UInt64(UInt32.max)), value != 255 {
                table = UInt32(value)
            } else {
                fail(at, "table: expected a table number from 1 to 4294967295 other than 255 (local), got \(Scalars.quoted(text))")
            }
        }
        var metric = DesiredRoute.defaultMetric
        if let (text, at) = scalar(fields["metric"]) {
            if let value = Scalars.integer(text, in: 1...UInt64(UInt32.max)) {
                metric = UInt32(value)
            } else {
                fail(at, "metric: expected an integer from 1 to 4294967295 (the kernel turns 0 into 1024), got \(Scalars.quoted(text))")
            }
        }
        guard let destination, let device else { return nil }
        return RouteEntry(location: tree.location,
                          route: DesiredRoute(destination: destination, device: device, gateway: gateway, table: table, metric: metric))
    }

    private mutating func decodeProxy(_ tree: Tree, _ name: String) -> ProxyEntrySection? {
        guard let fields = mapping(tree, name, known: ConfigKeys.proxy) else { return nil }
        let addressText = required(fields, "address", in: name, at: tree.location)
        let device = required(fields, "device", in: name, at: tree.location).flatMap { interfaceName($0.text, "device", at: $0.at) }
        var address: IPAddress?
        if let (text, at) = addressText {
            address = Scalars.ipv6Address(text)
            if address == nil { fail(at, "address: \(Scalars.quoted(text)) is not an IPv6 address") }
        }
        guard let address, let device else { return nil }
        return ProxyEntrySection(location: tree.location, proxy: DesiredProxy(address: address, device: device))
    }
}
