/// The main file cut where its peers' list items begin and end, each piece kept as its length
/// and a keyed digest of its bytes: what a reload needs to find which items of a changed file
/// changed without parsing the file again (`ConfigLoader.mainFileDelta`).
///
/// The pieces alternate: the text before the first `wireguard.<device>.peers` list's first
/// item, that list's items, the text between it and the next list's first item, … , the text
/// after the last list. An item's piece runs from the start of the line of its `- ` to the
/// start of the next item's line (or, for the last, of the line where the next token after the
/// list starts): it holds its comments and blank lines after it.
///
/// Why a changed file whose other pieces are unchanged bytes can be read by parsing only its
/// new items: libyaml reads the start of an item's line (`- ` at the list's column, only spaces
/// before it) in one state whatever came before, save the list's column, anchors and tag
/// handles (a file with an anchor or an alias is not cut; new items are parsed without the
/// file's directives, so that an item naming a handle fails to parse and the file is read
/// whole). Its items are read until the next line that starts at or left of the list's
/// column. So the items between unchanged text read as they read alone after `x:` at that
/// column, followed by one more item at it (`- ~`), provided that last item is read as an item
/// of the same list: nothing (an unterminated quote, a flow collection) ran on into it.
struct FileSegments: Sendable {
    /// Each piece's length in bytes and its digest, in file order.
    private(set) var lengths: [UInt32] = []
    private(set) var digests: [UInt64] = []
    private(set) var lists: [List] = []

    /// A `peers` list: its device, its first item's piece, how many items, the column of its
    /// `- ` (0-based).
    struct List: Sendable {
        var device: String
        var first: Int
        var count: Int
        var indent: Int
    }

    /// The bytes' pieces at the boundaries the parse recorded; nil when one cannot be shown to
    /// be the start of an item's line (`ListRecorder`), or when the parse saw an anchor or alias.
    init?(_ bytes: UnsafeBufferPointer<UInt8>, recorded: ListRecorder) {
        guard recorded.viable else { return nil }
        var boundaries: [Int] = [0]
        for list in recorded.lists {
            guard let cut = Self.cut(bytes, list), let start = cut.starts.first, start >= boundaries.last! else { return nil }
            lists.append(List(device: list.name, first: boundaries.count, count: cut.starts.count, indent: cut.indent))
            boundaries += cut.starts
            boundaries.append(cut.end)
        }
        boundaries.append(bytes.count)
        lengths.reserveCapacity(boundaries.count - 1)
        digests.reserveCapacity(boundaries.count - 1)
        for (from, to) in zip(boundaries, boundaries.dropFirst()) {
            guard to >= from, let length = UInt32(exactly: to - from) else { return nil }
            lengths.append(length)
            digests.append(Self.digest(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[from ..< to]))))
        }
    }

    /// Where each item's line starts, and where the line after the last item's starts; nil
    /// unless every item's node starts on the line of its `- `, which has only spaces before
    /// it, all at one column, and the next token after the list starts its line.
    static func cut(_ bytes: UnsafeBufferPointer<UInt8>, _ list: ListRecorder.Recorded) -> (starts: [Int], end: Int, indent: Int)? {
        guard let end = list.end, !list.items.isEmpty else { return nil }
        var starts: [Int] = []
        starts.reserveCapacity(list.items.count)
        var indent: Int?
        for item in list.items {
            guard let (start, column) = itemLine(bytes, offset: Int(item.offset), column: Int(item.column)), indent == nil || indent == column
            else { return nil }
            indent = column
            guard start >= (starts.last ?? 0) + (starts.isEmpty ? 0 : 1) else { return nil }
            starts.append(start)
        }
        // The token after the list: at the end of the text (libyaml puts it at column 1 there),
        // or with only spaces before it on its line.
        let lineStart = end.offset - (end.column - 1)
        let last = end.offset == bytes.count ? bytes.count : lineStart
        guard lineStart >= 0, last > starts.last!, end.offset == bytes.count || startsLine(bytes, lineStart),
              bytes[lineStart ..< end.offset].allSatisfy({ $0 == 0x20 }) else { return nil }
        return (starts, last, indent!)
    }

    /// The start of the line of an item whose node starts at `offset`, column `column` (from 1):
    /// spaces, `-`, spaces, then the node; and the column of the `-` (from 0).
    private static func itemLine(_ bytes: UnsafeBufferPointer<UInt8>, offset: Int, column: Int) -> (start: Int, dash: Int)? {
        let start = offset - (column - 1)
        guard start >= 0, offset <= bytes.count, startsLine(bytes, start) else { return nil }
        var i = start
        while i < offset, bytes[i] == 0x20 { i += 1 }
        guard i < offset, bytes[i] == UInt8(ascii: "-") else { return nil }
        let dash = i - start
        i += 1
        guard i < offset else { return nil }  // `-` then the node at once is a scalar, not an item
        while i < offset, bytes[i] == 0x20 { i += 1 }
        return i == offset ? (start, dash) : nil
    }

    /// Whether `offset` follows a line feed (or is the start of the text): the start of a line as
    /// every line break libyaml knows counts it, but for a lone CR, NEL, LS or PS, which this
    /// does not take for one (a text using them is not cut where they end a line).
    private static func startsLine(_ bytes: UnsafeBufferPointer<UInt8>, _ offset: Int) -> Bool {
        offset == 0 || (offset <= bytes.count && bytes[offset - 1] == 0x0A)
    }

    static func digest(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hasher = Hasher()
        hasher.combine(bytes: bytes)
        return UInt64(UInt(bitPattern: hasher.finalize()))
    }

    /// How `new` differs from the text cut: the pieces `old` (by index) are replaced by the bytes
    /// `new` (by offset); every other piece is unchanged, byte for byte (but for a collision of
    /// a hash keyed with this process's random key). Nil when nothing changed.
    func difference(_ new: UnsafeRawBufferPointer) -> (old: Range<Int>, new: Range<Int>)? {
        var front = 0, position = 0
        while front < lengths.count, position + Int(lengths[front]) <= new.count,
              Self.digest(UnsafeRawBufferPointer(rebasing: new[position ..< position + Int(lengths[front])])) == digests[front] {
            position += Int(lengths[front])
            front += 1
        }
        if front == lengths.count, position == new.count { return nil }
        // An empty piece (the text after a list at the end of the file) is not taken from the
        // front: a change at a list's end is then next to its last item.
        while front > 0, lengths[front - 1] == 0 { front -= 1 }
        var back = lengths.count, end = new.count
        while back > front, end - Int(lengths[back - 1]) >= position,
              Self.digest(UnsafeRawBufferPointer(rebasing: new[end - Int(lengths[back - 1]) ..< end])) == digests[back - 1] {
            end -= Int(lengths[back - 1])
            back -= 1
        }
        return (front ..< back, position ..< end)
    }

    /// The list whose items `old` (a range of pieces) are, with where they stand in it; for no
    /// pieces (an insertion), the list it is next to an item of. Nil when the pieces are not all
    /// items of one list.
    func list(holding old: Range<Int>) -> (list: Int, items: Range<Int>)? {
        for (l, list) in lists.enumerated() {
            let items = list.first ..< list.first + list.count
            if old.isEmpty ? (items.contains(old.lowerBound) || old.lowerBound == items.upperBound)
                : (items.contains(old.lowerBound) && old.upperBound <= items.upperBound) {
                return (l, old.lowerBound - list.first ..< old.upperBound - list.first)
            }
        }
        return nil
    }

    /// The same with the items `items` of list `list` replaced by new ones, of these lengths and digests.
    func replacing(items: Range<Int>, of list: Int, lengths new: [UInt32], digests newDigests: [UInt64]) -> FileSegments {
        var result = self
        let first = lists[list].first
        result.lengths.replaceSubrange(first + items.lowerBound ..< first + items.upperBound, with: new)
        result.digests.replaceSubrange(first + items.lowerBound ..< first + items.upperBound, with: newDigests)
        let change = new.count - items.count
        result.lists[list].count += change
        for l in list + 1 ..< lists.count { result.lists[l].first += change }
        return result
    }
}

/// What `Tree.parse` saw of the lists `FileSegments` cuts at: where each item's node starts and
/// where the token after the list starts. Which lists: `wireguard.<device>.peers` written as
/// `- ` items (`.peers`), or the value of a document's first key (`.top`: a delta's new items).
final class ListRecorder {
    enum Target { case peers, top }
    let target: Target
    private(set) var lists: [Recorded] = []
    /// No anchor or alias anywhere in the text.
    var viable = true
    /// The parse's stack depth with the recorded list on top: its items start at that depth.
    private var open: Int?

    struct Recorded {
        var name: String
        /// Each item's node: its first byte and its column (from 1). (8 bytes an item: 50 000
        /// items are recorded while the largest tree is built.)
        var items: [(offset: UInt32, column: UInt32)] = []
        var end: (offset: Int, column: Int)?
    }

    init(_ target: Target) { self.target = target }

    /// How many nodes are open when a list this records starts.
    var depth: Int { target == .peers ? 3 : 1 }

    /// A block list starts with `depth` nodes open, whose keys awaiting a value are `keys` (from
    /// the document down; nil for a node that is not a mapping awaiting one).
    func listStarts(depth: Int, keys: [String?]) {
        switch target {
        case .peers:
            guard depth == 3, keys.count == 3, keys[0] == "wireguard", let device = keys[1], keys[2] == "peers" else { return }
            lists.append(Recorded(name: device))
        case .top:
            guard depth == 1, lists.isEmpty, let key = keys[0] else { return }
            lists.append(Recorded(name: key))
        }
        open = depth + 1
    }

    /// A node starts (or an alias stands) with `depth` nodes open (a recorded list's items: the
    /// list on top).
    func node(depth: Int, offset: Int, mark: YAMLEvent.Mark) {
        guard depth == open else { return }
        guard let offset = UInt32(exactly: offset), let column = UInt32(exactly: mark.column) else {
            viable = false
            return
        }
        lists[lists.count - 1].items.append((offset, column))
    }

    /// The innermost of `depth` open nodes ends; the next token starts at `offset`, `mark`.
    func ends(depth: Int, offset: Int, mark: YAMLEvent.Mark) {
        guard depth == open else { return }
        lists[lists.count - 1].end = (offset, mark.column)
        open = nil
    }
}
