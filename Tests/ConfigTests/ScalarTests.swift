@testable import Config
import Netlink
import Reconciler
import XCTest

final class ScalarTests: XCTestCase {
    func testDurations() {
        let cases: [(String, Duration?)] = [
            ("500ms", .milliseconds(500)), ("2s", .seconds(2)), ("1m", .seconds(60)), ("1h", .seconds(3600)),
            ("1m30s", .seconds(90)), ("0s", nil), ("2", nil), ("s", nil), ("2 s", nil), ("-2s", nil), ("2S", nil),
            ("1.5s", nil), ("", nil), ("2d", nil),
        ]
        for (text, expected) in cases { XCTAssertEqual(Scalars.duration(text), expected, text) }
    }

    func testIntegersAreDecimalOnly() {
        XCTAssertEqual(Scalars.integer("51820", in: 1...65535), 51820)
        for text in ["0x10", "+1", "-1", "1_000", "1e3", " 1", "", "99999999999999999999999"] {
            XCTAssertNil(Scalars.integer(text, in: 0...UInt64.max), text)
        }
    }

    func testBooleansAreTrueOrFalseOnly() {
        XCTAssertEqual(Scalars.bool("true"), true)
        XCTAssertEqual(Scalars.bool("false"), false)
        for text in ["yes", "no", "on", "off", "True", "1", ""] { XCTAssertNil(Scalars.bool(text), text) }
    }

    func testEndpoints() {
        XCTAssertEqual(Scalars.endpoint("[2001:db8::1]:51820"), .address(Endpoint("[2001:db8::1]:51820")!))
        XCTAssertEqual(Scalars.endpoint("192.0.2.1:51820"), .address(Endpoint("192.0.2.1:51820")!))
        XCTAssertEqual(Scalars.endpoint("vpn.example.com:51820"), .host("vpn.example.com", port: 51820))
        for text in ["vpn.example.com", "2001:db8::1:51820", "[2001:db8::1]:0", "vpn..example.com:1", "-vpn.example:1",
                     "192.0.2:51820", "[vpn]:1", "vpn.example.com:65536", ":51820"] {
            XCTAssertNil(Scalars.endpoint(text), text)
        }
    }

    func testInterfaceAndPeerNames() {
        for text in ["wg0", "private0", "eth0.100", "a23456789012345"] { XCTAssertTrue(Scalars.isInterfaceName(text), text) }
        for text in ["", ".", "..", "a234567890123456", "wg/0", "wg:0", "wg 0"] { XCTAssertFalse(Scalars.isInterfaceName(text), text) }
        for text in ["alice-laptop", "bob@phone", "c.d_e+f", "0"] { XCTAssertTrue(Scalars.isPeerName(text), text) }
        for text in ["", "-x", "a b", "ä", String(repeating: "a", count: 65)] { XCTAssertFalse(Scalars.isPeerName(text), text) }
    }

    func testPrefixesNeedALength() {
        XCTAssertEqual(Scalars.ipv6Prefix("2001:db8::/32"), IPPrefix("2001:db8::/32"))
        XCTAssertNil(Scalars.ipv6Prefix("2001:db8::1"))
        XCTAssertNil(Scalars.ipv6Prefix("10.0.0.0/8"))
        XCTAssertNil(Scalars.ipv6Address("2001:db8::1/128"))
    }
}
