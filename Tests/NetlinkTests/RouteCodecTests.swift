@testable import Netlink
import XCTest

/// The encoder writes, byte for byte, what iproute2 sends for the same object.
final class RouteCodecTests: XCTestCase {
    private let veth0: Int32 = 3  // ifindex of veth0 where the fixtures were captured

    private func assertEncodes(_ request: Request, as name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try fixture(name)
        let actual = try XCTUnwrap(request.encoded(sequence: sequence(of: expected)))
        XCTAssertEqual(actual, expected, "\n\(hex(actual))\n--- expected (\(name)) ---\n\(hex(expected))", file: file, line: line)
    }

    func testHostRouteAdd() throws {
        let route = Route(destination: IPPrefix("2001:db8:1::100/128")!, protocolNumber: 77, outputInterface: veth0)
        try assertEncodes(route.addRequest(), as: "route-add-host")
    }

    func testRouteWithGatewayMetricAndLargeTable() throws {
        let route = Route(destination: IPPrefix("2001:db8:2::/64")!, table: 1000, protocolNumber: 77,
                          outputInterface: veth0, gateway: IPAddress("fe80::1"), metric: 1024)
        try assertEncodes(route.addRequest(), as: "route-add-full")
    }

    func testRouteReplace() throws {
        let route = Route(destination: IPPrefix("2001:db8:1::100/128")!, protocolNumber: 77, outputInterface: veth0, metric: 1024)
        try assertEncodes(route.replaceRequest(), as: "route-replace")
    }

    func testRouteDelete() throws {
        let route = Route(destination: IPPrefix("2001:db8:1::100/128")!, protocolNumber: 77, outputInterface: veth0)
        try assertEncodes(route.deleteRequest(), as: "route-del")
    }

    func testIPv4RouteAddAndDelete() throws {
        let route = Route(destination: IPPrefix("192.0.2.0/24")!, protocolNumber: 77, scope: Route.link, outputInterface: veth0)
        try assertEncodes(route.addRequest(), as: "route-add-v4")
        try assertEncodes(route.deleteRequest(), as: "route-del-v4")
    }

    /// A WireGuard device is created up, in one message, like `ip link add wg0 up type wireguard`
    /// (the fixture says where the bytes differ from iproute2's).
    func testLinkCreatedUp() throws {
        try assertEncodes(Link.createRequest(name: "wg0", kind: "wireguard", up: true), as: "link-add-up")
    }

    func testProxyAddAndDelete() throws {
        let entry = ProxyEntry(address: IPAddress("2001:db8:1::200")!, interfaceIndex: veth0, protocolNumber: 77)
        try assertEncodes(entry.addRequest(), as: "proxy-add")
        try assertEncodes(entry.deleteRequest(), as: "proxy-del")
    }

    // MARK: decoding captured kernel replies

    func testDecodesRouteDump() throws {
        let messages = try Message.parse(try fixture("route-dump-reply"))
        let routes = try messages.compactMap { $0.type == 24 ? try Route.decode($0) : nil }
        let ours = try XCTUnwrap(routes.first { $0.destination == IPPrefix("2001:db8:1::100/128") })
        XCTAssertEqual(ours, Route(destination: IPPrefix("2001:db8:1::100/128")!, protocolNumber: 77,
                                   outputInterface: veth0, metric: 1024))
        let viaGateway = try XCTUnwrap(routes.first { $0.destination == IPPrefix("2001:db8:3::/64") })
        XCTAssertEqual(viaGateway.gateway, IPAddress("2001:db8:ff::2"))
        XCTAssertEqual(viaGateway.metric, 300)
        XCTAssertEqual(viaGateway.protocolNumber, 3)  // RTPROT_BOOT: what `ip route add` uses by default
        XCTAssertTrue(routes.allSatisfy { $0.table == Route.mainTable })
    }

    func testDecodesProxyDumpAndDone() throws {
        let messages = try Message.parse(try fixture("proxy-dump-reply"))
        XCTAssertEqual(messages.count, 2)
        XCTAssertTrue(messages[1].isDone)
        let entry = try XCTUnwrap(try ProxyEntry.decode(messages[0]))
        XCTAssertEqual(entry, ProxyEntry(address: IPAddress("2001:db8:1::200")!, interfaceIndex: veth0, protocolNumber: 77))
    }

    func testDecodesErrorWithExtendedAck() throws {
        let messages = try Message.parse(try fixture("error-reply-extack"))
        XCTAssertEqual(messages.count, 1)
        XCTAssertTrue(messages[0].isError)
        let (code, text) = try messages[0].status()
        XCTAssertEqual(code, 22)  // EINVAL
        XCTAssertEqual(text, "Egress device not specified")
    }

    func testDecodesErrorWithoutExtendedAck() throws {
        let (code, text) = try Message.parse(try fixture("error-reply"))[0].status()
        XCTAssertEqual(code, 113)  // EHOSTUNREACH
        XCTAssertNil(text)
    }
}

final class TrafficControlEventTests: XCTestCase {
    /// A filter or qdisc change is reported with its interface (the datapath's clsact hook).
    func testFilterAndQdiscEventsNameTheirInterface() throws {
        // struct tcmsg: family, 3 pad bytes, ifindex (i32), handle, parent, info.
        let payload: [UInt8] = [0, 0, 0, 0, 7, 0, 0, 0] + [UInt8](repeating: 0, count: 12)
        for type: UInt16 in [36, 37, 44, 45] {  // RTM_NEWQDISC, RTM_DELQDISC, RTM_NEWTFILTER, RTM_DELTFILTER
            let event = try RouteEvent.decode(Message(type: type, flags: 0, sequence: 0, portID: 0, payload: payload))
            guard case .trafficControl(let index)? = event else { return XCTFail("type \(type): \(String(describing: event))") }
            XCTAssertEqual(index, 7)
        }
        XCTAssertThrowsError(try RouteEvent.decode(Message(type: 45, flags: 0, sequence: 0, portID: 0, payload: [0, 0])))
    }
}
