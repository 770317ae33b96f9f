/// Where a YAML node starts: file, line and column, both counted from 1.
public struct SourceLocation: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    /// The file's position in reading order, so errors sort main file first, then includes.
    var fileOrder: Int

    public init(file: String, line: Int, column: Int, fileOrder: Int = 0) {
        self.file = file
        self.line = line
        self.column = column
        self.fileOrder = fileOrder
    }

    /// The file name too is left out when it holds a key (an `include_dir` named by a pasted key).
    public var description: String { "\(Scalars.shown(file)):\(line):\(column)" }

    public static func < (a: Self, b: Self) -> Bool { (a.fileOrder, a.line, a.column) < (b.fileOrder, b.line, b.column) }
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

    /// In file order, then a line counting what was left out.
    func sorted(mainFile: String) -> ConfigErrors {
        var errors = kept.enumerated().sorted { ($0.element.location, $0.offset) < ($1.element.location, $1.offset) }.map(\.element)
        if dropped > 0 {
            errors.append(ConfigError(SourceLocation(file: mainFile, line: 1, column: 1),
                                      "\(dropped) more errors not listed (only the first \(limit) are)"))
        }
        return ConfigErrors(errors)
    }
}
