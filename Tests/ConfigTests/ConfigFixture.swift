import Config
import Foundation
import Netlink
import TestSupport
import XCTest

/// A temporary directory holding key files (mode 0600) and the configuration files of one test.
final class ConfigFixture {
    let directory: String
    static let alice = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
    static let bob = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
    static let carol = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="

    init(for test: XCTestCase) throws {
        directory = try scratchDirectory("wgk-config")
        let directory = self.directory
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        try writeKey("wg0.key")
        try writeKey("alice.psk")
    }

    /// A fresh random key in `name`, with the given mode.
    func writeKey(_ name: String, mode: Int = 0o600) throws {
        let key = PrivateKey.generate().key.base64
        try write(name, key + "\n")
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path(name))
    }

    func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

    /// A directory `name` (mode 0755), such as an include directory; its path.
    @discardableResult
    func makeDirectory(_ name: String) throws -> String {
        try FileManager.default.createDirectory(atPath: path(name), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        return path(name)
    }

    func write(_ name: String, _ text: String) throws {
        let file = path(name)
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: file, atomically: false, encoding: .utf8)
    }

    func load(_ text: String, root: String? = nil, limits: ConfigLimits = .standard) throws -> Result<LoadedConfig, ConfigErrors> {
        try write("wgkeeper.yaml", text)
        return ConfigLoader(root: root, limits: limits).load(path: path("wgkeeper.yaml"))
    }

    func loaded(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> LoadedConfig {
        switch try load(text) {
        case .success(let loaded): return loaded
        case .failure(let errors):
            XCTFail("expected the configuration to pass, got:\n\(errors)", file: file, line: line)
            throw errors
        }
    }

    /// The errors, as `file:line:column: message` with the file name relative to the fixture.
    func errors(_ text: String, limits: ConfigLimits = .standard, file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        switch try load(text, limits: limits) {
        case .success:
            XCTFail("expected errors", file: file, line: line)
            return []
        case .failure(let errors):
            return errors.errors.map { $0.description.replacingOccurrences(of: directory + "/", with: "") }
        }
    }
}

/// Configurations that tests expect `check` to accept; the schema test validates each of them.
enum AcceptedConfigs {
    static let base = """
        runtime:
          route_protocol: 77
          wireguard_poll: 2s
          proxy_poll: 500ms
          resync: 1m
        wireguard:
          wg0:
            private_key_file: wg0.key
            listen_port: 51820
            prune_peers: true
            peers:
              - name: alice-laptop
                public_key: "\(ConfigFixture.alice)"
                preshared_key_file: alice.psk
                allowed_ips: [2001:db8:1::100/128]
                endpoint: "[2001:db8:ff::2]:51820"
                persistent_keepalive: 25
              - name: bob-phone
                public_key: "\(ConfigFixture.bob)"
                allowed_ips:
                  - 2001:db8:1::101/128
                  - 2001:db8:5::/64
                endpoint: vpn.example.com:51820
        gateway:
          tunnel: wg0
          lan: private0
          lan_prefix: 2001:db8:1::/64
          proxy_ndp: true
          redirect: true
          allow_lan_anycast: false
        routes:
          - destination: 2001:db8:2::/64
            device: wg0
            gateway: fe80::1
            table: 100
            metric: 10
        proxies:
          - address: 2001:db8:1::200
            device: private0

        """

    static let minimal = """
        wireguard:
          wg0:
            private_key_file: wg0.key

        """

    static let includeFragment = """
        wireguard:
          wg0:
            peers:
              - name: carol-desktop
                public_key: "\(ConfigFixture.carol)"
                allowed_ips: [2001:db8:1::102/128]

        """

    /// The base configuration with a policy: a group, a rule for it, one for a peer, one for any.
    static let withPolicy = base + """
        policy:
          client_to_lan: deny
          lan_to_client: replies
          groups:
            admins: [alice-laptop]
          rules:
            - from: admins
              to: 2001:db8:1::/64
              protocol: tcp
              ports: [22, 8000-8080]
            - from: [bob-phone, admins]
              to: 2001:db8:1::53
              protocol: udp
              ports: 53
            - from: any
              to: 2001:db8:1::80/128
              protocol: icmpv6

        """

    static let all = [base, minimal, withPolicy]
}
