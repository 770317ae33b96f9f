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

    /// What `hostEndpointsToResolve` gave before it skipped devices without host-name endpoints
    /// (d29ec06): a dictionary of every kernel peer's handshake, the first of a key kept.
    private func reference(_ desired: DesiredState, wireGuard: [String: WireGuardDevice], now: Double,
                           lastResolved: [LastApplied.PeerKey: Double], after: Double = 135) -> [(LastApplied.PeerKey, HostEndpoint)] {
        var due: [(LastApplied.PeerKey, HostEndpoint)] = []
        for device in desired.devices {
            guard let kernel = wireGuard[device.name] else { continue }
            let handshakes = Dictionary(kernel.peers.map { ($0.publicKey, $0.latestHandshake) }, uniquingKeysWith: { a, _ in a })
            for peer in device.peers {
                guard case .host(let name, let port)? = peer.endpoint, let handshake = handshakes[peer.publicKey] else { continue }
                let key = LastApplied.PeerKey(device: device.name, publicKey: peer.publicKey)
                let quiet = handshake.map { now - $0 > after } ?? true
                let stale = lastResolved[key].map { now - $0 > after } ?? true
                if quiet && stale { due.append((key, HostEndpoint(host: name, port: port))) }
            }
        }
        return due
    }

    /// Random devices, configured peers (host names, addresses, none), kernel peers (missing,
    /// present, a key twice, handshakes recent, old or never) and resolutions: the same peers
    /// due, in the same order, as before.
    func testTheSameAnswerAsBeforeDevicesWithoutHostNamesWereSkipped() {
        var random = SystemRandomNumberGenerator()
        let keys = (0..<6).map { _ in PrivateKey.generate().publicKey }
        for _ in 0..<2_000 {
            var devices: [DesiredWireGuardDevice] = [], kernel: [String: WireGuardDevice] = [:]
            var lastResolved: [LastApplied.PeerKey: Double] = [:]
            for d in 0..<Int.random(in: 0...3, using: &random) {
                let name = "wg\(d)"
                let peers = keys.shuffled(using: &random).prefix(Int.random(in: 0...4, using: &random)).map { key in
                    let endpoint: ConfiguredEndpoint? = [nil, .address(Endpoint("192.0.2.1:1")!), .host("h\(Int.random(in: 0...2, using: &random))", port: 1)]
                        .randomElement(using: &random)!
                    if Bool.random(using: &random) { lastResolved[LastApplied.PeerKey(device: name, publicKey: key)] = [0, 9_900, 9_990].randomElement(using: &random)! }
                    return DesiredPeer(name: key.base64, publicKey: key, endpoint: endpoint)
                }
                devices.append(DesiredWireGuardDevice(name: name, peers: Array(peers)))
                guard Int.random(in: 0..<4, using: &random) > 0 else { continue }
                kernel[name] = WireGuardDevice(name: name, index: Int32(d + 1), peers: (0..<Int.random(in: 0...6, using: &random)).map { _ in
                    WireGuardPeer(publicKey: keys.randomElement(using: &random)!, latestHandshake: [nil, 1_000, 9_950].randomElement(using: &random)!)
                })
            }
            let desired = DesiredState(devices: devices)
            let now = 10_000.0
            let new = hostEndpointsToResolve(desired, wireGuard: kernel, now: now, lastResolved: lastResolved)
            let old = reference(desired, wireGuard: kernel, now: now, lastResolved: lastResolved)
            XCTAssertEqual(new.map(\.0), old.map(\.0))
            XCTAssertEqual(new.map(\.1), old.map(\.1))
        }
    }
}
