import Netlink

/// A tunnel peer's allowed IP that holds an address the gateway itself has on the LAN: the LAN
/// program would redirect the LAN's packets for that address into the tunnel, and the proxy
/// entry and route derived from it would claim the address too. Only the kernel knows the
/// LAN's addresses, so `plan` applies this rule, not `check`.
///
/// Such a prefix is held back whole while the LAN holds the address: no route, proxy entry or
/// datapath entry, and it is left out of the peer's WireGuard allowed IPs as well (with it,
/// WireGuard would accept packets from that peer whose source is the gateway's own address,
/// and the tunnel program would put them on the LAN). The peer keeps its other allowed IPs.
/// Whatever of the prefix is in the kernel already goes, as it would on a fresh start.
enum GatewayAddressRule {
    /// `desired` without the refused prefixes, and a refusal for each object held back.
    static func apply(_ desired: DesiredState, _ observed: ObservedState) -> (DesiredState, [Refusal]) {
        guard let gateway = desired.gateway, !gateway.allowUnsafeAllowedIPs,
              let lan = observed.link(named: gateway.lan),
              let d = desired.devices.firstIndex(where: { $0.name == gateway.tunnel })
        else { return (desired, []) }
        let own = Set(observed.addresses.filter { $0.interfaceIndex == lan.index }.map(\.prefix.address)).sorted()
        guard !own.isEmpty else { return (desired, []) }
        // Most reconciles find no peer holding one: looked for without a copy of each peer
        // (a touched reload of 10 000 peers applies the rule twice).
        var hit = false
        desired.devices[d].peers.withUnsafeBufferPointer { peers in
            for p in peers.indices where peers[p].allowedIPs.contains(where: { prefix in
                prefix.isHost ? own.contains(prefix.address) : own.contains(where: prefix.contains)
            }) {
                hit = true
                return
            }
        }
        guard hit else { return (desired, []) }

        var result = desired
        var refused: [Refusal] = []
        var withheld: Set<IPPrefix> = []
        for (p, peer) in desired.devices[d].peers.enumerated() {
            var refusedHere = false
            for prefix in peer.allowedIPs where own.contains(where: prefix.contains) {
                let held = own.filter { prefix.contains($0) }
                withheld.insert(prefix)
                refusedHere = true
                let why = reason(prefix, peer: peer.name, held: held, lan: gateway.lan)
                // The peer is listed once per refused prefix; status counts it once (by object).
                refused.append(Refusal(kind: .peer, object: "peer \(peer.name) dev \(gateway.tunnel)", reason: why))
                refused.append(Refusal(kind: .route, object: "route \(prefix) dev \(gateway.tunnel)", reason: why))
                if let proxy = desired.proxies.first(where: { $0.origin == .peer(peer.name) && prefix.contains($0.address) }) {
                    refused.append(Refusal(kind: .proxy, object: "proxy \(proxy.address) dev \(proxy.device)", reason: why))
                }
                if desired.datapath != nil {
                    refused.append(Refusal(kind: .datapath, object: "datapath \(DatapathEntry(direction: .lanToTunnel, prefix: prefix))", reason: why))
                }
            }
            guard refusedHere else { continue }
            result.devices[d].peers[p].allowedIPs.removeAll(where: withheld.contains)
            result.routes.removeAll { $0.origin == .peer(peer.name) && withheld.contains($0.destination) }
            result.proxies.removeAll { proxy in
                proxy.origin == .peer(peer.name) && peer.allowedIPs.contains { withheld.contains($0) && $0.contains(proxy.address) }
            }
        }
        result.datapath?.entries.removeAll { $0.direction == .lanToTunnel && withheld.contains($0.prefix) }
        return (result, refused)
    }

    private static func reason(_ prefix: IPPrefix, peer: String, held: [IPAddress], lan: String) -> String {
        let addresses = held.map(\.description).joined(separator: ", ")
        return "refusing allowed IP \(prefix) of peer \(peer): it holds \(addresses), which this gateway has on \(lan); "
            + "its route, proxy entry and LAN-to-tunnel redirect would take the LAN's traffic for the gateway into the tunnel. "
            + "Nothing of \(prefix) is installed (not even as the peer's WireGuard allowed IP) while \(lan) holds "
            + "\(held.count == 1 ? "that address" : "those addresses"); give the peer its own addresses, "
            + "or set gateway.allow_unsafe_allowed_ips: true"
    }
}
