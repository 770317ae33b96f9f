import Foundation
import Netlink
import TestSupport
import XCTest

/// Batched writes against the host kernel, read back by iproute2 and by our own dumps.
final class RouteBatchTests: XCTestCase {
    private func hostRoute(_ i: Int, _ oif: Int32) -> Route {
        Route(destination: IPPrefix("2001:db8:100::\(String(i, radix: 16))/128")!, protocolNumber: 77,
              outputInterface: oif, metric: 1024)
    }

    func testThousandRoutesAndProxyEntriesRoundTrip() throws {
        let ns = try TestNamespace(for: self)
        let veth = try ns.addVeth()
        let netlink = try ns.rtnetlink()
        let routes = (1...1000).map { hostRoute($0, veth) }
        let proxies = (1...1000).map { ProxyEntry(address: IPAddress("2001:db8:1::\(String($0, radix: 16))")!, interfaceIndex: veth, protocolNumber: 77) }

        let results = try netlink.perform(routes.map { $0.addRequest() } + proxies.map { $0.addRequest() })
        XCTAssertEqual(results.count, 2000)
        for case .failure(let error) in results { XCTFail("\(error)") }
        XCTAssertEqual(netlink.writeCount, 2000)

        // iproute2, the independent reader.
        let shown = try ns.ipJSON("-6", "route", "show", "proto", "77")
        XCTAssertEqual(Set(shown.compactMap { $0["dst"] as? String }), Set(routes.map { $0.destination.address.description }))
        XCTAssertTrue(shown.allSatisfy { $0["dev"] as? String == "veth0" && $0["metric"] as? Int == 1024 })
        let shownProxies = try ns.ipJSON("-6", "neigh", "show", "proxy")
        XCTAssertEqual(Set(shownProxies.compactMap { $0["dst"] as? String }), Set(proxies.map(\.address.description)))

        // Our dumps.
        let dumped = try netlink.routes(family: .inet6).filter { $0.protocolNumber == 77 }
        XCTAssertEqual(Set(dumped), Set(routes))
        XCTAssertEqual(Set(try netlink.proxyEntries()), Set(proxies))

        let deleted = try netlink.perform(routes.map { $0.deleteRequest() } + proxies.map { $0.deleteRequest() })
        for case .failure(let error) in deleted { XCTFail("\(error)") }
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "proto", "77").count, 0)
        XCTAssertEqual(try ns.ipJSON("-6", "neigh", "show", "proxy").count, 0)
        XCTAssertTrue(try netlink.routes(family: .inet6).allSatisfy { $0.protocolNumber != 77 })
    }

    func testOneFailureHidesNoOtherResult() throws {
        let ns = try TestNamespace(for: self)
        let veth = try ns.addVeth()
        let netlink = try ns.rtnetlink()
        var requests = (1...50).map { hostRoute($0, veth).addRequest() }
        requests[10] = hostRoute(11, 9999).addRequest()      // no such device
        requests[30] = hostRoute(5, veth).addRequest()       // already added by request 4

        let results = try netlink.perform(requests)
        for (i, result) in results.enumerated() {
            switch (i, result) {
            case (10, .failure(let error)):
                XCTAssertEqual(error.errno?.rawValue, ENODEV)
                XCTAssertTrue(error.description.contains("2001:db8:100::b/128"), error.description)
            case (30, .failure(let error)):
                XCTAssertEqual(error.errno?.rawValue, EEXIST)
            case (10, _), (30, _):
                XCTFail("request \(i) should have failed")
            case (_, .failure(let error)):
                XCTFail("request \(i): \(error)")
            default: break
            }
        }
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "proto", "77").count, 48)
    }

    func testExtendedAckMessageReachesTheError() throws {
        let ns = try TestNamespace(for: self)
        let netlink = try ns.rtnetlink()
        let route = Route(destination: IPPrefix("2001:db8:9::/64")!, protocolNumber: 77, gateway: IPAddress("fe80::1"))
        XCTAssertThrowsError(try netlink.socket.perform(route.addRequest())) { error in
            let error = error as! NetlinkError
            XCTAssertEqual(error.errno?.rawValue, EINVAL)
            XCTAssertEqual(error.kernelMessage, "Egress device not specified")
            XCTAssertTrue(error.description.contains("add route 2001:db8:9::/64 via fe80::1"), error.description)
        }
    }

    func testReplaceChangesTheDeviceOfOurRoute() throws {
        let ns = try TestNamespace(for: self)
        let veth0 = try ns.addVeth("veth0", "veth1")
        let veth2 = try ns.addVeth("veth2", "veth3")
        let netlink = try ns.rtnetlink()
        try netlink.socket.perform(hostRoute(1, veth0).addRequest())
        try netlink.socket.perform(hostRoute(1, veth2).replaceRequest())
        let ours = try netlink.routes(family: .inet6).filter { $0.protocolNumber == 77 }
        XCTAssertEqual(ours, [hostRoute(1, veth2)])
    }

    /// A delete names our protocol, so the kernel refuses to remove another owner's route.
    func testDeleteWithOurProtocolLeavesAForeignRouteAlone() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth()
        try ns.ip("-6", "route", "add", "2001:db8:100::1/128", "dev", "veth0", "proto", "static")
        let netlink = try ns.rtnetlink()
        let veth = try ns.index(of: "veth0")
        XCTAssertThrowsError(try netlink.socket.perform(hostRoute(1, veth).deleteRequest()))
        XCTAssertEqual(try ns.ipJSON("-6", "route", "show", "proto", "static").count, 1)
    }

    func testLinksAddressesAndLookup() throws {
        let ns = try TestNamespace(for: self)
        let veth = try ns.addVeth()
        try ns.ip("-6", "addr", "add", "2001:db8:ff::1/64", "dev", "veth0", "nodad")
        let netlink = try ns.rtnetlink()
        let link = try XCTUnwrap(try netlink.link(named: "veth0"))
        XCTAssertEqual(link.index, veth)
        XCTAssertEqual(link.kind, "veth")
        XCTAssertTrue(link.isUp)
        XCTAssertEqual(link.mtu, 1500)
        XCTAssertNil(try netlink.link(named: "nonexistent0"))
        XCTAssertEqual(Set(try netlink.links().map(\.name)), ["lo", "veth0", "veth1"])
        let addresses = try netlink.addresses(family: .inet6).filter { $0.interfaceIndex == veth }
        XCTAssertTrue(addresses.contains { $0.prefix == IPPrefix("2001:db8:ff::1/64") })
    }

    func testSysctlWritesShowInNetconf() throws {
        let ns = try TestNamespace(for: self)
        let veth = try ns.addVeth()
        try ns.namespace.perform {
            try Sysctl.ipv6(interface: "veth0", "forwarding").write("1")
            try Sysctl.ipv6(interface: "veth0", "proxy_ndp").write("1")
            XCTAssertEqual(try Sysctl.ipv6(interface: "veth0", "proxy_ndp").readInt(), 1)
            XCTAssertEqual(try Sysctl.ipv6(interface: "all", "forwarding").readInt(), 0)
        }
        let conf = try ns.rtnetlink().netconf(family: .inet6)
        let entry = try XCTUnwrap(conf.first { $0.interfaceIndex == veth })
        XCTAssertEqual(entry.forwarding, true)
        XCTAssertEqual(entry.proxyNeighbour, true)
        XCTAssertEqual(conf.first { $0.interfaceIndex == Netconf.all }?.forwarding, false)
        // The host's own value is untouched: the write happened in the namespace.
        XCTAssertNotNil(try Sysctl.ipv6(interface: "all", "forwarding").readInt())
    }
}
