import Netlink
import Reconciler

/// Rules on allowed IPs that keep a peer from capturing traffic that is not its own: WireGuard
/// routes each address to exactly one peer, and the gateway derives a route for each prefix.
extension Configuration {
    func checkAllowedIPs(errors: inout ConfigErrorList) {
        if let gateway, !gateway.allowUnsafeAllowedIPs, let tunnel = devices.first(where: { $0.name == gateway.tunnel }) {
            let sections = tunnel.peers
            for p in sections.indices {
                for (i, prefix) in sections.desired[p].allowedIPs.enumerated() {
                    guard let why = Self.unsafe(prefix, lanPrefix: gateway.lanPrefix) else { continue }
                    errors.append(ConfigError(sections.allowedIPLocation(at: p, i), "allowed IP \(prefix) of peer \(sections.desired[p].name) \(why): its route via \(gateway.tunnel) would capture traffic that is not the peer's (set gateway.allow_unsafe_allowed_ips: true if this is meant)"))
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
        /// A tunnel peer's allowed IP (`peer`, `item`) or an explicit route (`route`); its words
        /// and place are made only for a message.
        struct Claim {
            var peer: Int32 = -1
            var item: Int32 = -1
            var route: Int32 = -1
        }
        // Only literal endpoints can lie inside a claim: without any, there is nothing to index.
        guard devices.contains(where: { $0.peers.desired.contains { if case .address? = $0.endpoint { true } else { false } } }) else { return }
        let tunnel = devices.first(where: { $0.name == gateway.tunnel })?.peers ?? PeerSections()
        var claims: [IPPrefix: [Claim]] = [:]
        var lengths: Set<UInt8> = []
        func claim(_ prefix: IPPrefix, _ claim: Claim) {
            // A prefix refused already (`::/0`, one covering the LAN) is reported once, for that.
            guard Self.unsafe(prefix, lanPrefix: gateway.lanPrefix) == nil else { return }
            claims[prefix.canonical, default: []].append(claim)
            lengths.insert(prefix.length)
        }
        for p in tunnel.indices {
            for (i, prefix) in tunnel.desired[p].allowedIPs.enumerated() { claim(prefix, Claim(peer: Int32(p), item: Int32(i))) }
        }
        for (r, entry) in routes.enumerated() where entry.route.device == gateway.tunnel {
            claim(entry.route.destination, Claim(route: Int32(r)))
        }
        guard !claims.isEmpty else { return }
        let sortedLengths = lengths.sorted()
        for device in devices {
            let sections = device.peers
            for p in sections.indices {
                guard case .address(let endpoint)? = sections.desired[p].endpoint else { continue }
                let name = sections.desired[p].name
                let address = endpoint.address
                for length in sortedLengths where Int(length) <= address.bitWidth {
                    let key = IPPrefix(address: address.masked(to: Int(length)), length: length)
                    for claim in claims[key] ?? [] {
                        let what: String, at: SourceLocation, holder: String?
                        if claim.route >= 0 {
                            let entry = routes[Int(claim.route)]
                            (what, at, holder) = ("route \(entry.route.destination) via \(gateway.tunnel)", entry.location, nil)
                        } else {
                            let peer = tunnel.desired[Int(claim.peer)]
                            (what, at, holder) = ("allowed IP \(peer.allowedIPs[Int(claim.item)]) of peer \(peer.name)",
                                                  tunnel.allowedIPLocation(at: Int(claim.peer), Int(claim.item)), peer.name)
                        }
                        let whose = holder == name ? "its own endpoint \(endpoint)"
                            : "the endpoint \(endpoint) of peer \(name) at \(sections.endpointLocation(at: p))"
                        errors.append(at, "\(what) holds \(whose): \(claim.route >= 0 ? "it" : "its route via \(gateway.tunnel)") would carry the encrypted packets for that endpoint into the tunnel itself, a routing loop (set gateway.allow_unsafe_allowed_ips: true if this is meant)")
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
        let sections = device.peers
        for p in sections.indices {
            let key = sections.desired[p].publicKey
            if key == own {
                errors.append(ConfigError(sections.location(at: p), "peer \(sections.desired[p].name) has \(device.name)'s own public key: WireGuard ignores such a peer"))
            } else if key == privateKey.key {
                errors.append(ConfigError(sections.location(at: p), "peer \(sections.desired[p].name): its public_key is \(device.name)'s private key (never put a private key in the configuration; use `wg pubkey`)"))
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
            var peer: Int32
            var item: Int32
        }
        let sections = device.peers
        var claims: [Claim] = []
        claims.reserveCapacity(sections.count)
        for p in sections.indices {
            for (i, prefix) in sections.desired[p].allowedIPs.enumerated() { claims.append(Claim(prefix: prefix, peer: Int32(p), item: Int32(i))) }
        }
        claims.sort { ($0.prefix, $0.peer, $0.item) < ($1.prefix, $1.peer, $1.item) }
        var enclosing: [Claim] = []
        for claim in claims {
            while let last = enclosing.last, !last.prefix.contains(claim.prefix) { enclosing.removeLast() }
            // At most 129 enclosing prefixes (one per length), so this stays linear.
            if let outer = enclosing.last(where: { $0.peer != claim.peer }), outer.prefix != claim.prefix {
                let inner = sections.desired[Int(claim.peer)].name, holder = sections.desired[Int(outer.peer)].name
                let at = sections.allowedIPLocation(at: Int(claim.peer), Int(claim.item))
                let outerAt = sections.allowedIPLocation(at: Int(outer.peer), Int(outer.item))
                errors.append(ConfigError(at, "allowed IP \(claim.prefix) of peer \(inner) lies inside \(outer.prefix) of peer \(holder) at \(outerAt): an address must belong to one peer (WireGuard would send \(claim.prefix) to \(inner) and the rest to \(holder))"))
            }
            enclosing.append(claim)
        }
    }
}
