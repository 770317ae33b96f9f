import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// The gateway with real WireGuard: namespace `client` (a WireGuardClient, 2001:db8:1::100) reaches the LAN
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
        let host = try TestNamespace(for: test)
        (self.gateway, self.host) = (gateway, host)
        for namespace in [gateway, host] {
            try namespace.namespace.perform {
                for key in ["all/accept_dad", "default/accept_dad", "all/forwarding", "default/forwarding"] {
                    try Sysctl("net/ipv6/conf/\(key)").write("0")
                }
            }
        }
        // The LAN between gateway and host.
        try gateway.ip("link", "add", "lan0", "type", "veth", "peer", "name", "host0", "netns", host.name)
        try gateway.ip("link", "set", "lan0", "up")
        try gateway.ip("-6", "route", "add", "2001:db8:1::/64", "dev", "lan0")
        try host.ip("-6", "addr", "add", "\(WireGuardLab.lanHost)/64", "dev", "host0", "nodad")
        try host.ip("link", "set", "host0", "up")

        // WireGuard both ends: the gateway's configured with wireguard-tools, the client over
        // an underlay veth (fd00::1 on the gateway).
        let gatewayKey = PrivateKey.generate()
        let keyFile = try scratchDirectory("wgk-vm") + "/wg0.key"
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: (keyFile as NSString).deletingLastPathComponent) }
        try (gatewayKey.key.base64 + "\n").write(toFile: keyFile, atomically: false, encoding: .utf8)
        let client = try WireGuardClient(for: test, underlay: 0, gateway: gateway, gatewayKey: gatewayKey.publicKey,
                                         address: WireGuardLab.client)
        self.client = client.namespace
        try gateway.ip("link", "add", "wg0", "type", "wireguard")
        try shell("ip", "netns", "exec", gateway.name, "wg", "set", "wg0", "listen-port", "51820", "private-key", keyFile,
                  "peer", client.publicKey.base64, "allowed-ips", "\(WireGuardLab.client)/128")
        try gateway.ip("link", "set", "wg0", "up")
        try gateway.ip("-6", "route", "add", "\(WireGuardLab.client)/128", "dev", "wg0")

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
