import Foundation
import Netlink
import TestSupport
import XCTest

final class DumpTests: XCTestCase {
    /// A dump of 10 000 routes while another process adds 5 000 more: every original route
    /// is seen exactly once (an interrupted dump is redone, never half-returned).
    func testDumpWhileRoutesAreAddedConcurrently() throws {
        let ns = try TestNamespace(for: self)
        let veth = try ns.addVeth()
        let netlink = try ns.rtnetlink()
        let routes = (1...10_000).map {
            Route(destination: IPPrefix("2001:db8:a::\(String($0, radix: 16))/128")!, protocolNumber: 77, outputInterface: veth, metric: 1024)
        }
        for case .failure(let error) in try netlink.perform(routes.map { $0.addRequest() }) { XCTFail("\(error)") }

        let batch = (1...5_000).map { "route add 2001:db8:b::\(String($0, radix: 16))/128 dev veth0 proto 78" }.joined(separator: "\n")
        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        writer.arguments = ["ip", "-6", "-n", ns.name, "-batch", "-"]
        let input = Pipe()
        writer.standardInput = input
        try writer.run()
        input.fileHandleForWriting.write(Data(batch.utf8))
        try input.fileHandleForWriting.close()

        var dumps = 0
        repeat {
            let dumped = try netlink.routes(family: .inet6).filter { $0.protocolNumber == 77 }
            XCTAssertEqual(dumped.count, 10_000)
            XCTAssertEqual(Set(dumped), Set(routes))
            dumps += 1
        } while writer.isRunning && dumps < 50
        writer.waitUntilExit()
        XCTAssertEqual(writer.terminationStatus, 0)
        XCTAssertGreaterThan(dumps, 0)
    }

    /// A namespace whose veth0 has 3 000 proxy entries (2001:db8:a::1 to ::bb8, protocol 77).
    private func threeThousandProxies() throws -> (TestNamespace, RTNetlink, [ProxyEntry]) {
        let ns = try TestNamespace(for: self)
        let veth = try ns.addVeth()
        let netlink = try ns.rtnetlink()
        let proxies = (1...3_000).map {
            ProxyEntry(address: IPAddress("2001:db8:a::\(String($0, radix: 16))")!, interfaceIndex: veth, protocolNumber: 77)
        }
        for case .failure(let error) in try netlink.perform(proxies.map { $0.addRequest() }) { XCTFail("\(error)") }
        return (ns, netlink, proxies)
    }

    /// The poll's dump: the same table gives the same digest and nothing decoded, from another
    /// socket too (the sequence number and port id are not part of it); any change, even one
    /// that keeps the count, is decoded and equals the plain dump.
    func testADumpWithTheSameBytesIsNotDecodedAndAnyChangeIs() throws {
        let (ns, netlink, proxies) = try threeThousandProxies()
        guard case .read(let first, let digest) = try netlink.proxyEntries(unless: nil) else { return XCTFail("nothing to compare with") }
        XCTAssertEqual(first, try netlink.proxyEntries())
        XCTAssertEqual(Set(first), Set(proxies))
        guard case .unchanged(let again) = try netlink.proxyEntries(unless: digest) else { return XCTFail("the same table decoded again") }
        XCTAssertEqual(again, digest)
        guard case .unchanged = try ns.rtnetlink().proxyEntries(unless: digest) else { return XCTFail("another socket's dump differs") }

        // One entry replaced by another: as many entries as before, other bytes.
        try ns.ip("-6", "neigh", "del", "proxy", "2001:db8:a::5", "dev", "veth0")
        try ns.ip("-6", "neigh", "add", "proxy", "2001:db8:a::ffff", "dev", "veth0", "proto", "77")
        guard case .read(let changed, let other) = try netlink.proxyEntries(unless: digest) else { return XCTFail("a change not decoded") }
        XCTAssertNotEqual(other, digest)
        XCTAssertEqual(changed.count, proxies.count)
        XCTAssertEqual(changed, try netlink.proxyEntries())
        // Another protocol on one entry: only that attribute differs.
        try ns.ip("-6", "neigh", "del", "proxy", "2001:db8:a::6", "dev", "veth0")
        try ns.ip("-6", "neigh", "add", "proxy", "2001:db8:a::6", "dev", "veth0", "proto", "78")
        guard case .read(let reprotocolled, let third) = try netlink.proxyEntries(unless: other) else { return XCTFail("a protocol change not decoded") }
        XCTAssertEqual(reprotocolled.first { $0.address == IPAddress("2001:db8:a::6")! }?.protocolNumber, 78)

        // A poll that expects a change keeps the replies it walks: the same outcomes in one run.
        let request = ProxyEntry.dumpRequest(family: .inet6)
        func expecting(_ previous: ReadDigest) throws -> DumpOutcome<ProxyEntry> {
            try netlink.socket.dump(request, unless: previous, fingerprint: WholeDumpFingerprint.self, expectingChange: true, decode: ProxyEntry.decode).0
        }
        guard case .unchanged(let same) = try expecting(third) else { return XCTFail("the same table decoded again, expecting a change") }
        XCTAssertEqual(same, third)
        try ns.ip("-6", "neigh", "del", "proxy", "2001:db8:a::7", "dev", "veth0")
        guard case .read(let kept, let fourth) = try expecting(third) else { return XCTFail("a change not decoded, expecting one") }
        XCTAssertEqual(kept, try netlink.proxyEntries())
        XCTAssertEqual(kept.count, proxies.count - 1)
        guard case .unchanged = try netlink.proxyEntries(unless: fourth) else { return XCTFail("the digest of a kept run is not the table's") }
    }

    /// The resync's route dump: the same table twice (a second apart, traffic on the link in
    /// between) gives the same digest; a route added, a metric changed or an expiring route's
    /// countdown is decoded.
    func testTheSameRouteTableReadsAsUnchanged() throws {
        let ns = try TestNamespace(for: self)
        try ns.addVeth()
        try ns.ip("-6", "addr", "add", "2001:db8:f::1/64", "dev", "veth0", "nodad")
        let netlink = try ns.rtnetlink()
        let index = try ns.index(of: "veth0")
        let requests = (1...2_000).map {
            Route(destination: IPPrefix("2001:db8:\(String($0, radix: 16))::/64")!, protocolNumber: 77, outputInterface: index).addRequest()
        }
        for case .failure(let error) in try netlink.perform(requests) { XCTFail("\(error)") }
        // The link-local addresses' local routes come once their duplicate address detection ends.
        try eventually(within: .seconds(5), "no tentative address") { try ns.ip("-6", "addr", "show", "tentative").isEmpty }
        guard case .read(let first, let digest) = try netlink.routes(family: .inet6, unless: nil) else { return XCTFail("nothing to compare with") }
        XCTAssertEqual(first, try netlink.routes(family: .inet6))
        _ = try? ns.ip("-6", "neigh", "add", "2001:db8:f::2", "lladdr", "02:00:00:00:00:02", "dev", "veth0")
        usleep(1_100_000)
        guard case .unchanged = try ns.rtnetlink().routes(family: .inet6, unless: digest) else { return XCTFail("the same table decoded again") }

        try ns.ip("-6", "route", "add", "2001:db8:ffff::/64", "dev", "veth0", "proto", "77")
        guard case .read(let added, let other) = try netlink.routes(family: .inet6, unless: digest) else { return XCTFail("an added route not decoded") }
        XCTAssertEqual(added.count, first.count + 1)
        try ns.ip("-6", "route", "replace", "2001:db8:ffff::/64", "dev", "veth0", "proto", "78")
        guard case .read = try netlink.routes(family: .inet6, unless: other) else { return XCTFail("a changed protocol not decoded") }
        try ns.ip("-6", "route", "replace", "2001:db8:ffff::/64", "dev", "veth0", "proto", "78", "expires", "100")
        guard case .read(_, let expiring) = try netlink.routes(family: .inet6, unless: nil) else { return XCTFail() }
        usleep(1_100_000)
        guard case .read = try netlink.routes(family: .inet6, unless: expiring) else { return XCTFail("an expiring route's countdown not decoded") }
    }

    /// A reply that does not decode fails the poll's dump, and leaves the socket usable: the
    /// kernel runs one dump per socket at a time, so a dump given up halfway (its rest still to
    /// be read) makes the next one on that socket fail with EBUSY.
    func testADecodeErrorMidDumpLeavesTheSocketUsable() throws {
        let (_, netlink, proxies) = try threeThousandProxies()
        struct Refused: Error {}
        for previous in [nil, ReadDigest.unmatched()] {
            XCTAssertThrowsError(try netlink.socket.dump(ProxyEntry.dumpRequest(), unless: previous) { _ -> ProxyEntry? in throw Refused() }) {
                XCTAssertTrue($0 is Refused, "\($0)")
            }
            guard case .read(let entries, _) = try netlink.proxyEntries(unless: nil) else { return XCTFail("nothing decoded") }
            XCTAssertEqual(Set(entries), Set(proxies))
            XCTAssertEqual(Set(try netlink.proxyEntries()), Set(proxies))
        }
    }
}
