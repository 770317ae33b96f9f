import Config
import Foundation
import Netlink
import Reconciler
import XCTest

/// The `policy` section: decoding, names resolved against the tunnel's peers, drop-ins, errors
/// with their place, and what `check` warns about.
final class PolicyConfigTests: XCTestCase {
    private var fixture: ConfigFixture!

    override func setUpWithError() throws { fixture = try ConfigFixture(for: self) }

    private func withPolicy(_ policy: String) -> String { AcceptedConfigs.base + policy }

    func testNoPolicyKeepsEverythingAllowedAndCheckWarns() throws {
        let loaded = try fixture.loaded(AcceptedConfigs.base)
        XCTAssertNil(loaded.desired.policy)
        XCTAssertNil(loaded.desired.datapath?.policy)
        XCTAssertEqual(loaded.configuration.policyWarnings.count, 1)
        XCTAssertTrue(loaded.configuration.policyWarnings[0].hasPrefix("no policy section: every peer of wg0 reaches every LAN address"),
                      loaded.configuration.policyWarnings[0])
        // Without the datapath there is nothing to warn about: netfilter sees forwarded traffic.
        let noRedirect = try fixture.loaded(AcceptedConfigs.base.replacingOccurrences(of: "redirect: true", with: "redirect: false"))
        XCTAssertEqual(noRedirect.configuration.policyWarnings, [])
    }

    func testPolicyExpandsGroupsAndCompiles() throws {
        let loaded = try fixture.loaded(AcceptedConfigs.withPolicy)
        let policy = try XCTUnwrap(loaded.desired.policy)
        XCTAssertEqual(policy.clientToLAN, .deny)
        XCTAssertEqual(policy.lanToClient, .replies)
        XCTAssertEqual(policy.rules.map(\.description), [
            "from admins to 2001:db8:1::/64 tcp port 22,8000-8080 allow",
            "from bob-phone,admins to 2001:db8:1::53 udp port 53 allow",
            "from any to 2001:db8:1::80 icmpv6 allow",
        ])
        XCTAssertEqual(policy.rules[0].source, .peers(["alice-laptop"]))
        XCTAssertEqual(policy.rules[1].source, .peers(["alice-laptop", "bob-phone"]))
        XCTAssertEqual(policy.rules[2].source, .any)
        let compiled = try XCTUnwrap(loaded.desired.datapath?.policy)
        XCTAssertEqual(compiled.ruleCount, 3)
        // alice {0, 1}, bob {1}: two classes besides 0; every client prefix has one.
        XCTAssertEqual(Set(compiled.sources.values), [1, 2])
        XCTAssertEqual(compiled.sources.count, 3)
        XCTAssertEqual(loaded.configuration.policyWarnings, [])
        // Rules under client_to_lan: allow only count; deny toward the clients drops replies too.
        let lax = try fixture.loaded(AcceptedConfigs.withPolicy.replacingOccurrences(of: "client_to_lan: deny", with: "client_to_lan: allow")
            .replacingOccurrences(of: "lan_to_client: replies", with: "lan_to_client: deny"))
        XCTAssertEqual(lax.configuration.policyWarnings.map { $0.replacingOccurrences(of: fixture.directory + "/", with: "") }, [
            "wgkeeper.yaml:40:1: policy: client_to_lan is allow, so the rules have no effect; set client_to_lan: deny to enforce them",
            "wgkeeper.yaml:40:1: policy: lan_to_client: deny drops the LAN's replies too (TCP and ping to the LAN cannot work); lan_to_client: replies lets replies through",
        ])
    }

    func testDropInCarriesItsPeersMembershipAndRules() throws {
        try fixture.write("conf.d/carol.yaml", """
            wireguard:
              wg0:
                peers:
                  - name: carol
                    public_key: "\(ConfigFixture.carol)"
                    allowed_ips: [2001:db8:1::102/128]
            policy:
              groups:
                admins: [carol]
              rules:
                - from: carol
                  to: 2001:db8:1::9
            """)
        let loaded = try fixture.loaded("runtime:\n  include_dir: conf.d\n" + AcceptedConfigs.withPolicy.replacingOccurrences(of: "runtime:\n", with: ""))
        let policy = try XCTUnwrap(loaded.desired.policy)
        XCTAssertEqual(policy.rules.count, 4)
        XCTAssertEqual(policy.rules[0].source, .peers(["alice-laptop", "carol"]))
        XCTAssertEqual(policy.rules[3].description, "from carol to 2001:db8:1::9 allow")
    }

    func testDefaultsAreSetOnce() throws {
        try fixture.write("conf.d/x.yaml", "policy:\n  client_to_lan: allow\n")
        let errors = try fixture.errors("runtime:\n  include_dir: conf.d\n" + AcceptedConfigs.withPolicy.replacingOccurrences(of: "runtime:\n", with: ""))
        XCTAssertEqual(errors, ["conf.d/x.yaml:2:3: policy.client_to_lan is already set at wgkeeper.yaml:42:3"])
    }

    func testErrorsNameTheirPlace() throws {
        XCTAssertEqual(try fixture.errors(withPolicy("""
            policy:
              client_to_lan: block
              lan_to_client: reply
              groups:
                any: [alice-laptop]
                bob-phone: [alice-laptop]
                ops: [mallory, alice-laptop, alice-laptop]
              rules:
                - from: nobody
                  to: 2001:db8:1::/64
                - from: alice-laptop
                  to: 2001:db8:1::1/64
                - from: alice-laptop
                  to: 2001:db8:1::1
                  ports: 22
                - from: alice-laptop
                  to: 2001:db8:1::1
                  protocol: sctp
                - from: alice-laptop
                  to: 2001:db8:1::1
                  protocol: tcp
                  ports: [0, 80-70, http]
                - to: 2001:db8:1::1
                  action: allow
                - from: []
                  to: 2001:db8:1::1

            """)), [
            "wgkeeper.yaml:41:18: client_to_lan: expected allow or deny, got \"block\"",
            "wgkeeper.yaml:42:18: lan_to_client: expected allow, deny or replies, got \"reply\"",
            "wgkeeper.yaml:44:5: policy.groups: \"any\" is not a group name (letters, digits and . _ @ + -, at most 64; not \"any\")",
            "wgkeeper.yaml:45:5: policy.groups: \"bob-phone\" is also a peer's name; a rule's from could not tell them apart",
            "wgkeeper.yaml:46:34: policy.groups.ops: \"alice-laptop\" is listed twice (first at wgkeeper.yaml:46:20)",
            "wgkeeper.yaml:51:11: to: 2001:db8:1::1/64 has bits set past the prefix length; did you mean 2001:db8:1::/64?",
            "wgkeeper.yaml:54:7: ports: only with protocol tcp or udp",
            "wgkeeper.yaml:57:17: protocol: expected tcp, udp or icmpv6, got \"sctp\"",
            "wgkeeper.yaml:61:15: ports: expected a port (1-65535) or a range such as 8000-8080, got \"0\"",
            "wgkeeper.yaml:61:18: ports: expected a port (1-65535) or a range such as 8000-8080, got \"80-70\"",
            "wgkeeper.yaml:61:25: ports: expected a port (1-65535) or a range such as 8000-8080, got \"http\"",
            "wgkeeper.yaml:62:7: policy.rules[5]: missing required key \"from\" (a peer, a group or any)",
            "wgkeeper.yaml:63:7: unknown key \"action\" in policy.rules[5] (known: from, to, protocol, ports)",
            "wgkeeper.yaml:64:13: from: an empty list allows nothing; name a peer, a group or any",
        ])
        // A blank left in a template does not widen the rule.
        XCTAssertEqual(try fixture.errors(withPolicy("""
            policy:
              rules:
                - from: alice-laptop
                  to: 2001:db8:1::1
                  protocol:
                - from: alice-laptop
                  to: 2001:db8:1::1
                  protocol: tcp
                  ports:
                - from: alice-laptop
                  to: 2001:db8:1::1
                  protocol: udp
                  ports: []

            """)), [
            "wgkeeper.yaml:44:7: protocol: empty; name tcp, udp or icmpv6, or leave the key out for every protocol",
            "wgkeeper.yaml:48:7: ports: empty; name ports such as 22 or 8000-8080, or leave the key out for every port",
            "wgkeeper.yaml:52:14: ports: an empty list allows nothing; name ports, or leave the key out for every port",
        ])
        // A list where one protocol goes is one error; a port with a leading zero is no port;
        // a group inside a group is said to be one.
        XCTAssertEqual(try fixture.errors(withPolicy("""
            policy:
              groups:
                admins: [alice-laptop]
                ops: [admins]
              rules:
                - from: alice-laptop
                  to: 2001:db8:1::1
                  protocol: [tcp]
                - from: alice-laptop
                  to: 2001:db8:1::1
                  protocol: tcp
                  ports: ["080", 0443-0444]

            """)).filter { !$0.contains("protocol tcp or udp") }, [
            "wgkeeper.yaml:43:11: policy.groups.ops: \"admins\" is a group; groups do not contain groups, list its peers",
            "wgkeeper.yaml:47:17: protocol: expected a single value, got a list",
            "wgkeeper.yaml:51:15: ports: expected a port (1-65535) or a range such as 8000-8080, got \"080\"",
            "wgkeeper.yaml:51:22: ports: expected a port (1-65535) or a range such as 8000-8080, got \"0443-0444\"",
        ])
        // Names are resolved once the shape is right.
        XCTAssertEqual(try fixture.errors(withPolicy("""
            policy:
              groups:
                bob-phone: [alice-laptop]
                ops: [mallory]
              rules:
                - from: nobody
                  to: 2001:db8:1::/64

            """)), [
            "wgkeeper.yaml:42:5: policy.groups: \"bob-phone\" is also a peer's name; a rule's from could not tell them apart",
        ])
    }

    /// A name that is no peer (a departed peer whose drop-in went, or a typo) allows nothing
    /// and is no error: removing a peer's file must not be refused because a group in another
    /// file still names it (the peer would stay). `check` and the log say so.
    func testNamesThatAreNoPeerAllowNothingAndAreWarned() throws {
        let loaded = try fixture.loaded(withPolicy("""
            policy:
              client_to_lan: deny
              lan_to_client: replies
              groups:
                ops: [mallory, alice-laptop]
                gone: [nobody]
              rules:
                - from: [nobody, ops]
                  to: 2001:db8:1::/64
                - from: gone
                  to: 2001:db8:1::1
                - from: nobody
                  to: 2001:db8:1::2

            """))
        let policy = try XCTUnwrap(loaded.desired.policy)
        XCTAssertEqual(policy.rules.map(\.source), [.peers(["alice-laptop"]), .peers([]), .peers([])])
        XCTAssertEqual(loaded.configuration.absentPolicyNames.map { $0.replacingOccurrences(of: fixture.directory + "/", with: "") }, [
            "wgkeeper.yaml:45:12: policy.groups.gone: \"nobody\" is no peer of wg0 (a departed peer, or a typo); it allows nothing until a peer of that name is configured",
            "wgkeeper.yaml:44:11: policy.groups.ops: \"mallory\" is no peer of wg0 (a departed peer, or a typo); it allows nothing until a peer of that name is configured",
            "wgkeeper.yaml:47:14: from: \"nobody\" is no peer of wg0 (a departed peer, or a typo); it allows nothing until a peer of that name is configured",
            "wgkeeper.yaml:51:13: from: \"nobody\" is no peer of wg0 (a departed peer, or a typo); it allows nothing until a peer of that name is configured",
        ])
        XCTAssertEqual(loaded.configuration.policyWarnings, loaded.configuration.absentPolicyNames)
        // The evaluation agrees: nobody's rules match no client.
        let compiled = try XCTUnwrap(loaded.desired.datapath?.policy)
        XCTAssertEqual(compiled.ruleCount, 3)
    }

    /// The programs judge only packets between a client and lan_prefix: a rule toward anything
    /// else never matches, and `check` says so.
    func testRuleOutsideTheLANPrefixIsWarned() throws {
        let loaded = try fixture.loaded(withPolicy("""
            policy:
              client_to_lan: deny
              lan_to_client: replies
              rules:
                - {from: any, to: 2001:db8:99::/64}
                - {from: any, to: "2001:db8::/32"}
                - {from: any, to: 2001:db8:1::5}
                - {from: any, to: 2001:db8:1::100}
                - {from: nobody-yet, to: 2001:db8:1::6}
              groups:
                nobody-yet:

            """))
        XCTAssertEqual(loaded.configuration.policyWarnings.map { $0.replacingOccurrences(of: fixture.directory + "/", with: "") }, [
            "wgkeeper.yaml:50:5: policy.groups.nobody-yet: no members; rules from it allow nothing",
            "wgkeeper.yaml:47:7: policy: 2001:db8:1::100/128 is within 2001:db8:1::100/128, peer \"alice-laptop\"'s address: packets to it go to the tunnel, so this rule never matches",
            "wgkeeper.yaml:44:7: policy: 2001:db8:99::/64 is outside lan_prefix 2001:db8:1::/64; the datapath judges only traffic to the LAN prefix, so this rule never matches",
        ])
    }

    /// `from: any` means every peer, so no peer may be called any while a policy is set.
    func testAPeerCalledAnyIsRefusedWithAPolicy() throws {
        let text = withPolicy("policy:\n  client_to_lan: deny\n").replacingOccurrences(of: "name: bob-phone", with: "name: any")
        XCTAssertEqual(try fixture.errors(text), ["wgkeeper.yaml:18:9: name: a peer called \"any\" cannot be told from a rule's from: any (every peer); rename it"])
        _ = try fixture.loaded(AcceptedConfigs.base.replacingOccurrences(of: "name: bob-phone", with: "name: any"))
    }

    /// At most 1 000 names that are no peer are said, then how many more.
    func testAbsentNamesAreCapped() throws {
        let names = (0..<1500).map { "gone\($0)" }.joined(separator: ", ")
        let loaded = try fixture.loaded(withPolicy("policy:\n  client_to_lan: deny\n  groups:\n    old: [\(names)]\n"))
        XCTAssertEqual(loaded.configuration.absentPolicyNames.count, 1001)
        XCTAssertEqual(loaded.configuration.absentPolicyNames.last, "and 500 more names that are no peer")
    }

    /// The departed peer's drop-in goes while the main file's group still names it: the load
    /// passes, without the peer.
    func testRemovingAPeersDropInIsNotRefusedForTheGroupsNamingIt() throws {
        try fixture.write("conf.d/carol.yaml", """
            wireguard:
              wg0:
                peers:
                  - name: carol
                    public_key: "\(ConfigFixture.carol)"
                    allowed_ips: [2001:db8:1::102/128]
            """)
        let main = "runtime:\n  include_dir: conf.d\n" + AcceptedConfigs.withPolicy.replacingOccurrences(of: "runtime:\n", with: "")
            .replacingOccurrences(of: "admins: [alice-laptop]", with: "admins: [alice-laptop, carol]")
        XCTAssertTrue(main.contains("admins: [alice-laptop, carol]"))
        let before = try fixture.loaded(main)
        XCTAssertEqual(before.desired.policy?.rules[0].source, .peers(["alice-laptop", "carol"]))
        try FileManager.default.removeItem(atPath: fixture.path("conf.d/carol.yaml"))
        let after = try fixture.loaded(main)
        XCTAssertEqual(after.desired.policy?.rules[0].source, .peers(["alice-laptop"]))
        XCTAssertFalse(after.desired.devices[0].peers.contains { $0.name == "carol" })
        XCTAssertEqual(after.configuration.absentPolicyNames.count, 1)
    }

    func testPolicyNeedsTheDatapath() throws {
        XCTAssertEqual(try fixture.errors(withPolicy("policy:\n  client_to_lan: deny\n").replacingOccurrences(of: "redirect: true", with: "redirect: false")), [
            "wgkeeper.yaml:40:1: policy: enforced by the datapath, so it needs a gateway section with redirect: true (without it, the kernel forwards and netfilter's FORWARD chain is the place for rules)",
        ])
    }

    func testRulesThatDoNotFitAnEntryAreRefused() throws {
        var text = "policy:\n  client_to_lan: deny\n  rules:\n"
        for i in 0..<17 { text += "    - {from: any, to: 2001:db8:1::/64, protocol: tcp, ports: \(1000 + i)}\n" }
        XCTAssertEqual(try fixture.errors(withPolicy(text)), [
            "wgkeeper.yaml:43:7: policy: 2001:db8:1::/64 gathers 17 protocol/port ranges from the rules that contain it (the datapath holds 16 per destination and peer); merge port ranges or split the destination",
        ])
    }

    /// Groups expanded into every rule are bounded before they are: 4 096 rules from a group
    /// of 1 025 peers name 4 198 400 peers in all.
    func testMembershipsAreBoundedBeforeGroupsAreExpanded() throws {
        var text = AcceptedConfigs.base.replacingOccurrences(of: "    peers:\n", with: "    peers:\n" + (0..<1025).map { i in
            "      - {name: m\(i), public_key: \"\(Self.key(i))\", allowed_ips: [\"2001:db8:1::\(String(0x1000 + i, radix: 16))/128\"]}\n"
        }.joined())
        XCTAssertTrue(text.contains("name: m1024"))
        text += "policy:\n  client_to_lan: deny\n  groups:\n    many: [" + (0..<1025).map { "m\($0)" }.joined(separator: ", ") + "]\n  rules:\n"
        for i in 0..<4096 { text += "    - {from: many, to: \"2001:db8:1::\(String(0x8000 + i, radix: 16))\"}\n" }
        XCTAssertEqual(try fixture.errors(text).map { $0.replacingOccurrences(of: #"^wgkeeper.yaml:\d+:\d+: "#, with: "", options: .regularExpression) }, [
            "policy: the rules name 4198400 peers in all, each group counted with its members (at most 4194304); use fewer rules for large groups, or any",
        ])
    }

    private static func key(_ i: Int) -> String {
        var bytes = [UInt8](repeating: 7, count: 32)
        bytes[0] = UInt8(i & 0xff)
        bytes[1] = UInt8(i >> 8)
        return Data(bytes).base64EncodedString()
    }

    func testRuleLimit() throws {
        var limits = ConfigLimits()
        limits.policyRules = 2
        var text = "policy:\n  rules:\n"
        for _ in 0..<3 { text += "    - {from: any, to: 2001:db8:1::/64}\n" }
        XCTAssertEqual(try fixture.errors(withPolicy(text), limits: limits), [
            "wgkeeper.yaml:44:7: policy.rules: more than 2 rules (the limit)",
        ])
    }

    /// `from` and a group's members name peers and groups, which have peer names: a private key
    /// pasted there (it would be shown by `status` and the metrics as the rule's text) or a name
    /// with a line break or an escape sequence (it would forge a line of the log) is refused,
    /// the key not repeated and control characters shown escaped.
    func testNamesInThePolicyAreRefusedUnlessPeerNames() throws {
        let secret = PrivateKeyText.sample
        let errors = try fixture.errors(withPolicy("""
            policy:
              client_to_lan: deny
              groups:
                ops: [alice-laptop, "\(secret)", "x\\u001b[2J\\nerror: fake"]
              rules:
                - from: [bob-phone, "\(secret)"]
                  to: 2001:db8:1::30
                - from: "x\\u001b[2J\\nerror: fake"
                  to: 2001:db8:1::31

            """))
        XCTAssertEqual(errors, [
            "wgkeeper.yaml:43:25: policy.groups.ops: (a value that looks like a key, not shown) is not a peer name (letters, digits and . _ @ + -, at most 64)",
            "wgkeeper.yaml:43:73: policy.groups.ops: \"x\\u{1b}[2J\\u{a}error: fake\" is not a peer name (letters, digits and . _ @ + -, at most 64)",
            "wgkeeper.yaml:45:25: from: (a value that looks like a key, not shown) is not a peer or group name (letters, digits and . _ @ + -, at most 64)",
            "wgkeeper.yaml:47:13: from: \"x\\u{1b}[2J\\u{a}error: fake\" is not a peer or group name (letters, digits and . _ @ + -, at most 64)",
        ])
        XCTAssertFalse(errors.joined().contains(secret))
    }
}
