import Netlink
import Reconciler

/// Rules on allowed IPs that keep a peer from capturing traffic that is not its own: WireGuard
/// routes each address to exactly one peer, and the gateway derives a route for each prefix.
extension Configuration {
    func checkAllowedIPs(errors: inout ConfigErrorList) {
        if let gateway, !gateway.allowUnsafeAllowedIPs, let tunnel = devices.first(where: { $0.name == gateway.tunnel }) {
            for section in tunnel.peers {
                for (prefix, at) in zip(section.peer.allowedIPs, section.allowedIPLocations) {
                    guard let why = Self.unsafe(prefix, lanPrefix: gateway.lanPrefix) else { continue }
                    errors.append(ConfigError(at, "allowed IP \(prefix) of peer \(section.peer.name) \(why): its route via \(gateway.tunnel) would capture traffic that is not the peer's (set gateway.allow_unsafe_allowed_ips: true if this is meant)"))
                }
            }
        }
        // An explicit route through the tunnel captures the same traffic a peer's prefix would.
        if let gateway, !gateway.allowUnsafeAllowedIPs {
            for entry in routes where entry.route.device == gateway.tunnel {
                guard let why = Self.unsafe(entry.route.destination, lanPrefix: gateway.lanPrefix) else { continue }
                errors.append(ConfigError(entry.location, "route \(entry.route.destination) via \(gateway.tunnel) \(why): it would capture traffic that is not the peers' (set gateway.allow_unsafe_allowed_ips: true if this is meant)"))
            }
        }
        if let gateway, !gateway.allowUnsafeAllowedIPs {
            checkEndpoints(gateway, errors: &errors)
        }
        if !(gateway?.allowUnsafeAllowedIPs ?? false) {
            checkProxies(errors: &errors)
        }
        for device in devices {
            checkOverlaps(device, errors: &errors)
            checkOwnKeys(device, errors: &errors)
        }
    }

    /// An explicit proxy entry makes the host answer neighbour solicitations for its address on
    /// its device: for `::`, `::1`, a link-local or multicast address that hijacks what every
    /// host on the link relies on, and on the tunnel it answers for the peers' own side.
    private func checkProxies(errors: inout ConfigErrorList) {
        for entry in proxies {
            let proxy = entry.proxy
            if let why = Self.unsafeProxy(proxy.address) {
                errors.append(entry.location, "proxy \(proxy.address) dev \(proxy.device) \(why): the host would answer neighbour solicitations for an address that is not a peer's (set gateway.allow_unsafe_allowed_ips: true if this is meant)")
            }
            if let gateway, proxy.device == gateway.tunnel {
                errors.append(entry.location, "proxy \(proxy.address) dev \(proxy.device) is on the gateway's tunnel: proxy entries belong on the LAN, where they answer for the peers (set gateway.allow_unsafe_allowed_ips: true if this is meant)")
            }
        }
    }

    /// Why an address must not have an explicit proxy entry, or nil.
    static func unsafeProxy(_ address: IPAddress) -> String? {
        let host = IPPrefix(address: address, length: UInt8(address.bitWidth))
        if address == unspecified { return "is the unspecified address ::" }
        if address == loopback { return "is the loopback address ::1" }
        if linkLocal.contains(host) { return "is link-local (fe80::/10)" }
        if multicast.contains(host) { return "is multicast (ff00::/8)" }
        return nil
    }

    /// WireGuard sends a peer's encrypted packets to its endpoint through the host's routing
    /// table: a route via the tunnel (a gateway peer's allowed IP, an explicit route) that holds
    /// a configured endpoint address would carry them into the tunnel itself, a routing loop.
    /// The tunnel's prefixes are indexed by length, so each endpoint costs one lookup per length.
    private func checkEndpoints(_ gateway: GatewaySection, errors: inout ConfigErrorList) {
        struct Claim {
            var what: String
            var at: SourceLocation
            var peer: String?
            var route = false
        }
        // Only literal endpoints can lie inside a claim: without any, there is nothing to index.
        guard devices.contains(where: { $0.peers.contains { if case .address? = $0.peer.endpoint { true } else { false } } }) else { return }
        var claims: [IPPrefix: [Claim]] = [:]
        var lengths: Set<UInt8> = []
        func claim(_ prefix: IPPrefix, _ claim: Claim) {
            // A prefix refused already (`::/0`, one covering the LAN) is reported once, for that.
            guard Self.unsafe(prefix, lanPrefix: gateway.lanPrefix) == nil else { return }
            claims[prefix.canonical, default: []].append(claim)
            lengths.insert(prefix.length)
        }
        for section in devices.first(where: { $0.name == gateway.tunnel })?.peers ?? PeerSections() {
            for (prefix, at) in zip(section.peer.allowedIPs, section.allowedIPLocations) {
                claim(prefix, Claim(what: "allowed IP \(prefix) of peer \(section.peer.name)", at: at, peer: section.peer.name))
            }
        }
        for entry in routes where entry.route.device == gateway.tunnel {
            claim(entry.route.destination, Claim(what: "route \(entry.route.destination) via \(gateway.tunnel)", at: entry.location, route: true))
        }
        guard !claims.isEmpty else { return }
        let sortedLengths = lengths.sorted()
        for device in devices {
            for section in device.peers {
                guard case .address(let endpoint)? = section.peer.endpoint else { continue }
                let address = endpoint.address
                for length in sortedLengths where Int(length) <= address.bitWidth {
                    let key = IPPrefix(address: address.masked(to: Int(length)), length: length)
                    for claim in claims[key] ?? [] {
                        let whose = claim.peer == section.peer.name ? "its own endpoint \(endpoint)"
                            : "the endpoint \(endpoint) of peer \(section.peer.name) at \(section.endpointLocation ?? section.location)"
                        errors.append(claim.at, "\(claim.what) holds \(whose): \(claim.route ? "it" : "its route via \(gateway.tunnel)") would carry the encrypted packets for that endpoint into the tunnel itself, a routing loop (set gateway.allow_unsafe_allowed_ips: true if this is meant)")
                    }
                }
            }
        }
    }

    /// WireGuard ignores a peer with the device's own public key (so wgkeeper would add it at
    /// every poll), and a private key pasted as a peer's public key would be shown in status.
    private func checkOwnKeys(_ device: DeviceSection, errors: inout ConfigErrorList) {
        guard let privateKey = device.privateKey else { return }
        let own = privateKey.publicKey
        for section in device.peers {
            if section.peer.publicKey == own {
                errors.append(ConfigError(section.location, "peer \(section.peer.name) has \(device.name)'s own public key: WireGuard ignores such a peer"))
            } else if section.peer.publicKey == privateKey.key {
                errors.append(ConfigError(section.location, "peer \(section.peer.name): its public_key is \(device.name)'s private key (never put a private key in the configuration; use `wg pubkey`)"))
            }
        }
    }

    private static let linkLocal = IPPrefix("fe80::/10")!
    private static let multicast = IPPrefix("ff00::/8")!
    private static let unspecified = IPAddress("::")!
    private static let loopback = IPAddress("::1")!

    /// Why a prefix must not be a gateway peer's, or nil.
    static func unsafe(_ prefix: IPPrefix, lanPrefix: IPPrefix) -> String? {
        let overlaps = { (other: IPPrefix) in prefix.contains(other) || other.contains(prefix) }
        if prefix.length == 0 { return "is every address (the default route)" }
        if prefix.contains(unspecified) { return "holds the unspecified address ::" }
        if prefix.contains(loopback) { return "holds the loopback address ::1" }
        if overlaps(linkLocal) { return "overlaps link-local fe80::/10" }
        if overlaps(multicast) { return "overlaps multicast ff00::/8" }
        if prefix.contains(lanPrefix) { return "covers lan_prefix \(lanPrefix)" }
        return nil
    }

    /// One peer's prefix inside another peer's on the same device: sorted by address then length,
    /// prefixes nest like brackets, so one sweep with a stack of the enclosing ones finds every
    /// case in O(n log n). Equal prefixes are reported by `checkPeers`.
    private func checkOverlaps(_ device: DeviceSection, errors: inout ConfigErrorList) {
        struct Claim {
            var prefix: IPPrefix
            var peer: Int
            var at: SourceLocation
        }
        var claims: [Claim] = []
        for (p, section) in device.peers.enumerated() {
            for (prefix, at) in zip(section.peer.allowedIPs, section.allowedIPLocations) { claims.append(Claim(prefix: prefix, peer: p, at: at)) }
        }
        claims.sort { ($0.prefix, $0.peer) < ($1.prefix, $1.peer) }
        var enclosing: [Claim] = []
        for claim in claims {
            while let last = enclosing.last, !last.prefix.contains(claim.prefix) { enclosing.removeLast() }
            // At most 129 enclosing prefixes (one per length), so this stays linear.
            if let outer = enclosing.last(where: { $0.peer != claim.peer }), outer.prefix != claim.prefix {
                let peers = device.peers
                errors.append(ConfigError(claim.at, "allowed IP \(claim.prefix) of peer \(peers[claim.peer].peer.name) lies inside \(outer.prefix) of peer \(peers[outer.peer].peer.name) at \(outer.at): an address must belong to one peer (WireGuard would send \(claim.prefix) to \(peers[claim.peer].peer.name) and the rest to \(peers[outer.peer].peer.name))"))
            }
            enclosing.append(claim)
        }
    }
}
