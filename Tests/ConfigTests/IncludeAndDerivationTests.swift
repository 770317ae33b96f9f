@testable import Config
import Foundation
import Netlink
import Reconciler
import XCTest

final class IncludeTests: XCTestCase {
    private var fixture: ConfigFixture!

    override func setUpWithError() throws { fixture = try ConfigFixture(for: self) }

    private var mainWithInclude: String { "runtime:\n  include_dir: conf.d\n" + AcceptedConfigs.minimal }

    func testPeersFromSeveralFilesAreAppendedInNameOrder() throws {
        try fixture.write("conf.d/20-carol.yaml", AcceptedConfigs.includeFragment)
        try fixture.write("conf.d/10-alice.yaml", """
            wireguard:
              wg0:
                peers:
                  - name: alice-laptop
                    public_key: "\(ConfigFixture.alice)"
                    allowed_ips: [2001:db8:1::100/128]
            """)
        try fixture.write("conf.d/ignored.yml", "this: is not read\n")
        let loaded = try fixture.loaded(mainWithInclude)
        XCTAssertEqual(loaded.desired.devices.first?.peers.map(\.name), ["alice-laptop", "carol-desktop"])
        XCTAssertEqual(loaded.configuration.files.map { ($0 as NSString).lastPathComponent },
                       ["wgkeeper.yaml", "10-alice.yaml", "20-carol.yaml"])
    }

    func testScalarSetTwiceNamesBothPlaces() throws {
        try fixture.write("conf.d/port.yaml", "wireguard:\n  wg0:\n    listen_port: 51821\n")
        XCTAssertEqual(try fixture.errors(mainWithInclude.replacingOccurrences(of: "wg0.key\n", with: "wg0.key\n    listen_port: 51820\n")), [
            "conf.d/port.yaml:3:5: wireguard.wg0.listen_port is already set at wgkeeper.yaml:6:5",
        ])
    }

    func testMapAndListMismatch() throws {
        try fixture.write("conf.d/bad.yaml", "wireguard:\n  wg0:\n    peers: {name: x}\n")
        XCTAssertEqual(try fixture.errors(mainWithInclude.replacingOccurrences(of: "wg0.key\n", with: "wg0.key\n    peers: []\n")), [
            "conf.d/bad.yaml:3:12: wireguard.wg0.peers is a mapping here but a list at wgkeeper.yaml:6:12",
        ])
    }

    func testIncludeFileMayNotNameAnotherIncludeDir() throws {
        try fixture.write("conf.d/a.yaml", "runtime:\n  include_dir: more\n")
        XCTAssertEqual(try fixture.errors(mainWithInclude), [
            "conf.d/a.yaml:2:3: runtime.include_dir is already set at wgkeeper.yaml:2:3",
            "conf.d/a.yaml:2:16: include_dir: only the main configuration file may name one",
        ])
    }

    func testMissingIncludeDir() throws {
        let errors = try fixture.errors(mainWithInclude)
        XCTAssertEqual(errors.count, 1)
        XCTAssertTrue(errors[0].hasPrefix("wgkeeper.yaml:2:16: include_dir: cannot read directory conf.d: "), errors[0])
    }

    func testErrorInAnIncludedFileNamesThatFile() throws {
        try fixture.write("conf.d/carol.yaml", AcceptedConfigs.includeFragment.replacingOccurrences(of: "/128]", with: "/200]"))
        XCTAssertEqual(try fixture.errors(mainWithInclude), [
            "conf.d/carol.yaml:6:23: allowed_ips: \"2001:db8:1::102/200\" is not an IPv6 prefix",
        ])
    }
}

final class DerivationTests: XCTestCase {
    func testGatewayExpandsIntoRoutesProxiesSysctlsAndDatapath() throws {
        let fixture = try ConfigFixture(for: self)
        let desired = try fixture.loaded(AcceptedConfigs.base).desired
        XCTAssertEqual(desired.routeProtocol, 77)
        XCTAssertEqual(Set(desired.routes.map { "\($0.destination) \($0.device) \($0.table) \($0.metric) \($0.origin)" }), [
            "2001:db8:1::/64 private0 254 1024 gateway lan_prefix",
            "2001:db8:1::100/128 wg0 254 1024 peer alice-laptop",
            "2001:db8:1::101/128 wg0 254 1024 peer bob-phone",
            "2001:db8:5::/64 wg0 254 1024 peer bob-phone",
            "2001:db8:2::/64 wg0 100 10 explicit",
        ])
        XCTAssertEqual(desired.routes.first { $0.origin == .explicit }?.gateway, IPAddress("fe80::1"))
        XCTAssertEqual(Set(desired.proxies.map { "\($0.address) \($0.device)" }),
                       ["2001:db8:1::100 private0", "2001:db8:1::101 private0", "2001:db8:1::200 private0"])
        XCTAssertEqual(Set(desired.sysctls.map { "\($0.sysctl)=\($0.value)" }),
                       ["net.ipv6.conf.private0.forwarding=1", "net.ipv6.conf.private0.proxy_ndp=1"])
        XCTAssertEqual(desired.safetyChecks.map { "\($0.sysctl)=\($0.expected)" }, ["net.ipv6.conf.all.forwarding=0"])
        XCTAssertEqual(desired.datapath?.lan, "private0")
        XCTAssertEqual(desired.gateway, DesiredGateway(tunnel: "wg0", lan: "private0", lanPrefix: IPPrefix("2001:db8:1::/64")!))
        XCTAssertEqual(Set(desired.datapath?.entries.map(\.description) ?? []), [
            "tunnel-to-lan 2001:db8:1::/64", "lan-to-tunnel 2001:db8:1::100/128",
            "lan-to-tunnel 2001:db8:1::101/128", "lan-to-tunnel 2001:db8:5::/64",
        ])
        let alice = try XCTUnwrap(desired.devices.first?.peers.first)
        XCTAssertNotNil(alice.presharedKey)
        XCTAssertEqual(alice.persistentKeepalive, 25)
        XCTAssertEqual(alice.endpoint, .address(Endpoint("[2001:db8:ff::2]:51820")!))
        XCTAssertEqual(desired.devices.first?.peers.last?.endpoint, .host("vpn.example.com", port: 51820))
        XCTAssertEqual(desired.devices.first?.listenPort, 51820)
        XCTAssertNotNil(desired.devices.first?.privateKey)
    }

    func testICMPErrorSourcesAndRateLimit() throws {
        let fixture = try ConfigFixture(for: self)
        XCTAssertEqual(try fixture.loaded(AcceptedConfigs.base).desired.datapath?.icmp, DatapathICMP())
        let text = AcceptedConfigs.base.replacingOccurrences(
            of: "  allow_lan_anycast: false\n",
            with: "  allow_lan_anycast: false\n  icmp_source_lan: fe80::1\n  icmp_source_tunnel: 2001:db8:1::1\n  icmp_ratelimit: 250ms\n")
        XCTAssertEqual(try fixture.loaded(text).desired.datapath?.icmp,
                       DatapathICMP(sourceLAN: IPAddress("fe80::1"), sourceTunnel: IPAddress("2001:db8:1::1"), rateLimit: .milliseconds(250)))
        let wrong = text.replacingOccurrences(of: "icmp_source_lan: fe80::1", with: "icmp_source_lan: 10.0.0.1")
            .replacingOccurrences(of: "icmp_ratelimit: 250ms", with: "icmp_ratelimit: 2h")
        let errors = try fixture.errors(wrong)
        XCTAssertEqual(errors.count, 2, "\(errors)")
        XCTAssertTrue(errors.contains { $0.hasSuffix("icmp_source_lan: \"10.0.0.1\" is not an IPv6 address") }, "\(errors)")
        XCTAssertTrue(errors.contains { $0.hasSuffix("icmp_ratelimit: at most 1h (0 limits nothing)") }, "\(errors)")
        // 0 turns the limit off, as the README says; other intervals still refuse it.
        for zero in ["0", "0ms", "0s"] {
            let off = text.replacingOccurrences(of: "icmp_ratelimit: 250ms", with: "icmp_ratelimit: \(zero)")
            XCTAssertEqual(try fixture.loaded(off).desired.datapath?.icmp.rateLimit, .zero, zero)
        }
        let negative = try fixture.errors(text.replacingOccurrences(of: "icmp_ratelimit: 250ms", with: "icmp_ratelimit: -1"))
        XCTAssertTrue(negative.contains { $0.hasSuffix("icmp_ratelimit: \"-1\" is not an interval (write it like 0, 500ms, 2s, 1m or 1m30s)") }, "\(negative)")
        let poll = try fixture.errors(AcceptedConfigs.base.replacingOccurrences(of: "proxy_poll: 500ms", with: "proxy_poll: 0"))
        XCTAssertTrue(poll.contains { $0.hasSuffix("proxy_poll: \"0\" is not an interval (write it like 500ms, 2s, 1m or 1m30s)") }, "\(poll)")
    }

    /// An ICMPv6 error's source must be a unicast address the gateway can hold (RFC 4443 2.2):
    /// refused with the place, not sent from `ff02::1` or `::1`, nor silently turned off by `::`.
    func testICMPErrorSourcesMustBeUnicast() throws {
        let fixture = try ConfigFixture(for: self)
        func config(lan: String, tunnel: String) -> String {
            AcceptedConfigs.base.replacingOccurrences(
                of: "  allow_lan_anycast: false\n",
                with: "  allow_lan_anycast: false\n  icmp_source_lan: \"\(lan)\"\n  icmp_source_tunnel: \"\(tunnel)\"\n")
        }
        let text = config(lan: "2001:db8:1::1", tunnel: "2001:db8:1::1")
        let line = try XCTUnwrap(text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.contains("icmp_source_lan") }) + 1
        let cases: [(String, String)] = [("ff02::1", "a multicast address"), ("::", "the unspecified address"),
                                         ("::1", "the loopback address"), ("::ffff:192.0.2.1", "an IPv4-mapped address")]
        for (address, what) in cases {
            let errors = try fixture.errors(config(lan: address, tunnel: address))
            XCTAssertEqual(errors.count, 2, "\(address): \(errors)")
            XCTAssertTrue(errors.contains { $0.hasPrefix("wgkeeper.yaml:\(line):") && $0.contains("icmp_source_lan: ") && $0.contains(" is \(what)") }, "\(errors)")
            XCTAssertTrue(errors.contains { $0.hasPrefix("wgkeeper.yaml:\(line + 1):") && $0.contains("icmp_source_tunnel: ") && $0.contains(" is \(what)") }, "\(errors)")
        }
        // Link-local serves the LAN (on-link) but never the clients (their peer's allowed IPs).
        XCTAssertEqual(try fixture.loaded(config(lan: "fe80::1", tunnel: "2001:db8:1::1")).desired.datapath?.icmp.sourceLAN, IPAddress("fe80::1"))
        let linkLocal = try fixture.errors(config(lan: "fe80::1", tunnel: "fe80::1"))
        XCTAssertEqual(linkLocal.count, 1, "\(linkLocal)")
        XCTAssertTrue(linkLocal[0].hasPrefix("wgkeeper.yaml:\(line + 1):") && linkLocal[0].contains("icmp_source_tunnel: fe80::1 is link-local"), "\(linkLocal)")
    }

    /// `ndp: datapath`: no proxy entries and no LAN sysctl; the LAN program answers for the
    /// peers' /128s inside the LAN prefix. Explicit proxies stay what they are.
    func testDatapathNeighbourDiscoveryWritesNoProxyNorSysctl() throws {
        let fixture = try ConfigFixture(for: self)
        let text = AcceptedConfigs.base.replacingOccurrences(of: "proxy_ndp: true\n", with: "proxy_ndp: true\n  ndp: datapath\n")
        let desired = try fixture.loaded(text).desired
        XCTAssertEqual(desired.proxies.map { "\($0.address) \($0.origin)" }, ["2001:db8:1::200 explicit"])
        XCTAssertTrue(desired.sysctls.isEmpty)
        XCTAssertEqual(desired.safetyChecks.map { "\($0.sysctl)=\($0.expected)" }, ["net.ipv6.conf.all.forwarding=0"])
        XCTAssertEqual(desired.datapath?.neighbourDiscovery?.addresses.map(\.description), ["2001:db8:1::100", "2001:db8:1::101"])
        XCTAssertEqual(desired.gateway?.ndp, .datapath)
        XCTAssertEqual(Set(desired.datapath?.entries.map(\.description) ?? []), [
            "tunnel-to-lan 2001:db8:1::/64", "lan-to-tunnel 2001:db8:1::100/128",
            "lan-to-tunnel 2001:db8:1::101/128", "lan-to-tunnel 2001:db8:5::/64",
        ])
        // Written out, the default is the kernel's proxy entries.
        let kernel = try fixture.loaded(text.replacingOccurrences(of: "ndp: datapath", with: "ndp: kernel")).desired
        XCTAssertEqual(kernel, try fixture.loaded(AcceptedConfigs.base).desired)
        XCTAssertNil(kernel.datapath?.neighbourDiscovery)
        // proxy_ndp: false answers nothing, in either mode.
        let off = try fixture.loaded(text.replacingOccurrences(of: "proxy_ndp: true", with: "proxy_ndp: false")).desired
        XCTAssertNil(off.datapath?.neighbourDiscovery)
        XCTAssertTrue(off.sysctls.isEmpty)
    }

    func testDatapathNeighbourDiscoveryNeedsRedirect() throws {
        let fixture = try ConfigFixture(for: self)
        let text = AcceptedConfigs.base.replacingOccurrences(of: "proxy_ndp: true\n", with: "proxy_ndp: true\n  ndp: datapath\n")
        XCTAssertEqual(try fixture.errors(text.replacingOccurrences(of: "redirect: true", with: "redirect: false")), [
            "wgkeeper.yaml:29:8: ndp: datapath needs redirect: true (the LAN's TC program answers the solicitations)",
        ])
        XCTAssertEqual(try fixture.errors(text.replacingOccurrences(of: "ndp: datapath", with: "ndp: router")), [
            "wgkeeper.yaml:29:8: ndp: expected kernel or datapath, got \"router\"",
        ])
    }

    func testNoProxiesNorDatapathWhenSwitchedOff() throws {
        let fixture = try ConfigFixture(for: self)
        let text = AcceptedConfigs.base.replacingOccurrences(of: "proxy_ndp: true", with: "proxy_ndp: false")
            .replacingOccurrences(of: "redirect: true", with: "redirect: false")
        let desired = try fixture.loaded(text).desired
        XCTAssertEqual(desired.proxies.map(\.origin), [.explicit])
        XCTAssertTrue(desired.sysctls.isEmpty)
        XCTAssertNil(desired.datapath)
    }
}

final class IndexTableTests: XCTestCase {
    /// Each key's first index is kept and returned for every later one, past the capacity it
    /// was made for (it grows), with keys whose hashes collide (the table's probes) among them.
    func testTheFirstIndexOfEachKeyIsKeptThroughGrowth() {
        struct Key: Hashable {
            var value: Int
            func hash(into hasher: inout Hasher) { hasher.combine(value % 7) }
        }
        var objects: [Key] = []
        var table = IndexTable(capacity: 4)
        var generator = SystemRandomNumberGenerator()
        var first: [Int: Int] = [:]
        for _ in 0..<5_000 {
            let key = Key(value: Int.random(in: 0..<1_500, using: &generator))
            let found = table.insert(key, index: objects.count, keyAt: { objects[$0] })
            XCTAssertEqual(found, first[key.value], "\(key.value)")
            if found == nil {
                first[key.value] = objects.count
                objects.append(key)
            }
        }
        XCTAssertEqual(objects.count, first.count)
    }
}
