import Foundation
import Logging
import Netlink
import Reconciler

/// Keeping the cached kernel state exact: full reads, partial reads, and events.
extension Daemon {
    /// Applies queued rtnetlink events to the cache. Routes are updated in place (they carry
    /// everything); a link change re-reads what hangs off links; an overflow re-reads all.
    func drainEvents() {
        let batch: [RouteEvent]
        do {
            batch = try events.readEvents()
        } catch {
            netlinkHealthy = false
            logger.error("event socket failed; full resync", metadata: ["error": "\(error)"])
            reads.insert(.everything)
            schedule()
            return
        }
        guard !batch.isEmpty else { return }
        for event in batch {
            switch event {
            case .newRoute(let route) where route.family == .inet6:
                routes[RouteIdentity(route)] = route
            case .deletedRoute(let route) where route.family == .inet6:
                if routes[RouteIdentity(route)]?.protocolNumber == route.protocolNumber { routes[RouteIdentity(route)] = nil }
            case .newLink(let link):
                if links[link.index] != link { reads.formUnion([.links, .proxies, .sysctls, .wireGuard, .datapath]) }
                links[link.index] = link
            case .deletedLink(let link):
                links[link.index] = nil
                // The kernel drops a link's routes without a notification for each: re-read.
                reads.insert(.everything)
            case .newAddress, .deletedAddress:
                reads.formUnion([.sysctls, .datapath])
            case .netconf:
                reads.insert(.sysctls)
            case .newProxy, .deletedProxy:
                reads.insert(.proxies)
            case .trafficControl:
                // Our own attach causes these too; checking the attachment is cheap and idempotent.
                if desired.datapath != nil { reads.insert(.datapath) }
            case .overflow:
                overflows += 1
                logger.warning("event queue overflowed (ENOBUFS): state unknown, full resync")
                reads.insert(.everything)
            default:
                break
            }
        }
        schedule(after: Daemon.debounce)
    }

    /// Re-reads what `reads` asks for. Failures leave that part as it was and are retried.
    func readKernel() {
        let wanted = reads
        reads = []
        do {
            if wanted.contains(.everything) || wanted.contains(.links) { try readLinks() }
            if wanted.contains(.everything) {
                // Drain first: events already queued describe the state the dump will show anyway.
                _ = try? events.readEvents()
                routes = Dictionary(try rtnetlink.routes(family: .inet6).map { (RouteIdentity($0), $0) }, uniquingKeysWith: { a, _ in a })
            }
            if wanted.contains(.everything) || wanted.contains(.proxies) {
                proxies = try rtnetlink.proxyEntries()
            }
            if wanted.contains(.everything) || wanted.contains(.sysctls) {
                readSysctls()
                addresses = try rtnetlink.addresses(family: .inet6)
            }
            if wanted.contains(.everything) || wanted.contains(.wireGuard) {
                try readWireGuard()
                reresolveQuietPeers()
            }
            if wanted.contains(.everything) || wanted.contains(.links) || wanted.contains(.datapath) {
                ensureDatapath()
                datapathEntries = try? datapathMaps?.entries()
            }
            netlinkHealthy = true
        } catch {
            netlinkHealthy = false
            logger.error("reading kernel state failed; retrying", metadata: ["error": "\(error)"])
            reads.formUnion(wanted)
            schedule(after: .seconds(1))
        }
    }

    func readLinks() throws {
        links = Dictionary(uniqueKeysWithValues: try rtnetlink.links().map { ($0.index, $0) })
    }

    /// The cached link with this name.
    func link(named name: String) -> Link? { links.values.first { $0.name == name } }

    func readSysctls() {
        sysctls = [:]
        for sysctl in desired.sysctls.map(\.sysctl) + desired.safetyChecks.map(\.sysctl) {
            sysctls[sysctl.key] = try? sysctl.read()
        }
    }

    func readWireGuard(only names: [String]? = nil) throws {
        guard let wireGuard else { return }
        for device in desired.devices where names == nil || names!.contains(device.name) {
            if link(named: device.name)?.kind == "wireguard" {
                wireGuardDevices[device.name] = try wireGuard.device(named: device.name)
            } else {
                wireGuardDevices[device.name] = nil
            }
        }
    }

    var observed: ObservedState {
        ObservedState(links: Array(links.values), routes: Array(routes.values), proxies: proxies, sysctls: sysctls,
                      wireGuard: wireGuard == nil ? nil : wireGuardDevices, datapath: datapathEntries)
    }

    /// WireGuard devices are created when missing and set up when down: a deleted `wg0`
    /// comes back, fully configured by the plan that follows.
    func ensureDevices() {
        guard wireGuard != nil else { return }
        var changed = false
        for device in desired.devices where link(named: device.name) == nil {
            do {
                try rtnetlink.socket.perform(Link.createRequest(name: device.name, kind: "wireguard"))
                logger.info("created WireGuard device", metadata: ["device": "\(device.name)"])
                changed = true
            } catch {
                logger.error("cannot create WireGuard device", metadata: ["device": "\(device.name)", "error": "\(error)"])
            }
        }
        do {
            if changed { try readLinks() }
            // A new device starts down, and someone may have set ours down: bring it up.
            for device in desired.devices {
                guard let link = link(named: device.name), link.kind == "wireguard", !link.isUp else { continue }
                try rtnetlink.socket.perform(Link.setUpRequest(index: link.index))
                logger.info("set WireGuard device up", metadata: ["device": "\(device.name)"])
                changed = true
            }
            guard changed else { return }
            try readLinks()
            try readWireGuard()
        } catch {
            logger.error("bringing up WireGuard devices failed", metadata: ["error": "\(error)"])
        }
    }
}
