import Foundation
import Netlink
import TestSupport
import XCTest

/// WireGuard against a real kernel module (VM tier: the host kernel has no WireGuard).
/// `wg show <dev> dump` (wireguard-tools) is the independent reader.
final class WireGuardVMTests: XCTestCase {
    private struct Dump {
        var privateKey: String
        var listenPort: UInt16
        var peers: [String: [String]]   // public key → the other seven fields
    }

    private func wgDump(_ ns: TestNamespace) throws -> Dump {
        let lines = try shell("ip", "netns", "exec", ns.name, "wg", "show", "wg0", "dump").split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        let head = try XCTUnwrap(lines.first)
        var peers: [String: [String]] = [:]
        for line in lines.dropFirst() { peers[line[0]] = Array(line.dropFirst()) }
        return Dump(privateKey: head[0], listenPort: UInt16(head[2]) ?? 0, peers: peers)
    }

    /// A namespace with an up `wg0` created through rtnetlink, and a WireGuard socket in it.
    private func makeDevice() throws -> (TestNamespace, WireGuardNetlink) {
        let ns = try TestNamespace(for: self)
        let rtnetlink = try ns.rtnetlink()
        try rtnetlink.socket.perform(Link.createRequest(name: "wg0", kind: "wireguard"))
        let link = try XCTUnwrap(try rtnetlink.link(named: "wg0"))
        XCTAssertEqual(link.kind, "wireguard")
        try rtnetlink.socket.perform(Link.setUpRequest(index: link.index))
        return (ns, try ns.namespace.perform { try WireGuardNetlink() })
    }

    private func key(_ n: Int) -> WireGuardKey { PrivateKey.generate().publicKey }

    private func allowedIPs(_ peer: Int, count: Int) -> [IPPrefix] {
        (0..<count).map { IPPrefix("2001:db8:\(String(peer, radix: 16)):\(String($0, radix: 16))::1/128")! }
    }

    private func ipsField(_ ips: [IPPrefix]) -> Set<String> { Set(ips.map(\.description)) }

    func testTwoThousandPeersMatchWgShowFieldByField() throws {
        let (ns, wireguard) = try makeDevice()
        let privateKey = PrivateKey.generate()
        let psk = PresharedKey(PrivateKey.generate().key)
        let peers = (0..<2000).map { i in
            WireGuardPeerChange(
                publicKey: key(i),
                presharedKey: i % 3 == 0 ? psk : nil,
                endpoint: i % 2 == 0 ? Endpoint("[2001:db8:ff::\(String(i, radix: 16))]:\(40000 + i)") : Endpoint("192.0.2.\(i % 250 + 1):\(50000 + i)"),
                persistentKeepalive: i % 4 == 0 ? 25 : 0,
                allowedIPs: allowedIPs(i, count: 3))
        }
        try wireguard.apply(device: "wg0", WireGuardDeviceChange(privateKey: privateKey, listenPort: 51820, replacePeers: true, peers: peers))

        let dump = try wgDump(ns)
        XCTAssertEqual(dump.privateKey, privateKey.key.base64)
        XCTAssertEqual(dump.listenPort, 51820)
        XCTAssertEqual(dump.peers.count, 2000)
        for peer in peers {
            guard let fields = dump.peers[peer.publicKey.base64] else { XCTFail("peer missing in wg show"); continue }
            XCTAssertEqual(fields[0], peer.presharedKey.map { $0.key.base64 } ?? "(none)")
            XCTAssertEqual(fields[1], peer.endpoint!.description)
            XCTAssertEqual(Set(fields[2].split(separator: ",").map(String.init)), ipsField(peer.allowedIPs))
            XCTAssertEqual(fields[6], peer.persistentKeepalive == 0 ? "off" : "\(peer.persistentKeepalive!)")
        }

        let device = try XCTUnwrap(try wireguard.device(named: "wg0"))
        XCTAssertEqual(device.privateKey, privateKey)
        XCTAssertEqual(device.publicKey, privateKey.publicKey)
        XCTAssertEqual(device.listenPort, 51820)
        XCTAssertEqual(device.peers.count, 2000)
        let byKey = Dictionary(uniqueKeysWithValues: device.peers.map { ($0.publicKey, $0) })
        for peer in peers {
            guard let seen = byKey[peer.publicKey] else { XCTFail("peer missing in getDevice"); continue }
            XCTAssertEqual(seen.presharedKey, peer.presharedKey)
            XCTAssertEqual(seen.endpoint, peer.endpoint)
            XCTAssertEqual(seen.persistentKeepalive, peer.persistentKeepalive)
            XCTAssertEqual(Set(seen.allowedIPs), Set(peer.allowedIPs))
            XCTAssertNil(seen.latestHandshake)
        }
    }

    func testTwentyThousandAllowedIPsOnOnePeerRoundTripExactly() throws {
        let (ns, wireguard) = try makeDevice()
        let peerKey = key(0)
        let ips = (0..<20_000).map { IPPrefix("2001:db8:\(String($0 >> 8, radix: 16)):\(String($0 & 0xff, radix: 16))::/64")! }
        try wireguard.apply(device: "wg0", WireGuardDeviceChange(peers: [WireGuardPeerChange(publicKey: peerKey, replaceAllowedIPs: true, allowedIPs: ips)]))
        let shown = try XCTUnwrap(try wgDump(ns).peers[peerKey.base64])[2].split(separator: ",").map(String.init)
        XCTAssertEqual(shown.count, 20_000)
        XCTAssertTrue(Set(shown) == ipsField(ips), "wg show differs from what was set")
        let device = try XCTUnwrap(try wireguard.device(named: "wg0"))
        XCTAssertEqual(device.peers.count, 1, "a peer split across dump messages must merge into one")
        XCTAssertEqual(device.peers[0].allowedIPs.count, 20_000)
        XCTAssertTrue(Set(device.peers[0].allowedIPs) == Set(ips), "getDevice differs from what was set")

        // Replacing with a short list from a fresh change wipes the 20 000 (first fragment replaces).
        try wireguard.apply(device: "wg0", WireGuardDeviceChange(peers: [WireGuardPeerChange(publicKey: peerKey, replaceAllowedIPs: true, allowedIPs: Array(ips.prefix(2)))]))
        XCTAssertEqual(try wireguard.device(named: "wg0")?.peers.first?.allowedIPs.count, 2)
    }

    func testChangesMadeWithWgSetAreSeen() throws {
        let (ns, wireguard) = try makeDevice()
        let a = key(1), b = key(2)
        try wireguard.apply(device: "wg0", WireGuardDeviceChange(listenPort: 51820, peers: [
            WireGuardPeerChange(publicKey: a, endpoint: Endpoint("[2001:db8:ff::1]:51820"), allowedIPs: allowedIPs(1, count: 1)),
            WireGuardPeerChange(publicKey: b, allowedIPs: allowedIPs(2, count: 1)),
        ]))
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", a.base64,
                "endpoint", "192.0.2.7:4444", "persistent-keepalive", "17", "allowed-ips", "2001:db8:aa::/64,10.1.0.0/16")
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", b.base64, "remove")
        let device = try XCTUnwrap(try wireguard.device(named: "wg0"))
        XCTAssertEqual(device.peers.map(\.publicKey), [a])
        XCTAssertEqual(device.peers[0].endpoint, Endpoint("192.0.2.7:4444"))
        XCTAssertEqual(device.peers[0].persistentKeepalive, 17)
        XCTAssertEqual(Set(device.peers[0].allowedIPs), [IPPrefix("2001:db8:aa::/64")!, IPPrefix("10.1.0.0/16")!])
    }

    func testRemoveUpdateOnlyReplacePeersAndPresharedKeyRemoval() throws {
        let (_, wireguard) = try makeDevice()
        let psk = PresharedKey(PrivateKey.generate().key)
        let keys = (0..<4).map(key)
        try wireguard.apply(device: "wg0", WireGuardDeviceChange(peers: keys.enumerated().map { i, k in
            WireGuardPeerChange(publicKey: k, presharedKey: psk, allowedIPs: allowedIPs(i, count: 1))
        }))
        // remove-me, update-only on a missing peer (no effect), a zero preshared key removes it.
        try wireguard.apply(device: "wg0", WireGuardDeviceChange(peers: [
            WireGuardPeerChange(publicKey: keys[0], remove: true),
            WireGuardPeerChange(publicKey: key(9), updateOnly: true, allowedIPs: allowedIPs(9, count: 1)),
            WireGuardPeerChange(publicKey: keys[1], presharedKey: PresharedKey(WireGuardKey(bytes: [UInt8](repeating: 0, count: 32))!)),
        ]))
        var device = try XCTUnwrap(try wireguard.device(named: "wg0"))
        XCTAssertEqual(Set(device.peers.map(\.publicKey)), Set(keys[1...]))
        XCTAssertNil(device.peers.first { $0.publicKey == keys[1] }?.presharedKey)
        XCTAssertEqual(device.peers.first { $0.publicKey == keys[2] }?.presharedKey, psk)

        // replace-peers: the kernel removes every peer first, so even a listed peer comes back
        // bare (wg_set_device() → wg_peer_remove_all()). Never a tool for incremental changes.
        try wireguard.apply(device: "wg0", WireGuardDeviceChange(replacePeers: true, peers: [WireGuardPeerChange(publicKey: keys[3])]))
        device = try XCTUnwrap(try wireguard.device(named: "wg0"))
        XCTAssertEqual(device.peers.map(\.publicKey), [keys[3]])
        XCTAssertEqual(device.peers[0].allowedIPs, [], "replace-peers recreated the peer without its allowed IPs")
        XCTAssertNil(device.peers[0].presharedKey)
    }

    func testMissingDeviceIsNilAndWrongKindIsAnError() throws {
        let (ns, wireguard) = try makeDevice()
        XCTAssertNil(try wireguard.device(named: "wg9"))
        try ns.addVeth()
        XCTAssertThrowsError(try wireguard.device(named: "veth0"))
    }

    /// The poll's read: an unchanged device (many peers, several dump messages) is not decoded
    /// again; a change made with wg(8), even one that keeps every count, is, and equals the
    /// plain read; a missing device is nil with no digest.
    func testAnUnchangedDeviceIsNotDecodedAgainAndAChangeIs() throws {
        let (ns, wireguard) = try makeDevice()
        let keys = (0..<300).map(key)
        try wireguard.apply(device: "wg0", WireGuardDeviceChange(listenPort: 51820, peers: keys.enumerated().map { i, k in
            WireGuardPeerChange(publicKey: k, allowedIPs: allowedIPs(i, count: 2))
        }))
        guard case .read(let device, let read) = try wireguard.device(named: "wg0", unless: nil) else { return XCTFail("a first read not decoded") }
        XCTAssertEqual(device, try wireguard.device(named: "wg0"))
        let digest = try XCTUnwrap(read)
        guard case .unchanged(let traffic) = try wireguard.device(named: "wg0", unless: digest) else { return XCTFail("the same device decoded again") }
        XCTAssertEqual(traffic, device?.peers.map(\.traffic))
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", keys[150].base64, "persistent-keepalive", "25")
        guard case .read(let changed, let changedDigest) = try wireguard.device(named: "wg0", unless: digest) else { return XCTFail("a change not decoded") }
        XCTAssertNotEqual(changedDigest, digest)
        XCTAssertEqual(changed, try wireguard.device(named: "wg0"))
        XCTAssertEqual(changed?.peers.first { $0.publicKey == keys[150] }?.persistentKeepalive, 25)
        guard case .read(let missing, let missingDigest) = try wireguard.device(named: "wg9", unless: digest) else { return XCTFail("a missing device unchanged") }
        XCTAssertNil(missing)
        XCTAssertNil(missingDigest)
    }
    /// `wgb`, born in `ns` (so its UDP socket stays there) and moved to a namespace of its own,
    /// the one peer of `wg0`'s key `a` over loopback: `wg0` holds 2001:db8:a::1 and `peers`
    /// (one of them must be `b`'s, endpoint [::1]:51821, allowed IP 2001:db8:b::1), so that a
    /// ping from 2001:db8:a::1 to 2001:db8:b::1 is real traffic through `wg0`.
    private func tunnel(_ ns: TestNamespace, _ wireguard: WireGuardNetlink, a: PrivateKey, b: PrivateKey, peers: [WireGuardPeerChange]) throws {
        let rtnetlink = try ns.rtnetlink()
        try rtnetlink.socket.perform(Link.createRequest(name: "wgb", kind: "wireguard"))
        try rtnetlink.socket.perform(Link.setUpRequest(index: try XCTUnwrap(try rtnetlink.link(named: "wgb")).index))
        try wireguard.apply(device: "wg0", WireGuardDeviceChange(privateKey: a, listenPort: 51820, peers: peers))
        try wireguard.apply(device: "wgb", WireGuardDeviceChange(privateKey: b, listenPort: 51821, peers: [
            WireGuardPeerChange(publicKey: a.publicKey, endpoint: Endpoint("[::1]:51820"), allowedIPs: [IPPrefix("2001:db8:a::1/128")!]),
        ]))
        let other = try TestNamespace(for: self)
        try ns.ip("link", "set", "wgb", "netns", other.name)
        try other.ip("link", "set", "wgb", "up")
        try ns.ip("-6", "addr", "add", "2001:db8:a::1/128", "dev", "wg0", "nodad")
        try other.ip("-6", "addr", "add", "2001:db8:b::1/128", "dev", "wgb", "nodad")
        try ns.ip("-6", "route", "add", "2001:db8:b::1/128", "dev", "wg0")
        try other.ip("-6", "route", "add", "2001:db8:a::1/128", "dev", "wgb")
    }

    /// Real traffic (a second device born in the same namespace, so its UDP socket is there,
    /// then moved to a namespace of its own; the tunnel runs over loopback, a ping through):
    /// the poll finds the device unchanged but for the handshake and counters, hands those over
    /// as a full decode reads them, and still decodes a change made while traffic flows.
    func testTrafficAloneIsHandedOverWithoutADecode() throws {
        let (ns, wireguard) = try makeDevice()
        let a = PrivateKey.generate(), b = PrivateKey.generate()
        try tunnel(ns, wireguard, a: a, b: b, peers: [
            WireGuardPeerChange(publicKey: b.publicKey, endpoint: Endpoint("[::1]:51821"), allowedIPs: [IPPrefix("2001:db8:b::1/128")!]),
        ] + (0..<50).map { WireGuardPeerChange(publicKey: key($0), allowedIPs: allowedIPs($0 + 0x100, count: 3)) })

        guard case .read(let quiet, let read) = try wireguard.device(named: "wg0", unless: nil) else { return XCTFail("a first read not decoded") }
        let digest = try XCTUnwrap(read)
        XCTAssertNil(quiet?.peers[0].latestHandshake)
        try shell("ip", "netns", "exec", ns.name, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "5", "-I", "2001:db8:a::1", "2001:db8:b::1")
        let busy = try XCTUnwrap(try wireguard.device(named: "wg0"))
        XCTAssertNotNil(busy.peers[0].latestHandshake, "no handshake after the ping")
        XCTAssertGreaterThan(busy.peers[0].receivedBytes, 0)
        guard case .unchanged(let traffic) = try wireguard.device(named: "wg0", unless: digest) else { return XCTFail("traffic alone decoded") }
        // No more traffic: the figures read now are the ones the full read saw.
        XCTAssertEqual(traffic, busy.peers.map(\.traffic))
        var taken = try XCTUnwrap(quiet)
        XCTAssertTrue(taken.take(traffic))
        XCTAssertEqual(taken, busy)

        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", b.publicKey.base64, "persistent-keepalive", "1")
        try shell("ip", "netns", "exec", ns.name, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "5", "-I", "2001:db8:a::1", "2001:db8:b::1")
        guard case .read(let changed, _) = try wireguard.device(named: "wg0", unless: digest) else { return XCTFail("a change beside traffic not decoded") }
        XCTAssertEqual(changed?.peers[0].persistentKeepalive, 1)
    }

    /// The same with the busy peer's allowed IPs spanning several messages (1 500 of them,
    /// ~60 KB: a dump message is at most 32 KB, so the kernel continues the peer in the next
    /// message by a nest of its public key), between a peer without allowed IPs and peers with
    /// IPv4 endpoints: traffic alone is still handed over as a full decode reads it, and one
    /// allowed IP replaced deep in the list, or the peer without allowed IPs given one, is
    /// decoded.
    func testTrafficOnAPeerContinuedAcrossMessagesIsHandedOverWithoutADecode() throws {
        let (ns, wireguard) = try makeDevice()
        let a = PrivateKey.generate(), b = PrivateKey.generate()
        let many = [IPPrefix("2001:db8:b::1/128")!] + (0..<1_499).map { IPPrefix("2001:db8:c:\(String($0, radix: 16))::/64")! }
        let empty = key(0)
        try tunnel(ns, wireguard, a: a, b: b, peers:
            [WireGuardPeerChange(publicKey: empty)]
            + (1..<20).map { WireGuardPeerChange(publicKey: key($0), endpoint: Endpoint("192.0.2.\($0):\(40000 + $0)"), allowedIPs: allowedIPs($0 + 0x100, count: 2)) }
            + [WireGuardPeerChange(publicKey: b.publicKey, endpoint: Endpoint("[::1]:51821"), allowedIPs: many)]
            + (20..<40).map { WireGuardPeerChange(publicKey: key($0), endpoint: Endpoint("198.51.100.\($0):\(40000 + $0)"), allowedIPs: allowedIPs($0 + 0x100, count: 2)) })

        guard case .read(let quiet, let read) = try wireguard.device(named: "wg0", unless: nil) else { return XCTFail("a first read not decoded") }
        let digest = try XCTUnwrap(read)
        XCTAssertEqual(quiet?.peers.count, 41)
        XCTAssertEqual(quiet?.peers[20].allowedIPs.count, many.count, "the continued peer merged")
        XCTAssertEqual(quiet?.peers[0].allowedIPs, [])
        try shell("ip", "netns", "exec", ns.name, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "5", "-I", "2001:db8:a::1", "2001:db8:b::1")
        let busy = try XCTUnwrap(try wireguard.device(named: "wg0"))
        XCTAssertNotNil(busy.peers[20].latestHandshake, "no handshake after the ping")
        guard case .unchanged(let traffic) = try wireguard.device(named: "wg0", unless: digest) else { return XCTFail("traffic alone decoded") }
        XCTAssertEqual(traffic.count, 41, "a continued peer counted twice")
        var taken = try XCTUnwrap(quiet)
        XCTAssertTrue(taken.take(traffic))
        XCTAssertEqual(taken, busy)

        // One allowed IP replaced deep in the continued list (as many as before, one differs).
        let ips = ["2001:db8:b::1/128"] + many.dropFirst().map(\.description).enumerated().map { $0.offset == 1_200 ? "2001:db8:d::/64" : $0.element }
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", b.publicKey.base64, "allowed-ips", ips.joined(separator: ","))
        guard case .read(let replaced, let replacedDigest) = try wireguard.device(named: "wg0", unless: digest) else { return XCTFail("an allowed IP replaced deep in a continued peer not decoded") }
        XCTAssertEqual(replaced, try wireguard.device(named: "wg0"))
        XCTAssertTrue(replaced?.peers[20].allowedIPs.contains(IPPrefix("2001:db8:d::/64")!) == true)
        try shell("ip", "netns", "exec", ns.name, "wg", "set", "wg0", "peer", empty.base64, "allowed-ips", "2001:db8:e::/64")
        guard case .read(let given, _) = try wireguard.device(named: "wg0", unless: replacedDigest) else { return XCTFail("an allowed IP given to a peer without any not decoded") }
        XCTAssertEqual(given?.peers[0].allowedIPs, [IPPrefix("2001:db8:e::/64")!])
    }
}
