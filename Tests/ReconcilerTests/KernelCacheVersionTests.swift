import Netlink
import Reconciler
import XCTest

/// The cache's version is what lets a resync skip its full plan (`plan` is a pure function of
/// the desired state and the cache, so an unchanged version means an unchanged plan): every
/// change to what `plan` reads must move it, and a read that finds what the cache held must not.
final class KernelCacheVersionTests: XCTestCase {
    let wireGuard = ["wg0": WireGuardDevice(name: "wg0", index: 5, privateKey: F.privateKey, listenPort: 51820,
                                            peers: [F.kernelPeer(F.alice), F.kernelPeer(F.bob)])]

    func inSync() -> KernelCache {
        let observed = F.inSync()
        var cache = KernelCache()
        cache.seed(links: observed.links)
        cache.seed(routes: observed.routes)
        cache.seed(addresses: [Address(prefix: F.prefix("fe80::1/64"), interfaceIndex: 6)])
        cache.seed(proxies: observed.proxies, digest: nil)
        cache.seed(sysctls: observed.sysctls)
        cache.seed(wireGuard: observed.wireGuard, digests: [:])
        cache.seed(datapath: observed.datapath, digest: nil)
        cache.stale = []
        return cache
    }

    func testReadsOfWhatTheCacheHoldsLeaveTheVersion() {
        var cache = inSync()
        let observed = F.inSync()
        let version = cache.version
        cache.seed(links: observed.links.reversed())
        cache.seed(routes: observed.routes.reversed())
        cache.seed(addresses: [Address(prefix: F.prefix("fe80::1/64"), interfaceIndex: 6)])
        cache.seed(proxies: observed.proxies, digest: nil)
        cache.seed(sysctls: observed.sysctls)
        cache.seed(wireGuard: observed.wireGuard, digests: [:])
        cache.seed(datapath: observed.datapath, digest: nil)
        cache.confirmRoutes()
        XCTAssertEqual(cache.version, version)
        // Traffic: handshake times and byte counters are not planned.
        var busy = observed.wireGuard!
        busy["wg0"]!.peers[0].latestHandshake = 1_700_000_000
        busy["wg0"]!.peers[0].receivedBytes = 1 << 20
        cache.seed(wireGuard: busy, digests: [:])
        XCTAssertEqual(cache.version, version, "traffic is no change to plan for")
        XCTAssertEqual(cache.wireGuard?["wg0"]?.peers[0].receivedBytes, 1 << 20, "the cache holds the latest read")
        // A poll that found only traffic hands the figures over in place: the digest stays.
        var builder = ReadDigest.Builder()
        builder.combine(7)
        let digest = builder.finalize()
        XCTAssertFalse(cache.take(traffic: busy["wg0"]!.peers.map(\.traffic), device: "wg0"), "figures taken without a read's digest")
        cache.seed(wireGuard: busy, digests: ["wg0": digest])
        var figures = busy["wg0"]!.peers.map(\.traffic)
        figures[0].transmittedBytes = 99
        figures[0].latestHandshake = nil
        XCTAssertTrue(cache.take(traffic: figures, device: "wg0"))
        XCTAssertEqual(cache.wireGuard?["wg0"]?.peers.map(\.traffic), figures)
        XCTAssertEqual(cache.wireGuardDigests["wg0"], digest)
        XCTAssertEqual(cache.version, version)
        XCTAssertFalse(cache.take(traffic: figures + [WireGuardTraffic()], device: "wg0"), "figures for another count of peers")
        XCTAssertFalse(cache.take(traffic: figures, device: "wg9"))
        XCTAssertEqual(cache.wireGuard?["wg0"]?.peers.map(\.traffic), figures)
        // Events the cache already reflects.
        XCTAssertFalse(cache.apply(.newRoute(observed.routes[0])))
        XCTAssertFalse(cache.apply(.newLink(F.wg0)))
        XCTAssertFalse(cache.apply(.deletedAddress(Address(prefix: F.prefix("2001:db8::9/128"), interfaceIndex: 6))))
        XCTAssertEqual(cache.version, version)
    }

    func testEveryChangeToWhatPlanReadsMovesTheVersion() {
        let observed = F.inSync()
        var down = F.wg0
        down.flags = 0
        var moved = wireGuard
        moved["wg0"]!.peers[0].allowedIPs = [F.prefix("2001:db8:1::300/128")]
        var port = wireGuard
        port["wg0"]!.listenPort = 51821
        let changes: [(String, (inout KernelCache) -> Void)] = [
            ("links dumped", { $0.seed(links: [F.eth0, down, F.lan]) }),
            ("routes dumped", { $0.seed(routes: Array(observed.routes.dropFirst())) }),
            ("a route's metric", { $0.seed(routes: observed.routes.map { var r = $0; r.metric = (r.metric ?? 0) + 1; return r }) }),
            ("addresses dumped", { $0.seed(addresses: []) }),
            ("proxies dumped", { $0.seed(proxies: [], digest: nil) }),
            ("a proxy's protocol", { $0.seed(proxies: [F.proxy("2001:db8:1::100", proto: 4)], digest: nil) }),
            ("sysctls read", { $0.seed(sysctls: ["net/ipv6/conf/private0/forwarding": "0"]) }),
            ("a peer's allowed IPs", { $0.seed(wireGuard: moved, digests: [:]) }),
            ("a device's port", { $0.seed(wireGuard: port, digests: [:]) }),
            ("WireGuard unreadable", { $0.seed(wireGuard: nil, digests: [:]) }),
            ("datapath read", { $0.seed(datapath: [], digest: nil) }),
            ("datapath unloaded", { $0.seed(datapath: nil, digest: nil) }),
            ("datapath write folded in", { $0.datapath?.remove(DatapathEntry(direction: .tunnelToLAN, prefix: F.prefix("2001:db8:1::/64"))) }),
            ("route event", { $0.apply(.deletedRoute(observed.routes[0])) }),
            ("link event", { $0.apply(.newLink(down)) }),
            ("link deleted", { $0.apply(.deletedLink(F.lan)) }),
            ("address event", { $0.apply(.newAddress(Address(prefix: F.prefix("2001:db8:1::1/128"), interfaceIndex: 6))) }),
        ]
        for (what, change) in changes {
            var cache = inSync()
            let version = cache.version
            change(&cache)
            XCTAssertNotEqual(cache.version, version, what)
        }
    }

    /// Random reads and events, some of them of what the cache holds: whenever the version
    /// stayed, the plan did too, and whenever what `plan` reads moved, so did the version.
    func testAnUnchangedVersionMeansAnUnchangedPlan() {
        let seed = UInt64.random(in: 0...UInt64.max)
        var random = SeededRandom(seed: seed)
        let desired = F.desiredWithGateway()
        let observed = F.inSync()
        let extraRoutes = (0..<6).map { F.route("2001:db8:5::\($0)/128", 5) }
        let proxies = observed.proxies + [F.proxy("2001:db8:1::200"), F.proxy("2001:db8:1::201", proto: 4)]
        var cache = inSync()
        var previous = (version: cache.version, plan: plan(desired, cache.observed), content: Content(cache))
        for step in 0..<2000 {
            var note = ""
            switch Int.random(in: 0..<9, using: &random) {
            case 0:
                let routes = observed.routes + extraRoutes.filter { _ in Bool.random(using: &random) }
                cache.seed(routes: routes.shuffled(using: &random))
                note = "routes dumped"
            case 1:
                let route = extraRoutes.randomElement(using: &random)!
                _ = cache.apply(Bool.random(using: &random) ? .newRoute(route) : .deletedRoute(route))
                note = "route event"
            case 2:
                cache.seed(proxies: proxies.filter { _ in Int.random(in: 0..<4, using: &random) > 0 }, digest: nil)
                note = "proxies dumped"
            case 3:
                var sysctls = observed.sysctls
                if Bool.random(using: &random) { sysctls["net/ipv6/conf/private0/proxy_ndp"] = "0" }
                cache.seed(sysctls: sysctls)
                note = "sysctls read"
            case 4:
                var devices = wireGuard
                devices["wg0"]!.peers[1].latestHandshake = Double(step)
                if Int.random(in: 0..<3, using: &random) == 0 { devices["wg0"]!.peers[1].persistentKeepalive = 25 }
                cache.seed(wireGuard: devices, digests: [:])
                note = "WireGuard read"
            case 5:
                var entries = observed.datapath!
                if Bool.random(using: &random) { entries.remove(entries.first!) }
                cache.seed(datapath: entries, digest: nil)
                note = "datapath read"
            case 6:
                var wg0 = F.wg0
                if Bool.random(using: &random) { wg0.flags = 0 }
                cache.seed(links: [F.eth0, wg0, F.lan].shuffled(using: &random))
                note = "links dumped"
            case 7:
                let address = Address(prefix: F.prefix("2001:db8:1::101/128"), interfaceIndex: 6)
                _ = cache.apply(Bool.random(using: &random) ? .newAddress(address) : .deletedAddress(address))
                note = "address event"
            default:
                cache.confirmRoutes()
                note = "route dump unchanged"
            }
            let now = (version: cache.version, plan: plan(desired, cache.observed), content: Content(cache))
            if now.version == previous.version {
                XCTAssertEqual(now.content, previous.content, "step \(step) (\(note)), seed \(seed): changed without a new version")
                XCTAssertEqual(now.plan, previous.plan, "step \(step) (\(note)), seed \(seed)")
            }
            previous = now
        }
    }

    /// What `plan` reads of the cache, in an order-free form (WireGuard: its planned fields).
    struct Content: Equatable {
        var links: [Link]
        var routes: Set<Route>
        var addresses: Set<Address>
        var proxies: [ProxyEntry]
        var sysctls: [String: String]
        var wireGuard: [String: WireGuardDevice]?
        var datapath: Set<DatapathEntry>?

        init(_ cache: KernelCache) {
            links = cache.links.values.sorted { $0.index < $1.index }
            routes = Set(cache.routes.values.joined())
            addresses = Set(cache.addressList)
            proxies = cache.proxies
            sysctls = cache.sysctls
            wireGuard = cache.wireGuard
            datapath = cache.datapath
        }

        static func == (a: Self, b: Self) -> Bool {
            a.links == b.links && a.routes == b.routes && a.addresses == b.addresses && a.proxies == b.proxies
                && a.sysctls == b.sysctls && KernelCache.samePlanned(a.wireGuard, b.wireGuard) && a.datapath == b.datapath
        }
    }
}
