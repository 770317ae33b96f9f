import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// A peer's allowed IP holding an address the gateway has on the LAN: its route, proxy entry
/// and LAN-to-tunnel redirect would take the LAN's traffic for the gateway into the tunnel, so
/// none is installed while the LAN holds the address (a refusal `check` cannot make: only the
/// kernel knows the LAN's addresses).
final class OwnAddressSafetyTests: XCTestCase {
    func testAnAllowedIPHoldingTheGatewaysLANAddressIsRefusedUntilTheAddressGoes() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let pinRoot = try h.mountPinRoot(self)
        try h.writeConfig(h.gatewayConfig(
            runtime: ["proxy_poll: 200ms"], pinRoot: pinRoot,
            peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"]),
                    TestPeer("bob", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::1/128", "2001:db8:1::101/128"])],
            gateway: ["redirect: true"]))
        try h.start()

        func routes() throws -> Set<String> {
            Set(try ns.ipJSON("-6", "route", "show", "proto", "77").compactMap { $0["dst"] as? String })
        }
        func proxies() throws -> Set<String> {
            Set(try ns.ipJSON("-6", "neigh", "show", "proxy").compactMap { $0["dst"] as? String })
        }
        func redirects() throws -> Set<String> {
            let dump = try shell("bpftool", "-j", "map", "dump", "pinned", "\(pinRoot)/wg0/client_prefixes")
            let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [[String: Any]])
            return Set(entries.compactMap { entry -> String? in
                guard let key = (entry["key"] as? [String])?.compactMap({ UInt8($0.dropFirst(2), radix: 16) }), key.count == 20
                else { return nil }
                return "\(IPv6Address(bytes: Array(key[4...]))!)/\(key[0])"
            })
        }

        // Refused: nothing of 2001:db8:1::1/128; bob's other address and alice are installed.
        XCTAssertEqual(try routes(), ["2001:db8:1::/64", "2001:db8:1::100", "2001:db8:1::101"])
        XCTAssertEqual(try proxies(), ["2001:db8:1::100", "2001:db8:1::101"])
        XCTAssertEqual(try redirects(), ["2001:db8:1::100/128", "2001:db8:1::101/128"])
        let status = try h.status()
        XCTAssertEqual((status["failed"] as? [[String: Any]])?.count, 0, "\(status["failed"] ?? "")")
        let refused = try XCTUnwrap(status["refused"] as? [[String: Any]])
        XCTAssertEqual(Set(refused.compactMap { $0["object"] as? String }), [
            "peer bob dev wg0", "route 2001:db8:1::1/128 dev wg0", "proxy 2001:db8:1::1 dev private0",
            "datapath lan-to-tunnel 2001:db8:1::1/128",
        ])
        let why = try XCTUnwrap(refused.first?["reason"] as? String)
        XCTAssertTrue(why.hasPrefix("refusing allowed IP 2001:db8:1::1/128 of peer bob: it holds 2001:db8:1::1, which this gateway has on private0"), why)
        XCTAssertTrue(why.contains("gateway.allow_unsafe_allowed_ips: true"), why)
        let kinds = try XCTUnwrap(status["kinds"] as? [String: [String: Int]])
        for kind in ["peer", "route", "proxy", "datapath"] { XCTAssertEqual(kinds[kind]?["refused"], 1, "\(kind): \(kinds)") }
        XCTAssertEqual(kinds["route"]?["in_sync"], 3, "\(kinds)")
        XCTAssertTrue(h.notifications.contains { $0.contains("4 refused") }, "\(h.notifications)")
        // Said once in the journal, not once per object.
        usleep(300_000)
        XCTAssertEqual(h.log.components(separatedBy: "refusing allowed IP 2001:db8:1::1/128").count - 1, 1)

        // The address leaves the LAN: the prefix is installed like any other.
        try ns.ip("-6", "addr", "del", "2001:db8:1::1/128", "dev", "private0")
        try eventually(within: .seconds(2), "the refused prefix installed") {
            try routes().contains("2001:db8:1::1") && proxies().contains("2001:db8:1::1") && redirects().contains("2001:db8:1::1/128")
        }
        XCTAssertEqual((try h.status()["refused"] as? [[String: Any]])?.count, 0)

        // It comes back: what was installed for the prefix goes again.
        try ns.ip("-6", "addr", "add", "2001:db8:1::1/128", "dev", "private0", "nodad")
        try eventually(within: .seconds(2), "the prefix removed") {
            try !routes().contains("2001:db8:1::1") && !proxies().contains("2001:db8:1::1") && !redirects().contains("2001:db8:1::1/128")
        }
        XCTAssertEqual(try routes(), ["2001:db8:1::/64", "2001:db8:1::100", "2001:db8:1::101"])
        XCTAssertEqual((try h.status()["refused"] as? [[String: Any]])?.count, 4)
    }
}
