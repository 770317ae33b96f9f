import Netlink
import Reconciler
import XCTest

/// The event-fed cache on recorded event sequences: what each event does, and the rule for
/// events that race a dump (drain, dump, drain, replay all in order).
final class KernelCacheTests: XCTestCase {
    func route(_ destination: String, _ oif: Int32 = 5, proto: UInt8 = 77) -> Route { F.route(destination, oif, proto: proto) }

    func seeded() -> KernelCache {
        var cache = KernelCache()
        cache.seed(links: F.links)
        cache.seed(routes: [route("2001:db8:1::100/128"), route("2001:db8:1::/64", 6)])
        cache.seed(addresses: [Address(prefix: F.prefix("2001:db8:1::1/128"), interfaceIndex: 6)])
        cache.proxies = [F.proxy("2001:db8:1::100")]
        cache.stale = []
        return cache
    }

    func testRouteEventsSetAndRemoveOneKey() {
        var cache = seeded()
        XCTAssertTrue(cache.apply(.newRoute(route("2001:db8:1::101/128"))))
        XCTAssertFalse(cache.apply(.newRoute(route("2001:db8:1::101/128"))), "the same route again changes nothing")
        // A deletion of another protocol's route at the same identity is another route's.
        XCTAssertFalse(cache.apply(.deletedRoute(route("2001:db8:1::101/128", proto: 4))))
        XCTAssertNotNil(cache.routes[RouteIdentity(route("2001:db8:1::101/128"))])
        // Appended at the same identity on another device: two routes; a replace leaves one.
        XCTAssertTrue(cache.apply(.newRoute(route("2001:db8:1::101/128", 6, proto: 4))))
        XCTAssertEqual(cache.routes[RouteIdentity(route("2001:db8:1::101/128"))]?.count, 2)
        XCTAssertTrue(cache.apply(.deletedRoute(route("2001:db8:1::101/128", 6, proto: 4))))
        XCTAssertTrue(cache.apply(.replacedRoute(route("2001:db8:1::101/128", 6))))
        XCTAssertEqual(cache.routes[RouteIdentity(route("2001:db8:1::101/128"))], [route("2001:db8:1::101/128", 6)])
        XCTAssertTrue(cache.apply(.replacedRoute(route("2001:db8:1::101/128"))))
        XCTAssertTrue(cache.apply(.deletedRoute(route("2001:db8:1::101/128"))))
        XCTAssertNil(cache.routes[RouteIdentity(route("2001:db8:1::101/128"))])
        XCTAssertFalse(cache.apply(.newRoute(Route(destination: F.prefix("10.0.0.0/8"), protocolNumber: 77, outputInterface: 5))),
                       "IPv4 routes are not modelled")
        XCTAssertEqual(cache.stale, [], "route events are exact: nothing to re-read")
    }

    func testLinkEventsMarkWhatHangsOffLinks() {
        var cache = seeded()
        XCTAssertFalse(cache.apply(.newLink(F.wg0)), "an unchanged link is no news")
        XCTAssertEqual(cache.stale, [])
        var down = F.wg0
        down.flags = 0
        XCTAssertTrue(cache.apply(.newLink(down)))
        XCTAssertEqual(cache.stale, [.proxies, .sysctls, .wireGuard, .datapath])
        XCTAssertEqual(cache.link(named: "wg0")?.isUp, false)
    }

    func testDeletedLinkTakesItsRoutesAddressesAndProxiesWithIt() {
        var cache = seeded()
        XCTAssertTrue(cache.apply(.deletedLink(F.lan)))
        XCTAssertNil(cache.link(named: "private0"))
        XCTAssertEqual(cache.routes.values.flatMap { $0 }.map(\.outputInterface), [5])
        XCTAssertEqual(cache.addressList, [])
        XCTAssertEqual(cache.proxies, [])
        XCTAssertTrue(cache.stale.isSuperset(of: [.routes, .sysctls, .wireGuard, .datapath]))
    }

    /// A digest vouches for the cached value only while nothing but the read that made it has
    /// touched it: otherwise a poll that reads those bytes again would keep a value the kernel
    /// no longer holds (an entry written since, deleted again behind the daemon's back).
    func testADigestGoesWithAnyOtherChangeToWhatItDescribes() {
        func digest(_ text: String) -> ReadDigest {
            var builder = ReadDigest.Builder()
            Array(text.utf8).withUnsafeBytes { builder.combine(piece: $0) }
            return builder.finalize()
        }
        XCTAssertEqual(digest("a"), digest("a"))
        XCTAssertNotEqual(digest("a"), digest("b"))
        var cache = seeded()
        XCTAssertNil(cache.proxyDigest, "proxies set without a read's digest")
        cache.seed(proxies: [F.proxy("2001:db8:1::100")], digest: digest("a"))
        XCTAssertEqual(cache.proxyDigest, digest("a"))
        XCTAssertTrue(cache.apply(.newRoute(route("2001:db8:1::101/128"))))
        XCTAssertEqual(cache.proxyDigest, digest("a"), "a route event leaves the proxy entries alone")
        cache.proxies.append(F.proxy("2001:db8:1::101"))
        XCTAssertNil(cache.proxyDigest, "an entry written since")
        cache.seed(proxies: [F.proxy("2001:db8:1::100")], digest: digest("a"))
        XCTAssertTrue(cache.apply(.deletedLink(F.lan)))
        XCTAssertNil(cache.proxyDigest, "entries gone with their link")

        let entry = DatapathEntry(direction: .lanToTunnel, prefix: F.prefix("2001:db8:1::100/128"))
        cache.seed(datapath: [entry], digest: digest("b"))
        XCTAssertEqual(cache.datapathDigest, digest("b"))
        cache.datapath?.remove(entry)
        XCTAssertNil(cache.datapathDigest, "a removal folded in")
        cache.seed(datapath: [], digest: digest("b"))
        cache.datapath?.insert(entry)
        XCTAssertNil(cache.datapathDigest, "an insertion folded in")
        cache.seed(datapath: nil, digest: nil)
        XCTAssertNil(cache.datapathDigest)

        let device = WireGuardDevice(name: "wg0", index: 5)
        cache.seed(wireGuard: ["wg0": device], digests: ["wg0": digest("c")])
        XCTAssertEqual(cache.wireGuardDigests, ["wg0": digest("c")])
        cache.wireGuard = ["wg0": device]
        XCTAssertEqual(cache.wireGuardDigests, [:], "devices set without a read's digest")

        cache.seed(proxies: [], digest: digest("a"))
        cache.seed(datapath: [], digest: digest("b"))
        cache.seed(wireGuard: ["wg0": device], digests: ["wg0": digest("c")])
        cache.forgetDigests()
        XCTAssertNil(cache.proxyDigest, "the resync decodes everything")
        XCTAssertNil(cache.datapathDigest)
        XCTAssertEqual(cache.wireGuardDigests, [:])
    }

    /// The daemon folds its acknowledged proxy writes in instead of dumping the table again: the
    /// result must be what a dump would show, and that dump (in the kernel's order) must then
    /// read as nothing new.
    func testAcknowledgedProxyWritesFoldInAsADumpWouldShowThem() {
        var cache = seeded()
        cache.seed(links: F.links + [Link(index: 7, name: "private1", kind: "veth")])
        cache.proxies = [F.proxy("2001:db8:1::100"), F.proxy("2001:db8:1::102", proto: 4), F.proxy("2001:db8:1::103")]
        cache.fold(proxyWrites: [
            (F.proxy("2001:db8:1::101"), false),                 // new
            (F.proxy("2001:db8:1::102", proto: 0), false),       // there already, no protocol given: keeps 4
            (F.proxy("2001:db8:1::103"), true),                  // deleted
            (F.proxy("2001:db8:1::104"), true),                  // deleted, was not there
            (F.proxy("2001:db8:1::100", 7), false),              // same address, another device
        ])
        let dump = [F.proxy("2001:db8:1::100", 7), F.proxy("2001:db8:1::102", proto: 4), F.proxy("2001:db8:1::101"), F.proxy("2001:db8:1::100")]
        XCTAssertEqual(Set(cache.proxies), Set(dump))
        XCTAssertEqual(cache.proxies.count, dump.count)
        XCTAssertNil(cache.proxyDigest, "a fold is no read")

        let version = cache.version
        var builder = ReadDigest.Builder()
        builder.combine(UInt64(1))
        XCTAssertFalse(cache.seed(proxies: dump, digest: builder.finalize()), "the same entries in the dump's order")
        XCTAssertEqual(cache.version, version)
        XCTAssertEqual(cache.proxyDigest, builder.finalize(), "the dump's digest vouches for them now")
        XCTAssertTrue(cache.seed(proxies: Array(dump.dropLast()), digest: nil), "one entry fewer")
        XCTAssertNotEqual(cache.version, version)
        XCTAssertTrue(cache.seed(proxies: dump.dropLast() + [F.proxy("2001:db8:1::100", proto: 4)], digest: nil), "another protocol")
        cache.fold(proxyWrites: [])
        XCTAssertEqual(cache.proxies.count, 4, "no writes, nothing folded")
    }

    /// A device deleted after the kernel acknowledged a proxy entry on it, and before the fold:
    /// the kernel dropped the entry with the device, and `apply` drains the deletion's event
    /// (which removes the device's cached entries) before it folds the writes. The fold must not
    /// put the entry back: no event or read would remove it before the next proxy poll, and a
    /// plan meanwhile would try to delete it (ENODEV, a failure logged and retried).
    func testAProxyWriteOnADeviceDeletedBeforeTheFoldIsNotFoldedIn() {
        var cache = seeded()
        let other = Link(index: 7, name: "private1", kind: "veth")
        cache.seed(links: F.links + [other])
        cache.proxies = [F.proxy("2001:db8:1::100"), F.proxy("2001:db8:1::200", 7)]
        cache.stale = []
        // The write went through, then the device went: its event is drained first.
        XCTAssertTrue(cache.apply(.deletedLink(other)))
        XCTAssertEqual(cache.proxies, [F.proxy("2001:db8:1::100")])
        cache.fold(proxyWrites: [(F.proxy("2001:db8:1::201", 7), false), (F.proxy("2001:db8:1::101"), false)])
        XCTAssertEqual(Set(cache.proxies), [F.proxy("2001:db8:1::100"), F.proxy("2001:db8:1::101")],
                       "what a dump shows: nothing on the deleted device")
        XCTAssertFalse(cache.stale.contains(.proxies), "and nothing would read the table before the next proxy poll")
    }

    func testAddressEventsUpdateTheAddressesAndTheDatapathPassEntries() {
        var cache = seeded()
        let address = Address(prefix: F.prefix("2001:db8:1::2/64"), interfaceIndex: 6)
        XCTAssertTrue(cache.apply(.newAddress(address)))
        XCTAssertEqual(Set(cache.addressList.map(\.prefix)), [F.prefix("2001:db8:1::1/128"), F.prefix("2001:db8:1::2/64")])
        XCTAssertEqual(cache.stale, [.datapath])
        cache.stale = []
        XCTAssertTrue(cache.apply(.deletedAddress(address)))
        XCTAssertFalse(cache.apply(.deletedAddress(address)))
        XCTAssertEqual(cache.observed.addresses.map(\.prefix), [F.prefix("2001:db8:1::1/128")])
    }

    func testUnnotifiedKindsAndOverflowMarkParts() {
        var cache = seeded()
        XCTAssertTrue(cache.apply(.netconf(Netconf(interfaceIndex: 6, family: .inet6, forwarding: true))))
        XCTAssertTrue(cache.apply(.trafficControl(interfaceIndex: 6)))
        XCTAssertTrue(cache.apply(.newProxy(F.proxy("2001:db8:1::9"))))
        XCTAssertEqual(cache.stale, [.sysctls, .datapath, .proxies])
        XCTAssertTrue(cache.apply(.overflow))
        XCTAssertEqual(cache.stale, Set(KernelCache.Part.allCases))
        XCTAssertEqual(cache.overflows, 1)
    }

    /// Events queued before and while the dump ran, replayed in order over it, give the state
    /// after the last event, wherever in the sequence the dump's snapshot fell.
    func testEventsThatRaceADumpAreReplayedOverIt() {
        let a = route("2001:db8:a::/64"), b = route("2001:db8:b::/64"), c = route("2001:db8:c::/64")
        var moved = a
        moved.outputInterface = 6
        var appended = b
        appended.outputInterface = 6
        let events: [RouteEvent] = [.newRoute(a), .newRoute(b), .deletedRoute(a), .newRoute(c), .newRoute(a), .replacedRoute(moved),
                                    .newRoute(appended), .deletedRoute(b)]
        // The kernel's table after each prefix of the sequence: what a dump taken there shows.
        var table: [RouteIdentity: [Route]] = [:]
        var snapshots = [table]
        for event in events {
            switch event {
            case .newRoute(let r): table[RouteIdentity(r), default: []].append(r)
            case .replacedRoute(let r): table[RouteIdentity(r)] = [r]
            case .deletedRoute(let r):
                table[RouteIdentity(r)]?.removeAll { $0 == r }
                if table[RouteIdentity(r)]?.isEmpty == true { table[RouteIdentity(r)] = nil }
            default: break
            }
            snapshots.append(table)
        }
        XCTAssertEqual(table[RouteIdentity(b)], [appended], "two routes at one identity, then one")
        for (k, snapshot) in snapshots.enumerated() {
            var cache = KernelCache()
            cache.seed(routes: snapshot.values.flatMap { $0 })
            for event in events { cache.apply(event) }
            XCTAssertEqual(cache.routes, table, "dump taken after \(k) events")
        }
    }

    /// The old reader dropped the events between the link dump and the route dump; a link that
    /// went away meanwhile must not stay in the cache.
    func testALinkDeletedDuringTheReadIsGone() {
        var cache = KernelCache()
        let queuedBefore: [RouteEvent] = []
        cache.seed(links: F.links)           // the dump still shows private0
        let queuedDuring: [RouteEvent] = [.deletedLink(F.lan)]
        cache.seed(routes: [route("2001:db8:1::/64", 6)])  // dumped after the deletion: already without private0's routes
        for event in queuedBefore + queuedDuring { cache.apply(event) }
        XCTAssertNil(cache.link(named: "private0"))
        XCTAssertEqual(cache.routes, [:])
    }
}
