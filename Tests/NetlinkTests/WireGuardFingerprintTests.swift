import CNetlink
@testable import Netlink
import TestSupport
import XCTest

/// The WireGuard poll's fingerprint (`WireGuardFingerprint`): traffic alone keeps the digest and
/// is handed over as the decoder would read it; anything else the decoder reads moves it.
final class WireGuardFingerprintTests: XCTestCase {
    typealias Random = SeededGenerator

    private func key(_ n: Int) -> WireGuardKey {
        WireGuardKey(bytes: (0..<32).map { UInt8(truncatingIfNeeded: n >> ($0 % 4 * 8)) &+ UInt8($0) })!
    }

    private func prefix(_ i: Int) -> IPPrefix { IPPrefix("2001:db8:\(String(i >> 16, radix: 16)):\(String(i & 0xffff, radix: 16))::/128")! }

    /// A device as the kernel's dump gives it: `perMessage` peers per reply, and a peer with more
    /// than `ipsPerNest` allowed IPs continued in further nests that repeat its public key (the
    /// kernel does this across messages; here a continuation starts a new message too).
    private func replies(_ device: WireGuardDevice, perMessage: Int = 3, ipsPerNest: Int = 4) -> [Message] {
        // Each message: whether it is the first, and its peer nests (peer, its allowed IPs here, first nest of the peer).
        var plan: [[(WireGuardPeer, [IPPrefix], Bool)]] = [[]]
        for peer in device.peers {
            let chunks = stride(from: 0, to: max(peer.allowedIPs.count, 1), by: ipsPerNest).map { Array(peer.allowedIPs.dropFirst($0).prefix(ipsPerNest)) }
            for (i, chunk) in chunks.enumerated() {
                if plan[plan.count - 1].count == perMessage || (i > 0 && !plan[plan.count - 1].isEmpty) { plan.append([]) }
                plan[plan.count - 1].append((peer, chunk, i == 0))
            }
        }
        return plan.enumerated().flatMap { index, nests in message(device, first: index == 0, nests) }
    }

    private func message(_ device: WireGuardDevice, first: Bool, _ nests: [(WireGuardPeer, [IPPrefix], Bool)]) -> [Message] {
        let buffer = MessageBuffer(capacity: 1 << 20)
        XCTAssertTrue(buffer.append(type: 30, flags: UInt16(NLM_F_MULTI), sequence: 1) { w in
            w.put(header: genlmsghdr(cmd: UInt8(WG_CMD_GET_DEVICE.rawValue), version: 1, reserved: 0))
            w.put(UInt16(WGDEVICE_A_IFINDEX.rawValue), u32: UInt32(bitPattern: device.index))
            w.put(UInt16(WGDEVICE_A_IFNAME.rawValue), string: device.name)
            if first {
                w.put(UInt16(WGDEVICE_A_PRIVATE_KEY.rawValue), bytes: device.privateKey?.key.bytes ?? [UInt8](repeating: 0, count: 32))
                if let key = device.publicKey { w.put(UInt16(WGDEVICE_A_PUBLIC_KEY.rawValue), bytes: key.bytes) }
                w.put(UInt16(WGDEVICE_A_LISTEN_PORT.rawValue), u16: device.listenPort)
                w.put(UInt16(WGDEVICE_A_FWMARK.rawValue), u32: device.firewallMark)
            }
            guard !nests.isEmpty else { return }
            w.nest(UInt16(WGDEVICE_A_PEERS.rawValue)) { w in
                for (peer, ips, first) in nests {
                    w.nest(0) { p in
                        p.put(UInt16(WGPEER_A_PUBLIC_KEY.rawValue), bytes: peer.publicKey.bytes)
                        if first {
                            p.put(UInt16(WGPEER_A_PRESHARED_KEY.rawValue), bytes: peer.presharedKey?.key.bytes ?? [UInt8](repeating: 0, count: 32))
                            var time = [UInt8](repeating: 0, count: 16)
                            if let handshake = peer.latestHandshake {
                                let seconds = handshake.rounded(.down)
                                withUnsafeBytes(of: Int64(seconds)) { time.replaceSubrange(0..<8, with: $0) }
                                withUnsafeBytes(of: Int64(((handshake - seconds) * 1e9).rounded())) { time.replaceSubrange(8..<16, with: $0) }
                            }
                            p.put(UInt16(WGPEER_A_LAST_HANDSHAKE_TIME.rawValue), bytes: time)
                            p.put(UInt16(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL.rawValue), u16: peer.persistentKeepalive)
                            p.put(UInt16(WGPEER_A_RX_BYTES.rawValue), u64: peer.receivedBytes)
                            p.put(UInt16(WGPEER_A_TX_BYTES.rawValue), u64: peer.transmittedBytes)
                            p.put(UInt16(WGPEER_A_PROTOCOL_VERSION.rawValue), u32: 1)
                            if let endpoint = peer.endpoint { p.put(UInt16(WGPEER_A_ENDPOINT.rawValue), bytes: endpoint.sockaddr) }
                        }
                        p.nest(UInt16(WGPEER_A_ALLOWEDIPS.rawValue)) { a in
                            for ip in ips { WireGuardCodec.putAllowedIP(&a, ip) }
                        }
                    }
                }
            }
        })
        return try! Message.parse(buffer.bytes)
    }

    /// One message of a genl header and whatever `body` writes.
    private func raw(_ body: (inout MessageWriter) -> Void) -> Message {
        let buffer = MessageBuffer(capacity: 1 << 16)
        XCTAssertTrue(buffer.append(type: 30, flags: 0, sequence: 1) { w in
            w.put(header: genlmsghdr(cmd: 0, version: 1, reserved: 0))
            body(&w)
        })
        return try! Message.parse(buffer.bytes)[0]
    }

    private func fingerprint(_ messages: [Message]) -> WireGuardFingerprint {
        var fingerprint = WireGuardFingerprint()
        for message in messages {
            message.payload.withUnsafeBytes { fingerprint.feed(type: message.type, flags: message.flags, payload: $0) }
        }
        return fingerprint
    }

    private func device(_ random: inout Random, peers: Int) -> WireGuardDevice {
        var device = WireGuardDevice(name: "wg0", index: 7, privateKey: PrivateKey(key(999)), publicKey: key(998), listenPort: 51820, firewallMark: 0)
        var next = 0
        for i in 0..<peers {
            let ips = (0..<Int.random(in: 0...9, using: &random)).map { _ in next += 1; return prefix(next) }
            device.peers.append(WireGuardPeer(
                publicKey: key(i + 1), presharedKey: Bool.random(using: &random) ? PresharedKey(key(5000 + i)) : nil,
                endpoint: Bool.random(using: &random) ? Endpoint("[2001:db8::\(i + 1)]:\(51820 + i)") : nil,
                persistentKeepalive: Bool.random(using: &random) ? 25 : 0,
                latestHandshake: Bool.random(using: &random) ? 1_700_000_000 + Double(i) + 0.5 : nil,
                receivedBytes: UInt64.random(in: 0...1 << 40, using: &random), transmittedBytes: UInt64.random(in: 0...1 << 40, using: &random),
                allowedIPs: ips))
        }
        return device
    }

    func testTrafficAloneKeepsTheDigestAndIsHandedOverAsDecoded() throws {
        var random = Random(seed: 1)
        var device = device(&random, peers: 12)
        let before = fingerprint(replies(device))
        let digest = try XCTUnwrap(before.finalize())
        XCTAssertEqual(before.traffic, device.peers.map(\.traffic))
        XCTAssertEqual(try WireGuardCodec.mergeDevice(replies(device)), device)
        device.peers[3].receivedBytes += 1_000
        device.peers[3].latestHandshake = 1_800_000_000.25
        device.peers[11].transmittedBytes = 0
        device.peers[0].latestHandshake = nil
        let after = fingerprint(replies(device))
        XCTAssertEqual(after.finalize(), digest, "traffic moved the digest")
        XCTAssertEqual(after.traffic, try XCTUnwrap(try WireGuardCodec.mergeDevice(replies(device))).peers.map(\.traffic))
        XCTAssertEqual(after.traffic.count, 12, "a peer continued in another nest counted twice")
    }

    func testEveryOtherChangeMovesTheDigest() throws {
        var random = Random(seed: 2)
        let device = device(&random, peers: 8)
        let digest = try XCTUnwrap(fingerprint(replies(device)).finalize())
        var changes: [(String, (inout WireGuardDevice) -> Void)] = [
            ("listen port", { $0.listenPort = 51821 }),
            ("firewall mark", { $0.firewallMark = 1 }),
            ("private key", { $0.privateKey = PrivateKey(self.key(1234)) }),
            ("a peer's key", { $0.peers[2].publicKey = self.key(4321) }),
            ("a preshared key", { $0.peers[2].presharedKey = $0.peers[2].presharedKey == nil ? PresharedKey(self.key(77)) : nil }),
            ("an endpoint", { $0.peers[4].endpoint = Endpoint("[2001:db8::abcd]:1") }),
            ("a keepalive", { $0.peers[5].persistentKeepalive = $0.peers[5].persistentKeepalive == 0 ? 10 : 0 }),
            ("an allowed IP", { $0.peers[6].allowedIPs.append(IPPrefix("2001:db8:ffff::/48")!) }),
            ("a peer removed", { $0.peers.remove(at: 1) }),
            ("two peers swapped", { $0.peers.swapAt(0, 7) }),
        ]
        changes.append(("a peer added", { $0.peers.append(WireGuardPeer(publicKey: self.key(555))) }))
        for (what, change) in changes {
            var changed = device
            change(&changed)
            XCTAssertNotEqual(fingerprint(replies(changed)).finalize(), digest, what)
        }
    }

    /// Random corruption of a dump's bytes: whenever the digest stays the same, the dump decodes
    /// to the same device but for the traffic, and the traffic handed over is the decoded one.
    func testAnyCorruptionThatKeepsTheDigestDecodesTheSameButForTraffic() throws {
        var random = Random(seed: 3)
        var same = 0, trials = 0
        for round in 0..<150 {
            let device = device(&random, peers: Int.random(in: 1...10, using: &random))
            let messages = replies(device, perMessage: Int.random(in: 1...4, using: &random), ipsPerNest: Int.random(in: 1...5, using: &random))
            let digest = try XCTUnwrap(fingerprint(messages).finalize())
            for _ in 0..<40 {
                trials += 1
                var corrupt = messages
                for _ in 0..<Int.random(in: 1...3, using: &random) {
                    let m = Int.random(in: 0..<corrupt.count, using: &random)
                    guard !corrupt[m].payload.isEmpty else { continue }
                    let i = Int.random(in: 0..<corrupt[m].payload.count, using: &random)
                    corrupt[m].payload[i] = Bool.random(using: &random) ? UInt8.random(in: 0...255, using: &random) : corrupt[m].payload[i] ^ 1
                }
                let read = fingerprint(corrupt)
                guard let moved = read.finalize(), moved == digest else { continue }
                same += 1
                var expected = device
                XCTAssertTrue(expected.take(read.traffic), "round \(round): \(read.traffic.count) figures for \(device.peers.count) peers")
                XCTAssertEqual(try WireGuardCodec.mergeDevice(corrupt), expected, "round \(round): the same digest, another device")
            }
        }
        // Corruption lands in a traffic value often enough for the property to be exercised.
        XCTAssertGreaterThan(same, trials / 50, "\(same) of \(trials)")
    }

    func testWhatItCannotWalkHasNoDigest() throws {
        var random = Random(seed: 4)
        let messages = replies(device(&random, peers: 3))
        var cases: [(String, [Message])] = []
        var truncated = messages
        truncated[0].payload.removeLast(3)
        cases.append(("an attribute cut short", truncated))
        var short = messages
        short[0].payload = Array(short[0].payload.prefix(2))
        cases.append(("no generic header", short))
        for (what, corrupt) in cases { XCTAssertNil(fingerprint(corrupt).finalize(), what) }
        // A peer whose counter is not 8 bytes, or whose key is not 32, is not walked either
        // (the decoder rejects both).
        let badCounter = raw { w in
            w.put(UInt16(WGDEVICE_A_IFINDEX.rawValue), u32: 1)
            w.nest(UInt16(WGDEVICE_A_PEERS.rawValue)) { w in
                w.nest(0) { p in
                    p.put(UInt16(WGPEER_A_PUBLIC_KEY.rawValue), bytes: self.key(1).bytes)
                    p.put(UInt16(WGPEER_A_RX_BYTES.rawValue), u32: 5)
                }
            }
        }
        XCTAssertNil(fingerprint([badCounter]).finalize(), "a 4-byte counter")
        XCTAssertThrowsError(try WireGuardCodec.mergeDevice([badCounter]))
        let badKey = raw { w in
            w.put(UInt16(WGDEVICE_A_IFINDEX.rawValue), u32: 1)
            w.nest(UInt16(WGDEVICE_A_PEERS.rawValue)) { w in
                w.nest(0) { p in p.put(UInt16(WGPEER_A_PUBLIC_KEY.rawValue), bytes: [UInt8](repeating: 1, count: 31)) }
            }
        }
        XCTAssertNil(fingerprint([badKey]).finalize(), "a 31-byte key")
        XCTAssertThrowsError(try WireGuardCodec.mergeDevice([badKey]))
    }

    /// `mergeDevice` reads the first peers attribute of a message; a second one (the kernel never
    /// sends it) changes the digest but gives no figures.
    func testASecondPeersAttributeIsHashedNotWalked() throws {
        var random = Random(seed: 5)
        let device = device(&random, peers: 2)
        var messages = replies(device, perMessage: 2)
        let extra = raw { w in
            w.nest(UInt16(WGDEVICE_A_PEERS.rawValue)) { w in
                w.nest(0) { p in p.put(UInt16(WGPEER_A_PUBLIC_KEY.rawValue), bytes: self.key(42).bytes) }
            }
        }
        messages[0].payload += extra.payload.dropFirst(4)
        let read = fingerprint(messages)
        XCTAssertNotNil(read.finalize())
        XCTAssertEqual(read.traffic, device.peers.map(\.traffic))
        XCTAssertEqual(try WireGuardCodec.mergeDevice(messages), device)
    }
}
