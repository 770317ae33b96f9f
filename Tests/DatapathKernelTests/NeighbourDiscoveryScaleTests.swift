import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// On-boarding many clients by one reload, `ndp: kernel` (a proxy entry each, which the kernel
/// backs with a solicited-node group of its own) against `ndp: datapath` (a clients-map entry
/// each, and the group joined through the daemon's sockets). Both write the same routes and
/// map entries; `wg0` is a veth (no WireGuard here), so peers stay pending in both. Printed,
/// with loose bounds only. WGK_NDP_SCALE sets N: 1000 by default, since the kernel keeps every
/// namespace's proxy entries in one 16-bucket hash and 10 000 of them would slow down whatever
/// else runs on the host meanwhile; the README's figures are N = 10 000.
final class NeighbourDiscoveryScaleTests: XCTestCase {
    struct Outcome {
        var mode: String
        var reloadMilliseconds: Double
        var reconcileMilliseconds: Double
        var proxies: Int
        var groups: Int
        var restartMilliseconds: Double
    }

    func testOnboardingManyClientsByReload() throws {
        let count = ProcessInfo.processInfo.environment["WGK_NDP_SCALE"].flatMap { Int($0) } ?? 1000
        let keys = (0..<count).map { _ in PrivateKey.generate().publicKey }
        var outcomes: [Outcome] = []
        for mode in ["kernel", "datapath"] {
            outcomes.append(try onboard(count, keys: keys, mode: mode))
        }
        var lines = ["on-boarding \(count) clients by one reload (routes and clients-map entries in both):"]
        for o in outcomes {
            lines.append("  ndp: \(o.mode.padding(toLength: 8, withPad: " ", startingAt: 0)) reload \(String(format: "%7.0f", o.reloadMilliseconds)) ms "
                + "(reconcile \(String(format: "%6.0f", o.reconcileMilliseconds)) ms), proxy entries \(o.proxies), groups on the LAN \(o.groups); "
                + "restart to READY=1 \(String(format: "%6.0f", o.restartMilliseconds)) ms")
        }
        // The parts that differ, alone: N proxy entries in one netlink batch (the daemon's way)
        // against N solicited-node groups joined through sockets.
        for (label, body) in [("proxy entries, one netlink batch", { try self.addProxies(count) }),
                              ("solicited-node groups joined", { try self.joinGroups(count) })] {
            lines.append("  \(count) \(label): \(String(format: "%.0f", try body())) ms")
        }
        print(lines.joined(separator: "\n"))
    }

    private func addProxies(_ count: Int) throws -> Double {
        let ns = try TestNamespace(for: self)
        let index = try ns.addVeth("private0", "lanp")
        let netlink = try ns.rtnetlink()
        let requests = (0..<count).map {
            ProxyEntry(address: IPAddress("2001:db8:1::1:\(String($0, radix: 16))")!, interfaceIndex: index, protocolNumber: 77).addRequest()
        }
        let start = ContinuousClock.now
        let results = try netlink.perform(requests)
        let elapsed = milliseconds(ContinuousClock.now - start)
        XCTAssertEqual(results.filter { if case .failure = $0 { true } else { false } }.count, 0)
        return elapsed
    }

    private func joinGroups(_ count: Int) throws -> Double {
        let ns = try TestNamespace(for: self)
        let index = try ns.addVeth("private0", "lanp")
        let wanted = Set((0..<count).map {
            MulticastMembership(interfaceIndex: index, group: IPv6Address("2001:db8:1::1:\(String($0, radix: 16))")!.solicitedNodeGroup)
        })
        let memberships = MulticastMemberships()
        let start = ContinuousClock.now
        XCTAssertEqual(try ns.namespace.perform { memberships.synchronize(wanted) }, [:])
        return milliseconds(ContinuousClock.now - start)
    }

    private func onboard(_ count: Int, keys: [WireGuardKey], mode: String) throws -> Outcome {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let pinRoot = try h.mountPinRoot(self)
        func config(_ n: Int) -> String {
            h.gatewayConfig(runtime: ["proxy_poll: 30s", "resync: 1h"], pinRoot: pinRoot,
                            peers: (0..<n).map { TestPeer("c\($0)", keys[$0], allowedIPs: ["2001:db8:1::1:\(String($0, radix: 16))/128"]) },
                            gateway: ["redirect: true", "ndp: \(mode)"])
        }
        try h.writeConfig(config(0))
        try h.start()
        try h.writeConfig(config(count))
        let start = ContinuousClock.now
        let answer = try h.ask("reload")["output"] as? String ?? ""
        let reload = ContinuousClock.now - start
        XCTAssertFalse(answer.contains("refused"), answer)
        let reconcile = try XCTUnwrap(try h.status()["last_reconcile_duration_ms"] as? Double)
        let proxies = try shell("ip", "-n", ns.name, "-6", "neigh", "show", "proxy").split(separator: "\n").count
        // Exactly the clients' groups: the link-local address's own group may share their
        // prefix (its low 24 bits come from the random MAC: a 1-in-256 false count before).
        let clientGroups = Set((0..<count).map { n -> String in
            let low = 0x01_0000 | (n & 0xffff)
            return "ff0200000000000000000001ff" + String(repeating: "0", count: 6 - String(low, radix: 16).count) + String(low, radix: 16)
        })
        let groups = try shell("ip", "netns", "exec", ns.name, "cat", "/proc/net/igmp6").split(separator: "\n")
            .filter { line in line.contains(" private0 ") && line.split(separator: " ", omittingEmptySubsequences: true).contains { clientGroups.contains(String($0)) } }.count
        XCTAssertEqual(proxies, mode == "kernel" ? count : 0)
        XCTAssertEqual(groups, min(count, 0x10000), "one group per client (the kernel's for a proxy entry, or the daemon's)")
        h.stop()
        let restart = ContinuousClock.now
        try h.start(readyWithin: .seconds(120))
        let restarted = ContinuousClock.now - restart
        return Outcome(mode: mode, reloadMilliseconds: milliseconds(reload), reconcileMilliseconds: reconcile, proxies: proxies,
                       groups: groups, restartMilliseconds: milliseconds(restarted))
    }

    private func milliseconds(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15
    }
}
