import CBPF
import Datapath
import Foundation
import Netlink
import TestSupport
import XCTest

/// A daemon restart adopts what the previous run pinned and changes nothing; a changed
/// program replaces the old one in place.
final class AdoptionTests: XCTestCase {
    func testRestartKeepsProgramsEntriesAndTrafficWithTCX() throws { try restart(mode: .tcx) }
    func testRestartKeepsProgramsEntriesAndTrafficWithClsact() throws { try restart(mode: .clsact) }
    func testChangedProgramIsReplacedInPlaceWithTCX() throws { try replace(mode: .tcx) }
    func testChangedProgramIsReplacedInPlaceWithClsact() throws { try replace(mode: .clsact) }

    private func restart(mode: AttachMode) throws {
        let lab = try Lab(for: self)
        var first: Datapath? = try lab.datapath(mode: mode)
        try lab.attach(first!)
        try lab.configureEntries(first!)
        let ids = first!.programIDs
        let links = try linkIDs(lab)

        // Resolve the LAN host first, so the stream below never waits in the neighbour queue.
        try lab.sendFromTunnel(sequence: 0)
        XCTAssertEqual(lab.receivedOnLAN().map(\.0), [0])

        let count: UInt32 = 2000
        let tun = lab.tun
        let stream = DispatchGroup()
        DispatchQueue.global().async(group: stream) {
            for sequence in 1...count {
                try? tun.write(Packet.test(from: Lab.clientAddress, to: Lab.hostAddress, sequence: sequence))
                usleep(250)
            }
        }
        usleep(50_000)
        first = nil  // the old daemon exits: its descriptors close, the pins keep everything
        let second = try lab.datapath(mode: mode)
        XCTAssertEqual(second.programIDs, ids, "the pinned programs are adopted, not reloaded")
        XCTAssertEqual(second.recreatedMaps, [])
        XCTAssertEqual(try lab.attach(second), [], "a restart writes nothing")
        XCTAssertEqual(try second.entries(in: .clients), Lab.desiredClients)
        XCTAssertEqual(try second.entries(in: .lan), Lab.desiredLAN)
        XCTAssertEqual(try linkIDs(lab), links)
        XCTAssertTrue(try lab.state(second).isInSync)
        XCTAssertEqual(stream.wait(timeout: .now() + 30), .success)

        let received = lab.receivedOnLAN(quiet: 500).map(\.0)
        XCTAssertEqual(received.count, Int(count), "no packet lost across the restart")
        XCTAssertEqual(Set(received), Set(1...count))
        XCTAssertEqual(try second.counters().tunnelToLan, UInt64(count) + 1, "counters survive the restart")
    }

    private func replace(mode: AttachMode) throws {
        let lab = try Lab(for: self)
        let first = try lab.datapath(mode: mode)
        try lab.attach(first)
        try lab.configureEntries(first)
        let ids = first.programIDs
        let links = try linkIDs(lab)

        // An "older build": a program that passes everything, put on the LAN hook in place.
        let old = try passEverythingProgram()
        defer { close(old.fd) }
        let lanIndex = lab.lanIndex
        switch mode {
        case .tcx:
            let link = bpf_obj_get("\(lab.pinRoot)/wgt0/lan_ingress_link")
            XCTAssertGreaterThanOrEqual(link, 0)
            defer { close(link) }
            XCTAssertEqual(bpf_link_update(link, old.fd, nil), 0)
        case .clsact:
            XCTAssertEqual(try lab.gateway.namespace.perform {
                wgk_tc_ingress_replace(lanIndex, 0x77, 0x77, old.fd)
            }, 0)
        }
        XCTAssertEqual(try lab.state(first).lan, .foreign(programID: old.id))

        let second = try lab.datapath(mode: mode)
        XCTAssertEqual(try lab.attach(second), [
            .replaced(.lanIngress, mode, oldProgramID: old.id, newProgramID: ids[.lanIngress]!),
        ])
        XCTAssertEqual(try linkIDs(lab), links, "the same link / filter, a new program")
        if mode == .clsact {
            let filters = try shell("tc", "-n", lab.gateway.name, "filter", "show", "dev", "lan0", "ingress")
            XCTAssertEqual(filters.components(separatedBy: "direct-action").count - 1, 1, filters)
        }
        XCTAssertTrue(try lab.state(second).isInSync)
        try lab.sendFromLAN(sequence: 7)
        XCTAssertEqual(lab.receivedOnTunnel().map(\.0), [7])
    }

    /// The TCX link ids (empty in clsact mode, where the filter has no id of its own).
    private func linkIDs(_ lab: Lab) throws -> [Int] {
        try Hook.allCases.compactMap { hook in
            let path = "\(lab.pinRoot)/wgt0/\(hook.rawValue)_link"
            guard FileManager.default.fileExists(atPath: path) else { return nil }
            let json = try shell("bpftool", "-j", "link", "show", "pinned", path)
            let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
            return try XCTUnwrap(object["id"] as? Int)
        }
    }
}

/// A SCHED_CLS program `r0 = TC_ACT_UNSPEC; exit`: stands in for a different build.
func passEverythingProgram() throws -> (fd: Int32, id: UInt32) {
    let instructions: [UInt8] = [0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x95, 0, 0, 0, 0, 0, 0, 0]
    let fd = instructions.withUnsafeBytes { raw in
        bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "wgk_test_pass", "GPL",
                      raw.baseAddress!.assumingMemoryBound(to: bpf_insn.self), 2, nil)
    }
    guard fd >= 0 else { throw TestFailure("load test program: \(String(cString: strerror(errno)))") }
    var info = bpf_prog_info()
    var length = UInt32(MemoryLayout<bpf_prog_info>.size)
    guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else { throw TestFailure("program info: \(errno)") }
    return (fd, info.id)
}
