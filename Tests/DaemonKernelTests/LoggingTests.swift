import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// Logging can neither block nor kill the daemon: a closed or missing standard error, a journal
/// that does not read. Under journald, messages carry their fields.
final class LoggingTests: XCTestCase {
    private func setUp() throws -> (TestNamespace, DaemonHarness) {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices()
        let h = try DaemonHarness(self, ns: ns)
        try h.writeConfig(h.gatewayConfig(peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])]))
        return (ns, h)
    }

    /// Each repair logs an "applied:" line.
    private func repair(_ ns: TestNamespace, times: Int) throws {
        for round in 1...times {
            try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0", "proto", "77")
            try eventually(within: .seconds(1), "repair \(round)") {
                try ns.ipJSON("-6", "route", "show", "2001:db8:1::100/128", "proto", "77").count == 1
            }
        }
    }

    private func dropped(_ h: DaemonHarness) throws -> Int { try XCTUnwrap(try h.status()["log_lines_dropped"] as? Int) }

    func testStandardErrorAPipeNobodyReadsAnyMore() throws {
        let (ns, h) = try setUp()
        try h.start(standardError: .brokenPipe)
        try repair(ns, times: 5)
        XCTAssertTrue(h.process!.isRunning, "EPIPE on standard error must not end the daemon")
        XCTAssertGreaterThanOrEqual(try dropped(h), 5, "the lost lines are counted")
    }

    func testStandardErrorClosed() throws {
        let (ns, h) = try setUp()
        try h.start(standardError: .closed)
        try repair(ns, times: 5)
        XCTAssertTrue(h.process!.isRunning)
        XCTAssertNotNil(try h.status()["pid"], "the status socket did not become standard error")
    }

    func testJournalGetsFieldsAndAJournalThatDoesNotReadCostsLinesNotRepairs() throws {
        let (ns, h) = try setUp()
        let path = h.directory.appendingPathComponent("journal.sock").path
        let journal = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(journal) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(journal, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(bound, 0)
        try h.start(environment: ["WGKEEPER_JOURNAL_SOCKET": path], journalStream: true)

        var datagrams: [String] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        // READY=1 is sent just before the "ready" line is logged: wait for it.
        let deadline = ContinuousClock.now + .seconds(2)
        while !datagrams.contains(where: { $0.hasPrefix("MESSAGE=ready") }), ContinuousClock.now < deadline {
            var pfd = pollfd(fd: journal, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) == 1 else { continue }
            let n = recv(journal, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n > 0 { datagrams.append(String(decoding: buffer[0..<n], as: UTF8.self)) }
        }
        let ready = try XCTUnwrap(datagrams.first { $0.hasPrefix("MESSAGE=ready") }, "\(datagrams)")
        let fields = Set(ready.split(separator: "\n").map { String($0.prefix { $0 != "=" }) })
        XCTAssertTrue(fields.isSuperset(of: ["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "STATUS"]), "\(ready)")
        XCTAssertTrue(ready.contains("\nPRIORITY=6\n"), ready)
        let key = try String(contentsOfFile: h.keyPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertFalse(datagrams.contains { $0.contains(key) }, "the private key is in a log line")
        // `log` waits for data: look only if there is some.
        var output = pollfd(fd: h.output.fileHandleForReading.fileDescriptor, events: Int16(POLLIN), revents: 0)
        if poll(&output, 1, 0) == 1 { XCTAssertFalse(h.log.contains("ready"), "journal messages are not also written to standard error") }

        // Nobody reads the journal now: its queue fills, lines are dropped, repairs go on.
        try repair(ns, times: 30)
        XCTAssertGreaterThan(try dropped(h), 0)
        XCTAssertTrue(h.process!.isRunning)
    }
}
