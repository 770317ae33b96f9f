import Glibc
import Netlink

/// An IPv6 TCP socket in the namespace it was created in (create it inside `perform`): a
/// listener or one end of a connection. Blocking, with every wait bounded by a timeout.
public final class TCPSocket: @unchecked Sendable {
    public private(set) var fd: Int32

    private init() throws {
        fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("tcp socket: \(SocketError(errno))") }
    }

    private init(fd: Int32) { self.fd = fd }

    deinit { if fd >= 0 { close(fd) } }

    /// Listening on [address]:port.
    public static func listen(on address: String, port: UInt16) throws -> TCPSocket {
        let listener = try TCPSocket()
        var one: Int32 = 1
        setsockopt(listener.fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        try listener.bind(address, port)
        guard Glibc.listen(listener.fd, 16) == 0 else { throw TestFailure("listen [\(address)]:\(port): \(SocketError(errno))") }
        return listener
    }

    /// The next connection, or nil after `timeout` milliseconds.
    public func accept(timeout: Int32) -> TCPSocket? {
        var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pollfd, 1, timeout) > 0 else { return nil }
        let connection = Glibc.accept(fd, nil, nil)
        guard connection >= 0 else { return nil }
        _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
        return TCPSocket(fd: connection)
    }

    /// A connection from `source` to [address]:port, or the error connect(2) ended with
    /// (ETIMEDOUT when nothing came back within `timeout` milliseconds).
    public static func connect(from source: String, to address: String, port: UInt16,
                               timeout: Int32) throws -> Result<TCPSocket, SocketError> {
        let connection = try TCPSocket()
        try connection.bind(source, 0)
        let flags = fcntl(connection.fd, F_GETFL)
        _ = fcntl(connection.fd, F_SETFL, flags | O_NONBLOCK)
        var remote = socketAddress(address, port)
        let started = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(connection.fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
        if started != 0 {
            guard errno == EINPROGRESS else { return .failure(SocketError(errno)) }
            var pollfd = Glibc.pollfd(fd: connection.fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&pollfd, 1, timeout) > 0 else { return .failure(SocketError(ETIMEDOUT)) }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(connection.fd, SOL_SOCKET, SO_ERROR, &error, &length)
            guard error == 0 else { return .failure(SocketError(error)) }
        }
        _ = fcntl(connection.fd, F_SETFL, flags)
        return .success(connection)
    }

    public func send(_ bytes: [UInt8]) throws {
        guard Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else {
            throw TestFailure("tcp send: \(SocketError(errno))")
        }
    }

    /// Up to `count` bytes, waiting at most `timeout` milliseconds for each read.
    public func receive(_ count: Int, timeout: Int32) -> [UInt8] {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: count)
        while received.count < count {
            var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pollfd, 1, timeout) > 0 else { break }
            let n = recv(fd, &buffer, count - received.count, 0)
            guard n > 0 else { break }
            received += buffer[..<n]
        }
        return received
    }

    /// Closes with a reset (SO_LINGER 0): one segment, nothing left to trail behind.
    public func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(fd)
        fd = -1
    }

    private func bind(_ address: String, _ port: UInt16) throws {
        var local = socketAddress(address, port)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
        guard bound == 0 else { throw TestFailure("bind [\(address)]:\(port): \(SocketError(errno))") }
    }
}
