import FoundationEssentials
import Glibc
import Netlink
import Reconciler
import Synchronization

/// What one load keeps for the next, so that a reload costs what changed rather than the
/// whole configuration: each file's parsed tree (with its identity and content), and each peer
/// decoded from it. Pass the same cache to every `ConfigLoader.load(path:cache:)` of one
/// configuration (the daemon keeps one for its life).
///
/// Nothing here skips a check. Every load still resolves every file and checks its owner and
/// mode and every directory and link on its path; only the read and the parse of a file whose
/// content is known to be unchanged are saved, and the decoding of a peer whose tree is equal,
/// node for node and location for location, to one decoded before. Everything that spans
/// files (merging, limits, duplicate and overlapping peers, derivation) runs on the whole as
/// in a fresh load, so the outcome (desired state and errors) is the same as a fresh load's.
///
/// When a file's content counts as unchanged: its device, inode, size, mtime and ctime (both to
/// the nanosecond) are those recorded when it was read, and its ctime was already more than
/// `ConfigCache.settled` older than the clock when that read began. Any later write, chmod,
/// rename over it or replacement (new inode, or the same inode reused) sets ctime to the
/// kernel's clock at that moment, which is then at least the read's start minus one timestamp
/// tick, so it differs from a ctime recorded that long before. A file changed within a tick of
/// being read (too recent to tell by its timestamps) is read again at the next load and its
/// bytes compared with the ones parsed before (by size and keyed digest, `ContentDigest`); so
/// is any file whose identity differs. Reading is cheap next to parsing, so one large file is
/// always compared by content when its stamps moved.
/// (The argument assumes the file system's timestamps come from this host's clock and the
/// clock is not stepped back by more than `settled` between loads.)
public final class ConfigCache: Sendable {
    /// How old a file's ctime must be, against the clock when its read began, for its
    /// identity alone to vouch for its content: above any timestamp granularity in use (1 s on
    /// ext4 with 128-byte inodes, 2 s on FAT, a jiffy with the kernel's coarse clock).
    static let settled = 3

    private let state = Mutex(State())
    /// The clock a read's start is taken from (tests move it).
    let now: @Sendable () -> timespec

    /// Whether a load may be a delta of the last (`ConfigLoader.dropInDelta`), and whether the
    /// include directory is watched (`IncludeWatch`); tests turn them off to hold the other
    /// ways with a cache to a fresh load's outcome.
    let deltas: Bool
    let watches: Bool

    public convenience init() { self.init(now: realtimeNow) }

    init(now: @escaping @Sendable () -> timespec, deltas: Bool = true, watches: Bool = true) {
        self.now = now
        self.deltas = deltas
        self.watches = watches
    }

    struct State: Sendable {
        var files: [String: CachedFile] = [:]
        /// The devices of the desired state the last load derived: `CachedFile.peers` name their
        /// peers (the daemon holds the same arrays, so the cache adds nothing for them).
        var devices: [DesiredWireGuardDevice] = []
        /// What the last load made, when it succeeded: the base of a delta.
        var kept: KeptLoad?
        /// The watch on the include directory, made before the reads of the load that made `kept`.
        var watch: IncludeWatch?
        var statistics = Statistics()
    }

    /// What the last load did: how many files it read and parsed, how many peers it decoded.
    public struct Statistics: Sendable, Equatable {
        public var filesRead = 0
        public var filesParsed = 0
        public var peersDecoded = 0
        /// The load was a delta of the last one (`ConfigLoader.dropInDelta`): only the changed
        /// drop-in files' peers were decoded and checked.
        public var delta = false
        /// The delta read only the files the include directory's watch named (`IncludeWatch`).
        public var watched = false
        /// The delta was of the main file's changed peer items (`ConfigLoader.mainFileDelta`).
        public var mainFile = false
    }

    public var lastLoad: Statistics { state.withLock { $0.statistics } }

    /// The kept state, handed to one load at a time (a concurrent load finds it empty and
    /// just does a full load).
    func take() -> State { state.withLock { current in defer { current = State() }; return current } }
    func store(_ new: State) { state.withLock { $0 = new } }

    /// Files whose parsed tree is kept, for tests.
    public var cachedFiles: Int { state.withLock { $0.files.count } }

    /// Digests of items kept in the trees (`TreeStorage.itemDigests`: none once a load is over), for tests.
    var keptItemDigests: Int { state.withLock { $0.files.values.reduce(0) { $0 + $1.tree.storage.itemDigests.count } } }

    /// Nodes of the kept trees, for tests.
    var keptNodes: Int { state.withLock { $0.files.values.reduce(0) { $0 + $1.tree.storage.nodes.count } } }
}

/// One file as last read: where it pointed, what `stat` said, its bytes, its tree, what
/// parsing it cost the load's budget, and the peers decoded from it.
struct CachedFile: Sendable {
    var real: String
    var identity: FileIdentity
    /// The identity alone vouches for the content (see `ConfigCache`).
    var settled: Bool
    var content: ContentDigest
    var tree: Tree
    var nodes: Int
    var aliasNodes: Int
    var aliasBytes: Int
    /// The peers decoded from this tree without an error, by the place of their list item
    /// (line, then column).
    var peers: [KeptPeer] = []
    /// How many of the tree's peer items are reduced to what their kept section needs
    /// (`Tree.keepingPeers`): each must have its `KeptPeer`, or the file is read again.
    var keptPeerItems = 0
    /// The size of the tree as parsed, room made for when the file is parsed again.
    var parsedSize: TreeStorage.Size
    /// The peers of a file kept through a load that did not decode it (refused for its mode,
    /// say): its `KeptPeer`s name these (`KeptPeer.own`), not that load's desired state.
    var ownPeers: [DesiredPeer] = []
    /// The main file cut at its peers' items, for a delta of its next change (`FileSegments`).
    var segments: FileSegments?
    /// A delta of the file's peers (`ConfigLoader.mainFileDelta`) came after its tree was
    /// parsed: the tree no longer stands for the file (its `segments` do), and is parsed again
    /// when a load needs it.
    var outdated = false

    /// The peer `kept` names, among `devices` (the desired devices of the load that kept it) or
    /// this file's own; nil when it names none (never, while the cache is consistent).
    func peer(_ kept: KeptPeer, devices: [DesiredWireGuardDevice]) -> DesiredPeer? { Self.peer(kept, own: ownPeers, devices: devices) }

    static func peer(_ kept: KeptPeer, own: [DesiredPeer], devices: [DesiredWireGuardDevice]) -> DesiredPeer? {
        let index = Int(kept.index)
        if kept.device == KeptPeer.own { return own.indices.contains(index) ? own[index] : nil }
        guard devices.indices.contains(Int(kept.device)), devices[Int(kept.device)].peers.indices.contains(index) else { return nil }
        return devices[Int(kept.device)].peers[index]
    }

    /// Its peers no longer kept: its tree is kept whole, without its items' digests, and its
    /// peers are decoded again by the next whole load.
    mutating func forgetPeers() {
        tree = tree.withoutItemDigests
        peers = []
        keptPeerItems = 0
        ownPeers = []
    }

    /// `peers` moved by `shift` places in each device's list.
    mutating func shiftPeers(by shift: [Int]) {
        for p in peers.indices where shift.indices.contains(Int(peers[p].device)) {
            peers[p].index = UInt32(Int(peers[p].index) + shift[Int(peers[p].device)])
        }
    }

    /// What reading and parsing it spent of a load's budget.
    var usage: FileUsage { FileUsage(bytes: content.size, nodes: nodes, aliasNodes: aliasNodes, aliasBytes: aliasBytes) }

    /// Where in `peers` (sorted by place) the peer whose list item starts at `at` is, if one was kept.
    static func index(of at: SourceLocation, in peers: [KeptPeer]) -> Int? {
        let line = UInt32(clamping: at.line), column = UInt32(clamping: at.column)
        var low = 0, high = peers.count
        while low < high {
            let middle = (low + high) / 2
            if (peers[middle].line, peers[middle].column) < (line, column) { low = middle + 1 } else { high = middle }
        }
        guard low < peers.count, peers[low].line == line, peers[low].column == column else { return nil }
        return low
    }
}

/// What files spent of a load's budget (`Tree.Budget`).
struct FileUsage: Sendable, Equatable {
    var bytes = 0
    var nodes = 0
    var aliasNodes = 0
    var aliasBytes = 0

    init(bytes: Int = 0, nodes: Int = 0, aliasNodes: Int = 0, aliasBytes: Int = 0) {
        (self.bytes, self.nodes, self.aliasNodes, self.aliasBytes) = (bytes, nodes, aliasNodes, aliasBytes)
    }

    /// What a load spent of `budget` so far.
    init(spent budget: Tree.Budget) {
        let limits = budget.limits
        self.init(bytes: limits.totalBytes - budget.bytes, nodes: limits.nodes - budget.nodes,
                  aliasNodes: limits.aliasNodes - budget.aliasNodes, aliasBytes: limits.aliasBytes - budget.aliasBytes)
    }

    static func + (a: Self, b: Self) -> Self {
        FileUsage(bytes: a.bytes + b.bytes, nodes: a.nodes + b.nodes, aliasNodes: a.aliasNodes + b.aliasNodes, aliasBytes: a.aliasBytes + b.aliasBytes)
    }

    static func - (a: Self, b: Self) -> Self {
        FileUsage(bytes: a.bytes - b.bytes, nodes: a.nodes - b.nodes, aliasNodes: a.aliasNodes - b.aliasNodes, aliasBytes: a.aliasBytes - b.aliasBytes)
    }
}

extension Tree.Budget {
    /// The budget less `usage`; nil when any part of it would go below zero.
    func charging(_ usage: FileUsage) -> Tree.Budget? {
        var after = self
        after.bytes -= usage.bytes
        after.nodes -= usage.nodes
        after.aliasNodes -= usage.aliasNodes
        after.aliasBytes -= usage.aliasBytes
        guard after.bytes >= 0, after.nodes >= 0, after.aliasNodes >= 0, after.aliasBytes >= 0 else { return nil }
        return after
    }
}

/// A peer decoded without an error: where its list item starts, its node in its file's tree,
/// the digest of that item's tree (`Tree.digest`: what tells it again once its file changed and
/// the old tree is gone), and where it is among the devices of the desired state
/// (`ConfigCache.State.devices`). 40 bytes: the peer itself is kept once, in the desired state;
/// where its parts were written is read again from its tree when it is taken.
struct KeptPeer: Sendable {
    var line: UInt32
    var column: UInt32
    var node: UInt32
    var device: UInt32
    var index: UInt32
    var digest: ReadDigest

    /// `device` of a peer kept in its file's `ownPeers`.
    static let own = UInt32.max

    init(_ at: SourceLocation, node: UInt32, digest: ReadDigest, device: Int, index: Int) {
        line = UInt32(clamping: at.line)
        column = UInt32(clamping: at.column)
        self.node = node
        self.digest = digest
        self.device = UInt32(device)
        self.index = UInt32(index)
    }
}

/// A file's content as its size and a 64-bit keyed digest (`ReadDigest`, as the daemon's polls
/// tell a read from the last one): the cache keeps this, not the bytes (7 MiB for 50 000 peers).
/// Two different contents with equal digests would take a collision of a hash keyed with this
/// process's random key.
struct ContentDigest: Equatable, Sendable {
    var size: Int
    var digest: ReadDigest

    init(_ bytes: UnsafeRawBufferPointer) {
        size = bytes.count
        var builder = ReadDigest.Builder()
        builder.combine(piece: bytes)
        digest = builder.finalize()
    }
}

/// What `stat` tells of a file's identity and last change.
struct FileIdentity: Equatable, Sendable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var mtime: Int128
    var ctime: Int128

    init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        mtime = Int128(info.st_mtim.tv_sec) * 1_000_000_000 + Int128(info.st_mtim.tv_nsec)
        ctime = Int128(info.st_ctim.tv_sec) * 1_000_000_000 + Int128(info.st_ctim.tv_nsec)
    }

    /// Whether the ctime was more than `ConfigCache.settled` seconds before `start`.
    func settled(before start: timespec) -> Bool {
        ctime / 1_000_000_000 + Int128(ConfigCache.settled) < Int128(start.tv_sec)
    }
}

func realtimeNow() -> timespec {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return now
}
