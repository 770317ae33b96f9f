import Foundation
import Netlink
import XCTest

/// The nftables chain decoder (NFT_MSG_NEWCHAIN as a chain dump returns it) and the legacy
/// ip6tables check, without a kernel.
final class NetfilterChainTests: XCTestCase {
    private func attribute(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        let length = UInt16(4 + payload.count)
        let bytes = [UInt8(length & 0xff), UInt8(length >> 8), UInt8(type & 0xff), UInt8(type >> 8)] + payload
        return bytes + [UInt8](repeating: 0, count: (4 - bytes.count % 4) % 4)
    }

    private func string(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }
    private func be32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.bigEndian, Array.init) }

    /// A chain as nf_tables_fill_chain_info writes it: family in nfgenmsg, table, name, the hook
    /// nest (hook number and priority in network order), the policy.
    private func chain(family: UInt8, table: String, name: String, hook: UInt32?, policy: UInt32? = nil) -> Message {
        var payload: [UInt8] = [family, 0, 0, 0]
        payload += attribute(1, string(table)) + attribute(3, string(name))
        if let hook { payload += attribute(4 | 0x8000, attribute(1, be32(hook)) + attribute(2, be32(0))) }
        if let policy { payload += attribute(5, be32(policy)) }
        payload += attribute(6, be32(1))  // NFTA_CHAIN_USE, ignored
        return Message(type: 10 << 8 | 3, flags: 2, sequence: 1, portID: 0, payload: payload)
    }

    func testDecodesBaseAndRegularChains() throws {
        let forward = try XCTUnwrap(try NetfilterChain.decode(chain(family: 1, table: "filter", name: "forward", hook: 2, policy: 0)))
        XCTAssertEqual(forward, NetfilterChain(family: 1, table: "filter", name: "forward", hook: 2, policy: 0))
        XCTAssertTrue(forward.filtersForwardedIPv6)
        XCTAssertEqual(forward.description, "inet filter forward (policy drop)")

        let ip6 = try XCTUnwrap(try NetfilterChain.decode(chain(family: 10, table: "t", name: "fwd", hook: 2, policy: 1)))
        XCTAssertTrue(ip6.filtersForwardedIPv6)
        XCTAssertEqual(ip6.description, "ip6 t fwd")
        // IPv4 only, another hook, a chain only jumped to: none filters forwarded IPv6.
        XCTAssertEqual(try NetfilterChain.decode(chain(family: 2, table: "t", name: "fwd", hook: 2))?.filtersForwardedIPv6, false)
        XCTAssertEqual(try NetfilterChain.decode(chain(family: 1, table: "t", name: "in", hook: 1))?.filtersForwardedIPv6, false)
        let regular = try XCTUnwrap(try NetfilterChain.decode(chain(family: 1, table: "t", name: "mine", hook: nil)))
        XCTAssertNil(regular.hook)
        XCTAssertFalse(regular.filtersForwardedIPv6)
        // Another message type of the subsystem is not a chain.
        var table = chain(family: 1, table: "t", name: "x", hook: nil)
        table.type = 10 << 8 | 0
        XCTAssertNil(try NetfilterChain.decode(table))
    }

    func testTruncatedChainIsAnErrorNotACrash() {
        var message = chain(family: 1, table: "filter", name: "forward", hook: 2)
        message.payload[4] = 200  // the first attribute claims more bytes than there are
        XCTAssertThrowsError(try NetfilterChain.decode(message))
        message.payload = [1, 0]
        XCTAssertThrowsError(try NetfilterChain.decode(message))
    }

    /// Legacy ip6tables: its filter table (whose FORWARD chain always exists) is listed in
    /// /proc/net/ip6_tables_names. Without nf_tables loaded nothing is asked over netlink.
    func testLegacyIp6tablesFilterTable() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wgk-nf-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "nf_conntrack 1 0 - Live 0x0\n".write(toFile: "\(directory)/modules", atomically: true, encoding: .utf8)
        func chains() throws -> [String] {
            try NetfilterForwarding.chains(modules: "\(directory)/modules", moduleRoot: "\(directory)/sys", procNet: directory)
        }
        XCTAssertEqual(try chains(), [])
        try "mangle\n".write(toFile: "\(directory)/ip6_tables_names", atomically: true, encoding: .utf8)
        XCTAssertEqual(try chains(), [])
        try "mangle\nfilter\n".write(toFile: "\(directory)/ip6_tables_names", atomically: true, encoding: .utf8)
        XCTAssertEqual(try chains(), ["ip6tables filter FORWARD"])
    }
}
