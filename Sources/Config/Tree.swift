import Glibc
import Netlink

/// A YAML document as wgkeeper reads it: every scalar a string (no implicit typing), every
/// node with its location. Include files merge at this level, before any value is parsed.
///
/// A tree is packed: its nodes are fixed-size records in one array (`TreeStorage`), their text
/// in one byte array, so a document costs a few allocations however many nodes it has. (As one
/// allocation per node, with a `String` per scalar and a `SourceLocation` per node and key, the
/// trees the daemon keeps between loads of 50 000 peers took 36 MiB; packed, a fifth of that.)
/// A `Tree` is a node of a storage; `node` shows it as the enum the decoder matches on.
struct Tree: Sendable {
    let storage: TreeStorage
    let index: UInt32

    init(_ storage: TreeStorage, _ index: UInt32) {
        // A merged tree's reference stands for the node it names.
        var storage = storage, index = index
        while storage.nodes[Int(index)].kind == .reference {
            let node = storage.nodes[Int(index)]
            (storage, index) = (storage.others[Int(node.a)], node.b)
        }
        self.storage = storage
        self.index = index
    }

    struct Entry: Sendable {
        var key: String
        var keyLocation: SourceLocation
        var value: Tree
    }

    /// The node as the decoder reads it.
    enum Node {
        case scalar(String, SourceLocation)
        case mapping([Entry], SourceLocation)
        case sequence([Tree], SourceLocation)
        /// An empty value, `~` or `null`: the same as the key being absent.
        case null(SourceLocation)
    }

    private var record: TreeStorage.Record { storage.nodes[Int(index)] }

    var kind: TreeStorage.Kind { record.kind }

    var node: Node {
        let record = record
        let at = location
        switch record.kind {
        case .scalar: return .scalar(storage.text(record), at)
        case .mapping: return .mapping(entries, at)
        case .sequence: return .sequence(items, at)
        case .null, .reference: return .null(at)
        }
    }

    var location: SourceLocation { storage.location(record) }

    /// A peer's mapping reduced to the parts whose places its kept section reads
    /// (`Tree.keepingPeers`): only the cache's own peer can stand for it.
    var isKeptPeer: Bool { record.isKeptPeer }

    /// A scalar's text; nil for other nodes.
    var text: String? { kind == .scalar ? storage.text(record) : nil }

    /// A mapping's entries in order; empty for other nodes.
    var entries: [Entry] {
        let record = record
        guard record.kind == .mapping else { return [] }
        var entries: [Entry] = []
        entries.reserveCapacity(Int(record.b))
        for i in 0..<Int(record.b) {
            let key = Tree(storage, storage.children[Int(record.a) + 2 * i])
            entries.append(Entry(key: key.text ?? "", keyLocation: key.location, value: Tree(storage, storage.children[Int(record.a) + 2 * i + 1])))
        }
        return entries
    }

    /// A mapping's entries whose key is one of `names`, in order, as the name's index and the
    /// value, without an array of them (nor a `Tree` of any other value).
    func forEachEntry(named names: [StaticString], _ body: (_ name: Int, _ value: Tree) -> Void) {
        let record = record
        guard record.kind == .mapping else { return }
        for i in 0..<Int(record.b) {
            let key = storage.nodes[Int(storage.children[Int(record.a) + 2 * i])]
            if let found = names.firstIndex(where: { storage.hasText(key, $0) }) {
                body(found, Tree(storage, storage.children[Int(record.a) + 2 * i + 1]))
            }
        }
    }

    /// A list's item places in order, without an array of the items; none for other nodes.
    var itemLocations: [SourceLocation] {
        let record = record
        guard record.kind == .sequence else { return [] }
        return (0..<Int(record.b)).map { k in
            let item = storage.nodes[Int(storage.children[Int(record.a) + k])]
            return item.kind == .reference ? Tree(storage, storage.children[Int(record.a) + k]).location : storage.location(item)
        }
    }

    /// A list's items in order; empty for other nodes.
    var items: [Tree] {
        let record = record
        guard record.kind == .sequence else { return [] }
        return (0..<Int(record.b)).map { Tree(storage, storage.children[Int(record.a) + $0]) }
    }

    var kindName: String { Tree.kindName(kind) }

    static func kindName(_ kind: TreeStorage.Kind) -> String {
        switch kind {
        case .scalar: "a scalar"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .null, .reference: "nothing"
        }
    }

    /// A keyed 64-bit digest of the tree, node for node, location for location (file, line
    /// and column) and text for text: equal for equal trees wherever each is stored, and
    /// different for different ones but for a collision of a hash keyed with this process's
    /// random key (`ReadDigest`). What the cache keeps of a decoded peer's tree to tell it again.
    /// A `peers` item's is taken from its text while the file is parsed, where it can be
    /// (`Tree.itemDigest`): walking every node of 10 000 peers took 8 ms of a reload. Either
    /// kind is equal only to its own kind.
    var digest: ReadDigest {
        // A peer's item of a parsed file: its digest was taken from its text (`Tree.itemDigest`).
        if let known = storage.itemDigest(index) { return known }
        var builder = ReadDigest.Builder()
        let file = storage.file(record)
        let bytes = Array(file.utf8)
        bytes.withUnsafeBytes { builder.combine(piece: $0) }
        digest(into: &builder, file: file)
        return builder.finalize()
    }

    /// Recursion follows the tree's nesting, so it is at most `ConfigLimits.depth` deep.
    private func digest(into builder: inout ReadDigest.Builder, file: String) {
        let record = record
        builder.combine(UInt64(record.kind.rawValue) << 32 | UInt64(record.b))
        builder.combine(UInt64(record.line) << 32 | UInt64(record.column))
        // Nodes of another file than the root's (none in a parsed file) name theirs.
        if storage.file(record) != file {
            let bytes = Array(storage.file(record).utf8)
            bytes.withUnsafeBytes { builder.combine(piece: $0) }
        }
        switch record.kind {
        case .scalar: storage.textStorage.withUnsafeBytes { builder.combine(piece: UnsafeRawBufferPointer(rebasing: $0[Int(record.a) ..< Int(record.a + record.b)])) }
        case .null, .reference: break
        case .mapping, .sequence:
            let count = Int(record.kind == .mapping ? 2 * record.b : record.b)
            for i in 0..<count { Tree(storage, storage.children[Int(record.a) + i]).digest(into: &builder, file: file) }
        }
    }

    /// The tree again (a parsed file's: no references), each peer's list item at `peers`
    /// reduced to what its kept section needs once the cache takes it instead of decoding it:
    /// the places of its allowed IPs and its endpoint and its preshared key file (path and
    /// place); its name, key and texts go (a peer costs 96 bytes of tree instead of 264). Also
    /// where each of `peers` is now. Nodes shared by an alias stay shared. An item is reduced
    /// only where the decoder reads peers (`wireguard.<device>.peers[]`); reached elsewhere too
    /// (an alias of its list under `routes`, say), it is copied whole there, so that what reads
    /// it there finds what a fresh load finds. A peer not reached where peers are read is not
    /// in `moved` (none, for the items a load decoded as peers).
    func keepingPeers(_ peers: Set<UInt32>) -> (tree: Tree, moved: [UInt32: UInt32]) {
        var copier = PeerReducer(source: storage, peers: peers)
        let root = copier.copy(index, at: .document)
        var moved: [UInt32: UInt32] = [:]
        moved.reserveCapacity(peers.count)
        for peer in peers where copier.copied[Int(peer)] != .max { moved[peer] = copier.copied[Int(peer)] }
        return (copier.builder.finish(root: root), moved)
    }

    /// The same tree without `TreeStorage.itemDigests` (its arrays are shared, not copied).
    var withoutItemDigests: Tree {
        Tree(TreeStorage(files: storage.files, nodes: storage.nodes, children: storage.children, text: storage.textStorage, others: storage.others),
             index)
    }

    /// An empty document, standing for a tree no longer kept.
    static let empty = Tree(TreeStorage(files: [""], nodes: [TreeStorage.Record(.null, file: 0, line: 1, column: 1)], children: [], text: []), 0)

    /// What one load may still read; shared by the main file and every include.
    struct Budget {
        let limits: ConfigLimits
        var nodes: Int
        var aliasNodes: Int
        var aliasBytes: Int
        /// File bytes still allowed in this load.
        var bytes: Int

        init(_ limits: ConfigLimits) {
            self.limits = limits
            nodes = limits.nodes
            aliasNodes = limits.aliasNodes
            aliasBytes = limits.aliasBytes
            bytes = limits.totalBytes
        }
    }
}

/// The nodes of one parsed file (or of a merge of several): fixed-size records, the child
/// lists of its lists and mappings, and the text of its scalars and keys. Immutable once built.
final class TreeStorage: Sendable {
    enum Kind: UInt8, Sendable {
        case scalar, mapping, sequence, null
        /// A node of another storage (`others[a]`, node `b`): a merged tree's subtrees stay where
        /// they were parsed.
        case reference
    }

    /// One node in 20 bytes. Scalar: its text is `text[a ..< a + b]`. Mapping: `b` entries,
    /// their key and value nodes alternating in `children[a ..< a + 2b]`. List: `b` items in
    /// `children[a ..< a + b]`.
    struct Record: Sendable {
        var line: UInt32
        var column: UInt32
        /// The kind in the low 3 bits, then `isKeptPeer`, the index of its file in `files` above.
        var tag: UInt32
        var a: UInt32
        var b: UInt32

        var kind: Kind { Kind(rawValue: UInt8(tag & 7))! }
        var fileIndex: Int { Int(tag >> 4) }
        /// A peer's mapping reduced to what its kept section needs (`Tree.keepingPeers`).
        var isKeptPeer: Bool { tag & 8 != 0 }

        init(_ kind: Kind, file: Int, line: Int, column: Int, a: UInt32 = 0, b: UInt32 = 0, keptPeer: Bool = false) {
            self.line = UInt32(clamping: line)
            self.column = UInt32(clamping: column)
            tag = UInt32(file) << 4 | (keptPeer ? 8 : 0) | UInt32(kind.rawValue)
            self.a = a
            self.b = b
        }
    }

    let files: [String]
    let nodes: [Record]
    let children: [UInt32]
    let textStorage: [UInt8]
    let others: [TreeStorage]
    /// The digests of a parsed file's `peers` items taken from their text, by node, in node
    /// order (none once the cache keeps its reduced copy: its `KeptPeer`s hold them).
    let itemDigests: [ItemDigest]

    struct ItemDigest: Sendable {
        var node: UInt32
        var digest: ReadDigest
    }

    init(files: [String], nodes: [Record], children: [UInt32], text: [UInt8], others: [TreeStorage] = [], itemDigests: [ItemDigest] = []) {
        self.files = files
        self.nodes = nodes
        self.children = children
        textStorage = text
        self.others = others
        self.itemDigests = itemDigests
    }

    /// The digest of node `node`'s text, if it was taken.
    func itemDigest(_ node: UInt32) -> ReadDigest? {
        var low = 0, high = itemDigests.count
        while low < high {
            let middle = (low + high) / 2
            if itemDigests[middle].node < node { low = middle + 1 } else { high = middle }
        }
        return low < itemDigests.count && itemDigests[low].node == node ? itemDigests[low].digest : nil
    }

    func file(_ record: Record) -> String { files[record.fileIndex] }

    func location(_ record: Record) -> SourceLocation {
        SourceLocation(file: files[record.fileIndex], line: Int(record.line), column: Int(record.column))
    }

    func textBytes(_ record: Record) -> ArraySlice<UInt8> { textStorage[Int(record.a) ..< Int(record.a) + Int(record.b)] }

    func text(_ record: Record) -> String { String(decoding: textBytes(record), as: UTF8.self) }

    /// Whether `record` is a scalar whose text is `name` (compared as bytes, not as a `String`).
    func hasText(_ record: Record, _ name: StaticString) -> Bool {
        guard record.kind == .scalar, Int(record.b) == name.utf8CodeUnitCount else { return false }
        return record.b == 0 || textStorage.withUnsafeBufferPointer { memcmp($0.baseAddress! + Int(record.a), name.utf8Start, Int(record.b)) == 0 }
    }

    /// How many nodes, child slots and bytes of text it holds.
    struct Size: Sendable {
        var nodes: Int
        var children: Int
        var text: Int
    }

    var size: Size { Size(nodes: nodes.count, children: children.count, text: textStorage.count) }
}

/// Builds a storage node by node; texts of up to 16 bytes (keys, names) are stored once each.
struct TreeBuilder {
    private(set) var files: [String]
    private(set) var nodes: [TreeStorage.Record] = []
    private(set) var children: [UInt32] = []
    private(set) var text: [UInt8] = []
    private(set) var others: [TreeStorage] = []
    private var itemDigests: [TreeStorage.ItemDigest] = []
    private var otherIndex: [ObjectIdentifier: UInt32] = [:]
    private var fileIndex: [String: Int] = [:]
    /// Short texts written lately, by a hash of their words (a slot holds the last one there):
    /// keys repeat in every item and are found here; a name seen once costs no table entry.
    private var recentTexts = [RecentText](repeating: RecentText(), count: TreeBuilder.recentSlots)
    private static let recentSlots = 128

    private struct RecentText {
        var text = ShortText(), offset: UInt32 = 0
    }

    init(files: [String]) {
        self.files = files
        for (i, file) in files.enumerated() where fileIndex[file] == nil { fileIndex[file] = i }
    }

    /// Up to 16 bytes of text as two words and a length, compared without an allocation.
    private struct ShortText: Equatable {
        var low: UInt64 = 0, high: UInt64 = 0, count = -1

        init() {}

        /// Its slot among `recentSlots`: a multiplicative hash of the words.
        var slot: Int {
            let mixed = (low &* 0x9E37_79B9_7F4A_7C15) ^ ((high ^ UInt64(count)) &* 0xC2B2_AE3D_27D4_EB4F)
            return Int(truncatingIfNeeded: mixed >> 57) & (TreeBuilder.recentSlots - 1)
        }

        init?(_ bytes: UnsafeBufferPointer<UInt8>) {
            guard bytes.count <= 16 else { return nil }
            count = bytes.count
            for (i, byte) in bytes.enumerated() {
                if i < 8 { low |= UInt64(byte) << (8 * UInt64(i)) } else { high |= UInt64(byte) << (8 * UInt64(i - 8)) }
            }
        }
    }

    mutating func scalar(_ bytes: UnsafeBufferPointer<UInt8>, file: Int, line: Int, column: Int) -> UInt32 {
        let offset: UInt32
        let short = ShortText(bytes)
        if let short, recentTexts[short.slot].text == short {
            offset = recentTexts[short.slot].offset
        } else {
            offset = UInt32(text.count)
            text.append(contentsOf: bytes)
            if let short { recentTexts[short.slot] = RecentText(text: short, offset: offset) }
        }
        return add(TreeStorage.Record(.scalar, file: file, line: line, column: column, a: offset, b: UInt32(bytes.count)))
    }

    mutating func scalar(_ string: String, file: Int, line: Int, column: Int) -> UInt32 {
        var string = string
        return string.withUTF8 { scalar($0, file: file, line: line, column: column) }
    }

    mutating func null(file: Int, line: Int, column: Int) -> UInt32 {
        add(TreeStorage.Record(.null, file: file, line: line, column: column))
    }

    /// A list or mapping whose child nodes were added already (a mapping's as key, value, …).
    mutating func collection(_ kind: TreeStorage.Kind, _ items: [UInt32], file: Int, line: Int, column: Int,
                             keptPeer: Bool = false) -> UInt32 {
        let start = UInt32(children.count)
        children.append(contentsOf: items)
        let count = kind == .mapping ? items.count / 2 : items.count
        return add(TreeStorage.Record(kind, file: file, line: line, column: column, a: start, b: UInt32(count), keptPeer: keptPeer))
    }

    /// The node `index` again, said to start elsewhere (its children stay where they were written).
    mutating func moved(_ index: UInt32, line: Int, column: Int) -> UInt32 {
        var record = nodes[Int(index)]
        record.line = UInt32(clamping: line)
        record.column = UInt32(clamping: column)
        return add(record)
    }

    /// A node standing for `tree`, which stays in its own storage.
    mutating func reference(_ tree: Tree) -> UInt32 {
        let other: UInt32
        if let known = otherIndex[ObjectIdentifier(tree.storage)] {
            other = known
        } else {
            other = UInt32(others.count)
            otherIndex[ObjectIdentifier(tree.storage)] = other
            others.append(tree.storage)
        }
        return add(TreeStorage.Record(.reference, file: 0, line: 0, column: 0, a: other, b: tree.index))
    }

    /// The digest of `node`'s text (`Tree.itemDigest`); nodes are given in the order they were added.
    mutating func itemDigest(_ node: UInt32, _ digest: ReadDigest) {
        itemDigests.append(TreeStorage.ItemDigest(node: node, digest: digest))
    }

    mutating func file(_ name: String) -> Int {
        if let known = fileIndex[name] { return known }
        files.append(name)
        fileIndex[name] = files.count - 1
        return files.count - 1
    }

    private mutating func add(_ record: TreeStorage.Record) -> UInt32 {
        nodes.append(record)
        return UInt32(nodes.count - 1)
    }

    func text(_ index: UInt32) -> ArraySlice<UInt8> {
        let record = nodes[Int(index)]
        return text[Int(record.a) ..< Int(record.a) + Int(record.b)]
    }

    func record(_ index: UInt32) -> TreeStorage.Record { nodes[Int(index)] }

    /// Room for a tree of about this size (a sixteenth more, for a file that grew a little).
    mutating func reserve(_ size: TreeStorage.Size) {
        nodes.reserveCapacity(size.nodes + size.nodes / 16)
        children.reserveCapacity(size.children + size.children / 16)
        text.reserveCapacity(size.text + size.text / 16)
    }

    /// The storage, its arrays copied to their size when they grew well past it (by doubling);
    /// `root` is its document node.
    consuming func finish(root: UInt32) -> Tree {
        // (Copied through a buffer pointer: an array made of a slice of all of another shares its storage.)
        func fitted<T>(_ array: [T]) -> [T] {
            array.capacity > array.count + array.count / 8 + 16 ? array.withUnsafeBufferPointer { Array($0) } : array
        }
        let storage = TreeStorage(files: files, nodes: fitted(nodes), children: fitted(children), text: fitted(text), others: others,
                                  itemDigests: fitted(itemDigests))
        return Tree(storage, root)
    }
}

extension Tree {
    /// A tree built by hand (tests): its own storage, children named by reference.
    static func scalar(_ text: String, _ at: SourceLocation) -> Tree {
        var builder = TreeBuilder(files: [at.file])
        let root = builder.scalar(text, file: 0, line: at.line, column: at.column)
        return builder.finish(root: root)
    }

    static func sequence(_ items: [Tree], _ at: SourceLocation) -> Tree {
        var builder = TreeBuilder(files: [at.file])
        let children = items.map { builder.reference($0) }
        let root = builder.collection(.sequence, children, file: 0, line: at.line, column: at.column)
        return builder.finish(root: root)
    }

    static func mapping(_ entries: [Entry], _ at: SourceLocation) -> Tree {
        var builder = TreeBuilder(files: [at.file])
        var children: [UInt32] = []
        for entry in entries {
            children.append(builder.scalar(entry.key, file: builder.file(entry.keyLocation.file), line: entry.keyLocation.line,
                                           column: entry.keyLocation.column))
            children.append(builder.reference(entry.value))
        }
        let root = builder.collection(.mapping, children, file: 0, line: at.line, column: at.column)
        return builder.finish(root: root)
    }

    /// A node being built: a list or a mapping whose children are still arriving.
    private struct Open {
        var line: Int
        var column: Int
        var anchor: String?
        var isMapping: Bool
        /// Child nodes; a mapping's as key, value, key, value…
        var items: [UInt32] = []
        /// The first place each key of this mapping was set, once it has more than
        /// `Open.scanned` keys: duplicates in O(1) each. Below that, the keys are searched
        /// (a peer's three or four keys cost less to compare than to hash into a table).
        var keys: [String: SourceLocation]?
        static let scanned = 16
        /// In a mapping: the key whose value comes next (its node), or `.skip` when that value is dropped.
        var key: Key = .awaited
        /// For an anchor: how many nodes this one holds and how many levels of lists and mappings.
        var nodes = 1
        var height = 1
        /// Scalar text this one holds, which an alias of it costs again.
        var bytes = 0
        /// A list that is the value of a `peers` key, and whether it is written `[…]`.
        var peers = false
        var flow = false
        /// A mapping that is an item of a `peers` list: where its text starts (in bytes), and
        /// how many aliases the file had before it (`Tree.itemDigest`).
        var itemStart: Int?
        var aliasesBefore = 0

        enum Key { case awaited, node(UInt32), skip }
    }

    /// An anchored node, with what inserting it again costs.
    private struct Anchored {
        var node: UInt32
        var nodes: Int
        var height: Int
        var bytes: Int
    }

    /// Parses one file from libyaml's events with an explicit stack, so no input depth reaches
    /// the call stack. Nesting, node count and alias expansion are bounded (`ConfigLimits`) while
    /// the events arrive: an alias costs the nodes it stands for, without copying them.
    /// YAML syntax errors, limits and duplicate keys go to `errors`.
    static func parse(_ text: String, file: String, budget: inout Budget, errors: inout ConfigErrorList) -> Tree? {
        var text = text
        return text.withUTF8 { parse($0, file: file, budget: &budget, errors: &errors) }
    }

    /// The same, from UTF-8 bytes (checked by the caller), read where they are. `expected`: the
    /// size of this file's last tree, room made for up front (a tree grown by doubling and then
    /// copied to its size takes up to three times its size while it is built).
    /// `itemDigests`: the digest of each mapping in a `peers` list is taken from its text
    /// (`TreeStorage.itemDigests`), for a cache to tell its peers again.
    /// `lists`: records where the items of its lists start and end (`FileSegments`).
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, file: String, expected: TreeStorage.Size? = nil, itemDigests: Bool = false,
                      lists: ListRecorder? = nil, budget: inout Budget, errors: inout ConfigErrorList) -> Tree? {
        YAMLEventReader.read(bytes) { reader in
            parse(reader, file: file, expected: expected, itemDigests: itemDigests, lists: lists, budget: &budget, errors: &errors)
        }
    }

    private static func parse(_ reader: YAMLEventReader, file: String, expected: TreeStorage.Size?, itemDigests: Bool, lists: ListRecorder?,
                              budget: inout Budget, errors: inout ConfigErrorList) -> Tree? {
        let location = { (mark: YAMLEvent.Mark) in SourceLocation(file: file, line: mark.line, column: mark.column) }
        let top = location((1, 1))
        var builder = TreeBuilder(files: [file])
        if let expected { builder.reserve(expected) }
        var stack: [Open] = []
        var anchors: [String: Anchored] = [:]
        var document: UInt32?
        var documents = 0
        var aliases = 0

        /// Where `key` was set already in the innermost mapping, if it was. Every key recorded
        /// is in its `items` by the time the next key arrives (its value came in between).
        func firstPlace(of key: UInt32) -> SourceLocation? {
            let i = stack.count - 1
            if stack[i].keys == nil, stack[i].items.count / 2 > Open.scanned {
                var keys: [String: SourceLocation] = [:]
                for k in stride(from: 0, to: stack[i].items.count, by: 2) {
                    let name = String(decoding: builder.text(stack[i].items[k]), as: UTF8.self)
                    if keys[name] == nil { keys[name] = SourceLocation(file: file, line: Int(builder.record(stack[i].items[k]).line),
                                                                       column: Int(builder.record(stack[i].items[k]).column)) }
                }
                stack[i].keys = keys
            }
            if let keys = stack[i].keys { return keys[String(decoding: builder.text(key), as: UTF8.self)] }
            let name = builder.text(key)
            for k in stride(from: 0, to: stack[i].items.count, by: 2) where builder.text(stack[i].items[k]).elementsEqual(name) {
                let record = builder.record(stack[i].items[k])
                return SourceLocation(file: file, line: Int(record.line), column: Int(record.column))
            }
            return nil
        }

        /// Hands a finished node to its parent (or makes it the document).
        func add(_ node: UInt32, nodes: Int, height: Int, bytes: Int) {
            guard !stack.isEmpty else {
                document = node
                return
            }
            let i = stack.count - 1
            stack[i].nodes += nodes
            stack[i].bytes += bytes
            stack[i].height = max(stack[i].height, height + 1)
            guard stack[i].isMapping else {
                stack[i].items.append(node)
                return
            }
            switch stack[i].key {
            case .awaited:
                let record = builder.record(node)
                let keyAt = SourceLocation(file: file, line: Int(record.line), column: Int(record.column))
                guard record.kind == .scalar else {
                    errors.append(ConfigError(keyAt, "a key must be a plain string, not \(kindName(record.kind))"))
                    stack[i].key = .skip
                    return
                }
                if let first = firstPlace(of: node) {
                    let name = String(decoding: builder.text(node), as: UTF8.self)
                    errors.append(ConfigError(keyAt, "duplicate key \(Scalars.quoted(name)) (first set at \(first))"))
                    stack[i].key = .skip
                    return
                }
                if stack[i].keys != nil { stack[i].keys![String(decoding: builder.text(node), as: UTF8.self)] = keyAt }
                stack[i].key = .node(node)
            case .node(let key):
                stack[i].items.append(key)
                stack[i].items.append(node)
                stack[i].key = .awaited
            case .skip:
                stack[i].key = .awaited
            }
        }

        func fail(_ at: SourceLocation, _ message: String) -> Tree? {
            errors.append(ConfigError(at, message))
            return nil
        }
        let tooMany = "more than \(budget.limits.nodes) YAML nodes (the limit)"
        let tooDeep = "nested deeper than \(budget.limits.depth) levels (the limit)"

        while true {
            let event: YAMLEvent
            do {
                event = try reader.next()
            } catch {
                return fail(error.mark.map(location) ?? top, error.message)
            }
            switch event {
            case .documentStart(let mark):
                documents += 1
                if documents > 1 {
                    return fail(location(mark), "YAML syntax: expected a single document in the stream, but found another document")
                }
            case .documentEnd:
                continue
            case .streamEnd:
                let root = document ?? builder.null(file: 0, line: 1, column: 1)
                return builder.finish(root: root)
            case .node(.alias(let name), let mark):
                let at = location(mark)
                lists?.viable = false
                guard let anchored = anchors[name] else { return fail(at, "YAML: alias *\(name) names no anchor before it") }
                budget.aliasNodes -= anchored.nodes
                budget.aliasBytes -= anchored.bytes
                budget.nodes -= anchored.nodes
                if budget.aliasNodes < 0 { return fail(at, "aliases expand to more than \(budget.limits.aliasNodes) nodes (the limit)") }
                if budget.aliasBytes < 0 { return fail(at, "aliases expand to more than \(budget.limits.aliasBytes) bytes of text (the limit)") }
                if budget.nodes < 0 { return fail(at, tooMany) }
                if stack.count + anchored.height > budget.limits.depth { return fail(at, tooDeep) }
                aliases += 1
                // The copy is where the alias is: an error about this use of the value names this place.
                add(builder.moved(anchored.node, line: mark.line, column: mark.column), nodes: anchored.nodes, height: anchored.height, bytes: anchored.bytes)
            case .node(.scalar(let text, let plain, let anchor), let mark):
                if let lists {
                    if anchor != nil { lists.viable = false }
                    lists.node(depth: stack.count, offset: reader.startOffset, mark: mark)
                }
                budget.nodes -= 1
                if budget.nodes < 0 { return fail(location(mark), tooMany) }
                let node = plain && isNull(text) ? builder.null(file: 0, line: mark.line, column: mark.column)
                    : builder.scalar(text, file: 0, line: mark.line, column: mark.column)
                if let anchor { anchors[anchor] = Anchored(node: node, nodes: 1, height: 0, bytes: text.count) }
                add(node, nodes: 1, height: 0, bytes: text.count)
            case .node(let start, let mark):
                let at = location(mark)
                budget.nodes -= 1
                if budget.nodes < 0 { return fail(at, tooMany) }
                if stack.count + 1 > budget.limits.depth { return fail(at, tooDeep) }
                if let lists {
                    switch start {
                    case .mapping(let anchor), .sequence(let anchor, _): if anchor != nil { lists.viable = false }
                    case .scalar, .alias: break
                    }
                    lists.node(depth: stack.count, offset: reader.startOffset, mark: mark)
                    if case .sequence(_, false) = start, stack.count == lists.depth {
                        lists.listStarts(depth: stack.count, keys: stack.map { open in
                            guard open.isMapping, case .node(let key) = open.key else { return nil }
                            return String(decoding: builder.text(key), as: UTF8.self)
                        })
                    }
                }
                switch start {
                // (Set where it stands on the stack: an `Open` copied on its way there costs a retain of each of its parts.)
                case .mapping(let anchor):
                    let item = itemDigests && !stack.isEmpty && stack[stack.count - 1].peers
                    stack.append(Open(line: mark.line, column: mark.column, anchor: anchor, isMapping: true))
                    if item {
                        stack[stack.count - 1].itemStart = reader.startOffset
                        stack[stack.count - 1].aliasesBefore = aliases
                    }
                case .sequence(let anchor, let flow):
                    var peers = false
                    if itemDigests, !stack.isEmpty, stack[stack.count - 1].isMapping, case .node(let key) = stack[stack.count - 1].key {
                        peers = builder.text(key).elementsEqual("peers".utf8)
                    }
                    stack.append(Open(line: mark.line, column: mark.column, anchor: anchor, isMapping: false))
                    if peers {
                        stack[stack.count - 1].peers = true
                        stack[stack.count - 1].flow = flow
                    }
                case .scalar, .alias: continue
                }
            case .end:
                lists?.ends(depth: stack.count, offset: reader.startOffset, mark: reader.startMark)
                guard let open = stack.popLast() else { return fail(top, "YAML: unbalanced end of a list or mapping") }
                let node = builder.collection(open.isMapping ? .mapping : .sequence, open.items, file: 0, line: open.line, column: open.column)
                // An alias inside the item: its text does not show what the alias stands for.
                if let start = open.itemStart, open.aliasesBefore == aliases, !stack.isEmpty {
                    let text = UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: reader.bytes[start ..< reader.endOffset]))
                    // (The list's fields one by one: a copy of its `Open` would retain its items.)
                    let listColumn = stack[stack.count - 1].column, flow = stack[stack.count - 1].flow
                    builder.itemDigest(node, itemDigest(text, line: open.line, column: open.column, listColumn: listColumn, flow: flow))
                }
                if let anchor = open.anchor { anchors[anchor] = Anchored(node: node, nodes: open.nodes, height: open.height, bytes: open.bytes) }
                add(node, nodes: open.nodes, height: open.height, bytes: open.bytes)
            }
        }
    }

    /// The digest of a `peers` item (a mapping without an alias) taken from its text: equal
    /// texts read at the same place (line, column) in lists that start at the same column and
    /// are written alike are equal trees. What libyaml makes of an item's text depends on
    /// nothing before it but the indentation and flow context of its list (an alias would: it
    /// is left to the node walk); what it depends on after it ends the item's range, which is
    /// in the text. The file is the one whose kept peers it is compared with (`CachedFile`).
    /// The first word has its top bit set: a node walk's digest starts with the length of a
    /// file name, never that.
    private static func itemDigest(_ text: UnsafeRawBufferPointer, line: Int, column: Int, listColumn: Int, flow: Bool) -> ReadDigest {
        var builder = ReadDigest.Builder()
        builder.combine(1 << 63 | UInt64(min(line, Int(Int32.max))) << 32 | UInt64(UInt32(clamping: column)))
        builder.combine(UInt64(UInt32(clamping: listColumn)) << 1 | (flow ? 1 : 0))
        builder.combine(piece: text)
        return builder.finalize()
    }

    /// A plain scalar that YAML reads as null: empty, `~`, `null`, `Null`, `NULL`.
    private static func isNull(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
        guard text.count <= 4 else { return false }
        return text.isEmpty || text.elementsEqual("~".utf8) || text.elementsEqual("null".utf8) || text.elementsEqual("Null".utf8)
            || text.elementsEqual("NULL".utf8)
    }

    /// README, configuration reference: maps merge, lists append, a scalar set twice is an error naming both places.
    /// All files at once, so that each of thousands of `conf.d` files costs its own size, not the
    /// size of everything merged before it. Recursion follows the trees' nesting, so it is at
    /// most `ConfigLimits.depth` deep. The merged tree's new nodes (the lists and mappings that
    /// several files add to) are a storage of their own; everything else stays where it was
    /// parsed, named by reference.
    static func merge(_ trees: [Tree], path: String, errors: inout ConfigErrorList) -> Tree {
        var builder = TreeBuilder(files: [])
        let root = merge(trees, path: path, builder: &builder, errors: &errors)
        return builder.finish(root: root)
    }

    private static func merge(_ trees: [Tree], path: String, builder: inout TreeBuilder, errors: inout ConfigErrorList) -> UInt32 {
        let present = trees.filter { $0.kind != .null }
        guard let base = present.first else {
            guard let last = trees.last else { return builder.null(file: builder.file(""), line: 1, column: 1) }
            return builder.reference(last)
        }
        guard present.count > 1 else { return builder.reference(base) }
        let mismatch = { (other: Tree, errors: inout ConfigErrorList) in
            let name = path.isEmpty ? "the document" : path
            errors.append(ConfigError(other.location, "\(Scalars.shown(name)) is \(other.kindName) here but \(base.kindName) at \(base.location)"))
        }
        let at = base.location
        switch base.kind {
        case .mapping:
            var groups: [String: [Entry]] = [:]
            var order: [String] = []
            for tree in present {
                guard tree.kind == .mapping else {
                    mismatch(tree, &errors)
                    continue
                }
                for entry in tree.entries {
                    if groups[entry.key] == nil { order.append(entry.key) }
                    groups[entry.key, default: []].append(entry)
                }
            }
            var items: [UInt32] = []
            for key in order {
                let (keyAt, value) = merge(groups[key]!, path: path.isEmpty ? key : "\(path).\(key)", builder: &builder, errors: &errors)
                items.append(builder.scalar(key, file: builder.file(keyAt.file), line: keyAt.line, column: keyAt.column))
                items.append(value)
            }
            return builder.collection(.mapping, items, file: builder.file(at.file), line: at.line, column: at.column)
        case .sequence:
            var items: [UInt32] = []
            for tree in present {
                guard tree.kind == .sequence else {
                    mismatch(tree, &errors)
                    continue
                }
                for item in tree.items { items.append(builder.reference(item)) }
            }
            return builder.collection(.sequence, items, file: builder.file(at.file), line: at.line, column: at.column)
        case .scalar, .null, .reference:
            for tree in present.dropFirst() { mismatch(tree, &errors) }
            return builder.reference(base)
        }
    }

    /// One key set in several files: its first place stays, a second scalar is an error.
    /// Returns the key's place and its merged value.
    private static func merge(_ entries: [Entry], path: String, builder: inout TreeBuilder,
                              errors: inout ConfigErrorList) -> (SourceLocation, UInt32) {
        let merged = entries[0]
        guard entries.count > 1 else { return (merged.keyLocation, builder.reference(merged.value)) }
        var values: [Tree] = []
        var first: Entry?
        for entry in entries {
            if entry.value.kind == .null { continue }
            if let first, first.value.kind == .scalar, entry.value.kind == .scalar {
                errors.append(ConfigError(entry.keyLocation, "\(Scalars.shown(path)) is already set at \(merged.keyLocation)"))
                continue
            }
            if first == nil { first = entry }
            values.append(entry.value)
        }
        if values.isEmpty { return (merged.keyLocation, builder.reference(merged.value)) }
        return (merged.keyLocation, merge(values, path: path, builder: &builder, errors: &errors))
    }
}

/// `Tree.keepingPeers`: a copy node by node, peers' items reduced where peers are read.
/// Recursion follows the tree's nesting, so it is at most `ConfigLimits.depth` deep.
private struct PeerReducer {
    /// The nodes on the way to where the decoder reads peers: the document, `wireguard`, a
    /// device, its `peers` list.
    enum Place: UInt64 { case document, wireguard, device, peers }

    let source: TreeStorage
    let reduce: [Bool]
    var builder: TreeBuilder
    /// Each source node's copy, once made (`UInt32.max`: not yet); for a peer to reduce, its
    /// reduced copy.
    var copied: [UInt32]
    /// The copies of the nodes on the way to the peer lists (a handful), by node and place.
    var placed: [UInt64: UInt32] = [:]
    /// Whole copies of peers to reduce that an alias also puts elsewhere.
    var whole: [UInt32: UInt32] = [:]
    /// A reduced peer's entries and its addresses' places, while they are made.
    private var scratch: (items: [UInt32], places: [UInt32]) = ([], [])

    init(source: TreeStorage, peers: Set<UInt32>) {
        self.source = source
        var reduce = [Bool](repeating: false, count: source.nodes.count)
        for peer in peers { reduce[Int(peer)] = true }
        self.reduce = reduce
        builder = TreeBuilder(files: source.files)
        builder.reserve(TreeStorage.Size(nodes: source.nodes.count / 2, children: source.children.count / 2, text: source.textStorage.count / 4))
        copied = [UInt32](repeating: .max, count: source.nodes.count)
    }

    /// Node `i` standing at `place`: its children on the way to the peer lists are copied at
    /// theirs, the items of a `peers` list reduced; anything else is copied whole.
    mutating func copy(_ i: UInt32, at place: Place) -> UInt32 {
        let key = UInt64(i) << 8 | place.rawValue
        if let known = placed[key] { return known }
        let r = source.nodes[Int(i)]
        let line = Int(r.line), column = Int(r.column), file = r.fileIndex
        let new: UInt32
        switch (place, r.kind) {
        case (.peers, .sequence):
            let items = (0..<Int(r.b)).map { k -> UInt32 in
                let item = source.children[Int(r.a) + k]
                return reduce[Int(item)] ? reduced(item) : copy(item)
            }
            new = builder.collection(.sequence, items, file: file, line: line, column: column)
        case (.document, .mapping), (.wireguard, .mapping), (.device, .mapping):
            var items: [UInt32] = []
            items.reserveCapacity(2 * Int(r.b))
            for e in 0..<Int(r.b) {
                let key = source.children[Int(r.a) + 2 * e], value = source.children[Int(r.a) + 2 * e + 1]
                let k = source.nodes[Int(key)]
                func named(_ name: String) -> Bool { k.kind == .scalar && source.textBytes(k).elementsEqual(name.utf8) }
                let inner: Place? = switch place {
                case .document: named("wireguard") ? .wireguard : nil
                case .wireguard: .device
                case .device: named("peers") ? .peers : nil
                case .peers: nil
                }
                items.append(copy(key))
                items.append(inner.map { copy(value, at: $0) } ?? copy(value))
            }
            new = builder.collection(.mapping, items, file: file, line: line, column: column, keptPeer: r.isKeptPeer)
        default:
            new = copy(i)
        }
        placed[key] = new
        return new
    }

    /// Node `i` copied whole (a peer to reduce too: an alias put it where peers are not read).
    mutating func copy(_ i: UInt32) -> UInt32 {
        if reduce[Int(i)] {
            if let known = whole[i] { return known }
        } else if copied[Int(i)] != .max {
            return copied[Int(i)]
        }
        let r = source.nodes[Int(i)]
        let line = Int(r.line), column = Int(r.column), file = r.fileIndex
        let new: UInt32
        switch r.kind {
        case .scalar:
            new = source.textBytes(r).withUnsafeBufferPointer { builder.scalar($0, file: file, line: line, column: column) }
        case .null:
            new = builder.null(file: file, line: line, column: column)
        case .mapping, .sequence:
            let count = Int(r.kind == .mapping ? 2 * r.b : r.b)
            let items = (0..<count).map { copy(source.children[Int(r.a) + $0]) }
            new = builder.collection(r.kind, items, file: file, line: line, column: column, keptPeer: r.isKeptPeer)
        case .reference:
            new = builder.reference(Tree(source.others[Int(r.a)], r.b))
        }
        if reduce[Int(i)] { whole[i] = new } else { copied[Int(i)] = new }
        return new
    }

    /// What `Decoder.section(_:_:)` reads of a peer: `preshared_key_file` whole, the places of
    /// the `allowed_ips` items and of the `endpoint` value.
    private mutating func reduced(_ i: UInt32) -> UInt32 {
        if copied[Int(i)] != .max { return copied[Int(i)] }
        let r = source.nodes[Int(i)]
        // A peer decoded without an error is a mapping.
        guard r.kind == .mapping else { return copy(i) }
        // Two lists made once for all the peers: their items are copied into the builder's.
        var items = scratch.items, places = scratch.places
        scratch = ([], [])
        items.removeAll(keepingCapacity: true)
        for e in 0..<Int(r.b) {
            let key = source.children[Int(r.a) + 2 * e], value = source.children[Int(r.a) + 2 * e + 1]
            let k = source.nodes[Int(key)]
            let v = source.nodes[Int(value)]
            if source.hasText(k, "preshared_key_file") {
                items.append(copy(key))
                items.append(copy(value))
            } else if source.hasText(k, "allowed_ips") {
                items.append(copy(key))
                if v.kind == .sequence {
                    places.removeAll(keepingCapacity: true)
                    for p in 0..<Int(v.b) {
                        let item = source.nodes[Int(source.children[Int(v.a) + p])]
                        places.append(builder.null(file: item.fileIndex, line: Int(item.line), column: Int(item.column)))
                    }
                    items.append(builder.collection(.sequence, places, file: v.fileIndex, line: Int(v.line), column: Int(v.column)))
                } else {
                    items.append(builder.null(file: v.fileIndex, line: Int(v.line), column: Int(v.column)))
                }
            } else if source.hasText(k, "endpoint") {
                items.append(copy(key))
                items.append(builder.null(file: v.fileIndex, line: Int(v.line), column: Int(v.column)))
            }
        }
        let new = builder.collection(.mapping, items, file: r.fileIndex, line: Int(r.line), column: Int(r.column), keptPeer: true)
        scratch = (items, places)
        copied[Int(i)] = new
        return new
    }
}
