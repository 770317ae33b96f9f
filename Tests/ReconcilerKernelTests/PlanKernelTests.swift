import Config
import Foundation
import Netlink
import Reconciler
import TestSupport
import XCTest

/// plan → apply → plan against a real kernel in a throwaway namespace. There is no WireGuard on
/// the host kernel: a veth named wg0 stands in for the tunnel (peers stay pending).
final class PlanKernelTests: XCTestCase {
    private var directory = ""

    private func writeConfig() throws -> String {
        directory = try scratchDirectory("wgk-plan")
        let directory = self.directory
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        let key = directory + "/wg0.key"
        try (PrivateKey.generate().key.base64 + "\n").write(toFile: key, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: key)
        let config = directory + "/wgkeeper.yaml"
        try """
            runtime:
              route_protocol: 77
            wireguard:
              wg0:
                private_key_file: wg0.key
                peers:
                  - name: alice
                    public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
                    allowed_ips: [2001:db8:1::100/128]
                  - name: bob
                    public_key: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
                    allowed_ips: [2001:db8:1::101/128, 2001:db8:7::/64]
            gateway:
              tunnel: wg0
              lan: private0
              lan_prefix: 2001:db8:1::/64
              redirect: false
            routes:
              - destination: 2001:db8:2::/64
                device: wg0
                gateway: fe80::1
                table: 100
                metric: 10

            """.write(toFile: config, atomically: false, encoding: .utf8)
        return config
    }

    private func load(_ path: String) throws -> DesiredState {
        switch ConfigLoader().load(path: path) {
        case .success(let loaded): return loaded.desired
        case .failure(let errors): throw errors
        }
    }

    private func namespaceWithDevices() throws -> TestNamespace {
        let ns = try TestNamespace(for: self)
        try ns.addVeth("wg0", "wg0-peer")
        try ns.addVeth("private0", "lan-peer")
        return ns
    }

    private func observe(_ ns: TestNamespace, _ desired: DesiredState) throws -> ObservedState {
        try ns.namespace.perform { try ObservedState.read(for: desired, rtnetlink: try RTNetlink(), wireGuard: nil) }
    }

    func testPlanApplyPlanConvergesAndLeavesForeignRoutesAlone() throws {
        let desired = try load(try writeConfig())
        let ns = try namespaceWithDevices()
        try ns.ip("-6", "route", "add", "2001:db8:9::/64", "dev", "wg0", "proto", "static")
        try ns.ip("-6", "route", "add", "2001:db8:1::101/128", "dev", "wg0", "proto", "static", "metric", "5")
        try ns.ip("-6", "neigh", "add", "proxy", "2001:db8:1::5", "dev", "private0")

        let first = plan(desired, try observe(ns, desired))
        XCTAssertEqual(first.changes.map(\.description), [
            "~ sysctl net.ipv6.conf.private0.forwarding = 1 (was 0)",
            "~ sysctl net.ipv6.conf.private0.proxy_ndp = 1 (was 0)",
            "+ route 2001:db8:2::/64 via fe80::1 dev wg0 table 100 metric 10 proto 77",
            "+ route 2001:db8:1::/64 dev private0 proto 77",
            "+ route 2001:db8:1::100/128 dev wg0 proto 77",
            "+ route 2001:db8:1::101/128 dev wg0 proto 77",
            "+ route 2001:db8:7::/64 dev wg0 proto 77",
            "+ proxy 2001:db8:1::100 dev private0",
            "+ proxy 2001:db8:1::101 dev private0",
        ])
        XCTAssertEqual(first.pending.map(\.reason).first, "wg0 is a veth device, not WireGuard")

        let results = try ns.namespace.perform { KernelApplier(rtnetlink: try RTNetlink()).apply(first.changes) }
        XCTAssertEqual(results.compactMap(\.error), [])

        let second = plan(desired, try observe(ns, desired))
        XCTAssertEqual(second.changes.map(\.description), [])
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "proto", "static").compactMap { $0["dst"] as? String }.sorted(),
                       ["2001:db8:1::101", "2001:db8:9::/64"])
        XCTAssertEqual(try ns.ipJSON("-6", "neigh", "show", "proxy").compactMap { $0["dst"] as? String }.sorted(),
                       ["2001:db8:1::100", "2001:db8:1::101", "2001:db8:1::5"])
    }

    func testReplaceAndRemoveOurDriftedObjects() throws {
        let desired = try load(try writeConfig())
        let ns = try namespaceWithDevices()
        let initial = plan(desired, try observe(ns, desired)).changes
        _ = try ns.namespace.perform { KernelApplier(rtnetlink: try RTNetlink()).apply(initial) }
        // Drift: our route moved to the LAN, an extra route and proxy entry of ours, a sysctl reset.
        try ns.ip("-6", "route", "replace", "2001:db8:1::100/128", "dev", "private0", "proto", "77", "metric", "1024")
        try ns.ip("-6", "route", "add", "2001:db8:3::/64", "dev", "wg0", "proto", "77")
        try ns.ip("-6", "neigh", "add", "proxy", "2001:db8:1::9", "dev", "private0", "protocol", "77")
        try ns.namespace.perform { try Sysctl.ipv6(interface: "private0", "proxy_ndp").write("0") }

        let drift = plan(desired, try observe(ns, desired))
        XCTAssertEqual(drift.changes.map(\.description), [
            "~ sysctl net.ipv6.conf.private0.proxy_ndp = 1 (was 0)",
            "~ route 2001:db8:1::100/128 dev wg0 proto 77 (was 2001:db8:1::100/128 dev private0 proto 77)",
            "- route 2001:db8:3::/64 dev wg0 proto 77",
            "- proxy 2001:db8:1::9 dev private0",
        ])
        let results = try ns.namespace.perform { KernelApplier(rtnetlink: try RTNetlink()).apply(drift.changes) }
        XCTAssertEqual(results.compactMap(\.error), [])
        XCTAssertEqual(plan(desired, try observe(ns, desired)).changes.map(\.description), [])
    }

    func testForeignRouteAtADesiredIdentityIsAConflict() throws {
        let desired = try load(try writeConfig())
        let ns = try namespaceWithDevices()
        try ns.ip("-6", "route", "add", "2001:db8:1::100/128", "dev", "private0", "proto", "static", "metric", "1024")
        let result = plan(desired, try observe(ns, desired))
        XCTAssertFalse(result.changes.contains { $0.subject.contains("2001:db8:1::100/128") })
        XCTAssertEqual(result.conflicts.map(\.description), [
            "route 2001:db8:1::100/128 dev wg0 proto 77: held by a foreign route 2001:db8:1::100/128 dev private0 proto 4",
        ])
        let results = try ns.namespace.perform { KernelApplier(rtnetlink: try RTNetlink()).apply(result.changes) }
        XCTAssertEqual(results.compactMap(\.error), [])
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "2001:db8:1::100/128").first?["dev"] as? String, "private0")
    }

    /// `wgkeeper plan` run inside the namespace: exit 0 when in sync, 2 with one line per change.
    func testPlanCommandExitStatus() throws {
        let config = try writeConfig()
        let desired = try load(config)
        let ns = try namespaceWithDevices()
        let changes = plan(desired, try observe(ns, desired)).changes
        _ = try ns.namespace.perform { KernelApplier(rtnetlink: try RTNetlink()).apply(changes) }

        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("wgkeeper").path
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: binary), "build the wgkeeper product first: \(binary)")
        var run = try execute(["ip", "netns", "exec", ns.name, binary, "plan", "--config", config])
        XCTAssertEqual(run.status, 0, run.errors)
        XCTAssertEqual(run.output, "")

        try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "wg0", "proto", "77")
        try ns.ip("-6", "neigh", "add", "proxy", "2001:db8:1::9", "dev", "private0", "protocol", "77")
        run = try execute(["ip", "netns", "exec", ns.name, binary, "plan", "--config", config])
        XCTAssertEqual(run.status, 2, run.errors)
        XCTAssertEqual(run.output, "+ route 2001:db8:1::100/128 dev wg0 proto 77\n- proxy 2001:db8:1::9 dev private0\n")

        run = try execute(["ip", "netns", "exec", ns.name, binary, "plan", "--config", config, "--json"])
        XCTAssertEqual(run.status, 2, run.errors)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
        let items = try XCTUnwrap(json["changes"] as? [[String: Any]])
        XCTAssertEqual(items.map { $0["action"] as? String }, ["add", "remove"])
        XCTAssertEqual(items.map { $0["kind"] as? String }, ["route", "proxy"])

        run = try execute([binary, "check", "--config", config])
        XCTAssertEqual(run.status, 0, run.errors)
        XCTAssertEqual(run.output, "1 device, 2 peers, 5 routes, 2 proxies\n")
    }

    private func execute(_ arguments: [String]) throws -> (status: Int32, output: String, errors: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: errors, as: UTF8.self))
    }
}
