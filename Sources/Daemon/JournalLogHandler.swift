import Foundation
import Logging

/// Writes one line per message to standard error. Under systemd (`JOURNAL_STREAM` set) each
/// line starts with its syslog priority (`<3>`), which journald strips and keeps as the level.
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let journal: Bool

    public init(label: String) {
        self.label = label
        journal = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        let suffix = fields.isEmpty ? "" : " " + fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let line = journal
            ? "<\(Self.priority(event.level))>\(event.message)\(suffix)\n"
            : "\(event.level): \(event.message)\(suffix)\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}
