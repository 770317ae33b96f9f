import FoundationEssentials
import Glibc
import Netlink
import Reconciler

/// A configuration that passed every check, and the desired state it expands to.
public struct LoadedConfig: Sendable {
    public var configuration: Configuration
    public var desired: DesiredState

    /// `Configuration.absentPolicyNames` against the desired state's peers, which stay when the
    /// sections go.
    public var absentPolicyNames: [String] {
        // Without a policy, no set of every peer's name (a reload of 10 000 peers asks).
        guard configuration.policy != nil else { return [] }
        return configuration.absentPolicyNames(peers: Set(desired.devices.flatMap { $0.peers.map(\.name) }))
    }

    /// `2 devices, 3 peers, 5 routes, 2 proxies`.
    public var summary: String {
        func count(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : word.hasSuffix("y") ? "" : "s")" }
        return [count(desired.devices.count, "device"), count(desired.peerCount, "peer"),
                count(desired.routes.count, "route"), "\(desired.proxies.count) \(desired.proxies.count == 1 ? "proxy" : "proxies")"]
            .joined(separator: ", ")
    }
}

/// Reads the main file and its `include_dir`, validates everything, reads the key files and
/// derives the desired state. Every problem is reported, not only the first.
public struct ConfigLoader: Sendable {
    /// When set, absolute paths in the configuration (key files, `include_dir`) are read under
    /// this directory: checking an image or a test fixture instead of the running system.
    public var root: String?
    public var limits: ConfigLimits

    public init(root: String? = nil, limits: ConfigLimits = .standard) {
        self.root = root
        self.limits = limits
    }

    /// With a `cache`, files and peers unchanged since the cache's last load are not read,
    /// parsed or decoded again (see `ConfigCache`); the outcome is the same as without one.
    public func load(path: String, cache: ConfigCache? = nil) -> Result<LoadedConfig, ConfigErrors> {
        var round = CacheRound(previous: cache?.take() ?? ConfigCache.State(), keeping: cache != nil, now: cache?.now ?? realtimeNow,
                               watching: cache?.watches ?? false)
        defer { if let cache { cache.store(round.next) } }
        // What was kept, while the main file's tree is outdated: a load that needs that tree
        // whole starts again from it, the file parsed anew.
        let kept = round.previous.files[path]?.outdated == true ? round.previous : nil
        if let result = load(path, deltas: cache?.deltas == true, round: &round) { return result }
        // (Never without an outdated tree, nor twice: the second attempt keeps none.)
        let lost = Result<LoadedConfig, ConfigErrors>.failure(ConfigErrors([ConfigError(SourceLocation(file: path, line: 1, column: 1),
            "internal error: the configuration cache lost the main file's tree; reload again")]))
        guard var previous = kept else { return lost }
        // (The first attempt took the include directory's watch's events: a new watch is made,
        // and every file read. Nothing kept, no delta is tried.)
        previous.files[path] = nil
        previous.watch = nil
        previous.kept = nil
        round = CacheRound(previous: previous, keeping: true, now: round.now, watching: round.watching)
        return load(path, deltas: cache?.deltas == true, round: &round) ?? lost
    }

    /// One attempt of `load`: nil when the main file's outdated tree (`CachedFile.outdated`),
    /// taken for the sections beside its peers, turns out to be needed whole.
    private func load(_ path: String, deltas: Bool, round: inout CacheRound) -> Result<LoadedConfig, ConfigErrors>? {
        var errors = ConfigErrorList(limit: limits.errors)
        var files = [path]
        var budget = Tree.Budget(limits)
        var checked = Set<String>()
        // A change to the main file's peer items alone: a delta that parses those items.
        if deltas, let loaded = mainFileDelta(path, round: &round, checked: &checked) { return .success(loaded) }
        guard var tree = read(path, budget: &budget, checked: &checked, errors: &errors, round: &round) else {
            // Nothing decoded: the main file's kept tree (when it was refused, not changed)
            // still names the last load's peers, which stay with it.
            round.next.devices = round.previous.devices
            return .failure(errors.sorted(files: files))
        }

        var includeDir: String?
        // A path the decoder refuses (a pasted key, `..`) is reported by it and never opened.
        if case .scalar(let dir, let at)? = tree.lookup("runtime", "include_dir")?.node, !dir.isEmpty,
           Decoder.runtimePathProblem(dir, relativeAllowed: true) == nil {
            let resolved = resolve(dir, relativeTo: path)
            includeDir = resolved
            let real = trustedIncludeDirectory(resolved, at: at, checked: &checked, errors: &errors)
            /// The kept load a delta may start from: of this include directory, with no error so
            /// far and the main file as that load read it.
            func deltaBase() -> KeptLoad? {
                guard deltas, errors.isEmpty, let kept = round.previous.kept, kept.includeDir == resolved, loadedLikeThis(kept),
                      !round.parsed.contains(path) else { return nil }
                return kept
            }
            // With a watch on the directory since the kept load, only the files it names are read.
            if let real, deltas, let changes = round.watch(real), let kept = deltaBase(), kept.watch === round.next.watch,
               let loaded = watchedDelta(kept, main: path, changes: changes, resolved: resolved, real: real, at: at, checked: &checked, round: &round) {
                return .success(loaded)
            }
            var trees = [tree]
            var parsedTrees: [String: Tree] = [:]
            let names = real == nil ? [] : includeNames(resolved, at: at, errors: &errors)
            // Names equal only under Unicode normalisation (`é` as one scalar, and as `e` with a
            // combining accent) are different files that Swift's strings, and so the cache's
            // tables keyed by path, take for one: such a load is made again without a cache
            // (the main file's tree may be the cache's, its peers reduced), and keeps nothing.
            if round.keeping, zip(names, names.dropFirst()).contains(where: { $0 == $1 }) {
                round = CacheRound(previous: ConfigCache.State(), keeping: false, now: round.now, watching: false)
                return ConfigLoader(root: root, limits: limits).load(path: path)
            }
            round.next.files.reserveCapacity(names.count + 1)
            for name in names {
                let file = resolved.appendingPathComponent(name)
                files.append(file)
                let parsed = round.parsed.count
                guard let included = read(file, entry: (name, real ?? resolved), budget: &budget, checked: &checked, errors: &errors, round: &round)
                else { continue }
                Self.checkNotNested(included, errors: &errors)
                trees.append(included)
                if round.parsed.count > parsed { parsedTrees[file] = included }
            }
            if let kept = deltaBase(),
               let loaded = dropInDelta(kept, main: path, files: .all(Array(files.dropFirst())), trees: parsedTrees, used: FileUsage(spent: budget),
                                        round: &round, checked: &checked) {
                return .success(loaded)
            }
            if round.outdatedTree { return nil }
            // What a delta of the next load needs, if this one succeeds.
            if round.keeping, errors.isEmpty {
                round.shapes = trees.map(CacheRound.shape)
                round.used = FileUsage(spent: budget)
            }
            tree = Tree.merge(trees, path: "", errors: &errors)
        } else if round.outdatedTree {
            return nil
        } else if round.keeping, errors.isEmpty {
            round.shapes = [CacheRound.shape(tree)]
            round.used = FileUsage(spent: budget)
        }

        return validate(consume tree, files: files, includeDir: includeDir, errors: errors, peers: &round) { readKeys(&$0, checked: &checked, errors: &$1) }
    }

    /// Everything after parsing, the same for a file and for bytes (`load(text:)`): decoding,
    /// the keys (`keys` reads or stands in for them), the checks that span objects, derivation.
    /// The tree is let go once decoded (the cache keeps its own reduced copy), before the checks
    /// and the derivation: a reload's peak is lower by the tree of the file it parsed.
    func validate(_ tree: consuming Tree, files: [String], includeDir: String?, errors: ConfigErrorList, peers round: inout CacheRound,
                  keys: (inout Configuration, inout ConfigErrorList) -> Void) -> Result<LoadedConfig, ConfigErrors> {
        var errors = errors
        var decoder = Decoder(errors: ConfigErrorList(limit: limits.errors))
        decoder.limits = limits
        if round.keeping {
            decoder.peerMemo = Decoder.PeerMemo(previous: round.previous, kept: round.next.files.mapValues(\.tree.storage))
        }
        var configuration = decoder.decode(tree)
        _ = consume tree
        decoder.peerMemo?.flush()
        if let memo = decoder.peerMemo {
            // Each kept file in place (thousands in a conf.d): its peers as this load took them.
            for file in Array(round.next.files.keys) {
                let peers = memo.next[file] ?? []
                let reduced = round.next.files[file]!.keptPeerItems
                if peers.isEmpty, reduced > 0 {
                    round.next.files[file] = Self.keptUndecoded(round.next.files[file]!, devices: round.previous.devices)
                } else if reduced == 0, !peers.isEmpty {
                    round.next.files[file] = Self.reduced(round.next.files[file]!, peers: peers)
                } else if Self.reducedItems(peers, in: round.next.files[file]!.tree) != reduced {
                    // Reduced items this load did not take (its part was not decoded; other
                    // items of the file may have been, as many): the file is read and parsed
                    // again next time.
                    round.next.files[file] = nil
                } else {
                    round.next.files[file]!.peers = Self.sortedByPlace(peers)
                    if !round.next.files[file]!.ownPeers.isEmpty { round.next.files[file]!.ownPeers = [] }
                }
                // A parsed tree kept as it is (none of its items decoded): its items' digests go.
                if let tree = round.next.files[file]?.tree, !tree.storage.itemDigests.isEmpty {
                    round.next.files[file]!.tree = tree.withoutItemDigests
                }
            }
            round.next.statistics.peersDecoded = memo.decoded
        }
        // The last load's trees and sections are no longer needed: freed before derivation.
        decoder.peerMemo = nil
        round.previous = ConfigCache.State()
        errors += decoder.errors
        configuration.files = files
        configuration.runtime.includeDir = includeDir
        configuration.checkObjectLimits(limits, errors: &errors)
        keys(&configuration, &errors)
        configuration.checkPeers(errors: &errors)
        configuration.checkAllowedIPs(errors: &errors)
        let desired = configuration.desiredState(errors: &errors)
        // Its devices are the configuration's, one for one, each peer at its section's place.
        if round.keeping { round.next.devices = desired.devices }
        guard errors.isEmpty else { return .failure(errors.sorted(files: files)) }
        round.next.kept = Self.keptLoad(configuration, desired, files: files, round: round, limits: limits, root: root)
        return .success(LoadedConfig(configuration: configuration, desired: desired))
    }

    /// A file this load parsed, what the cache keeps of its peers' items reduced.
    private static func reduced(_ file: CachedFile, peers: [KeptPeer]) -> CachedFile {
        var file = file, peers = peers
        let (tree, moved) = file.tree.keepingPeers(Set(peers.map(\.node)))
        file.tree = tree
        file.keptPeerItems = moved.count
        // A peer whose item was not reduced (none, while peers are read where the reducer
        // looks) is decoded again next time.
        peers = peers.compactMap { peer in moved[peer.node].map { var peer = peer; peer.node = $0; return peer } }
        file.peers = sortedByPlace(peers)
        file.ownPeers = []
        return file
    }

    /// A file kept through this load without being decoded (refused for its mode, say): its
    /// peers are copied out of the last desired state, which goes now. Nil when one is missing:
    /// every reduced item must have its peer, or the file is read again next time.
    private static func keptUndecoded(_ file: CachedFile, devices: [DesiredWireGuardDevice]) -> CachedFile? {
        var file = file
        var own: [DesiredPeer] = []
        for p in file.peers.indices {
            guard let peer = file.peer(file.peers[p], devices: devices) else { return nil }
            file.peers[p].device = KeptPeer.own
            file.peers[p].index = UInt32(own.count)
            own.append(peer)
        }
        file.ownPeers = own
        return file
    }

    /// How many of `tree`'s reduced items `peers` name (an item an alias lists twice is one);
    /// a peer decoded from an item that is not reduced is not counted.
    private static func reducedItems(_ peers: [KeptPeer], in tree: Tree) -> Int {
        let nodes = tree.storage.nodes
        var count = 0, last: UInt32?, ascending = true
        for peer in peers where nodes[Int(peer.node)].isKeptPeer {
            if let last, peer.node <= last { ascending = false }
            last = peer.node
            count += 1
        }
        if ascending { return count }
        return Set(peers.lazy.map(\.node).filter { nodes[Int($0)].isKeptPeer }).count
    }

    /// By place (line, then column): as decoded, unless devices of one file were decoded out of order.
    private static func sortedByPlace(_ peers: [KeptPeer]) -> [KeptPeer] {
        func before(_ a: KeptPeer, _ b: KeptPeer) -> Bool { (a.line, a.column) < (b.line, b.column) }
        if zip(peers, peers.dropFirst()).allSatisfy({ before($0, $1) }) { return peers }
        return peers.sorted(by: before)
    }

    /// The include directory resolved, once it and every directory on its path are known to be
    /// writable only by root (or whoever runs this); nil, with the error, when not.
    func trustedIncludeDirectory(_ directory: String, at: SourceLocation, checked: inout Set<String>,
                                         errors: inout ConfigErrorList) -> String? {
        switch resolveTrusted(directory, directory: true, checked: &checked) {
        case .success(let resolved): return resolved
        case .failure(let problem):
            errors.append(ConfigError(at, "include_dir: \(problem.message)"))
            return nil
        }
    }

    /// The `*.yaml` files of `include_dir` in name order (not dot files).
    func includeNames(_ directory: String, at: SourceLocation, errors: inout ConfigErrorList) -> [String] {
        switch directoryEntries(directory) {
        case .success(let entries):
            let names = entries.filter(Self.isIncludeName)
            guard names.count <= limits.includeFiles else {
                errors.append(ConfigError(at, "include_dir: more than \(limits.includeFiles) *.yaml files (the limit)"))
                return []
            }
            return names.sorted()
        case .failure(let problem):
            errors.append(ConfigError(at, "include_dir: cannot read directory \(Scalars.shown(directory)): \(problem.message)"))
            return []
        }
    }

    static func isIncludeName(_ name: String) -> Bool { name.hasSuffix(".yaml") && !name.hasPrefix(".") }

    /// Only the main file may name an include directory. Looked for without an array of each
    /// file's entries (thousands of files).
    static func checkNotNested(_ included: Tree, errors: inout ConfigErrorList) {
        included.forEachEntry(named: ["runtime"]) { _, runtime in
            runtime.forEachEntry(named: ["include_dir"]) { _, nested in
                errors.append(ConfigError(nested.location, "include_dir: only the main configuration file may name one"))
            }
        }
    }

    /// Reads one file after checking that only root (or whoever runs this) could have written it:
    /// the file, every directory on its path, and every symbolic link's and target's (see
    /// `resolveTrusted`). A file under an untrusted directory is still opened, for its own errors.
    /// These checks are made on every load; what `round` holds only saves reading a file whose
    /// identity vouches for its content, and parsing one whose bytes are those parsed before
    /// (see `ConfigCache`). A file parsed with an error is not kept: it is parsed again, and
    /// reports the same errors, at the next load.
    /// `entry`: the file's name in an include directory this load resolved and checked already
    /// (its resolved path), so that only the last component is looked at again.
    func read(_ file: String, entry: (name: String, directory: String)? = nil, budget: inout Tree.Budget,
                      checked: inout Set<String>, errors: inout ConfigErrorList, round: inout CacheRound) -> Tree? {
        let top = SourceLocation(file: file, line: 1, column: 1)
        var trusted = true
        var real = file
        var status: stat?
        switch entry.map({ resolveTrustedEntry($0.name, in: $0.directory, checked: &checked) }) ?? (resolveTrusted(file, checked: &checked), nil) {
        case (.success(let resolved), let info):
            real = resolved
            status = info
        case (.failure(let problem), _):
            errors.append(ConfigError(top, problem.message))
            trusted = false
        }
        // A symbolic link, or a file with a second name: an include directory's watch does not
        // see it change (`IncludeWatch`).
        if let entry, status.map({ $0.st_nlink != 1 }) ?? true { round.unwatched.append(entry.name) }
        // Still there after this read: a changed file's peers are compared with the last load's.
        var previous = round.previous.files[file].flatMap { $0.real == real ? $0 : nil }
        // The same file, untouched since a read that began well after its last change.
        if trusted, var kept = previous, kept.settled, let info = trustedFileStatus(real, known: status), FileIdentity(info) == kept.identity,
           let tree = reuse(kept, chargingBytes: true, outdated: entry == nil, budget: &budget) {
            if kept.outdated { round.outdatedTree = true }
            round.keep(file, &kept)
            return tree
        }
        let start = round.now()
        let data: Data
        let identity: FileIdentity
        round.next.statistics.filesRead += 1
        switch readConfigFile(real, limit: limits.fileBytes) {
        case .success(let (read, info)):
            data = read
            identity = FileIdentity(info)
        case .failure(let problem):
            errors.append(ConfigError(top, problem.message))
            // Refused (its mode, say), not changed: what was parsed stays kept, and is taken
            // again once the file is trusted and its bytes are found unchanged.
            if var kept = previous { round.keep(file, &kept) }
            return nil
        }
        guard trusted else {
            if var kept = previous { round.keep(file, &kept) }
            return nil
        }
        budget.bytes -= data.count
        guard budget.bytes >= 0 else {
            errors.append(ConfigError(top, "the configuration's files add up to more than \(limits.totalBytes) bytes (the limit)"))
            return nil
        }
        // Stamps moved (or were too recent to vouch), the bytes did not: the tree stands.
        let digest = round.keeping ? data.withUnsafeBytes(ContentDigest.init) : nil
        // An outdated tree's pieces tell whether its bytes changed (`FileSegments`).
        let same = previous.map { kept in
            guard kept.outdated else { return kept.content == digest }
            return entry == nil && kept.segments.map { segments in data.withUnsafeBytes { segments.difference($0) == nil } } == true
        } ?? false
        if same, var kept = previous, let tree = reuse(kept, chargingBytes: false, outdated: entry == nil, budget: &budget) {
            if kept.outdated { round.outdatedTree = true }
            kept.identity = identity
            kept.settled = identity.settled(before: start)
            round.keep(file, &kept)
            return tree
        }
        // Parsed anew: the last tree of this file is let go first (its peers' digests tell them
        // again), and its size is what the new one is expected to take.
        let expected = round.previous.files[file]?.parsedSize
        previous = nil
        round.previous.files[file]?.tree = .empty
        // Parsed where it was read: no text is made of the bytes.
        return data.withUnsafeBytes { bytes in
            if let error = Self.utf8Problem(bytes, file: file) {
                errors.append(error)
                return nil
            }
            var own = ConfigErrorList(limit: limits.errors)
            let before = budget
            round.next.statistics.filesParsed += 1
            let text = bytes.assumingMemoryBound(to: UInt8.self)
            // The main file's lists of peers are cut at their items, for a delta of its next change.
            let lists = round.keeping && entry == nil ? ListRecorder(.peers) : nil
            let tree = Tree.parse(text, file: file, expected: expected, itemDigests: round.keeping, lists: lists, budget: &budget, errors: &own)
            if let tree, own.isEmpty, let digest {
                var kept = CachedFile(real: real, identity: identity, settled: identity.settled(before: start), content: digest, tree: tree,
                                      nodes: before.nodes - budget.nodes, aliasNodes: before.aliasNodes - budget.aliasNodes,
                                      aliasBytes: before.aliasBytes - budget.aliasBytes, parsedSize: tree.storage.size)
                kept.segments = lists.flatMap { FileSegments(text, recorded: $0) }
                round.keep(file, &kept)
                round.parsed.append(file)
            }
            errors += own
            return tree
        }
    }

    /// A kept tree, charged to the budget as parsing it charged it; nil when it no longer fits
    /// (other files grew), so that the file is parsed and the limit reported where it is reached.
    /// `outdated`: an outdated tree (`CachedFile.outdated`) may be taken, for the main file's
    /// sections beside its peers (`CacheRound.outdatedTree`).
    private func reuse(_ kept: CachedFile, chargingBytes: Bool, outdated: Bool, budget: inout Tree.Budget) -> Tree? {
        guard kept.content.size <= limits.fileBytes, outdated || !kept.outdated else { return nil }
        var usage = kept.usage
        if !chargingBytes { usage.bytes = 0 }  // a file read just now was charged already
        guard let after = budget.charging(usage) else { return nil }
        budget = after
        return kept.tree
    }

    /// Absolute paths go under `root`; relative ones are relative to the file that names them.
    func resolve(_ path: String, relativeTo file: String) -> String {
        if path.hasPrefix("/") {
            guard let root else { return path }
            return root.appendingPathComponent(String(path.drop { $0 == "/" }))
        }
        return file.deletingLastPathComponent.appendingPathComponent(path)
    }

    /// Reads the key files. An error never repeats the value written for the file name: an
    /// operator may have pasted the key itself there, and errors reach the journal and status.
    private func readKeys(_ configuration: inout Configuration, checked: inout Set<String>, errors: inout ConfigErrorList) {
        for d in configuration.devices.indices {
            if let (path, at) = configuration.devices[d].privateKeyFile,
               let read = readKey("private_key_file", path, at: at, checked: &checked, errors: &errors) {
                configuration.devices[d].privateKey = PrivateKey(read)
            }
            for p in configuration.devices[d].peers.indices {
                guard let (path, at) = configuration.devices[d].peers[p].presharedKeyFile,
                      let read = readKey("preshared_key_file", path, at: at, checked: &checked, errors: &errors) else { continue }
                configuration.devices[d].peers[p].peer.presharedKey = PresharedKey(read)
            }
        }
    }

    /// One key file, `path` as written for `field` at `at`, after the checks its directories take.
    func readKey(_ field: String, _ path: String, at: SourceLocation, checked: inout Set<String>, errors: inout ConfigErrorList) -> WireGuardKey? {
        if WireGuardKey(base64: path.trimmingWhitespace(newlines: false)) != nil {
            errors.append(ConfigError(at, "\(field): looks like a key, not a file name (put the key in a file, chmod 600, and name that file here)"))
            return nil
        }
        // The directories on the key file's path are checked like the configuration's; the
        // message never names them (they are part of the value written here).
        let real: String
        switch resolveTrusted(resolve(path, relativeTo: at.file), checked: &checked, name: { _ in "a directory on the key file's path" }) {
        case .success(let resolved): real = resolved
        case .failure(let problem):
            errors.append(ConfigError(at, "\(field): \(problem.message)"))
            return nil
        }
        do {
            return try readSecretKeyFile(real)
        } catch {
            errors.append(ConfigError(at, "\(field): \(error.problem)"))
            return nil
        }
    }
}

/// One load's use of a `ConfigCache`: what the last load kept, and what this one keeps.
struct CacheRound {
    var previous: ConfigCache.State
    var next = ConfigCache.State()
    /// The files this load parsed anew, without an error.
    var parsed: [String] = []
    /// Each file's `Tree.dropInShape`, main first, and what reading them spent, for
    /// `ConfigLoader.keptLoad`.
    var shapes: [(counts: [(device: String, items: Int)], peersOnly: Bool)]?

    /// A tree's `Tree.dropInShape`, its items counted (not kept: 50 000 of them in a main file).
    static func shape(_ tree: Tree) -> (counts: [(device: String, items: Int)], peersOnly: Bool) {
        let shape = tree.dropInShape
        return (shape.counts.map { ($0.device, $0.items.count) }, shape.peersOnly)
    }
    var used = FileUsage()
    /// The include files read that a watch of their directory does not see change.
    var unwatched: [String] = []
    /// Whether anything is kept (a load without a cache keeps nothing).
    let keeping: Bool
    /// The main file's outdated tree was taken (`CachedFile.outdated`): it stands for the
    /// file's other sections, not its peers, so that only a delta can come of this load.
    var outdatedTree = false
    let now: @Sendable () -> timespec

    /// Whether include directories are watched (`IncludeWatch`).
    let watching: Bool

    init(previous: ConfigCache.State, keeping: Bool, now: @escaping @Sendable () -> timespec = realtimeNow, watching: Bool = false) {
        self.previous = previous
        self.keeping = keeping
        self.now = now
        self.watching = watching
    }

    mutating func keep(_ file: String, _ entry: inout CachedFile) {
        if keeping { next.files[file] = entry }
    }

    /// The changes in the include directory `real` since the last load, from the watch kept
    /// since then; nil when there is none (a new watch is made then, for the next load).
    mutating func watch(_ real: String) -> IncludeWatch.Changes? {
        if let watch = previous.watch, watch.watches(real) {
            let changes = watch.drain()
            if !changes.lost {
                next.watch = watch
                return changes
            }
        }
        previous.watch = nil
        next.watch = watching ? IncludeWatch(directory: real) : nil
        return nil
    }

    /// A delta that read only the changed files takes the last load's other files as they are.
    mutating func adoptKeptFiles(removing removed: [String]) {
        swap(&next.files, &previous.files)
        for (file, entry) in previous.files { next.files[file] = entry }
        previous.files = [:]
        for file in removed { next.files[file] = nil }
    }

    /// A delta took this file's peers (`CachedFile.forgetPeers`).
    mutating func forgetPeers(of file: String) {
        next.files[file]?.forgetPeers()
    }

    /// A delta moved this kept file's peers by `shift` places in each device's list.
    mutating func shiftPeers(of file: String, by shift: [Int]) {
        next.files[file]?.shiftPeers(by: shift)
    }
}

extension Configuration {
    /// The object limits (`ConfigLimits.peers`, `.objects`), reported once each at the first
    /// object past them, in the order the decoder produced them.
    func checkObjectLimits(_ limits: ConfigLimits, errors: inout ConfigErrorList) {
        var peers = 0, objects = 0
        var peersReported = false, objectsReported = false
        func object(_ at: SourceLocation) {
            objects += 1
            if objects > limits.objects, !objectsReported {
                objectsReported = true
                errors.append(at, "more than \(limits.objects) allowed IPs, routes and proxies in all (the limit)")
            }
        }
        for device in devices {
            let sections = device.peers
            for p in sections.indices {
                peers += 1
                if peers > limits.peers, !peersReported {
                    peersReported = true
                    errors.append(sections.location(at: p), "more than \(limits.peers) peers in all (the limit)")
                }
                let count = sections.desired[p].allowedIPs.count
                if objects + count > limits.objects {
                    for i in 0..<count { object(sections.allowedIPLocation(at: p, i)) }
                } else {
                    objects += count
                }
            }
        }
        routes.map(\.location).forEach(object)
        proxies.map(\.location).forEach(object)
    }
}

extension Tree {
    func lookup(_ keys: String...) -> Tree? {
        var node: Tree? = self
        for key in keys {
            guard case .mapping(let entries, _)? = node?.node else { return nil }
            node = entries.first { $0.key == key }?.value
        }
        return node
    }
}
