import Netlink

/// The access policy of the gateway path (`policy` in the configuration): which clients may
/// reach which LAN destinations, and what the LAN may send to the clients. Enforced by the
/// datapath's TC programs, which netfilter's FORWARD chain never sees.
public struct DesiredPolicy: Hashable, Sendable {
    /// What a client's packet to the LAN that no rule allows meets.
    public enum ClientToLAN: String, Hashable, Sendable, CaseIterable { case allow, deny }
    /// What a LAN packet to a client meets. `replies` lets through what the same packet reversed,
    /// client to LAN, would be allowed, except a TCP opening and UDP or echo outside a flow a
    /// client opened (`evaluate(_:peerOf:flows:)`).
    public enum LANToClient: String, Hashable, Sendable, CaseIterable { case allow, deny, replies }

    public var clientToLAN: ClientToLAN
    public var lanToClient: LANToClient
    public var rules: [PolicyRule]

    public init(clientToLAN: ClientToLAN = .allow, lanToClient: LANToClient = .allow, rules: [PolicyRule] = []) {
        self.clientToLAN = clientToLAN
        self.lanToClient = lanToClient
        self.rules = rules
    }

    /// Today's behaviour: everything allowed both ways.
    public static let allowAll = DesiredPolicy()
}

/// IP protocols a rule may name: the upper-layer header's, behind any extension headers (a
/// fragment other than the first has none: it meets what its datagram's first fragment met, else
/// only rules without a protocol match it).
public enum PolicyProtocol: UInt8, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case tcp = 6, udp = 17, icmpv6 = 58

    public init?(name: String) {
        guard let value = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = value
    }

    public var description: String {
        switch self {
        case .tcp: "tcp"
        case .udp: "udp"
        case .icmpv6: "icmpv6"
        }
    }
    /// TCP and UDP carry ports.
    public var hasPorts: Bool { self != .icmpv6 }
}

public struct PortRange: Hashable, Sendable, CustomStringConvertible {
    public var first: UInt16
    public var last: UInt16

    public init(_ first: UInt16, _ last: UInt16) {
        precondition(first <= last)
        self.first = first
        self.last = last
    }

    public static let all = PortRange(0, .max)
    public func contains(_ port: UInt16) -> Bool { first <= port && port <= last }
    public var description: String { first == last ? "\(first)" : "\(first)-\(last)" }
}

/// `from (peers | any) to destination [protocol [ports]] allow`, groups already expanded.
public struct PolicyRule: Hashable, Sendable, CustomStringConvertible {
    public enum Source: Hashable, Sendable {
        case any
        /// Peer names (of the gateway's tunnel), sorted, no duplicates.
        case peers([String])
    }

    public var source: Source
    public var destination: IPPrefix
    /// nil: every protocol (and no ports).
    public var proto: PolicyProtocol?
    /// Empty: every port (or the protocol has none).
    public var ports: [PortRange]
    /// As written (`from: admins`), for plan and status.
    public var label: String

    public init(source: Source, destination: IPPrefix, proto: PolicyProtocol? = nil, ports: [PortRange] = [], label: String = "") {
        self.source = source
        self.destination = destination.canonical
        self.proto = proto
        self.ports = ports
        self.label = label
    }

    public func applies(to peer: String?) -> Bool {
        switch source {
        case .any: true
        case .peers(let names): peer.map { names.contains($0) } ?? false
        }
    }

    /// Protocol and port of the LAN side of a flow.
    public func matches(proto packetProto: UInt8, port: UInt16) -> Bool {
        guard let proto else { return true }
        guard proto.rawValue == packetProto else { return false }
        return ports.isEmpty || ports.contains { $0.contains(port) }
    }

    public var description: String {
        var text = "from \(label.isEmpty ? "any" : label) to \(destination.isHost ? destination.address.description : destination.description)"
        if let proto { text += " \(proto)" }
        if !ports.isEmpty { text += " port \(ports.map(\.description).joined(separator: ","))" }
        return text + " allow"
    }
}

/// One packet as the policy sees it, in the direction it travels.
public struct PolicyPacket: Hashable, Sendable, CustomStringConvertible {
    public enum Direction: Hashable, Sendable { case clientToLAN, lanToClient }

    public var direction: Direction
    public var source: IPv6Address
    public var destination: IPv6Address
    /// The upper-layer protocol, behind any extension headers (the programs find it behind up
    /// to 6; IPPROTO_FRAGMENT, 44, for a fragment other than the first). The programs deny a
    /// LAN packet whose chain they cannot follow under `replies`, before this applies.
    public var proto: UInt8
    /// TCP/UDP ports (0 for other protocols).
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    /// ICMPv6 type (0 for other protocols).
    public var icmpType: UInt8
    /// TCP flags (byte 13 of the TCP header); ACK unless said otherwise.
    public var tcpFlags: UInt8
    /// The identifier of an ICMPv6 echo request or reply.
    public var echoIdentifier: UInt16
    /// A fragment header's identification, when the packet has one: a first fragment with more
    /// to come (`isFirstFragment`) or, with `proto` 44, a later one.
    public var fragmentID: UInt32? = nil
    public var isFirstFragment = false
    /// Where a fragment's data lies in its datagram's fragmentable part, in bytes: a later
    /// fragment that begins below the end of its first fragment's overlaps it (RFC 5722).
    public var fragmentOffset = 0
    public var fragmentLength = 0
    /// The source of the packet an ICMPv6 error quotes; nil for the error's destination.
    public var quotedSource: IPv6Address? = nil
    /// Whether an ICMPv6 error holds a quote long enough to show its source: one that does not
    /// is an ordinary ICMPv6 message to the rules.
    public var hasQuote = true

    public static let syn: UInt8 = 0x02, ack: UInt8 = 0x10

    public init(direction: Direction, source: IPv6Address, destination: IPv6Address, proto: UInt8,
                sourcePort: UInt16 = 0, destinationPort: UInt16 = 0, icmpType: UInt8 = 0, tcpFlags: UInt8 = ack,
                echoIdentifier: UInt16 = 0) {
        self.direction = direction
        self.source = source
        self.destination = destination
        self.proto = proto
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.icmpType = icmpType
        self.tcpFlags = tcpFlags
        self.echoIdentifier = echoIdentifier
    }

    public var client: IPv6Address { direction == .clientToLAN ? source : destination }
    public var lanHost: IPv6Address { direction == .clientToLAN ? destination : source }
    /// The port on the LAN host's side of the flow.
    public var lanPort: UInt16 {
        guard proto == PolicyProtocol.tcp.rawValue || proto == PolicyProtocol.udp.rawValue else { return 0 }
        return direction == .clientToLAN ? destinationPort : sourcePort
    }
    /// An ICMPv6 error message (types below 128).
    public var isICMPError: Bool { proto == PolicyProtocol.icmpv6.rawValue && icmpType < 128 }
    /// An error about a packet its destination sent (the quote's source is the destination):
    /// any rule for the pair allows it. One that quotes another's packet meets the rules as an
    /// ordinary ICMPv6 message.
    public var isErrorAboutOwnPacket: Bool { isICMPError && hasQuote && (quotedSource ?? destination) == destination }

    /// A TCP segment that opens a connection: SYN without ACK.
    public var isTCPOpening: Bool { proto == PolicyProtocol.tcp.rawValue && tcpFlags & (Self.syn | Self.ack) == Self.syn }

    /// The flow `lan_to_client: replies` remembers for this packet: UDP, and ICMPv6 echo (a
    /// request from a client, a reply from the LAN); nil for anything else.
    public var flow: PolicyFlows.Flow? {
        if proto == PolicyProtocol.udp.rawValue {
            let clientPort = direction == .clientToLAN ? sourcePort : destinationPort
            return PolicyFlows.Flow(client: client, lanHost: lanHost, proto: proto, clientPort: clientPort, lanPort: lanPort)
        }
        if proto == PolicyProtocol.icmpv6.rawValue, icmpType == (direction == .clientToLAN ? 128 : 129) {
            return PolicyFlows.Flow(client: client, lanHost: lanHost, proto: proto, clientPort: echoIdentifier, lanPort: 0)
        }
        return nil
    }

    public var description: String {
        var text = "\(direction == .clientToLAN ? "client→LAN" : "LAN→client") [\(source)]:\(sourcePort) → [\(destination)]:\(destinationPort) proto \(proto)"
        if proto == PolicyProtocol.tcp.rawValue { text += " flags 0x\(String(tcpFlags, radix: 16))" }
        if proto == PolicyProtocol.icmpv6.rawValue { text += " type \(icmpType) id \(echoIdentifier)" }
        return text
    }
}

/// What `lan_to_client: replies` remembers (bpf/policy.h `policy_flows`): the UDP flows and
/// ICMPv6 echo requests clients sent that were allowed. Time is not modelled: the datapath
/// forgets a flow after 120 s without a packet, or when its LRU map of 65 536 needs the room.
public struct PolicyFlows: Hashable, Sendable {
    public struct Flow: Hashable, Sendable {
        public var client: IPv6Address
        public var lanHost: IPv6Address
        public var proto: UInt8
        /// UDP port, or the echo identifier.
        public var clientPort: UInt16
        /// UDP port; 0 for echo.
        public var lanPort: UInt16
    }

    public var flows: Set<Flow> = []

    /// A datagram's fragments: its source, destination and identification.
    public struct Fragment: Hashable, Sendable {
        public var source: IPv6Address
        public var destination: IPv6Address
        public var id: UInt32
    }

    /// What the first fragment of each datagram met and where its data ends, for its later
    /// fragments (bpf/policy.h `policy_fragments`; its 60 s and LRU room are not modelled).
    public var fragments: [Fragment: FirstFragment] = [:]

    public struct FirstFragment: Hashable, Sendable {
        public var verdict: PolicyVerdict
        public var end: Int
    }

    public init() {}
}

/// What the policy does with a packet, and which counter it adds to.
public enum PolicyVerdict: Hashable, Sendable, CustomStringConvertible {
    /// No rule consulted: the direction's default is allow.
    case allowedByDefault
    /// Allowed by the rule at this index of `DesiredPolicy.rules`.
    case allowed(rule: Int)
    /// Denied by the direction's default (no rule allows it).
    case denied

    public var isAllowed: Bool { self != .denied }

    public var description: String {
        switch self {
        case .allowedByDefault: "allowed (default)"
        case .allowed(let rule): "allowed (rule \(rule))"
        case .denied: "denied"
        }
    }
}

extension DesiredPolicy {
    /// The reference evaluation, straight from the rules: the datapath must agree with it on
    /// every packet (DatapathKernelTests compares them). `peerOf` names the peer whose allowed
    /// IPs hold a client address (longest match), nil when none does.
    ///
    /// - client to LAN: `allow` lets everything through; `deny` only what a rule allows.
    /// - LAN to client: `allow` everything, `deny` nothing, `replies` what a rule allows for the
    ///   packet reversed (the LAN host's source port as the rule's port).
    /// Where the rules decide, an ICMPv6 error (either way) only needs some rule of the client
    /// for the LAN host, whatever its protocol and ports: it quotes the other side's packet.
    /// The first rule (lowest index) that allows the packet is the one counted.
    /// This is the stateless part: `evaluate(_:peerOf:flows:)` adds what `replies` remembers.
    public func evaluate(_ packet: PolicyPacket, peerOf: (IPv6Address) -> String?) -> PolicyVerdict {
        if let verdict = defaultVerdict(packet.direction) { return verdict }
        let peer = peerOf(packet.client)
        let anyProtocol = packet.isErrorAboutOwnPacket
        for (index, rule) in rules.enumerated() where rule.applies(to: peer) && rule.destination.contains(.v6(packet.lanHost)) {
            if anyProtocol || rule.matches(proto: packet.proto, port: packet.lanPort) { return .allowed(rule: index) }
        }
        return .denied
    }
}

extension DesiredPolicy {
    /// What the defaults decide for a packet going `direction` without a rule being consulted
    /// (nil: the rules decide), for the reference and the compiled form alike.
    public func defaultVerdict(_ direction: PolicyPacket.Direction) -> PolicyVerdict? {
        switch direction {
        case .clientToLAN:
            if clientToLAN == .allow { return .allowedByDefault }
        case .lanToClient:
            switch lanToClient {
            case .allow: return .allowedByDefault
            case .deny: return .denied
            case .replies: if clientToLAN == .allow { return .allowedByDefault }
            }
        }
        return nil
    }

    /// The reference with `lan_to_client: replies`' state, for packets in the order the
    /// datapath sees them: a LAN packet that opens something is denied before any rule is
    /// consulted (TCP SYN without ACK; UDP or an echo reply outside a flow a client opened; an
    /// echo request or other informational ICMPv6 message), and an allowed client UDP packet
    /// or echo request opens its flow. ICMPv6 errors and other protocols carry no state.
    ///
    /// A later fragment of a datagram whose first fragment was allowed meets what the first met
    /// (the programs find it in `policy_fragments`), unless a default decides before any header
    /// is read or it overlaps the first fragment's data (then it meets the rules alone).
    public func evaluate(_ packet: PolicyPacket, peerOf: (IPv6Address) -> String?, flows: inout PolicyFlows) -> PolicyVerdict {
        let fragment = packet.fragmentID.map { PolicyFlows.Fragment(source: packet.source, destination: packet.destination, id: $0) }
        let headersRead = packet.direction == .clientToLAN ? clientToLAN == .deny || lanToClient == .replies : lanToClient == .replies
        if headersRead, packet.proto == 44, let fragment, let first = flows.fragments[fragment], packet.fragmentOffset >= first.end {
            return first.verdict
        }
        let verdict = evaluateReplies(packet, peerOf: peerOf, flows: &flows)
        if verdict.isAllowed, packet.isFirstFragment, packet.proto != 44, let fragment {
            flows.fragments[fragment] = PolicyFlows.FirstFragment(verdict: verdict, end: packet.fragmentOffset + packet.fragmentLength)
        }
        return verdict
    }

    private func evaluateReplies(_ packet: PolicyPacket, peerOf: (IPv6Address) -> String?, flows: inout PolicyFlows) -> PolicyVerdict {
        guard lanToClient == .replies else { return evaluate(packet, peerOf: peerOf) }
        switch packet.direction {
        case .clientToLAN:
            let verdict = evaluate(packet, peerOf: peerOf)
            if verdict.isAllowed, let flow = packet.flow { flows.flows.insert(flow) }
            return verdict
        case .lanToClient:
            if packet.isTCPOpening { return .denied }
            if packet.proto == PolicyProtocol.udp.rawValue || (packet.proto == PolicyProtocol.icmpv6.rawValue && !packet.isICMPError) {
                guard let flow = packet.flow, flows.flows.contains(flow) else { return .denied }
            }
            return evaluate(packet, peerOf: peerOf)
        }
    }
}
