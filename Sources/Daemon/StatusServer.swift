import CLinux
import Glibc
import SystemPackage

/// The status socket: a Unix stream listener and its clients, all non-blocking and bounded so
/// that no client (silent, flooding, never reading, or merely numerous) can stall the loop or
/// lock others out. The server does the I/O and hands out requests, at most one per client per
/// loop turn; the daemon answers them.
final class StatusServer {
    struct Limits {
        var maxClients = 64
        /// Unprocessed bytes read from one client; beyond this the socket is not read.
        var maxInputBytes = 64 * 1024
        /// Unsent reply bytes queued for one client: it is not served again until it reads
        /// below this, so its queue never exceeds this plus one reply (however large a status
        /// reply of a big gateway is) or the answers to the reload requests it had sent.
        var maxOutputBytes = 1 << 20
        var idleTimeout: Duration = .seconds(10)
    }

    final class Client {
        let fd: Int32
        let uid: UInt32
        var input: [UInt8] = []
        var output: [UInt8] = []
        /// The client shut down its sending side: answer what it asked, then close.
        var eof = false
        /// Only a request (never a blank line) moves this.
        var deadline: ContinuousClock.Instant
        var lastRequest: ContinuousClock.Instant
        /// Reload requests of this client that the next reload answers.
        var awaitingReload = 0
        /// Reload requests the reload being read now answers (they came before it began).
        var awaitingRunningReload = 0
        var waitsForReload: Bool { awaitingReload > 0 || awaitingRunningReload > 0 }
        /// The peer closed both directions: nothing it sent is lost, but it is no longer polled.
        var hungUp = false

        init(fd: Int32, uid: UInt32, now: ContinuousClock.Instant, idle: Duration) {
            self.fd = fd
            self.uid = uid
            deadline = now + idle
            lastRequest = now
        }

        var hasRequestLine: Bool { input.contains(10) || (eof && !input.isEmpty) }
    }

    static let tokenBase: UInt64 = 1000

    let path: String
    let fd: Int32
    let limits: Limits
    let access: StatusAccess
    private let loop: EventLoop
    /// The socket file this server created, so exit removes that file and nothing else.
    private let identity: (device: UInt64, inode: UInt64)
    private(set) var clients: [Int32: Client] = [:]
    private(set) var refused = 0
    private(set) var evicted = 0

    /// Binds `path` with mode 0660 and the access group. A socket file left by a crashed run is
    /// replaced; a live daemon answering on it, or anything that is not a socket, is an error.
    init(path: String, access: StatusAccess, loop: EventLoop, limits: Limits = Limits()) throws {
        self.path = path
        self.access = access
        self.loop = loop
        self.limits = limits
        guard let address = UnixSocketAddress(path) else { throw DaemonError("status socket path too long: \(path)") }
        try Self.makeParent(of: path)
        var existing = stat()
        if lstat(path, &existing) == 0 {
            guard existing.st_mode & S_IFMT == S_IFSOCK else {
                throw DaemonError("status socket \(path) exists and is not a socket (\(Self.kind(existing.st_mode))); "
                    + "it is left alone: remove it or set runtime.status_socket")
            }
            if Self.someoneAnswers(address) {
                throw DaemonError("another wgkeeper is running on status socket \(path); stop it first")
            }
            unlink(path)
        } else if errno != ENOENT {
            throw DaemonError("status socket \(path): \(Errno(rawValue: errno))")
        }
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DaemonError("status socket: \(Errno(rawValue: errno))") }
        do {
            identity = try Self.bind(fd, address, group: access.group?.id)
        } catch {
            close(fd)
            throw error
        }
        try loop.add(fd, token: Self.tokenBase - 1)
    }

    /// Binds and listens, with the file created 0660 by bind() itself and given the access group
    /// through a descriptor: no chmod or chown by path that a symbolic link swapped in between
    /// could send elsewhere. Returns the socket file's identity.
    private static func bind(_ fd: Int32, _ address: UnixSocketAddress, group: gid_t?) throws -> (device: UInt64, inode: UInt64) {
        let path = address.path
        func failure(_ what: String, _ code: Int32) -> DaemonError {
            DaemonError("status socket \(path): \(what)\(what.isEmpty ? "" : ": ")\(Errno(rawValue: code))")
        }
        // unix_bind() creates the file with mode 0777 & ~umask. The umask is the process's: this
        // runs in Daemon.init, before any other thread exists, so nothing else sees it.
        let saved = umask(0o117)
        let bound = address.bind(fd)
        let bindError = errno
        umask(saved)
        guard bound == 0 else { throw failure("", bindError) }
        // What the path holds now, never through a symbolic link; anything but a socket means
        // it was replaced since bind() and is not touched.
        let file = wgk_open_path_nofollow(path)
        guard file >= 0 else { throw failure("after bind", errno) }
        defer { close(file) }
        var created = stat()
        guard fstat(file, &created) == 0 else { throw failure("after bind", errno) }
        guard created.st_mode & S_IFMT == S_IFSOCK else {
            throw DaemonError("status socket \(path) was replaced by \(kind(created.st_mode)) while it was being created; it is left alone")
        }
        // chown only for a status_group: the unit's system call filter has no @chown otherwise.
        if let group, wgk_chown_descriptor(file, UInt32.max, group) != 0 { throw failure("setting its group", errno) }
        // No one can connect before listen(): by then the file has its final mode and group.
        guard listen(fd, 64) == 0 else { throw failure("listen", errno) }
        return (UInt64(created.st_dev), UInt64(created.st_ino))
    }

    deinit {
        for client in clients.values { close(client.fd) }
        close(fd)
        // Only the socket this run bound: never a file someone put there since.
        var now = stat()
        if lstat(path, &now) == 0, now.st_mode & S_IFMT == S_IFSOCK,
           UInt64(now.st_dev) == identity.device, UInt64(now.st_ino) == identity.inode {
            unlink(path)
        }
    }

    var listenerToken: UInt64 { Self.tokenBase - 1 }

    private static func makeParent(of path: String) throws {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let parent = String(path[..<slash])
        var info = stat()
        if stat(parent, &info) == 0 { return }
        try makeParent(of: parent)
        guard mkdir(parent, 0o755) == 0 || errno == EEXIST else {
            throw DaemonError("status socket directory \(parent): \(Errno(rawValue: errno))")
        }
    }

    private static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: "a regular file"
        case S_IFDIR: "a directory"
        case S_IFLNK: "a symbolic link"
        case S_IFIFO: "a FIFO"
        default: "not a socket"
        }
    }

    static func someoneAnswers(_ address: UnixSocketAddress) -> Bool {
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { return false }
        defer { close(probe) }
        return address.connect(probe) == 0
    }

    // MARK: - clients

    /// Accepts what is waiting. A peer that is neither root nor allowed gets one error line and
    /// is closed. When full, the client idle longest makes room: a crowd of silent clients
    /// cannot keep an operator out.
    func acceptWaiting(now: ContinuousClock.Instant) {
        while true {
            let client = accept4(fd, nil, nil, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            var pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
            var groups = [UInt32](repeating: 0, count: 1024)
            let count = wgk_peer_groups(client, &groups, Int32(groups.count))
            guard wgk_peer_credentials(client, &pid, &uid, &gid) == 0,
                  access.allows(uid: uid, gid: gid, groups: groups.prefix(max(0, Int(count))))
            else {
                refused += 1
                let reply = Array(#"{"error":"permission denied: uid \#(uid) is not root\#(access.group.map { " nor in group \($0.name)" } ?? "")"}"#.utf8) + [10]
                _ = reply.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                close(client)
                continue
            }
            if clients.count >= limits.maxClients, let victim = longestIdle() {
                evicted += 1
                drop(victim)
            }
            clients[client] = Client(fd: client, uid: uid, now: now, idle: limits.idleTimeout)
            do { try loop.add(client, token: Self.tokenBase + UInt64(client)) } catch { drop(client) }
        }
    }

    /// The client to give up first: not waiting for a reload, nothing queued, oldest request.
    private func longestIdle() -> Int32? {
        clients.values.min { a, b in
            let busyA = a.waitsForReload || !a.output.isEmpty, busyB = b.waitsForReload || !b.output.isEmpty
            return busyA != busyB ? !busyA : a.lastRequest < b.lastRequest
        }?.fd
    }

    func fd(forToken token: UInt64) -> Int32? {
        token >= Self.tokenBase ? Int32(truncatingIfNeeded: token - Self.tokenBase) : nil
    }

    /// Reads and writes what the socket allows for one client.
    func service(_ fd: Int32, _ ready: EventLoop.Ready) {
        guard let client = clients[fd] else { return }
        if ready.writable, !flush(client) { return drop(fd) }
        if ready.readable || ready.hangup, !fill(client) { return drop(fd) }
        // epoll reports a hang-up whatever it is asked for: stop polling, serve what was read.
        if ready.hangup, client.eof { client.hungUp = true }
        settle(client)
    }

    /// Reads until the socket is empty or the input bound is reached; false on a socket error.
    private func fill(_ client: Client) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while !client.eof, client.input.count < limits.maxInputBytes {
            let n = Glibc.read(client.fd, &buffer, min(buffer.count, limits.maxInputBytes - client.input.count))
            if n > 0 {
                client.input += buffer[0..<n]
            } else if n == 0 {
                client.eof = true
            } else if errno == EINTR {
                continue
            } else {
                return errno == EAGAIN
            }
        }
        return true
    }

    /// Writes queued output; false on a socket error.
    private func flush(_ client: Client) -> Bool {
        var sent = 0
        defer { if sent > 0 { client.output.removeFirst(sent) } }
        while sent < client.output.count {
            let n = client.output.withUnsafeBytes { send(client.fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                sent += n
            } else if n < 0, errno == EINTR {
                continue
            } else {
                return n < 0 && errno == EAGAIN
            }
        }
        return true
    }

    /// Closes a finished client, or tells the loop what to wait for on it: no reading while the
    /// input bound is reached (the kernel's socket buffer then pushes back on the sender).
    private func settle(_ client: Client) {
        let idle = !client.waitsForReload && !client.hasRequestLine
        if client.eof, idle, client.output.isEmpty || client.hungUp { return drop(client.fd) }
        if client.hungUp { return loop.remove(client.fd) }
        if !client.eof, client.input.count >= limits.maxInputBytes, !client.input.contains(10) {
            // A line longer than any request: say so and hang up.
            client.input = []
            client.eof = true
            queue(client, #"{"error":"\#(StatusRequestError.tooLong(limits.maxInputBytes))"}"#)
            _ = flush(client)
            return settle(client)
        }
        loop.modify(client.fd, token: Self.tokenBase + UInt64(client.fd),
                    readable: !client.eof && client.input.count < limits.maxInputBytes, writable: !client.output.isEmpty)
    }

    func drop(_ fd: Int32) {
        guard clients.removeValue(forKey: fd) != nil else { return }
        loop.remove(fd)
        close(fd)
    }

    // MARK: - requests

    /// Whether a client could be served now without waiting for I/O.
    var hasRequests: Bool { clients.values.contains(where: isServable) }

    private func isServable(_ client: Client) -> Bool {
        !client.waitsForReload && client.output.count < limits.maxOutputBytes && client.hasRequestLine
    }

    /// At most one request from each client that has one and is not waiting for a reload or
    /// sitting on unread replies. Blank lines are skipped and do not count as activity.
    func takeRequests(now: ContinuousClock.Instant) -> [(fd: Int32, request: Result<StatusRequest, StatusRequestError>)] {
        var taken: [(Int32, Result<StatusRequest, StatusRequestError>)] = []
        for client in clients.values where isServable(client) {
            var took = false
            while let line = nextLine(client) {
                let request = StatusRequest.parse(line)
                if case .failure(.empty) = request { continue }
                client.lastRequest = now
                client.deadline = now + limits.idleTimeout
                taken.append((client.fd, request))
                took = true
                break
            }
            // A client that asked is settled once answered (reply, answerReloads): one that
            // half-closed after its request must not be dropped before its answer is queued.
            if !took { settle(client) }
        }
        return taken
    }

    private func nextLine(_ client: Client) -> [UInt8]? {
        if let newline = client.input.firstIndex(of: 10) {
            let line = Array(client.input[..<newline])
            client.input.removeSubrange(...newline)
            return line
        }
        guard client.eof, !client.input.isEmpty else { return nil }
        defer { client.input = [] }
        return client.input
    }

    func reply(_ fd: Int32, _ line: String) {
        guard let client = clients[fd] else { return }
        queue(client, line)
        if !flush(client) { return drop(fd) }
        settle(client)
    }

    private func queue(_ client: Client, _ line: String) {
        client.output += Array(line.utf8)
        client.output.append(10)
    }

    /// The client waits for the next reload, and so does every reload request it has already
    /// sent: one reload answers them all, however many were pipelined.
    func awaitReload(_ fd: Int32) {
        guard let client = clients[fd] else { return }
        client.awaitingReload += 1
        while let line = peekLine(client) {
            switch StatusRequest.parse(line) {
            case .success(.reload): client.awaitingReload += 1
            case .failure(.empty): break
            default: return
            }
            _ = nextLine(client)
        }
    }

    private func peekLine(_ client: Client) -> [UInt8]? {
        if let newline = client.input.firstIndex(of: 10) { return Array(client.input[..<newline]) }
        return client.eof && !client.input.isEmpty ? client.input : nil
    }

    var reloadAwaited: Bool { clients.values.contains(where: \.waitsForReload) }

    /// A reload begins: the requests made so far are answered by it; later ones by the next.
    func beginReload() {
        for client in clients.values {
            client.awaitingRunningReload += client.awaitingReload
            client.awaitingReload = 0
        }
    }

    /// Answers the reload requests made before the reload that just finished began.
    func answerReloads(_ line: String) {
        for client in clients.values where client.awaitingRunningReload > 0 {
            // One answer per request, but never more than the reply bound: the rest of a
            // pipelined batch is answered by the copies already queued (a client that wants
            // them all reads first).
            for _ in 0..<client.awaitingRunningReload where client.output.count < limits.maxOutputBytes { queue(client, line) }
            client.awaitingRunningReload = 0
            if !flush(client) { drop(client.fd); continue }
            settle(client)
        }
    }

    /// Drops clients idle past their deadline.
    func expire(at now: ContinuousClock.Instant) {
        for client in clients.values where client.deadline <= now && !client.waitsForReload { drop(client.fd) }
    }

    var nextDeadline: ContinuousClock.Instant? { clients.values.map(\.deadline).min() }
}

public struct DaemonError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
