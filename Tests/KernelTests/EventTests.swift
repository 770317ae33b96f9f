import Foundation
import Netlink
import TestSupport
import XCTest

final class EventTests: XCTestCase {
    func testRouteDeletedByAnotherProcessIsReported() throws {
        let ns = try TestNamespace(for: self)
        let veth = try ns.addVeth()
        let netlink = try ns.rtnetlink()
        let events = try ns.events()
        let route = Route(destination: IPPrefix("2001:db8:1::100/128")!, protocolNumber: 77, outputInterface: veth, metric: 1024)
        try netlink.socket.perform(route.addRequest())
        _ = try events.readEvents()

        try ns.ip("-6", "route", "del", "2001:db8:1::100/128", "dev", "veth0", "proto", "77")
        let seen = try events.waitForEvents(timeout: .seconds(2))
        let deleted = seen.compactMap { event -> Route? in
            if case .deletedRoute(let r) = event { return r }
            return nil
        }
        XCTAssertEqual(deleted, [route])
    }

    func testLinkAndNetconfEvents() throws {
        let ns = try TestNamespace(for: self)
        let events = try ns.events()
        let veth = try ns.addVeth()
        try ns.ip("netns", "exec", ns.name, "sysctl", "-q", "-w", "net.ipv6.conf.veth0.proxy_ndp=1")
        var seen: [RouteEvent] = []
        let deadline = Date().addingTimeInterval(2)
        while Date() < deadline {
            seen += try events.waitForEvents(timeout: .milliseconds(200))
            if seen.contains(where: { if case .netconf(let c) = $0 { return c.proxyNeighbour == true }; return false }) { break }
        }
        XCTAssertTrue(seen.contains { if case .newLink(let l) = $0 { return l.index == veth && l.kind == "veth" }; return false })
        XCTAssertTrue(seen.contains { if case .netconf(let c) = $0 { return c.interfaceIndex == veth && c.proxyNeighbour == true }; return false })
    }

    /// Proxy (pneigh) entries come and go without an event (pneigh_create() and pneigh_delete()
    /// send no RTM_NEWNEIGH/RTM_DELNEIGH), which is why the daemon re-reads them on `proxy_poll`.
    /// `ip monitor neigh`, a listener independent of our decoder, sees an ordinary neighbour
    /// entry added after them and nothing of the proxies. Should this fail, the kernel notifies
    /// them now: the poll still works, and could be relaxed on such kernels.
    func testProxyEntriesAreNotNotified() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth()
        let monitor = Process()
        monitor.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        monitor.arguments = ["ip", "-n", ns.name, "monitor", "neigh"]
        let output = Pipe()
        monitor.standardOutput = output
        try monitor.run()
        defer { if monitor.isRunning { monitor.terminate() } }
        usleep(300_000)  // subscribed
        try ns.ip("-6", "neigh", "add", "proxy", "2001:db8::1", "dev", "veth0")
        try ns.ip("-6", "neigh", "del", "proxy", "2001:db8::1", "dev", "veth0")
        try ns.ip("-6", "neigh", "add", "proxy", "2001:db8::3", "dev", "veth0")
        try ns.ip("-6", "neigh", "add", "2001:db8::2", "lladdr", "02:00:00:00:00:02", "dev", "veth0")
        usleep(500_000)
        monitor.terminate()
        monitor.waitUntilExit()
        let seen = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(seen.contains("2001:db8::2 "), "the ordinary neighbour entry is notified: \(seen)")
        XCTAssertFalse(seen.contains("2001:db8::1 ") || seen.contains("2001:db8::3 "), "a proxy entry was notified: \(seen)")
        XCTAssertEqual(try ns.ipJSON("-6", "neigh", "show", "proxy").compactMap { $0["dst"] as? String }, ["2001:db8::3"])
    }

    /// A real overflow: a tiny receive queue that nobody reads, flooded with route events.
    func testOverflowIsReportedNotSwallowed() throws {
        let ns = try TestNamespace(for: self)
        let veth = try ns.addVeth()
        let events = try ns.events([.ipv6Route], bufferBytes: 4096)
        let netlink = try ns.rtnetlink()
        let routes = (1...500).map {
            Route(destination: IPPrefix("2001:db8:7::\(String($0, radix: 16))/128")!, protocolNumber: 77, outputInterface: veth)
        }
        for case .failure(let error) in try netlink.perform(routes.map { $0.addRequest() }) { XCTFail("\(error)") }
        let seen = try events.readEvents()
        XCTAssertTrue(seen.contains { if case .overflow = $0 { return true }; return false }, "no overflow in \(seen.count) events")
    }
}
