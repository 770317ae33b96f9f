import Foundation
import Glibc
import Netlink
import XCTest

/// Runs `wgkeeper run` inside a test namespace, with its status socket and a notify socket
/// (standing in for systemd) in a private directory; stops it in teardown.
public final class DaemonHarness: @unchecked Sendable {
    public let ns: TestNamespace
    public let directory: URL
    public let configPath: String
    public let socketPath: String
    public private(set) var process: Process?
    private var notifyFD: Int32 = -1
    public private(set) var notifications: [String] = []
    public var output = Pipe()

    public static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("wgkeeper").path
    }

    public init(_ test: XCTestCase, ns: TestNamespace) throws {
        self.ns = ns
        directory = URL(fileURLWithPath: try scratchDirectory("wgk-daemon"))
        configPath = directory.appendingPathComponent("wgkeeper.yaml").path
        socketPath = directory.appendingPathComponent("status.sock").path
        let keyPath = directory.appendingPathComponent("wg0.key").path
        try (PrivateKey.generate().key.base64 + "\n").write(toFile: keyPath, atomically: false, encoding: .utf8)
        chmod(keyPath, 0o600)
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw TestFailure("\(Self.binary) is missing: run `swift build` before the kernel tier")
        }
        let directory = self.directory
        test.addTeardownBlock { [self] in
            self.stop(signal: SIGKILL)
            try? FileManager.default.removeItem(at: directory)
            if notifyFD >= 0 { close(notifyFD); notifyFD = -1 }
        }
    }

    public var keyPath: String { directory.appendingPathComponent("wg0.key").path }

    /// A bpffs of the test's own at `directory/bpf`, for `runtime.bpf_pin_root`. It is mounted in
    /// the test's mount namespace (`ip netns exec` gives each daemon run a private copy of it), so
    /// the pins outlive each run; unmounted at teardown, before the directory goes.
    public func mountPinRoot(_ test: XCTestCase) throws -> String {
        let pinRoot = directory.appendingPathComponent("bpf").path
        try FileManager.default.createDirectory(atPath: pinRoot, withIntermediateDirectories: true)
        try shell("mount", "-t", "bpf", "bpffs", pinRoot)
        test.addTeardownBlock { _ = try? shell("umount", "-l", pinRoot) }
        return pinRoot
    }

    public func writeConfig(_ yaml: String) throws {
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Where the daemon's standard error goes.
    public enum StandardError {
        /// The output pipe, read by `log`.
        case pipe
        /// A pipe whose read end is closed once the daemon runs: every write fails with EPIPE.
        case brokenPipe
        /// Not open at all.
        case closed
    }

    /// Starts the daemon and waits for `READY=1` (`readyWithin`: generous by default, since under
    /// emulation, the VM tier, on a loaded host a first reconcile can take seconds).
    /// `journalStream`: JOURNAL_STREAM names the output pipe, as systemd does for a service whose
    /// standard error is the journal.
    public func start(watchdogUsec: Int? = nil, extraArguments: [String] = [], environment extra: [String: String] = [:],
                      journalStream: Bool = false, standardError: StandardError = .pipe, readyWithin: Duration = .seconds(30)) throws {
        if notifyFD < 0 { try openNotifySocket() }
        // A READY=1 left from an earlier run's reload must not pass for this run's.
        var stale = [UInt8](repeating: 0, count: 4096)
        while recv(notifyFD, &stale, stale.count, Int32(MSG_DONTWAIT)) > 0 {}
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ip", "netns", "exec", ns.name, Self.binary, "run", "--config", configPath] + extraArguments
        if standardError == .closed {
            process.arguments = ["sh", "-c", #"exec "$@" 2>&-"#, "sh"] + process.arguments!
        }
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notifyPath
        if let watchdogUsec { environment["WATCHDOG_USEC"] = "\(watchdogUsec)" } else { environment["WATCHDOG_USEC"] = nil }
        environment["WATCHDOG_PID"] = nil
        output = Pipe()
        environment["JOURNAL_STREAM"] = nil
        if journalStream {
            var info = stat()
            fstat(output.fileHandleForWriting.fileDescriptor, &info)
            environment["JOURNAL_STREAM"] = "\(info.st_dev):\(info.st_ino)"
        }
        environment.merge(extra) { $1 }
        process.environment = environment
        process.standardOutput = output
        let broken = Pipe()
        switch standardError {
        case .pipe: process.standardError = output
        case .brokenPipe: process.standardError = broken
        case .closed: break
        }
        try process.run()
        if standardError == .brokenPipe { try broken.fileHandleForReading.close() }
        self.process = process
        notifications = []
        try waitForNotification(timeout: readyWithin) { $0.contains("READY=1") }
    }

    public func stop(signal: Int32 = SIGTERM) {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        self.process = nil
    }

    /// Stops the daemon and releases what the harness holds open (notify socket, output pipe,
    /// directory) now rather than at teardown: for tests that run thousands of daemons.
    public func finish() {
        stop(signal: SIGKILL)
        output.fileHandleForReading.readabilityHandler = nil
        try? output.fileHandleForReading.close()
        try? output.fileHandleForWriting.close()
        if notifyFD >= 0 { close(notifyFD); notifyFD = -1 }
        try? FileManager.default.removeItem(at: directory)
    }

    public var log: String { String(decoding: output.fileHandleForReading.availableData, as: UTF8.self) }

    /// Everything the daemon wrote, once it has exited.
    public func finalLog() -> String { String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }

    private var notifyPath: String { directory.appendingPathComponent("notify.sock").path }

    private func openNotifySocket() throws {
        notifyFD = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(notifyPath.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(notifyFD, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw TestFailure("cannot bind the notify socket") }
    }

    /// Collects notifications until one satisfies `predicate` (10 s at most).
    @discardableResult
    public func waitForNotification(timeout: Duration = .seconds(10), _ predicate: (String) -> Bool) throws -> String {
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 4096)
        while ContinuousClock.now < deadline {
            var pfd = pollfd(fd: notifyFD, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 100) > 0 {
                let n = recv(notifyFD, &buffer, buffer.count, 0)
                if n > 0 {
                    let message = String(decoding: buffer[0..<n], as: UTF8.self)
                    notifications.append(message)
                    if predicate(message) { return message }
                }
            }
            if let process, !process.isRunning {
                throw TestFailure("wgkeeper exited with \(process.terminationStatus): \(log)")
            }
        }
        throw TestFailure("no matching notification within \(timeout); got \(notifications)")
    }

    /// One request on the status socket, decoded as JSON.
    public func ask(_ command: String) throws -> [String: Any] {
        let text = try shell([DaemonHarness.binary, command == "status" ? "status" : "reload", "--socket", socketPath] + (command == "status" ? ["--json"] : []))
        if command != "status" { return ["output": text] }
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    public func status() throws -> [String: Any] { try ask("status") }
    public func writes() throws -> Int { try XCTUnwrap(try status()["netlink_writes"] as? Int) }
}

/// Polls `condition` until it holds or `timeout` passes; returns how long it took.
@discardableResult
public func eventually(within timeout: Duration, _ what: String, _ condition: () throws -> Bool) throws -> Duration {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < timeout {
        if try condition() { return ContinuousClock.now - start }
        usleep(5_000)
    }
    throw TestFailure("\(what) did not happen within \(timeout)")
}

/// A peer in a test configuration.
public struct TestPeer {
    public var name: String
    public var publicKey: WireGuardKey
    public var allowedIPs: [String]
    /// More keys of the peer, as YAML lines (`endpoint: "…"`).
    public var extra: [String]

    public init(_ name: String, _ publicKey: WireGuardKey, allowedIPs: [String], extra: [String] = []) {
        self.name = name
        self.publicKey = publicKey
        self.allowedIPs = allowedIPs
        self.extra = extra
    }
}

extension DaemonHarness {
    /// The configuration most daemon tests use: this harness's status socket and pin root,
    /// `wg0` with `peers`, and (unless `gateway` is nil) a gateway from `wg0` to `private0` for
    /// 2001:db8:1::/64. Each array holds extra YAML lines for its section; `tail` follows.
    public func gatewayConfig(
        runtime: [String] = [], pinRoot: String? = nil, wireGuard: [String] = [], peers: [TestPeer],
        gateway: [String]? = ["redirect: false"], tail: String = ""
    ) -> String {
        var lines = ["runtime:", "  status_socket: \(socketPath)", "  bpf_pin_root: \(pinRoot ?? directory.path + "/bpf")"]
        lines += runtime.map { "  " + $0 }
        lines += ["wireguard:", "  wg0:", "    private_key_file: \(keyPath)"] + wireGuard.map { "    " + $0 }
        lines.append("    peers:")
        for peer in peers {
            lines += ["      - name: \(peer.name)", "        public_key: \"\(peer.publicKey.base64)\""]
            lines += peer.extra.map { "        " + $0 }
            lines.append("        allowed_ips: [\(peer.allowedIPs.joined(separator: ", "))]")
        }
        if let gateway {
            lines += ["gateway:", "  tunnel: wg0", "  lan: private0", "  lan_prefix: 2001:db8:1::/64"] + gateway.map { "  " + $0 }
        }
        return lines.joined(separator: "\n") + "\n" + tail
    }
}

extension DaemonHarness {
    /// `gatewayConfig` with the gateway's LAN and `redirect` chosen: wg0 ⇄ `lan`, 2001:db8:1::/64.
    public func gatewayConfig(lan: String, redirect: Bool = false, pinRoot: String? = nil, runtime: [String] = [],
                              peers: [TestPeer]) -> String {
        gatewayConfig(runtime: ["proxy_poll: 200ms"] + runtime, pinRoot: pinRoot, peers: peers, gateway: nil, tail: """
        gateway:
          tunnel: wg0
          lan: \(lan)
          lan_prefix: 2001:db8:1::/64
          redirect: \(redirect)
        """)
    }
}

extension TestNamespace {
    /// `/proc/sys/net/ipv6/conf/<interface>/<name>` inside the namespace, read with cat(1).
    public func sysctl(_ interface: String, _ name: String) throws -> String {
        try shell("ip", "netns", "exec", self.name, "cat", "/proc/sys/net/ipv6/conf/\(interface)/\(name)")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
