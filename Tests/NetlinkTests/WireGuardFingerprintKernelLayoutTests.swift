import CNetlink
@testable import Netlink
import XCTest

/// `WireGuardFingerprint` against dumps laid out as the kernel lays them out
/// (`wg_get_device_dump` and `get_peer` in drivers/net/wireguard/netlink.c): device attributes
/// in the first message only, every nest `NLA_F_NESTED`, a peer's attributes in the kernel's
/// order, a message filled to a byte budget (the dump's skb) so that a peer whose allowed IPs
/// do not fit ends its nest and is continued in the next message by a nest of its public key
/// and the rest of its allowed IPs (the first part may hold an empty `ALLOWEDIPS` nest), a peer
/// that does not fit before its allowed IPs is cancelled whole and starts the next message, a
/// peer without allowed IPs has no `ALLOWEDIPS` nest, and, where the architecture wants 64-bit
/// alignment, `nla_put_u64_64bit`'s pad attribute (`WGPEER_A_UNSPEC`) before a counter.
///
/// The claim under test: over any run of polls where only the traffic figures move, each
/// poll's digest is the first one's and the cached device, taking each poll's figures in
/// place (`WireGuardDevice.take`), stays exactly what decoding that poll's dump gives; and a
/// change to anything else, with traffic moving at the same time, moves the digest.
final class WireGuardFingerprintKernelLayoutTests: XCTestCase {
    typealias Random = WireGuardFingerprintTests.Random

    /// One dump's messages, written as the kernel writes them.
    struct KernelDump {
        /// Bytes one message may take, its netlink header included (the skb's size).
        var budget: Int
        /// `nla_put_u64_64bit` pads when the attribute's data would not be 8-byte aligned.
        var pad64: Bool
        /// Where the message starts relative to 8-byte alignment (0 or 4).
        var base = 0

        private var payload: [UInt8] = []
        private var messages: [Message] = []

        init(budget: Int, pad64: Bool, base: Int = 0) {
            self.budget = budget
            self.pad64 = pad64
            self.base = base
        }

        private var tail: Int { 16 + payload.count }
        private func align(_ n: Int) -> Int { (n + 3) & ~3 }

        private mutating func attribute(_ type: UInt16, _ value: [UInt8]) -> Bool {
            guard tail + 4 + align(value.count) <= budget else { return false }
            withUnsafeBytes(of: UInt16(4 + value.count).littleEndian) { payload += $0 }
            withUnsafeBytes(of: type.littleEndian) { payload += $0 }
            payload += value + [UInt8](repeating: 0, count: align(value.count) - value.count)
            return true
        }

        private mutating func u64(_ type: UInt16, _ value: UInt64) -> Bool {
            if pad64, (base + tail) % 8 == 0 {
                guard tail + 4 + 12 <= budget else { return false }
                _ = attribute(UInt16(WGPEER_A_UNSPEC.rawValue), [])
            }
            return withUnsafeBytes(of: value.littleEndian) { attribute(type, Array($0)) }
        }

        private mutating func nestStart(_ type: UInt16) -> Int? {
            guard tail + 4 <= budget else { return nil }
            let start = payload.count
            payload += [0, 0, 0, 0]
            withUnsafeBytes(of: (type | UInt16(NLA_F_NESTED)).littleEndian) { payload.replaceSubrange((start + 2)..<(start + 4), with: $0) }
            return start
        }

        private mutating func nestEnd(_ start: Int) {
            withUnsafeBytes(of: UInt16(payload.count - start).littleEndian) { payload.replaceSubrange(start..<(start + 2), with: $0) }
        }

        private mutating func cancel(_ start: Int) { payload.removeSubrange(start...) }

        private static func u16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        private static func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

        private mutating func allowedIP(_ prefix: IPPrefix) -> Bool {
            guard let nest = nestStart(0) else { return false }
            guard attribute(UInt16(WGALLOWEDIP_A_CIDR_MASK.rawValue), [prefix.length]),
                  attribute(UInt16(WGALLOWEDIP_A_FAMILY.rawValue), Self.u16(prefix.family == .inet ? UInt16(AF_INET) : UInt16(AF_INET6))),
                  attribute(UInt16(WGALLOWEDIP_A_IPADDR.rawValue), prefix.address.bytes)
            else { cancel(nest); return false }
            nestEnd(nest)
            return true
        }

        /// `get_peer`: true when the peer is done; else `next` says where its allowed IPs go on
        /// (nil: the peer was cancelled whole, or was a continuation that did not fit).
        private mutating func peer(_ peer: WireGuardPeer, from next: inout Int?) -> Bool {
            guard let nest = nestStart(0) else { return false }
            guard attribute(UInt16(WGPEER_A_PUBLIC_KEY.rawValue), peer.publicKey.bytes) else { cancel(nest); return false }
            var first = next ?? 0
            if next == nil {
                var time = [UInt8](repeating: 0, count: 16)
                if let handshake = peer.latestHandshake {
                    let seconds = handshake.rounded(.down)
                    withUnsafeBytes(of: Int64(seconds)) { time.replaceSubrange(0..<8, with: $0) }
                    withUnsafeBytes(of: Int64(((handshake - seconds) * 1e9).rounded())) { time.replaceSubrange(8..<16, with: $0) }
                }
                guard attribute(UInt16(WGPEER_A_PRESHARED_KEY.rawValue), peer.presharedKey?.key.bytes ?? [UInt8](repeating: 0, count: 32)),
                      attribute(UInt16(WGPEER_A_LAST_HANDSHAKE_TIME.rawValue), time),
                      attribute(UInt16(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL.rawValue), Self.u16(peer.persistentKeepalive)),
                      u64(UInt16(WGPEER_A_TX_BYTES.rawValue), peer.transmittedBytes),
                      u64(UInt16(WGPEER_A_RX_BYTES.rawValue), peer.receivedBytes),
                      attribute(UInt16(WGPEER_A_PROTOCOL_VERSION.rawValue), Self.u32(1)),
                      peer.endpoint.map({ attribute(UInt16(WGPEER_A_ENDPOINT.rawValue), $0.sockaddr) }) ?? true
                else { cancel(nest); return false }
                first = 0
            }
            if first < peer.allowedIPs.count {
                guard let ips = nestStart(UInt16(WGPEER_A_ALLOWEDIPS.rawValue)) else { cancel(nest); return false }
                for i in first..<peer.allowedIPs.count where !allowedIP(peer.allowedIPs[i]) {
                    nestEnd(ips)
                    nestEnd(nest)
                    next = i
                    return false
                }
                nestEnd(ips)
            }
            nestEnd(nest)
            next = nil
            return true
        }

        /// The whole dump of `device`, one message per budget.
        mutating func dump(_ device: WireGuardDevice, family: UInt16 = 30) -> [Message] {
            messages = []
            var cursor = 0
            var next: Int?
            var first = true
            while true {
                payload = [UInt8(WG_CMD_GET_DEVICE.rawValue), 1, 0, 0]
                if first {
                    precondition(attribute(UInt16(WGDEVICE_A_LISTEN_PORT.rawValue), Self.u16(device.listenPort))
                        && attribute(UInt16(WGDEVICE_A_FWMARK.rawValue), Self.u32(device.firewallMark))
                        && attribute(UInt16(WGDEVICE_A_IFINDEX.rawValue), Self.u32(UInt32(bitPattern: device.index)))
                        && attribute(UInt16(WGDEVICE_A_IFNAME.rawValue), Array(device.name.utf8) + [0]))
                    if let key = device.privateKey {
                        precondition(attribute(UInt16(WGDEVICE_A_PRIVATE_KEY.rawValue), key.key.bytes)
                            && attribute(UInt16(WGDEVICE_A_PUBLIC_KEY.rawValue), device.publicKey!.bytes))
                    }
                    first = false
                }
                var done = true
                let peers = nestStart(UInt16(WGDEVICE_A_PEERS.rawValue))!
                if cursor == device.peers.count {
                    cancel(peers)
                } else {
                    let before = cursor
                    while cursor < device.peers.count {
                        if !peer(device.peers[cursor], from: &next) { done = false; break }
                        cursor += 1
                    }
                    precondition(cursor > before || next != nil, "a budget too small for one peer")
                    nestEnd(peers)
                }
                messages.append(Message(type: family, flags: UInt16(NLM_F_MULTI), sequence: 1, portID: 0, payload: payload))
                if done { return messages }
            }
        }
    }

    private func key(_ n: Int) -> WireGuardKey {
        WireGuardKey(bytes: (0..<32).map { UInt8(truncatingIfNeeded: n >> ($0 % 4 * 8)) &+ UInt8($0) &* 7 })!
    }

    private func device(_ random: inout Random, peers: Int) -> WireGuardDevice {
        var device = WireGuardDevice(name: "wg0", index: 7, privateKey: PrivateKey(key(999)), publicKey: key(998), listenPort: 51820, firewallMark: 0)
        var next = 0
        for i in 0..<peers {
            device.peers.append(WireGuardPeer(
                publicKey: key(i + 1), presharedKey: Bool.random(using: &random) ? PresharedKey(key(5000 + i)) : nil,
                endpoint: endpoint(&random, i),
                persistentKeepalive: Bool.random(using: &random) ? 25 : 0,
                allowedIPs: (0..<[0, 1, 1, 2, 5, 12, 40].randomElement(using: &random)!).map { _ in
                    next += 1
                    return Bool.random(using: &random) ? IPPrefix("2001:db8:\(String(next, radix: 16))::/64")! : IPPrefix("10.\(next >> 8 & 255).\(next & 255).0/24")!
                }))
            device.peers[i].traffic = traffic(&random)
        }
        return device
    }

    private func endpoint(_ random: inout Random, _ i: Int) -> Endpoint? {
        switch Int.random(in: 0..<3, using: &random) {
        case 0: nil
        case 1: Endpoint("[2001:db8:ffff::\(String(i + 1, radix: 16))]:\(40000 + i)")
        default: Endpoint("192.0.2.\(i % 250 + 1):\(40000 + i)")
        }
    }

    private func traffic(_ random: inout Random) -> WireGuardTraffic {
        WireGuardTraffic(latestHandshake: Bool.random(using: &random) ? 1_700_000_000 + Double(UInt32.random(in: 0...1_000_000, using: &random)) + 0.25 : nil,
                         receivedBytes: UInt64.random(in: 0...UInt64.max, using: &random), transmittedBytes: UInt64.random(in: 0...1 << 50, using: &random))
    }

    private func fingerprint(_ messages: [Message]) -> WireGuardFingerprint {
        var fingerprint = WireGuardFingerprint()
        for message in messages {
            message.payload.withUnsafeBytes { fingerprint.feed(type: message.type, flags: message.flags, payload: $0) }
        }
        return fingerprint
    }

    /// The emulation itself: what it writes decodes to the device, continued peers and all.
    func testTheEmulatedDumpDecodesToTheDevice() throws {
        var random = Random(seed: 11)
        var continued = 0, emptyFirstParts = 0, pads = 0
        for _ in 0..<60 {
            let device = device(&random, peers: Int.random(in: 0...30, using: &random))
            var kernel = KernelDump(budget: Int.random(in: 400...3000, using: &random), pad64: Bool.random(using: &random), base: Bool.random(using: &random) ? 4 : 0)
            let messages = kernel.dump(device)
            XCTAssertEqual(try WireGuardCodec.mergeDevice(messages), device)
            let nests = try messages.flatMap { try $0.attributes(after: genlmsghdr.self).nested(UInt16(WGDEVICE_A_PEERS.rawValue))?.all ?? [] }
            continued += nests.count - device.peers.count
            emptyFirstParts += try nests.filter { nest in
                let peer = try Attributes(parsing: nest.payload)
                let ips = try peer.nested(UInt16(WGPEER_A_ALLOWEDIPS.rawValue))
                return peer.first(UInt16(WGPEER_A_RX_BYTES.rawValue)) != nil && ips?.all.isEmpty == true
            }.count
            pads += try nests.reduce(0) { $0 + (try Attributes(parsing: $1.payload)).every(UInt16(WGPEER_A_UNSPEC.rawValue)).count }
        }
        XCTAssertGreaterThan(continued, 20, "peers continued in another message")
        XCTAssertGreaterThan(emptyFirstParts, 0, "a peer's first part with an empty ALLOWEDIPS nest")
        XCTAssertGreaterThan(pads, 0, "a counter after a pad attribute")
    }

    /// Polls where only traffic moves: the digest holds, and the cached device, taking the
    /// figures of poll after poll in place, is what each poll's dump decodes to.
    func testTakingPollAfterPollOfTrafficKeepsTheCacheEqualToADecode() throws {
        var random = Random(seed: 12)
        for round in 0..<40 {
            var device = device(&random, peers: Int.random(in: 1...25, using: &random))
            var kernel = KernelDump(budget: Int.random(in: 400...3000, using: &random), pad64: Bool.random(using: &random), base: Bool.random(using: &random) ? 4 : 0)
            let first = kernel.dump(device)
            let digest = try XCTUnwrap(fingerprint(first).finalize())
            var cached = try XCTUnwrap(try WireGuardCodec.mergeDevice(first))
            for poll in 0..<15 {
                for i in device.peers.indices where Int.random(in: 0..<3, using: &random) == 0 { device.peers[i].traffic = traffic(&random) }
                let messages = kernel.dump(device)
                let read = fingerprint(messages)
                XCTAssertEqual(read.finalize(), digest, "round \(round), poll \(poll): traffic moved the digest")
                XCTAssertTrue(cached.take(read.traffic), "round \(round), poll \(poll): \(read.traffic.count) figures, \(cached.peers.count) peers")
                XCTAssertEqual(cached, try WireGuardCodec.mergeDevice(messages), "round \(round), poll \(poll)")
            }
        }
    }

    /// What `wg set` and `wg syncconf` do to a device, each with traffic moving at once: every
    /// one moves the digest, whatever the layout.
    func testEveryOperatorChangeWithTrafficMovesTheDigest() throws {
        var random = Random(seed: 13)
        var checked = 0
        for round in 0..<40 {
            let device = device(&random, peers: Int.random(in: 2...20, using: &random))
            var kernel = KernelDump(budget: Int.random(in: 400...3000, using: &random), pad64: Bool.random(using: &random), base: Bool.random(using: &random) ? 4 : 0)
            let digest = try XCTUnwrap(fingerprint(kernel.dump(device)).finalize())
            let p = Int.random(in: 0..<device.peers.count, using: &random)
            var changes: [(String, (inout WireGuardDevice) -> Void)] = [
                ("peer remove", { $0.peers.remove(at: p) }),
                ("the last peer removed", { $0.peers.removeLast() }),
                ("a peer removed and added again (it goes last)", { let peer = $0.peers.remove(at: p); $0.peers.append(WireGuardPeer(publicKey: peer.publicKey, allowedIPs: peer.allowedIPs)) }),
                ("allowed-ips replaced", { $0.peers[p].allowedIPs = [IPPrefix("2001:db8:9::/64")!] }),
                ("allowed-ips emptied", { $0.peers[p].allowedIPs = [] }),
                ("an allowed IP added", { $0.peers[p].allowedIPs.append(IPPrefix("2001:db8:9::/64")!) }),
                ("allowed IPs reordered", { $0.peers[p].allowedIPs.reverse(); $0.peers[p].allowedIPs.append(IPPrefix("192.0.2.0/24")!) }),
                ("an IPv4 endpoint roamed to IPv6", { $0.peers[p].endpoint = Endpoint("[2001:db8:ffff::abcd]:1") }),
                ("an endpoint roamed to IPv4", { $0.peers[p].endpoint = Endpoint("198.51.100.7:1") }),
                ("a keepalive", { $0.peers[p].persistentKeepalive = $0.peers[p].persistentKeepalive == 0 ? 1 : 0 }),
                ("a preshared key", { $0.peers[p].presharedKey = PresharedKey(self.key(4242)) }),
                ("a peer added", { $0.peers.append(WireGuardPeer(publicKey: self.key(777), allowedIPs: [IPPrefix("2001:db8:7::/64")!])) }),
                ("the private key", { $0.privateKey = PrivateKey(self.key(31)); $0.publicKey = self.key(32) }),
                ("the listen port", { $0.listenPort = 51821 }),
                ("the device recreated (another index)", { $0.index = 8 }),
            ]
            if device.peers[p].allowedIPs.count > 1 { changes.append(("an allowed IP removed", { $0.peers[p].allowedIPs.removeLast() })) }
            for (what, change) in changes {
                var changed = device
                change(&changed)
                for i in changed.peers.indices where Bool.random(using: &random) { changed.peers[i].traffic = traffic(&random) }
                // A change that leaves everything but the traffic as it was (re-adding the last
                // peer as it was) is no change.
                var plain = changed, before = device
                for i in plain.peers.indices { plain.peers[i].traffic = WireGuardTraffic() }
                for i in before.peers.indices { before.peers[i].traffic = WireGuardTraffic() }
                guard plain != before else { continue }
                XCTAssertNotEqual(fingerprint(kernel.dump(changed)).finalize(), digest, "round \(round): \(what)")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 500)
    }

    /// Another skb size (the kernel falls back to a smaller one when a large allocation fails)
    /// may lay the same device out otherwise: a digest that still holds must mean the same device.
    func testAnotherMessageSizeEitherMovesTheDigestOrDecodesTheSame() throws {
        var random = Random(seed: 14)
        for round in 0..<60 {
            var device = device(&random, peers: Int.random(in: 1...25, using: &random))
            var kernel = KernelDump(budget: Int.random(in: 400...3000, using: &random), pad64: false)
            let first = kernel.dump(device)
            let digest = try XCTUnwrap(fingerprint(first).finalize())
            var cached = try XCTUnwrap(try WireGuardCodec.mergeDevice(first))
            for i in device.peers.indices { device.peers[i].traffic = traffic(&random) }
            kernel.budget = Int.random(in: 400...3000, using: &random)
            let messages = kernel.dump(device)
            let read = fingerprint(messages)
            guard read.finalize() == digest else { continue }
            XCTAssertTrue(cached.take(read.traffic))
            XCTAssertEqual(cached, try WireGuardCodec.mergeDevice(messages), "round \(round)")
        }
    }
}
