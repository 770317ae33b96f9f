import Foundation
import Glibc
import Netlink

/// SplitMix64: a small seeded generator, so a seed replays the same sequence everywhere.
public struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The small universe the model draws from: interface names, address plans, a pool of peers.
/// Every prefix a peer can hold is its own (derived from its index), so any subset of peers
/// with any subset of their prefixes is a valid configuration (README, configuration reference).
public struct ModelUniverse: Sendable {
    public var tunnel = "wg0"
    /// LAN candidates; one has a dot, as a VLAN's name does.
    public var lans = ["lan0", "lan0.100", "lan1"]
    /// Never a LAN; explicit routes and proxies may name it.
    public var spare = "ext0"
    /// Peer ends of the veths (or the VLAN's parent): never named by any configuration.
    public var unmanaged = ["wg0p", "lan0p", "lanvp", "lan1p", "ext0p"]
    public static let lanPrefixes = ["2001:db8:1::/64", "2001:db8:1:1::/64"]
    public static let peerPool = 40

    public init() {}

    /// Every interface a configuration may name.
    public var configurable: [String] { [tunnel] + lans + [spare] }
    /// Every interface of the topology whose sysctls and objects are compared.
    public var all: [String] { configurable + unmanaged }

    /// `text` as `ip` prints it (RFC 5952: 2001:db8:f:0::/64 is 2001:db8:f::/64).
    public static func canonical(_ text: String) -> String {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        var address = in6_addr()
        guard inet_pton(AF_INET6, parts[0], &address) == 1 else { return text }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        inet_ntop(AF_INET6, &address, &buffer, socklen_t(buffer.count))
        let printed = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return parts.count == 2 ? "\(printed)/\(parts[1])" : printed
    }

    /// The prefixes peer `i` may hold: a /128 in each LAN prefix, a /64 and a /48 outside both.
    public static func candidatePrefixes(peer i: Int) -> [String] {
        ["2001:db8:1::1:\(String(i, radix: 16))/128", "2001:db8:1:1::\(String(i + 1, radix: 16))/128",
         "2001:db8:2:\(String(i, radix: 16))::/64", "2001:db8:\(String(0x100 + i, radix: 16))::/48"].map(canonical)
    }

    /// Peer `i`'s public key: a real Curve25519 key derived from the index (stable across seeds).
    public static func publicKey(peer i: Int) -> WireGuardKey {
        var rng = SeededGenerator(seed: 0x5EED_0000 + UInt64(i))
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return PrivateKey(WireGuardKey(bytes: bytes)!).publicKey
    }
}

public struct ModelPeer: Hashable, Sendable {
    public var id: Int
    public var allowedIPs: [String]
}

public struct ModelGateway: Hashable, Sendable {
    public var lan: String
    public var lanPrefix: String
    public var proxyNDP: Bool
    public var redirect: Bool
    /// `ndp: datapath` (needs `redirect`); false is `ndp: kernel`, the default.
    public var ndpDatapath = false
}

extension ModelGateway {
    public var ndp: String { ndpDatapath ? "datapath" : "kernel" }
}

public struct ModelRoute: Hashable, Sendable {
    public var destination: String
    public var device: String
    public var gateway: String?
    public var table: Int?
    public var metric: Int?
}

public struct ModelProxy: Hashable, Sendable {
    public var address: String
    public var device: String
}

/// One configuration of the universe, rendered to YAML per daemon (paths differ per harness).
public struct ModelConfig: Hashable, Sendable {
    public var listenPort = 51820
    public var prunePeers = true
    public var peers: [ModelPeer] = []
    public var gateway: ModelGateway?
    public var routes: [ModelRoute] = []
    public var proxies: [ModelProxy] = []

    public init() {}

    public func yaml(statusSocket: String, pinRoot: String, keyFile: String, poll: String = "200ms") -> String {
        var lines = ["runtime:", "  status_socket: \(statusSocket)", "  bpf_pin_root: \(pinRoot)",
                     "  route_protocol: 77", "  wireguard_poll: \(poll)", "  proxy_poll: \(poll)", "  resync: 60s",
                     "wireguard:", "  wg0:", "    private_key_file: \(keyFile)", "    listen_port: \(listenPort)",
                     "    prune_peers: \(prunePeers)", "    peers:\(peers.isEmpty ? " []" : "")"]
        for peer in peers {
            lines += ["      - name: peer\(peer.id)", "        public_key: \"\(ModelUniverse.publicKey(peer: peer.id).base64)\"",
                      "        allowed_ips: [\(peer.allowedIPs.joined(separator: ", "))]"]
        }
        if let gateway {
            lines += ["gateway:", "  tunnel: wg0", "  lan: \(gateway.lan)", "  lan_prefix: \(gateway.lanPrefix)",
                      "  proxy_ndp: \(gateway.proxyNDP)", "  redirect: \(gateway.redirect)",
                      "  ndp: \(gateway.ndpDatapath ? "datapath" : "kernel")"]
        }
        if !routes.isEmpty {
            lines.append("routes:")
            for route in routes {
                lines += ["  - destination: \(route.destination)", "    device: \(route.device)"]
                if let gateway = route.gateway { lines.append("    gateway: \(gateway)") }
                if let table = route.table { lines.append("    table: \(table)") }
                if let metric = route.metric { lines.append("    metric: \(metric)") }
            }
        }
        if !proxies.isEmpty {
            lines.append("proxies:")
            for proxy in proxies { lines += ["  - address: \(proxy.address)", "    device: \(proxy.device)"] }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A one-line summary for failure reports.
    public var summary: String {
        var parts = ["port \(listenPort)", "prune \(prunePeers)"]
        if let g = gateway {
            parts.append("gateway lan=\(g.lan) prefix=\(g.lanPrefix) proxy_ndp=\(g.proxyNDP) redirect=\(g.redirect) ndp=\(g.ndp)")
        } else {
            parts.append("no gateway")
        }
        parts.append("peers [" + peers.map { "\($0.id):\($0.allowedIPs.joined(separator: ","))" }.joined(separator: " ") + "]")
        if !routes.isEmpty {
            parts.append("routes [" + routes.map {
                "\($0.destination) dev \($0.device)\($0.gateway.map { " via \($0)" } ?? "")\($0.table.map { " table \($0)" } ?? "")\($0.metric.map { " metric \($0)" } ?? "")"
            }.joined(separator: "; ") + "]")
        }
        if !proxies.isEmpty { parts.append("proxies [" + proxies.map { "\($0.address) dev \($0.device)" }.joined(separator: "; ") + "]") }
        return parts.joined(separator: ", ")
    }

    /// What changed from `old`, for reading a shrunk sequence: "+peer 3 [..]", "-route …", "lan lan0→lan1".
    public func delta(from old: ModelConfig) -> String {
        var parts: [String] = []
        if listenPort != old.listenPort { parts.append("listen_port \(old.listenPort)→\(listenPort)") }
        if prunePeers != old.prunePeers { parts.append("prune_peers \(old.prunePeers)→\(prunePeers)") }
        switch (old.gateway, gateway) {
        case (nil, nil): break
        case (nil, let g?): parts.append("+gateway lan=\(g.lan) prefix=\(g.lanPrefix) proxy_ndp=\(g.proxyNDP) redirect=\(g.redirect) ndp=\(g.ndp)")
        case (_?, nil): parts.append("-gateway")
        case let (a?, b?):
            if a.lan != b.lan { parts.append("lan \(a.lan)→\(b.lan)") }
            if a.lanPrefix != b.lanPrefix { parts.append("lan_prefix \(a.lanPrefix)→\(b.lanPrefix)") }
            if a.proxyNDP != b.proxyNDP { parts.append("proxy_ndp \(a.proxyNDP)→\(b.proxyNDP)") }
            if a.redirect != b.redirect { parts.append("redirect \(a.redirect)→\(b.redirect)") }
            if a.ndp != b.ndp { parts.append("ndp \(a.ndp)→\(b.ndp)") }
        }
        let oldPeers = Dictionary(uniqueKeysWithValues: old.peers.map { ($0.id, $0.allowedIPs) })
        let newPeers = Dictionary(uniqueKeysWithValues: peers.map { ($0.id, $0.allowedIPs) })
        for id in Set(oldPeers.keys).union(newPeers.keys).sorted() where oldPeers[id] != newPeers[id] {
            switch (oldPeers[id], newPeers[id]) {
            case (nil, let ips?): parts.append("+peer\(id) \(ips.joined(separator: ","))")
            case (_?, nil): parts.append("-peer\(id)")
            case let (_, ips?): parts.append("~peer\(id) \(ips.joined(separator: ","))")
            default: break
            }
        }
        func route(_ r: ModelRoute) -> String {
            "route \(r.destination) dev \(r.device)\(r.gateway.map { " via \($0)" } ?? "")\(r.table.map { " table \($0)" } ?? "")\(r.metric.map { " metric \($0)" } ?? "")"
        }
        for r in old.routes where !routes.contains(r) { parts.append("-" + route(r)) }
        for r in routes where !old.routes.contains(r) { parts.append("+" + route(r)) }
        for p in old.proxies where !proxies.contains(p) { parts.append("-proxy \(p.address) dev \(p.device)") }
        for p in proxies where !old.proxies.contains(p) { parts.append("+proxy \(p.address) dev \(p.device)") }
        return parts.isEmpty ? "(no change)" : parts.joined(separator: "; ")
    }

    // MARK: what the configuration claims (for choosing drift targets, not for the expectation)

    /// Routes this configuration wants, as `ip` arguments that identify one: dst, dev, table, metric.
    public var claimedRoutes: [(dst: String, dev: String, table: Int, metric: Int)] {
        var result: [(String, String, Int, Int)] = []
        if let g = gateway {
            result.append((g.lanPrefix, g.lan, 254, 1024))
            for peer in peers { for ip in peer.allowedIPs { result.append((ip, "wg0", 254, 1024)) } }
        }
        for r in routes { result.append((r.destination, r.device, r.table ?? 254, r.metric ?? 1024)) }
        return result
    }

    public var claimedProxies: [(address: String, dev: String)] {
        var result: [(String, String)] = []
        if let g = gateway, g.proxyNDP, !g.ndpDatapath {
            let inside = g.lanPrefix == ModelUniverse.lanPrefixes[0] ? "2001:db8:1::1:" : "2001:db8:1:1::"
            for peer in peers {
                for ip in peer.allowedIPs where ip.hasSuffix("/128") && ip.hasPrefix(inside) {
                    result.append((String(ip.dropLast(4)), g.lan))
                }
            }
        }
        for p in proxies { result.append((p.address, p.device)) }
        return result
    }

    /// What a fresh start must show for this configuration whatever the daemon's internals: the
    /// simple model the fresh daemon is itself held to (routes, proxies, sysctls, peers).
    public func claimLines(wireGuard: Bool) -> (required: Set<String>, ownedRoutesAndProxies: Set<String>) {
        var required: Set<String> = []
        for r in claimedRoutes {
            let gateway = routes.first { $0.destination == r.dst && $0.device == r.dev }?.gateway
            required.insert(KernelSnapshot.routeLine(table: "\(r.table)", type: "unicast", dst: r.dst, dev: r.dev, proto: "77",
                                                     metric: r.metric, gateway: gateway))
        }
        for p in claimedProxies { required.insert(KernelSnapshot.proxyLine(address: p.address, dev: p.dev, proto: "77")) }
        let owned = required
        for key in managedSysctls { required.insert("sysctl \(key) 1") }
        for line in solicitedNodeGroupLines { required.insert(line) }
        if wireGuard {
            for peer in peers {
                required.insert(KernelSnapshot.peerLine(dev: "wg0", key: ModelUniverse.publicKey(peer: peer.id).base64, endpoint: "(none)",
                                                        allowed: peer.allowedIPs.sorted().joined(separator: ","), keepalive: "off"))
            }
        }
        return (required, owned)
    }

    /// The solicited-node group of each peer /128 inside the first LAN prefix (the ones the
    /// snapshot reads), joined once on the LAN: by the daemon (`ndp: datapath`) or by the
    /// kernel for the proxy entry (`ndp: kernel`).
    var solicitedNodeGroupLines: Set<String> {
        guard let g = gateway, g.proxyNDP, g.redirect || !g.ndpDatapath, g.lanPrefix == ModelUniverse.lanPrefixes[0] else { return [] }
        return Set(peers.flatMap(\.allowedIPs).filter { $0.hasSuffix("/128") && $0.hasPrefix("2001:db8:1::1:") }.map { ip in
            let low = IPv6Address(String(ip.dropLast(4)))!.low & 0xff_ffff
            return "mcast \(g.lan) ff02::1:ff" + String(format: "%02x:%04x", low >> 16, low & 0xffff) + " users 1"
        })
    }

    /// The sysctls the configuration sets, as "iface key".
    public var managedSysctls: Set<String> {
        guard let g = gateway, g.proxyNDP, !g.ndpDatapath else { return [] }
        return ["\(g.lan) forwarding", "\(g.lan) proxy_ndp"]
    }
}
