import Foundation

/// Something done to the kernel behind the daemon's back between two steps. Owned drift must
/// be repaired; a foreign object (another protocol, an interface the configuration does not
/// manage) must survive every later step.
public enum Drift: Hashable, Sendable, CustomStringConvertible {
    case deleteRoute(dst: String, dev: String, table: Int, metric: Int)
    case moveRoute(dst: String, dev: String, to: String, table: Int, metric: Int)
    case deleteProxy(address: String, dev: String)
    /// `foreign`: the configuration does not manage this sysctl, so the value must stay.
    case sysctl(interface: String, key: String, value: String, foreign: Bool)
    case deleteClsact(dev: String)
    case foreignRoute(dst: String, dev: String, proto: Int, metric: Int)
    case foreignProxy(address: String, dev: String, proto: Int?)
    /// VM only: a peer removed with `wg set`, and one added that the configuration does not name.
    case removePeer(id: Int)
    case foreignPeer(id: Int, allowedIP: String)

    public var description: String { commands.map { $0.joined(separator: " ") }.joined(separator: "; ") }

    /// The commands, to run with `ip netns exec NS` in front (all iproute2, sh or wg).
    public var commands: [[String]] {
        switch self {
        case let .deleteRoute(dst, dev, table, metric):
            return [["ip", "-6", "route", "del", dst, "dev", dev, "proto", "77", "table", "\(table)", "metric", "\(metric)"]]
        case let .moveRoute(dst, _, to, table, metric):
            return [["ip", "-6", "route", "replace", dst, "dev", to, "proto", "77", "table", "\(table)", "metric", "\(metric)"]]
        case let .deleteProxy(address, dev):
            return [["ip", "-6", "neigh", "del", "proxy", address, "dev", dev]]
        case let .sysctl(interface, key, value, _):
            return [["sh", "-c", "echo \(value) > /proc/sys/net/ipv6/conf/\(interface)/\(key)"]]
        case let .deleteClsact(dev):
            return [["tc", "qdisc", "del", "dev", dev, "clsact"]]
        case let .foreignRoute(dst, dev, proto, metric):
            return [["ip", "-6", "route", "add", dst, "dev", dev, "proto", "\(proto)", "metric", "\(metric)"]]
        case let .foreignProxy(address, dev, proto):
            return [["ip", "-6", "neigh", "add", "proxy", address, "dev", dev] + (proto.map { ["protocol", "\($0)"] } ?? [])]
        case let .removePeer(id):
            return [["wg", "set", "wg0", "peer", ModelUniverse.publicKey(peer: id).base64, "remove"]]
        case let .foreignPeer(id, allowedIP):
            return [["wg", "set", "wg0", "peer", ModelUniverse.publicKey(peer: id).base64, "allowed-ips", allowedIP]]
        }
    }

    /// The normalized line a foreign object leaves in a snapshot (see `KernelSnapshot`).
    var foreignLine: String? {
        switch self {
        case let .foreignRoute(dst, dev, proto, metric):
            return KernelSnapshot.routeLine(table: "254", type: "unicast", dst: dst, dev: dev, proto: "\(proto)", metric: metric, gateway: nil)
        case let .foreignProxy(address, dev, proto):
            return KernelSnapshot.proxyLine(address: address, dev: dev, proto: proto.map(String.init) ?? "0")
        default:
            return nil
        }
    }
}

public struct ModelStep: Hashable, Sendable {
    public var config: ModelConfig
    /// Applied by a restart (SIGTERM, start) rather than SIGHUP.
    public var restart: Bool
    /// Done after the step has converged; the kernel must then converge again.
    public var drift: [Drift]
}

/// Which parts of the universe a run exercises (`WGK_MODEL_FEATURES=-lanmove,-redirect` turns
/// some off, to look past a bug already found).
public struct ModelFeatures: Sendable {
    public var lanMove = true, dotted = true, redirect = true, proxyNDP = true, prune = true, ndp = true
    public var routes = true, proxies = true, drift = true, restart = true, gatewayDrop = true
    /// Drift that moves an owned route to another interface (`ip route replace … dev OTHER proto 77`).
    public var moveDrift = true
    public var peerDrift = false   // needs real WireGuard
    public var clsact = false      // the kernel attaches with clsact (no TCX)

    public init() {}

    public mutating func apply(_ spec: String?) {
        for item in (spec ?? "").split(separator: ",") {
            let on = !item.hasPrefix("-")
            switch item.trimmingCharacters(in: CharacterSet(charactersIn: "+-")) {
            case "lanmove": lanMove = on
            case "dotted": dotted = on
            case "redirect": redirect = on
            case "proxyndp": proxyNDP = on
            case "ndp": ndp = on
            case "prune": prune = on
            case "routes": routes = on
            case "proxies": proxies = on
            case "drift": drift = on
            case "restart": restart = on
            case "gatewaydrop": gatewayDrop = on
            case "move": moveDrift = on
            default: break
            }
        }
    }
}

/// Generates the step sequence of one seed: each configuration is the previous one with one
/// to three random edits (sometimes a fresh random one), so reloads are both small and large.
public struct ModelGenerator {
    public var universe = ModelUniverse()
    public var features = ModelFeatures()
    var rng: SeededGenerator
    /// Draws for `ndp` only, so that a seed found before `ndp` existed still replays the same
    /// configurations otherwise.
    var ndpRNG: SeededGenerator
    var foreignCount = 0

    public init(seed: UInt64, features: ModelFeatures = ModelFeatures(), universe: ModelUniverse = ModelUniverse()) {
        rng = SeededGenerator(seed: seed)
        ndpRNG = SeededGenerator(seed: seed ^ 0x0D9E_5EED_0000_0000)
        self.features = features
        self.universe = universe
    }

    var lans: [String] { features.dotted ? universe.lans : universe.lans.filter { !$0.contains(".") } }

    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
    mutating func pick<T>(_ items: [T]) -> T { items.randomElement(using: &rng)! }

    public mutating func steps(_ count: Int) -> [ModelStep] {
        var config = randomConfig()
        var steps: [ModelStep] = []
        for i in 0..<count {
            if i > 0 {
                if chance(0.05) {
                    let lan = config.gateway?.lan
                    config = randomConfig()
                    if !features.lanMove, let lan { config.gateway?.lan = lan }
                } else {
                    for _ in 0..<Int.random(in: 1...3, using: &rng) { edit(&config) }
                }
            }
            chooseNDP(&config)
            let restart = features.restart && i > 0 && i % 10 == 0
            let drift = features.drift && i > 0 && chance(0.35) ? drifts(for: config) : []
            steps.append(ModelStep(config: config, restart: restart, drift: drift))
        }
        return steps
    }

    /// `ndp: datapath` now and then where `redirect` allows it (a check error otherwise).
    mutating func chooseNDP(_ config: inout ModelConfig) {
        guard var gateway = config.gateway else { return }
        if !gateway.redirect || !features.ndp {
            gateway.ndpDatapath = false
        } else if Double.random(in: 0..<1, using: &ndpRNG) < 0.3 {
            gateway.ndpDatapath.toggle()
        }
        config.gateway = gateway
    }

    mutating func randomPeer(_ id: Int) -> ModelPeer {
        let candidates = ModelUniverse.candidatePrefixes(peer: id)
        var chosen = [candidates[Int.random(in: 0...1, using: &rng)]]
        if chance(0.3) { chosen.append(candidates[chosen[0] == candidates[0] ? 1 : 0]) }
        if chance(0.25) { chosen.append(candidates[2]) }
        if chance(0.1) { chosen.append(candidates[3]) }
        return ModelPeer(id: id, allowedIPs: chosen)
    }

    mutating func randomGateway() -> ModelGateway {
        ModelGateway(lan: pick(lans), lanPrefix: pick(ModelUniverse.lanPrefixes),
                     proxyNDP: features.proxyNDP ? chance(0.7) : true,
                     redirect: features.redirect ? chance(0.5) : false)
    }

    mutating func randomRoute() -> ModelRoute {
        ModelRoute(destination: ModelUniverse.canonical("2001:db8:f:\(Int.random(in: 0..<8, using: &rng))::/64"),
                   device: pick(universe.configurable),
                   gateway: chance(0.2) ? "fe80::1" : nil,
                   table: chance(0.25) ? 100 : nil,
                   metric: chance(0.3) ? pick([100, 2048]) : nil)
    }

    mutating func randomProxy() -> ModelProxy {
        // Never on the tunnel: `check` refuses a proxy entry there while a gateway names it (and one may come by reload).
        ModelProxy(address: "2001:db8:e::\(Int.random(in: 1...8, using: &rng))", device: pick(universe.configurable.filter { $0 != universe.tunnel }))
    }

    mutating func randomConfig() -> ModelConfig {
        var config = ModelConfig()
        config.listenPort = pick([51820, 51821])
        config.prunePeers = features.prune ? chance(0.7) : true
        let count = chance(0.1) ? 0 : Int.random(in: 1...30, using: &rng)
        let ids = Array(0..<ModelUniverse.peerPool).shuffled(using: &rng).prefix(count).sorted()
        config.peers = ids.map { randomPeer($0) }
        config.gateway = features.gatewayDrop && chance(0.08) ? nil : randomGateway()
        if features.routes { for _ in 0..<Int.random(in: 0...3, using: &rng) { addUnique(randomRoute(), to: &config) } }
        if features.proxies { for _ in 0..<Int.random(in: 0...2, using: &rng) { addUnique(randomProxy(), to: &config) } }
        return config
    }

    func addUnique(_ route: ModelRoute, to config: inout ModelConfig) {
        if !config.routes.contains(where: { $0.destination == route.destination }) { config.routes.append(route) }
    }

    func addUnique(_ proxy: ModelProxy, to config: inout ModelConfig) {
        if !config.proxies.contains(where: { $0.address == proxy.address }) { config.proxies.append(proxy) }
    }

    mutating func edit(_ config: inout ModelConfig) {
        switch Int.random(in: 0..<14, using: &rng) {
        case 0, 1, 2:  // add a peer
            let free = (0..<ModelUniverse.peerPool).filter { id in !config.peers.contains { $0.id == id } }
            if config.peers.count < 30, let id = free.randomElement(using: &rng) {
                config.peers.append(randomPeer(id))
                config.peers.sort { $0.id < $1.id }
            }
        case 3, 4:  // remove a peer
            if !config.peers.isEmpty { config.peers.remove(at: Int.random(in: 0..<config.peers.count, using: &rng)) }
        case 5:  // change a peer's allowed IPs
            if !config.peers.isEmpty {
                let i = Int.random(in: 0..<config.peers.count, using: &rng)
                config.peers[i] = randomPeer(config.peers[i].id)
            }
        case 6:  // move the LAN, or change its prefix
            if config.gateway == nil { config.gateway = randomGateway() }
            if features.lanMove && chance(0.6) { config.gateway!.lan = pick(lans) } else { config.gateway!.lanPrefix = pick(ModelUniverse.lanPrefixes) }
        case 7:
            if features.proxyNDP, config.gateway != nil { config.gateway!.proxyNDP.toggle() }
        case 8:
            if features.redirect, config.gateway != nil { config.gateway!.redirect.toggle() }
        case 9:
            if features.prune { config.prunePeers.toggle() }
        case 10:  // add or change an explicit route
            if features.routes {
                let route = randomRoute()
                config.routes.removeAll { $0.destination == route.destination }
                config.routes.append(route)
            }
        case 11:
            if features.routes, !config.routes.isEmpty { config.routes.remove(at: Int.random(in: 0..<config.routes.count, using: &rng)) }
        case 12:
            if features.proxies {
                if !config.proxies.isEmpty && chance(0.5) {
                    config.proxies.remove(at: Int.random(in: 0..<config.proxies.count, using: &rng))
                } else {
                    let proxy = randomProxy()
                    config.proxies.removeAll { $0.address == proxy.address }
                    config.proxies.append(proxy)
                }
            }
        default:  // the gateway comes or goes; the listen port changes
            if features.gatewayDrop && chance(0.3) {
                config.gateway = config.gateway == nil ? randomGateway() : nil
            } else {
                config.listenPort = config.listenPort == 51820 ? 51821 : 51820
            }
        }
    }

    mutating func drifts(for config: ModelConfig) -> [Drift] {
        var result: [Drift] = []
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            let routes = config.claimedRoutes, proxies = config.claimedProxies
            switch Int.random(in: 0..<(features.peerDrift ? 10 : 8), using: &rng) {
            case 0 where !routes.isEmpty:
                let r = pick(routes)
                result.append(.deleteRoute(dst: r.dst, dev: r.dev, table: r.table, metric: r.metric))
            case 1 where !routes.isEmpty && features.moveDrift:
                let r = pick(routes)
                let other = pick(universe.configurable.filter { $0 != r.dev })
                result.append(.moveRoute(dst: r.dst, dev: r.dev, to: other, table: r.table, metric: r.metric))
            case 2 where !proxies.isEmpty:
                let p = pick(proxies)
                result.append(.deleteProxy(address: p.address, dev: p.dev))
            case 3:
                // A sysctl: on the LAN it is owned drift, anywhere else a foreign setting.
                let managed = Array(config.managedSysctls).sorted()
                if !managed.isEmpty && chance(0.5) {
                    let parts = pick(managed).split(separator: " ")
                    result.append(.sysctl(interface: String(parts[0]), key: String(parts[1]), value: "0", foreign: false))
                } else {
                    let candidates = (universe.configurable + universe.unmanaged).filter { iface in
                        !config.managedSysctls.contains { $0.hasPrefix(iface + " ") }
                    }
                    result.append(.sysctl(interface: pick(candidates), key: pick(["forwarding", "proxy_ndp"]),
                                          value: pick(["0", "1"]), foreign: true))
                }
            case 4 where features.clsact:
                if let g = config.gateway, g.redirect { result.append(.deleteClsact(dev: pick([g.lan, "wg0"]))) }
            case 5, 6:
                // Another owner's route: an unused prefix, or a prefix we route at another metric
                // (7…86: never one the configuration uses, so never the identity of an owned route).
                foreignCount += 1
                let dst = chance(0.5) || routes.isEmpty ? "2001:db8:c:\(String(foreignCount, radix: 16))::/64" : pick(routes).dst
                result.append(.foreignRoute(dst: dst, dev: pick(universe.all), proto: pick([4, 42, 3]), metric: 7 + foreignCount % 80))
            case 7:
                foreignCount += 1
                result.append(.foreignProxy(address: "2001:db8:d::\(String(foreignCount, radix: 16))", dev: pick(universe.all),
                                            proto: chance(0.5) ? nil : 42))
            case 8 where !config.peers.isEmpty:
                result.append(.removePeer(id: pick(config.peers).id))
            case 9:
                let free = (ModelUniverse.peerPool..<(ModelUniverse.peerPool + 8)).map { $0 }
                let id = pick(free)
                result.append(.foreignPeer(id: id, allowedIP: "2001:db8:c9::\(String(id, radix: 16))/128"))
            default:
                break
            }
        }
        return result
    }
}
