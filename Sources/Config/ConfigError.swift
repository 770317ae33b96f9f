/// Where a YAML node starts: file, line and column, both counted from 1.
public struct SourceLocation: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    /// The file name too is left out when it holds a key (an `include_dir` named by a pasted key).
    public var description: String { "\(Scalars.shown(file)):\(line):\(column)" }

    /// By file name, then position. Errors are listed in reading order instead (main file first,
    /// then the includes: `ConfigErrorList.sorted(files:)`), which a location does not carry, so
    /// that a file's parsed tree stays valid when files are added or removed before it.
    public static func < (a: Self, b: Self) -> Bool { (a.file, a.line, a.column) < (b.file, b.line, b.column) }
}

/// One configuration problem, printed as `file:line:column: message`. Never holds a secret.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String

    public init(_ location: SourceLocation, _ message: String) {
        self.location = location
        self.message = message
    }

    public var description: String { "\(location): \(message)" }
}

/// Every problem found in a configuration, in file order.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]

    public init(_ errors: [ConfigError]) { self.errors = errors }

    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

/// The problems found while loading, at most `limit` of them kept (the rest only counted).
struct ConfigErrorList {
    private(set) var kept: [ConfigError] = []
    private(set) var dropped = 0
    let limit: Int

    init(limit: Int = ConfigLimits.standard.errors) { self.limit = limit }

    var count: Int { kept.count + dropped }
    var isEmpty: Bool { count == 0 }

    mutating func append(_ error: ConfigError) {
        if kept.count < limit { kept.append(error) } else { dropped += 1 }
    }

    /// The message is built only when it is kept.
    mutating func append(_ at: SourceLocation, _ message: @autoclosure () -> String) {
        if kept.count < limit { kept.append(ConfigError(at, message())) } else { dropped += 1 }
    }

    static func += (list: inout Self, more: Self) {
        for error in more.kept { list.append(error) }
        list.dropped += more.dropped
    }

    /// In reading order (`files`: main file first, then the includes; a file not among them
    /// after them), then by position, then a line counting what was left out.
    func sorted(files: [String]) -> ConfigErrors {
        var order: [String: Int] = [:]
        for (i, file) in files.enumerated() where order[file] == nil { order[file] = i }
        func key(_ e: (offset: Int, element: ConfigError)) -> (Int, String, Int, Int, Int) {
            (order[e.element.location.file] ?? files.count, e.element.location.file, e.element.location.line, e.element.location.column, e.offset)
        }
        var errors = kept.enumerated().sorted { key($0) < key($1) }.map(\.element)
        if dropped > 0 {
            errors.append(ConfigError(SourceLocation(file: files.first ?? "", line: 1, column: 1),
                                      "\(dropped) more errors not listed (only the first \(limit) are)"))
        }
        return ConfigErrors(errors)
    }
}
