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
