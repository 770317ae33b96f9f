import Glibc
import Netlink
import Reconciler

/// What a load that succeeded keeps for the next (`ConfigCache.State.kept`):
/// the desired state it made and, for each file, how many peers it lists per device. A reload
/// whose changed drop-in files hold peers and nothing else (one file per peer is the common
/// layout) is then a delta (`ConfigLoader.dropInDelta`): the changed files' peers are decoded,
/// checked against the rest and spliced into the kept desired state, with no merge of every
/// file's tree and no decoding, check or derivation of every peer. Anything else goes the whole
/// way, as a load without a cache does.
struct KeptLoad: Sendable {
    /// Without its devices' peer sections: the desired state holds the peers.
    var configuration: Configuration
    var desired: DesiredState
    /// Resolved, as the main file names it; nil without one (`ConfigLoader.mainFileDelta`
    /// still starts from such a load).
    var includeDir: String?
    /// The main file's peers per device: they come first in each device's list.
    var main: PeerCounts
    /// The include directory's files in reading (name) order.
    var files: [DropInFile]
    /// Allowed IPs, explicit routes and proxies: what `ConfigLimits.objects` counts.
    var objects: Int
    /// What its files spent of the load's budget.
    var used: FileUsage
    /// The watch on the include directory that was in place before its files were read: the
    /// changes it tells since are all the changes (`ConfigLoader.watchedDelta`).
    var watch: IncludeWatch?
    /// Names of the include files that watch does not see change: read at every load.
    var unwatched: [String]
    /// The limits it was loaded under: a delta holds only under the same.
    var limits: ConfigLimits
    /// The root it was loaded under (`ConfigLoader.root`): its include directory and key files
    /// were resolved under it.
    var root: String?
}

/// An include file as the last load read it.
struct DropInFile: Sendable {
    var path: String
    var counts: PeerCounts
    /// It holds `wireguard: {<device>: {peers: [...]}}` and nothing else (`Tree.dropInShape`).
    var peersOnly: Bool
}

/// How many peers a file lists for each device (by index in the desired state's devices); one
/// device without an array, the usual case.
struct PeerCounts: Sendable, Equatable {
    private var device: Int32 = -1
    private var count: Int32 = 0
    private var several: [Int32]?

    init() {}

    init(_ counts: [(device: Int, count: Int)]) {
        let listed = counts.filter { $0.count > 0 }
        if listed.count == 1 {
            device = Int32(listed[0].device)
            count = Int32(listed[0].count)
        } else if listed.count > 1 {
            var all = [Int32](repeating: 0, count: (listed.map(\.device).max() ?? 0) + 1)
            for (d, n) in listed { all[d] += Int32(n) }
            several = all
        }
    }

    subscript(device: Int) -> Int {
        if let several { return several.indices.contains(device) ? Int(several[device]) : 0 }
        return Int(self.device) == device ? Int(count) : 0
    }
}

extension Tree {
    /// The peers a file's tree lists per device name (the items of `wireguard.<device>.peers`),
    /// and whether that is all it holds: an empty document, or `wireguard` alone, each device
    /// a mapping with `peers` alone, a list.
    var dropInShape: (counts: [(device: String, items: [Tree])], peersOnly: Bool) {
        if kind == .null { return ([], true) }
        guard kind == .mapping else { return ([], false) }
        var peersOnly = true
        var counts: [(device: String, items: [Tree])] = []
        for entry in entries {
            guard entry.key == "wireguard" else { peersOnly = false; continue }
            guard entry.value.kind == .mapping else { peersOnly = false; continue }
            for device in entry.value.entries {
                guard device.value.kind == .mapping else { peersOnly = false; continue }
                for field in device.value.entries {
                    guard field.key == "peers", field.value.kind == .sequence else { peersOnly = false; continue }
                    counts.append((device.key, field.value.items))
                }
                if device.value.entries.count != 1 { peersOnly = false }
            }
        }
        return (counts, peersOnly)
    }
}

extension ConfigLoader {
    /// The most changed files (and peers in them) a delta takes; more, and the load goes the
    /// whole way (a splice costs a copy of the arrays each).
    static let deltaFiles = 256
    static let deltaPeers = 1024

    /// The kept load for the next, made from a load that succeeded: `shapes` are its files'
    /// (`Tree.dropInShape`), main first, named by `files`. Nil when its counts do not add up
    /// to the desired state's peers (never, while the decoder reads peers where the shape looks).
    static func keptLoad(_ configuration: Configuration, _ desired: DesiredState, files: [String], round: CacheRound, limits: ConfigLimits,
                         root: String?) -> KeptLoad? {
        guard let shapes = round.shapes else { return nil }
        guard shapes.count == files.count, !files.isEmpty else { return nil }
        // A preshared key file is read at every load: a delta would not read the kept peers'.
        for device in configuration.devices where device.peers.hasKeyFiles { return nil }
        var index: [String: Int] = [:]
        for (d, device) in desired.devices.enumerated() { index[device.name] = d }
        var totals = [Int](repeating: 0, count: desired.devices.count)
        func counts(_ shape: [(device: String, items: Int)]) -> PeerCounts? {
            var counts: [(device: Int, count: Int)] = []
            for (name, items) in shape where items > 0 {
                guard let d = index[name] else { return nil }
                counts.append((d, items))
                totals[d] += items
            }
            return PeerCounts(counts)
        }
        // (No two names are equal under Unicode normalisation: `load` made such a load without a
        // cache.)
        guard let main = counts(shapes[0].counts) else { return nil }
        var dropIns: [DropInFile] = []
        dropIns.reserveCapacity(files.count - 1)
        for (path, shape) in zip(files.dropFirst(), shapes.dropFirst()) {
            guard let fileCounts = counts(shape.counts) else { return nil }
            dropIns.append(DropInFile(path: path, counts: fileCounts, peersOnly: shape.peersOnly))
        }
        guard totals == desired.devices.map(\.peers.count) else { return nil }
        var stripped = configuration
        for d in stripped.devices.indices { stripped.devices[d].peers = PeerSections() }
        let allowed = desired.devices.reduce(0) { $0 + $1.peers.reduce(0) { $0 + $1.allowedIPs.count } }
        return KeptLoad(configuration: stripped, desired: desired, includeDir: configuration.runtime.includeDir, main: main, files: dropIns,
                        objects: allowed + configuration.routes.count + configuration.proxies.count, used: round.used,
                        watch: round.next.watch, unwatched: round.unwatched, limits: limits, root: root)
    }

    /// Whether `kept` was loaded as this loader loads (the same limits, the same root): a delta of
    /// it holds only then.
    func loadedLikeThis(_ kept: KeptLoad) -> Bool { kept.limits == limits && kept.root == root }

    /// A delta of the kept load told by the include directory's watch: the files it names (and
    /// those it cannot watch) are read, no other, and the directory is not listed (an entry
    /// created, deleted or renamed is named too). Nil, having changed nothing the caller's
    /// whole load needs, when the delta does not hold (`dropInDelta`) or a file read has an error.
    func watchedDelta(_ kept: KeptLoad, main: String, changes: IncludeWatch.Changes, resolved: String, real: String, at: SourceLocation,
                      checked: inout Set<String>, round: inout CacheRound) -> LoadedConfig? {
        var names = Set(changes.names.filter(Self.isIncludeName))
        guard names.count <= Self.deltaFiles else { return nil }
        names.formUnion(kept.unwatched)
        var budget = Tree.Budget(limits)
        var errors = ConfigErrorList(limit: limits.errors)
        var trees: [String: Tree] = [:]
        var present: [String] = [], absent: [String] = []
        for name in names.sorted() {
            let file = resolved.appendingPathComponent(name)
            var info = stat()
            guard lstat(file, &info) == 0 else {
                guard errno == ENOENT else { return nil }
                absent.append(file)
                continue
            }
            present.append(file)
            let parsed = round.parsed.count
            guard let tree = read(file, entry: (name, real), budget: &budget, checked: &checked, errors: &errors, round: &round), errors.isEmpty
            else { return nil }
            Self.checkNotNested(tree, errors: &errors)
            guard errors.isEmpty else { return nil }
            if round.parsed.count > parsed { trees[file] = tree }
        }
        return dropInDelta(kept, main: main, files: .named(present: present, absent: absent), trees: trees, used: nil, round: &round,
                           checked: &checked)
    }

    /// Which include files a delta's load has: all of them in order (its reads listed the
    /// directory), or the kept load's with these (`present` now, `absent` now; each read or
    /// looked up this load) in or out.
    enum Listing {
        case all([String])
        case named(present: [String], absent: [String])
    }

    /// Whether two paths are the same bytes (`==` on strings is canonical equivalence: `é` as
    /// one scalar equals `e` and a combining accent, which name different files).
    static func sameBytes(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }

    /// Where in `files` (sorted by path) the one of `path` is.
    static func index(_ files: [DropInFile], _ path: String) -> Int? {
        let i = insertionIndex(files, path)
        return i < files.count && files[i].path == path ? i : nil
    }

    /// The index of the first of `files` (sorted by path) at or after `path`.
    static func insertionIndex(_ files: [DropInFile], _ path: String) -> Int {
        var low = 0, high = files.count
        while low < high {
            let middle = (low + high) / 2
            if files[middle].path < path { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// One file's part of a delta: where it stands among the last load's files (`position`:
    /// the index of the first of them at or after it), what it listed then, and its peers now.
    private struct FileChange {
        enum Kind { case added, changed, removed }
        var kind: Kind
        var position: Int
        var path: String
        var oldCounts = PeerCounts()
        /// Per device, its peers now (none for a removed file).
        var peers: [[DesiredPeer]] = []
        var counts = PeerCounts()
    }

    /// The load as a delta of `kept`. `files`: this load's include files, each read without an
    /// error (`Listing`);
    /// `trees`: those parsed anew (changed or added; `round.parsed`), the others are as the kept
    /// load read them. `used`: what this load's reads spent, when it read every file. Nil,
    /// having changed nothing, unless every changed, added or removed file holds peers alone
    /// and the outcome is certain to be a fresh load's with no error; the caller then loads the
    /// whole way, and reports.
    func dropInDelta(_ kept: KeptLoad, main: String, files listing: Listing, trees: [String: Tree], used: FileUsage?, round: inout CacheRound,
                     checked: inout Set<String>) -> LoadedConfig? {
        // Groups name peers: a changed peer could change a group's meaning.
        guard kept.configuration.policy == nil, round.parsed.count <= Self.deltaFiles else { return nil }
        let parsed = Set(round.parsed)
        let devices = kept.desired.devices
        var index: [String: Int] = [:]
        for (d, device) in devices.enumerated() { index[device.name] = d }

        var decoder = Decoder(errors: ConfigErrorList(limit: limits.errors))
        decoder.limits = limits
        var decoded = 0
        /// A changed or added file's peers, decoded; false unless it holds peers alone, of kept
        /// devices, each without an error and without a key file.
        func decode(_ path: String, into change: inout FileChange) -> Bool {
            guard let tree = trees[path] else { return false }
            let shape = tree.dropInShape
            guard shape.peersOnly else { return false }
            change.peers = [[DesiredPeer]](repeating: [], count: devices.count)
            var counts: [(device: Int, count: Int)] = []
            for (name, items) in shape.counts {
                guard let d = index[name] else { return false }
                decoded += items.count
                guard decoded <= Self.deltaPeers else { return false }
                for (k, item) in items.enumerated() {
                    guard let section = decoder.decodePeer(item, "wireguard.\(name).peers[\(k)]"), section.presharedKeyFile == nil,
                          decoder.errors.isEmpty else { return false }
                    change.peers[d].append(section.peer)
                }
                counts.append((d, items.count))
            }
            change.counts = PeerCounts(counts)
            return true
        }

        var changes: [FileChange] = []
        switch listing {
        case .all(let files):
            // (No two of them are equal under Unicode normalisation: `load` read such a directory
            // without a cache. One equal to a kept file's is told apart by its bytes, below.)
            // The last load's files and this one's are both in name order: one walk pairs them.
            // An added file comes before the last load's file at its position.
            var i = 0, j = 0
            while i < kept.files.count || j < files.count {
                if j == files.count || (i < kept.files.count && kept.files[i].path < files[j]) {
                    guard kept.files[i].peersOnly else { return nil }
                    changes.append(FileChange(kind: .removed, position: i, path: kept.files[i].path, oldCounts: kept.files[i].counts))
                    i += 1
                } else if i == kept.files.count || files[j] < kept.files[i].path {
                    var change = FileChange(kind: .added, position: i, path: files[j])
                    guard decode(files[j], into: &change) else { return nil }
                    changes.append(change)
                    j += 1
                } else {
                    guard Self.sameBytes(kept.files[i].path, files[j]) else { return nil }
                    if parsed.contains(files[j]) {
                        var change = FileChange(kind: .changed, position: i, path: files[j], oldCounts: kept.files[i].counts)
                        guard kept.files[i].peersOnly, decode(files[j], into: &change) else { return nil }
                        changes.append(change)
                    }
                    i += 1
                    j += 1
                }
                guard changes.count <= Self.deltaFiles else { return nil }
            }
        case .named(let present, let absent):
            // Each added file comes before the kept one at its position, in name order.
            for path in absent {
                guard let i = Self.index(kept.files, path) else { continue }
                guard Self.sameBytes(kept.files[i].path, path), kept.files[i].peersOnly else { return nil }
                changes.append(FileChange(kind: .removed, position: i, path: path, oldCounts: kept.files[i].counts))
            }
            for path in present where path != main {
                if let i = Self.index(kept.files, path) {
                    // Found by a name equal only under Unicode normalisation: another file.
                    guard Self.sameBytes(kept.files[i].path, path) else { return nil }
                    guard parsed.contains(path) else { continue }
                    var change = FileChange(kind: .changed, position: i, path: path, oldCounts: kept.files[i].counts)
                    guard kept.files[i].peersOnly, decode(path, into: &change) else { return nil }
                    changes.append(change)
                } else {
                    var change = FileChange(kind: .added, position: Self.insertionIndex(kept.files, path), path: path)
                    guard decode(path, into: &change) else { return nil }
                    changes.append(change)
                }
            }
            changes.sort { ($0.position, $0.kind == .added ? 0 : 1, $0.path) < ($1.position, $1.kind == .added ? 0 : 1, $1.path) }
            let count = kept.files.count + changes.reduce(0) { $0 + ($1.kind == .added ? 1 : $1.kind == .removed ? -1 : 0) }
            guard changes.count <= Self.deltaFiles, count <= limits.includeFiles else { return nil }
        }

        // Where each change starts in each device's peers: after the main file's and those of
        // the files before it.
        var starts: [[Int]] = []
        starts.reserveCapacity(changes.count)
        var running = devices.indices.map { kept.main[$0] }
        var file = 0
        for change in changes {
            while file < change.position {
                for d in devices.indices { running[d] += kept.files[file].counts[d] }
                file += 1
            }
            starts.append(running)
        }
        let splices = changes.indices.map { c in
            PeerSplice(replaced: devices.indices.map { d in starts[c][d] ..< starts[c][d] + changes[c].oldCounts[d] },
                       peers: changes[c].peers.isEmpty ? [[DesiredPeer]](repeating: [], count: devices.count) : changes[c].peers)
        }
        guard let (desired, objects) = spliced(kept, splices, checked: &checked) else { return nil }

        // What this load's files spent of its budget: the kept load's, with the files read now
        // in place of what they were.
        var spent = used ?? kept.used
        if used == nil {
            for change in changes {
                if change.kind != .added {
                    guard let old = round.previous.files[change.path] else { return nil }
                    spent = spent - old.usage
                }
                if change.kind != .removed {
                    guard let new = round.next.files[change.path] else { return nil }
                    spent = spent + new.usage
                }
            }
            guard Tree.Budget(limits).charging(spent) != nil else { return nil }
            round.next.statistics.watched = true
            // Only the files read this load are in the round's: the others are the kept load's.
            round.adoptKeptFiles(removing: changes.filter { $0.kind == .removed }.map(\.path))
        }

        var configuration = kept.configuration
        // What the next load keeps: the new counts, and the cache's places of the kept files'
        // peers moved by the changes before them. A changed or added file's peers are decoded
        // again by the next whole load, if one comes.
        var next = kept
        next.configuration = configuration
        next.desired = desired
        next.objects = objects
        next.used = spent
        next.watch = round.next.watch
        // Every file the watch does not see was read this load (`watchedDelta` reads them all).
        next.unwatched = round.unwatched
        if changes.allSatisfy({ $0.kind == .changed && $0.counts == $0.oldCounts }) {
            // The same files, each listing as many peers as before (an edit): the list and every
            // other file's kept places stand.
            for change in changes { round.forgetPeers(of: change.path) }
        } else {
            var dropIns: [DropInFile] = []
            dropIns.reserveCapacity(kept.files.count + changes.count)
            var shift = [Int](repeating: 0, count: devices.count)
            var c = 0
            for position in 0 ... kept.files.count {
                var own: FileChange?
                while c < changes.count, changes[c].position == position {
                    let change = changes[c]
                    c += 1
                    for d in devices.indices { shift[d] += change.counts[d] - change.oldCounts[d] }
                    if change.kind != .removed {
                        dropIns.append(DropInFile(path: change.path, counts: change.counts, peersOnly: true))
                        round.forgetPeers(of: change.path)
                    }
                    if change.kind != .added {
                        own = change
                        break
                    }
                }
                guard position < kept.files.count, own == nil else { continue }
                dropIns.append(kept.files[position])
                if shift.contains(where: { $0 != 0 }) { round.shiftPeers(of: kept.files[position].path, by: shift) }
            }
            next.files = dropIns
            configuration.files = [main] + dropIns.map(\.path)
        }
        next.configuration = configuration
        round.next.kept = next
        round.next.devices = desired.devices
        round.next.statistics.peersDecoded = decoded
        round.next.statistics.delta = true
        return LoadedConfig(configuration: configuration, desired: desired)
    }

    /// Peers of a kept load replaced: for each device, `kept.desired`'s peers in `replaced` by `peers`.
    struct PeerSplice {
        var replaced: [Range<Int>]
        var peers: [[DesiredPeer]]
    }

    /// The kept load's desired state with `splices` (in the order of their places, none
    /// overlapping) made, and its objects counted again (`ConfigLimits.objects`); nil, having
    /// changed nothing, unless the outcome is certain to be a fresh load's with no error: the
    /// limits, the devices' keys read again, the checks that span peers (`DeltaChecks`).
    func spliced(_ kept: KeptLoad, _ splices: [PeerSplice], checked: inout Set<String>) -> (desired: DesiredState, objects: Int)? {
        let devices = kept.desired.devices
        var objects = kept.objects, peerCount = kept.desired.peerCount
        for splice in splices {
            for d in devices.indices {
                objects += splice.peers[d].reduce(0) { $0 + $1.allowedIPs.count }
                objects -= devices[d].peers[splice.replaced[d]].reduce(0) { $0 + $1.allowedIPs.count }
                peerCount += splice.peers[d].count - splice.replaced[d].count
            }
        }
        guard peerCount <= limits.peers, objects <= limits.objects,
              devicesKeysUnchanged(kept, checked: &checked),
              DeltaChecks(kept, added: splices.map(\.peers), replaced: splices.map(\.replaced)).passed else { return nil }

        // Spliced last first, so that every earlier one's places still hold.
        var desired = kept.desired
        for splice in splices.reversed() {
            for d in devices.indices where !splice.replaced[d].isEmpty || !splice.peers[d].isEmpty {
                desired.devices[d].peers.replaceSubrange(splice.replaced[d], with: splice.peers[d])
            }
        }
        if let gateway = kept.configuration.gateway, let t = devices.firstIndex(where: { $0.name == gateway.tunnel }) {
            spliceDerived(&desired, gateway: gateway, old: devices[t].peers, changes: splices.map { ($0.replaced[t], $0.peers[t]) })
        }
        return (desired, objects)
    }

    /// The devices' private keys read again (a reload re-reads key files): a delta holds only
    /// while each is what the kept load read.
    func devicesKeysUnchanged(_ kept: KeptLoad, checked: inout Set<String>) -> Bool {
        for device in kept.configuration.devices {
            guard let (path, at) = device.privateKeyFile else { continue }
            var errors = ConfigErrorList(limit: 1)
            guard let key = readKey("private_key_file", path, at: at, checked: &checked, errors: &errors), errors.isEmpty,
                  device.privateKey == PrivateKey(key) else { return false }
        }
        return true
    }

    /// The routes, proxy entries, map entries and answered addresses of the tunnel's peers,
    /// spliced as its peers were: each change replaces `old[range]` by `peers`. The derived
    /// objects lie in peer order (`Configuration.desiredState`), the LAN prefix's route and map
    /// entry first, the explicit ones after.
    private func spliceDerived(_ desired: inout DesiredState, gateway: GatewaySection, old: [DesiredPeer],
                               changes: [(range: Range<Int>, peers: [DesiredPeer])]) {
        struct Derived {
            var routes: [DesiredRoute] = []
            var entries: [DatapathEntry] = []
            var proxies: [DesiredProxy] = []
            var answered: [IPAddress] = []
        }
        func derived(_ peers: some Sequence<DesiredPeer>) -> Derived {
            var result = Derived()
            for peer in peers {
                let origin = Origin.peer(peer.name)
                for prefix in peer.allowedIPs {
                    result.routes.append(gateway.peerRoute(prefix, origin))
                    result.entries.append(DatapathEntry(direction: .lanToTunnel, prefix: prefix))
                    switch gateway.neighbourAnswer(prefix) {
                    case .proxy: result.proxies.append(gateway.peerProxy(prefix, origin))
                    case .datapath: result.answered.append(prefix.address)
                    case .none, .notHost: break
                    }
                }
            }
            return result
        }
        /// How many of each the peers before `index` derive.
        struct Offsets { var allowed = 0, proxies = 0, answered = 0 }
        var points = Set<Int>()
        for change in changes { points.insert(change.range.lowerBound); points.insert(change.range.upperBound) }
        var at: [Int: Offsets] = [:]
        var running = Offsets()
        var next = 0
        for point in points.sorted() {
            while next < point {
                for prefix in old[next].allowedIPs {
                    running.allowed += 1
                    switch gateway.neighbourAnswer(prefix) {
                    case .proxy: running.proxies += 1
                    case .datapath: running.answered += 1
                    case .none, .notHost: break
                    }
                }
                next += 1
            }
            at[point] = running
        }
        for change in changes.reversed() {
            let from = at[change.range.lowerBound]!, to = at[change.range.upperBound]!
            let new = derived(change.peers)
            // The LAN prefix's route and map entry come first.
            desired.routes.replaceSubrange(1 + from.allowed ..< 1 + to.allowed, with: new.routes)
            desired.proxies.replaceSubrange(from.proxies ..< to.proxies, with: new.proxies)
            desired.datapath?.entries.replaceSubrange(1 + from.allowed ..< 1 + to.allowed, with: new.entries)
            desired.datapath?.neighbourDiscovery?.addresses.replaceSubrange(from.answered ..< to.answered, with: new.answered)
        }
    }
}

/// The checks that span peers (`Configuration.checkPeers`, `checkAllowedIPs`, the derivation's
/// collisions) for a delta: what the added peers could break against the kept ones and each
/// other, given that the kept load broke none. A failed check is not reported: the load then
/// goes the whole way, and reports it as a fresh load does.
private struct DeltaChecks {
    let passed: Bool

    init(_ kept: KeptLoad, added: [[[DesiredPeer]]], replaced: [[Range<Int>]]) {
        passed = Self.check(kept, added: added, replaced: replaced)
    }

    private struct Key: Hashable {
        var device: Int
        var key: WireGuardKey
    }

    private static func check(_ kept: KeptLoad, added: [[[DesiredPeer]]], replaced: [[Range<Int>]]) -> Bool {
        let devices = kept.desired.devices
        let configuration = kept.configuration
        let gateway = configuration.gateway
        let tunnel = gateway.flatMap { g in devices.firstIndex { $0.name == g.tunnel } }
        // The allowed-IP rules on the tunnel (`checkAllowedIPs`), unless the gateway waives them.
        let strict = gateway.map { !$0.allowUnsafeAllowedIPs } ?? false

        var names = Set<String>(), keys = Set<Key>(), prefixes = Set<IPPrefix>()
        var perDevice = [[(prefix: IPPrefix, peer: Int)]](repeating: [], count: devices.count)
        var endpoints: [IPAddress] = [], tunnelPrefixes: [IPPrefix] = []
        var peer = 0
        // Each device's own keys, public and private: the public one derived (X25519) once a delta.
        var ownKeys: [Int: [WireGuardKey]] = [:]
        for change in added {
            for (d, peers) in change.enumerated() {
                for new in peers {
                    peer += 1
                    guard names.insert(new.name).inserted, keys.insert(Key(device: d, key: new.publicKey)).inserted else { return false }
                    if ownKeys[d] == nil {
                        ownKeys[d] = configuration.devices.first(where: { $0.name == devices[d].name })?.privateKey.map { [$0.publicKey, $0.key] } ?? []
                    }
                    if ownKeys[d]!.contains(new.publicKey) { return false }
                    if case .address(let endpoint)? = new.endpoint { endpoints.append(endpoint.address) }
                    for prefix in new.allowedIPs {
                        guard prefixes.insert(prefix).inserted else { return false }
                        // One peer's prefix inside another's on the same device.
                        if perDevice[d].contains(where: { $0.peer != peer && ($0.prefix.contains(prefix) || prefix.contains($0.prefix)) }) { return false }
                        perDevice[d].append((prefix, peer))
                        guard d == tunnel, let gateway else { continue }
                        if strict, Configuration.unsafe(prefix, lanPrefix: gateway.lanPrefix) != nil { return false }
                        tunnelPrefixes.append(prefix)
                        if gateway.neighbourAnswer(prefix) == .notHost { return false }
                    }
                }
            }
        }
        // What the added prefixes derive must not collide with an explicit route or proxy entry.
        if let gateway, !tunnelPrefixes.isEmpty {
            var explicit = Set(configuration.routes.map(\.route.identity))
            explicit.insert(DesiredRoute(destination: gateway.lanPrefix, device: gateway.lan, origin: .lanPrefix).identity)
            let proxies = Set(configuration.proxies.filter { $0.proxy.device == gateway.lan }.map(\.proxy.address))
            for prefix in tunnelPrefixes {
                if explicit.contains(gateway.peerRoute(prefix, .peer("")).identity) { return false }
                if gateway.neighbourAnswer(prefix) == .proxy, proxies.contains(prefix.address) { return false }
            }
        }
        // A literal endpoint inside a route via the tunnel: a routing loop (`checkEndpoints`).
        let tunnelRoutes = gateway.map { g in configuration.routes.filter { $0.route.device == g.tunnel }.map(\.route.destination) } ?? []
        if strict {
            for endpoint in endpoints where tunnelPrefixes.contains(where: { $0.contains(endpoint) }) || tunnelRoutes.contains(where: { $0.contains(endpoint) }) {
                return false
            }
        }

        // Against every kept peer that stays.
        // Compared one by one when few (most reloads change a peer or two), hashed when many.
        let fewNames = names.count <= 8 ? Array(names) : nil, fewKeys = keys.count <= 8 ? Array(keys) : nil
        let fewPrefixes = prefixes.count <= 8 ? Array(prefixes) : nil
        func named(_ name: String) -> Bool { fewNames?.contains(name) ?? names.contains(name) }
        func keyed(_ key: Key) -> Bool { fewKeys?.contains(key) ?? keys.contains(key) }
        func claimed(_ prefix: IPPrefix) -> Bool { fewPrefixes?.contains(prefix) ?? prefixes.contains(prefix) }
        // Read in place, not each peer copied (10 000 of them at every reload).
        func clashes(_ peer: UnsafePointer<DesiredPeer>, device d: Int, near: [(prefix: IPPrefix, peer: Int)], watchEndpoints: Bool) -> Bool {
            if named(peer.pointee.name) || keyed(Key(device: d, key: peer.pointee.publicKey)) { return true }
            for prefix in peer.pointee.allowedIPs {
                if claimed(prefix) { return true }
                if near.contains(where: { $0.prefix.contains(prefix) || prefix.contains($0.prefix) }) { return true }
                if watchEndpoints, endpoints.contains(where: { prefix.contains($0) }) { return true }
            }
            if strict, !tunnelPrefixes.isEmpty, case .address(let endpoint)? = peer.pointee.endpoint,
               tunnelPrefixes.contains(where: { $0.contains(endpoint.address) }) { return true }
            return false
        }
        for (d, device) in devices.enumerated() {
            let gaps = replaced.map { $0[d] }.filter { !$0.isEmpty }
            let near = perDevice[d]
            let watchEndpoints = strict && d == tunnel && !endpoints.isEmpty
            let clash = device.peers.withUnsafeBufferPointer { peers in
                var gap = 0
                for k in peers.indices {
                    while gap < gaps.count, gaps[gap].upperBound <= k { gap += 1 }
                    if gap < gaps.count, gaps[gap].contains(k) { continue }
                    if clashes(peers.baseAddress! + k, device: d, near: near, watchEndpoints: watchEndpoints) { return true }
                }
                return false
            }
            if clash { return false }
        }
        return true
    }
}
