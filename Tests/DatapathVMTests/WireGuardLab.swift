import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The gateway with real WireGuard: namespace `client` (wg1, 2001:db8:1::100) reaches the LAN
/// host (2001:db8:1::10 on a veth) through namespace `gateway` (wg0, lan0), whose
/// all.forwarding is 0. Proxy NDP is set up as the reconciler does; no datapath yet.
struct WireGuardLab {
    static let client = "2001:db8:1::100"
    static let lanHost = "2001:db8:1::10"

    let gateway: TestNamespace
    let client: TestNamespace
    let host: TestNamespace
    /// A fresh directory for the test's bpffs.
    let pinRoot: String

    init(for test: XCTestCase) throws {
        let gateway = try TestNamespace(for: test)
        let client = try TestNamespace(for: test)
        let host = try TestNamespace(for: test)
        (self.gateway, self.client, self.host) = (gateway, client, host)
        for namespace in [gateway, client, host] {
            try namespace.namespace.perform {
                for key in ["all/accept_dad", "default/accept_dad", "all/forwarding", "default/forwarding"] {
                    try Sysctl("net/ipv6/conf/\(key)").write("0")
                }
            }
        }
        // Underlay between client and gateway; the LAN between gateway and host.
        try gateway.ip("link", "add", "ul0", "type", "veth", "peer", "name", "ul1", "netns", client.name)
        try gateway.ip("-6", "addr", "add", "fd00::1/64", "dev", "ul0", "nodad")
        try gateway.ip("link", "set", "ul0", "up")
        try client.ip("-6", "addr", "add", "fd00::2/64", "dev", "ul1", "nodad")
        try client.ip("link", "set", "ul1", "up")
        try gateway.ip("link", "add", "lan0", "type", "veth", "peer", "name", "host0", "netns", host.name)
        try gateway.ip("link", "set", "lan0", "up")
        try gateway.ip("-6", "route", "add", "2001:db8:1::/64", "dev", "lan0")
        try host.ip("-6", "addr", "add", "\(WireGuardLab.lanHost)/64", "dev", "host0", "nodad")
        try host.ip("link", "set", "host0", "up")

        // WireGuard both ends, configured with wireguard-tools.
        let gatewayKey = try shell("wg", "genkey").trimmingCharacters(in: .whitespacesAndNewlines)
        let clientKey = try shell("wg", "genkey").trimmingCharacters(in: .whitespacesAndNewlines)
        let gatewayPublic = try shell(["wg", "pubkey"], input: gatewayKey).trimmingCharacters(in: .whitespacesAndNewlines)
        let clientPublic = try shell(["wg", "pubkey"], input: clientKey).trimmingCharacters(in: .whitespacesAndNewlines)
        let keys = FileManager.default.temporaryDirectory.appendingPathComponent("wgk-vm-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: keys, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: keys) }
        try gatewayKey.write(to: keys.appendingPathComponent("gateway"), atomically: true, encoding: .utf8)
        try clientKey.write(to: keys.appendingPathComponent("client"), atomically: true, encoding: .utf8)

        try gateway.ip("link", "add", "wg0", "type", "wireguard")
        try shell("ip", "netns", "exec", gateway.name, "wg", "set", "wg0", "listen-port", "51820",
                  "private-key", keys.appendingPathComponent("gateway").path,
                  "peer", clientPublic, "allowed-ips", "\(WireGuardLab.client)/128")
        try gateway.ip("link", "set", "wg0", "up")
        try gateway.ip("-6", "route", "add", "\(WireGuardLab.client)/128", "dev", "wg0")
        try client.ip("link", "add", "wg1", "type", "wireguard")
        try shell("ip", "netns", "exec", client.name, "wg", "set", "wg1",
                  "private-key", keys.appendingPathComponent("client").path,
                  "peer", gatewayPublic, "allowed-ips", "2001:db8:1::/64", "endpoint", "[fd00::1]:51820")
        try client.ip("-6", "addr", "add", "\(WireGuardLab.client)/128", "dev", "wg1", "nodad")
        try client.ip("link", "set", "wg1", "up")
        try client.ip("-6", "route", "add", "2001:db8:1::/64", "dev", "wg1")

        // Proxy NDP on the LAN, as the reconciler sets it up.
        try gateway.ip("-6", "neigh", "add", "proxy", WireGuardLab.client, "dev", "lan0")
        try gateway.namespace.perform {
            try Sysctl.ipv6(interface: "lan0", "proxy_ndp").write("1")
            try Sysctl.ipv6(interface: "lan0", "forwarding").write("1")
        }

        let pinRoot = "/tmp/wgk-vm-bpf-\(UInt32.random(in: 0...UInt32.max))"
        self.pinRoot = pinRoot
        test.addTeardownBlock {
            while umount2(pinRoot, Int32(MNT_DETACH)) == 0 {}
            try? FileManager.default.removeItem(atPath: pinRoot)
        }
    }
}
