import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// `ndp: datapath` → `ndp: kernel` is make-before-break: lan_ingress keeps answering the
/// clients' solicitations (and their groups stay joined) until the kernel's proxy path is
/// complete (the LAN's forwarding and proxy_ndp at 1, every proxy entry there), and for as long
/// as the anycast rule refuses LAN forwarding. A LAN host probes with Neighbor Solicitations
/// throughout. wg0 is a TUN device (no WireGuard here): peers stay pending.
final class NeighbourDiscoveryHandoverTests: XCTestCase {
    private var gateway: TestNamespace!
    private var host: TestNamespace!
    private var daemon: DaemonHarness!
    private var tun: TunDevice!
    private var pinRoot = ""
    private var clients: [String] = []
    private var keys: [WireGuardKey] = []

    private func start(lanAddress: String, clients count: Int) throws {
        gateway = try TestNamespace(for: self)
        host = try TestNamespace(for: self)
        try gateway.ip("link", "add", "private0", "type", "veth", "peer", "name", "lanp", "netns", host.name)
        try gateway.ip("link", "set", "private0", "up")
        try gateway.ip("-6", "addr", "add", lanAddress, "dev", "private0", "nodad")
        // The kernel delays its proxied advertisements by up to proxy_delay (0.8 s): none here,
        // so that a probe's answer (or its absence) is seen at once whoever answers.
        try shell("ip", "netns", "exec", gateway.name, "sysctl", "-qw", "net.ipv6.neigh.private0.proxy_delay=0")
        try host.ip("link", "set", "lanp", "up")
        try host.ip("-6", "addr", "add", "2001:db8:1::10/64", "dev", "lanp", "nodad")
        tun = try gateway.namespace.perform { try TunDevice(name: "wg0") }
        try gateway.ip("link", "set", "wg0", "up")
        clients = (0..<count).map { "2001:db8:1::2:\(String($0, radix: 16))" }
        keys = (0..<count).map { (i: Int) -> WireGuardKey in
            var bytes = [UInt8](repeating: 0x42, count: 32)
            bytes[0] = UInt8(truncatingIfNeeded: i)
            bytes[1] = UInt8(truncatingIfNeeded: i >> 8)
            return WireGuardKey(bytes: bytes)!
        }
        daemon = try DaemonHarness(self, ns: gateway)
        pinRoot = try daemon.mountPinRoot(self)
        try daemon.writeConfig(config(ndp: "datapath"))
        try daemon.start(readyWithin: .seconds(120))
    }

    private func config(ndp: String) -> String {
        daemon.gatewayConfig(runtime: ["proxy_poll: 200ms"], pinRoot: pinRoot,
                             peers: zip(clients, keys).enumerated().map { TestPeer("c\($0.offset)", $0.element.1, allowedIPs: ["\($0.element.0)/128"]) },
                             gateway: ["redirect: true", "ndp: \(ndp)"])
    }

    private func neighbourDiscovery() throws -> String? {
        (try daemon.status()["datapath"] as? [String: Any])?["neighbour_discovery"] as? String
    }

    /// Whether status says the kernel's proxy entries answer address resolution (the program
    /// only the unicast probes): the handover is done.
    private func kernelAnswers() throws -> Bool {
        try neighbourDiscovery()?.hasPrefix("the kernel's proxy entries answer address resolution;") == true
    }

    private func answeredByProgram() throws -> Int {
        ((try daemon.status()["datapath"] as? [String: Any])?["counters"] as? [String: Any])?["solicitations_answered"] as? Int ?? -1
    }

    private func groups() throws -> String { try gateway.ip("-6", "maddr", "show", "dev", "private0") }

    /// `wgkeeper reload`, started; its standard output and error go to `output`.
    private func startReload(_ output: Pipe) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: DaemonHarness.binary)
        process.arguments = ["reload", "--socket", daemon.socketPath]
        process.standardOutput = output
        process.standardError = output
        try process.run()
        return process
    }

    func testSwitchingToKernelModeAtScaleLeavesNoSolicitationUnanswered() throws {
        let count = ProcessInfo.processInfo.environment["WGK_NDP_SCALE"].flatMap { Int($0) } ?? 3000
        try start(lanAddress: "2001:db8:1::1/128", clients: count)
        let probe = try SolicitationProbe(host: host, targets: clients)
        let warmUp = probe.run(for: .milliseconds(300)) { false }
        XCTAssertEqual(warmUp.unanswered, [], "datapath mode answers")

        try daemon.writeConfig(config(ndp: "kernel"))
        let output = Pipe()
        var reload: Process?
        let outcome = probe.run(for: .seconds(60)) {
            if reload == nil { reload = try? self.startReload(output) }
            return reload.map { !$0.isRunning } ?? true
        }
        reload?.waitUntilExit()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(reload?.terminationStatus, 0, printed)
        print("ndp: datapath → kernel with \(count) clients: \(outcome.sent) solicitations across the reload (\(outcome.duration)), "
            + "\(outcome.unanswered.count) unanswered")
        XCTAssertEqual(outcome.unanswered.map { clients[$0] }, [], "a solicitation went unanswered during the switch")

        // The kernel's path is complete: the program no longer answers, the groups are the kernel's.
        XCTAssertEqual(try gateway.sysctl("private0", "forwarding"), "1")
        XCTAssertEqual(try gateway.ipJSON("-6", "neigh", "show", "proxy").count, count)
        try eventually(within: .seconds(5), "handover done") { try kernelAnswers() }
        let before = try answeredByProgram()
        let after = probe.run(for: .milliseconds(300)) { false }
        XCTAssertEqual(after.unanswered, [], "the kernel answers")
        XCTAssertGreaterThan(after.sent, 0)
        XCTAssertEqual(try answeredByProgram(), before, "the kernel answers, not the program")
    }

    func testKernelModeRefusedByTheAnycastRuleKeepsTheProgramAnsweringUntilItIsAllowed() throws {
        try start(lanAddress: "2001:db8:1::1/64", clients: 2)
        let probe = try SolicitationProbe(host: host, targets: clients)
        XCTAssertEqual(probe.run(for: .milliseconds(200)) { false }.unanswered, [])

        try daemon.writeConfig(config(ndp: "kernel"))
        let output = Pipe()
        let reload = try startReload(output)
        reload.waitUntilExit()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(reload.terminationStatus, 0, "the generation took effect: \(printed)")
        XCTAssertTrue(printed.contains("1 change(s) refused") && printed.contains("refusing net.ipv6.conf.private0.forwarding=1"), printed)
        XCTAssertTrue(printed.contains("warning: ndp: kernel is not in effect yet, so lan_ingress keeps answering"), printed)
        XCTAssertEqual(try gateway.sysctl("private0", "forwarding"), "0", "refused")

        let line = try XCTUnwrap(try neighbourDiscovery(), "status says who answers")
        XCTAssertTrue(line.hasPrefix("answered by lan_ingress for 2 addresses with "), line)
        XCTAssertTrue(line.contains("keeps answering") && line.contains("refusing net.ipv6.conf.private0.forwarding=1"), line)
        XCTAssertTrue(daemon.log.contains("ndp: kernel is not in effect yet"), "logged")
        XCTAssertTrue(try groups().contains("ff02::1:ff02:0"), "the group stays joined")
        usleep(600_000)  // a few proxy_polls: still answering
        let before = try answeredByProgram()
        XCTAssertEqual(probe.run(for: .milliseconds(300)) { false }.unanswered, [], "the clients stay reachable")
        XCTAssertGreaterThan(try answeredByProgram(), before, "answered by the program")

        // A restart finds the program answering and keeps it so.
        daemon.stop()
        try daemon.start()
        XCTAssertTrue(try neighbourDiscovery()?.contains("keeps answering") == true)
        XCTAssertEqual(probe.run(for: .milliseconds(200)) { false }.unanswered, [])

        // The operator follows the refusal's advice: the kernel takes over, the program stops.
        try gateway.ip("-6", "addr", "del", "2001:db8:1::1/64", "dev", "private0")
        try gateway.ip("-6", "addr", "add", "2001:db8:1::1/128", "dev", "private0", "nodad")
        try eventually(within: .seconds(3), "kernel mode in effect") { try kernelAnswers() }
        XCTAssertEqual(try gateway.sysctl("private0", "forwarding"), "1")
        let counted = try answeredByProgram()
        XCTAssertEqual(probe.run(for: .milliseconds(300)) { false }.unanswered, [], "the kernel answers")
        XCTAssertEqual(try answeredByProgram(), counted, "the program no longer answers")
        XCTAssertTrue(daemon.log.contains("ndp: kernel in effect"), "logged")
    }
}

/// Neighbor Solicitations from the LAN host to the targets' solicited-node groups, one every
/// 5 ms, each target in turn, through a raw ICMPv6 socket in the host's namespace (the kernel
/// fills the checksum); the advertisements come back on the same socket.
final class SolicitationProbe {
    struct Outcome {
        var sent = 0
        /// Indexes of targets not answered within `patience`.
        var unanswered: [Int] = []
        var duration: Duration = .zero
    }

    let fd: Int32
    let interfaceIndex: UInt32
    let mac: [UInt8]
    let targets: [[UInt8]]
    let indexOf: [[UInt8]: Int]
    var next = 0
    static let patience: Duration = .milliseconds(250)

    init(host: TestNamespace, targets: [String]) throws {
        fd = try host.namespace.perform { socket(AF_INET6, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_ICMPV6)) }
        guard fd >= 0 else { throw TestFailure("raw ICMPv6 socket: errno \(errno)") }
        let link = try XCTUnwrap(try host.ipJSON("link", "show", "dev", "lanp").first)
        interfaceIndex = UInt32(try XCTUnwrap(link["ifindex"] as? Int))
        mac = try XCTUnwrap(link["address"] as? String).split(separator: ":").map { UInt8($0, radix: 16)! }
        self.targets = try targets.map { try XCTUnwrap(IPv6Address($0)).bytes }
        indexOf = Dictionary(uniqueKeysWithValues: self.targets.enumerated().map { ($0.element, $0.offset) })
        var hops: Int32 = 255
        setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_MULTICAST_HOPS, &hops, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_UNICAST_HOPS, &hops, socklen_t(MemoryLayout<Int32>.size))
        var index = Int32(interfaceIndex)
        setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_MULTICAST_IF, &index, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    private func send(_ target: [UInt8]) {
        let payload: [UInt8] = [135, 0, 0, 0, 0, 0, 0, 0] + target + [1, 1] + mac
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        let group: [UInt8] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff] + target[13...]
        withUnsafeMutableBytes(of: &address.sin6_addr) { $0.copyBytes(from: group) }
        address.sin6_scope_id = interfaceIndex
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
            }
        }
    }

    /// Probes until `done` holds (asked between probes) or `limit` passes, then waits for the
    /// last answers.
    func run(for limit: Duration, until done: () -> Bool) -> Outcome {
        var sentAt: [(index: Int, at: ContinuousClock.Instant)] = []
        var answeredAt: [Int: [ContinuousClock.Instant]] = [:]
        let start = ContinuousClock.now
        var nextSend = start
        var stopAt: ContinuousClock.Instant?
        var buffer = [UInt8](repeating: 0, count: 1500)
        while stopAt.map({ ContinuousClock.now < $0 }) ?? true {
            let now = ContinuousClock.now
            if stopAt == nil, now >= nextSend {
                let index = next % targets.count
                next += 1
                send(targets[index])
                sentAt.append((index, now))
                nextSend = now + .milliseconds(5)
                if done() || now - start > limit { stopAt = now + Self.patience }
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 1) > 0 else { continue }
            while true {
                let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                guard n >= 24 else { break }
                if buffer[0] == 136, let index = indexOf[Array(buffer[8..<24])] { answeredAt[index, default: []].append(ContinuousClock.now) }
            }
        }
        var outcome = Outcome(sent: sentAt.count, duration: ContinuousClock.now - start)
        // Each probe must be answered after it was sent (an answer to an earlier probe of the
        // same target does not count) and in time.
        for probe in sentAt where !(answeredAt[probe.index] ?? []).contains(where: { $0 >= probe.at && $0 - probe.at <= Self.patience }) {
            outcome.unanswered.append(probe.index)
        }
        return outcome
    }
}
