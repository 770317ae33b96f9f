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
}
