import Netlink
import Reconciler
import XCTest

final class ReresolveTests: XCTestCase {
    private let key = PrivateKey.generate().publicKey
    private let other = PrivateKey.generate().publicKey

    private func desired(_ endpoint: ConfiguredEndpoint?) -> DesiredState {
        DesiredState(devices: [DesiredWireGuardDevice(name: "wg0", peers: [
            DesiredPeer(name: "alice", publicKey: key, endpoint: endpoint),
            DesiredPeer(name: "bob", publicKey: other, endpoint: .address(Endpoint("192.0.2.1:1")!)),
        ])])
    }

    private func kernel(handshake: Double?) -> [String: WireGuardDevice] {
        ["wg0": WireGuardDevice(name: "wg0", index: 3, peers: [
            WireGuardPeer(publicKey: key, latestHandshake: handshake), WireGuardPeer(publicKey: other),
        ])]
    }

    private func due(_ endpoint: ConfiguredEndpoint?, handshake: Double?, resolvedAt: Double? = nil, now: Double = 10_000) -> [String] {
        let peerKey = LastApplied.PeerKey(device: "wg0", publicKey: key)
        return hostEndpointsToResolve(desired(endpoint), wireGuard: kernel(handshake: handshake), now: now,
                                      lastResolved: resolvedAt.map { [peerKey: $0] } ?? [:]).map { $0.1.description }
    }

    func testAQuietPeerWithAHostNameIsDue() {
        XCTAssertEqual(due(.host("gw.example", port: 51820), handshake: nil), ["gw.example:51820"])
        XCTAssertEqual(due(.host("gw.example", port: 51820), handshake: 10_000 - 136), ["gw.example:51820"])
    }

    func testARecentHandshakeOrARecentResolutionIsNot() {
        XCTAssertEqual(due(.host("gw.example", port: 51820), handshake: 10_000 - 60), [])
        XCTAssertEqual(due(.host("gw.example", port: 51820), handshake: nil, resolvedAt: 10_000 - 100), [])
        XCTAssertEqual(due(.host("gw.example", port: 51820), handshake: nil, resolvedAt: 10_000 - 200), ["gw.example:51820"])
    }

    func testAddressEndpointsAndMissingPeersAreNeverDue() {
        XCTAssertEqual(due(.address(Endpoint("[2001:db8::1]:1")!), handshake: nil), [])
        XCTAssertEqual(due(nil, handshake: nil), [])
        XCTAssertEqual(hostEndpointsToResolve(desired(.host("h", port: 1)), wireGuard: [:], now: 0, lastResolved: [:]).count, 0)
    }
}
