import CNetlink
import FoundationEssentials

/// An nftables chain as `NFT_MSG_GETCHAIN` reports it. wgkeeper only reads chains, to tell an
/// operator that FORWARD rules do not see the traffic the TC programs redirect (it never enters
/// ip6_forward, where the forward hook runs). iptables-nft keeps its chains here too.
public struct NetfilterChain: Hashable, Sendable, CustomStringConvertible {
    /// NFPROTO_*: 1 inet, 2 ip, 10 ip6, 7 bridge, 5 netdev, 3 arp.
    public var family: UInt8
    public var table: String
    public var name: String
    /// The NF_INET_* hook of a base chain; nil for a chain that is only jumped to.
    public var hook: UInt32?
    /// A base chain's verdict for what no rule decides: NF_ACCEPT (1) or NF_DROP (0).
    public var policy: UInt32?

    public init(family: UInt8, table: String, name: String, hook: UInt32? = nil, policy: UInt32? = nil) {
        (self.family, self.table, self.name, self.hook, self.policy) = (family, table, name, hook, policy)
    }

    /// A base chain at the forward hook that IPv6 packets traverse (family ip6 or inet).
    public var filtersForwardedIPv6: Bool {
        hook == NF_INET_FORWARD.rawValue && (family == UInt8(NFPROTO_IPV6) || family == UInt8(NFPROTO_INET))
    }

    public var familyName: String {
        switch Int32(family) {
        case Int32(NFPROTO_INET): "inet"
        case Int32(NFPROTO_IPV4): "ip"
        case Int32(NFPROTO_IPV6): "ip6"
        case Int32(NFPROTO_BRIDGE): "bridge"
        case Int32(NFPROTO_NETDEV): "netdev"
        case Int32(NFPROTO_ARP): "arp"
        default: "family \(family)"
        }
    }

    /// As nft(8) names it: `inet filter forward`, with a dropping policy said.
    public var description: String { "\(familyName) \(table) \(name)" + (policy == UInt32(NF_DROP) ? " (policy drop)" : "") }

    static let messageType = UInt16(NFNL_SUBSYS_NFTABLES) << 8

    public static func decode(_ message: Message) throws -> NetfilterChain? {
        guard message.type == messageType | UInt16(NFT_MSG_NEWCHAIN.rawValue) else { return nil }
        let header = try message.familyHeader(nfgenmsg.self)
        let attributes = try message.attributes(after: nfgenmsg.self)
        guard let table = attributes.string(UInt16(NFTA_CHAIN_TABLE.rawValue)), let name = attributes.string(UInt16(NFTA_CHAIN_NAME.rawValue)) else {
            return nil
        }
        // nf_tables writes these in network order (nla_put_be32).
        let hook = try attributes.nested(UInt16(NFTA_CHAIN_HOOK.rawValue)).flatMap { try $0.u32(UInt16(NFTA_HOOK_HOOKNUM.rawValue)) }
        let policy = try attributes.u32(UInt16(NFTA_CHAIN_POLICY.rawValue))
        return NetfilterChain(family: header.nfgen_family, table: table, name: name,
                              hook: hook.map { UInt32(bigEndian: $0) }, policy: policy.map { UInt32(bigEndian: $0) })
    }

    /// Every chain of every family in the namespace.
    public static func dumpRequest() -> Request { dump(NFT_MSG_GETCHAIN.rawValue, "dump nftables chains") }

    /// The rules of this chain alone (nf_tables filters a rule dump by table and chain, and then
    /// walks that chain only), decoded by `ruleOwner`.
    public var ruleDumpRequest: Request {
        NetfilterChain.dump(NFT_MSG_GETRULE.rawValue, "dump the rules of nftables chain \(self)", family: family) { writer in
            writer.put(UInt16(NFTA_RULE_TABLE.rawValue), string: table)
            writer.put(UInt16(NFTA_RULE_CHAIN.rawValue), string: name)
        }
    }

    private static func dump(_ command: UInt32, _ summary: String, family: UInt8 = UInt8(NFPROTO_UNSPEC),
                             attributes: @escaping @Sendable (inout MessageWriter) -> Void = { _ in }) -> Request {
        Request(type: messageType | UInt16(command), flags: Request.dump, summary: summary) { writer in
            var header = nfgenmsg()
            header.nfgen_family = family
            header.version = UInt8(NFNETLINK_V0)
            writer.put(header: header)
            attributes(&writer)
        }
    }

    /// The chain a rule of a rule dump sits in, as a chain without hook or policy (its identity).
    public static func ruleOwner(_ message: Message) throws -> NetfilterChain? {
        guard message.type == messageType | UInt16(NFT_MSG_NEWRULE.rawValue) else { return nil }
        let header = try message.familyHeader(nfgenmsg.self)
        let attributes = try message.attributes(after: nfgenmsg.self)
        guard let table = attributes.string(UInt16(NFTA_RULE_TABLE.rawValue)), let chain = attributes.string(UInt16(NFTA_RULE_CHAIN.rawValue)) else {
            return nil
        }
        return NetfilterChain(family: header.nfgen_family, table: table, name: chain)
    }

    /// Family, table and name: what a rule names its chain by.
    public var identity: NetfilterChain { NetfilterChain(family: family, table: table, name: name) }
}

/// Where the host's netfilter would filter forwarded IPv6 traffic, and so where an operator may
/// believe VPN traffic is filtered: nftables base chains at the forward hook (ip6 or inet), and
/// the legacy ip6tables `filter` table (its FORWARD chain). Read in the caller's namespace.
public enum NetfilterForwarding {
    /// Descriptions such as `inet filter forward (policy drop)` or `ip6tables filter FORWARD`.
    /// A base chain that holds no rule and accepts (Debian's stock `/etc/nftables.conf` has one)
    /// filters nothing, and is left out. Nothing is loaded to find out: the chains are asked for only when nf_tables is there
    /// (built in, or listed in /proc/modules), since a NETLINK_NETFILTER request would otherwise
    /// make the kernel load it (nfnetlink_rcv_msg's request_module), and a module that is not
    /// loaded holds no chain.
    public static func chains(modules: String = "/proc/modules", moduleRoot: String = "/sys/module",
                              procNet: String = "/proc/net") throws -> [String] {
        var found: [String] = []
        let loaded: Bool
        if let text = try? String(contentsOfFile: modules, encoding: .utf8) {
            loaded = text.split(separator: "\n").contains { $0.hasPrefix("nf_tables ") } || FileManager.default.fileExists(atPath: "\(moduleRoot)/nf_tables")
        } else {
            loaded = true  // no module support: nf_tables is built in or absent, and nothing can be loaded
        }
        if loaded {
            let socket = try NetlinkSocket(.netfilter, receiveBufferBytes: 1 << 20)
            let forward = try socket.dump(NetfilterChain.dumpRequest(), decode: NetfilterChain.decode).filter(\.filtersForwardedIPv6)
            // Whether a chain holds a rule is its dump's first reply: a chain of 200 000 rules
            // costs one datagram, not the whole ruleset (the socket, and the rest, go after it).
            found += try forward.filter { try $0.policy == UInt32(NF_DROP) || holdsRule($0) }.map(\.description).sorted()
        }
        if let names = try? String(contentsOfFile: "\(procNet)/ip6_tables_names", encoding: .utf8),
           names.split(separator: "\n").contains("filter") {
            found.append("ip6tables filter FORWARD")
        }
        return found
    }

    /// Whether `chain` holds a rule, from the first reply of its own rule dump on a socket of its
    /// own, closed before the dump is read further.
    static func holdsRule(_ chain: NetfilterChain) throws -> Bool {
        let socket = try NetlinkSocket(.netfilter)
        return try socket.firstReply(chain.ruleDumpRequest, decode: NetfilterChain.ruleOwner) != nil
    }
}
