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
        // Runs at every WireGuard poll: a device without host-name endpoints costs one pass
        // over its configured peers and nothing else.
        let named = device.peers.filter { if case .host? = $0.endpoint { true } else { false } }
        guard !named.isEmpty, let kernel = wireGuard[device.name] else { continue }
        let keys = Set(named.map(\.publicKey))
        var handshakes: [WireGuardKey: Double?] = [:]
        for peer in kernel.peers where keys.contains(peer.publicKey) && handshakes[peer.publicKey] == nil {
            handshakes[peer.publicKey] = .some(peer.latestHandshake)
        }
        for peer in named {
            guard case .host(let name, let port)? = peer.endpoint, let handshake = handshakes[peer.publicKey] else { continue }
            let key = LastApplied.PeerKey(device: device.name, publicKey: peer.publicKey)
            let quiet = handshake.map { now - $0 > after } ?? true
            let stale = lastResolved[key].map { now - $0 > after } ?? true
            if quiet && stale { due.append((key, HostEndpoint(host: name, port: port))) }
        }
    }
    return due
}
