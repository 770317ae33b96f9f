import Foundation
import Glibc
import Netlink

// A `wgkeeper run` in a bench namespace: its configuration, its sd_notify messages, its
// status socket and its /proc entry.

/// Peer public keys, generated once per process: 50 000 Curve25519 keys take a while.
enum PeerKeys {
    nonisolated(unsafe) private static var keys: [String] = []
    static func first(_ count: Int) -> [String] {
        while keys.count < count { keys.append(PrivateKey.generate().publicKey.base64) }
        return Array(keys.prefix(count))
    }
}

/// Peer `i`'s client address inside 2001:db8:1::/64; `moved` is the address it is changed to.
func peerAddress(_ i: Int, moved: Bool = false) -> String {
    moved ? "2001:db8:1::ffff:\(String(i, radix: 16))" : "2001:db8:1::\(String((i >> 16) + 1, radix: 16)):\(String(i & 0xffff, radix: 16))"
}

/// A gateway configuration of `peers` peers, one /128 each inside the LAN prefix: `peers`
/// derived routes via wg0 and `peers` proxy entries on private0.
struct GatewayConfig {
    let directory: URL
    var peers: Int
    var redirect = false
    var timers = "1s"
    /// The full-resync period; `timers` when nil.
    var resync: String? = nil
    /// Peers whose address is `peerAddress(i, moved: true)`.
    var moved: Set<Int> = []
    /// Each peer in a file of its own in `conf.d` (named by `include_dir`), as operators
    /// on-board devices, instead of one list in the main file.
    var confD = false
    /// `gateway.ndp` (`kernel` when nil) and `gateway.icmp_ratelimit` (the default when nil).
    var ndp: String? = nil
    var icmpRatelimit: String? = nil
    /// A `policy` section, as YAML text.
    var policy: String? = nil

    var path: String { directory.appendingPathComponent("wgkeeper.yaml").path }
    var statusSocket: String { directory.appendingPathComponent("status.sock").path }
    var includeDirectory: URL { directory.appendingPathComponent("conf.d") }

    func peerLine(_ i: Int, _ publicKey: String) -> String {
        "      - {name: p\(i), public_key: \"\(publicKey)\", allowed_ips: [\"\(peerAddress(i, moved: moved.contains(i)))/128\"]}\n"
    }

    /// With `confD`, rewrites only these peers' files (by rename, as an editor or `install` does).
    func write(peers only: [Int]) throws {
        guard confD else { return try write() }
        let keys = PeerKeys.first(peers)
        for i in only { try writePeerFile(i, keys[i]) }
    }

    private func writePeerFile(_ i: Int, _ publicKey: String) throws {
        let file = includeDirectory.appendingPathComponent(String(format: "p%06d.yaml", i)).path
        try ("wireguard:\n  wg0:\n    peers:\n" + peerLine(i, publicKey)).write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o644)
    }

    func write() throws {
        let key = directory.appendingPathComponent("wg0.key").path
        if !FileManager.default.fileExists(atPath: key) {
            try (PrivateKey.generate().key.base64 + "\n").write(toFile: key, atomically: false, encoding: .utf8)
            chmod(key, 0o600)
        }
        var yaml = """
        runtime:
          status_socket: \(statusSocket)
          bpf_pin_root: \(directory.path)/bpf
          proxy_poll: \(timers)
          wireguard_poll: \(timers)
          resync: \(resync ?? timers)
        \(confD ? "  include_dir: conf.d\n" : "")wireguard:
          wg0:
            private_key_file: \(key)
            peers:

        """
        if confD {
            try? FileManager.default.removeItem(at: includeDirectory)
            try FileManager.default.createDirectory(at: includeDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            for (i, publicKey) in PeerKeys.first(peers).enumerated() { try writePeerFile(i, publicKey) }
        } else {
            for (i, publicKey) in PeerKeys.first(peers).enumerated() { yaml += peerLine(i, publicKey) }
        }
        yaml += "gateway: {tunnel: wg0, lan: private0, lan_prefix: \"2001:db8:1::/64\", proxy_ndp: true, redirect: \(redirect)"
            + (ndp.map { ", ndp: \($0)" } ?? "") + (icmpRatelimit.map { ", icmp_ratelimit: \($0)" } ?? "") + "}\n"
            + (policy ?? "")
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    }
}

/// `wgkeeper run` inside a namespace, with NOTIFY_SOCKET pointing at a datagram socket we read.
final class GatewayDaemon {
    let process = Process()
    let config: GatewayConfig
    private let notifications: Notifications
    let started: ContinuousClock.Instant

    init(namespace: String, config: GatewayConfig) throws {
        self.config = config
        let notifyPath = config.directory.appendingPathComponent("notify.sock").path
        unlink(notifyPath)
        notifications = Notifications(fd: try Self.bindDatagram(notifyPath))
        let log = config.directory.appendingPathComponent("daemon.log").path
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        // `WGK_BENCH_WRAP`: a command the daemon runs under (a heap profiler), split at spaces.
        let wrap = (ProcessInfo.processInfo.environment["WGK_BENCH_WRAP"] ?? "").split(separator: " ").map(String.init)
        process.arguments = ["ip", "netns", "exec", namespace] + wrap + [try wgkeeperBinary(), "run", "--config", config.path, "--log-level", "warning"]
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notifyPath
        process.environment = environment
        process.standardError = FileHandle(forWritingAtPath: log)
        process.standardOutput = FileHandle(forWritingAtPath: log)
        started = .now
        try process.run()
    }

    deinit {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
        notifications.stop()
    }

    /// Stops the daemon and unmounts the bpffs it mounted on its pin root, if it did.
    func stop() {
        // Under a wrapper (`WGK_BENCH_WRAP`) the daemon is its child: stopped first, so that the
        // wrapper finishes its work and exits.
        if process.isRunning, !(ProcessInfo.processInfo.environment["WGK_BENCH_WRAP"] ?? "").isEmpty,
           let pid = try? daemonPid(under: process.processIdentifier) {
            kill(pid, SIGTERM)
            process.waitUntilExit()
        }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        let pins = config.directory.appendingPathComponent("bpf").path
        while umount2(pins, Int32(MNT_DETACH)) == 0 {}
    }

    /// Waits until `status` counts at least `entries` datapath objects in sync (programs and
    /// map entries).
    func waitForDatapath(entries: Int, timeout: Duration = .seconds(60)) throws {
        let deadline = ContinuousClock.now + timeout
        while try status().inSync("datapath") < entries {
            guard ContinuousClock.now < deadline else {
                throw BenchError("datapath not in sync within \(timeout)\n\(log.suffix(2000))")
            }
            usleep(200_000)
        }
    }

    var log: String { (try? String(contentsOfFile: config.directory.appendingPathComponent("daemon.log").path, encoding: .utf8)) ?? "" }

    /// Waits for a notify datagram containing `line` (e.g. `READY=1`); returns when it arrived.
    func wait(for line: String, timeout: Duration = .seconds(120)) throws -> ContinuousClock.Instant {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let at = notifications.first(line) { return at }
            guard process.isRunning else { throw BenchError("wgkeeper exited (\(process.terminationStatus)):\n\(log.suffix(2000))") }
            usleep(500)
        }
        throw BenchError("no \(line) from wgkeeper within \(timeout):\n\(log.suffix(2000))")
    }

    /// One request on the status socket, its JSON reply.
    func request(_ command: String, timeout seconds: Int = 30) throws -> [String: Any] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(errno)") }
        defer { close(fd) }
        // Bounded: a daemon that stops answering fails the benchmark instead of hanging it.
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = Self.address(config.statusSocket)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw BenchError("connect \(config.statusSocket): errno \(errno)") }
        let line = Array("{\"command\":\"\(command)\"}\n".utf8)
        guard write(fd, line, line.count) == line.count else { throw BenchError("write to status socket failed") }
        var reply = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !reply.contains(UInt8(ascii: "\n")) {
            let n = read(fd, &chunk, chunk.count)
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw BenchError("\(command): no reply from the status socket (errno \(errno))") }
            reply += chunk[0..<n]
        }
        guard let object = try JSONSerialization.jsonObject(with: Data(reply)) as? [String: Any] else { throw BenchError("status reply is not an object") }
        return object
    }

    func status() throws -> Status { Status(try request("status")) }

    /// VmRSS and VmHWM in MiB from /proc/PID/status.
    func memory(pid: Int32) throws -> (rss: Double, hwm: Double) {
        let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        func field(_ name: String) -> Double {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return .nan }
            return (Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? .nan) / 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    private static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = byte }
        }
        return address
    }

    private static func bindDatagram(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(errno)") }
        var address = address(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { close(fd); throw BenchError("bind \(path): errno \(errno)") }
        return fd
    }
}

/// The daemon's sd_notify datagrams, drained on a thread of their own as systemd does: a full
/// receive queue would block the daemon's `sd_notify` (and with it its event loop).
final class Notifications: @unchecked Sendable {
    private let lock = NSLock()
    private var received: [(ContinuousClock.Instant, String)] = []
    private var stopped = false
    private let fd: Int32
    private var thread: Thread?

    init(fd: Int32) {
        self.fd = fd
        let thread = Thread { [unowned self] in self.drain() }
        self.thread = thread
        thread.start()
    }

    private func drain() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !lock.withLock({ stopped }) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 50) > 0 else { continue }
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { continue }
            let message = String(decoding: buffer[0..<n], as: UTF8.self)
            let now = ContinuousClock.now
            lock.withLock { received.append((now, message)) }
        }
    }

    /// When the first datagram holding `line` as one of its lines arrived.
    func first(_ line: String) -> ContinuousClock.Instant? {
        lock.withLock { received.first { $0.1.split(separator: "\n").contains { $0 == line } }?.0 }
    }

    func stop() {
        lock.withLock { stopped = true }
        while thread?.isFinished == false { usleep(1000) }
        close(fd)
    }
}

/// The fields of `wgkeeper status --json` the benchmarks read.
struct Status {
    let raw: [String: Any]
    init(_ raw: [String: Any]) { self.raw = raw }
    var pid: Int32 { Int32(raw["pid"] as? Int ?? 0) }
    var netlinkWrites: Int { raw["netlink_writes"] as? Int ?? -1 }
    var reconciles: Int { raw["reconciles"] as? Int ?? -1 }
    var resyncs: Int { raw["resyncs"] as? Int ?? -1 }
    /// Full plans a daemon skipped because nothing they read had changed; nil from a daemon before the field.
    var skippedPlans: Int? { raw["skipped_plans"] as? Int }
    /// Reloads that planned only the objects their change touched; nil from a daemon before the field.
    var touchedPlans: Int? { raw["touched_plans"] as? Int }
    var lastReconcileMs: Double { raw["last_reconcile_duration_ms"] as? Double ?? .nan }
    func inSync(_ kind: String) -> Int { ((raw["kinds"] as? [String: Any])?[kind] as? [String: Any])?["in_sync"] as? Int ?? -1 }
    var failed: Int { (raw["failed"] as? [Any])?.count ?? -1 }
}
