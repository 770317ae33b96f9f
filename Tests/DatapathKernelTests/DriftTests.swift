import CBPF
import Datapath
import Foundation
import Netlink
import TestSupport
import XCTest

/// Someone changes the datapath behind the daemon's back: `state` sees it, `attach` /
/// `synchronize` repair it.
final class DriftTests: XCTestCase {
    func testDetachedTCXLinkIsReattached() throws {
        try repair(mode: .tcx, hook: .lanIngress) { lab in
            try shell("bpftool", "link", "detach", "pinned", "\(lab.pinRoot)/wgt0/lan_ingress_link")
        }
    }

    func testRemovedTCXLinkIsReattached() throws {
        // Nothing but the pin holds the link: removing it detaches the program.
        try repair(mode: .tcx, hook: .tunnelIngress) { lab in
            try FileManager.default.removeItem(atPath: "\(lab.pinRoot)/wgt0/tunnel_ingress_link")
            // The last reference goes with the pin; the kernel frees the link from a work queue.
            usleep(200_000)
        }
    }

    func testDeletedFilterIsReattached() throws {
        try repair(mode: .clsact, hook: .lanIngress) { lab in
            try shell("tc", "-n", lab.gateway.name, "filter", "del", "dev", "lan0", "ingress")
        }
    }

    func testDeletedQdiscIsReattached() throws {
        try repair(mode: .clsact, hook: .tunnelIngress) { lab in
            try shell("tc", "-n", lab.gateway.name, "qdisc", "del", "dev", "wgt0", "clsact")
        }
    }

    private func repair(mode: AttachMode, hook: Hook, drift: (Lab) throws -> Void) throws {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath(mode: mode)
        try lab.attach(datapath)
        try lab.configureEntries(datapath)
        try lab.sendFromTunnel(sequence: 0)
        XCTAssertEqual(lab.receivedOnLAN().map(\.0), [0])

        try drift(lab)
        let state = try lab.state(datapath)
        XCTAssertFalse(state.isInSync)
        XCTAssertEqual(hook == .lanIngress ? state.lan : state.tunnel, .detached)
        XCTAssertEqual(hook == .lanIngress ? state.tunnel : state.lan, .attached(programID: datapath.programIDs[hook == .lanIngress ? .tunnelIngress : .lanIngress]!))
        // The drift is real: that direction no longer redirects.
        try send(lab, hook, sequence: 1)
        XCTAssertEqual(received(lab, hook), [])

        // A clsact qdisc deleted by the drift is made again, and said to be ours (tc reads it).
        let device = hook == .lanIngress ? "lan0" : "wgt0"
        let qdiscs = try shell("tc", "-n", lab.gateway.name, "qdisc", "show", "dev", device)
        let qdiscGone = mode == .clsact && !qdiscs.contains("clsact")
        let index = hook == .lanIngress ? lab.lanIndex : lab.tunnelIndex
        XCTAssertEqual(try lab.attach(datapath), (qdiscGone ? [.createdQdisc(interfaceIndex: index)] : [])
                       + [.attached(hook, mode, programID: datapath.programIDs[hook]!)])
        XCTAssertTrue(try lab.state(datapath).isInSync)
        XCTAssertEqual(try lab.attach(datapath), [])
        try send(lab, hook, sequence: 2)
        XCTAssertEqual(received(lab, hook), [2])
    }

    private func send(_ lab: Lab, _ hook: Hook, sequence: UInt32) throws {
        hook == .lanIngress ? try lab.sendFromLAN(sequence: sequence) : try lab.sendFromTunnel(sequence: sequence)
    }

    private func received(_ lab: Lab, _ hook: Hook) -> [UInt32] {
        (hook == .lanIngress ? lab.receivedOnTunnel() : lab.receivedOnLAN()).map(\.0)
    }

    /// The kernel fact the proxy poll relies on (issue 16, row 9): an LPM trie's `memlock` figure
    /// moves with each entry added or removed (Linux ≥ 6.4) and not with one overwritten in place.
    func testClientMapFootprintCountsItsEntries() throws {
        // Before 6.4 the figure is fixed by the map's size, and the daemon does not use it.
        try XCTSkipUnless(Datapath.footprintCountsEntries, "Linux < 6.4: an LPM trie's memlock figure does not count its entries")
        let lab = try Lab(for: self)
        let datapath = try lab.datapath()
        try lab.configureEntries(datapath)
        let start = try XCTUnwrap(datapath.footprint(.clients))
        let extra = IPPrefix(address: IPAddress("2001:db8:7::1")!, length: 128)
        try datapath.set(.redirect, for: extra, in: .clients)
        let one = try XCTUnwrap(datapath.footprint(.clients))
        XCTAssertGreaterThan(one, start)
        try datapath.set(.pass, for: extra, in: .clients)
        XCTAssertEqual(datapath.footprint(.clients), one, "overwritten in place: the same count")
        XCTAssertTrue(try datapath.remove(extra, from: .clients))
        XCTAssertEqual(datapath.footprint(.clients), start)
    }

    func testMapEntriesChangedWithBpftoolAreRestored() throws {
        let lab = try Lab(for: self)
        let datapath = try lab.datapath()
        try lab.attach(datapath)
        try lab.configureEntries(datapath)
        let pins = "\(lab.pinRoot)/wgt0"
        // struct prefix_key: prefix length 64 (little endian), then 2001:db8:2::.
        let clientKey = ["40", "00", "00", "00", "20", "01", "0d", "b8", "00", "02"] + Array(repeating: "00", count: 10)
        try shell(["bpftool", "map", "delete", "pinned", "\(pins)/client_prefixes", "key", "hex"] + clientKey)
        let lanKey = ["40", "00", "00", "00", "20", "01", "0d", "b8", "00", "01"] + Array(repeating: "00", count: 10)
        try shell(["bpftool", "map", "update", "pinned", "\(pins)/lan_prefixes", "key", "hex"] + lanKey + ["value", "hex", "00", "00", "00", "00"])
        try shell(["bpftool", "map", "update", "pinned", "\(pins)/config", "key", "hex", "00", "00", "00", "00",
                   "value", "hex"] + Array(repeating: "00", count: 64))

        XCTAssertEqual(try datapath.entries(in: .clients), [:])
        XCTAssertEqual(try datapath.entries(in: .lan)[Lab.lanPrefix], .pass)
        XCTAssertFalse(try lab.state(datapath).configured)
        try lab.sendFromLAN(sequence: 1)
        XCTAssertEqual(lab.receivedOnTunnel().map(\.0), [])

        try lab.configureEntries(datapath)
        XCTAssertEqual(try lab.attach(datapath), [.configured(lanIndex: lab.lanIndex, tunnelIndex: lab.tunnelIndex)])
        XCTAssertEqual(try datapath.entries(in: .clients), Lab.desiredClients)
        XCTAssertEqual(try datapath.entries(in: .lan), Lab.desiredLAN)
        XCTAssertTrue(try lab.state(datapath).isInSync)
        try lab.sendFromLAN(sequence: 2)
        try lab.sendFromTunnel(sequence: 3)
        XCTAssertEqual(lab.receivedOnTunnel().map(\.0), [2])
        XCTAssertEqual(lab.receivedOnLAN().map(\.0), [3])
    }
}
