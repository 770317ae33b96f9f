import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// A gateway whose peers are all in its one file, edited as an operator does: a peer's address
/// changed in place, one inserted, one removed (each read as a delta that parses only the
/// changed items, `config_deltas`), the file rewritten unchanged, a change beside the peers
/// (read whole), a hostile edit (refused as a fresh start refuses it). After each reload the
/// kernel, read with iproute2, holds what the file says, and only the changed peers' objects
/// were written.
final class MainFileReloadTests: XCTestCase {
    func testMainFileEditsReachTheKernel() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let keys = (0..<40).map { _ in PrivateKey.generate().publicKey }
        var peers = (0..<30).map { (number: $0, address: 0x100 + $0) }
        var comment = 0
        var broken = false
        func config() -> String {
            let list = peers.map { TestPeer("c\($0.number)", keys[$0.number], allowedIPs: ["\"2001:db8:1::\(String($0.address, radix: 16))/128\""]) }
            let text = h.gatewayConfig(runtime: ["proxy_poll: 200ms", "resync: 600s"], peers: list, gateway: ["redirect: false"])
                + String(repeating: "# a comment\n", count: comment)
            // An unterminated quote in the tenth peer's name: it runs on into the next peers.
            return broken ? text.replacingOccurrences(of: "name: c\(peers[9].number)\n", with: "name: \"c\(peers[9].number)\n") : text
        }
        try h.writeConfig(config())
        try h.start()

        func routes() throws -> Set<String> {
            Set(try ns.ipJSON("-6", "route", "show", "dev", "wg0", "proto", "77").map { $0["dst"] as! String })
        }
        func proxies() throws -> Set<String> { Set(try ns.ipJSON("-6", "neigh", "show", "proxy").compactMap { $0["dst"] as? String }) }
        func expected() -> Set<String> { Set(peers.map { "2001:db8:1::\(String($0.address, radix: 16))" }) }
        func reload(_ what: String, writes: Int, delta: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws {
            try h.writeConfig(config())
            let before = try h.writes()
            let deltas = try XCTUnwrap(try h.status()["config_deltas"] as? Int)
            let output = try h.ask("reload")["output"] as? String ?? ""
            XCTAssertFalse(output.contains("error"), "\(what): \(output)", file: file, line: line)
            XCTAssertEqual(try h.status()["config_deltas"] as? Int, deltas + (delta ? 1 : 0), "\(what): read as a delta: \(delta)", file: file, line: line)
            XCTAssertEqual(try routes(), expected(), what, file: file, line: line)
            XCTAssertEqual(try proxies(), expected(), what, file: file, line: line)
            XCTAssertEqual(try h.writes() - before, writes, "\(what): only the changed peers' routes and proxy entries", file: file, line: line)
        }
        XCTAssertEqual(try routes(), expected())

        peers[12].address = 0x212
        try reload("a peer's address", writes: 4)
        peers.insert((number: 35, address: 0x135), at: 0)
        try reload("a peer inserted first", writes: 2)
        peers.remove(at: 20)
        try reload("a peer removed", writes: 2)
        peers.append((number: 36, address: 0x136))
        try reload("a peer appended", writes: 2)
        try reload("written again unchanged", writes: 0)
        comment += 1
        try reload("a comment after the peers: read whole", writes: 0, delta: false)
        peers[3].address = 0x203
        try reload("a peer's address after a whole read", writes: 4)

        // Refused as a fresh start refuses it; the previous generation stays in the kernel.
        broken = true
        try h.writeConfig(config())
        XCTAssertThrowsError(try h.ask("reload")) { XCTAssertTrue("\($0)".contains("reload refused"), "\($0)") }
        XCTAssertEqual(try routes(), expected())
        broken = false
        peers[4].address = 0x204
        try reload("mended, and a peer's address", writes: 4, delta: false)

        // A fresh start of the same file agrees with what the reloads left: nothing to write.
        h.stop()
        let before = try routes()
        try h.start()
        XCTAssertEqual(try routes(), before)
        XCTAssertEqual(try h.writes(), 0, "a fresh start of the same file writes nothing")
    }
}
