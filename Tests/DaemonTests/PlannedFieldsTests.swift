@testable import Daemon
import Netlink
import Reconciler
import XCTest

/// The WireGuard poll compares what `plan` reads of two reads in place (`KernelCache.samePlanned`),
/// field by field, instead of copying every peer to blank the traffic fields first.
final class PlannedFieldsTests: XCTestCase {
    let key = PrivateKey.generate().publicKey

    func device(_ peer: WireGuardPeer) -> [String: WireGuardDevice] {
        ["wg0": WireGuardDevice(name: "wg0", index: 5, listenPort: 51820, peers: [peer])]
    }

    func testTrafficIsNoChangeAndEverythingElseIs() {
        let peer = WireGuardPeer(publicKey: key, endpoint: Endpoint("[2001:db8::1]:51820"), allowedIPs: [IPPrefix("2001:db8:1::100/128")!])
        var busy = peer
        busy.latestHandshake = 1_700_000_000
        busy.receivedBytes = 1 << 20
        busy.transmittedBytes = 1 << 21
        XCTAssertTrue(KernelCache.samePlanned(device(peer), device(busy)))
        XCTAssertTrue(KernelCache.samePlanned(nil, nil))
        XCTAssertFalse(KernelCache.samePlanned(device(peer), nil))
        XCTAssertFalse(KernelCache.samePlanned(device(peer), [:]))
        var changes: [WireGuardPeer] = []
        var roamed = peer; roamed.endpoint = Endpoint("[2001:db8::2]:51820"); changes.append(roamed)
        var keepalive = peer; keepalive.persistentKeepalive = 25; changes.append(keepalive)
        var psk = peer; psk.presharedKey = PresharedKey(WireGuardKey(bytes: [UInt8](repeating: 7, count: 32))!); changes.append(psk)
        var allowed = peer; allowed.allowedIPs.append(IPPrefix("2001:db8:5::/64")!); changes.append(allowed)
        var other = peer; other.publicKey = PrivateKey.generate().publicKey; changes.append(other)
        for changed in changes { XCTAssertFalse(KernelCache.samePlanned(device(peer), device(changed)), "\(changed)") }
        var port = device(peer); port["wg0"]!.listenPort = 51821
        XCTAssertFalse(KernelCache.samePlanned(device(peer), port))
        var twice = device(peer); twice["wg0"]!.peers.append(peer)
        XCTAssertFalse(KernelCache.samePlanned(device(peer), twice))
    }

    /// A field added to the peer or the device must be added to `samePlanned` (or to the
    /// traffic fields it leaves out): this list is the reminder.
    func testTheComparisonKnowsEveryField() {
        let peer = WireGuardPeer(publicKey: key)
        XCTAssertEqual(Mirror(reflecting: peer).children.compactMap(\.label),
                       ["publicKey", "presharedKey", "endpoint", "persistentKeepalive", "latestHandshake",
                        "receivedBytes", "transmittedBytes", "allowedIPs"])
        XCTAssertEqual(Mirror(reflecting: WireGuardDevice(name: "wg0", index: 5)).children.compactMap(\.label),
                       ["name", "index", "privateKey", "publicKey", "listenPort", "firewallMark", "peers"])
    }
}
