import Netlink

/// README, configuration reference: a host-name endpoint is resolved when applied and resolved again when the peer's
/// latest handshake is older than 135 s, so a peer whose address moved in DNS is found again.
/// Pure: which peers are due, given the kernel's handshake times and when each was last resolved.
public func hostEndpointsToResolve(
    _ desired: DesiredState, wireGuard: [String: WireGuardDevice], now: Double,
    lastResolved: [LastApplied.PeerKey: Double], after: Double = 135
) -> [(LastApplied.PeerKey, HostEndpoint)] {
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
