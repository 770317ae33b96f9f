import Netlink
import Reconciler
import XCTest

/// Table-driven: each case edits an in-sync kernel (or the desired state) and names the lines
/// the plan must print, in order.
final class PlanTests: XCTestCase {
    struct Case: Sendable {
        var name: String
        var desired = F.desired()
        var lastApplied: LastApplied?
        var records = Records()
        var edit: @Sendable (inout ObservedState) -> Void = { _ in }
        var changes: [String]
        var pending: [String] = []
        var conflicts: [String] = []
        var refused: [String] = []
    }

    static let cases: [Case] = [
        Case(name: "in sync", changes: []),
        Case(name: "empty kernel", edit: { o in
            o.routes = []; o.proxies = []; o.sysctls = [:]; o.datapath = []
            o.wireGuard = ["wg0": WireGuardDevice(name: "wg0", index: 5)]
        }, changes: [
            "~ device wg0 private_key: differs; listen_port: 51820 (was 0)",
            "~ sysctl net.ipv6.conf.private0.forwarding = 1 (was unread)",
            "~ sysctl net.ipv6.conf.private0.proxy_ndp = 1 (was unread)",
            "+ peer alice dev wg0 allowed_ips: 2001:db8:1::100/128",
            "+ peer bob dev wg0 allowed_ips: 2001:db8:1::101/128,2001:db8:7::/64; endpoint: [2001:db8:ff::2]:51820",
            "+ route 2001:db8:1::/64 dev private0 proto 77",
            "+ route 2001:db8:1::100/128 dev wg0 proto 77",
            "+ route 2001:db8:1::101/128 dev wg0 proto 77",
            "+ route 2001:db8:7::/64 dev wg0 proto 77",
            "+ proxy 2001:db8:1::100 dev private0",
            "+ proxy 2001:db8:1::101 dev private0",
            "+ datapath lan-to-tunnel 2001:db8:1::100/128",
            "+ datapath lan-to-tunnel 2001:db8:1::101/128",
            "+ datapath lan-to-tunnel 2001:db8:7::/64",
            "+ datapath tunnel-to-lan 2001:db8:1::/64",
        ]),
        Case(name: "route on the wrong device", edit: { o in
            o.routes[1] = F.route("2001:db8:1::100/128", 6)
        }, changes: ["~ route 2001:db8:1::100/128 dev wg0 proto 77 (was 2001:db8:1::100/128 dev private0 proto 77)"]),
        Case(name: "our route with attributes wgkeeper never sets (an MTU, an encapsulation) is replaced", edit: { o in
            o.routes[1].extras = [.metrics, .encapsulation]
        }, changes: ["~ route 2001:db8:1::100/128 dev wg0 proto 77 (was 2001:db8:1::100/128 dev wg0 proto 77 with metrics, encap)"]),
        Case(name: "our proxy entry with the router flag, which wgkeeper never sets, is written again", edit: { o in
            o.proxies = o.proxies.map { var p = $0; p.router = p.address == F.address("2001:db8:1::101"); return p }
        }, changes: ["~ proxy 2001:db8:1::101 dev private0 (was router)"]),
        Case(name: "route with another gateway", desired: {
            var d = F.desired(); d.routes.append(DesiredRoute(destination: F.prefix("2001:db8:2::/64"), device: "wg0",
                                                              gateway: F.address("fe80::1"), table: 100, metric: 10)); return d
        }(), edit: { o in
            o.routes.append(F.route("2001:db8:2::/64", 5, metric: 10, table: 100, gateway: "fe80::2"))
        }, changes: ["~ route 2001:db8:2::/64 via fe80::1 dev wg0 table 100 metric 10 proto 77 (was 2001:db8:2::/64 via fe80::2 dev wg0 table 100 metric 10 proto 77)"]),
        Case(name: "unexpected routes: ours removed on any interface, foreign kept", edit: { o in
            o.routes += [F.route("2001:db8:3::/64", 5), F.route("2001:db8:4::/64", 5, proto: 4), F.route("2001:db8:5::/64", 2),
                         F.route("2001:db8:6::/64", 2, proto: 4)]
        }, changes: ["- route 2001:db8:3::/64 dev wg0 proto 77", "- route 2001:db8:5::/64 dev eth0 proto 77"]),
        Case(name: "our route at a desired identity on another interface is moved, not a conflict", edit: { o in
            o.routes[1] = F.route("2001:db8:1::100/128", 2)
        }, changes: ["~ route 2001:db8:1::100/128 dev wg0 proto 77 (was 2001:db8:1::100/128 dev eth0 proto 77)"]),
        Case(name: "same destination, other metric is another route", edit: { o in
            o.routes.append(F.route("2001:db8:1::100/128", 5, metric: 5))
        }, changes: ["- route 2001:db8:1::100/128 dev wg0 metric 5 proto 77"]),
        Case(name: "foreign route holds a desired identity", edit: { o in
            o.routes[1] = F.route("2001:db8:1::100/128", 5, proto: 4)
        }, changes: [], conflicts: [
            "route 2001:db8:1::100/128 dev wg0 proto 77: held by a foreign route 2001:db8:1::100/128 dev wg0 proto 4",
        ]),
        Case(name: "proxies: missing, unexpected, foreign", edit: { o in
            o.proxies = [F.proxy("2001:db8:1::101", proto: 0), F.proxy("2001:db8:1::9"), F.proxy("2001:db8:1::8", 2),
                         F.proxy("2001:db8:1::7", proto: 0)]
        }, changes: ["+ proxy 2001:db8:1::100 dev private0", "- proxy 2001:db8:1::8 dev eth0", "- proxy 2001:db8:1::9 dev private0"], conflicts: [
            "proxy 2001:db8:1::101 dev private0: held by a foreign proxy 2001:db8:1::101 dev private0 proto 0",
        ]),
        Case(name: "sysctl differs", edit: { o in o.sysctls["net/ipv6/conf/private0/proxy_ndp"] = "0" },
             changes: ["~ sysctl net.ipv6.conf.private0.proxy_ndp = 1 (was 0)"]),
        Case(name: "allowed IP added: only the new one is sent", desired: F.desired(peers: [F.alice, {
            var b = F.bob; b.allowedIPs.append(F.prefix("2001:db8:1::102/128")); return b }()]), edit: { o in
            o.routes.append(F.route("2001:db8:1::102/128", 5)); o.proxies.append(F.proxy("2001:db8:1::102"))
            o.datapath?.insert(DatapathEntry(direction: .lanToTunnel, prefix: F.prefix("2001:db8:1::102/128")))
        }, changes: ["~ peer bob dev wg0 allowed_ips: +2001:db8:1::102/128"]),
        Case(name: "allowed IP removed: the list is replaced", desired: F.desired(peers: [F.alice, {
            var b = F.bob; b.allowedIPs = [F.prefix("2001:db8:1::101/128")]; return b }()]), edit: { o in
            o.routes.removeAll { $0.destination == F.prefix("2001:db8:7::/64") }
            o.datapath?.remove(DatapathEntry(direction: .lanToTunnel, prefix: F.prefix("2001:db8:7::/64")))
        }, changes: ["~ peer bob dev wg0 allowed_ips: -2001:db8:7::/64"]),
        Case(name: "keepalive and preshared key", edit: { o in
            o.wireGuard!["wg0"]!.peers[0].persistentKeepalive = 10
            o.wireGuard!["wg0"]!.peers[1].presharedKey = nil
        }, changes: ["~ peer alice dev wg0 persistent_keepalive: 0 (was 10)", "~ peer bob dev wg0 preshared_key: differs"]),
        Case(name: "unknown peer removed", edit: { o in
            o.wireGuard!["wg0"]!.peers.append(WireGuardPeer(publicKey: F.key(9)))
        }, changes: ["- peer \(F.key(9).base64) dev wg0"]),
        Case(name: "unknown peer kept without prune_peers", desired: F.desired(prune: false), edit: { o in
            o.wireGuard!["wg0"]!.peers.append(WireGuardPeer(publicKey: F.key(9)))
        }, changes: []),
        Case(name: "without prune_peers a peer wgkeeper configured goes when the configuration drops it",
             desired: F.desired(peers: [F.alice], prune: false),
             records: Records(peers: ["wg0": [F.alice.publicKey.base64, F.bob.publicKey.base64]]), edit: { o in
            o.wireGuard!["wg0"]!.peers.append(WireGuardPeer(publicKey: F.key(9)))
            o.routes.removeAll { $0.outputInterface == 5 && $0.destination != F.prefix("2001:db8:1::100/128") }
            o.proxies.removeAll { $0.address == F.address("2001:db8:1::101") }
            o.datapath = o.datapath?.filter { $0.direction != .lanToTunnel || $0.prefix == F.prefix("2001:db8:1::100/128") }
        }, changes: ["- peer \(F.bob.publicKey.base64) dev wg0"]),
        Case(name: "a device that leaves the configuration loses the peers wgkeeper configured, keeps the others",
             desired: { var d = F.desired(); d.devices[0].name = "wg1"; return d }(),
             records: Records(peers: ["wg0": [F.alice.publicKey.base64]]), edit: { o in
            o.wireGuard!["wg0"]!.peers.append(WireGuardPeer(publicKey: F.key(9)))
        }, changes: ["+ link wg1 type wireguard", "- peer \(F.alice.publicKey.base64) dev wg0"], pending: [
            "peer alice dev wg1: device wg1 missing: created first", "peer bob dev wg1: device wg1 missing: created first",
        ]),
        Case(name: "roamed endpoint is left alone", edit: { o in
            o.wireGuard!["wg0"]!.peers[1].endpoint = Endpoint("[2001:db8:ee::7]:40000")
        }, changes: []),
        Case(name: "roamed endpoint, configuration unchanged since last apply", lastApplied: LastApplied(F.desired()), edit: { o in
            o.wireGuard!["wg0"]!.peers[1].endpoint = Endpoint("[2001:db8:ee::7]:40000")
        }, changes: []),
        Case(name: "configured endpoint changed since last apply", lastApplied: {
            var record = LastApplied(F.desired())
            record.record(device: "wg0", publicKey: F.bob.publicKey, endpoint: .address(Endpoint("[2001:db8:ff::1]:51820")!))
            return record
        }(), edit: { o in
            o.wireGuard!["wg0"]!.peers[1].endpoint = Endpoint("[2001:db8:ee::7]:40000")
        }, changes: ["~ peer bob dev wg0 endpoint: [2001:db8:ff::2]:51820 (was [2001:db8:ee::7]:40000)"]),
        Case(name: "peer without any endpoint gets the configured one", edit: { o in
            o.wireGuard!["wg0"]!.peers[1].endpoint = nil
        }, changes: ["~ peer bob dev wg0 endpoint: [2001:db8:ff::2]:51820 (was none)"]),
        Case(name: "missing LAN device: pending, not changes", edit: { o in
            o.links.removeAll { $0.name == "private0" }
            o.routes.removeAll { $0.outputInterface == 6 }
            o.proxies.removeAll { $0.interfaceIndex == 6 }
        }, changes: [], pending: [
            "sysctl net.ipv6.conf.private0.forwarding: device private0 missing",
            "sysctl net.ipv6.conf.private0.proxy_ndp: device private0 missing",
            "route 2001:db8:1::/64 dev private0: device private0 missing",
            "proxy 2001:db8:1::100 dev private0: device private0 missing",
            "proxy 2001:db8:1::101 dev private0: device private0 missing",
            "datapath lan-to-tunnel 2001:db8:1::100/128: device private0 missing",
            "datapath lan-to-tunnel 2001:db8:1::101/128: device private0 missing",
            "datapath lan-to-tunnel 2001:db8:7::/64: device private0 missing",
            "datapath tunnel-to-lan 2001:db8:1::/64: device private0 missing",
        ]),
        Case(name: "WireGuard unreadable: peers pending", edit: { o in o.wireGuard = nil }, changes: [], pending: [
            "device wg0: the WireGuard generic netlink family is not available (is the wireguard module loaded?)",
            "peer alice dev wg0: the WireGuard generic netlink family is not available (is the wireguard module loaded?)",
            "peer bob dev wg0: the WireGuard generic netlink family is not available (is the wireguard module loaded?)",
        ]),
        Case(name: "missing WireGuard device: created, peers wait for it", edit: { o in
            o.links.removeAll { $0.name == "wg0" }
            o.routes.removeAll { $0.outputInterface == 5 }
            o.wireGuard = [:]
        }, changes: ["+ link wg0 type wireguard"], pending: [
            "peer alice dev wg0: device wg0 missing: created first",
            "peer bob dev wg0: device wg0 missing: created first",
            "route 2001:db8:1::100/128 dev wg0: device wg0 missing",
            "route 2001:db8:1::101/128 dev wg0: device wg0 missing",
            "route 2001:db8:7::/64 dev wg0: device wg0 missing",
            "datapath lan-to-tunnel 2001:db8:1::100/128: device wg0 missing",
            "datapath lan-to-tunnel 2001:db8:1::101/128: device wg0 missing",
            "datapath lan-to-tunnel 2001:db8:7::/64: device wg0 missing",
            "datapath tunnel-to-lan 2001:db8:1::/64: device wg0 missing",
        ]),
        Case(name: "WireGuard device down: set up", edit: { o in o.links[1].flags = 0 }, changes: ["~ link wg0 up (was down)"]),
        Case(name: "not a WireGuard device: pending", edit: { o in o.links[1].kind = "veth" }, changes: [], pending: [
            "device wg0: wg0 is a veth device, not WireGuard",
            "peer alice dev wg0: wg0 is a veth device, not WireGuard",
            "peer bob dev wg0: wg0 is a veth device, not WireGuard",
        ]),
        Case(name: "a device wgkeeper created and no longer wants is deleted; one it did not create stays",
             records: Records(createdDevices: ["wg7"]), edit: { o in
            o.links += [Link(index: 9, name: "wg7", kind: "wireguard"), Link(index: 10, name: "wg8", kind: "wireguard")]
            o.routes.append(F.route("2001:db8:70::/64", 9))  // goes with the device, no removal of its own
        }, changes: ["- link wg7"]),
        Case(name: "a sysctl no longer managed goes back to its recorded value", desired: {
            var d = F.desired(); d.sysctls = []; return d
        }(), records: Records(sysctls: ["net/ipv6/conf/private0/forwarding": "0", "net/ipv6/conf/private0/proxy_ndp": "1"]),
             changes: ["~ sysctl net.ipv6.conf.private0.forwarding = 0 (was 1; restoring the value found before wgkeeper's first write)"]),
        Case(name: "a VLAN's sysctl keeps its dot in the path", desired: {
            var d = F.desired(); d.sysctls = [DesiredSysctl(interface: "eth0.100", name: "proxy_ndp", value: "1")]; return d
        }(), edit: { o in
            o.links.append(Link(index: 11, name: "eth0.100", kind: "vlan"))
            o.sysctls["net/ipv6/conf/eth0.100/proxy_ndp"] = "0"
        }, changes: ["~ sysctl net.ipv6.conf.eth0/100.proxy_ndp = 1 (was 0)"]),
        Case(name: "LAN forwarding is refused while the LAN holds a /64", desired: {
            var d = F.desired(); d.gateway = DesiredGateway(tunnel: "wg0", lan: "private0", lanPrefix: F.prefix("2001:db8:1::/64")); return d
        }(), edit: { o in
            o.sysctls["net/ipv6/conf/private0/forwarding"] = "0"
            o.addresses = [Address(prefix: F.prefix("2001:db8:1::1/64"), interfaceIndex: 6)]
        }, changes: [], refused: [
            "sysctl net.ipv6.conf.private0.forwarding = 1: refusing net.ipv6.conf.private0.forwarding=1: private0 holds 2001:db8:1::1/64; with forwarding on, the kernel would join the subnet-router anycast 2001:db8:1:: and answer for the LAN's router. Keep only link-local or /128 addresses on private0 (an on-link route covers the prefix), or set gateway.allow_lan_anycast: true",
        ]),
        Case(name: "LAN forwarding wgkeeper set goes back when a /64 appears; the refusal is counted", desired: {
            var d = F.desired(); d.gateway = DesiredGateway(tunnel: "wg0", lan: "private0", lanPrefix: F.prefix("2001:db8:1::/64")); return d
        }(), records: Records(sysctls: ["net/ipv6/conf/private0/forwarding": "0"]), edit: { o in
            o.sysctls["net/ipv6/conf/private0/forwarding"] = "1"
            o.addresses = [Address(prefix: F.prefix("2001:db8:1::1/64"), interfaceIndex: 6)]
        }, changes: [
            "~ sysctl net.ipv6.conf.private0.forwarding = 0 (was 1; refused now, restoring the value found before wgkeeper's first write)",
        ], refused: [
            "sysctl net.ipv6.conf.private0.forwarding = 1: refusing net.ipv6.conf.private0.forwarding=1: private0 holds 2001:db8:1::1/64; with forwarding on, the kernel would join the subnet-router anycast 2001:db8:1:: and answer for the LAN's router. Keep only link-local or /128 addresses on private0 (an on-link route covers the prefix), or set gateway.allow_lan_anycast: true",
        ]),
        Case(name: "LAN forwarding the operator set is refused and reported, not undone", desired: {
            var d = F.desired(); d.gateway = DesiredGateway(tunnel: "wg0", lan: "private0", lanPrefix: F.prefix("2001:db8:1::/64")); return d
        }(), records: Records(sysctls: ["net/ipv6/conf/private0/forwarding": "1"]), edit: { o in
            o.sysctls["net/ipv6/conf/private0/forwarding"] = "1"
            o.addresses = [Address(prefix: F.prefix("2001:db8:1::1/64"), interfaceIndex: 6)]
        }, changes: [], refused: [
            "sysctl net.ipv6.conf.private0.forwarding = 1: refusing net.ipv6.conf.private0.forwarding=1: private0 holds 2001:db8:1::1/64; with forwarding on, the kernel would join the subnet-router anycast 2001:db8:1:: and answer for the LAN's router. Keep only link-local or /128 addresses on private0 (an on-link route covers the prefix), or set gateway.allow_lan_anycast: true",
        ]),
        Case(name: "an allowed IP holding the gateway's own LAN address: nothing of it is installed, what is there goes",
             desired: F.desiredWithGateway(), edit: { o in
            o.addresses = [Address(prefix: F.prefix("2001:db8:1::101/128"), interfaceIndex: 6),
                           Address(prefix: F.prefix("fe80::1/64"), interfaceIndex: 6),
                           Address(prefix: F.prefix("2001:db8:1::100/128"), interfaceIndex: 5)]  // on wg0: not the LAN's
        }, changes: [
            "~ peer bob dev wg0 allowed_ips: -2001:db8:1::101/128",
            "- route 2001:db8:1::101/128 dev wg0 proto 77",
            "- proxy 2001:db8:1::101 dev private0",
            "- datapath lan-to-tunnel 2001:db8:1::101/128",
        ], refused: [
            "peer bob dev wg0: \(F.ownAddressRefusal)",
            "route 2001:db8:1::101/128 dev wg0: \(F.ownAddressRefusal)",
            "proxy 2001:db8:1::101 dev private0: \(F.ownAddressRefusal)",
            "datapath lan-to-tunnel 2001:db8:1::101/128: \(F.ownAddressRefusal)",
        ]),
        Case(name: "an allowed IP holding the gateway's own LAN address is not written on an empty kernel",
             desired: F.desiredWithGateway(), edit: { o in
            o.addresses = [Address(prefix: F.prefix("2001:db8:1::101/128"), interfaceIndex: 6)]
            o.routes = []; o.proxies = []; o.datapath = []
            o.wireGuard = ["wg0": WireGuardDevice(name: "wg0", index: 5, privateKey: F.privateKey, listenPort: 51820)]
        }, changes: [
            "+ peer alice dev wg0 allowed_ips: 2001:db8:1::100/128",
            "+ peer bob dev wg0 allowed_ips: 2001:db8:7::/64; endpoint: [2001:db8:ff::2]:51820",
            "+ route 2001:db8:1::/64 dev private0 proto 77",
            "+ route 2001:db8:1::100/128 dev wg0 proto 77",
            "+ route 2001:db8:7::/64 dev wg0 proto 77",
            "+ proxy 2001:db8:1::100 dev private0",
            "+ datapath lan-to-tunnel 2001:db8:1::100/128",
            "+ datapath lan-to-tunnel 2001:db8:7::/64",
            "+ datapath tunnel-to-lan 2001:db8:1::/64",
        ], refused: [
            "peer bob dev wg0: \(F.ownAddressRefusal)",
            "route 2001:db8:1::101/128 dev wg0: \(F.ownAddressRefusal)",
            "proxy 2001:db8:1::101 dev private0: \(F.ownAddressRefusal)",
            "datapath lan-to-tunnel 2001:db8:1::101/128: \(F.ownAddressRefusal)",
        ]),
        Case(name: "an allowed IP holding the gateway's own LAN address, allowed by allow_unsafe_allowed_ips",
             desired: F.desiredWithGateway(allowUnsafe: true), edit: { o in
            o.addresses = [Address(prefix: F.prefix("2001:db8:1::101/128"), interfaceIndex: 6)]
        }, changes: []),
        Case(name: "datapath entries", edit: { o in
            o.datapath = [DatapathEntry(direction: .lanToTunnel, prefix: F.prefix("2001:db8:1::100/128")),
                          DatapathEntry(direction: .tunnelToLAN, prefix: F.prefix("2001:db8:1::/64")),
                          DatapathEntry(direction: .lanToTunnel, prefix: F.prefix("2001:db8:1::99/128")),
                          DatapathEntry(direction: .lanToTunnel, prefix: F.prefix("2001:db8:7::/64"))]
        }, changes: ["+ datapath lan-to-tunnel 2001:db8:1::101/128", "- datapath lan-to-tunnel 2001:db8:1::99/128"]),
    ]

    func testCases() {
        for c in Self.cases {
            var observed = F.inSync()
            c.edit(&observed)
            let result = plan(c.desired, observed, lastApplied: c.lastApplied, records: c.records)
            XCTAssertEqual(result.changes.map(\.description), c.changes, c.name)
            XCTAssertEqual(result.pending.map(\.description), c.pending, c.name)
            XCTAssertEqual(result.conflicts.map(\.description), c.conflicts, c.name)
            XCTAssertEqual(result.refused.map(\.description), c.refused, c.name)
        }
    }

    func testChangesAreOrderedByKind() {
        var observed = F.inSync()
        observed.routes = []; observed.proxies = []; observed.sysctls = [:]; observed.datapath = []
        observed.wireGuard = ["wg0": WireGuardDevice(name: "wg0", index: 5)]
        let kinds = plan(F.desired(), observed).changes.map(\.kind)
        XCTAssertEqual(kinds, kinds.sorted())
        XCTAssertEqual(Set(kinds), Set(Change.Kind.allCases))
    }

    func testPeerChangesAreMinimal() throws {
        var b = F.bob
        b.allowedIPs.append(F.prefix("2001:db8:1::102/128"))
        var observed = F.inSync()
        let added = try XCTUnwrap(plan(F.desired(peers: [F.alice, b]), observed).changes.first)
        guard case .peer(_, _, let change, _) = added.object else { return XCTFail("\(added)") }
        XCTAssertEqual(change, WireGuardPeerChange(publicKey: b.publicKey, updateOnly: true, allowedIPs: [F.prefix("2001:db8:1::102/128")]))

        observed = F.inSync(peers: [F.alice, b])
        let removed = try XCTUnwrap(plan(F.desired(), observed).changes.first)
        guard case .peer(_, _, let change, _) = removed.object else { return XCTFail("\(removed)") }
        XCTAssertTrue(change.replaceAllowedIPs)
        XCTAssertEqual(change.allowedIPs, F.bob.allowedIPs.sorted())
        XCTAssertNil(change.endpoint)
        XCTAssertNil(change.presharedKey)
        XCTAssertEqual(removed.reason, .differs(["allowed_ips"]))
    }

    func testOneChangedPeerAmongTenThousand() {
        let peers = (0..<10_000).map { i in
            DesiredPeer(name: "peer\(i)", publicKey: WireGuardKey(bytes: withUnsafeBytes(of: UInt64(i + 1).bigEndian, Array.init) + [UInt8](repeating: 7, count: 24))!,
                        allowedIPs: [F.prefix("2001:db8:8::\(String(i + 1, radix: 16))/128")])
        }
        var observed = F.inSync(peers: peers)
        XCTAssertEqual(plan(F.desired(peers: peers), observed).changes, [])
        observed.wireGuard!["wg0"]!.peers[4711].allowedIPs.append(F.prefix("2001:db8:9::/64"))
        let changes = plan(F.desired(peers: peers), observed).changes
        XCTAssertEqual(changes.map(\.description), ["~ peer peer4711 dev wg0 allowed_ips: -2001:db8:9::/64"])
    }

    func testDeterministicWhateverTheObservedOrder() {
        var observed = F.inSync()
        observed.routes = []; observed.proxies = [F.proxy("2001:db8:1::9"), F.proxy("2001:db8:1::8")]
        let first = plan(F.desired(), observed)
        observed.links.reverse(); observed.proxies.reverse()
        XCTAssertEqual(plan(F.desired(), observed), first)
    }

    func testForwardingEverywhereIsAViolationNotAChange() {
        var observed = F.inSync()
        observed.sysctls["net/ipv6/conf/all/forwarding"] = "1"
        let result = plan(F.desired(), observed)
        XCTAssertEqual(result.changes, [])
        XCTAssertEqual(result.violations.map(\.description), ["net.ipv6.conf.all.forwarding is 1, must be 0: no router"])
    }

    func testHostEndpointIsResolvedByTheApplier() throws {
        var carol = DesiredPeer(name: "carol", publicKey: F.key(3), endpoint: .host("vpn.example.com", port: 51820))
        carol.allowedIPs = [F.prefix("2001:db8:6::1/128")]
        var observed = F.inSync()
        observed.routes.append(F.route("2001:db8:6::1/128", 5))
        observed.datapath?.insert(DatapathEntry(direction: .lanToTunnel, prefix: F.prefix("2001:db8:6::1/128")))
        let change = try XCTUnwrap(plan(F.desired(peers: [F.alice, F.bob, carol]), observed).changes.first)
        XCTAssertEqual(change.description, "+ peer carol dev wg0 allowed_ips: 2001:db8:6::1/128; endpoint: vpn.example.com:51820")
        let resolved = Endpoint("[2001:db8:ff::9]:51820")!
        guard case .wireGuard("wg0", let deviceChange) = change.operation(resolve: { _ in resolved }) else { return XCTFail() }
        XCTAssertEqual(deviceChange.peers.first?.endpoint, resolved)
    }

    func testOperations() {
        let route = F.route("2001:db8:1::100/128", 5)
        let add = Change(.add, .route(route, device: "wg0"), reason: .missing)
        guard case .netlink(let request) = add.operation() else { return XCTFail() }
        XCTAssertEqual(request.summary, route.addRequest().summary)
        let remove = Change(.remove, .proxy(F.proxy("2001:db8:1::9"), device: "private0"), reason: .unexpected)
        guard case .netlink(let delete) = remove.operation() else { return XCTFail() }
        XCTAssertEqual(delete.summary, F.proxy("2001:db8:1::9").deleteRequest().summary)
        let sysctl = Change(.replace, .sysctl(Sysctl.ipv6(interface: "private0", "forwarding"), value: "1", previous: "0"), reason: .differs(["value"]))
        guard case .sysctl(let key, "1") = sysctl.operation() else { return XCTFail() }
        XCTAssertEqual(key.key, "net/ipv6/conf/private0/forwarding")
    }

    func testNoSecretInAnyLine() {
        var observed = F.inSync()
        observed.wireGuard = ["wg0": WireGuardDevice(name: "wg0", index: 5)]
        let text = plan(F.desired(), observed).changes.map(\.description).joined(separator: "\n")
        XCTAssertFalse(text.contains(F.privateKey.key.base64))
        XCTAssertFalse(text.contains(F.psk.key.base64))
    }
}
