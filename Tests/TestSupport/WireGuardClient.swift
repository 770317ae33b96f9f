import Foundation
import Netlink
import XCTest

/// A WireGuard client in a namespace of its own (VM tier): an underlay veth from the gateway's
/// namespace (`ul<n>` there with fd00:<n>::1/64, `ul0` here with fd00:<n>::2/64) and `wg1`
/// holding `address`/128, whose one peer is the gateway at [fd00:<n>::1]:51820 with `routed`
/// as its allowed IPs and route.
public struct WireGuardClient {
    public let namespace: TestNamespace
    public let address: String
    public let publicKey: WireGuardKey

    public init(for test: XCTestCase, underlay n: Int, gateway: TestNamespace, gatewayKey: WireGuardKey,
                address: String, routed: String = "2001:db8:1::/64", privateKey: PrivateKey = .generate(),
                keepalive: Int? = nil) throws {
        let namespace = try TestNamespace(for: test)
        (self.namespace, self.address, publicKey) = (namespace, address, privateKey.publicKey)
        try namespace.namespace.perform {
            for key in ["all/accept_dad", "default/accept_dad", "all/forwarding", "default/forwarding"] {
                try Sysctl("net/ipv6/conf/\(key)").write("0")
            }
        }
        let underlay = "fd00:\(String(n, radix: 16))::"
        try gateway.ip("link", "add", "ul\(n)", "type", "veth", "peer", "name", "ul0", "netns", namespace.name)
        try gateway.ip("-6", "addr", "add", "\(underlay)1/64", "dev", "ul\(n)", "nodad")
        try gateway.ip("link", "set", "ul\(n)", "up")
        try namespace.ip("-6", "addr", "add", "\(underlay)2/64", "dev", "ul0", "nodad")
        try namespace.ip("link", "set", "ul0", "up")

        let keyFile = try scratchDirectory("wgk-client") + "/wg1.key"
        try (privateKey.key.base64 + "\n").write(toFile: keyFile, atomically: false, encoding: .utf8)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: (keyFile as NSString).deletingLastPathComponent) }
        try namespace.ip("link", "add", "wg1", "type", "wireguard")
        try shell(["ip", "netns", "exec", namespace.name, "wg", "set", "wg1", "private-key", keyFile,
                   "peer", gatewayKey.base64, "allowed-ips", routed, "endpoint", "[\(underlay)1]:51820"]
                  + (keepalive.map { ["persistent-keepalive", String($0)] } ?? []))
        try namespace.ip("-6", "addr", "add", "\(address)/128", "dev", "wg1", "nodad")
        try namespace.ip("link", "set", "wg1", "up")
        try namespace.ip("-6", "route", "add", routed, "dev", "wg1")
    }
}
