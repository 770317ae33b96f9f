import Netlink
import XCTest

final class IPPrefixTests: XCTestCase {
    func testParsesAndFormats() {
        XCTAssertEqual(IPPrefix("2001:db8:1::100/128")?.description, "2001:db8:1::100/128")
        XCTAssertEqual(IPPrefix("2001:DB8:1:0::/64")?.description, "2001:db8:1::/64")
        XCTAssertEqual(IPPrefix("2001:db8::1")?.length, 128)
        XCTAssertEqual(IPPrefix("192.0.2.0/24")?.family, .inet)
        XCTAssertEqual(IPPrefix("192.0.2.1")?.length, 32)
    }

    func testRejectsBadInput() {
        for text in ["", "/64", "2001:db8::/129", "2001:db8::/-1", "2001:db8::/ 64", "192.0.2.0/33",
                     "2001:db8::/64/1", "2001:db8::g/64", "10.0.0.256", "2001:db8::/+64", "2001:db8::/٦٤"] {
            XCTAssertNil(IPPrefix(text), text)
        }
    }

    func testCanonicalAndContains() {
        let lan = IPPrefix("2001:db8:1::/64")!
        XCTAssertTrue(lan.isCanonical)
        XCTAssertFalse(IPPrefix("2001:db8:1::1/64")!.isCanonical)
        XCTAssertEqual(IPPrefix("2001:db8:1::1/64")!.canonical, lan)
        XCTAssertTrue(lan.contains(IPAddress("2001:db8:1::100")!))
        XCTAssertFalse(lan.contains(IPAddress("2001:db8:2::100")!))
        XCTAssertTrue(lan.contains(IPPrefix("2001:db8:1::100/128")!))
        XCTAssertFalse(IPPrefix("2001:db8:1::/96")!.contains(lan))
        XCTAssertTrue(IPPrefix("::/0")!.contains(lan))
        XCTAssertFalse(lan.contains(IPAddress("192.0.2.1")!))
    }

    func testMaskingAtEveryLength() {
        let all = IPv6Address(high: .max, low: .max)
        for length in 0...128 {
            let masked = all.masked(to: length)
            XCTAssertEqual(masked.high.nonzeroBitCount + masked.low.nonzeroBitCount, length)
        }
    }

    func testLinkLocal() {
        XCTAssertTrue(IPv6Address("fe80::1")!.isLinkLocal)
        XCTAssertTrue(IPv6Address("febf::1")!.isLinkLocal)
        XCTAssertFalse(IPv6Address("fec0::1")!.isLinkLocal)
        XCTAssertFalse(IPv6Address("2001:db8::1")!.isLinkLocal)
    }

    func testOrderingIsByAddressThenLength() {
        let sorted = ["2001:db8::/64", "2001:db8::/48", "192.0.2.0/24", "2001:db7::/32"].map { IPPrefix($0)! }.sorted()
        XCTAssertEqual(sorted.map(\.description), ["192.0.2.0/24", "2001:db7::/32", "2001:db8::/48", "2001:db8::/64"])
    }
}
