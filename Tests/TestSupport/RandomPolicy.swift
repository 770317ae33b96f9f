import Netlink
import Reconciler

/// Random policies and packets over a small address space, so that rules overlap, nest and
/// match often: the material of the tests comparing the compiled form (and the datapath) with
/// the reference evaluation.
public struct RandomPolicy {
    /// LAN addresses live in 2001:db8:1::/48, clients in 2001:db8:c::/48.
    public static let lanBase = IPv6Address(high: 0x2001_0db8_0001_0000, low: 0)
    public static let clientBase = IPv6Address(high: 0x2001_0db8_000c_0000, low: 0)

    public var peers: [DesiredPeer]
    public var policy: DesiredPolicy
    public var clients: PolicyClients

    /// Peer `p<i>` holds `2001:db8:c::<i+1>/128`, every fourth also `2001:db8:c:<i+1>::/64`.
    public static func peers(_ count: Int) -> [DesiredPeer] {
        (0..<count).map { i in
            var allowed = [IPPrefix(address: .v6(IPv6Address(high: clientBase.high, low: UInt64(i + 1))), length: 128)]
            if i % 4 == 0 { allowed.append(IPPrefix(address: .v6(IPv6Address(high: clientBase.high | UInt64(i + 1), low: 0)), length: 64)) }
            return DesiredPeer(name: "p\(i)", publicKey: WireGuardKey(bytes: [UInt8](repeating: UInt8(i % 250 + 1), count: 32))!, allowedIPs: allowed)
        }
    }

    public init(peerCount: Int = 8, ruleCount: Int, using rng: inout SeededGenerator) {
        peers = Self.peers(peerCount)
        clients = PolicyClients(peers: peers)
        var rules: [PolicyRule] = []
        for _ in 0..<ruleCount {
            let source: PolicyRule.Source
            if Int.random(in: 0..<4, using: &rng) == 0 {
                source = .any
            } else {
                let names = Set((0..<Int.random(in: 1...3, using: &rng)).map { _ in "p\(Int.random(in: 0..<peerCount, using: &rng))" })
                source = .peers(names.sorted())
            }
            let length = [48, 56, 64, 64, 120, 126, 128, 128].randomElement(using: &rng)!
            let destination = IPPrefix(address: .v6(Self.lanAddress(using: &rng)), length: UInt8(length)).canonical
            let proto: PolicyProtocol? = [nil, .tcp, .tcp, .udp, .icmpv6].randomElement(using: &rng)!
            var ports: [PortRange] = []
            if let proto, proto.hasPorts, Bool.random(using: &rng) {
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    let first = UInt16.random(in: 1...40, using: &rng)
                    ports.append(PortRange(first, first + UInt16.random(in: 0...5, using: &rng)))
                }
            }
            rules.append(PolicyRule(source: source, destination: destination, proto: proto, ports: ports, label: "r"))
        }
        policy = DesiredPolicy(clientToLAN: .deny, lanToClient: [.deny, .replies, .replies].randomElement(using: &rng)!, rules: rules)
    }

    /// Few distinct values per field: prefixes of every length the rules use collide often.
    /// Hosts are ::10 to ::17 of each subnet (never the subnet-router anycast or a gateway's ::1).
    public static func lanAddress(using rng: inout SeededGenerator) -> IPv6Address {
        let subnet = UInt64.random(in: 0...3, using: &rng) << 8 | UInt64.random(in: 0...1, using: &rng)
        let host = UInt64(0x10) + UInt64.random(in: 0...7, using: &rng)
        return IPv6Address(high: lanBase.high | subnet, low: host)
    }

    /// Every address `lanAddress` can return.
    public static var allLANAddresses: [IPv6Address] {
        (0...3).flatMap { a in (0...1).flatMap { b in (0...7).map { h in
            IPv6Address(high: lanBase.high | UInt64(a) << 8 | UInt64(b), low: 0x10 + UInt64(h))
        } } }
    }

    public func clientAddress(using rng: inout SeededGenerator) -> IPv6Address {
        let i = Int.random(in: 0...peers.count, using: &rng)  // peers.count: an address of no peer
        if i < peers.count, peers[i].allowedIPs.count > 1, Bool.random(using: &rng) {
            var address = peers[i].allowedIPs[1].address
            if case .v6(let v6) = address { address = .v6(IPv6Address(high: v6.high, low: UInt64.random(in: 1...9, using: &rng))) }
            if case .v6(let v6) = address { return v6 }
        }
        return IPv6Address(high: Self.clientBase.high, low: UInt64(i + 1))
    }

    public func packet(using rng: inout SeededGenerator) -> PolicyPacket {
        let direction: PolicyPacket.Direction = Bool.random(using: &rng) ? .clientToLAN : .lanToClient
        let client = clientAddress(using: &rng), lan = Self.lanAddress(using: &rng)
        let proto: UInt8 = [6, 6, 17, 17, 58, 58, 59].randomElement(using: &rng)!
        var packet = PolicyPacket(direction: direction, source: direction == .clientToLAN ? client : lan,
                                  destination: direction == .clientToLAN ? lan : client, proto: proto)
        if proto == 6 || proto == 17 {
            packet.sourcePort = UInt16.random(in: 0...45, using: &rng)
            packet.destinationPort = UInt16.random(in: 0...45, using: &rng)
        }
        if proto == 6 { packet.tcpFlags = [PolicyPacket.syn, PolicyPacket.syn | PolicyPacket.ack, PolicyPacket.ack].randomElement(using: &rng)! }
        if proto == 58 {
            packet.icmpType = [1, 3, 128, 129].randomElement(using: &rng)!
            packet.echoIdentifier = UInt16.random(in: 0...2, using: &rng)
            // Now and then an error that quotes another host's packet, or none.
            if packet.icmpType < 128 {
                switch UInt8.random(in: 0...7, using: &rng) {
                case 0, 1: packet.quotedSource = Bool.random(using: &rng) ? clientAddress(using: &rng) : Self.lanAddress(using: &rng)
                case 2: packet.hasQuote = false  // too short to hold one
                default: break
                }
            }
        }
        return packet
    }
}
