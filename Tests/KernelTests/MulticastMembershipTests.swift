import Foundation
import Netlink
import TestSupport
import XCTest

/// Solicited-node groups held by sockets (`ndp: datapath`): joined on the device as the kernel
/// shows them (/proc/net/igmp6, what `ip -6 maddr` prints), spread over as many sockets as the
/// kernel's per-socket option memory (net.core.optmem_max) needs, left again.
final class MulticastMembershipTests: XCTestCase {
    /// Groups on `device` as the kernel holds them, with their user counts.
    private func groups(_ ns: TestNamespace, _ device: String) throws -> [IPv6Address: Int] {
        var result: [IPv6Address: Int] = [:]
        for line in try shell("ip", "netns", "exec", ns.name, "cat", "/proc/net/igmp6").split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 4, fields[1] == device, fields[2].count == 32 else { continue }
            let hex = Array(fields[2])
            let bytes = stride(from: 0, to: 32, by: 2).compactMap { UInt8(String(hex[$0..<$0 + 2]), radix: 16) }
            result[IPv6Address(bytes: bytes)!] = Int(fields[3])
        }
        return result
    }

    func testSolicitedNodeGroupOfAnAddress() {
        XCTAssertEqual(IPv6Address("2001:db8:1::1:2345:6789")!.solicitedNodeGroup, IPv6Address("ff02::1:ff45:6789")!)
        XCTAssertEqual(IPv6Address("2001:db8:1::100")!.solicitedNodeGroup, IPv6Address("ff02::1:ff00:100")!)
    }

    func testJoinsOverSeveralSocketsAndLeaves() throws {
        let ns = try TestNamespace(for: self)
        let index = try ns.addVeth("lan0", "lan0p")
        let count = 5000
        let wanted = Set((0..<count).map { i in
            MulticastMembership(interfaceIndex: index, group: IPv6Address("2001:db8:1::1:\(String(i, radix: 16))")!.solicitedNodeGroup)
        })
        let memberships = MulticastMemberships()
        let start = ContinuousClock.now
        let failures = try ns.namespace.perform { memberships.synchronize(wanted) }
        let elapsed = ContinuousClock.now - start
        XCTAssertEqual(failures, [:])
        XCTAssertEqual(memberships.memberships, wanted)
        let optmem = try Int(XCTUnwrap(try ns.namespace.perform { try Sysctl("net/core/optmem_max").readInt() }))
        // struct ipv6_mc_socklist is 56 bytes on 64-bit kernels; sock_kmalloc keeps the total
        // strictly below optmem_max.
        let perSocket = (optmem - 1) / 56
        XCTAssertEqual(memberships.socketCount, (count + perSocket - 1) / perSocket, "optmem_max \(optmem): \(perSocket) per socket")
        print("joined \(count) solicited-node groups in \(elapsed) on \(memberships.socketCount) sockets (optmem_max \(optmem))")
        let held = try groups(ns, "lan0")
        XCTAssertTrue(wanted.allSatisfy { held[$0.group] == 1 }, "every group on lan0, held once")

        // Nothing to do: nothing changes.
        XCTAssertEqual(try ns.namespace.perform { memberships.synchronize(wanted) }, [:])
        // Half go: they leave the device, and the sockets that no longer hold any close.
        let kept = Set(wanted.sorted().prefix(count / 2))
        XCTAssertEqual(try ns.namespace.perform { memberships.synchronize(kept) }, [:])
        let after = try groups(ns, "lan0")
        XCTAssertTrue(kept.allSatisfy { after[$0.group] == 1 })
        XCTAssertTrue(wanted.subtracting(kept).allSatisfy { after[$0.group] == nil })
        XCTAssertLessThanOrEqual(memberships.socketCount, (count / 2 + perSocket - 1) / perSocket + 1)

        // A group whose interface is gone fails and is reported; the others stay.
        let missing = MulticastMembership(interfaceIndex: 999_999, group: IPv6Address("ff02::1:ff00:1")!)
        let failed = try ns.namespace.perform { memberships.synchronize(kept.union([missing])) }
        XCTAssertEqual(Array(failed.keys), [missing])
        XCTAssertEqual(memberships.memberships, kept)

        memberships.leaveAll()
        let left = try groups(ns, "lan0")
        XCTAssertTrue(wanted.allSatisfy { left[$0.group] == nil })
        XCTAssertEqual(memberships.socketCount, 0)
    }
}
