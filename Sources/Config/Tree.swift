/// A YAML document as wgkeeper reads it: every scalar a string (no implicit typing), every
/// node with its location. Include files merge at this level, before any value is parsed.
indirect enum Tree: Equatable, Sendable {
    struct Entry: Equatable, Sendable {
        var key: String
        var keyLocation: SourceLocation
        var value: Tree
    }

    case scalar(String, SourceLocation)
    case mapping([Entry], SourceLocation)
    case sequence([Tree], SourceLocation)
    /// An empty value, `~` or `null`: the same as the key being absent.
    case null(SourceLocation)

    var location: SourceLocation {
        switch self {
        case .scalar(_, let at), .mapping(_, let at), .sequence(_, let at), .null(let at): at
        }
    }

    /// The same node, said to start at `location` (its children stay where they were written).
    func moved(to location: SourceLocation) -> Tree {
        switch self {
        case .scalar(let text, _): .scalar(text, location)
        case .mapping(let entries, _): .mapping(entries, location)
        case .sequence(let items, _): .sequence(items, location)
        case .null: .null(location)
        }
    }

    var kindName: String {
        switch self {
        case .scalar: "a scalar"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .null: "nothing"
        }
    }

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

    /// A node being built: a list or a mapping whose children are still arriving.
    private struct Open {
        var at: SourceLocation
        var anchor: String?
        var isMapping: Bool
        var items: [Tree] = []
        var entries: [Entry] = []
        /// The first place each key of this mapping was set, once it has more than
        /// `Open.scanned` keys: duplicates in O(1) each. Below that, the entries are searched
        /// (a peer's three or four keys cost less to compare than to hash into a table).
        var keys: [String: SourceLocation]?
        static let scanned = 16

        /// Where `name` was set already in this mapping, if it was. Every key recorded is in
        /// `entries` by the time the next key arrives (its value came in between).
        mutating func firstPlace(of name: String) -> SourceLocation? {
            if keys == nil, entries.count > Self.scanned {
                keys = Dictionary(entries.map { ($0.key, $0.keyLocation) }, uniquingKeysWith: { first, _ in first })
            }
            if let keys { return keys[name] }
            return entries.first { $0.key == name }?.keyLocation
        }
        /// In a mapping: the key whose value comes next, or `.skip` when that value is dropped.
        var key: Key = .awaited
        /// For an anchor: how many nodes this one holds and how many levels of lists and mappings.
        var nodes = 1
        var height = 1
        /// Scalar text this one holds, which an alias of it costs again.
        var bytes = 0

        enum Key { case awaited, name(String, SourceLocation), skip }
    }

    /// An anchored node, with what inserting it again costs.
    private struct Anchored {
        var tree: Tree
        var nodes: Int
        var height: Int
        var bytes: Int
    }

    /// Parses one file from libyaml's events with an explicit stack, so no input depth reaches
    /// the call stack. Nesting, node count and alias expansion are bounded (`ConfigLimits`) while
    /// the events arrive: an alias costs the nodes it stands for, without copying them.
    /// YAML syntax errors, limits and duplicate keys go to `errors`.
    static func parse(_ text: String, file: String, budget: inout Budget, errors: inout ConfigErrorList) -> Tree? {
        let location = { (mark: YAMLEvent.Mark) in SourceLocation(file: file, line: mark.line, column: mark.column) }
        let top = location((1, 1))
        let reader = YAMLEventReader(text)
        var stack: [Open] = []
        var anchors: [String: Anchored] = [:]
        var document: Tree?
        var documents = 0

        /// Hands a finished node to its parent (or makes it the document).
        func add(_ tree: Tree, nodes: Int, height: Int, bytes: Int) {
            guard !stack.isEmpty else {
                document = tree
                return
            }
            let i = stack.count - 1
            stack[i].nodes += nodes
            stack[i].bytes += bytes
            stack[i].height = max(stack[i].height, height + 1)
            guard stack[i].isMapping else {
                stack[i].items.append(tree)
                return
            }
            switch stack[i].key {
            case .awaited:
                guard case .scalar(let name, let keyAt) = tree else {
                    errors.append(ConfigError(tree.location, "a key must be a plain string, not \(tree.kindName)"))
                    stack[i].key = .skip
                    return
                }
                if let first = stack[i].firstPlace(of: name) {
                    errors.append(ConfigError(keyAt, "duplicate key \(Scalars.quoted(name)) (first set at \(first))"))
                    stack[i].key = .skip
                    return
                }
                stack[i].keys?[name] = keyAt
                stack[i].key = .name(name, keyAt)
            case .name(let name, let keyAt):
                stack[i].entries.append(Entry(key: name, keyLocation: keyAt, value: tree))
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
                return document ?? .null(top)
            case .node(.alias(let name), let mark):
                let at = location(mark)
                guard let anchored = anchors[name] else { return fail(at, "YAML: alias *\(name) names no anchor before it") }
                budget.aliasNodes -= anchored.nodes
                budget.aliasBytes -= anchored.bytes
                budget.nodes -= anchored.nodes
                if budget.aliasNodes < 0 { return fail(at, "aliases expand to more than \(budget.limits.aliasNodes) nodes (the limit)") }
                if budget.aliasBytes < 0 { return fail(at, "aliases expand to more than \(budget.limits.aliasBytes) bytes of text (the limit)") }
                if budget.nodes < 0 { return fail(at, tooMany) }
                if stack.count + anchored.height > budget.limits.depth { return fail(at, tooDeep) }
                // The copy is where the alias is: an error about this use of the value names this place.
                add(anchored.tree.moved(to: at), nodes: anchored.nodes, height: anchored.height, bytes: anchored.bytes)
            case .node(.scalar(let text, let plain, let anchor), let mark):
                let at = location(mark)
                budget.nodes -= 1
                if budget.nodes < 0 { return fail(at, tooMany) }
                let tree: Tree = plain && isNull(text) ? .null(at) : .scalar(text, at)
                let bytes = text.utf8.count
                if let anchor { anchors[anchor] = Anchored(tree: tree, nodes: 1, height: 0, bytes: bytes) }
                add(tree, nodes: 1, height: 0, bytes: bytes)
            case .node(let start, let mark):
                let at = location(mark)
                budget.nodes -= 1
                if budget.nodes < 0 { return fail(at, tooMany) }
                if stack.count + 1 > budget.limits.depth { return fail(at, tooDeep) }
                switch start {
                case .mapping(let anchor): stack.append(Open(at: at, anchor: anchor, isMapping: true))
                case .sequence(let anchor): stack.append(Open(at: at, anchor: anchor, isMapping: false))
                case .scalar, .alias: continue
                }
            case .end:
                guard let open = stack.popLast() else { return fail(top, "YAML: unbalanced end of a list or mapping") }
                let tree: Tree = open.isMapping ? .mapping(open.entries, open.at) : .sequence(open.items, open.at)
                if let anchor = open.anchor { anchors[anchor] = Anchored(tree: tree, nodes: open.nodes, height: open.height, bytes: open.bytes) }
                add(tree, nodes: open.nodes, height: open.height, bytes: open.bytes)
            }
        }
    }

    /// A plain scalar that YAML reads as null: empty, `~`, `null`, `Null`, `NULL`.
    private static func isNull(_ text: String) -> Bool {
        text.utf8.count <= 4 && (text.isEmpty || text == "~" || text == "null" || text == "Null" || text == "NULL")
    }

    /// README, configuration reference: maps merge, lists append, a scalar set twice is an error naming both places.
    /// All files at once, so that each of thousands of `conf.d` files costs its own size, not the
    /// size of everything merged before it. Recursion follows the trees' nesting, so it is at
    /// most `ConfigLimits.depth` deep.
    static func merge(_ trees: [Tree], path: String, errors: inout ConfigErrorList) -> Tree {
        let present = trees.filter { if case .null = $0 { false } else { true } }
        guard let base = present.first else { return trees.last ?? .null(SourceLocation(file: "", line: 1, column: 1)) }
        guard present.count > 1 else { return base }
        let mismatch = { (other: Tree, errors: inout ConfigErrorList) in
            let name = path.isEmpty ? "the document" : path
            errors.append(ConfigError(other.location, "\(Scalars.shown(name)) is \(other.kindName) here but \(base.kindName) at \(base.location)"))
        }
        switch base {
        case .mapping(_, let at):
            var groups: [String: [Entry]] = [:]
            var order: [String] = []
            for tree in present {
                guard case .mapping(let entries, _) = tree else {
                    mismatch(tree, &errors)
                    continue
                }
                for entry in entries {
                    if groups[entry.key] == nil { order.append(entry.key) }
                    groups[entry.key, default: []].append(entry)
                }
            }
            return .mapping(order.map { merge(groups[$0]!, path: path.isEmpty ? $0 : "\(path).\($0)", errors: &errors) }, at)
        case .sequence(_, let at):
            var items: [Tree] = []
            for tree in present {
                guard case .sequence(let more, _) = tree else {
                    mismatch(tree, &errors)
                    continue
                }
                items += more
            }
            return .sequence(items, at)
        case .scalar, .null:
            for tree in present.dropFirst() { mismatch(tree, &errors) }
            return base
        }
    }

    /// One key set in several files: its first place stays, a second scalar is an error.
    private static func merge(_ entries: [Entry], path: String, errors: inout ConfigErrorList) -> Entry {
        var merged = entries[0]
        guard entries.count > 1 else { return merged }
        var values: [Tree] = []
        var first: Entry?
        for entry in entries {
            if case .null = entry.value { continue }
            if let first, case .scalar = first.value, case .scalar = entry.value {
                errors.append(ConfigError(entry.keyLocation, "\(Scalars.shown(path)) is already set at \(merged.keyLocation)"))
                continue
            }
            if first == nil { first = entry }
            values.append(entry.value)
        }
        if !values.isEmpty { merged.value = merge(values, path: path, errors: &errors) }
        return merged
    }
}
