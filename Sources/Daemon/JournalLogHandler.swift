import CLinux
import FoundationEssentials
import Glibc
import Logging
import Synchronization

/// One log line per message, written so that logging can neither block the loop nor kill the
/// process: a full or closed standard error (EAGAIN, EPIPE) loses the line and counts it.
///
/// Under journald (`JOURNAL_STREAM` names standard error's device and inode) each message goes
/// to the journal's native socket as a datagram with its fields (MESSAGE, PRIORITY, and the
/// metadata as upper-case fields), sent non-blocking: libsystemd's `sd_journal_send` blocks
/// while journald's queue is full. Without that socket, lines carry a `<N>` priority prefix.
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String

    public init(label: String) {
        self.label = label
    }

    /// Lines lost since start.
    public static var dropped: Int { LogSink.shared.dropped }

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
        let sorted = fields.sorted { $0.key < $1.key }.map { ($0.key, "\($0.value)") }
        LogSink.shared.write(priority: Self.priority(event.level), level: event.level, message: "\(event.message)", fields: sorted)
    }
}

/// Where log lines go; shared by every handler so the counters and descriptors are one.
final class LogSink: @unchecked Sendable {
    static let shared = LogSink()

    private enum StandardError {
        /// A stream socket (journald's): sent with MSG_DONTWAIT.
        case socket
        /// A private non-blocking descriptor on the same pipe or terminal.
        case reopened(Int32)
        /// Descriptor 2 itself (a regular file, or a pipe that could not be reopened): written
        /// only when poll says it takes a line now.
        case polled
    }

    /// Lines lost; its lock also keeps one line from interleaving with another.
    private let lost = Mutex(0)
    private let standardError: StandardError
    /// Lines on standard error start with `<N>` (journald's stream protocol).
    private let priorityPrefix: Bool
    private let journal: (fd: Int32, address: UnixSocketAddress)?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        // A write to a pipe nobody reads must fail with EPIPE, not end the process.
        signal(SIGPIPE, SIG_IGN)
        var info = stat()
        let stderrOpen = fstat(2, &info) == 0
        let kind = info.st_mode & S_IFMT
        if stderrOpen, kind == S_IFSOCK {
            standardError = .socket
        } else if stderrOpen, kind == S_IFIFO || kind == S_IFCHR {
            // A fresh open file description: O_NONBLOCK here does not touch whoever shares fd 2.
            let fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC)
            standardError = fd >= 0 ? .reopened(fd) : .polled
        } else {
            standardError = .polled
        }
        let underJournal = stderrOpen && environment["JOURNAL_STREAM"].map { stream in
            stream == "\(info.st_dev):\(info.st_ino)"
        } == true
        priorityPrefix = underJournal
        var journal: (Int32, UnixSocketAddress)?
        if underJournal, let address = UnixSocketAddress(environment["WGKEEPER_JOURNAL_SOCKET"] ?? "/run/systemd/journal/socket") {
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            if fd >= 0 { journal = (fd, address) }
        }
        self.journal = journal
    }

    var dropped: Int { lost.withLock { $0 } }

    func write(priority: Int, level: Logger.Level, message: String, fields: [(String, String)]) {
        let suffix = fields.isEmpty ? "" : " " + fields.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
        lost.withLock { lost in
            if let journal {
                let datagram = Self.journalDatagram(priority: priority, message: message + suffix, fields: fields)
                let sent = journal.address.send(journal.fd, datagram, flags: Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
                if sent == datagram.count { return }
                // EAGAIN: journald is behind, the line is lost; anything else (too big, journald
                // restarting): standard error still carries it.
                if sent < 0, errno == EAGAIN { lost += 1; return }
            }
            let line = priorityPrefix ? "<\(priority)>\(message)\(suffix)\n" : "\(level): \(message)\(suffix)\n"
            if !writeStandardError(Array(line.utf8)) { lost += 1 }
        }
    }

    /// The journal's native protocol: `KEY=value\n`, or `KEY\n` + 64-bit little-endian length +
    /// value + `\n` for a value holding a newline.
    static func journalDatagram(priority: Int, message: String, fields: [(String, String)]) -> [UInt8] {
        var out: [UInt8] = []
        func field(_ name: String, _ value: String) {
            let bytes = Array(value.utf8)
            out += Array(name.utf8)
            if bytes.contains(10) {
                out.append(10)
                withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { out += $0 }
            } else {
                out.append(UInt8(ascii: "="))
            }
            out += bytes
            out.append(10)
        }
        field("MESSAGE", message)
        field("PRIORITY", "\(priority)")
        field("SYSLOG_IDENTIFIER", "wgkeeper")
        for (key, value) in fields { field(journalFieldName(key), value) }
        return out
    }

    /// Upper case, letters, digits and `_`, not starting with `_` or a digit, at most 64; our
    /// names never take the journal's own (MESSAGE, PRIORITY, …).
    static func journalFieldName(_ key: String) -> String {
        var name = String(key.uppercased().unicodeScalars.map { scalar -> Character in
            ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) ? Character(scalar) : "_"
        })
        if name.isEmpty || name.first == "_" || name.first!.isNumber
            || ["MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "ERRNO"].contains(name) {
            name = "WGKEEPER_" + name
        }
        return String(name.prefix(64))
    }

    /// Whole line written; false when any of it was lost.
    private func writeStandardError(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n: Int = bytes.withUnsafeBytes { buffer in
                let start = buffer.baseAddress! + offset, count = buffer.count - offset
                switch standardError {
                case .socket: return send(2, start, count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
                case .reopened(let fd): return Glibc.write(fd, start, count)
                case .polled:
                    var ready = pollfd(fd: 2, events: Int16(POLLOUT), revents: 0)
                    guard poll(&ready, 1, 0) == 1, ready.revents & Int16(POLLOUT) != 0 else { errno = EAGAIN; return -1 }
                    // POLLOUT on a pipe promises room for PIPE_BUF bytes: write no more, so it cannot block.
                    return Glibc.write(2, start, min(count, Int(PIPE_BUF)))
                }
            }
            if n > 0 {
                offset += n
            } else if n < 0, errno == EINTR {
                continue
            } else {
                return false
            }
        }
        return true
    }
}

/// Descriptors 0, 1 and 2 are opened on /dev/null when the daemon was started without them,
/// so that no socket the daemon opens later becomes "standard error" and receives log lines.
public enum StandardStreams {
    public static func reserve() {
        for fd in Int32(0)...2 where fcntl(fd, F_GETFD) < 0 && errno == EBADF {
            let null = open("/dev/null", O_RDWR)
            if null >= 0, null != fd {
                dup2(null, fd)
                close(null)
            }
        }
    }
}
