import Daemon
import FoundationEssentials
import Glibc

/// One request on the daemon's status socket, one reply line back. `timeout` bounds the whole
/// wait for the reply; nil waits as long as the daemon takes (a reload of a large file).
func askDaemon(socket path: String, command: String, timeout: Duration? = .seconds(30)) throws -> Data {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw CLIError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard let address = UnixSocketAddress(path) else { throw CLIError("socket path too long: \(path)") }
    guard address.connect(fd) == 0 else {
        let code = errno
        // /run/wgkeeper is root's (0750): a user who may not enter it is not told the daemon is down.
        let hint = code == EACCES || code == EPERM
            ? "only root and members of runtime.status_group may use it"
            : "is `wgkeeper run` running? see --socket"
        throw CLIError("cannot reach wgkeeper at \(path): \(String(cString: strerror(code))) (\(hint))")
    }
    let deadline = timeout.map { ContinuousClock.now + $0 }
    let request = Array(#"{"command":"\#(command)"}"#.utf8) + [10]
    let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    let sendError = errno
    var reply: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    while !reply.contains(10) {
        var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let wait = deadline.map { Int32(clamping: max(0, milliseconds(ContinuousClock.now.duration(to: $0)))) } ?? -1
        let polled = poll(&ready, 1, wait)
        if polled < 0, errno == EINTR { continue }
        if polled == 0 { throw AskTimeout(after: timeout ?? .zero) }
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        if n > 0 { reply += buffer[0..<n]; continue }
        if n < 0, errno == EINTR || errno == EAGAIN { continue }
        // A daemon that refuses us answers with one error line and closes before our request
        // is read: that line is the reason to print, not the failed send.
        if sent != request.count {
            throw CLIError("sending to \(path) failed: \(String(cString: strerror(sendError)))")
        }
        throw CLIError(n == 0 ? "wgkeeper closed the connection without answering" : "no answer from wgkeeper: \(String(cString: strerror(errno)))")
    }
    return Data(reply[..<reply.firstIndex(of: 10)!])
}

/// No reply within the client's timeout: the daemon may still be working on the request.
struct AskTimeout: Error, CustomStringConvertible {
    let after: Duration
    var description: String { "no answer from wgkeeper within \(after.components.seconds) s" }
}

private func milliseconds(_ d: Duration) -> Int64 { d.components.seconds * 1000 + (d.components.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000 }

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func decodeReply<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    if let error = try? decoder.decode(ErrorReply.self, from: data) { throw CLIError("wgkeeper: \(error.error)") }
    return try decoder.decode(T.self, from: data)
}
