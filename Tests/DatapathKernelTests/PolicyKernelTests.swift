import CBPF
import Datapath
import Foundation
import Netlink
import Reconciler
import TestSupport
import XCTest

/// The access policy in the programs (bpf/policy.h): verdicts both ways, the reject message,
/// counters, generation swaps, agreement with the Swift reference on random policies, and the
/// per-packet cost.
///
/// Real traffic through the lab: client packets written to the TUN device, LAN frames sent by
/// the host to the gateway's MAC. LAN addresses are `RandomPolicy`'s (2001:db8:1::/48, hosts ::10
/// to ::17 of eight /64s, all resolved to the host's MAC); clients are 2001:db8:c::/48.
final class PolicyKernelTests: XCTestCase {
    static let tunnelSource = IPv6Address("2001:db8:ff::1")!
    static let lanSource = IPv6Address(Lab.gatewayAddress)!
    static let clientsPrefix = IPPrefix("2001:db8:c::/48")!
    static let lanWide = IPPrefix("2001:db8:1::/48")!

    let a = IPv6Address("2001:db8:c::1")!, b = IPv6Address("2001:db8:c::2")!
    let server1 = IPv6Address("2001:db8:1::10")!, server2 = IPv6Address("2001:db8:1::11")!

    private func gateway() throws -> (Lab, Datapath) {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath()
        try lab.attach(datapath)
        XCTAssertEqual(try datapath.synchronize(.clients, to: [Self.clientsPrefix: .redirect]), [:])
        XCTAssertEqual(try datapath.synchronize(.lan, to: [Self.lanWide: .redirect, IPPrefix(Lab.gatewayAddress)!: .pass]), [:])
        try datapath.configure(ICMPErrorSettings(lanSource: Self.lanSource, tunnelSource: Self.tunnelSource, intervalMilliseconds: 0))
        try lab.gateway.ip("-6", "route", "add", Self.lanWide.description, "dev", "lan0")
        try lab.gateway.ip("-6", "route", "add", Self.clientsPrefix.description, "dev", "wgt0")
        let hostMAC = lab.hostMAC.map { String(format: "%02x", $0) }.joined(separator: ":")
        // One batch: 64 neighbours, so redirect_neigh never waits for a solicitation.
        let batch = RandomPolicy.allLANAddresses.map { "neigh replace \($0) lladdr \(hostMAC) dev lan0 nud permanent" }.joined(separator: "\n") + "\n"
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("wgk-neigh-\(UInt32.random(in: 0...UInt32.max))").path
        try batch.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        try lab.gateway.ip("-batch", file)
        return (lab, datapath)
    }

    // MARK: packets

    /// An IPv6 packet for `packet` with a payload carrying `sequence` after the L4 header.
    static func bytes(_ packet: PolicyPacket, sequence: UInt32) -> [UInt8] {
        let tag = Packet.marker + withUnsafeBytes(of: sequence.bigEndian, Array.init)
        var l4: [UInt8]
        switch packet.proto {
        case 6:
            l4 = be16(packet.sourcePort) + be16(packet.destinationPort) + [0, 0, 0, 1, 0, 0, 0, 0, 0x50, packet.tcpFlags, 0xff, 0xff, 0, 0, 0, 0]
        case 17:
            l4 = be16(packet.sourcePort) + be16(packet.destinationPort) + be16(UInt16(8 + tag.count)) + [0, 0]
        case 58 where packet.icmpType < 128 && packet.hasQuote:
            // An error quotes an IPv6 header (payload length 0xffff: no reject quotes that).
            l4 = [packet.icmpType, 0, 0, 0, 0, 0, 0, 0, 0x60, 0, 0, 0, 0xff, 0xff, 59, 64]
                + (packet.quotedSource ?? packet.destination).bytes + packet.source.bytes
        case 58:
            l4 = [packet.icmpType, 0, 0, 0] + be16(packet.echoIdentifier) + [0, 0]
        default:
            l4 = []
        }
        let payload = l4 + tag
        var bytes: [UInt8] = [0x60, 0, 0, 0] + be16(UInt16(payload.count)) + [packet.proto, 64]
        bytes += packet.source.bytes + packet.destination.bytes + payload
        return bytes
    }

    static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }

    /// The sequence of a packet made by `bytes`, nil for anything else (rejects, ND, MLD).
    static func sequence(of packet: [UInt8]) -> UInt32? {
        guard packet.count >= 47, packet[0] >> 4 == 6 else { return nil }
        let offset: Int
        switch packet[6] {
        case 6: offset = 60
        case 17: offset = 48
        case 58 where packet[40] < 128 && packet.count >= 88 && packet[52] == 0xff && packet[53] == 0xff:
            offset = 88  // an error `bytes` made, after its quote
        case 58:
            guard packet[40] >= 128 || packet.count >= 48 + 7, packet[40] != 133, packet[40] < 135 || packet[40] > 137 else { return nil }
            offset = 48
        default: offset = 40
        }
        guard packet.count >= offset + 7, Array(packet[offset..<(offset + 3)]) == Packet.marker else { return nil }
        return packet[(offset + 3)..<(offset + 7)].reduce(0) { $0 << 8 | UInt32($1) }
    }

    func send(_ lab: Lab, _ packet: PolicyPacket, sequence: UInt32) throws {
        let bytes = Self.bytes(packet, sequence: sequence)
        if packet.direction == .clientToLAN {
            try lab.tun.write(bytes)
        } else {
            try lab.capture.send(Packet.ethernet(to: lab.lanMAC, from: lab.hostMAC, bytes))
        }
    }

    /// Sequences that came through (to the LAN host or out of the tunnel), and the rejects each side got.
    func received(_ lab: Lab, quiet: Int32 = 300) -> (through: Set<UInt32>, rejectsOnTunnel: [[UInt8]], rejectsOnLAN: [[UInt8]]) {
        var through = Set<UInt32>()
        var onTunnel: [[UInt8]] = [], onLAN: [[UInt8]] = []
        for packet in lab.tun.drain(quiet: quiet) {
            if packet.count >= 48, packet[6] == 58, packet[40] == 1, packet[41] == 1, IPv6Address(bytes: packet[8..<24]) == Self.tunnelSource {
                onTunnel.append(packet)
            } else if let s = Self.sequence(of: packet) { through.insert(s) }
        }
        for frame in lab.capture.drain(quiet: quiet) where frame.count > 14 && frame[12] == 0x86 && frame[13] == 0xdd {
            let packet = Array(frame[14...])
            if packet.count >= 48, packet[6] == 58, packet[40] == 1, packet[41] == 1, IPv6Address(bytes: packet[8..<24]) == Self.lanSource {
                onLAN.append(frame)
            } else if let s = Self.sequence(of: packet), IPv6Address(bytes: packet[8..<24]).map({ $0.high >> 48 == 0x2001 && ($0.high >> 16) & 0xffff_ffff == 0x0db8_000c }) ?? false {
                through.insert(s)
            }
        }
        return (through, onTunnel, onLAN)
    }

    func clients(_ names: [String: IPv6Address]) -> PolicyClients {
        PolicyClients(peers: names.sorted { $0.key < $1.key }.enumerated().map { i, entry in
            DesiredPeer(name: entry.key, publicKey: WireGuardKey(bytes: [UInt8](repeating: UInt8(i + 1), count: 32))!,
                        allowedIPs: [.host(.v6(entry.value))])
        })
    }

    func tcp(_ from: IPv6Address, _ to: IPv6Address, _ sport: UInt16, _ dport: UInt16, _ direction: PolicyPacket.Direction) -> PolicyPacket {
        PolicyPacket(direction: direction, source: from, destination: to, proto: 6, sourcePort: sport, destinationPort: dport)
    }

    // MARK: tests

    /// The issue's example: A reaches server 1 on TCP 22 only, B reaches everything; replies.
    func testExampleVerdictsRejectsAndCounters() throws {
        let (lab, datapath) = try gateway()
        let policy = DesiredPolicy(clientToLAN: .deny, lanToClient: .replies, rules: [
            PolicyRule(source: .peers(["a"]), destination: .host(.v6(server1)), proto: .tcp, ports: [PortRange(22, 22)], label: "a"),
            PolicyRule(source: .peers(["b"]), destination: Self.lanWide, label: "b"),
        ])
        let compiled = try policy.compile(clients: clients(["a": a, "b": b])).get()
        XCTAssertNil(try datapath.installedPolicy())
        XCTAssertEqual(try datapath.install(policy: compiled).generation, 1)
        XCTAssertEqual(try datapath.policyWord() & ~CompiledPolicy.seedMask, compiled.selectWord(generation: 1))
        XCTAssertEqual(try datapath.installedPolicy(), compiled, "read back as installed")

        let packets: [(PolicyPacket, Bool)] = [
            (tcp(a, server1, 40000, 22, .clientToLAN), true),
            (tcp(a, server1, 40000, 23, .clientToLAN), false),
            (tcp(a, server2, 40000, 22, .clientToLAN), false),
            (PolicyPacket(direction: .clientToLAN, source: a, destination: server1, proto: 17, sourcePort: 5, destinationPort: 22), false),
            (tcp(b, server2, 40000, 80, .clientToLAN), true),
            (PolicyPacket(direction: .clientToLAN, source: b, destination: server1, proto: 58, icmpType: 128), true),
            (tcp(server1, a, 22, 40000, .lanToClient), true),
            (tcp(server1, a, 23, 40000, .lanToClient), false),
            (tcp(server2, b, 443, 40000, .lanToClient), true),
            // a's Packet Too Big to server 1 (some rule of a's for it), not to server 2.
            (PolicyPacket(direction: .clientToLAN, source: a, destination: server1, proto: 58, icmpType: 2), true),
            // Unless it quotes a packet server 1 did not send: then it is an ICMPv6 message, which a's rule does not allow.
            ({ var p = PolicyPacket(direction: .clientToLAN, source: a, destination: server1, proto: 58, icmpType: 2); p.quotedSource = server2; return p }(), false),
            (PolicyPacket(direction: .clientToLAN, source: a, destination: server2, proto: 58, icmpType: 2), false),
        ]
        for (i, (packet, _)) in packets.enumerated() {
            XCTAssertEqual(policy.evaluate(packet, peerOf: clients(["a": a, "b": b]).peer(of:)).isAllowed, packets[i].1, "reference: \(packet)")
            try send(lab, packet, sequence: UInt32(i))
        }
        let result = received(lab)
        XCTAssertEqual(result.through, Set(packets.indices.filter { packets[$0].1 }.map(UInt32.init)))

        // Each denied client packet got Destination Unreachable code 1 quoting it, from the tunnel's source.
        // (Not the denied Packets Too Big: no error answers an error, RFC 4443 2.4 e.)
        XCTAssertEqual(result.rejectsOnTunnel.count, 3)
        for (reject, index) in zip(result.rejectsOnTunnel, [1, 2, 3]) {
            try ICMPError.check(reject, type: 1, code: 1, field: 0, from: Self.tunnelSource, to: a,
                                quoting: Self.bytes(packets[index].0, sequence: UInt32(index)))
        }
        XCTAssertEqual(result.rejectsOnLAN.count, 1)
        if let frame = result.rejectsOnLAN.first {
            XCTAssertEqual(Array(frame[0..<6]), lab.hostMAC)
            XCTAssertEqual(Array(frame[6..<12]), lab.lanMAC)
            try ICMPError.check(Array(frame[14...]), type: 1, code: 1, field: 0, from: Self.lanSource, to: server1,
                                quoting: Self.bytes(packets[7].0, sequence: 7))
        }
        let counters = try datapath.counters()
        XCTAssertEqual(counters.policyDenied, 6)
        XCTAssertEqual(counters.prohibited, 4, "no error answers an error (RFC 4443 2.4 e)")
        let perRule = try datapath.policyCounters(ruleCount: 2)
        XCTAssertEqual(perRule.clientToLANDenied, 5)
        XCTAssertEqual(perRule.lanToClientDenied, 1)
        XCTAssertEqual(perRule.rules, [3, 3])
    }

    /// What no compiled policy holds reads back as `inconsistent`, so the daemon reinstalls it:
    /// the fourth LAN mode in the select word (the programs then apply the rules alone and let
    /// LAN hosts open connections under `replies`), an unknown bit, a length's mask changed, an
    /// item whose port range ends before it starts (the review found each read back as fine).
    func testReadBackTellsTamperedMapsFromAPolicy() throws {
        let (_, datapath) = try gateway()
        let policy = DesiredPolicy(clientToLAN: .deny, lanToClient: .replies, rules: [
            PolicyRule(source: .peers(["a"]), destination: .host(.v6(server1)), proto: .tcp, ports: [PortRange(22, 22)], label: "a"),
        ])
        let compiled = try policy.compile(clients: clients(["a": a])).get()
        try datapath.install(policy: compiled)
        let generation = try datapath.policyWord() & 1
        let pins = datapath.pinDirectory
        func le32(_ value: UInt32) -> [String] { withUnsafeBytes(of: value.littleEndian) { $0.map { String($0) } } }
        func update(_ map: String, key: UInt32, _ value: [String]) throws {
            try shell(["bpftool", "map", "update", "pinned", "\(pins)/\(map)", "key"] + le32(key) + ["value"] + value)
        }
        func value(_ map: String, key: UInt32) throws -> [String] {
            let text = try shell(["bpftool", "-j", "map", "lookup", "pinned", "\(pins)/\(map)", "key"] + le32(key))
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            return try XCTUnwrap(object["value"] as? [String]).map { String(UInt8($0.dropFirst(2), radix: 16)!) }
        }
        let word = try datapath.policyWord()
        for tampered in [word | CompiledPolicy.lanMask, word | 0x1_0000, word ^ 1 << CompiledPolicy.seedShift] {
            try update("policy_select", key: 0, le32(tampered))
            XCTAssertEqual(try datapath.installedPolicy(), CompiledPolicy.inconsistent, "word \(tampered)")
            try update("policy_select", key: 0, le32(word))
            XCTAssertEqual(try datapath.installedPolicy(), compiled)
        }
        // policy_info: the first length's mask (bytes 32-47) zeroed.
        let info = try value("policy_info", key: generation)
        var masked = info
        for i in 32..<48 { masked[i] = "0" }
        try update("policy_info", key: generation, masked)
        XCTAssertEqual(try datapath.installedPolicy(), CompiledPolicy.inconsistent, "mask")
        try update("policy_info", key: generation, info)
        XCTAssertEqual(try datapath.installedPolicy(), compiled)
        // The entry's one item (tcp 22-22): its last port 0.
        let dump = try shell("bpftool", "-j", "map", "dump", "pinned", "\(pins)/policy_items")
        let items = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [[String: Any]])
        let used = items.compactMap { item -> (UInt32, [String])? in
            guard let key = item["key"] as? [String], let bytes = item["value"] as? [String], bytes[0] == "0x06" else { return nil }
            return (key.reversed().reduce(0) { $0 << 8 | UInt32($1.dropFirst(2), radix: 16)! }, bytes.map { String(UInt8($0.dropFirst(2), radix: 16)!) })
        }
        XCTAssertEqual(used.count, 1)
        var item = used[0].1
        (item[6], item[7]) = ("0", "0")
        try update("policy_items", key: used[0].0, item)
        XCTAssertEqual(try datapath.installedPolicy(), CompiledPolicy.inconsistent, "item")
        try datapath.install(policy: compiled)
        XCTAssertEqual(try datapath.installedPolicy(), compiled, "a new generation repairs it")
    }

    /// A restart adopts the pinned maps: the policy is still live, read back the same, and
    /// enforced without a moment's gap (nothing is written).
    func testRestartKeepsThePolicy() throws {
        let (lab, datapath) = try gateway()
        let policy = DesiredPolicy(clientToLAN: .deny, lanToClient: .deny, rules: [
            PolicyRule(source: .any, destination: Self.lanWide, proto: .udp, ports: [PortRange(53, 53)], label: "any"),
        ])
        let compiled = try policy.compile(clients: clients(["a": a])).get()
        try datapath.install(policy: compiled)
        let word = try datapath.policyWord()
        let restarted = try lab.datapath()
        XCTAssertEqual(restarted.recreatedMaps, [])
        XCTAssertEqual(try restarted.policyWord(), word)
        XCTAssertEqual(try restarted.installedPolicy(), compiled)
        let dns = PolicyPacket(direction: .clientToLAN, source: a, destination: server2, proto: 17, sourcePort: 5353, destinationPort: 53)
        try send(lab, dns, sequence: 1)
        try send(lab, tcp(a, server2, 40000, 53, .clientToLAN), sequence: 2)
        try send(lab, tcp(server2, a, 53, 40000, .lanToClient), sequence: 3)
        XCTAssertEqual(received(lab).through, [1])
        XCTAssertEqual(try restarted.policyCounters(ruleCount: 1).rules, [1])
    }

    /// A swap never lets through what both policies deny, nor drops what both allow, with
    /// probes flowing while the generations alternate; each swap starts from zeroed counters.
    func testSwapsHaveNoWindow() throws {
        let (lab, datapath) = try gateway()
        let peers = clients(["a": a])
        let narrow = DesiredPolicy(clientToLAN: .deny, lanToClient: .allow, rules: [
            PolicyRule(source: .peers(["a"]), destination: .host(.v6(server1)), proto: .tcp, ports: [PortRange(22, 22)], label: "a"),
        ])
        var wide = narrow
        wide.rules.append(PolicyRule(source: .any, destination: .host(.v6(server1)), proto: .tcp, ports: [PortRange(80, 80)], label: "any"))
        let compiled = [try narrow.compile(clients: peers).get(), try wide.compile(clients: peers).get()]
        try datapath.install(policy: compiled[0])

        let allowed = tcp(a, server1, 40000, 22, .clientToLAN), denied = tcp(a, server1, 40000, 23, .clientToLAN)
        var sequence: UInt32 = 0
        var expected = Set<UInt32>()
        for swap in 0..<40 {
            for _ in 0..<25 {
                try send(lab, allowed, sequence: sequence)
                expected.insert(sequence)
                try send(lab, denied, sequence: sequence + 1)
                sequence += 2
            }
            try datapath.install(policy: compiled[(swap + 1) % 2])
        }
        let result = received(lab)
        XCTAssertEqual(result.through, expected, "every allowed probe through, no denied one")
        XCTAssertEqual(try datapath.counters().policyDenied, UInt64(sequence / 2))

        // After a swap, the live generation's counters start from zero.
        try datapath.install(policy: compiled[1])
        try send(lab, allowed, sequence: 1_000_000)
        _ = received(lab)
        XCTAssertEqual(try datapath.policyCounters(ruleCount: 2).rules, [1, 0])

        // No policy: everything through again.
        try datapath.install(policy: nil)
        XCTAssertEqual(try datapath.policyWord() & ~CompiledPolicy.generationBit, 0)
        try send(lab, denied, sequence: 2_000_000)
        XCTAssertEqual(received(lab).through, [2_000_000])
    }

    /// An upgrade that changes some policy maps' definitions (value sizes: `policy_info`,
    /// `policy_rules`) recreates them; the programs of the previous build stay attached until the
    /// new ones are, and keep the maps they were loaded with. Until then, installing into the
    /// reused maps (the select word, sources, items) must not change what the attached programs
    /// decide: they must go on with the policy in force, never a mixture of two.
    func testAnUpgradeThatRecreatesSomePolicyMapsLeavesTheAttachedProgramsPolicyAlone() throws {
        let (lab, datapath) = try gateway()
        let peers = clients(["a": a])
        let old = DesiredPolicy(clientToLAN: .deny, lanToClient: .allow, rules: [
            PolicyRule(source: .any, destination: .host(.v6(server1)), proto: .tcp, ports: [PortRange(22, 22)], label: "ssh"),
        ])
        let now = DesiredPolicy(clientToLAN: .deny, lanToClient: .allow, rules: [
            PolicyRule(source: .any, destination: .host(.v6(server2)), proto: .tcp, ports: [PortRange(80, 80)], label: "web"),
        ])
        let compiledNow = try now.compile(clients: peers).get()
        try datapath.install(policy: try old.compile(clients: peers).get())
        try datapath.install(policy: compiledNow)
        let ssh = tcp(a, server1, 40000, 22, .clientToLAN)
        try send(lab, ssh, sequence: 1)
        XCTAssertEqual(received(lab).through, [], "the policy in force denies it")

        // The previous build's pins of two maps, with other value sizes than this build's.
        for (name, size) in [("policy_info", UInt32(156)), ("policy_rules", UInt32(28))] {
            let path = "\(lab.pinRoot)/wgt0/\(name)"
            XCTAssertEqual(unlink(path), 0)
            let fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, name, 4, size, name == "policy_info" ? 2 : 2 << 17, nil)
            XCTAssertGreaterThanOrEqual(fd, 0)
            XCTAssertEqual(bpf_obj_pin(fd, path), 0)
            close(fd)
        }
        let upgraded = try lab.datapath()
        XCTAssertEqual(Set(upgraded.recreatedMaps), ["policy_select", "policy_info", "policy_sources", "policy_source_prefixes_0",
                                                     "policy_source_prefixes_1", "policy_rules", "policy_items", "policy_counters",
                                                     "policy_fragments"], "the policy's maps are recreated together")
        // What the daemon does before it attaches the new programs (`ensurePolicy`).
        XCTAssertNotEqual(try upgraded.installedPolicy(), compiledNow)
        try upgraded.install(policy: compiledNow)
        // The previous build's programs are still the attached ones.
        try send(lab, ssh, sequence: 2)
        XCTAssertEqual(received(lab).through, [], "the attached programs let through what the policy in force denies")
        try lab.attach(upgraded)
        try send(lab, ssh, sequence: 3)
        try send(lab, tcp(a, server2, 40000, 80, .clientToLAN), sequence: 4)
        XCTAssertEqual(received(lab).through, [4])
    }

    /// The programs' verdicts against `DesiredPolicy.evaluate` on random policies and packets.
    func testRandomPoliciesAgreeWithTheReference() throws {
        let (lab, datapath) = try gateway()
        var rng = SeededGenerator(seed: 1717)
        var compared = 0, allowedCount = 0, rounds = 0
        // What `replies` remembers, across rounds as the map does (the test is far shorter
        // than the flows' 120 s and their 65 536 entries).
        var flows = PolicyFlows()
        while rounds < 24 {
            let random = RandomPolicy(ruleCount: Int.random(in: 1...12, using: &rng), using: &rng)
            guard case .success(let compiled) = random.policy.compile(clients: random.clients) else { continue }
            rounds += 1
            try datapath.install(policy: compiled)
            XCTAssertEqual(try datapath.installedPolicy(), compiled)
            var expected = Set<UInt32>()
            var ruleCounts = [UInt64](repeating: 0, count: random.policy.rules.count)
            var packets: [UInt32: PolicyPacket] = [:]
            // The clients' packets first, all through the datapath before the LAN's: a LAN
            // answer finds the flow its client opened.
            let generated = (0..<150).map { _ in random.packet(using: &rng) }
            let ordered = generated.filter { $0.direction == .clientToLAN } + generated.filter { $0.direction == .lanToClient }
            let clientCount = generated.count { $0.direction == .clientToLAN }
            var through = Set<UInt32>()
            for (i, packet) in ordered.enumerated() {
                if i == clientCount { through.formUnion(received(lab, quiet: 200).through) }
                let sequence = UInt32(rounds * 1000 + i)
                let verdict = random.policy.evaluate(packet, peerOf: random.clients.peer(of:), flows: &flows)
                if verdict.isAllowed { expected.insert(sequence) }
                if case .allowed(let rule) = verdict { ruleCounts[rule] += 1 }
                packets[sequence] = packet
                try send(lab, packet, sequence: sequence)
            }
            through.formUnion(received(lab, quiet: 200).through)
            for sequence in expected.symmetricDifference(through).sorted().prefix(5) {
                XCTFail("round \(rounds), \(expected.contains(sequence) ? "dropped" : "let through"): \(packets[sequence]!)\nrules: \(random.policy.rules)\nlan_to_client: \(random.policy.lanToClient)")
            }
            XCTAssertEqual(try datapath.policyCounters(ruleCount: random.policy.rules.count).rules, ruleCounts, "round \(rounds)")
            compared += packets.count
            allowedCount += expected.count
        }
        XCTAssertEqual(compared, 3600)
        XCTAssertGreaterThan(allowedCount, compared / 10)
        XCTAssertLessThan(allowedCount, compared * 9 / 10)
    }

    /// Both programs by BPF_PROG_TEST_RUN at 10 000 clients and 1 000 rules (100 groups of 100
    /// peers, 10 rules each): what a policy adds to an allowed packet and to a denied one, each
    /// against the same packet redirected by the same program with no policy installed.
    ///
    /// tunnel_ingress expects a bare IPv6 packet, and a test run hands it the frame as given after
    /// eth_type_trans has read bytes 12-13 as the protocol: there the IPv6 header holds bytes 4-5
    /// of the source, so these clients live in 2001:db8:86dd::/48 and the bare packet passes
    /// for IPv6. lan_ingress decrements the hop limit, so it runs 250 times a call from 255.
    /// A run of tunnel_ingress grows the skb's head (the placeholder MAC header), so a second run
    /// on the same skb would take another path: it is measured twice, 250 times a call in a build
    /// that stops before it changes the packet (`measuringProgram`, the issue's figure: warm, as
    /// lan_ingress's and as a gateway under load runs it), and once a call as deployed (its
    /// code and the tables' lines cold after each system call; `without` is about 60 ns more than
    /// warm, and the policy's share grows by 10-15 ns).
    /// No error is built for a denied packet here (no error sources): the figure is the verdict's.
    func testPerPacketCost() throws {
        let (lab, datapath) = try gateway()
        try datapath.configure(ICMPErrorSettings(intervalMilliseconds: 0))
        var clientEntries: [IPPrefix: PrefixAction] = [Self.clientsPrefix: .redirect]
        var peers: [DesiredPeer] = []
        for i in 0..<10_000 {
            let address = IPv6Address(high: 0x2001_0db8_86dd_0000, low: UInt64(i + 1))
            clientEntries[.host(.v6(address))] = .redirect
            peers.append(DesiredPeer(name: "p\(i)", publicKey: WireGuardKey(bytes: [UInt8](repeating: 1, count: 32))!, allowedIPs: [.host(.v6(address))]))
        }
        XCTAssertEqual(try datapath.synchronize(.clients, to: clientEntries), [:])
        var rules: [PolicyRule] = []
        for group in 0..<100 {
            let members = (0..<100).map { "p\(group * 100 + $0)" }.sorted()
            for r in 0..<10 {
                // Server ::10 of subnet r (in 2001:db8:1::/48 as far as the lab resolves), and /64s beyond.
                let destination = r < 8 ? IPPrefix(address: .v6(RandomPolicy.allLANAddresses[r * 8]), length: 128)
                                        : IPPrefix("2001:db8:1:\(group + 0x100)::/64")!
                rules.append(PolicyRule(source: .peers(members), destination: destination, proto: .tcp,
                                        ports: [PortRange(22, 22), PortRange(443, 443), PortRange(8000, 8080)], label: "g\(group)"))
            }
        }
        let policy = DesiredPolicy(clientToLAN: .deny, lanToClient: .replies, rules: rules)
        let clients = PolicyClients(peers: peers)
        let compiled = try policy.compile(clients: clients).get()
        XCTAssertEqual(compiled.ruleCount, 1000)
        try datapath.install(policy: compiled)
        XCTAssertEqual(try datapath.installedPolicy(), compiled, "10 000 sources and \(compiled.entries.count) entries read back")

        let lanProgram = bpf_obj_get("\(datapath.pinDirectory)/lan_ingress")
        let tunnelProgram = bpf_obj_get("\(datapath.pinDirectory)/tunnel_ingress")
        let warmTunnelProgram = try measuringProgram("tunnel_ingress", pinDirectory: datapath.pinDirectory)
        XCTAssertGreaterThanOrEqual(lanProgram, 0)
        XCTAssertGreaterThanOrEqual(tunnelProgram, 0)
        defer { close(lanProgram); close(tunnelProgram); close(warmTunnelProgram) }
        // Peer p4321 and server ::10 of subnet 0 (group 43's rules 430-437, ports 22, 443, 8000-8080).
        let client = IPv6Address(high: 0x2001_0db8_86dd_0000, low: 4322)
        let server = RandomPolicy.allLANAddresses[0]
        struct Kind {
            var label: String, packet: PolicyPacket, program: Int32, runs: Int32, calls: Int, allowed: Bool
        }
        let kinds = [
            Kind(label: "lan_ingress, allowed (reply from 8080)", packet: tcp(server, client, 8080, 40000, .lanToClient),
                 program: lanProgram, runs: 250, calls: 400, allowed: true),
            Kind(label: "lan_ingress, denied (from 9999)", packet: tcp(server, client, 9999, 40000, .lanToClient),
                 program: lanProgram, runs: 250, calls: 400, allowed: false),
        ] + [(warmTunnelProgram, "tunnel_ingress", Int32(250), 400), (tunnelProgram, "tunnel_ingress once a call", 1, 20_000)].flatMap {
            (program, name, runs, calls) in
            [(22, "to 22", true), (8080, "to 8080, the entry's third item", true), (23, "to 23", false)].map { port, what, allowed in
                Kind(label: "\(name), \(allowed ? "allowed" : "denied") (\(what))", packet: tcp(client, server, 40000, UInt16(port), .clientToLAN),
                     program: program, runs: runs, calls: calls, allowed: allowed)
            }
        }
        for kind in kinds {
            XCTAssertEqual(policy.evaluate(kind.packet, peerOf: clients.peer(of:)) != .denied, kind.allowed, kind.label)
        }
        func frame(_ kind: Kind) -> [UInt8] {
            var packet = Self.bytes(kind.packet, sequence: 1)
            packet[7] = 255
            return kind.program == lanProgram ? Packet.ethernet(to: [0, 0, 0, 0, 0, 0], from: lab.hostMAC, packet) : packet
        }
        // ns per run, averaged over the calls but the slowest tenth (interrupted ones; a single
        // run's duration comes in steps of about 10 ns here, so a median would too); every
        // call's verdict checked.
        func cost(_ kind: Kind, expecting verdict: Int) -> Int {
            let input = frame(kind)
            var durations: [UInt32] = []
            durations.reserveCapacity(kind.calls)
            var wrong = 0
            for _ in 0..<kind.calls {
                let (result, retval, duration, _) = programTestRun(kind.program, input, repeat: kind.runs)
                if result != 0 || retval != verdict { wrong += 1 }
                durations.append(duration)
            }
            XCTAssertEqual(wrong, 0, "\(kind.label): calls without verdict \(verdict)")
            let kept = durations.sorted().prefix(kind.calls * 9 / 10)
            return Int((kept.reduce(0.0) { $0 + Double($1) } / Double(kept.count)).rounded())
        }
        // The issue's target is 30 ns; measured warm 16-25 ns here on a quiet machine
        // (BENCHMARKS.md). In the kernel tier, after a hundred tests (probably the kernel tearing
        // down their namespaces), the same build measures up to 51 ns warm and 73 once a call, so
        // the bounds leave that room: a hash-map lookup (~30 ns here) creeping back in would still
        // cross the warm one on a quiet machine. The once-a-call figures (26-40 ns quiet) only
        // catch a gross regression.
        func bound(_ kind: Kind) -> Int { kind.program == tunnelProgram ? 100 : 55 }
        // Interleaved trials, the best of each: the machine is shared. A whole measurement can
        // still fall in a busy spell (every figure 1.5-2 times its quiet value, as right after a
        // build or beside a test tier): then it is measured again, up to three times.
        var added: [Int] = []
        for attempt in 1...3 {
            let trials = 5
            var without = [[Int]](repeating: [], count: kinds.count), with = without
            for _ in 0..<trials {
                try datapath.install(policy: nil)
                for (i, kind) in kinds.enumerated() { without[i].append(cost(kind, expecting: 7)) }
                try datapath.install(policy: compiled)
                for (i, kind) in kinds.enumerated() { with[i].append(cost(kind, expecting: kind.allowed ? 7 : 2)) }
            }
            var lines: [String] = []
            added = []
            for (i, kind) in kinds.enumerated() {
                added.append(with[i].min()! - without[i].min()!)
                lines.append("\(kind.label): without \(without[i]) ns, with \(with[i]) ns, added \(added[i]) ns/packet")
            }
            print("policy cost, 10 000 clients, 1 000 rules (measurement \(attempt)):\n" + lines.joined(separator: "\n"))
            if kinds.indices.allSatisfy({ added[$0] < bound(kinds[$0]) }) { break }
        }
        XCTAssertGreaterThan(try datapath.policyCounters(ruleCount: 1000).rules[430], 0)
        XCTAssertGreaterThan(try datapath.policyCounters(ruleCount: 1000).lanToClientDenied, 0)
        XCTAssertGreaterThan(try datapath.policyCounters(ruleCount: 1000).clientToLANDenied, 0)
        for (i, kind) in kinds.enumerated() { XCTAssertLessThan(added[i], bound(kind), kind.label) }
    }

    /// `lan_to_client: replies` by BPF_PROG_TEST_RUN of both programs (client addresses in
    /// 2001:db8:86dd::/48 for tunnel_ingress, see testPerPacketCost): a LAN host answers a
    /// client's UDP flow and echo request but opens nothing (TCP SYN, UDP or echo reply without
    /// a flow, echo request), with the rules still deciding what the client may reach; each
    /// verdict also the stateful reference's.
    func testRepliesRememberWhatClientsOpened() throws {
        let (_, datapath) = try gateway()
        try datapath.configure(ICMPErrorSettings(intervalMilliseconds: 0))  // a denied packet is dropped (2)
        let client = IPv6Address("2001:db8:86dd::7")!
        XCTAssertEqual(try datapath.synchronize(.clients, to: [Self.clientsPrefix: .redirect, .host(.v6(client)): .redirect]), [:])
        let policy = DesiredPolicy(clientToLAN: .deny, lanToClient: .replies, rules: [
            PolicyRule(source: .peers(["c"]), destination: .host(.v6(server1)), proto: .udp, ports: [PortRange(53, 53)], label: "c"),
            PolicyRule(source: .peers(["c"]), destination: .host(.v6(server1)), proto: .tcp, ports: [PortRange(22, 22)], label: "c"),
            PolicyRule(source: .peers(["c"]), destination: .host(.v6(server1)), proto: .icmpv6, label: "c"),
        ])
        let peers = clients(["c": client])
        try datapath.install(policy: try policy.compile(clients: peers).get())
        let lanProgram = bpf_obj_get("\(datapath.pinDirectory)/lan_ingress")
        let tunnelProgram = bpf_obj_get("\(datapath.pinDirectory)/tunnel_ingress")
        defer { close(lanProgram); close(tunnelProgram) }
        var flows = PolicyFlows()
        func udp(_ direction: PolicyPacket.Direction, _ clientPort: UInt16, _ lanPort: UInt16) -> PolicyPacket {
            direction == .clientToLAN
                ? PolicyPacket(direction: direction, source: client, destination: server1, proto: 17, sourcePort: clientPort, destinationPort: lanPort)
                : PolicyPacket(direction: direction, source: server1, destination: client, proto: 17, sourcePort: lanPort, destinationPort: clientPort)
        }
        func echo(_ direction: PolicyPacket.Direction, type: UInt8, id: UInt16) -> PolicyPacket {
            PolicyPacket(direction: direction, source: direction == .clientToLAN ? client : server1,
                         destination: direction == .clientToLAN ? server1 : client, proto: 58, icmpType: type, echoIdentifier: id)
        }
        func segment(flags: UInt8, port: UInt16 = 22) -> PolicyPacket {
            PolicyPacket(direction: .lanToClient, source: server1, destination: client, proto: 6, sourcePort: port, destinationPort: 40000, tcpFlags: flags)
        }
        let steps: [(String, PolicyPacket, Bool)] = [
            ("UDP answer before the client asked", udp(.lanToClient, 5353, 53), false),
            ("the client's DNS query", udp(.clientToLAN, 5353, 53), true),
            ("its answer", udp(.lanToClient, 5353, 53), true),
            ("an answer from another port", udp(.lanToClient, 5353, 54), false),
            ("an answer to another client port", udp(.lanToClient, 5354, 53), false),
            ("a query the rules deny opens nothing", udp(.clientToLAN, 5355, 54), false),
            ("so nothing comes back", udp(.lanToClient, 5355, 54), false),
            ("echo reply before a request", echo(.lanToClient, type: 129, id: 7), false),
            ("the client's echo request", echo(.clientToLAN, type: 128, id: 7), true),
            ("its reply", echo(.lanToClient, type: 129, id: 7), true),
            ("a reply with another identifier", echo(.lanToClient, type: 129, id: 8), false),
            ("an echo request from the LAN", echo(.lanToClient, type: 128, id: 7), false),
            ("a LAN SYN to the client", segment(flags: PolicyPacket.syn), false),
            ("a LAN SYN-ACK from 22", segment(flags: PolicyPacket.syn | PolicyPacket.ack), true),
            ("a LAN ACK from 22", segment(flags: PolicyPacket.ack), true),
            ("a LAN ACK from 23 (no rule)", segment(flags: PolicyPacket.ack, port: 23), false),
            ("an error about the client's traffic", echo(.lanToClient, type: 1, id: 0), true),
        ]
        for (label, packet, allowed) in steps {
            XCTAssertEqual(policy.evaluate(packet, peerOf: peers.peer(of:), flows: &flows).isAllowed, allowed, "reference: \(label)")
            var bytes = Self.bytes(packet, sequence: 1)
            bytes[7] = 255
            let toLAN = packet.direction == .clientToLAN
            let frame = toLAN ? bytes : Packet.ethernet(to: [0, 0, 0, 0, 0, 0], from: [2, 0, 0, 0, 0, 1], bytes)
            let (result, verdict, _, _) = programTestRun(toLAN ? tunnelProgram : lanProgram, frame, repeat: 1)
            XCTAssertEqual(result, 0)
            XCTAssertEqual(verdict, allowed ? 7 : 2, label)
        }
        let counters = try datapath.policyCounters(ruleCount: 3)
        XCTAssertEqual(counters.lanToClientDenied, 9)
        XCTAssertEqual(counters.clientToLANDenied, 1)
    }

    /// The later fragments of an allowed datagram pass under the rule its first fragment met
    /// (they carry no ports for a rule to match), both ways; those of another datagram, or whose
    /// first fragment was denied or never seen, meet the rules as before. The stateful reference
    /// agrees on each, and the rule's counter counts them.
    func testLaterFragmentsFollowTheirFirst() throws {
        let (_, datapath) = try gateway()
        try datapath.configure(ICMPErrorSettings(intervalMilliseconds: 0))
        let client = IPv6Address("2001:db8:86dd::7")!
        XCTAssertEqual(try datapath.synchronize(.clients, to: [Self.clientsPrefix: .redirect, .host(.v6(client)): .redirect]), [:])
        let peers = clients(["c": client])
        let policy = DesiredPolicy(clientToLAN: .deny, lanToClient: .replies, rules: [
            PolicyRule(source: .peers(["c"]), destination: .host(.v6(server1)), proto: .udp, ports: [PortRange(53, 53)], label: "c"),
        ])
        try datapath.install(policy: try policy.compile(clients: peers).get())
        let lanProgram = bpf_obj_get("\(datapath.pinDirectory)/lan_ingress")
        let tunnelProgram = bpf_obj_get("\(datapath.pinDirectory)/tunnel_ingress")
        defer { close(lanProgram); close(tunnelProgram) }
        /// A UDP datagram's first fragment (its header and 8 bytes: 16 bytes of data) or a later
        /// one (16 bytes of data at offset 16, or at `offset` eight-byte units).
        func piece(_ packet: PolicyPacket, id: UInt32, first: Bool, offset: Int = 2) -> (PolicyPacket, [UInt8]) {
            var described = packet
            described.fragmentID = id
            described.isFirstFragment = first
            described.fragmentOffset = first ? 0 : offset * 8
            described.fragmentLength = 16
            let whole = Self.bytes(packet, sequence: 1)
            var fixed = Array(whole[0..<40])
            fixed[6] = 44
            fixed[7] = 255
            let payload = first ? Array((whole[40...] + [UInt8](repeating: 0, count: 16)).prefix(16)) : [UInt8](repeating: 0xab, count: 16)
            if !first {
                described.proto = 44
                (described.sourcePort, described.destinationPort) = (0, 0)
            }
            let header = [17, 0] + Self.be16(UInt16(first ? 0 : offset) << 3 | 1) + withUnsafeBytes(of: id.bigEndian, Array.init)
            let length = header.count + payload.count
            (fixed[4], fixed[5]) = (UInt8(length >> 8), UInt8(length & 0xff))
            return (described, fixed + header + payload)
        }
        func query(_ port: UInt16) -> PolicyPacket {
            PolicyPacket(direction: .clientToLAN, source: client, destination: server1, proto: 17, sourcePort: 5353, destinationPort: port)
        }
        func answer(_ port: UInt16) -> PolicyPacket {
            PolicyPacket(direction: .lanToClient, source: server1, destination: client, proto: 17, sourcePort: port, destinationPort: 5353)
        }
        let steps: [(String, (PolicyPacket, [UInt8]), Bool)] = [
            ("a later fragment before any first", piece(query(53), id: 7, first: false), false),
            ("the first fragment of a DNS query", piece(query(53), id: 7, first: true), true),
            ("its later fragment", piece(query(53), id: 7, first: false), true),
            ("its later fragment again (a retransmission, or the third)", piece(query(53), id: 7, first: false), true),
            ("a later fragment overlapping the first's data (offset 8 < 16)", piece(query(53), id: 7, first: false, offset: 1), false),
            ("a later fragment right after it (offset 16)", piece(query(53), id: 7, first: false, offset: 2), true),
            ("a later fragment of another datagram", piece(query(53), id: 8, first: false), false),
            ("the first fragment of a query to port 54 (denied)", piece(query(54), id: 9, first: true), false),
            ("its later fragment", piece(query(54), id: 9, first: false), false),
            ("the first fragment of the answer (within the flow)", piece(answer(53), id: 70, first: true), true),
            ("its later fragment", piece(answer(53), id: 70, first: false), true),
            ("a later fragment of another answer", piece(answer(53), id: 71, first: false), false),
            ("the client's id 70 is not the LAN host's", piece(query(53), id: 70, first: false), false),
        ]
        func verdictOf(_ piece: (PolicyPacket, [UInt8])) -> Int {
            let toLAN = piece.0.direction == .clientToLAN
            let frame = toLAN ? piece.1 : Packet.ethernet(to: [0, 0, 0, 0, 0, 0], from: [2, 0, 0, 0, 0, 1], piece.1)
            return programTestRun(toLAN ? tunnelProgram : lanProgram, frame, repeat: 1).1
        }
        var flows = PolicyFlows()
        for (label, (packet, bytes), allowed) in steps {
            let toLAN = packet.direction == .clientToLAN
            let frame = toLAN ? bytes : Packet.ethernet(to: [0, 0, 0, 0, 0, 0], from: [2, 0, 0, 0, 0, 1], bytes)
            let (result, verdict, _, _) = programTestRun(toLAN ? tunnelProgram : lanProgram, frame, repeat: 1)
            XCTAssertEqual(result, 0)
            XCTAssertEqual(verdict, allowed ? 7 : 2, label)
            XCTAssertEqual(policy.evaluate(packet, peerOf: peers.peer(of:), flows: &flows).isAllowed, allowed, "reference: \(label)")
        }
        XCTAssertEqual(try datapath.policyCounters(ruleCount: 1).rules, [6], "the rule counted every allowed piece")

        // A reload's policy judges the later fragments of datagrams begun before it: the same
        // rule moved to port 5353, so query 53's later fragments are denied now (and no
        // fragment of the old generation is found once it is live again).
        XCTAssertEqual(verdictOf(piece(query(53), id: 20, first: true)), 7)
        let moved = DesiredPolicy(clientToLAN: .deny, lanToClient: .replies, rules: [
            PolicyRule(source: .peers(["c"]), destination: .host(.v6(server1)), proto: .udp, ports: [PortRange(5353, 5353)], label: "c"),
        ])
        try datapath.install(policy: try moved.compile(clients: peers).get())
        XCTAssertEqual(verdictOf(piece(query(53), id: 20, first: false)), 2, "after the switch")
        XCTAssertEqual(verdictOf(piece(query(53), id: 7, first: false)), 2, "after the switch")
        try datapath.install(policy: try policy.compile(clients: peers).get())
        XCTAssertEqual(verdictOf(piece(query(53), id: 20, first: false)), 2, "the first generation again: its entries are gone")
    }

    /// The protocol and ports are the upper-layer header's, found behind extension headers: a
    /// LAN SYN or an unasked UDP datagram behind a destination options or (first) fragment
    /// header opens nothing with `replies`, a chain too long to follow is denied there, and a
    /// client's packet behind such a header meets the rule for what it carries. A fragment other
    /// than the first has no ports: only a rule without a protocol allows it.
    func testExtensionHeadersHideNothing() throws {
        let (_, datapath) = try gateway()
        try datapath.configure(ICMPErrorSettings(intervalMilliseconds: 0))  // a denied packet is dropped (2)
        let client = IPv6Address("2001:db8:86dd::7")!
        XCTAssertEqual(try datapath.synchronize(.clients, to: [Self.clientsPrefix: .redirect, .host(.v6(client)): .redirect]), [:])
        let peers = clients(["c": client])
        let lanProgram = bpf_obj_get("\(datapath.pinDirectory)/lan_ingress")
        let tunnelProgram = bpf_obj_get("\(datapath.pinDirectory)/tunnel_ingress")
        defer { close(lanProgram); close(tunnelProgram) }
        let destinationOptions: (UInt8, [UInt8]) = (60, [0, 1, 4, 0, 0, 0, 0])  // 8 bytes: PadN
        // Each its own datagram (identification): a later fragment of one whose first was
        // allowed would pass (testLaterFragmentsFollowTheirFirst).
        var nextID: UInt8 = 0
        func fragment(offset: UInt16) -> (UInt8, [UInt8]) {
            nextID += 1
            return (44, [0] + Self.be16(offset << 3 | 1) + [0, 0, 0, nextID])
        }
        /// `packet`'s bytes with `headers` (type, then all but the next-header byte) after the fixed header.
        func behind(_ headers: [(UInt8, [UInt8])], _ packet: PolicyPacket) -> [UInt8] {
            let bytes = Self.bytes(packet, sequence: 1)
            var chain: [UInt8] = []
            for (index, header) in headers.enumerated() {
                chain += [index + 1 < headers.count ? headers[index + 1].0 : bytes[6]] + header.1
            }
            var fixed = Array(bytes[0..<40])
            fixed[6] = headers.first?.0 ?? bytes[6]
            fixed[7] = 255
            let length = (Int(bytes[4]) << 8 | Int(bytes[5])) + chain.count
            (fixed[4], fixed[5]) = (UInt8(length >> 8), UInt8(length & 0xff))
            return fixed + chain + bytes[40...]
        }
        func verdict(_ bytes: [UInt8], toLAN: Bool) -> Int {
            let frame = toLAN ? bytes : Packet.ethernet(to: [0, 0, 0, 0, 0, 0], from: [2, 0, 0, 0, 0, 1], bytes)
            let (result, verdict, _, _) = programTestRun(toLAN ? tunnelProgram : lanProgram, frame, repeat: 1)
            XCTAssertEqual(result, 0)
            return verdict
        }
        let syn = PolicyPacket(direction: .lanToClient, source: server1, destination: client, proto: 6, sourcePort: 22,
                               destinationPort: 40000, tcpFlags: PolicyPacket.syn)
        let ack = PolicyPacket(direction: .lanToClient, source: server1, destination: client, proto: 6, sourcePort: 22,
                               destinationPort: 40000, tcpFlags: PolicyPacket.ack)
        let unasked = PolicyPacket(direction: .lanToClient, source: server1, destination: client, proto: 17, sourcePort: 53, destinationPort: 5353)
        let echoRequest = PolicyPacket(direction: .lanToClient, source: server1, destination: client, proto: 58, icmpType: 128, echoIdentifier: 9)

        /// `bytes` cut to its first `length` bytes, the payload length fixed.
        func cut(_ bytes: [UInt8], to length: Int) -> [UInt8] {
            var cut = Array(bytes.prefix(length))
            (cut[4], cut[5]) = (UInt8((length - 40) >> 8), UInt8((length - 40) & 0xff))
            return cut
        }
        // Destination options claiming 8 × 201 bytes: the chain "ends" past the packet.
        let overlong: (UInt8, [UInt8]) = (60, [200, 1, 4, 0, 0, 0, 0])

        // Clients may send anything; the LAN only answers.
        let replies = DesiredPolicy(clientToLAN: .allow, lanToClient: .replies)
        try datapath.install(policy: try replies.compile(clients: peers).get())
        let lanSteps: [(String, [UInt8], Bool)] = [
            ("a SYN", behind([], syn), false),
            ("a SYN behind destination options", behind([destinationOptions], syn), false),
            ("a SYN behind a first fragment header", behind([fragment(offset: 0)], syn), false),
            ("an ACK behind destination options", behind([destinationOptions], ack), true),
            ("an unasked UDP datagram behind destination options", behind([destinationOptions], unasked), false),
            ("an unasked UDP datagram's first fragment", behind([fragment(offset: 0)], unasked), false),
            ("a later fragment (no upper-layer header)", behind([fragment(offset: 1)], unasked), true),
            ("a SYN behind seven extension headers", behind(Array(repeating: destinationOptions, count: 7), syn), false),
            // The review's bypass: the flags travel in the second fragment.
            ("a SYN's first 8 bytes alone in a first fragment", cut(behind([fragment(offset: 0)], syn), to: 40 + 8 + 8), false),
            ("an ACK's first 8 bytes alone in a first fragment", cut(behind([fragment(offset: 0)], ack), to: 40 + 8 + 8), false),
            ("a SYN behind destination options longer than the packet", behind([overlong], syn), false),
            ("a UDP datagram behind destination options longer than the packet", behind([overlong], unasked), false),
            ("an echo request behind destination options longer than the packet", behind([overlong], echoRequest), false),
        ]
        for (label, bytes, allowed) in lanSteps { XCTAssertEqual(verdict(bytes, toLAN: false), allowed ? 7 : 2, "LAN: \(label)") }
        // The review's ICMPv6 bypass: a first fragment that ends with destination options, the
        // ICMPv6 header (an echo request, which opens) in the fragment after it. The first read
        // as type 0 (an error, which passes) and let the second pass under it.
        let whole = behind([fragment(offset: 0), destinationOptions], echoRequest)
        let first = cut(whole, to: 40 + 8 + 8)
        var later = Array(whole[0..<40]) + [60, 0] + Self.be16(1 << 3) + Array(whole[44..<48]) + Array(whole[56...])
        (later[4], later[5]) = (UInt8((later.count - 40) >> 8), UInt8((later.count - 40) & 0xff))
        XCTAssertEqual(later[48], 128, "the later fragment carries the echo request")
        XCTAssertEqual(verdict(first, toLAN: false), 2, "LAN: a first fragment without the ICMPv6 header")
        // Denied, it leaves nothing for the later fragment to pass under: a receiver gets no first
        // fragment, so no datagram (a later fragment alone passes, as above, and is dropped there).

        // The client reaches server 1 on UDP 53 only.
        let rule = DesiredPolicy(clientToLAN: .deny, lanToClient: .allow, rules: [
            PolicyRule(source: .peers(["c"]), destination: .host(.v6(server1)), proto: .udp, ports: [PortRange(53, 53)], label: "c"),
        ])
        try datapath.install(policy: try rule.compile(clients: peers).get())
        func query(_ port: UInt16) -> PolicyPacket {
            PolicyPacket(direction: .clientToLAN, source: client, destination: server1, proto: 17, sourcePort: 5353, destinationPort: port)
        }
        let clientSteps: [(String, [UInt8], Bool)] = [
            ("UDP 53", behind([], query(53)), true),
            ("UDP 53 behind destination options", behind([destinationOptions], query(53)), true),
            ("UDP 53 in a first fragment", behind([fragment(offset: 0)], query(53)), true),
            ("UDP 54 behind destination options", behind([destinationOptions], query(54)), false),
            ("a later fragment", behind([fragment(offset: 1)], query(53)), false),
            ("UDP 53 behind seven extension headers", behind(Array(repeating: destinationOptions, count: 7), query(53)), false),
        ]
        for (label, bytes, allowed) in clientSteps { XCTAssertEqual(verdict(bytes, toLAN: true), allowed ? 7 : 2, "client: \(label)") }
    }
}
