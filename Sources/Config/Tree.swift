import Yams

/// A YAML document as wgkeeper reads it: every scalar a string (no implicit typing), every
/// node with its location. Include files merge at this level, before any value is parsed.
indirect enum Tree {
    struct Entry {
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

    var kindName: String {
        switch self {
        case .scalar: "a scalar"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .null: "nothing"
        }
    }

    /// Parses one file. YAML syntax errors and duplicate keys go to `errors`.
    static func parse(_ text: String, file: String, fileOrder: Int, errors: inout [ConfigError]) -> Tree? {
        let top = SourceLocation(file: file, line: 1, column: 1, fileOrder: fileOrder)
        do {
            guard let node = try Yams.compose(yaml: text) else { return .null(top) }
            return convert(node, file: file, fileOrder: fileOrder, errors: &errors)
        } catch let error as YamlError {
            errors.append(describe(error, file: file, fileOrder: fileOrder))
            return nil
        } catch {
            errors.append(ConfigError(top, "cannot parse YAML: \(error)"))
            return nil
        }
    }

    private static func describe(_ error: YamlError, file: String, fileOrder: Int) -> ConfigError {
        let at = { (mark: Mark) in SourceLocation(file: file, line: mark.line, column: mark.column, fileOrder: fileOrder) }
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            let prefix = context.map { "\($0.text), " } ?? ""
            return ConfigError(at(mark), "YAML syntax: \(prefix)\(problem)")
        default:
            return ConfigError(SourceLocation(file: file, line: 1, column: 1, fileOrder: fileOrder), "YAML: \(error)")
        }
    }

    private static func convert(_ node: Node, file: String, fileOrder: Int, errors: inout [ConfigError]) -> Tree {
        let at = SourceLocation(file: file, line: node.mark?.line ?? 1, column: node.mark?.column ?? 1, fileOrder: fileOrder)
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain, ["", "~", "null", "Null", "NULL"].contains(scalar.string) { return .null(at) }
            return .scalar(scalar.string, at)
        case .sequence(let sequence):
            return .sequence(sequence.map { convert($0, file: file, fileOrder: fileOrder, errors: &errors) }, at)
        case .mapping(let mapping):
            var entries: [Entry] = []
            for (key, value) in mapping {
                let keyTree = convert(key, file: file, fileOrder: fileOrder, errors: &errors)
                guard case .scalar(let name, let keyAt) = keyTree else {
                    errors.append(ConfigError(keyTree.location, "a key must be a plain string, not \(keyTree.kindName)"))
                    continue
                }
                if let first = entries.first(where: { $0.key == name }) {
                    errors.append(ConfigError(keyAt, "duplicate key \"\(name)\" (first set at \(first.keyLocation))"))
                    continue
                }
                entries.append(Entry(key: name, keyLocation: keyAt,
                                     value: convert(value, file: file, fileOrder: fileOrder, errors: &errors)))
            }
            return .mapping(entries, at)
        }
    }

    /// DESIGN §5: maps merge, lists append, a scalar set twice is an error naming both places.
    static func merge(_ base: Tree, _ other: Tree, path: String, errors: inout [ConfigError]) -> Tree {
        switch (base, other) {
        case (.null, _):
            return other
        case (_, .null):
            return base
        case (.mapping(var entries, let at), .mapping(let more, _)):
            for entry in more {
                if let i = entries.firstIndex(where: { $0.key == entry.key }) {
                    let child = path.isEmpty ? entry.key : "\(path).\(entry.key)"
                    let before = entries[i]
                    if case .scalar = before.value, case .scalar = entry.value {
                        errors.append(ConfigError(entry.keyLocation, "\(child) is already set at \(before.keyLocation)"))
                        continue
                    }
                    entries[i].value = merge(before.value, entry.value, path: child, errors: &errors)
                } else {
                    entries.append(entry)
                }
            }
            return .mapping(entries, at)
        case (.sequence(let items, let at), .sequence(let more, _)):
            return .sequence(items + more, at)
        default:
            let name = path.isEmpty ? "the document" : path
            errors.append(ConfigError(other.location, "\(name) is \(other.kindName) here but \(base.kindName) at \(base.location)"))
            return base
        }
    }
}
