import Netlink
import Reconciler
import TestSupport
import XCTest

/// The reference evaluation's semantics, and the compiled representation agreeing with it.
final class PolicyTests: XCTestCase {
    let alice = IPv6Address("2001:db8:c::1")!, bob = IPv6Address("2001:db8:c::2")!, stranger = IPv6Address("2001:db8:c::99")!
    let server1 = IPv6Address("2001:db8:1::10")!, server2 = IPv6Address("2001:db8:1::20")!

    var clients: PolicyClients {
        PolicyClients(peers: [DesiredPeer(name: "alice", publicKey: WireGuardKey(bytes: [UInt8](repeating: 1, count: 32))!, allowedIPs: [IPPrefix("2001:db8:c::1/128")!]),
                              DesiredPeer(name: "bob", publicKey: WireGuardKey(bytes: [UInt8](repeating: 2, count: 32))!, allowedIPs: [IPPrefix("2001:db8:c::2/128")!])])
    }

    /// The example: alice reaches server 1 on TCP 22 only, bob everything.
    var example: DesiredPolicy {
        DesiredPolicy(clientToLAN: .deny, lanToClient: .replies, rules: [
            PolicyRule(source: .peers(["alice"]), destination: IPPrefix("2001:db8:1::10/128")!, proto: .tcp, ports: [PortRange(22, 22)], label: "alice"),
            PolicyRule(source: .peers(["bob"]), destination: IPPrefix("2001:db8:1::/64")!, label: "bob"),
        ])
    }

    func tcp(_ from: IPv6Address, _ to: IPv6Address, _ sport: UInt16, _ dport: UInt16, _ direction: PolicyPacket.Direction) -> PolicyPacket {
        PolicyPacket(direction: direction, source: from, destination: to, proto: 6, sourcePort: sport, destinationPort: dport)
    }

    func testTheExampleBothWays() throws {
        let policy = example, compiled = try policy.compile(clients: clients).get()
        let cases: [(PolicyPacket, PolicyVerdict)] = [
            (tcp(alice, server1, 40000, 22, .clientToLAN), .allowed(rule: 0)),
            (tcp(alice, server1, 40000, 23, .clientToLAN), .denied),
            (tcp(alice, server2, 40000, 22, .clientToLAN), .denied),
            (PolicyPacket(direction: .clientToLAN, source: alice, destination: server1, proto: 17, sourcePort: 1, destinationPort: 22), .denied),
            (tcp(bob, server2, 40000, 443, .clientToLAN), .allowed(rule: 1)),
            (PolicyPacket(direction: .clientToLAN, source: bob, destination: server1, proto: 58, icmpType: 128), .allowed(rule: 1)),
            (tcp(stranger, server1, 40000, 22, .clientToLAN), .denied),
            // replies: the packet reversed must be allowed (the server's source port is the rule's port).
            (tcp(server1, alice, 22, 40000, .lanToClient), .allowed(rule: 0)),
            (tcp(server1, alice, 23, 40000, .lanToClient), .denied),
            (tcp(server2, alice, 22, 40000, .lanToClient), .denied),
            (tcp(server2, bob, 9, 40000, .lanToClient), .allowed(rule: 1)),
            // An ICMPv6 error from server 1 to alice: some rule of alice for server 1 is enough.
            (PolicyPacket(direction: .lanToClient, source: server1, destination: alice, proto: 58, icmpType: 1), .allowed(rule: 0)),
            (PolicyPacket(direction: .lanToClient, source: server1, destination: alice, proto: 58, icmpType: 129), .denied),
            // And alice's (Packet Too Big, Port Unreachable) to server 1; not to server 2, for which she has none.
            (PolicyPacket(direction: .clientToLAN, source: alice, destination: server1, proto: 58, icmpType: 2), .allowed(rule: 0)),
            (PolicyPacket(direction: .clientToLAN, source: alice, destination: server1, proto: 58, icmpType: 1), .allowed(rule: 0)),
            (PolicyPacket(direction: .clientToLAN, source: alice, destination: server2, proto: 58, icmpType: 1), .denied),
            (PolicyPacket(direction: .clientToLAN, source: alice, destination: server1, proto: 58, icmpType: 128), .denied),
            // An error that quotes a packet server 1 did not send (forged about a third host).
            ({ var p = PolicyPacket(direction: .clientToLAN, source: alice, destination: server1, proto: 58, icmpType: 2); p.quotedSource = server2; return p }(), .denied),
        ]
        for (packet, expected) in cases {
            XCTAssertEqual(policy.evaluate(packet, peerOf: clients.peer(of:)), expected, "\(packet)")
            XCTAssertEqual(compiled.evaluate(packet), expected, "compiled: \(packet)")
        }
    }

    func testDefaults() throws {
        let packetIn = tcp(alice, server2, 1, 2, .clientToLAN), packetOut = tcp(server2, alice, 2, 1, .lanToClient)
        for clientToLAN in DesiredPolicy.ClientToLAN.allCases {
            for lanToClient in DesiredPolicy.LANToClient.allCases {
                let policy = DesiredPolicy(clientToLAN: clientToLAN, lanToClient: lanToClient, rules: [])
                let compiled = try policy.compile(clients: clients).get()
                let inVerdict = policy.evaluate(packetIn, peerOf: clients.peer(of:))
                let outVerdict = policy.evaluate(packetOut, peerOf: clients.peer(of:))
                XCTAssertEqual(inVerdict, clientToLAN == .allow ? .allowedByDefault : .denied)
                XCTAssertEqual(outVerdict, lanToClient == .allow || (lanToClient == .replies && clientToLAN == .allow) ? .allowedByDefault : .denied)
                XCTAssertEqual(compiled.evaluate(packetIn), inVerdict)
                XCTAssertEqual(compiled.evaluate(packetOut), outVerdict)
            }
        }
        XCTAssertTrue(try DesiredPolicy.allowAll.compile(clients: clients).get().allowsEverything)
    }

    func testSelectWord() throws {
        let compiled = try example.compile(clients: clients).get()
        XCTAssertEqual(compiled.selectWord(generation: 0), 2 | 2 << 2)
        XCTAssertEqual(compiled.selectWord(generation: 1), 1 | 2 | 2 << 2)
        XCTAssertEqual(try DesiredPolicy.allowAll.compile(clients: clients).get().selectWord(generation: 1), 1)
    }

    /// Peers that the same rules name share a class; the entry of a nested prefix gathers the
    /// rules of the prefixes around it, in rule order.
    func testClassesAndFlattening() throws {
        let policy = DesiredPolicy(clientToLAN: .deny, lanToClient: .allow, rules: [
            PolicyRule(source: .any, destination: IPPrefix("2001:db8:1::/48")!, proto: .icmpv6),
            PolicyRule(source: .peers(["alice", "bob"]), destination: IPPrefix("2001:db8:1::10/128")!, proto: .tcp, ports: [PortRange(22, 22), PortRange(80, 81)]),
        ])
        let compiled = try policy.compile(clients: clients).get()
        XCTAssertEqual(compiled.sources, [IPPrefix("2001:db8:c::1/128")!: 1, IPPrefix("2001:db8:c::2/128")!: 1])
        XCTAssertEqual(compiled.entries, [
            .init(policyClass: 0, destination: IPPrefix("2001:db8:1::/48")!): [.init(proto: 58, rule: 0, ports: .all)],
            .init(policyClass: 1, destination: IPPrefix("2001:db8:1::/48")!): [.init(proto: 58, rule: 0, ports: .all)],
            .init(policyClass: 1, destination: IPPrefix("2001:db8:1::10/128")!): [
                .init(proto: 58, rule: 0, ports: .all), .init(proto: 6, rule: 1, ports: PortRange(22, 22)), .init(proto: 6, rule: 1, ports: PortRange(80, 81)),
            ],
        ])
    }

    /// The programs probe at most eight destination lengths; a ninth is refused with its reason.
    func testAtMostEightDestinationLengths() throws {
        let rules = (0..<9).map { i in PolicyRule(source: .any, destination: IPPrefix(address: .v6(IPv6Address("2001:db8:1::")!), length: UInt8(120 + i))) }
        let problem = try XCTUnwrap(DesiredPolicy(clientToLAN: .deny, rules: rules).compile(clients: clients).failure)
        XCTAssertEqual(problem.description, "the rules' destinations use 9 different prefix lengths (/128, /127, /126, /125, /124, /123, /122, /121, /120); the datapath probes at most 8")
        XCTAssertEqual(try DesiredPolicy(clientToLAN: .deny, rules: Array(rules.prefix(8))).compile(clients: clients).get().lengths, [127, 126, 125, 124, 123, 122, 121, 120])
    }

    /// A policy at the rule limit compiles quickly: 4 096 rules, half of them for any peer, to
    /// distinct addresses and one /48, for peers in 5 classes. (Every class repeats the `any`
    /// rules' destinations: 51 classes here would need 106 000 entries, more than the maps hold.)
    func testLargePolicyCompilesQuickly() throws {
        var rules: [PolicyRule] = [PolicyRule(source: .any, destination: IPPrefix("2001:db8:1::/48")!, proto: .icmpv6)]
        var peers: [DesiredPeer] = []
        for i in 0..<100 {
            peers.append(DesiredPeer(name: "p\(i)", publicKey: WireGuardKey(bytes: [UInt8](repeating: 1, count: 32))!,
                                     allowedIPs: [IPPrefix(address: .v6(IPv6Address(high: 0x2001_0db8_000c_0000, low: UInt64(i + 1))), length: 128)]))
        }
        for i in 0..<4095 {
            let address = IPv6Address(high: 0x2001_0db8_0001_0000, low: UInt64(i + 1))
            let source: PolicyRule.Source = i % 2 == 0 ? .any : .peers(["p\(i % 10)"])
            rules.append(PolicyRule(source: source, destination: IPPrefix(address: .v6(address), length: 128), proto: .tcp, ports: [PortRange(22, 22)]))
        }
        let start = ContinuousClock.now
        let compiled = try DesiredPolicy(clientToLAN: .deny, rules: rules).compile(clients: PolicyClients(peers: peers)).get()
        let elapsed = ContinuousClock.now - start
        XCTAssertEqual(compiled.ruleCount, 4096)
        XCTAssertEqual(Set(compiled.sources.values).count, 6, "p1, p3, …, p9 have rules of their own; the rest only any's")
        XCTAssertLessThan(elapsed, .seconds(10), "\(elapsed)")
        print("compiled 4 096 rules for 100 peers (\(compiled.entries.count) entries) in \(elapsed)")
    }

    /// Within every configuration limit, 16 384 peers in 14 groups (peer i in group g when bit g
    /// of i is set: 16 383 rule sets) and 4 000 rules for any peer would be 65 million entries:
    /// refused from a count, before any entry is made (the review's case took 3 GB and a minute).
    func testEntriesAreCountedBeforeTheyAreMade() throws {
        var peers: [DesiredPeer] = []
        var members = [[String]](repeating: [], count: 14)
        for i in 0..<16_384 {
            peers.append(DesiredPeer(name: "p\(i)", publicKey: WireGuardKey(bytes: [UInt8](repeating: 1, count: 32))!,
                                     allowedIPs: [IPPrefix(address: .v6(IPv6Address(high: 0x2001_0db8_000c_0000, low: UInt64(i + 1))), length: 128)]))
            for g in 0..<14 where i & (1 << g) != 0 { members[g].append("p\(i)") }
        }
        var rules = (0..<14).map { g in
            PolicyRule(source: .peers(members[g].sorted()), destination: IPPrefix(address: .v6(IPv6Address(high: 0x2001_0db8_0001_0000, low: UInt64(0x1000 + g))), length: 128))
        }
        for i in 0..<4000 {
            rules.append(PolicyRule(source: .any, destination: IPPrefix(address: .v6(IPv6Address(high: 0x2001_0db8_0001_0000, low: UInt64(i + 1))), length: 128)))
        }
        let problem = try XCTUnwrap(DesiredPolicy(clientToLAN: .deny, rules: rules).compile(clients: PolicyClients(peers: peers)).failure)
        XCTAssertTrue(problem.description.hasPrefix("the rules compile to more than 65536 datapath entries (the maps hold 65536"), problem.description)
    }

    /// Thousands of random packets over hundreds of random rule sets: the compiled form says
    /// what the rules say, verdict and counted rule alike.
    func testCompiledAgreesWithTheRulesOnRandomPolicies() throws {
        var rng = SeededGenerator(seed: 17)
        var allowed = 0, checked = 0
        for round in 0..<300 {
            let random = RandomPolicy(ruleCount: Int.random(in: 0...12, using: &rng), using: &rng)
            let compiled: CompiledPolicy
            switch random.policy.compile(clients: random.clients) {
            case .success(let value): compiled = value
            case .failure: continue  // too many items for one entry: refused, nothing to compare
            }
            for _ in 0..<40 {
                let packet = random.packet(using: &rng)
                let expected = random.policy.evaluate(packet, peerOf: random.clients.peer(of:))
                XCTAssertEqual(compiled.evaluate(packet), expected, "round \(round): \(packet)\n\(random.policy.rules)")
                if expected.isAllowed { allowed += 1 }
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 10_000)
        // Both verdicts are common, or the comparison proves little.
        XCTAssertGreaterThan(allowed, checked / 10)
        XCTAssertLessThan(allowed, checked * 9 / 10)
    }

    /// `replies` with state: a LAN host answers what a client opened and opens nothing itself.
    func testRepliesRememberWhatClientsOpened() {
        let client = IPv6Address("2001:db8:c::1")!, server = IPv6Address("2001:db8:1::10")!
        let policy = DesiredPolicy(clientToLAN: .allow, lanToClient: .replies, rules: [])
        var flows = PolicyFlows()
        let peerOf: (IPv6Address) -> String? = { _ in "c" }
        func evaluate(_ packet: PolicyPacket) -> Bool { policy.evaluate(packet, peerOf: peerOf, flows: &flows).isAllowed }
        let answer = PolicyPacket(direction: .lanToClient, source: server, destination: client, proto: 17, sourcePort: 53, destinationPort: 5353)
        XCTAssertFalse(evaluate(answer), "no flow yet")
        XCTAssertTrue(evaluate(PolicyPacket(direction: .clientToLAN, source: client, destination: server, proto: 17, sourcePort: 5353, destinationPort: 53)))
        XCTAssertTrue(evaluate(answer))
        var other = answer
        other.sourcePort = 54
        XCTAssertFalse(evaluate(other))
        let syn = PolicyPacket(direction: .lanToClient, source: server, destination: client, proto: 6, sourcePort: 22, destinationPort: 1, tcpFlags: PolicyPacket.syn)
        XCTAssertFalse(evaluate(syn))
        var synAck = syn
        synAck.tcpFlags |= PolicyPacket.ack
        XCTAssertTrue(evaluate(synAck))
        let reply = PolicyPacket(direction: .lanToClient, source: server, destination: client, proto: 58, icmpType: 129, echoIdentifier: 3)
        XCTAssertFalse(evaluate(reply))
        XCTAssertTrue(evaluate(PolicyPacket(direction: .clientToLAN, source: client, destination: server, proto: 58, icmpType: 128, echoIdentifier: 3)))
        XCTAssertTrue(evaluate(reply))
        var request = reply
        request.icmpType = 128
        XCTAssertFalse(evaluate(request), "the LAN does not open echoes")
        request.icmpType = 1
        XCTAssertTrue(evaluate(request), "errors carry no state")
        XCTAssertTrue(evaluate(PolicyPacket(direction: .lanToClient, source: server, destination: client, proto: 59)), "nor do other protocols")
        // Without replies nothing is remembered.
        var none = PolicyFlows()
        let allow = DesiredPolicy(clientToLAN: .allow, lanToClient: .allow, rules: [])
        _ = allow.evaluate(PolicyPacket(direction: .clientToLAN, source: client, destination: server, proto: 17, sourcePort: 1, destinationPort: 2), peerOf: peerOf, flows: &none)
        XCTAssertEqual(none, PolicyFlows())
    }
}

private extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
