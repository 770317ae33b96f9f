import Netlink
import Reconciler

/// Shared values for plan tests: wg0 (5) and private0 (6) are managed, eth0 (2) is not.
enum F {
    static let eth0 = Link(index: 2, name: "eth0", kind: nil)
    static let wg0 = Link(index: 5, name: "wg0", kind: "wireguard", flags: 1)  // IFF_UP
    static let lan = Link(index: 6, name: "private0", kind: "veth")
    static let links = [eth0, wg0, lan]

    static func key(_ n: UInt8) -> WireGuardKey { WireGuardKey(bytes: [UInt8](repeating: n, count: 31) + [n &+ 1])! }
    static func prefix(_ text: String) -> IPPrefix { IPPrefix(text)! }
    static func address(_ text: String) -> IPAddress { IPAddress(text)! }
    static let privateKey = PrivateKey(key(200))
    static let psk = PresharedKey(key(201))

    static let alice = DesiredPeer(name: "alice", publicKey: key(1), allowedIPs: [prefix("2001:db8:1::100/128")])
    static let bob = DesiredPeer(name: "bob", publicKey: key(2), presharedKey: psk,
                                 endpoint: .address(Endpoint("[2001:db8:ff::2]:51820")!), persistentKeepalive: 25,
                                 allowedIPs: [prefix("2001:db8:1::101/128"), prefix("2001:db8:7::/64")])

    static func desired(peers: [DesiredPeer] = [alice, bob], prune: Bool = true) -> DesiredState {
        DesiredState(
            routeProtocol: 77,
            devices: [DesiredWireGuardDevice(name: "wg0", privateKey: privateKey, listenPort: 51820, prunePeers: prune, peers: peers)],
            sysctls: [DesiredSysctl(interface: "private0", name: "forwarding", value: "1"),
                      DesiredSysctl(interface: "private0", name: "proxy_ndp", value: "1")],
            routes: [DesiredRoute(destination: prefix("2001:db8:1::/64"), device: "private0", origin: .lanPrefix)]
                + peers.flatMap { peer in peer.allowedIPs.map { DesiredRoute(destination: $0, device: "wg0", origin: .peer(peer.name)) } },
            proxies: peers.flatMap { peer in
                peer.allowedIPs.filter { prefix("2001:db8:1::/64").contains($0) }
                    .map { DesiredProxy(address: $0.address, device: "private0", origin: .peer(peer.name)) }
            },
            datapath: DesiredDatapath(lan: "private0", tunnel: "wg0", entries:
                [DatapathEntry(direction: .tunnelToLAN, prefix: prefix("2001:db8:1::/64"))]
                + peers.flatMap { $0.allowedIPs.map { DatapathEntry(direction: .lanToTunnel, prefix: $0) } }),
            safetyChecks: [SafetyCheck(sysctl: Sysctl.ipv6(interface: "all", "forwarding"), expected: "0", why: "no router")])
    }

    /// `desired()` with its `gateway` section (wg0 ⇄ private0, 2001:db8:1::/64).
    static func desiredWithGateway(allowUnsafe: Bool = false) -> DesiredState {
        var d = desired()
        d.gateway = DesiredGateway(tunnel: "wg0", lan: "private0", lanPrefix: prefix("2001:db8:1::/64"), allowUnsafeAllowedIPs: allowUnsafe)
        return d
    }

    /// Why bob's 2001:db8:1::101/128 is refused while private0 holds that address.
    static let ownAddressRefusal = "refusing allowed IP 2001:db8:1::101/128 of peer bob: it holds 2001:db8:1::101, which this gateway has on private0; its route, proxy entry and LAN-to-tunnel redirect would take the LAN's traffic for the gateway into the tunnel. Nothing of 2001:db8:1::101/128 is installed (not even as the peer's WireGuard allowed IP) while private0 holds that address; give the peer its own addresses, or set gateway.allow_unsafe_allowed_ips: true"

    static func route(_ destination: String, _ oif: Int32, proto: UInt8 = 77, metric: UInt32 = 1024, table: UInt32 = 254,
                      gateway: String? = nil) -> Route {
        Route(destination: prefix(destination), table: table, protocolNumber: proto, outputInterface: oif,
              gateway: gateway.map(address), metric: metric)
    }

    static func proxy(_ address: String, _ index: Int32 = 6, proto: UInt8 = 77) -> ProxyEntry {
        ProxyEntry(address: self.address(address), interfaceIndex: index, protocolNumber: proto)
    }

    static func kernelPeer(_ peer: DesiredPeer, endpoint: Endpoint? = nil) -> WireGuardPeer {
        var endpointValue = endpoint
        if endpointValue == nil, case .address(let configured)? = peer.endpoint { endpointValue = configured }
        return WireGuardPeer(publicKey: peer.publicKey, presharedKey: peer.presharedKey, endpoint: endpointValue,
                             persistentKeepalive: peer.persistentKeepalive, allowedIPs: peer.allowedIPs.reversed())
    }

    /// A kernel that already holds exactly `desired()` (plus the kernel's own objects).
    static func inSync(peers: [DesiredPeer] = [alice, bob]) -> ObservedState {
        let desired = desired(peers: peers)
        return ObservedState(
            links: links,
            routes: desired.routes.map { route($0.destination.description, $0.device == "wg0" ? 5 : 6) }
                + [route("fe80::/64", 5, proto: 2, metric: 256), route("2001:db8:99::/64", 2, proto: 4)],
            proxies: desired.proxies.map { proxy($0.address.description) },
            sysctls: ["net/ipv6/conf/private0/forwarding": "1", "net/ipv6/conf/private0/proxy_ndp": "1",
                      "net/ipv6/conf/all/forwarding": "0"],
            wireGuard: ["wg0": WireGuardDevice(name: "wg0", index: 5, privateKey: privateKey, listenPort: 51820,
                                               peers: peers.map { kernelPeer($0) })],
            datapath: Set(desired.datapath!.entries))
    }
}
