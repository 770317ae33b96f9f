@testable import Netlink
import XCTest

final class WireGuardFragmentTests: XCTestCase {
    private func key(_ n: Int) -> WireGuardKey {
        WireGuardKey(bytes: (0..<32).map { UInt8(truncatingIfNeeded: n >> ($0 % 4 * 8)) &+ UInt8($0) })!
    }

    private func ips(_ count: Int, base: Int = 0) -> [IPPrefix] {
        (0..<count).map { IPPrefix("2001:db8:\(String((base + $0) >> 16, radix: 16)):\(String((base + $0) & 0xffff, radix: 16))::/128")! }
    }

    /// Encodes every fragment and reads the peers back out of the bytes.
    private func roundTrip(_ change: WireGuardDeviceChange, limit: Int) throws -> (messages: [Message], peers: [(flags: UInt32, peer: WireGuardPeer)]) {
        let fragments = WireGuardCodec.fragments(change, name: "wg0", limit: limit)
        var messages: [Message] = []
        for fragment in fragments {
            let buffer = MessageBuffer(capacity: 1 << 20)
            XCTAssertTrue(buffer.append(type: 30, flags: 5, sequence: 1) {
                WireGuardCodec.encode(fragment, of: change, name: "wg0", into: &$0)
            })
            XCTAssertLessThanOrEqual(buffer.count, limit, "a fragment is larger than the limit")
            messages += try Message.parse(buffer.bytes)
        }
        var peers: [(UInt32, WireGuardPeer)] = []
        for message in messages {
            guard let nest = try message.attributes(after: UInt32.self).nested(8) else { continue }  // WGDEVICE_A_PEERS
            for p in nest.all {
                let attributes = try Attributes(parsing: p.payload)
                peers.append((try attributes.u32(3) ?? 0, try WireGuardCodec.decodePeer(attributes)))
            }
        }
        return (messages, peers)
    }

    func testSmallChangeIsOneMessage() throws {
        let change = WireGuardDeviceChange(listenPort: 51820, replacePeers: true,
                                           peers: [WireGuardPeerChange(publicKey: key(1), allowedIPs: ips(3))])
        let (messages, peers) = try roundTrip(change, limit: 32 * 1024)
        XCTAssertEqual(messages.count, 1)
        XCTAssertEqual(peers.map(\.peer.allowedIPs), [ips(3)])
    }

    func testTwentyThousandAllowedIPsSplitWithReplaceOnlyFirst() throws {
        let all = ips(20_000)
        let change = WireGuardDeviceChange(peers: [
            WireGuardPeerChange(publicKey: key(1), replaceAllowedIPs: true, endpoint: Endpoint("[2001:db8:ff::2]:51820"),
                                persistentKeepalive: 25, allowedIPs: all),
        ])
        let (messages, peers) = try roundTrip(change, limit: 32 * 1024)
        XCTAssertGreaterThan(messages.count, 20)
        XCTAssertEqual(peers.count, messages.count)
        XCTAssertTrue(peers.allSatisfy { $0.peer.publicKey == key(1) })
        XCTAssertTrue(peers.flatMap(\.peer.allowedIPs) == all, "every IP, in order, once")
        XCTAssertEqual(peers[0].flags & 2, 2, "the first fragment replaces")
        XCTAssertTrue(peers.dropFirst().allSatisfy { $0.flags & 2 == 0 }, "no later fragment may replace")
        XCTAssertEqual(peers[0].peer.endpoint, Endpoint("[2001:db8:ff::2]:51820"))
        XCTAssertTrue(peers.dropFirst().allSatisfy { $0.peer.endpoint == nil && $0.peer.persistentKeepalive == 0 })
    }

    func testManyPeersSplitAtPeerBoundariesAndDeviceSettingsOnlyFirst() throws {
        let peers = (0..<2000).map { WireGuardPeerChange(publicKey: key($0), allowedIPs: ips(3, base: $0 * 3)) }
        let change = WireGuardDeviceChange(privateKey: PrivateKey.generate(), listenPort: 51820, replacePeers: true, peers: peers)
        let fragments = WireGuardCodec.fragments(change, name: "wg0", limit: 8192)
        XCTAssertTrue(fragments[0].isFirst)
        XCTAssertTrue(fragments.dropFirst().allSatisfy { !$0.isFirst })
        XCTAssertTrue(fragments.allSatisfy { $0.peers.allSatisfy(\.isFirst) }, "3 IPs always fit with their peer")
        let (_, decoded) = try roundTrip(change, limit: 8192)
        XCTAssertEqual(decoded.count, peers.count)
        XCTAssertTrue(decoded.map(\.peer.publicKey) == peers.map(\.publicKey), "peers out of order or missing")
        XCTAssertTrue(decoded.map(\.peer.allowedIPs) == peers.map(\.allowedIPs), "allowed IPs differ")
    }

    func testUpdateOnlyIsRepeatedOnContinuations() throws {
        let change = WireGuardDeviceChange(peers: [WireGuardPeerChange(publicKey: key(7), updateOnly: true, allowedIPs: ips(1000))])
        let (_, decoded) = try roundTrip(change, limit: 4096)
        XCTAssertGreaterThan(decoded.count, 1)
        XCTAssertTrue(decoded.allSatisfy { $0.flags & 4 == 4 }, "a continuation must not create a peer an update-only change skipped")
    }

    func testRemovalAndPresharedKeyAndIPv4() throws {
        let psk = PresharedKey(key(99))
        let change = WireGuardDeviceChange(peers: [
            WireGuardPeerChange(publicKey: key(1), remove: true),
            WireGuardPeerChange(publicKey: key(2), presharedKey: psk, endpoint: Endpoint("192.0.2.1:51820"),
                                persistentKeepalive: 0, allowedIPs: [IPPrefix("10.0.0.0/8")!, IPPrefix("2001:db8::/32")!]),
        ])
        let (_, decoded) = try roundTrip(change, limit: 32 * 1024)
        XCTAssertEqual(decoded[0].flags, 1)
        XCTAssertEqual(decoded[1].peer.presharedKey, psk)
        XCTAssertEqual(decoded[1].peer.endpoint, Endpoint("192.0.2.1:51820"))
        XCTAssertEqual(decoded[1].peer.allowedIPs, [IPPrefix("10.0.0.0/8")!, IPPrefix("2001:db8::/32")!])
    }

    /// A peer split over two dump messages (the kernel repeats its key) merges into one.
    func testMergeJoinsAPeerSplitAcrossMessages() throws {
        let first = WireGuardDeviceChange(peers: [WireGuardPeerChange(publicKey: key(1), allowedIPs: ips(500))])
        let (messages, _) = try roundTrip(first, limit: 4096)
        // Turn the set messages into what a get reply looks like: add WGDEVICE_A_IFINDEX.
        let replies = messages.map { m -> Message in
            var payload = m.payload
            payload.insert(contentsOf: [8, 0, 1, 0, 5, 0, 0, 0], at: 4)
            return Message(type: m.type, flags: m.flags, sequence: m.sequence, portID: m.portID, payload: payload)
        }
        let device = try XCTUnwrap(try WireGuardCodec.mergeDevice(replies))
        XCTAssertEqual(device.index, 5)
        XCTAssertEqual(device.name, "wg0")
        XCTAssertEqual(device.peers.count, 1)
        XCTAssertTrue(device.peers[0].allowedIPs == ips(500))
    }
}
