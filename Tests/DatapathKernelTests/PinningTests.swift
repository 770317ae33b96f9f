import CBPF
import Datapath
import Foundation
import Netlink
import TestSupport
import XCTest

/// The pin root and the maps pinned in it.
final class PinningTests: XCTestCase {
    func testMountsBpffsOnThePinRootOnce() throws {
        let lab = try Lab(for: self)
        XCTAssertFalse(FileManager.default.fileExists(atPath: lab.pinRoot))
        let first = try lab.datapath()
        XCTAssertEqual(try mounts(of: lab.pinRoot), ["bpf"])
        _ = try lab.datapath()
        XCTAssertEqual(try mounts(of: lab.pinRoot), ["bpf"], "an existing bpffs is used, not mounted over")
        let pins = try FileManager.default.contentsOfDirectory(atPath: first.pinDirectory).sorted()
        XCTAssertEqual(pins, ["client_prefixes", "config", "counters", "icmp_buckets", "icmp_global_bucket", "icmp_scratch", "lan_ingress",
                              "lan_prefixes", "policy_counters", "policy_flows", "policy_fragments", "policy_info", "policy_items", "policy_rules", "policy_select",
                              "policy_source_prefixes_0", "policy_source_prefixes_1", "policy_sources", "tunnel_ingress"])
    }

    func testIncompatiblePinnedMapIsRecreated() throws {
        let lab = try Lab(for: self)
        try FileManager.default.createDirectory(atPath: lab.pinRoot, withIntermediateDirectories: true)
        try shell("mount", "-t", "bpf", "bpf", lab.pinRoot)
        try FileManager.default.createDirectory(atPath: "\(lab.pinRoot)/wgt0", withIntermediateDirectories: true)
        // An older layout: a hash map where the LPM trie is now.
        let old = bpf_map_create(BPF_MAP_TYPE_HASH, "client_prefixes", 20, 4, 16, nil)
        XCTAssertGreaterThanOrEqual(old, 0)
        XCTAssertEqual(bpf_obj_pin(old, "\(lab.pinRoot)/wgt0/client_prefixes"), 0)
        close(old)

        let datapath = try lab.datapath()
        XCTAssertEqual(datapath.recreatedMaps, ["client_prefixes"])
        XCTAssertEqual(try mounts(of: lab.pinRoot), ["bpf"])
        try datapath.set(.redirect, for: Lab.clientPrefix, in: .clients)
        XCTAssertEqual(try datapath.entries(in: .clients), Lab.desiredClients)
        XCTAssertEqual(try lab.datapath().recreatedMaps, [], "the new map is adopted from then on")
    }

    func testEntriesRoundTripAndRejectIPv4() throws {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath()
        let many = (1...300).map { IPPrefix("2001:db8:2::\(String($0, radix: 16))/128")! }
        XCTAssertEqual(try datapath.synchronize(.clients, to: Dictionary(uniqueKeysWithValues: many.map { ($0, .redirect) })), [:])
        XCTAssertEqual(try datapath.entries(in: .clients).count, 300)
        // Non-canonical input is stored canonically; removal of a missing entry is not an error.
        try datapath.set(.pass, for: IPPrefix("2001:db8:9::1/48")!, in: .lan)
        XCTAssertEqual(try datapath.entries(in: .lan), [IPPrefix("2001:db8:9::/48")!: .pass])
        XCTAssertTrue(try datapath.remove(IPPrefix("2001:db8:9::/48")!, from: .lan))
        XCTAssertFalse(try datapath.remove(IPPrefix("2001:db8:9::/48")!, from: .lan))
        XCTAssertThrowsError(try datapath.set(.redirect, for: IPPrefix("10.0.0.0/8")!, in: .lan)) { error in
            XCTAssertEqual((error as? DatapathError)?.code, EAFNOSUPPORT)
        }
        XCTAssertEqual(try datapath.synchronize(.clients, to: [:]), [:])
        XCTAssertEqual(try datapath.entries(in: .clients), [:])
    }

    func testUninstallRemovesAttachmentsAndPins() throws {
        for mode in AttachMode.allCases {
            let lab = try Lab(for: self)
            let datapath = try lab.datapath(mode: mode)
            try lab.attach(datapath)
            try lab.gateway.namespace.perform { try datapath.uninstall(lanIndex: lab.lanIndex, tunnelIndex: lab.tunnelIndex) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: datapath.pinDirectory), "\(mode)")
            let filters = try shell("tc", "-n", lab.gateway.name, "filter", "show", "dev", "lan0", "ingress")
            XCTAssertFalse(filters.contains("bpf"), "\(mode): \(filters)")
            try lab.sendFromLAN(sequence: 1)
            XCTAssertEqual(lab.receivedOnTunnel().map(\.0), [], "\(mode)")
        }
    }

    /// The default pin root where /sys/fs/bpf is a bare sysfs directory (`ip netns exec`, or a
    /// host without a bpffs): checked in a child process with its own mount namespace and a
    /// fresh sysfs, so the host's mounts stay untouched.
    func testDefaultPinRootUnderAFreshSysfs() throws {
        if ProcessInfo.processInfo.environment["WGK_FRESH_SYSFS"] == "1" {
            // What `ip netns exec` does: a sysfs of the new network namespace on /sys. Direct
            // calls: Foundation's Process stops noticing child exits once /sys is replaced.
            XCTAssertEqual(umount2("/sys", Int32(MNT_DETACH)), 0)
            XCTAssertEqual(mount("sysfs", "/sys", "sysfs", 0, nil), 0)
            XCTAssertNotEqual(try mounts(of: "/sys/fs/bpf"), ["bpf"])
            let datapath = try Datapath(pinRoot: "/sys/fs/bpf/wgkeeper", tunnel: "wgt0")
            XCTAssertEqual(try mounts(of: "/sys/fs/bpf"), ["bpf"])
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(datapath.pinDirectory)/client_prefixes"))
            return
        }
        let binary = try XCTUnwrap(Bundle.main.executablePath)
        let output = try shell(["timeout", "120", "unshare", "--mount", "--net", "--propagation", "private", "env", "WGK_FRESH_SYSFS=1", binary,
                                "DatapathKernelTests.PinningTests/testDefaultPinRootUnderAFreshSysfs"])
        XCTAssertTrue(output.contains("Executed 1 test, with 0 failures"), output)
    }

    /// File system types mounted exactly at `path`.
    private func mounts(of path: String) throws -> [String] {
        try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            return fields.count > 2 && fields[1] == path ? String(fields[2]) : nil
        }
    }
}
