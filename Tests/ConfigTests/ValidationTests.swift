import Config
import Foundation
import XCTest

/// One test per validation rule: each asserts the whole `file:line:column: message` line.
final class ValidationTests: XCTestCase {
    private var fixture: ConfigFixture!

    override func setUpWithError() throws { fixture = try ConfigFixture(for: self) }

    /// The base configuration with one piece of text replaced (line numbers stay put).
    private func errors(replacing old: String, with new: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        let base = AcceptedConfigs.base
        XCTAssertTrue(base.contains(old), "the base configuration has no \(old)", file: file, line: line)
        return try fixture.errors(base.replacingOccurrences(of: old, with: new), file: file, line: line)
    }

    func testBaseConfigurationPasses() throws {
        let loaded = try fixture.loaded(AcceptedConfigs.base)
        XCTAssertEqual(loaded.summary, "1 device, 2 peers, 5 routes, 3 proxies")
    }

    func testUnknownKey() throws {
        XCTAssertEqual(try errors(replacing: "    listen_port: 51820", with: "    listen_prot: 51820"), [
            "wgkeeper.yaml:9:5: unknown key \"listen_prot\" in wireguard.wg0 (known: private_key_file, listen_port, prune_peers, peers)",
        ])
        XCTAssertEqual(try errors(replacing: "gateway:\n", with: "gatewya:\n"), [
            "wgkeeper.yaml:24:1: unknown key \"gatewya\" in the configuration (known: runtime, wireguard, gateway, routes, proxies, policy)",
        ])
    }

    func testWrongTypes() throws {
        XCTAssertEqual(try errors(replacing: "listen_port: 51820", with: "listen_port: [51820]"), [
            "wgkeeper.yaml:9:18: listen_port: expected a single value, got a list",
        ])
        XCTAssertEqual(try errors(replacing: "listen_port: 51820", with: "listen_port: 0x10"), [
            "wgkeeper.yaml:9:18: listen_port: expected an integer from 1 to 65535, got \"0x10\"",
        ])
        XCTAssertEqual(try errors(replacing: "listen_port: 51820", with: "listen_port: 70000"), [
            "wgkeeper.yaml:9:18: listen_port: expected an integer from 1 to 65535, got \"70000\"",
        ])
        // No YAML implicit typing: `no` is not a boolean.
        XCTAssertEqual(try errors(replacing: "prune_peers: true", with: "prune_peers: no"), [
            "wgkeeper.yaml:10:18: prune_peers: expected true or false, got \"no\"",
        ])
        XCTAssertEqual(try errors(replacing: "persistent_keepalive: 25", with: "persistent_keepalive: -1"), [
            "wgkeeper.yaml:17:31: persistent_keepalive: expected an integer from 0 to 65535, got \"-1\"",
        ])
        XCTAssertEqual(try fixture.errors("wireguard: [wg0]\n"), [
            "wgkeeper.yaml:1:12: wireguard: expected a mapping, got a list",
        ])
        XCTAssertEqual(try errors(replacing: "    metric: 10", with: "    metric: 0"), [
            "wgkeeper.yaml:36:13: metric: expected an integer from 1 to 4294967295 (the kernel turns 0 into 1024), got \"0\"",
        ])
        XCTAssertEqual(try errors(replacing: "    table: 100", with: "    table: 255"), [
            "wgkeeper.yaml:35:12: table: expected a table number from 1 to 4294967295 other than 255 (local), got \"255\"",
        ])
    }

    func testMissingRequiredKey() throws {
        XCTAssertEqual(try errors(replacing: "    private_key_file: wg0.key\n", with: "    private_key_fil: wg0.key\n"), [
            "wgkeeper.yaml:7:3: wireguard.wg0: missing required key \"private_key_file\"",
            "wgkeeper.yaml:8:5: unknown key \"private_key_fil\" in wireguard.wg0 (known: private_key_file, listen_port, prune_peers, peers)",
        ])
        XCTAssertEqual(try errors(replacing: "    device: private0\n", with: ""), [
            "wgkeeper.yaml:38:5: proxies[0]: missing required key \"device\"",
        ])
    }

    func testBadPrefixes() throws {
        XCTAssertEqual(try errors(replacing: "[2001:db8:1::100/128]", with: "[2001:db8:1::100/129]"), [
            "wgkeeper.yaml:15:23: allowed_ips: \"2001:db8:1::100/129\" is not an IPv6 prefix",
        ])
        XCTAssertEqual(try errors(replacing: "[2001:db8:1::100/128]", with: "[192.0.2.1/32]"), [
            "wgkeeper.yaml:15:23: allowed_ips: \"192.0.2.1/32\" is not an IPv6 prefix",
        ])
        XCTAssertEqual(try errors(replacing: "lan_prefix: 2001:db8:1::/64", with: "lan_prefix: 2001:db8:1::1/64"), [
            "wgkeeper.yaml:27:15: lan_prefix: 2001:db8:1::1/64 has bits set past the prefix length; did you mean 2001:db8:1::/64?",
        ])
        XCTAssertEqual(try errors(replacing: "destination: 2001:db8:2::/64", with: "destination: 2001:db8:2::/64x"), [
            "wgkeeper.yaml:32:18: destination: \"2001:db8:2::/64x\" is not an IPv6 prefix",
        ])
    }

    func testBadAddresses() throws {
        XCTAssertEqual(try errors(replacing: "gateway: fe80::1", with: "gateway: fe80::g"), [
            "wgkeeper.yaml:34:14: gateway: \"fe80::g\" is not an IPv6 address",
        ])
        XCTAssertEqual(try errors(replacing: "address: 2001:db8:1::200", with: "address: 2001:db8:1::200/128"), [
            "wgkeeper.yaml:38:14: address: \"2001:db8:1::200/128\" is not an IPv6 address",
        ])
        XCTAssertEqual(try errors(replacing: "endpoint: vpn.example.com:51820", with: "endpoint: vpn.example.com"), [
            "wgkeeper.yaml:23:19: endpoint: expected an endpoint such as [2001:db8::1]:51820 or vpn.example.com:51820, got \"vpn.example.com\"",
        ])
    }

    func testInvalidPublicKey() throws {
        let short = String(ConfigFixture.alice.dropFirst())
        XCTAssertEqual(try errors(replacing: ConfigFixture.alice, with: short), [
            "wgkeeper.yaml:13:21: public_key: not a WireGuard key (44 characters of base64, as `wg pubkey` prints)",
        ])
    }

    func testDuplicatePeerName() throws {
        XCTAssertEqual(try errors(replacing: "name: bob-phone", with: "name: alice-laptop"), [
            "wgkeeper.yaml:18:9: peer name \"alice-laptop\" is already used at wgkeeper.yaml:12:9",
        ])
    }

    func testDuplicatePublicKey() throws {
        XCTAssertEqual(try errors(replacing: ConfigFixture.bob, with: ConfigFixture.alice), [
            "wgkeeper.yaml:18:9: public key \(ConfigFixture.alice) of peer bob-phone is already used by peer alice-laptop at wgkeeper.yaml:12:9",
        ])
    }

    func testAllowedIPClaimedByTwoPeers() throws {
        XCTAssertEqual(try errors(replacing: "- 2001:db8:1::101/128", with: "- 2001:db8:1::100/128"), [
            "wgkeeper.yaml:21:13: allowed IP 2001:db8:1::100/128 of peer bob-phone is already claimed by peer alice-laptop at wgkeeper.yaml:15:23",
        ])
    }

    func testAllowedIPInsideLANPrefixMustBeAHost() throws {
        XCTAssertEqual(try errors(replacing: "- 2001:db8:1::101/128", with: "- 2001:db8:1::100:0/112"), [
            "wgkeeper.yaml:21:13: allowed IP 2001:db8:1::100:0/112 of peer bob-phone lies inside lan_prefix 2001:db8:1::/64 but is not a /128: proxy NDP answers for single addresses only",
        ])
    }

    func testPrivateKeyFileMissing() throws {
        let errors = try errors(replacing: "private_key_file: wg0.key", with: "private_key_file: nothere.key")
        XCTAssertEqual(errors, [
            "wgkeeper.yaml:8:23: private_key_file: cannot read the key file: No such file or directory",
        ])
    }

    func testPrivateKeyFileGroupOrWorldReadable() throws {
        try fixture.writeKey("open.key", mode: 0o644)
        try fixture.writeKey("group.key", mode: 0o640)
        let key = try String(contentsOfFile: fixture.path("open.key"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let errors = try errors(replacing: "private_key_file: wg0.key", with: "private_key_file: open.key")
        XCTAssertEqual(errors, [
            "wgkeeper.yaml:8:23: private_key_file: the key file is readable by group or others (mode 0644); run chmod 600 on it",
        ])
        XCTAssertFalse(errors.joined().contains(key), "an error must never carry the key")
        XCTAssertEqual(try self.errors(replacing: "preshared_key_file: alice.psk", with: "preshared_key_file: group.key"), [
            "wgkeeper.yaml:14:29: preshared_key_file: the key file is readable by group or others (mode 0640); run chmod 600 on it",
        ])
    }

    func testKeyFileWithoutAKey() throws {
        try fixture.write("bad.key", "not a key\n")
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: fixture.path("bad.key"))
        XCTAssertEqual(try errors(replacing: "private_key_file: wg0.key", with: "private_key_file: bad.key"), [
            "wgkeeper.yaml:8:23: private_key_file: the key file does not hold a 44-character base64 WireGuard key",
        ])
    }

    func testRouteProtocol() throws {
        XCTAssertEqual(try errors(replacing: "route_protocol: 77", with: "route_protocol: 256"), [
            "wgkeeper.yaml:2:19: route_protocol: expected an integer from 1 to 255, got \"256\"",
        ])
        XCTAssertEqual(try errors(replacing: "route_protocol: 77", with: "route_protocol: 0"), [
            "wgkeeper.yaml:2:19: route_protocol: expected an integer from 1 to 255, got \"0\"",
        ])
        XCTAssertEqual(try errors(replacing: "route_protocol: 77", with: "route_protocol: 4"), [
            "wgkeeper.yaml:2:19: route_protocol: 4 is the kernel's \"static\" protocol; tagging with it would claim another owner's routes (pick an unused number, such as 77)",
        ])
        XCTAssertEqual(try errors(replacing: "route_protocol: 77", with: "route_protocol: 186").first,
            "wgkeeper.yaml:2:19: route_protocol: 186 is the kernel's \"bgp\" protocol; tagging with it would claim another owner's routes (pick an unused number, such as 77)")
    }

    func testStatusGroup() throws {
        let accepted = try fixture.loaded(AcceptedConfigs.base.replacingOccurrences(of: "route_protocol: 77", with: "status_group: wgstatus"))
        XCTAssertEqual(accepted.configuration.runtime.statusGroup, "wgstatus")
        let numeric = try fixture.loaded(AcceptedConfigs.base.replacingOccurrences(of: "route_protocol: 77", with: "status_group: 4242"))
        XCTAssertEqual(numeric.configuration.runtime.statusGroup, "4242")
        XCTAssertEqual(try errors(replacing: "route_protocol: 77", with: "status_group: Wheel Users"), [
            "wgkeeper.yaml:2:17: status_group: expected a group name (letters, digits, _ and -, at most 32) or a group number, got \"Wheel Users\"",
        ])
    }

    func testIntervals() throws {
        XCTAssertEqual(try errors(replacing: "wireguard_poll: 2s", with: "wireguard_poll: 2 sec"), [
            "wgkeeper.yaml:3:19: wireguard_poll: \"2 sec\" is not an interval (write it like 500ms, 2s, 1m or 1m30s)",
        ])
        XCTAssertEqual(try errors(replacing: "wireguard_poll: 2s", with: "wireguard_poll: 0s"), [
            "wgkeeper.yaml:3:19: wireguard_poll: \"0s\" is not an interval (write it like 500ms, 2s, 1m or 1m30s)",
        ])
        let loaded = try fixture.loaded(AcceptedConfigs.base.replacingOccurrences(of: "resync: 1m", with: "resync: 1m30s"))
        XCTAssertEqual(loaded.configuration.runtime.resync, .seconds(90))
        XCTAssertEqual(loaded.configuration.runtime.proxyPoll, .milliseconds(500))
    }

    func testGatewayTunnelNotAConfiguredDevice() throws {
        XCTAssertEqual(try errors(replacing: "  tunnel: wg0", with: "  tunnel: wg1"), [
            "wgkeeper.yaml:24:1: gateway: tunnel \"wg1\" is not a configured WireGuard device (wireguard: has wg0)",
        ])
    }

    func testExplicitRouteConflictsWithDerived() throws {
        let text = AcceptedConfigs.base.replacingOccurrences(of: """
                table: 100
                metric: 10
            """, with: """
                table: 254
                metric: 1024
            """).replacingOccurrences(of: "destination: 2001:db8:2::/64", with: "destination: 2001:db8:5::/64")
        XCTAssertEqual(try fixture.errors(text), [
            "wgkeeper.yaml:32:5: route 2001:db8:5::/64 (table 254, metric 1024) conflicts with the route from peer bob-phone at wgkeeper.yaml:22:13",
        ])
    }

    func testExplicitProxyConflictsWithDerived() throws {
        XCTAssertEqual(try errors(replacing: "address: 2001:db8:1::200", with: "address: 2001:db8:1::101"), [
            "wgkeeper.yaml:38:5: proxy 2001:db8:1::101 dev private0 conflicts with the proxy entry from peer bob-phone at wgkeeper.yaml:21:13",
        ])
    }

    func testDuplicateKeyAndSyntaxError() throws {
        XCTAssertEqual(try errors(replacing: "    prune_peers: true\n", with: "    prune_peers: true\n    listen_port: 1\n"), [
            "wgkeeper.yaml:11:5: duplicate key \"listen_port\" (first set at wgkeeper.yaml:9:5)",
        ])
        let syntax = try fixture.errors("wireguard:\n  wg0: [\n")
        XCTAssertEqual(syntax.count, 1)
        XCTAssertTrue(syntax[0].hasPrefix("wgkeeper.yaml:3:1: YAML syntax: "), syntax[0])
    }

    func testEveryErrorAtOnceInFileOrder() throws {
        let text = AcceptedConfigs.base
            .replacingOccurrences(of: "route_protocol: 77", with: "route_protocol: 2")
            .replacingOccurrences(of: "listen_port: 51820", with: "listen_port: x")
            .replacingOccurrences(of: "address: 2001:db8:1::200", with: "address: nope")
        XCTAssertEqual(try fixture.errors(text).map { $0.split(separator: ":").prefix(3).joined(separator: ":") }, [
            "wgkeeper.yaml:2:19", "wgkeeper.yaml:9:18", "wgkeeper.yaml:38:14",
        ])
    }

    func testNullAndEmptyValuesAreAbsent() throws {
        let loaded = try fixture.loaded(AcceptedConfigs.minimal + "gateway:\nroutes: ~\n")
        XCTAssertEqual(loaded.summary, "1 device, 0 peers, 0 routes, 0 proxies")
    }
}
