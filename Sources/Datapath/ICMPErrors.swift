import Netlink

/// How the programs answer like a router (RFC 4443): ICMPv6 Time Exceeded when a packet's
/// hop limit runs out at the gateway, Packet Too Big when it exceeds the egress device's MTU.
/// Each error goes back out of the device the packet came in on, from that side's source.
public struct ICMPErrorSettings: Equatable, Sendable, CustomStringConvertible {
    /// The source of errors sent to the LAN; nil: none are sent (the packet is dropped, or
    /// for one too big, sent on and fragmented by WireGuard).
    public var lanSource: IPv6Address?
    /// The source of errors sent to the VPN clients through the tunnel.
    public var tunnelSource: IPv6Address?
    /// The tunnel's MTU (Packet Too Big toward the LAN); 0: no check.
    public var tunnelMTU: UInt32
    /// The LAN's MTU (Packet Too Big toward the clients); 0: no check.
    public var lanMTU: UInt32
    /// Per-destination token bucket, as net.ipv6.icmp.ratelimit: one error per interval,
    /// bursts of 6, within 1000/s over all destinations (icmp_msgs_per_sec, bursts of 50);
    /// 0 limits nothing. Packet Too Big is exempt (as the default ratemask does).
    public var intervalMilliseconds: UInt32

    /// The kernel's default net.ipv6.icmp.ratelimit.
    public static let defaultIntervalMilliseconds: UInt32 = 1000

    public init(lanSource: IPv6Address? = nil, tunnelSource: IPv6Address? = nil, tunnelMTU: UInt32 = 0, lanMTU: UInt32 = 0,
                intervalMilliseconds: UInt32 = defaultIntervalMilliseconds) {
        self.lanSource = lanSource
        self.tunnelSource = tunnelSource
        self.tunnelMTU = tunnelMTU
        self.lanMTU = lanMTU
        self.intervalMilliseconds = intervalMilliseconds
    }

    public var description: String {
        "ICMPv6 errors to the LAN from \(lanSource?.description ?? "nowhere"), to the tunnel from \(tunnelSource?.description ?? "nowhere")"
            + "; tunnel MTU \(tunnelMTU), LAN MTU \(lanMTU); one per \(intervalMilliseconds) ms per destination"
    }
}

/// `struct datapath_config` of bpf/datapath.bpf.c, in host byte order but for the addresses.
struct ConfigValue: Equatable {
    static let size = 6 * 4 + 2 * 16 + 8

    var tunnelIndex: UInt32 = 0
    var lanIndex: UInt32 = 0
    var icmp = ICMPErrorSettings(intervalMilliseconds: 0)
    var neighbourDiscovery = NeighbourDiscoverySettings()

    init(_ bytes: [UInt8]) {
        func word(_ index: Int) -> UInt32 {
            bytes[(index * 4)..<(index * 4 + 4)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        }
        func address(_ offset: Int) -> IPv6Address? {
            let value = IPv6Address(bytes: bytes[offset..<(offset + 16)])
            return value == IPv6Address(high: 0, low: 0) ? nil : value
        }
        tunnelIndex = word(0)
        lanIndex = word(1)
        icmp = ICMPErrorSettings(lanSource: address(24), tunnelSource: address(40), tunnelMTU: word(2), lanMTU: word(3),
                                 intervalMilliseconds: word(4))
        neighbourDiscovery = NeighbourDiscoverySettings(flags: word(5), lanMAC: Array(bytes[56..<62]))
    }

    var bytes: [UInt8] {
        let words = [tunnelIndex, lanIndex, icmp.tunnelMTU, icmp.lanMTU, icmp.intervalMilliseconds, neighbourDiscovery.flags]
        let unspecified = [UInt8](repeating: 0, count: 16)
        return words.flatMap { value in withUnsafeBytes(of: value) { Array($0) } }
            + (icmp.lanSource?.bytes ?? unspecified) + (icmp.tunnelSource?.bytes ?? unspecified)
            + neighbourDiscovery.macBytes + [0, 0]
    }
}

extension Datapath {
    /// Writes how the programs answer with ICMPv6 errors; true when it changed.
    @discardableResult
    public func configure(_ settings: ICMPErrorSettings) throws -> Bool {
        var config = try readConfigValue()
        if config.icmp == settings { return false }
        config.icmp = settings
        try writeConfigValue(config)
        return true
    }

    /// What the programs use now.
    public func icmpErrorSettings() throws -> ICMPErrorSettings { try readConfigValue().icmp }
}
