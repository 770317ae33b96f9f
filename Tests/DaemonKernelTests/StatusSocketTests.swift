import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The status socket under abuse, its access check, and the file at its path.
final class StatusSocketTests: XCTestCase {
    private func setUp(runtime: [String] = []) throws -> (TestNamespace, DaemonHarness) {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(h.gatewayConfig(runtime: runtime,
                                          peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])]))
        return (ns, h)
    }

    private func tunnelRouteIsThere(_ ns: TestNamespace) throws -> Bool {
        try ns.ipJSON("-6", "route", "show", "2001:db8:1::100/128", "proto", "77").count == 1
    }

    /// `wgkeeper status` as a separate client; returns how long it took.
    private func timedStatus(_ h: DaemonHarness) throws -> Duration {
        let start = ContinuousClock.now
        XCTAssertNotNil(try h.status()["pid"])
        return ContinuousClock.now - start
    }

    func testIdleCrowdNewlineSendersAndReloadFloodDoNotLockOutStatus() throws {
        let (ns, h) = try setUp()
        try h.start()
        var sockets: [Int32] = []
        defer { sockets.forEach { close($0) } }
        // More silent clients than the server keeps (64).
        for _ in 0..<100 { sockets.append(try connectUnix(h.socketPath)) }
        // Clients that send only blank lines, all the time.
        let newliners = try (0..<8).map { _ in try connectUnix(h.socketPath) }
        sockets += newliners
        let stop = Flag()
        let feeder = Thread {
            while !stop.isSet {
                for fd in newliners { _ = send(fd, "\n", 1, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                usleep(50_000)
            }
        }
        feeder.start()
        defer { stop.set() }
        // 3 000 pipelined reload requests in one write (63 KB), from a client that never reads…
        let reloadLine = #"{"command":"reload"}"# + "\n"
        let flood = Array(String(repeating: reloadLine, count: 3000).utf8)
        let silentFlooder = try connectUnix(h.socketPath)
        sockets.append(silentFlooder)
        XCTAssertEqual(flood.withUnsafeBytes { send(silentFlooder, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }, flood.count)
        // …and the same from one that reads every answer.
        let reader = try connectUnix(h.socketPath)
        sockets.append(reader)
        XCTAssertEqual(flood.withUnsafeBytes { send(reader, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }, flood.count)
        let answers = try readLines(reader, count: 3000, within: .seconds(10))
        XCTAssertEqual(answers.count, 3000, "one answer per request")
        XCTAssertTrue(answers.allSatisfy { $0.contains(#""ok":true"#) }, answers.first ?? "")

        // Status from another client answers within a second, now and after the idle deadline
        // (10 s), which the blank lines must not have moved.
        var latencies: [Duration] = [], direct: [Duration] = []
        for round in 0..<6 {
            latencies.append(try timedStatus(h))
            direct.append(try directStatus(h))
            if round < 5 { usleep(2_200_000) }
        }
        print("status latency under abuse, `wgkeeper status` (process spawn included): \(latencies.map { "\(milliseconds($0)) ms" }); "
            + "one request on a socket: \(direct.map { "\(Double(milliseconds($0 * 1000)) / 1000) ms" })")
        XCTAssertTrue(latencies.allSatisfy { $0 < .seconds(1) }, "\(latencies)")
        XCTAssertTrue(direct.allSatisfy { $0 < .seconds(1) }, "\(direct)")

        let status = try h.status()
        let reloads = try XCTUnwrap(status["reloads"] as? Int)
        print("reloads performed for 6 000 pipelined reload requests: \(reloads)")
        XCTAssertGreaterThan(reloads, 0)
        XCTAssertLessThanOrEqual(reloads, 10, "pipelined reload requests coalesce")
        let server = try XCTUnwrap(status["status_socket"] as? [String: Any])
        XCTAssertLessThanOrEqual(server["clients"] as? Int ?? 999, 64)
        XCTAssertGreaterThan(server["evicted"] as? Int ?? 0, 0, "the idle crowd made room")
        // The blank-line senders were dropped at their deadline: their sockets read EOF.
        for fd in newliners {
            var byte: UInt8 = 0
            let n = recv(fd, &byte, 1, Int32(MSG_DONTWAIT))
            // EOF, or a reset when blank lines were still unread as the server closed.
            XCTAssertTrue(n == 0 || (n < 0 && errno == ECONNRESET), "a client sending only blank lines outlived the idle deadline")
        }

        // And the loop still repairs.
        try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0", "proto", "77")
        try eventually(within: .seconds(1), "repair during the abuse") { try tunnelRouteIsThere(ns) }
        XCTAssertTrue(h.process!.isRunning)
    }

    /// Blank lines are skipped in time linear in their bytes: before, each one moved the rest
    /// of the client's 64 KiB buffer (34 ms of loop per buffer), so a few flooding clients
    /// delayed `status` and drift repair by seconds.
    func testBlankLineFloodsCostLinearTimeAndLockNoOneOut() throws {
        let (ns, h) = try setUp()
        try h.start()
        let pid = try XCTUnwrap(try h.status()["pid"] as? Int32)

        // The daemon's CPU time for 256 buffers of blank lines, each read whole before the next
        // is sent: 4x the bytes per buffer costs about 4x the time, not 16x.
        func cpu(buffers: Int, of size: Int) throws -> Duration {
            let fd = try connectUnix(h.socketPath)
            defer { close(fd) }
            let newlines = [UInt8](repeating: 10, count: size)
            let before = try cpuTime(pid)
            for _ in 0..<buffers {
                XCTAssertEqual(newlines.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }, size)
                try eventually(within: .seconds(2), "the daemon read the buffer") { try unreadBytes(fd) == 0 }
            }
            return try cpuTime(pid) - before
        }
        let small = try cpu(buffers: 256, of: 16 * 1024), large = try cpu(buffers: 256, of: 64 * 1024)
        print("daemon CPU for 256 buffers of blank lines: 16 KiB each \(milliseconds(small)) ms, 64 KiB each \(milliseconds(large)) ms")
        XCTAssertLessThan(large, max(small, .milliseconds(50)) * 8, "4x the bytes per buffer cost more than 8x the time")
        XCTAssertLessThan(large, .seconds(2), "16 MiB of blank lines")

        // Six clients sending megabytes of blank lines as fast as they can, for a few seconds.
        let stop = Flag()
        let sent = ByteCount()
        let flooders = try (0..<6).map { _ in try connectUnix(h.socketPath) }
        defer { flooders.forEach { close($0) } }
        for fd in flooders {
            Thread {
                let newlines = [UInt8](repeating: 10, count: 1 << 20)
                while !stop.isSet {
                    let n = newlines.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if n <= 0 { break }
                    sent.add(n)
                }
            }.start()
        }
        defer { stop.set() }
        usleep(500_000)
        var latencies: [Duration] = []
        for _ in 0..<5 {
            latencies.append(try timedStatus(h))
            usleep(300_000)
        }
        try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0", "proto", "77")
        let repair = try eventually(within: .seconds(1), "repair during the blank-line flood") { try tunnelRouteIsThere(ns) }
        stop.set()
        print("during \(sent.value >> 20) MiB of blank lines from 6 clients: `wgkeeper status` \(latencies.map { "\(milliseconds($0)) ms" }), "
            + "route repaired in \(milliseconds(repair)) ms")
        XCTAssertGreaterThan(sent.value, 20 << 20, "the flood was not one")
        XCTAssertTrue(latencies.allSatisfy { $0 < .seconds(1) }, "\(latencies)")
        XCTAssertTrue(h.process!.isRunning)
    }

    /// Processes looping connect/close and connect-and-hold (as root, so allowed) fill the
    /// 64 places many times over; `wgkeeper status` still gets its answer: it is read on
    /// accept, and the flooding processes' own idle connections are closed for new ones.
    func testConnectionFloodDoesNotEvictAnOperatorsRequest() throws {
        let (ns, h) = try setUp()
        try h.start()
        let closer = "use Socket; while (1) { socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; connect($s, pack_sockaddr_un($ARGV[0])); close($s) }"
        let holder = "use Socket; my @held; while (1) { socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; "
            + "push @held, $s if connect($s, pack_sockaddr_un($ARGV[0])); shift @held if @held > 200 }"
        var flooders: [Process] = []
        defer { for p in flooders where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        for script in [closer, closer, closer, holder, holder, holder] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
            p.arguments = ["-e", script, h.socketPath]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            flooders.append(p)
        }
        usleep(1_000_000)
        var latencies: [Duration] = []
        var failures: [String] = []
        for _ in 0..<20 {
            let start = ContinuousClock.now
            do {
                let status = try h.status()
                XCTAssertNotNil(status["pid"])
                latencies.append(ContinuousClock.now - start)
            } catch {
                failures.append("\(error)")
            }
            usleep(100_000)
        }
        try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0", "proto", "77")
        let repair = try eventually(within: .seconds(1), "repair during the connection flood") { try tunnelRouteIsThere(ns) }
        let server = try XCTUnwrap(try h.status()["status_socket"] as? [String: Any])
        for p in flooders { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        print("connection flood (3 connect/close, 3 connect-and-hold): `wgkeeper status` \(latencies.map { "\(milliseconds($0)) ms" }), "
            + "max \(latencies.map(milliseconds).max() ?? -1) ms; route repaired in \(milliseconds(repair)) ms; socket \(server)")
        XCTAssertEqual(failures, [], "status probes failed during the flood")
        XCTAssertTrue(latencies.allSatisfy { $0 < .seconds(1) }, "\(latencies)")
        XCTAssertGreaterThan(server["evicted"] as? Int ?? 0, 1000, "the flood did not fill the 64 places")
        XCTAssertTrue(h.process!.isRunning)
    }

    func testOversizedRequestIsAnsweredWithAnErrorAndClosed() throws {
        let (_, h) = try setUp()
        try h.start()
        let fd = try connectUnix(h.socketPath)
        defer { close(fd) }
        let junk = [UInt8](repeating: UInt8(ascii: "{"), count: 200_000)
        _ = junk.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        let lines = try readLines(fd, count: 1, within: .seconds(2))
        XCTAssertTrue(lines.first?.contains("longer than") == true, "\(lines)")
        XCTAssertNotNil(try h.status()["pid"])
    }

    /// `socat` and `nc -N` send a request and shut down their sending side: still answered.
    func testARequestFollowedByAHalfCloseIsAnswered() throws {
        let (_, h) = try setUp()
        try h.start()
        for request in [#"{"command":"status"}"# + "\n", #"{"command":"status"}"#, #"{"command":"reload"}"# + "\n"] {
            let fd = try connectUnix(h.socketPath)
            defer { close(fd) }
            let bytes = Array(request.utf8)
            _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            shutdown(fd, Int32(SHUT_WR))
            let lines = try readLines(fd, count: 1, within: .seconds(3))
            XCTAssertTrue(lines.first?.hasPrefix("{") == true, "\(request): \(lines)")
        }
    }

    func testPeerCredentialsAndStatusGroup() throws {
        let group = "wgkt\(UInt16.random(in: 0...UInt16.max))"
        try shell("groupadd", group)
        addTeardownBlock { _ = try? shell("groupdel", group) }
        let gid = try XCTUnwrap(UInt32(try shell("getent", "group", group).split(separator: ":")[2]))

        let (_, h) = try setUp(runtime: ["status_group: \(group)"])
        try h.start()
        var info = stat()
        XCTAssertEqual(lstat(h.socketPath, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o660)
        XCTAssertEqual(info.st_gid, gid, "the socket belongs to status_group")

        let nobody = ["setpriv", "--reuid", "65534", "--regid", "65534"]
        let status = [DaemonHarness.binary, "status", "--socket", h.socketPath]
        // A member of the group (as a supplementary group) is served.
        XCTAssertTrue(try shell(nobody + ["--groups", "\(gid)"] + status).contains("config generation 1"))
        // So is one whose primary group it is.
        XCTAssertTrue(try shell(["setpriv", "--reuid", "65534", "--regid", "\(gid)", "--clear-groups"] + status).contains("config generation 1"))
        // A stranger cannot even open the socket file (0660)…
        XCTAssertThrowsError(try shell(nobody + ["--clear-groups"] + status))
        // …and when the file is opened up by mistake, the daemon itself refuses it.
        chmod(h.socketPath, 0o666)
        XCTAssertThrowsError(try shell(nobody + ["--clear-groups"] + status)) { error in
            XCTAssertTrue("\(error)".contains("permission denied: uid 65534 is not root nor in group \(group)"), "\(error)")
        }
        let refused = try XCTUnwrap(try h.status()["status_socket"] as? [String: Any])["refused"] as? Int
        XCTAssertEqual(refused, 1)
    }

    /// The socket file is created 0660 by bind() itself (under the unit's UMask=0077 too) and
    /// gets status_group through a descriptor: no chmod or chown by path, which a symbolic link
    /// swapped in after bind() would redirect to another file.
    func testSocketModeAndGroupAreSetWithoutFollowingSymlinks() throws {
        let group = "wgkt\(UInt16.random(in: 0...UInt16.max))"
        try shell("groupadd", group)
        addTeardownBlock { _ = try? shell("groupdel", group) }
        let gid = try shell("getent", "group", group).split(separator: ":")[2]
        let (ns, h) = try setUp(runtime: ["status_group: \(group)"])
        let saved = umask(0o077)
        defer { umask(saved) }

        // As stat(1) sees it, with the daemon started under umask 0077.
        try h.start()
        XCTAssertEqual(try shell("stat", "-c", "%F %a %U %g", h.socketPath).trimmingCharacters(in: .whitespacesAndNewlines),
                       "socket 660 root \(gid)")
        h.stop()

        // Every call that changes a mode or an owner, traced: no chmod at all, and the one
        // chown goes through the descriptor of what the path held (AT_EMPTY_PATH), not a path.
        let trace = h.directory.appendingPathComponent("trace").path
        let strace = Process()
        strace.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        strace.arguments = ["ip", "netns", "exec", ns.name, "strace", "-f", "-qq", "-o", trace,
                            "-e", "trace=chmod,fchmod,fchmodat,chown,fchown,lchown,fchownat,umask,bind",
                            DaemonHarness.binary, "run", "--config", h.configPath]
        strace.standardOutput = FileHandle.nullDevice
        strace.standardError = FileHandle.nullDevice
        try strace.run()
        try eventually(within: .seconds(20), "the traced daemon's socket") { (try? connectUnix(h.socketPath)).map { close($0); return true } ?? false }
        // strace blocks fatal signals while it runs a program (-o FILE PROG): stop the daemon itself.
        let pid = try XCTUnwrap(try h.status()["pid"] as? Int32)
        kill(pid, SIGTERM)
        strace.waitUntilExit()
        let calls = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
            .filter { !$0.contains("AF_NETLINK") && !$0.contains("+++") && !$0.contains("---") }
        XCTAssertFalse(calls.contains { $0.contains("chmod") }, "\(calls)")
        let chowns = calls.filter { $0.contains("chown") }
        XCTAssertEqual(chowns.count, 1, "\(calls)")
        XCTAssertTrue(chowns.first?.contains(#"fchownat("#) == true && chowns.first?.contains("AT_EMPTY_PATH") == true
                      && chowns.first?.contains(", -1, \(gid), ") == true, "\(chowns)")
        XCTAssertTrue(calls.contains { $0.contains("umask(0117)") }, "\(calls)")

        // A symbolic link at the path: refused, and neither the link nor its target is touched.
        let target = h.directory.appendingPathComponent("precious").path
        try "precious\n".write(toFile: target, atomically: false, encoding: .utf8)
        chmod(target, 0o600)
        unlink(h.socketPath)
        XCTAssertEqual(symlink(target, h.socketPath), 0)
        XCTAssertThrowsError(try shell(["ip", "netns", "exec", ns.name, DaemonHarness.binary, "run", "--config", h.configPath])) { error in
            XCTAssertTrue("\(error)".contains("exists and is not a socket (a symbolic link)"), "\(error)")
        }
        func untouched() throws {
            XCTAssertEqual(try shell("stat", "-c", "%a %U %G", target).trimmingCharacters(in: .whitespacesAndNewlines), "600 root root")
            XCTAssertEqual(try String(contentsOfFile: target, encoding: .utf8), "precious\n")
        }
        try untouched()
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: h.socketPath), target)

        // A link swapped in while the daemon starts (the window between bind() and setting the
        // mode and group): whatever each start makes of it, the target is never changed.
        unlink(h.socketPath)
        let link = h.directory.appendingPathComponent("link").path
        let stop = Flag()
        let swapper = Thread {
            while !stop.isSet {
                // The path free for a moment (a start gets past its check and binds), then a
                // link put in its place at once (rename replaces whatever the path holds).
                unlink(h.socketPath)
                usleep(UInt32.random(in: 0...3000))
                _ = symlink(target, link)
                _ = rename(link, h.socketPath)
                usleep(UInt32.random(in: 0...3000))
            }
        }
        swapper.start()
        for _ in 0..<20 {
            let run = Process()
            run.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            run.arguments = ["ip", "netns", "exec", ns.name, DaemonHarness.binary, "run", "--config", h.configPath]
            run.standardOutput = FileHandle.nullDevice
            run.standardError = FileHandle.nullDevice
            try run.run()
            usleep(100_000)
            kill(run.processIdentifier, SIGTERM)
            run.waitUntilExit()
        }
        stop.set()
        while !swapper.isFinished { usleep(1000) }
        try untouched()
    }

    func testWithoutStatusGroupOnlyRootIsServed() throws {
        let (_, h) = try setUp()
        try h.start()
        chmod(h.socketPath, 0o666)
        XCTAssertThrowsError(try shell(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                                        DaemonHarness.binary, "status", "--socket", h.socketPath])) { error in
            XCTAssertTrue("\(error)".contains("permission denied: uid 65534 is not root"), "\(error)")
            XCTAssertFalse("\(error)".contains("nor in group"), "\(error)")
        }
    }

    func testRegularFileAtTheSocketPathSurvivesAndStopsTheStart() throws {
        let (_, h) = try setUp()
        try "precious\n".write(toFile: h.socketPath, atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try shell(["ip", "netns", "exec", h.ns.name, DaemonHarness.binary, "run", "--config", h.configPath])) { error in
            XCTAssertTrue("\(error)".contains("status socket \(h.socketPath) exists and is not a socket (a regular file)"), "\(error)")
        }
        XCTAssertEqual(try String(contentsOfFile: h.socketPath, encoding: .utf8), "precious\n")

        // A file put in the socket's place while the daemon runs is not removed on exit either.
        unlink(h.socketPath)
        try h.start()
        unlink(h.socketPath)
        try "replaced\n".write(toFile: h.socketPath, atomically: false, encoding: .utf8)
        h.stop()
        XCTAssertEqual(try String(contentsOfFile: h.socketPath, encoding: .utf8), "replaced\n")
        unlink(h.socketPath)
        // The daemon's own socket is removed on exit.
        try h.start()
        h.stop()
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.socketPath))
    }

    // MARK: - helpers

    /// Connect, ask for status, read the reply line: the daemon's own latency.
    private func directStatus(_ h: DaemonHarness) throws -> Duration {
        let start = ContinuousClock.now
        let fd = try connectUnix(h.socketPath)
        defer { close(fd) }
        let request = Array((#"{"command":"status"}"# + "\n").utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        let lines = try readLines(fd, count: 1, within: .seconds(2))
        XCTAssertTrue(lines.first?.contains(#""config_generation""#) == true)
        return ContinuousClock.now - start
    }

    private func readLines(_ fd: Int32, count: Int, within timeout: Duration) throws -> [String] {
        let deadline = ContinuousClock.now + timeout
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while data.count(where: { $0 == 10 }) < count, ContinuousClock.now < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        return data.split(separator: 10).map { String(decoding: $0, as: UTF8.self) }
    }
}

func milliseconds(_ d: Duration) -> Int64 { d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000 }

func connectUnix(_ path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
    let ok = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard ok == 0 else {
        close(fd)
        throw TestFailure("connect \(path) failed: \(String(cString: strerror(errno)))")
    }
    return fd
}

/// A process's CPU time, user and system, all threads (/proc/PID/stat).
func cpuTime(_ pid: Int32) throws -> Duration {
    let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
    // Fields after the command name, which is in parentheses: utime and stime are the 12th and 13th.
    let fields = stat[stat.index(after: try XCTUnwrap(stat.lastIndex(of: ")")))...].split(separator: " ")
    let ticks = try XCTUnwrap(Int64(fields[11])) + XCTUnwrap(Int64(fields[12]))
    return .milliseconds(ticks * 1000 / Int64(sysconf(Int32(_SC_CLK_TCK))))
}

/// Bytes sent on a Unix stream socket that the peer has not read yet (SIOCOUTQ).
func unreadBytes(_ fd: Int32) throws -> Int32 {
    var queued: Int32 = 0
    guard withUnsafeMutablePointer(to: &queued, { ioctl(fd, UInt(0x5411), $0) }) == 0 else {
        throw TestFailure("SIOCOUTQ: \(String(cString: strerror(errno)))")
    }
    return queued
}

final class ByteCount: @unchecked Sendable {
    private let lock = NSLock()
    private var total = 0
    func add(_ n: Int) { lock.lock(); total += n; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return total }
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}
