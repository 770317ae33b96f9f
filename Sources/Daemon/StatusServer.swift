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
        /// Connections accepted in one loop turn: the rest wait in the listen backlog while the
        /// loop serves the clients it has and the kernel.
        var acceptsPerTurn = 16
    }

    final class Client {
        let fd: Int32
        let uid: UInt32
        /// The connecting process (SO_PEERCRED): a flood of connections from one process evicts
        /// its own connections first.
        let pid: Int32
        /// Connection order: among clients idle equally long, the earliest connected goes first.
        let order: UInt64
        /// `input[consumed...]` is unprocessed and `input[consumed..<scanned]` holds no newline:
        /// each byte is searched once and the buffer compacted once per read, so taking lines
        /// (64 KiB of blank ones included) is linear in what the client sent.
        var input: [UInt8] = []
        var consumed = 0
        var scanned = 0
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

        init(fd: Int32, uid: UInt32, pid: Int32, order: UInt64, now: ContinuousClock.Instant, idle: Duration) {
            self.fd = fd
            self.uid = uid
            self.pid = pid
            self.order = order
            deadline = now + idle
            lastRequest = now
        }

        /// Bytes read and not yet taken as lines.
        var unprocessed: Int { input.count - consumed }

        /// Where the next complete line ends (its newline), searching only bytes not searched before.
        func lineEnd() -> Int? {
            scanned = max(scanned, consumed)
            let from = scanned
            let found: Int? = input.withUnsafeBytes { bytes in
                guard from < bytes.count, let hit = memchr(bytes.baseAddress! + from, 10, bytes.count - from) else { return nil }
                return bytes.baseAddress!.distance(to: UnsafeRawPointer(hit))
            }
            scanned = found ?? input.count
            return found
        }

        /// Steps over empty lines in one pass, eight bytes at a time: a flood of newlines costs
        /// a compare per word, not a parse per line.
        func skipEmptyLines() {
            consumed = input.withUnsafeBytes { bytes in
                var at = consumed
                while at + 8 <= bytes.count, bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self) == 0x0a0a_0a0a_0a0a_0a0a { at += 8 }
                while at < bytes.count, bytes[at] == 10 { at += 1 }
                return at
            }
        }

        var hasRequestLine: Bool { lineEnd() != nil || (eof && unprocessed > 0) }

        /// The next line without its newline (the rest at end of file), consumed or not.
        func line(consume: Bool) -> [UInt8]? {
            if let newline = lineEnd() {
                defer { if consume { consumed = newline + 1 } }
                return Array(input[consumed..<newline])
            }
            guard eof, unprocessed > 0 else { return nil }
            defer { if consume { consumed = input.count } }
            return Array(input[consumed...])
        }

        /// Drops the lines already taken: once per read, not once per line.
        func compact() {
            guard consumed > 0 else { return }
            if consumed == input.count { input.removeAll(keepingCapacity: true) } else { input.removeSubrange(..<consumed) }
            scanned -= consumed
            consumed = 0
        }

        /// Nothing to lose by closing it: no request read, none being answered, no reply queued.
        var isIdle: Bool { !waitsForReload && output.isEmpty && !hasRequestLine }
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
    /// Connections turned away because every client had a request or a reply in progress.
    private(set) var busy = 0
    private var connections: UInt64 = 0

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
                    + "it is left alone: remove it or set runtime.status_socket", configuration: true)
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

    /// Accepts up to `acceptsPerTurn` waiting connections. A peer that is neither root nor
    /// allowed gets one error line and is closed. Each new client is read at once: its request
    /// is usually there already, and a client with a request is not evicted before its answer
    /// is queued. When full, clients that hung up are reaped first; otherwise an idle client
    /// makes room (see `victim`), so a flood of connections cannot keep an operator out.
    func acceptWaiting(now: ContinuousClock.Instant) {
        for _ in 0..<limits.acceptsPerTurn {
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
                turnAway(client, #"permission denied: uid \#(uid) is not root\#(access.group.map { " nor in group \($0.name)" } ?? "")"#)
                continue
            }
            if clients.count >= limits.maxClients {
                catchUp()
                if clients.count >= limits.maxClients {
                    guard let victim = victim() else {
                        busy += 1
                        turnAway(client, "busy: all \(limits.maxClients) clients have a request or a reply in progress; try again")
                        continue
                    }
                    evicted += 1
                    drop(victim.fd)
                }
            }
            connections += 1
            let new = Client(fd: client, uid: uid, pid: pid, order: connections, now: now, idle: limits.idleTimeout)
            clients[client] = new
            do { try loop.add(client, token: Self.tokenBase + UInt64(client)) } catch { drop(client); continue }
            if !fill(new) { drop(client); continue }
            settle(new)
        }
    }

    /// One error line, then close: the line is queued before the close, so the peer reads it
    /// even when its request was left unread.
    private func turnAway(_ client: Int32, _ error: String) {
        let reply = Array(#"{"error":"\#(error)"}"#.utf8) + [10]
        _ = reply.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        close(client)
    }

    /// Reads what clients sent since the loop last looked (one poll for all): those that hung up
    /// with nothing to answer leave, and a request that arrived protects its client.
    private func catchUp() {
        var polled = clients.values.filter { !$0.eof && !$0.hungUp }.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        guard poll(&polled, nfds_t(polled.count), 0) > 0 else { return }
        for entry in polled where entry.revents != 0 {
            guard let client = clients[entry.fd] else { continue }
            if !fill(client) { drop(entry.fd); continue }
            settle(client)
        }
    }

    /// The client to close for a new one. An idle one (no request read or being answered, no
    /// reply queued, not waiting for a reload), else one that left a full reply queue unread;
    /// of those, one of the process that holds the most connections, idle longest, connected
    /// earliest. Nil when every client has a request or a reply in progress.
    private func victim() -> Client? {
        func tier(_ client: Client) -> Int? {
            client.isIdle ? 0 : client.output.count >= limits.maxOutputBytes ? 1 : nil
        }
        var held: [Int32: Int] = [:]
        for client in clients.values { held[client.pid, default: 0] += 1 }
        return clients.values.compactMap { client in tier(client).map { (client, $0) } }.min { a, b in
            if a.1 != b.1 { return a.1 < b.1 }
            let heldA = held[a.0.pid] ?? 0, heldB = held[b.0.pid] ?? 0
            if heldA != heldB { return heldA > heldB }
            if a.0.lastRequest != b.0.lastRequest { return a.0.lastRequest < b.0.lastRequest }
            return a.0.order < b.0.order
        }?.0
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
        client.compact()
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
        if !client.eof, client.unprocessed >= limits.maxInputBytes, client.lineEnd() == nil {
            // A line longer than any request: say so and hang up.
            client.input = []
            client.consumed = 0
            client.scanned = 0
            client.eof = true
            queue(client, #"{"error":"\#(StatusRequestError.tooLong(limits.maxInputBytes))"}"#)
            _ = flush(client)
            return settle(client)
        }
        loop.modify(client.fd, token: Self.tokenBase + UInt64(client.fd),
                    readable: !client.eof && client.unprocessed < limits.maxInputBytes, writable: !client.output.isEmpty)
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
            while true {
                client.skipEmptyLines()
                guard let line = client.line(consume: true) else { break }
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
        while let line = client.line(consume: false) {
            switch StatusRequest.parse(line) {
            case .success(.reload): client.awaitingReload += 1
            case .failure(.empty): break
            default: return
            }
            _ = client.line(consume: true)
        }
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
    /// What only the operator can fix (the configuration, a changed claim): `run` exits with
    /// `configurationExitStatus` for it, which the unit's `RestartPreventExitStatus=` names, so
    /// systemd does not restart into the same error every `RestartSec=`.
    public let isConfiguration: Bool
    public init(_ description: String, configuration: Bool = false) {
        self.description = description
        self.isConfiguration = configuration
    }

    /// EX_CONFIG (sysexits.h).
    public static let configurationExitStatus: Int32 = 78
}
