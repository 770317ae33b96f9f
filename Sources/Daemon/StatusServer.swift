import Foundation
import CLinux
import Glibc
import SystemPackage

/// The status socket: a Unix stream listener and its clients, all non-blocking and bounded so
/// that no client (silent, flooding, or never reading) can stall the loop that owns it.
final class StatusServer {
    static let maxRequestBytes = 64 * 1024
    static let maxPendingReplyBytes = 64 << 20
    static let maxClients = 64
    static let idleTimeout: Duration = .seconds(10)

    final class Client {
        let fd: Int32
        var input: [UInt8] = []
        var output: [UInt8] = []
        /// The client shut down its sending side: answer what it asked, then close.
        var eof = false
        var deadline: ContinuousClock.Instant
        init(fd: Int32) {
            self.fd = fd
            deadline = .now + StatusServer.idleTimeout
        }
    }

    let path: String
    let fd: Int32
    private(set) var clients: [Int32: Client] = [:]

    /// Binds `path` (mode 0660). A socket file left by a crashed run is replaced; a live daemon
    /// answering on it is an error.
    init(path: String) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        guard let address = UnixSocketAddress(path) else { throw DaemonError("status socket path too long: \(path)") }
        if FileManager.default.fileExists(atPath: path) {
            if Self.someoneAnswers(address) {
                throw DaemonError("another wgkeeper is running on status socket \(path); stop it first (or set runtime.status_socket)")
            }
            unlink(path)
        }
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DaemonError("status socket: \(Errno(rawValue: errno))") }
        guard address.bind(fd) == 0, chmod(path, 0o660) == 0, listen(fd, 64) == 0 else {
            let error = Errno(rawValue: errno)
            close(fd)
            throw DaemonError("status socket \(path): \(error)")
        }
    }

    deinit {
        for client in clients.values { close(client.fd) }
        close(fd)
        unlink(path)
    }

    static func someoneAnswers(_ address: UnixSocketAddress) -> Bool {
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { return false }
        defer { close(probe) }
        return address.connect(probe) == 0
    }

    /// Accepts what is waiting; returns the new clients' descriptors for the loop to watch.
    func accept() -> [Int32] {
        var accepted: [Int32] = []
        while true {
            let client = accept4(fd, nil, nil, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            if client < 0 { break }
            if clients.count >= Self.maxClients {
                close(client)
                continue
            }
            clients[client] = Client(fd: client)
            accepted.append(client)
        }
        return accepted
    }

    /// Reads what the client sent; returns the complete request lines. A client that sends more
    /// than `maxRequestBytes` without a newline, or hangs up, is closed (returns nil).
    func read(_ fd: Int32) -> [String]? {
        guard let client = clients[fd] else { return nil }
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n > 0 {
                client.input += buffer[0..<n]
                if client.input.count > Self.maxRequestBytes, !client.input.contains(UInt8(ascii: "\n")) { return nil }
                continue
            }
            if n == 0 {
                client.eof = true
                break
            }
            if errno == EINTR { continue }
            if errno == EAGAIN { break }
            return nil
        }
        var lines: [String] = []
        while let newline = client.input.firstIndex(of: UInt8(ascii: "\n")) {
            lines.append(String(decoding: client.input[..<newline], as: UTF8.self))
            client.input.removeSubrange(...newline)
        }
        if client.input.count > Self.maxRequestBytes { return nil }
        if client.eof, !client.input.isEmpty {
            lines.append(String(decoding: client.input, as: UTF8.self))
            client.input = []
        }
        if !lines.isEmpty { client.deadline = .now + Self.idleTimeout }
        return lines
    }

    /// Queues a reply and writes what the socket takes now. Returns false when the client must
    /// be dropped (its unread replies grew past the bound, or the socket failed).
    func reply(_ fd: Int32, _ line: String) -> Bool {
        guard let client = clients[fd] else { return false }
        client.output += Array(line.utf8) + [UInt8(ascii: "\n")]
        if client.output.count > Self.maxPendingReplyBytes { return false }
        return flush(fd)
    }

    /// Writes queued output; false on a socket error.
    func flush(_ fd: Int32) -> Bool {
        guard let client = clients[fd] else { return false }
        while !client.output.isEmpty {
            let n = client.output.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                client.output.removeFirst(n)
                continue
            }
            if n < 0, errno == EINTR { continue }
            return n < 0 && errno == EAGAIN
        }
        return true
    }

    func wantsWrite(_ fd: Int32) -> Bool { !(clients[fd]?.output.isEmpty ?? true) }
    func isFinished(_ fd: Int32) -> Bool { clients[fd].map { $0.eof && $0.output.isEmpty } ?? true }
    func isReadClosed(_ fd: Int32) -> Bool { clients[fd]?.eof ?? true }

    func drop(_ fd: Int32) {
        guard clients.removeValue(forKey: fd) != nil else { return }
        close(fd)
    }

    /// Clients idle past their deadline; the loop drops them.
    func expired(at now: ContinuousClock.Instant) -> [Int32] {
        clients.values.filter { $0.deadline <= now }.map(\.fd)
    }

    var nextDeadline: ContinuousClock.Instant? { clients.values.map(\.deadline).min() }
}

public struct DaemonError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
