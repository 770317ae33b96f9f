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

    public var description: String { "\(file):\(line):\(column)" }

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
