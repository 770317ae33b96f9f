@testable import Config
import Foundation
import Netlink
import Reconciler
import XCTest

/// One test per safety rule: names that are not interfaces, allowed IPs that would capture the
/// gateway's own traffic, and peers whose allowed IPs overlap.
final class SafetyRuleTests: XCTestCase {
    private var fixture: ConfigFixture!

    override func setUpWithError() throws { fixture = try ConfigFixture(for: self) }

    private func errors(replacing old: String, with new: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        let base = AcceptedConfigs.base
        XCTAssertTrue(base.contains(old), "the base configuration has no \(old)", file: file, line: line)
        return try fixture.errors(base.replacingOccurrences(of: old, with: new), file: file, line: line)
    }

    private let allWhy = "net.ipv6.conf.all is every interface at once (its forwarding = 1 makes the host a router on every link)"
    private let defaultWhy = "net.ipv6.conf.default is the template for interfaces created later, not an interface"

    func testLANCannotBeAllDefaultOrLoopback() throws {
        XCTAssertEqual(try errors(replacing: "  lan: private0", with: "  lan: all"), [
            "wgkeeper.yaml:26:8: lan: \"all\" cannot be configured: \(allWhy)",
        ])
        XCTAssertEqual(try errors(replacing: "  lan: private0", with: "  lan: default"), [
            "wgkeeper.yaml:26:8: lan: \"default\" cannot be configured: \(defaultWhy)",
        ])
        XCTAssertEqual(try errors(replacing: "  lan: private0", with: "  lan: lo"), [
            "wgkeeper.yaml:26:8: lan: \"lo\" cannot be configured: it is the loopback interface",
        ])
    }

    func testTunnelCannotBeAllDefaultLoopbackOrTheLAN() throws {
        XCTAssertEqual(try errors(replacing: "  tunnel: wg0", with: "  tunnel: all"), [
            "wgkeeper.yaml:25:11: tunnel: \"all\" cannot be configured: \(allWhy)",
        ])
        XCTAssertEqual(try errors(replacing: "  tunnel: wg0", with: "  tunnel: lo"), [
            "wgkeeper.yaml:25:11: tunnel: \"lo\" cannot be configured: it is the loopback interface",
        ])
        XCTAssertEqual(try errors(replacing: "  lan: private0", with: "  lan: wg0"), [
            "wgkeeper.yaml:26:8: lan: the LAN and the tunnel must be different interfaces",
        ])
        XCTAssertEqual(try fixture.errors("wireguard:\n  default:\n    private_key_file: wg0.key\n"), [
            "wgkeeper.yaml:2:3: wireguard: \"default\" cannot be configured: \(defaultWhy)",
        ])
    }

    func testExplicitRoutesAndProxiesCannotUseAllDefaultOrLoopback() throws {
        XCTAssertEqual(try errors(replacing: "    device: wg0", with: "    device: lo"), [
            "wgkeeper.yaml:33:13: device: \"lo\" cannot be configured: it is the loopback interface",
        ])
        XCTAssertEqual(try errors(replacing: "    device: private0", with: "    device: all"), [
            "wgkeeper.yaml:39:13: device: \"all\" cannot be configured: \(allWhy)",
        ])
        XCTAssertEqual(try errors(replacing: "    device: private0", with: "    device: default"), [
            "wgkeeper.yaml:39:13: device: \"default\" cannot be configured: \(defaultWhy)",
        ])
    }

    private func unsafe(_ prefix: String, _ why: String) -> String {
        "wgkeeper.yaml:22:13: allowed IP \(prefix) of peer bob-phone \(why): its route via wg0 would capture traffic that is not the peer's (set gateway.allow_unsafe_allowed_ips: true if this is meant)"
    }

    /// bob-phone's second allowed IP (line 22) replaced by each unsafe kind.
    func testGatewayPeersCannotClaimSpecialOrCoveringPrefixes() throws {
        let cases = [
            ("::/128", "holds the unspecified address ::"),
            ("::1/128", "holds the loopback address ::1"),
            ("fe80::1/128", "overlaps link-local fe80::/10"),
            ("fe80::/9", "overlaps link-local fe80::/10"),
            ("ff02::1/128", "overlaps multicast ff00::/8"),
            ("2001:db8:1::/64", "covers lan_prefix 2001:db8:1::/64"),
            ("2001:db8::/32", "covers lan_prefix 2001:db8:1::/64"),
        ]
        for (prefix, why) in cases {
            var expected = [unsafe(prefix, why)]
            if prefix.hasPrefix("2001:db8") {
                expected.insert("wgkeeper.yaml:15:23: allowed IP 2001:db8:1::100/128 of peer alice-laptop lies inside \(prefix) of peer bob-phone at wgkeeper.yaml:22:13: an address must belong to one peer (WireGuard would send 2001:db8:1::100/128 to alice-laptop and the rest to bob-phone)", at: 0)
            }
            if prefix == "2001:db8:1::/64" {
                expected.append("wgkeeper.yaml:22:13: route 2001:db8:1::/64 (table 254, metric 1024) conflicts with the route from gateway lan_prefix at wgkeeper.yaml:24:1")
                expected.append("wgkeeper.yaml:22:13: allowed IP 2001:db8:1::/64 of peer bob-phone lies inside lan_prefix 2001:db8:1::/64 but is not a /128: proxy NDP answers for single addresses only")
            }
            XCTAssertEqual(try errors(replacing: "- 2001:db8:5::/64", with: "- \(prefix)"), expected, prefix)
        }
        XCTAssertEqual(try errors(replacing: "- 2001:db8:5::/64", with: "- ::/0"), [
            "wgkeeper.yaml:15:23: allowed IP 2001:db8:1::100/128 of peer alice-laptop lies inside ::/0 of peer bob-phone at wgkeeper.yaml:22:13: an address must belong to one peer (WireGuard would send 2001:db8:1::100/128 to alice-laptop and the rest to bob-phone)",
            unsafe("::/0", "is every address (the default route)"),
        ])
    }

    func testUnsafeAllowedIPsPassWithTheOptIn() throws {
        let text = AcceptedConfigs.base
            .replacingOccurrences(of: "- 2001:db8:5::/64", with: "- fe80::/64")
            .replacingOccurrences(of: "  allow_lan_anycast: false", with: "  allow_lan_anycast: false\n  allow_unsafe_allowed_ips: true")
        XCTAssertEqual(try fixture.loaded(text).summary, "1 device, 2 peers, 5 routes, 3 proxies")
        // Peers of a device that is not the gateway's tunnel get no derived routes: not checked.
        XCTAssertEqual(try fixture.loaded(AcceptedConfigs.minimal.replacingOccurrences(of: "wg0.key\n", with: """
            wg0.key
                peers:
                  - name: upstream
                    public_key: "\(ConfigFixture.alice)"
                    allowed_ips: ["::/0"]

            """)).summary, "1 device, 1 peer, 0 routes, 0 proxies")
    }

    func testOverlappingAllowedIPsNameBothPeers() throws {
        XCTAssertEqual(try errors(replacing: "[2001:db8:1::100/128]", with: "[2001:db8:5:0:1::/80]"), [
            "wgkeeper.yaml:15:23: allowed IP 2001:db8:5:0:1::/80 of peer alice-laptop lies inside 2001:db8:5::/64 of peer bob-phone at wgkeeper.yaml:22:13: an address must belong to one peer (WireGuard would send 2001:db8:5:0:1::/80 to alice-laptop and the rest to bob-phone)",
        ])
        // A peer's own prefixes may nest; only another peer's count.
        XCTAssertEqual(try fixture.loaded(AcceptedConfigs.base.replacingOccurrences(of: "- 2001:db8:1::101/128", with: "- 2001:db8:5::1/128")).summary,
                       "1 device, 2 peers, 5 routes, 2 proxies")
    }

    func testOverlapCheckIsFastAtFiftyThousandPeers() throws {
        let key = WireGuardKey(base64: ConfigFixture.alice)!
        let at = SourceLocation(file: "f", line: 1, column: 1)
        var device = DeviceSection(name: "wg0", location: at)
        // Disjoint /128s, then one /108 that holds 4 096 of them: a pairwise check would compare 1.25·10⁹ pairs.
        for i in 0..<50_000 {
            let prefix = IPPrefix(address: .v6(IPv6Address(high: 0x2001_0db8_0009_0000, low: UInt64(i) << 8)), length: 128)
            device.peers.append(PeerSection(location: at, peer: DesiredPeer(name: "p\(i)", publicKey: key, allowedIPs: [prefix]),
                                            allowedIPLocations: [at]))
        }
        let wide = IPPrefix("2001:db8:9::10:0/108")!
        device.peers.append(PeerSection(location: at, peer: DesiredPeer(name: "wide", publicKey: key, allowedIPs: [wide]), allowedIPLocations: [at]))
        var configuration = Configuration()
        configuration.devices = [device]
        var errors = ConfigErrorList()
        let start = ContinuousClock.now
        configuration.checkAllowedIPs(errors: &errors)
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(2))
        XCTAssertEqual(errors.count, 4096)
        XCTAssertEqual(errors.kept.first?.message.hasPrefix("allowed IP 2001:db8:9::10:0/128 of peer p4096 lies inside 2001:db8:9::10:0/108 of peer wide"), true,
                       errors.kept.first?.message ?? "")
    }

    // MARK: found by the hostile review

    func testInterfaceNamesArePrintableASCII() throws {
        let found = try errors(replacing: "  lan: private0", with: "  lan: \"all\\0\"")
        XCTAssertEqual(found.count, 1, "\(found)")
        XCTAssertTrue(found.first?.hasPrefix("wgkeeper.yaml:26:8: lan:") == true, "\(found)")
    }

    func testAnExplicitRouteThroughTheTunnelFollowsTheAllowedIPRules() throws {
        let found = try errors(replacing: "  - destination: 2001:db8:2::/64", with: "  - destination: \"::/0\"")
        XCTAssertEqual(found.count, 1, "\(found)")
        XCTAssertTrue(found.first?.contains("route ::/0 via wg0 is every address (the default route)") == true, "\(found)")
    }

    /// alice-laptop's endpoint is [2001:db8:ff::2]:51820 (line 16): a route via wg0 holding it
    /// would carry the encrypted packets for it into the tunnel.
    func testAllowedIPsMayNotHoldAConfiguredEndpoint() throws {
        let loop = "its route via wg0 would carry the encrypted packets for that endpoint into the tunnel itself, a routing loop (set gateway.allow_unsafe_allowed_ips: true if this is meant)"
        XCTAssertEqual(try errors(replacing: "- 2001:db8:5::/64", with: "- 2001:db8:ff::/64"), [
            "wgkeeper.yaml:22:13: allowed IP 2001:db8:ff::/64 of peer bob-phone holds the endpoint [2001:db8:ff::2]:51820 of peer alice-laptop at wgkeeper.yaml:16:19: \(loop)",
        ])
        // A peer's own endpoint inside its allowed IPs loops the same way.
        XCTAssertEqual(try errors(replacing: "[2001:db8:1::100/128]", with: "[2001:db8:1::100/128, 2001:db8:ff::2/128]"), [
            "wgkeeper.yaml:15:44: allowed IP 2001:db8:ff::2/128 of peer alice-laptop holds its own endpoint [2001:db8:ff::2]:51820: \(loop)",
        ])
        // So does an explicit route through the tunnel.
        let route = try errors(replacing: "  - destination: 2001:db8:2::/64", with: "  - destination: 2001:db8:ff::/48")
        XCTAssertEqual(route, [
            "wgkeeper.yaml:32:5: route 2001:db8:ff::/48 via wg0 holds the endpoint [2001:db8:ff::2]:51820 of peer alice-laptop at wgkeeper.yaml:16:19: \(loop.replacingOccurrences(of: "its route via wg0", with: "it"))",
        ])
        // A host-name endpoint is not known until it resolves; the opt-in lets a literal one through.
        XCTAssertEqual(try fixture.loaded(AcceptedConfigs.base
            .replacingOccurrences(of: "- 2001:db8:5::/64", with: "- 2001:db8:ff::/64")
            .replacingOccurrences(of: "  allow_lan_anycast: false", with: "  allow_lan_anycast: false\n  allow_unsafe_allowed_ips: true")).summary,
            "1 device, 2 peers, 5 routes, 3 proxies")
    }

    func testAPeerCannotHaveTheDevicesOwnKeys() throws {
        let privateKey = try XCTUnwrap(PrivateKey(base64: try String(contentsOfFile: fixture.path("wg0.key"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        let own = try errors(replacing: ConfigFixture.alice, with: privateKey.publicKey.base64)
        XCTAssertTrue(own.contains { $0.contains("has wg0's own public key") }, "\(own)")
        let pasted = try errors(replacing: ConfigFixture.alice, with: privateKey.key.base64)
        XCTAssertTrue(pasted.contains { $0.contains("its public_key is wg0's private key") }, "\(pasted)")
        XCTAssertFalse(pasted.joined().contains(privateKey.key.base64), "the private key is never repeated")
    }

    func testAliasesAreChargedForTheTextTheyStandFor() throws {
        let big = String(repeating: "a", count: 300_000)
        let yaml = "x: &k \"\(big)\"\nroutes:\n" + String(repeating: "  - {destination: *k, device: *k}\n", count: 3)
        let found = try fixture.errors(yaml)
        XCTAssertTrue(found.contains { $0.contains("aliases expand to more than 1048576 bytes of text (the limit)") }, "\(found.prefix(3))")
    }

    /// An explicit proxy entry (line 38) for an address every host relies on, or on the tunnel.
    func testExplicitProxiesFollowTheSafetyRules() throws {
        let why = "the host would answer neighbour solicitations for an address that is not a peer's (set gateway.allow_unsafe_allowed_ips: true if this is meant)"
        for (address, what) in [("ff02::1", "is multicast (ff00::/8)"), ("fe80::1", "is link-local (fe80::/10)"),
                                ("\"::\"", "is the unspecified address ::"), ("\"::1\"", "is the loopback address ::1")] {
            let shown = address.replacingOccurrences(of: "\"", with: "")
            XCTAssertEqual(try errors(replacing: "  - address: 2001:db8:1::200", with: "  - address: \(address)"), [
                "wgkeeper.yaml:38:5: proxy \(shown) dev private0 \(what): \(why)",
            ])
        }
        XCTAssertEqual(try errors(replacing: "    device: private0", with: "    device: wg0"), [
            "wgkeeper.yaml:38:5: proxy 2001:db8:1::200 dev wg0 is on the gateway's tunnel: proxy entries belong on the LAN, where they answer for the peers (set gateway.allow_unsafe_allowed_ips: true if this is meant)",
        ])
        // Without a gateway the rules on addresses still hold.
        XCTAssertEqual(try fixture.errors(AcceptedConfigs.minimal + "proxies:\n  - address: ff02::1\n    device: eth0\n"), [
            "wgkeeper.yaml:5:5: proxy ff02::1 dev eth0 is multicast (ff00::/8): \(why)",
        ])
        // The same opt-in as for allowed IPs.
        let optIn = AcceptedConfigs.base
            .replacingOccurrences(of: "  - address: 2001:db8:1::200\n    device: private0", with: "  - address: ff02::1\n    device: wg0")
            .replacingOccurrences(of: "  allow_lan_anycast: false", with: "  allow_lan_anycast: false\n  allow_unsafe_allowed_ips: true")
        XCTAssertEqual(try fixture.loaded(optIn).configuration.proxies.map(\.proxy.device), ["wg0"])
    }

    func testRuntimePathsMustBeAbsoluteWithoutDotDot() throws {
        XCTAssertEqual(try fixture.errors("""
            runtime:
              status_socket: status.sock
              state_dir: run/wgkeeper
              bpf_pin_root: /sys/fs/bpf/../bpf/wgkeeper
              include_dir: ../conf.d

            """), [
            "wgkeeper.yaml:2:18: status_socket: \"status.sock\" is not an absolute path (it would depend on the daemon's working directory)",
            "wgkeeper.yaml:3:14: state_dir: \"run/wgkeeper\" is not an absolute path (it would depend on the daemon's working directory)",
            "wgkeeper.yaml:4:17: bpf_pin_root: \"/sys/fs/bpf/../bpf/wgkeeper\" has a . or .. component; write the path it stands for",
            "wgkeeper.yaml:5:16: include_dir: \"../conf.d\" has a . or .. component; write the path it stands for",
        ])
        // include_dir may stay relative to the main file, as documented.
        try FileManager.default.createDirectory(atPath: fixture.path("conf.d"), withIntermediateDirectories: true)
        XCTAssertNoThrow(try fixture.loaded("runtime:\n  include_dir: conf.d\n  state_dir: /run/wgkeeper/\n" + AcceptedConfigs.minimal))
    }

    func testAStatusSocketPathLongerThanSunPathIsRefused() throws {
        let found = try fixture.errors("runtime:\n  status_socket: /run/\(String(repeating: "s", count: 200))\n")
        XCTAssertEqual(found, ["wgkeeper.yaml:2:18: status_socket: longer than 107 bytes, the most a Unix socket path can be"])
    }
}
