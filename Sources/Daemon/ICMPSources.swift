import Datapath
import Netlink
import Reconciler

/// Where the datapath's ICMPv6 errors come from: the gateway's address on the side each is
/// sent to, so the receiver accepts it (a LAN host on-link, a client through its WireGuard
/// peer, whose allowed IPs cover the LAN prefix but rarely the tunnel's own addresses).
public enum ICMPSources {
    /// The settings for the programs, and one line per side for status and the log.
    public static func settings(_ wanted: DatapathICMP, lan: Link, tunnel: Link, addresses: [Address])
        -> (ICMPErrorSettings, lan: String, tunnel: String) {
        let lanFound = usable(addresses, on: lan.index, global: true) ?? usable(addresses, on: lan.index, global: false)
        // A client accepts the gateway's global LAN address (inside the prefix it routes
        // through the tunnel); a link-local address would fail its peer's allowed IPs.
        let tunnelFound = usable(addresses, on: tunnel.index, global: true) ?? usable(addresses, on: lan.index, global: true)
        let (lanSource, lanLine) = choose(wanted.sourceLAN, found: lanFound, key: "icmp_source_lan", on: lan.name, held: addresses)
        let (tunnelSource, tunnelLine) = choose(wanted.sourceTunnel, found: tunnelFound, key: "icmp_source_tunnel",
                                                on: "\(tunnel.name) or \(lan.name)", held: addresses)
        let milliseconds = wanted.rateLimit.components.seconds * 1000 + wanted.rateLimit.components.attoseconds / 1_000_000_000_000_000
        let settings = ICMPErrorSettings(lanSource: lanSource, tunnelSource: tunnelSource, tunnelMTU: tunnel.mtu, lanMTU: lan.mtu,
                                         intervalMilliseconds: UInt32(clamping: milliseconds))
        return (settings, lanLine, tunnelLine)
    }

    /// For `wgkeeper check`: a line per side that gets no errors because neither the
    /// configuration nor the interfaces (as they are now) name a source. Interfaces not
    /// there yet (the daemon creates the tunnel) count as having no address. On the gateway
    /// itself (its LAN is there), also a configured source that no interface holds.
    public static func missing(_ wanted: DatapathICMP, lan: String, tunnel: String, links: [Link], addresses: [Address]) -> [String] {
        let lanLink = links.first { $0.name == lan } ?? Link(index: -1, name: lan)
        let tunnelLink = links.first { $0.name == tunnel } ?? Link(index: -2, name: tunnel)
        let (found, lanLine, tunnelLine) = settings(wanted, lan: lanLink, tunnel: tunnelLink, addresses: addresses)
        let onGateway = lanLink.index >= 0
        return (found.lanSource == nil || onGateway && lanLine.contains(notHeld) ? ["ICMPv6 errors to the LAN: \(lanLine)"] : [])
            + (found.tunnelSource == nil || onGateway && tunnelLine.contains(notHeld) ? ["ICMPv6 errors to the clients: \(tunnelLine)"] : [])
    }

    /// Said of a configured source that no interface of the host holds (status, the log, check).
    public static let notHeld = "not an address of this host"

    private static func choose(_ configured: IPAddress?, found: IPv6Address?, key: String, on place: String,
                               held addresses: [Address]) -> (IPv6Address?, String) {
        if case .v6(let address) = configured {
            // Still used: the address may be added later. But an error from an address the host does
            // not hold points the receiver (and its replies, a traceroute's next probe) elsewhere.
            guard addresses.contains(where: { $0.prefix.address == configured }) else {
                return (address, "from \(address) (\(key)), which is \(notHeld): add it to an interface, or change gateway.\(key)")
            }
            return (address, "from \(address) (\(key))")
        }
        if let found { return (found, "from \(found) (found on \(place))") }
        return (nil, "none sent: no usable address on \(place); set gateway.\(key)")
    }

    /// The first (lowest) usable address of that scope on the interface: not tentative, not
    /// failed duplicate detection, not deprecated (IFA_F_TENTATIVE, IFA_F_DADFAILED, IFA_F_DEPRECATED).
    private static func usable(_ addresses: [Address], on index: Int32, global: Bool) -> IPv6Address? {
        addresses.compactMap { address -> IPv6Address? in
            guard address.interfaceIndex == index, address.flags & (0x40 | 0x08 | 0x20) == 0,
                  case .v6(let ip) = address.prefix.address else { return nil }
            // RT_SCOPE_UNIVERSE or RT_SCOPE_LINK; never ::1 (RT_SCOPE_HOST).
            return address.scope == (global ? 0 : 253) ? ip : nil
        }.min()
    }
}
