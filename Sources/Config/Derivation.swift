import Netlink
import Reconciler

extension Configuration {
    /// Checks that span peers: names unique everywhere, public keys unique per device, and no
    /// allowed IP claimed twice (WireGuard would silently move it to the later peer).
    func checkPeers(errors: inout ConfigErrorList) {
        var names: [String: SourceLocation] = [:]
        var claimed: [IPPrefix: (peer: String, at: SourceLocation)] = [:]
        let peerCount = devices.reduce(0) { $0 + $1.peers.count }
        names.reserveCapacity(peerCount)
        claimed.reserveCapacity(peerCount)
        for device in devices {
            var keys: [WireGuardKey: (peer: String, at: SourceLocation)] = [:]
            keys.reserveCapacity(device.peers.count)
            for section in device.peers {
                let peer = section.peer
                if let first = names[peer.name] {
                    errors.append(ConfigError(section.location, "peer name \"\(peer.name)\" is already used at \(first)"))
                } else {
                    names[peer.name] = section.location
                }
                if let first = keys[peer.publicKey] {
                    errors.append(ConfigError(section.location,
                                              "public key \(peer.publicKey) of peer \(peer.name) is already used by peer \(first.peer) at \(first.at)"))
                } else {
                    keys[peer.publicKey] = (peer.name, section.location)
                }
                for (prefix, at) in zip(peer.allowedIPs, section.allowedIPLocations) {
                    if let first = claimed[prefix] {
                        errors.append(ConfigError(at, "allowed IP \(prefix) of peer \(peer.name) is already claimed by peer \(first.peer) at \(first.at)"))
                    } else {
                        claimed[prefix] = (peer.name, at)
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
                                   prunePeers: $0.prunePeers, peers: $0.peers.map(\.peer))
        }
        // Who holds each identity: the index of the object added for it (its origin is there)
        // and, beside, where it was written. Four bytes a table entry, not an origin and a
        // location: at 50 000 peers the two tables took 21 MiB while a reload derived.
        var routeOwners: [RouteIdentity: Int32] = [:]
        var proxyOwners: [DesiredProxyKey: Int32] = [:]
        var routeAt: [SourceLocation] = [], proxyAt: [SourceLocation] = []
        let allowedIPs = devices.reduce(0) { $0 + $1.peers.reduce(0) { $0 + $1.peer.allowedIPs.count } }
        routeOwners.reserveCapacity(allowedIPs + routes.count + 1)
        proxyOwners.reserveCapacity(allowedIPs + proxies.count)
        desired.routes.reserveCapacity(allowedIPs + routes.count + 1)
        desired.proxies.reserveCapacity(allowedIPs + proxies.count)
        routeAt.reserveCapacity(allowedIPs + routes.count + 1)
        proxyAt.reserveCapacity(allowedIPs + proxies.count)
        func add(_ route: DesiredRoute, at: SourceLocation) {
            if let owner = routeOwners[route.identity].map(Int.init) {
                let first = desired.routes[owner]
                // Two peers claiming one allowed IP is reported once, by `checkPeers`.
                if case .peer = first.origin, case .peer = route.origin { return }
                errors.append(ConfigError(at, "route \(route.destination) (table \(route.table), metric \(route.metric)) conflicts with the route from \(first.origin) at \(routeAt[owner])"))
                return
            }
            routeOwners[route.identity] = Int32(desired.routes.count)
            desired.routes.append(route)
            routeAt.append(at)
        }
        func add(_ proxy: DesiredProxy, at: SourceLocation) {
            let key = DesiredProxyKey(address: proxy.address, device: proxy.device)
            if let owner = proxyOwners[key].map(Int.init) {
                let first = desired.proxies[owner]
                if case .peer = first.origin, case .peer = proxy.origin { return }
                errors.append(ConfigError(at, "proxy \(proxy.address) dev \(proxy.device) conflicts with the proxy entry from \(first.origin) at \(proxyAt[owner])"))
                return
            }
            proxyOwners[key] = Int32(desired.proxies.count)
            desired.proxies.append(proxy)
            proxyAt.append(at)
        }

        if let gateway {
            if let tunnel = devices.first(where: { $0.name == gateway.tunnel }) {
                add(DesiredRoute(destination: gateway.lanPrefix, device: gateway.lan, origin: .lanPrefix), at: gateway.location)
                var entries = [DatapathEntry(direction: .tunnelToLAN, prefix: gateway.lanPrefix)]
                // ndp: datapath answers from the program's clients map instead of proxy entries.
                var answered: [IPAddress] = []
                for section in tunnel.peers {
                    for (prefix, at) in zip(section.peer.allowedIPs, section.allowedIPLocations) {
                        let origin = Origin.peer(section.peer.name)
                        add(DesiredRoute(destination: prefix, device: gateway.tunnel, origin: origin), at: at)
                        entries.append(DatapathEntry(direction: .lanToTunnel, prefix: prefix))
                        guard gateway.proxyNDP, gateway.lanPrefix.contains(prefix) else { continue }
                        if prefix.isHost, gateway.ndp == .datapath {
                            answered.append(prefix.address)
                        } else if prefix.isHost {
                            add(DesiredProxy(address: prefix.address, device: gateway.lan, origin: origin), at: at)
                        } else {
                            errors.append(ConfigError(at, "allowed IP \(prefix) of peer \(section.peer.name) lies inside lan_prefix \(gateway.lanPrefix) but is not a /128: proxy NDP answers for single addresses only"))
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

private struct DesiredProxyKey: Hashable {
    var address: IPAddress
    var device: String
}
