import Netlink
import Reconciler

extension Configuration {
    /// Checks that span peers: names unique everywhere, public keys unique per device, and no
    /// allowed IP claimed twice (WireGuard would silently move it to the later peer).
    func checkPeers(errors: inout ConfigErrorList) {
        // The first holder of each name, key and allowed IP, found through tables of indices
        // (`IndexTable`): dictionaries from each to its holder's name and place took 25 MiB at
        // 50 000 peers, the largest part of a reload's peak.
        let peerCount = devices.reduce(0) { $0 + $1.peers.count }
        // A peer alone (`desired`) for the probes' compares; its places only for a message.
        func peerAt(_ place: (device: Int32, peer: Int32)) -> DesiredPeer { devices[Int(place.device)].peers.desired[Int(place.peer)] }
        func sectionsAt(_ place: (device: Int32, peer: Int32)) -> PeerSections { devices[Int(place.device)].peers }
        var named: [(device: Int32, peer: Int32)] = []
        var names = IndexTable(capacity: peerCount)
        var claims: [(place: (device: Int32, peer: Int32), ip: Int32)] = []
        var claimed = IndexTable(capacity: peerCount)
        named.reserveCapacity(peerCount)
        claims.reserveCapacity(peerCount)
        for (d, device) in devices.enumerated() {
            let sections = device.peers
            var keys = IndexTable(capacity: sections.count)
            for p in sections.indices {
                let place = (device: Int32(d), peer: Int32(p))
                let name = sections.desired[p].name
                if let first = names.insert(name, index: named.count, keyAt: { peerAt(named[$0]).name }) {
                    let holder = named[first]
                    errors.append(ConfigError(sections.location(at: p), "peer name \"\(name)\" is already used at \(sectionsAt(holder).location(at: Int(holder.peer)))"))
                } else {
                    named.append(place)
                }
                if let first = keys.insert(sections.desired[p].publicKey, index: p, keyAt: { sections.desired[$0].publicKey }) {
                    errors.append(ConfigError(sections.location(at: p),
                                              "public key \(sections.desired[p].publicKey) of peer \(name) is already used by peer \(sections.desired[first].name) at \(sections.location(at: first))"))
                }
                for (i, prefix) in sections.desired[p].allowedIPs.enumerated() {
                    let first = claimed.insert(prefix, index: claims.count) { claim in
                        peerAt(claims[claim].place).allowedIPs[Int(claims[claim].ip)]
                    }
                    if let first {
                        let holder = claims[first]
                        let holderName = peerAt(holder.place).name
                        errors.append(ConfigError(sections.allowedIPLocation(at: p, i), "allowed IP \(prefix) of peer \(name) is already claimed by peer \(holderName) at \(sectionsAt(holder.place).allowedIPLocation(at: Int(holder.place.peer), Int(holder.ip)))"))
                    } else {
                        claims.append((place, Int32(i)))
                    }
                }
            }
        }
    }

    /// Expands `gateway` into routes, proxy entries (or, with `ndp: datapath`, the addresses the
    /// LAN program answers for), sysctls and datapath entries, adds the
    /// explicit ones, and reports an explicit object that collides with a derived one.
    func desiredState(errors: inout ConfigErrorList) -> DesiredState {
        var desired = DesiredState(routeProtocol: runtime.routeProtocol)
        desired.devices = devices.map {
            DesiredWireGuardDevice(name: $0.name, privateKey: $0.privateKey, listenPort: $0.listenPort,
                                   prunePeers: $0.prunePeers, peers: $0.peers.desired)
        }
        // Who holds each identity: the index of the object added for it (its origin is there)
        // and, beside, where it was written. Four bytes a slot, not an origin and a location
        // (at 50 000 peers those tables took 21 MiB while a reload derived), nor the identity
        // (dictionaries from identity to index took 10 MiB, the largest part of a reload's peak).
        let allowedIPs = devices.reduce(0) { $0 + $1.peers.desired.reduce(0) { $0 + $1.allowedIPs.count } }
        var routeOwners = IndexTable(capacity: allowedIPs + routes.count + 1)
        var proxyOwners = IndexTable(capacity: allowedIPs + proxies.count)
        var routeAt: [SourceLocation] = [], proxyAt: [SourceLocation] = []
        desired.routes.reserveCapacity(allowedIPs + routes.count + 1)
        desired.proxies.reserveCapacity(allowedIPs + proxies.count)
        routeAt.reserveCapacity(allowedIPs + routes.count + 1)
        proxyAt.reserveCapacity(allowedIPs + proxies.count)
        func add(_ route: DesiredRoute, at: SourceLocation) {
            let identity = route.identity
            if let owner = routeOwners.insert(identity, index: desired.routes.count, keyAt: { desired.routes[$0].identity }) {
                let first = desired.routes[owner]
                // Two peers claiming one allowed IP is reported once, by `checkPeers`.
                if case .peer = first.origin, case .peer = route.origin { return }
                errors.append(ConfigError(at, "route \(route.destination) (table \(route.table), metric \(route.metric)) conflicts with the route from \(first.origin) at \(routeAt[owner])"))
                return
            }
            desired.routes.append(route)
            routeAt.append(at)
        }
        func add(_ proxy: DesiredProxy, at: SourceLocation) {
            let key = DesiredProxyKey(address: proxy.address, device: proxy.device)
            if let owner = proxyOwners.insert(key, index: desired.proxies.count,
                                              keyAt: { DesiredProxyKey(address: desired.proxies[$0].address, device: desired.proxies[$0].device) }) {
                let first = desired.proxies[owner]
                if case .peer = first.origin, case .peer = proxy.origin { return }
                errors.append(ConfigError(at, "proxy \(proxy.address) dev \(proxy.device) conflicts with the proxy entry from \(first.origin) at \(proxyAt[owner])"))
                return
            }
            desired.proxies.append(proxy)
            proxyAt.append(at)
        }

        if let gateway {
            if let tunnel = devices.first(where: { $0.name == gateway.tunnel }) {
                add(DesiredRoute(destination: gateway.lanPrefix, device: gateway.lan, origin: .lanPrefix), at: gateway.location)
                var entries = [DatapathEntry(direction: .tunnelToLAN, prefix: gateway.lanPrefix)]
                // ndp: datapath answers from the program's clients map instead of proxy entries.
                var answered: [IPAddress] = []
                let sections = tunnel.peers
                for p in sections.indices {
                    let origin = Origin.peer(sections.desired[p].name)
                    for (i, prefix) in sections.desired[p].allowedIPs.enumerated() {
                        let at = sections.allowedIPLocation(at: p, i)
                        add(gateway.peerRoute(prefix, origin), at: at)
                        entries.append(DatapathEntry(direction: .lanToTunnel, prefix: prefix))
                        switch gateway.neighbourAnswer(prefix) {
                        case .none: break
                        case .datapath: answered.append(prefix.address)
                        case .proxy: add(gateway.peerProxy(prefix, origin), at: at)
                        case .notHost:
                            errors.append(ConfigError(at, "allowed IP \(prefix) of peer \(sections.desired[p].name) lies inside lan_prefix \(gateway.lanPrefix) but is not a /128: proxy NDP answers for single addresses only"))
                        }
                    }
                }
                // The kernel answers proxy NDP only with the LAN's own forwarding on (ndp: kernel).
                if gateway.proxyNDP, gateway.ndp == .kernel {
                    desired.sysctls = [DesiredSysctl(interface: gateway.lan, name: "forwarding", value: "1"),
                                       DesiredSysctl(interface: gateway.lan, name: "proxy_ndp", value: "1")]
                }
                if gateway.redirect {
                    let answers = gateway.proxyNDP && gateway.ndp == .datapath
                    desired.datapath = DesiredDatapath(lan: gateway.lan, tunnel: gateway.tunnel, entries: entries,
                                                       icmp: DatapathICMP(sourceLAN: gateway.icmpSourceLAN,
                                                                          sourceTunnel: gateway.icmpSourceTunnel,
                                                                          rateLimit: gateway.icmpRateLimit),
                                                       neighbourDiscovery: answers ? DatapathNeighbourDiscovery(addresses: answered) : nil)
                }
                desired.gateway = DesiredGateway(tunnel: gateway.tunnel, lan: gateway.lan, lanPrefix: gateway.lanPrefix,
                                                 proxyNDP: gateway.proxyNDP, redirect: gateway.redirect,
                                                 allowLANAnycast: gateway.allowLANAnycast,
                                                 allowUnsafeAllowedIPs: gateway.allowUnsafeAllowedIPs, ndp: gateway.ndp)
                desired.safetyChecks = [SafetyCheck(sysctl: Sysctl.ipv6(interface: "all", "forwarding"), expected: "0",
                                                    why: "all.forwarding = 1 makes the host a router on every interface and claims every LAN's subnet-router anycast (README: The problem it solves)")]
            } else {
                errors.append(ConfigError(gateway.location, "gateway: tunnel \"\(gateway.tunnel)\" is not a configured WireGuard device (wireguard: has \(devices.isEmpty ? "none" : devices.map(\.name).joined(separator: ", ")))"))
            }
        }
        for entry in routes { add(entry.route, at: entry.location) }
        for entry in proxies { add(entry.proxy, at: entry.location) }
        if let (policy, compiled) = desiredPolicy(errors: &errors) {
            desired.policy = policy
            desired.datapath?.policy = compiled
        }
        return desired
    }
}

extension GatewaySection {
    /// Who answers neighbour solicitations for a tunnel peer's allowed IP on the LAN.
    enum NeighbourAnswer {
        /// Nobody: outside the LAN prefix, or proxy NDP off.
        case none
        /// A proxy entry (`ndp: kernel`).
        case proxy
        /// The LAN program (`ndp: datapath`).
        case datapath
        /// Inside the LAN prefix but wider than one address: an error.
        case notHost
    }

    func neighbourAnswer(_ prefix: IPPrefix) -> NeighbourAnswer {
        guard proxyNDP, lanPrefix.contains(prefix) else { return .none }
        guard prefix.isHost else { return .notHost }
        return ndp == .datapath ? .datapath : .proxy
    }

    /// The route a tunnel peer's allowed IP derives.
    func peerRoute(_ prefix: IPPrefix, _ origin: Origin) -> DesiredRoute { DesiredRoute(destination: prefix, device: tunnel, origin: origin) }

    /// The proxy entry a tunnel peer's allowed IP derives when `neighbourAnswer` says `proxy`.
    func peerProxy(_ prefix: IPPrefix, _ origin: Origin) -> DesiredProxy { DesiredProxy(address: prefix.address, device: lan, origin: origin) }
}

private struct DesiredProxyKey: Hashable {
    var address: IPAddress
    var device: String
}

/// A set of objects kept in an array, by a key each has: the table holds only their indices
/// (open addressing, linear probing, at most half full), and a probe compares keys through
/// `keyAt`. A quarter of the memory of a dictionary from key to index for an IPv6 route's identity.
struct IndexTable {
    private var slots: [Int32]
    private var count = 0

    init(capacity: Int) {
        var size = 8
        while size < 2 * capacity { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
    }

    /// The index of the object already there with `key`; nil when there was none, after
    /// recording `index` (the object's place in its array) for it. `keyAt(i)` is the key of the
    /// object at index `i`, for every index recorded before.
    mutating func insert<Key: Hashable>(_ key: Key, index: Int, keyAt: (Int) -> Key) -> Int? {
        // Before the probe: every index recorded so far has its object (`index`'s may not yet).
        if 2 * (count + 1) > slots.count { grow(keyAt: keyAt) }
        let mask = slots.count - 1
        var at = key.hashValue & mask
        while slots[at] >= 0 {
            let other = Int(slots[at])
            if keyAt(other) == key { return other }
            at = (at + 1) & mask
        }
        slots[at] = Int32(index)
        count += 1
        return nil
    }

    private mutating func grow<Key: Hashable>(keyAt: (Int) -> Key) {
        let old = slots
        slots = [Int32](repeating: -1, count: 2 * old.count)
        let mask = slots.count - 1
        for index in old where index >= 0 {
            var at = keyAt(Int(index)).hashValue & mask
            while slots[at] >= 0 { at = (at + 1) & mask }
            slots[at] = index
        }
    }
}
