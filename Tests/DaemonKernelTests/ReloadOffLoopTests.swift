import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// A reload reads the configuration on a worker thread: while a large file parses (seconds),
/// the loop answers status, repairs drift and feeds the watchdog; requests made meanwhile are
/// answered by one more read after it; READY=1 follows the outcome of the last read due.
final class ReloadOffLoopTests: XCTestCase {
    func testStatusAndRepairContinueWhileALargeConfigurationParses() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        // wg1 is not WireGuard: its peers stay pending, so the large file costs its parse, not writes.
        try ns.addVeth("wg1", "wg1p")
        let h = try DaemonHarness(self, ns: ns)
        let alice = TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])
        let small = h.gatewayConfig(runtime: ["proxy_poll: 200ms"], peers: [alice])
        try h.writeConfig(small)
        try h.start(watchdogUsec: 1_000_000)

        let large = Self.largeConfiguration(small, keyPath: h.keyPath)
        try h.writeConfig(large)

        let first = try connectUnix(h.socketPath)
        defer { close(first) }
        try send(first, #"{"command":"reload"}"#)
        try h.waitForNotification { $0.contains("RELOADING=1") }
        let reloadStarted = ContinuousClock.now

        // While it parses: status answers at once, still from generation 1.
        for _ in 0..<5 {
            let start = ContinuousClock.now
            let status = try h.status()
            XCTAssertLessThan(ContinuousClock.now - start, .seconds(1))
            XCTAssertEqual(status["config_generation"] as? Int, 1, "the reload already finished: the file parsed too fast for this test")
            usleep(100_000)
        }
        // Drift is repaired meanwhile.
        try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0", "proto", "77")
        try eventually(within: .seconds(1), "the route repaired during the parse") {
            try ns.ipJSON("-6", "route", "show", "2001:db8:1::100/128", "proto", "77").count == 1
        }
        // The watchdog is fed (every 0.5 s).
        try h.waitForNotification(timeout: .seconds(2)) { $0.contains("WATCHDOG=1") }
        let sinceReloading = h.notifications.drop { !$0.contains("RELOADING=1") }
        XCTAssertFalse(sinceReloading.contains { $0.contains("READY=1") }, "READY=1 before the outcome: \(h.notifications)")
        XCTAssertEqual(try pendingBytes(first), 0, "no answer before the read is done")

        // Requests made during the read (two clients and SIGHUP) wait for one more read, of the
        // file as it is now: the small one again.
        try h.writeConfig(small + "routes:\n  - destination: 2001:db8:3::/64\n    device: wg0\n")
        let second = try connectUnix(h.socketPath), third = try connectUnix(h.socketPath)
        defer { close(second); close(third) }
        try send(second, #"{"command":"reload"}"#)
        try send(third, #"{"command":"reload"}"#)
        let pid = try XCTUnwrap(try h.status()["pid"] as? Int32)
        kill(pid, SIGHUP)

        // The first read's outcome: generation 2, the large file.
        let reply = try readLine(first, within: .seconds(120), notifications: h)
        print("a \(large.utf8.count >> 20) MiB configuration read and applied in \(ContinuousClock.now - reloadStarted)")
        XCTAssertTrue(reply.contains(#""config_generation":2"#) && reply.contains(#""ok":true"#), reply)
        // No READY=1 yet: the requests made during the read are about a later file.
        XCTAssertFalse(h.notifications.drop { !$0.contains("RELOADING=1") }.contains { $0.contains("READY=1") }, "\(h.notifications)")
        // Then the second read, answering both clients (SIGHUP's too) with generation 3.
        for fd in [second, third] {
            let later = try readLine(fd, within: .seconds(60), notifications: h)
            XCTAssertTrue(later.contains(#""config_generation":3"#) && later.contains(#""ok":true"#), later)
        }
        try eventually(within: .seconds(5), "generation 3 applied") {
            try ns.ipJSON("-6", "route", "show", "2001:db8:3::/64", "proto", "77").count == 1
                && ns.ipJSON("-6", "route", "show", "2001:db8:2::/64", "proto", "77").isEmpty
        }
        let status = try h.status()
        XCTAssertEqual(status["reloads"] as? Int, 2, "three requests during the first read coalesced into one more")
        XCTAssertEqual(status["config_generation"] as? Int, 3)
        try h.waitForNotification { _ in h.notifications.filter { $0.contains("READY=1") }.count >= 2 }
        // Ready at start; reloading for both reads; ready once the later file is applied.
        let lifecycle = h.notifications.compactMap { n in n.contains("RELOADING=1") ? "R" : n.contains("READY=1") ? "Y" : nil }
        XCTAssertEqual(lifecycle.joined(), "YRRY", "\(h.notifications)")
    }

    /// `wgkeeper reload` waits for the outcome however long the read takes (before, it gave up
    /// after 30 s, with "Resource temporarily unavailable"); with `--timeout` it says that the
    /// reload goes on and where to see its outcome.
    func testReloadCommandWaitsForTheOutcomeOfALongRead() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        try ns.addVeth("wg1", "wg1p")
        let h = try DaemonHarness(self, ns: ns)
        let small = h.gatewayConfig(peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])])
        try h.writeConfig(small)
        try h.start()
        try h.writeConfig(Self.largeConfiguration(small, keyPath: h.keyPath))

        let reload = [DaemonHarness.binary, "reload", "--socket", h.socketPath]
        let start = ContinuousClock.now
        let timedOut = try run(reload + ["--timeout", "1"])
        XCTAssertEqual(timedOut.status, 2, timedOut.error)
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(3))
        XCTAssertTrue(timedOut.error.contains("no answer from wgkeeper within 1 s; the reload is still in progress"), timedOut.error)
        XCTAssertTrue(timedOut.error.contains("`wgkeeper status --socket \(h.socketPath)` shows its outcome"), timedOut.error)
        XCTAssertEqual(try h.status()["config_generation"] as? Int, 1, "the file parsed too fast for this test")

        // Without a timeout: it waits for the read it asked for (the one after the read under
        // way, since the file may have changed since that one began).
        let waited = try run(reload)
        let took = ContinuousClock.now - start
        print("`wgkeeper reload` of a large configuration waited \(took) for: \(waited.output)")
        XCTAssertEqual(waited.status, 0, waited.error)
        XCTAssertTrue(waited.output.contains("reloaded: configuration generation "), waited.output)
        XCTAssertGreaterThan(took, .seconds(2))
        try eventually(within: .seconds(5), "the large generation applied") {
            try ns.ipJSON("-6", "route", "show", "2001:db8:2::/64", "proto", "77").count == 1
        }
    }

    /// About 25 MiB: `small` with 150 000 peers on wg1 (beside wg0, before the gateway
    /// section; wg1 is not WireGuard, so they stay pending and the file costs its parse, not
    /// writes), and a route to 2001:db8:2::/64 that shows when this generation applies.
    static func largeConfiguration(_ small: String, keyPath: String) -> String {
        var wg1 = "  wg1:\n    private_key_file: \(keyPath)\n    peers:\n"
        wg1.reserveCapacity(26 << 20)
        // Within the object limits (100 000 peers, 200 000 allowed IPs), over 20 MiB.
        for n in 0..<95_000 {
            let key = WireGuardKey(bytes: withUnsafeBytes(of: UInt32(n).bigEndian, Array.init) + [UInt8](repeating: 1, count: 28))!
            let low = "\(String(n >> 16, radix: 16)):\(String(n & 0xffff, radix: 16))"
            wg1 += "      - name: p\(n)\n        public_key: \"\(key.base64)\"\n"
                + "        allowed_ips: [2001:db8:100::\(low)/128, 2001:db8:200::\(low)/128]\n"
                + "        endpoint: \"[2001:db8:ff::1]:51820\"\n"
                + "        persistent_keepalive: 25\n"
        }
        XCTAssertEqual(small.components(separatedBy: "\ngateway:\n").count, 2)
        let large = small.replacingOccurrences(of: "\ngateway:\n", with: "\n" + wg1 + "gateway:\n")
            + "routes:\n  - destination: 2001:db8:2::/64\n    device: wg0\n"
        XCTAssertGreaterThan(large.utf8.count, 20 << 20)
        return large
    }

    private func run(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile(), error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
    }

    private func send(_ fd: Int32, _ line: String) throws {
        let bytes = Array((line + "\n").utf8)
        guard bytes.withUnsafeBytes({ Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == bytes.count else {
            throw TestFailure("send failed: \(String(cString: strerror(errno)))")
        }
    }

    private func pendingBytes(_ fd: Int32) throws -> Int {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_DONTWAIT | MSG_PEEK))
        return n > 0 ? n : 0
    }

    /// Reads one reply line. Meanwhile the harness keeps reading notifications: the notify
    /// socket queues only a few datagrams (net.unix.max_dgram_qlen) and the daemon drops what
    /// does not fit, so a READY=1 would be lost behind unread WATCHDOG=1s.
    private func readLine(_ fd: Int32, within timeout: Duration, notifications h: DaemonHarness) throws -> String {
        let deadline = ContinuousClock.now + timeout
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !data.contains(10), ContinuousClock.now < deadline {
            _ = try? h.waitForNotification(timeout: .milliseconds(100)) { _ in false }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 0) > 0 else { continue }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        guard let end = data.firstIndex(of: 10) else { throw TestFailure("no reply within \(timeout)") }
        return String(decoding: data[..<end], as: UTF8.self)
    }
}
