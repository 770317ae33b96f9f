@testable import Netlink
import XCTest

/// Bad lengths give an error: never a crash, never a loop.
final class MalformedInputTests: XCTestCase {
    private func proxyReply() throws -> [UInt8] { try fixture("proxy-dump-reply") }

    func testTruncatedMessageHeader() throws {
        let bytes = Array(try proxyReply()[0..<10])
        XCTAssertThrowsError(try Message.parse(bytes))
    }

    func testMessageLengthPastTheEnd() throws {
        var bytes = try proxyReply()
        bytes[0] = 0xFF  // nlmsg_len 255 > 76 bytes present
        XCTAssertThrowsError(try Message.parse(bytes))
    }

    func testMessageLengthBelowHeader() throws {
        var bytes = try proxyReply()
        bytes[0] = 4
        XCTAssertThrowsError(try Message.parse(bytes))
    }

    func testAttributeLengthPastTheEnd() throws {
        var bytes = try proxyReply()
        bytes[28] = 0x40  // NDA_DST's nla_len: 64 > what the message holds
        let message = try Message.parse(bytes)[0]
        XCTAssertThrowsError(try ProxyEntry.decode(message))
    }

    func testZeroLengthAttribute() throws {
        var bytes = try proxyReply()
        bytes[28] = 0  // nla_len 0 would loop forever in a naive walker
        bytes[29] = 0
        let message = try Message.parse(bytes)[0]
        XCTAssertThrowsError(try ProxyEntry.decode(message))
    }

    func testFamilyHeaderTruncated() throws {
        let message = Message(type: 24, flags: 0, sequence: 1, portID: 0, payload: [10, 128])
        XCTAssertThrowsError(try Route.decode(message))
    }

    func testWrongSizedFixedAttribute() throws {
        // RTA_OIF (4) with 2 bytes of payload.
        var payload = [UInt8](repeating: 0, count: 12)
        payload[0] = 10
        payload += [6, 0, 4, 0, 3, 0, 0, 0]
        let message = Message(type: 24, flags: 0, sequence: 1, portID: 0, payload: payload)
        XCTAssertThrowsError(try Route.decode(message))
    }

    func testAddressOfTheWrongSize() throws {
        var payload = [UInt8](repeating: 0, count: 12)
        payload[0] = 10
        payload[1] = 64
        payload += [8, 0, 1, 0, 0x20, 0x01, 0x0d, 0xb8]  // RTA_DST with 4 bytes in an IPv6 route
        let message = Message(type: 24, flags: 0, sequence: 1, portID: 0, payload: payload)
        XCTAssertThrowsError(try Route.decode(message))
    }

    func testErrorMessageTooShort() throws {
        let message = Message(type: 2, flags: 0, sequence: 1, portID: 0, payload: [0, 0])
        XCTAssertThrowsError(try message.status())
    }

    /// Found by fuzz-rtnetlink: a status of Int32.min trapped when negated.
    func testErrorStatusThatIsNotAnErrno() throws {
        for status: Int32 in [.min, -4096, 1] {
            let payload = withUnsafeBytes(of: status, Array.init) + [UInt8](repeating: 0, count: 16)
            let message = Message(type: 2, flags: 0, sequence: 1, portID: 0, payload: payload)
            XCTAssertThrowsError(try message.status(), "status \(status)")
        }
        let ack = Message(type: 2, flags: 0, sequence: 1, portID: 0, payload: [UInt8](repeating: 0, count: 20))
        XCTAssertEqual(try ack.status().errno, 0)
    }

    /// Every truncation of a real reply is either parsed or refused; none crashes.
    func testEveryTruncationOfARealReply() throws {
        let bytes = try fixture("route-dump-reply")
        for end in 0..<bytes.count {
            if let messages = try? Message.parse(Array(bytes[0..<end])) {
                for message in messages { _ = try? Route.decode(message) }
            }
        }
    }

    /// Random byte flips in a real reply never crash the decoders.
    func testRandomCorruption() throws {
        let original = try fixture("route-dump-reply")
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var bytes = original
            for _ in 0..<3 { bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
            guard let messages = try? Message.parse(bytes) else { continue }
            for message in messages {
                _ = try? Route.decode(message)
                _ = try? ProxyEntry.decode(message)
                _ = try? Link.decode(message)
                _ = try? message.status()
            }
        }
    }
}
