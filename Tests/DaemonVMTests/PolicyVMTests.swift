import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The access policy with real WireGuard and the real daemon, on Debian's 6.1 kernel (clsact):
/// clients A and B over WireGuard, servers 1 and 2 on a bridged LAN. A reaches server 1 on
/// TCP 22 only, B reaches everything, and LAN hosts may only answer (`lan_to_client: replies`).
/// Every combination with real TCP, UDP and echo, the reject as its sender sees it, the
/// counters; then a reload and a restart under continuous probes.
final class PolicyVMTests: XCTestCase {
    static let a = "2001:db8:1::100", b = "2001:db8:1::101"
    static let server1 = "2001:db8:1::10", server2 = "2001:db8:1::11"
    /// The gateway's LAN address (a /128): the source of its ICMPv6 errors both ways.
    static let gatewayAddress = "2001:db8:1::1"

    static let firstPolicy = """
        policy:
          client_to_lan: deny
          lan_to_client: replies
          rules:
            - from: alice
              to: 2001:db8:1::10
              protocol: tcp
              ports: 22
            - from: bob
              to: 2001:db8:1::/64

        """
    /// What the reload installs: A also reaches server 1 on UDP 5000, B only server 2.
    static let secondPolicy = """
        policy:
          client_to_lan: deny
          lan_to_client: replies
          rules:
            - from: alice
              to: 2001:db8:1::10
              protocol: tcp
              ports: 22
            - from: alice
              to: 2001:db8:1::10
              protocol: udp
              ports: 5000
            - from: bob
              to: 2001:db8:1::11

        """

    private struct Lab {
        let daemon: DaemonHarness
        let a: WireGuardClient, b: WireGuardClient
        let server1: TestNamespace, server2: TestNamespace
        let config: (String) -> String
    }

    func testEnforcedBothWaysThroughAReloadAndARestart() throws {
        let started = ContinuousClock.now
        let lab = try makeLab()
        print("policy lab up in \(ContinuousClock.now - started) (TCG)")
        try checkTCP(lab)
        try checkUDP(lab)
        try checkEcho(lab)
        try checkReloadUnderProbes(lab)
        try checkRestartUnderProbes(lab)
        print("PolicyVMTests wall time \(ContinuousClock.now - started) (TCG)")
    }

    // MARK: - The lab

    /// The gateway (the daemon's namespace) with `private0` on a bridge (its own namespace, the
    /// LAN's switch) where servers 1 and 2 sit; clients A and B each over their own underlay.
    private func makeLab() throws -> Lab {
        let gateway = try TestNamespace(for: self)
        let lan = try TestNamespace(for: self)
        try lan.ip("link", "add", "br0", "type", "bridge")
        try lan.ip("link", "set", "br0", "up")
        var servers: [TestNamespace] = []
        for (i, address) in [Self.server1, Self.server2].enumerated() {
            let server = try TestNamespace(for: self)
            try server.ip("link", "add", "eth0", "type", "veth", "peer", "name", "p-s\(i + 1)", "netns", lan.name)
            try lan.ip("link", "set", "p-s\(i + 1)", "master", "br0", "up")
            try server.ip("-6", "addr", "add", "\(address)/64", "dev", "eth0", "nodad")
            try server.ip("link", "set", "eth0", "up")
            servers.append(server)
        }
        try gateway.namespace.perform {
            for key in ["all/accept_dad", "default/accept_dad"] { try Sysctl("net/ipv6/conf/\(key)").write("0") }
        }
        try gateway.ip("link", "add", "private0", "type", "veth", "peer", "name", "p-gw", "netns", lan.name)
        try lan.ip("link", "set", "p-gw", "master", "br0", "up")
        try gateway.ip("-6", "addr", "add", "\(Self.gatewayAddress)/128", "dev", "private0", "nodad")
        try gateway.ip("link", "set", "private0", "up")

        let h = try DaemonHarness(self, ns: gateway)
        let pinRoot = try h.mountPinRoot(self)
        let (keyA, keyB) = (PrivateKey.generate(), PrivateKey.generate())
        let config = { (policy: String) in
            h.gatewayConfig(
                runtime: ["wireguard_poll: 500ms", "proxy_poll: 500ms"], pinRoot: pinRoot, wireGuard: ["listen_port: 51820"],
                peers: [TestPeer("alice", keyA.publicKey, allowedIPs: ["\(Self.a)/128"]),
                        TestPeer("bob", keyB.publicKey, allowedIPs: ["\(Self.b)/128"])],
                gateway: ["proxy_ndp: true", "redirect: true", "icmp_ratelimit: 0"], tail: policy)
        }
        try h.writeConfig(config(Self.firstPolicy))
        // The first load verifies the programs with the policy tables: slow under emulation.
        let loading = ContinuousClock.now
        try h.start(readyWithin: .seconds(240))
        // What the verifier of this kernel made of the programs with the policy tables (the limit is 1M).
        for program in ["lan_ingress", "tunnel_ingress"] {
            let info = try shell("bpftool", "-j", "prog", "show", "pinned", "\(pinRoot)/wg0/\(program)")
            let fields = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(info.utf8)) as? [String: Any])
            print("\(program) on this kernel: verified_insns \(fields["verified_insns"] ?? "not reported"), xlated \(fields["bytes_xlated"] ?? "?") bytes")
        }
        print("daemon ready (programs loaded and verified) \(ContinuousClock.now - loading) after its start")
        let gatewayKey = try XCTUnwrap(PrivateKey(base64: try String(contentsOfFile: h.keyPath, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines))).publicKey
        let a = try WireGuardClient(for: self, underlay: 1, gateway: gateway, gatewayKey: gatewayKey, address: Self.a,
                                    privateKey: keyA, keepalive: 1)
        let b = try WireGuardClient(for: self, underlay: 2, gateway: gateway, gatewayKey: gatewayKey, address: Self.b,
                                    privateKey: keyB, keepalive: 1)
        let lab = Lab(daemon: h, a: a, b: b, server1: servers[0], server2: servers[1], config: config)
        // Both tunnels up: B's echo answered, A's refused (each crossed the tunnel both ways).
        let probeB = try b.namespace.namespace.perform { try ICMPv6Socket() }
        let probeA = try a.namespace.namespace.perform { try ICMPv6Socket() }
        let up = try eventually(within: .seconds(60), "both clients' tunnels carry traffic") {
            try probeB.sendEchoRequest(to: Self.server2, identifier: 0xb0, sequence: 0)
            try probeA.sendEchoRequest(to: Self.server1, identifier: 0xa0, sequence: 0)
            let b = probeB.drain(quiet: 300).contains { $0.type == 129 && $0.from == Self.server2 }
            let a = probeA.drain(quiet: 300).contains { $0.type == 1 && $0.code == 1 }
            return a && b
        }
        print("both tunnels up after \(up)")
        return lab
    }

    // MARK: - Each combination

    /// The policy section of `status --json`: what each default denied, what each rule allowed.
    private struct Counters: Equatable {
        var deniedToLAN = 0, deniedToClients = 0
        var rules: [Int] = []

        static func - (lhs: Counters, rhs: Counters) -> Counters {
            Counters(deniedToLAN: lhs.deniedToLAN - rhs.deniedToLAN, deniedToClients: lhs.deniedToClients - rhs.deniedToClients,
                     rules: zip(lhs.rules, rhs.rules).map { $0 - $1 })
        }
    }

    private func counters(_ lab: Lab) throws -> Counters {
        let datapath = try XCTUnwrap(try lab.daemon.status()["datapath"] as? [String: Any])
        let policy = try XCTUnwrap(datapath["policy"] as? [String: Any], "\(datapath)")
        let rules = try XCTUnwrap(policy["rules"] as? [[String: Any]])
        return Counters(deniedToLAN: try XCTUnwrap(policy["denied_to_lan"] as? Int),
                        deniedToClients: try XCTUnwrap(policy["denied_to_clients"] as? Int),
                        rules: try rules.map { try XCTUnwrap($0["packets"] as? Int) })
    }

    /// Waits until the counters stop moving (a segment still on its way), then reads them.
    private func settledCounters(_ lab: Lab) throws -> Counters {
        var last = try counters(lab)
        while true {
            usleep(300_000)
            let now = try counters(lab)
            if now == last { return now }
            last = now
        }
    }

    /// The reject a sender must see: Destination Unreachable, administratively prohibited, from
    /// the gateway, quoting its packet to `destination` (`next`: 6, 17 or 58; `port`: the TCP or
    /// UDP destination port, or for an echo its type and code word, 0x8000).
    private func assertRejected(_ messages: [ICMPv6Socket.Message], to destination: String, next: UInt8, port: UInt16,
                                _ what: String, line: UInt = #line) {
        XCTAssertTrue(messages.contains { isReject($0, to: destination, next: next, port: port) },
                      "\(what): no administratively prohibited from the gateway among \(messages)", line: line)
        let errors = messages.filter { $0.type < 128 }
        XCTAssertTrue(errors.allSatisfy { $0.type == 1 && $0.code == 1 }, "\(what): \(errors)", line: line)
    }

    private func isReject(_ message: ICMPv6Socket.Message, to destination: String, next: UInt8, port: UInt16) -> Bool {
        guard message.type == 1, message.code == 1, message.from == Self.gatewayAddress, let quoted = message.quoted else { return false }
        return quoted.destination == destination && quoted.nextHeader == next && (next == 58 ? quoted.first : quoted.second) == port
    }

    /// The administratively prohibited errors among `messages`: one for each packet denied.
    private func rejects(_ messages: [ICMPv6Socket.Message]) -> Int {
        messages.filter { $0.type == 1 && $0.code == 1 && $0.from == Self.gatewayAddress }.count
    }

    /// A TCP connection from `namespace`: nil when it was made, the server read the client's
    /// bytes and the client the server's answer (then it is reset: one segment each way at most);
    /// otherwise connect(2)'s error.
    private func tcp(from namespace: TestNamespace, _ source: String, to address: String, port: UInt16,
                     listener: TCPSocket, line: UInt = #line) throws -> SocketError? {
        switch try namespace.namespace.perform({ try TCPSocket.connect(from: source, to: address, port: port, timeout: 15_000) }) {
        case .failure(let error):
            return error
        case .success(let connection):
            let accepted = try XCTUnwrap(listener.accept(timeout: 10_000), "accepted", line: line)
            try connection.send(Array("ping".utf8))
            XCTAssertEqual(accepted.receive(4, timeout: 10_000), Array("ping".utf8), "server read", line: line)
            try accepted.send(Array("pong".utf8))
            XCTAssertEqual(connection.receive(4, timeout: 10_000), Array("pong".utf8), "client read the answer", line: line)
            connection.reset()
            return nil
        }
    }

    private func checkTCP(_ lab: Lab) throws {
        let (a, b, s1, s2) = (lab.a.namespace, lab.b.namespace, lab.server1, lab.server2)
        let ssh1 = try s1.namespace.perform { try TCPSocket.listen(on: Self.server1, port: 22) }
        let web1 = try s1.namespace.perform { try TCPSocket.listen(on: Self.server1, port: 80) }
        let ssh2 = try s2.namespace.perform { try TCPSocket.listen(on: Self.server2, port: 22) }
        let listenA = try a.namespace.perform { try TCPSocket.listen(on: Self.a, port: 2222) }
        let listenB = try b.namespace.perform { try TCPSocket.listen(on: Self.b, port: 2222) }
        let (icmpA, icmpS1, icmpS2) = try (a.namespace.perform { try ICMPv6Socket() }, s1.namespace.perform { try ICMPv6Socket() },
                                           s2.namespace.perform { try ICMPv6Socket() })
        let before = try settledCounters(lab)

        XCTAssertNil(try tcp(from: a, Self.a, to: Self.server1, port: 22, listener: ssh1), "A → server 1, TCP 22")
        XCTAssertEqual(try tcp(from: a, Self.a, to: Self.server1, port: 80, listener: web1), SocketError(EACCES), "A → server 1, TCP 80")
        XCTAssertEqual(try tcp(from: a, Self.a, to: Self.server2, port: 22, listener: ssh2), SocketError(EACCES), "A → server 2, TCP 22")
        XCTAssertNil(try tcp(from: b, Self.b, to: Self.server1, port: 80, listener: web1), "B → server 1, TCP 80")
        XCTAssertNil(try tcp(from: b, Self.b, to: Self.server2, port: 22, listener: ssh2), "B → server 2, TCP 22")
        // Replies only: a server answers (above) but opens nothing, not even towards B.
        XCTAssertEqual(try tcp(from: s1, Self.server1, to: Self.a, port: 2222, listener: listenA), SocketError(EACCES), "server 1 → A")
        XCTAssertEqual(try tcp(from: s2, Self.server2, to: Self.b, port: 2222, listener: listenB), SocketError(EACCES), "server 2 → B")
        XCTAssertNil(listenA.accept(timeout: 0))
        XCTAssertNil(listenB.accept(timeout: 0))

        let moved = try settledCounters(lab) - before
        let messagesA = icmpA.drain(quiet: 200)
        assertRejected(messagesA, to: Self.server1, next: 6, port: 80, "A → server 1, TCP 80")
        assertRejected(messagesA, to: Self.server2, next: 6, port: 22, "A → server 2, TCP 22")
        let (messagesS1, messagesS2) = (icmpS1.drain(quiet: 200), icmpS2.drain(quiet: 200))
        assertRejected(messagesS1, to: Self.a, next: 6, port: 2222, "server 1 → A")
        assertRejected(messagesS2, to: Self.b, next: 6, port: 2222, "server 2 → B")
        // One reject for each packet denied (no rate limit here). A's SYNs are refused at once; a
        // server's SYN may go twice: its first waits for the client's address to resolve, and the
        // gateway delays a proxied advertisement (proxy_delay, up to 0.8 s) past the SYN's 1 s
        // retransmission under emulation.
        XCTAssertEqual(moved.deniedToLAN, 2, "A's two SYNs, \(moved)")
        XCTAssertEqual(rejects(messagesA), 2, "\(messagesA)")
        XCTAssertEqual(moved.deniedToClients, rejects(messagesS1) + rejects(messagesS2), "the servers' SYNs, \(moved)")
        // Each allowed connection: handshake, a segment and its acknowledgement each way, the reset.
        XCTAssertGreaterThanOrEqual(moved.rules[0], 6, "\(moved)")
        XCTAssertGreaterThanOrEqual(moved.rules[1], 12, "\(moved)")
        print("TCP: counters moved \(moved)")
    }

    private func checkUDP(_ lab: Lab) throws {
        let (a, b, s1, s2) = (lab.a.namespace, lab.b.namespace, lab.server1, lab.server2)
        let dns1 = try s1.namespace.perform { try UDPSocket(bind: Self.server1, port: 53) }
        let dns2 = try s2.namespace.perform { try UDPSocket(bind: Self.server2, port: 53) }
        let other2 = try s2.namespace.perform { try UDPSocket(bind: Self.server2, port: 54) }
        let socketA = try a.namespace.perform { try UDPSocket(bind: Self.a, port: 5353) }
        let socketB = try b.namespace.perform { try UDPSocket(bind: Self.b, port: 5353) }
        let idleB = try b.namespace.perform { try UDPSocket(bind: Self.b, port: 5354) }
        let (icmpA, icmpS2) = try (a.namespace.perform { try ICMPv6Socket() }, s2.namespace.perform { try ICMPv6Socket() })
        let before = try settledCounters(lab)

        // B's flow: each query answered (replies pass within the flow B opened).
        for round in 0..<3 {
            try socketB.send(Array("query \(round)".utf8), to: Self.server2, port: 53)
            let query = try XCTUnwrap(dns2.receive(timeout: 10_000), "B's query \(round) reached server 2")
            XCTAssertEqual(query.from, Self.b)
            try dns2.send(query.bytes, to: query.from, port: query.port)
            XCTAssertEqual(socketB.receive(timeout: 10_000)?.bytes, query.bytes, "server 2's answer \(round) reached B")
        }
        // Server 2 opening a flow: to another port of B, and from another port of its own.
        try dns2.send(Array("unasked".utf8), to: Self.b, port: 5354)
        try other2.send(Array("unasked".utf8), to: Self.b, port: 5353)
        // A has no UDP rule.
        try socketA.send(Array("query".utf8), to: Self.server1, port: 53)

        let messagesS2 = icmpS2.drain(quiet: 500)
        assertRejected(messagesS2, to: Self.b, next: 17, port: 5354, "server 2 → B's other port")
        assertRejected(messagesS2, to: Self.b, next: 17, port: 5353, "server 2 → B from another port")
        assertRejected(icmpA.drain(quiet: 200), to: Self.server1, next: 17, port: 53, "A → server 1, UDP 53")
        XCTAssertNil(idleB.receive(timeout: 0), "nothing B did not ask for")
        XCTAssertNil(socketB.receive(timeout: 0), "nothing B did not ask for")
        XCTAssertNil(dns1.receive(timeout: 0), "A's query was dropped")
        let moved = try settledCounters(lab) - before
        XCTAssertEqual(moved, Counters(deniedToLAN: 1, deniedToClients: 2, rules: [0, 6]), "3 queries and 3 answers by B's rule")
        // The flow table behind it, as status shows it: B's UDP flow (and its echo flows) remembered.
        let policy = (try lab.daemon.status()["datapath"] as? [String: Any])?["policy"] as? [String: Any]
        let flows = try XCTUnwrap(policy?["reply_flows"] as? [String: Any], "\(String(describing: policy))")
        XCTAssertGreaterThanOrEqual(flows["recent"] as? Int ?? 0, 1, "\(flows)")
        XCTAssertEqual(flows["capacity"] as? Int, 65_536)
    }

    private func checkEcho(_ lab: Lab) throws {
        let (a, b, s1) = (lab.a.namespace, lab.b.namespace, lab.server1)
        let (icmpA, icmpB, icmpS1) = try (a.namespace.perform { try ICMPv6Socket() }, b.namespace.perform { try ICMPv6Socket() },
                                          s1.namespace.perform { try ICMPv6Socket() })
        let before = try settledCounters(lab)
        for sequence in 1...3 { try icmpB.sendEchoRequest(to: Self.server1, identifier: 0xb1, sequence: UInt16(sequence)) }
        try icmpA.sendEchoRequest(to: Self.server1, identifier: 0xa1, sequence: 1)
        try icmpS1.sendEchoRequest(to: Self.b, identifier: 0x51, sequence: 1)

        let repliesB = icmpB.drain(quiet: 500).filter { $0.type == 129 && $0.from == Self.server1 }
        XCTAssertEqual(repliesB.count, 3, "B's pings answered")
        assertRejected(icmpA.drain(quiet: 200), to: Self.server1, next: 58, port: 0x8000, "A pings server 1")
        let messagesS1 = icmpS1.drain(quiet: 200)
        assertRejected(messagesS1, to: Self.b, next: 58, port: 0x8000, "server 1 pings B")
        XCTAssertFalse(messagesS1.contains { $0.type == 129 }, "B never got server 1's ping")
        let moved = try settledCounters(lab) - before
        XCTAssertEqual(moved, Counters(deniedToLAN: 1, deniedToClients: 1, rules: [0, 6]), "3 pings and 3 replies by B's rule")
    }

    // MARK: - Swaps under probes

    /// Numbered UDP datagrams from a client to a server: each is either delivered, or refused
    /// (the client's raw socket gets the gateway's reject quoting it); none may be both or neither.
    private struct Stream {
        let name: String
        let sender: UDPSocket, rejects: ICMPv6Socket
        let destination: String, port: UInt16
        let receiver: UDPSocket
    }

    private struct Outcome {
        var sent = 0
        var delivered: Set<Int> = [], refused: Set<Int> = []
    }

    /// What a stream must show: one verdict throughout, or one then the other with a single switch.
    private enum Expected { case delivered, refused, deliveredThenRefused, refusedThenDelivered }

    /// Flags shared with the thread that does the reload or the restart.
    private final class Work: @unchecked Sendable {
        private let lock = NSLock()
        private var finished = false
        private var failure: Error?
        var isFinished: Bool { lock.withLock { finished } }
        var error: Error? { lock.withLock { failure } }
        func finish(_ error: Error?) { lock.withLock { (finished, failure) = (true, error) } }
    }

    /// Sends one datagram of each stream every 5 ms while `work` runs on another thread, until it
    /// has finished and `settled` holds (then 300 ms more), and collects what became of each.
    private func probe(_ streams: [Stream], during work: @escaping @Sendable () throws -> Void,
                       settled: ([Outcome]) -> Bool) throws -> [Outcome] {
        var outcomes = [Outcome](repeating: Outcome(), count: streams.count)
        let receivers = Dictionary(streams.map { (ObjectIdentifier($0.receiver), $0.receiver) }) { first, _ in first }.values
        let rejecters = Dictionary(streams.map { (ObjectIdentifier($0.rejects), $0.rejects) }) { first, _ in first }.values
        var unexpected: [String] = []
        func collect(wait: Int32) {
            var any = true
            while any {
                any = false
                for receiver in receivers {
                    while let datagram = receiver.receive(timeout: wait), datagram.bytes.count == 5 {
                        let (stream, sequence) = (Int(datagram.bytes[0]), Int(datagram.bytes[1...].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }))
                        if stream < streams.count, !outcomes[stream].delivered.insert(sequence).inserted { unexpected.append("duplicate \(sequence)") }
                        any = true
                    }
                }
                for rejects in rejecters {
                    while let message = rejects.receive(timeout: wait) {
                        any = true
                        let body = Array(message.body)
                        guard message.type == 1, message.code == 1, message.from == Self.gatewayAddress,
                              body.count >= 53, body[6] == 17 else {
                            if message.type < 128 { unexpected.append("\(message)") }
                            continue
                        }
                        let (stream, sequence) = (Int(body[48]), Int(body[49...52].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }))
                        if stream < streams.count { outcomes[stream].refused.insert(sequence) }
                    }
                }
            }
        }
        let state = Work()
        Thread { do { try work(); state.finish(nil) } catch { state.finish(error) } }.start()
        let deadline = ContinuousClock.now + .seconds(180)
        var tail: ContinuousClock.Instant?
        var sequence: UInt32 = 0
        while tail.map({ ContinuousClock.now < $0 }) ?? true {
            for (index, stream) in streams.enumerated() {
                let payload = [UInt8(index)] + withUnsafeBytes(of: sequence.bigEndian, Array.init)
                try stream.sender.send(payload, to: stream.destination, port: stream.port)
                outcomes[index].sent += 1
            }
            sequence += 1
            collect(wait: 0)
            if tail == nil, state.isFinished, settled(outcomes) { tail = .now + .milliseconds(300) }
            guard ContinuousClock.now < deadline else { throw TestFailure("probes did not settle within 180 s: \(outcomes.map(\.sent))") }
            usleep(5_000)
        }
        collect(wait: 500)
        if let error = state.error { throw error }
        XCTAssertEqual(unexpected, [], "only deliveries and administratively prohibited rejects")
        return outcomes
    }

    private func check(_ outcome: Outcome, _ expected: Expected, _ name: String, line: UInt = #line) {
        let all = Set(0..<outcome.sent)
        XCTAssertEqual(outcome.delivered.intersection(outcome.refused), [], "\(name): delivered and refused", line: line)
        let lost = all.subtracting(outcome.delivered).subtracting(outcome.refused).sorted()
        XCTAssertEqual(lost, [], "\(name): neither delivered nor refused", line: line)
        let (delivered, refused) = (outcome.delivered.count, outcome.refused.count)
        let summary = "\(name): \(outcome.sent) sent, \(delivered) delivered, \(refused) refused"
        switch expected {
        case .delivered: XCTAssertEqual(refused, 0, summary, line: line)
        case .refused: XCTAssertEqual(delivered, 0, summary, line: line)
        case .deliveredThenRefused:
            XCTAssertTrue(delivered > 0 && refused > 0, summary, line: line)
            XCTAssertLessThan(outcome.delivered.max() ?? 0, outcome.refused.min() ?? 0, "\(summary): one delivered after a refusal", line: line)
        case .refusedThenDelivered:
            XCTAssertTrue(delivered > 0 && refused > 0, summary, line: line)
            XCTAssertLessThan(outcome.refused.max() ?? 0, outcome.delivered.min() ?? 0, "\(summary): one refused after a delivery", line: line)
        }
        print(summary)
    }

    /// B → server 2 (allowed before and after), B → server 1 (allowed, then denied), A → server 1
    /// UDP 5000 (denied, then allowed).
    private func streams(_ lab: Lab) throws -> [Stream] {
        let (a, b) = (lab.a.namespace.namespace, lab.b.namespace.namespace)
        let senderA = try a.perform { try UDPSocket(bind: Self.a, port: 5000) }
        let senderB = try b.perform { try UDPSocket(bind: Self.b, port: 5000) }
        let (rejectsA, rejectsB) = try (a.perform { try ICMPv6Socket() }, b.perform { try ICMPv6Socket() })
        let receiver1 = try lab.server1.namespace.perform { try UDPSocket(bind: Self.server1, port: 5000) }
        let receiver2 = try lab.server2.namespace.perform { try UDPSocket(bind: Self.server2, port: 5000) }
        return [Stream(name: "B → server 2", sender: senderB, rejects: rejectsB, destination: Self.server2, port: 5000, receiver: receiver2),
                Stream(name: "B → server 1", sender: senderB, rejects: rejectsB, destination: Self.server1, port: 5000, receiver: receiver1),
                Stream(name: "A → server 1", sender: senderA, rejects: rejectsA, destination: Self.server1, port: 5000, receiver: receiver1)]
    }

    /// A reload that changes the policy: each packet meets the old policy or the new one, and
    /// after the first packet that meets the new one no later packet meets the old.
    private func checkReloadUnderProbes(_ lab: Lab) throws {
        let streams = try streams(lab)
        try lab.daemon.writeConfig(lab.config(Self.secondPolicy))
        let daemon = lab.daemon
        let pid = try XCTUnwrap(daemon.process).processIdentifier
        let started = ContinuousClock.now
        let outcomes = try probe(streams, during: {
            usleep(300_000)  // probes before the swap
            kill(pid, SIGHUP)
            try daemon.waitForNotification(timeout: .seconds(120)) { $0.contains("READY=1") }
        }, settled: { $0[1].refused.count >= 20 && $0[2].delivered.count >= 20 })
        print("reload under probes: \(ContinuousClock.now - started)")
        check(outcomes[0], .delivered, streams[0].name)
        check(outcomes[1], .deliveredThenRefused, streams[1].name)
        check(outcomes[2], .refusedThenDelivered, streams[2].name)
        let shown = try counters(lab)
        XCTAssertEqual(shown.rules.count, 3, "the new policy's rules")
        XCTAssertEqual(shown.rules[1], outcomes[2].delivered.count, "A's UDP rule counted each delivered probe")
    }

    /// Stopped and started again under the same probes: not one packet meets no policy.
    private func checkRestartUnderProbes(_ lab: Lab) throws {
        let streams = try streams(lab)
        let daemon = lab.daemon
        let started = ContinuousClock.now
        let outcomes = try probe(streams, during: {
            usleep(300_000)
            daemon.stop()
            usleep(300_000)  // probes with no daemon at all
            try daemon.start(readyWithin: .seconds(240))
        }, settled: { _ in true })
        print("restart under probes: \(ContinuousClock.now - started)")
        check(outcomes[0], .delivered, streams[0].name)
        check(outcomes[1], .refused, streams[1].name)
        check(outcomes[2], .delivered, streams[2].name)
        XCTAssertEqual(try lab.daemon.writes(), 0, "the restart adopted the policy without a write")
    }
}
