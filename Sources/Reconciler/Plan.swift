import Netlink

/// The outcome of comparing desired with observed state: the writes to make, in order, and what
/// cannot or must not be written.
public struct Plan: Hashable, Sendable {
    /// Ordered links → sysctls → peers → routes → proxies → datapath.
    public var changes: [Change] = []
    public var pending: [Pending] = []
    public var conflicts: [Conflict] = []
    /// Desired writes a safety rule holds back; nothing is written for them.
    public var refused: [Refusal] = []
    public var violations: [Violation] = []

    public init() {}

    public var isEmpty: Bool { changes.isEmpty }
}

/// Compares `desired` with `observed`. Pure and deterministic: the same inputs give the same plan.
///
/// Ownership (the claim is a property of the object, never of the configuration loaded now):
/// a route or proxy entry carrying `routeProtocol` is wgkeeper's wherever it sits, and is
/// removed when not desired; every peer of a managed WireGuard device is wgkeeper's; a sysctl
/// or device is wgkeeper's while `records` says so. Nothing else is ever changed: a foreign
/// object holding a desired object's identity is reported as a conflict.
public func plan(_ desired: DesiredState, _ observed: ObservedState, lastApplied: LastApplied? = nil,
                 records: Records = Records()) -> Plan {
    // What a safety rule holds back is planned as if not configured: not written, and removed
    // when already there.
    let (allowed, refused) = GatewayAddressRule.apply(desired, observed)
    var planner = Planner(desired: allowed, observed: observed, lastApplied: lastApplied, records: records)
    planner.planDevicesAndPeers()
    planner.planSysctls()
    planner.planRoutes()
    planner.planProxies()
    planner.planDatapath()
    planner.result.changes.sort { $0.kind < $1.kind }  // stable: keeps each kind's own order
    planner.result.refused += refused
    planner.result.refused.sort { $0.kind < $1.kind }
    return planner.result
}

struct Planner {
    let desired: DesiredState
    let observed: ObservedState
    let lastApplied: LastApplied?
    let records: Records
    let indexByName: [String: Int32]
    let nameByIndex: [Int32: String]
    var result = Plan()

    init(desired: DesiredState, observed: ObservedState, lastApplied: LastApplied?, records: Records) {
        self.desired = desired
        self.observed = observed
        self.lastApplied = lastApplied
        self.records = records
        indexByName = Dictionary(observed.links.map { ($0.name, $0.index) }, uniquingKeysWith: { a, _ in a })
        nameByIndex = Dictionary(observed.links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
    }

    private func missing(_ device: String) -> String { "device \(device) missing" }

    /// Devices this plan deletes: what sits on them goes with them (no removal of its own) and
    /// holds no identity a desired object needs.
    private var deletedIndexes: Set<Int32> {
        Set(result.changes.compactMap { if case .link(_, .delete(let index)) = $0.object { index } else { nil } })
    }

    /// The observed routes and proxy entries, less those on devices this plan deletes.
    private var remainingRoutes: [Route] {
        let deleted = deletedIndexes
        return observed.routes.filter { $0.family == .inet6 && !deleted.contains($0.outputInterface ?? 0) }
    }

    private var remainingProxies: [ProxyEntry] {
        let deleted = deletedIndexes
        return observed.proxies.filter { !deleted.contains($0.interfaceIndex) }
    }

    /// The name of the device an observed object sits on, for messages.
    private func deviceName(_ index: Int32?) -> String { Plan.deviceName(index, in: nameByIndex) }

    // MARK: links and peers

    mutating func planDevicesAndPeers() {
        var peerChanges: [Change] = []
        for device in desired.devices.sorted(by: { $0.name < $1.name }) {
            let why: String
            var kernel: WireGuardDevice?
            if let link = observed.link(named: device.name) {
                if link.kind != "wireguard" {
                    why = "\(device.name) is a \(link.kind ?? "kindless") device, not WireGuard"
                } else if let devices = observed.wireGuard {
                    if !link.isUp {
                        result.changes.append(Change(.replace, .link(name: device.name, .setUp(index: link.index)),
                                                     reason: .differs(["state"]), detail: "(was down)"))
                    }
                    kernel = devices[device.name]
                    why = "WireGuard state of \(device.name) not read"
                } else {
                    why = "the WireGuard generic netlink family is not available (is the wireguard module loaded?)"
                }
            } else {
                // Creating the link also loads the wireguard module; peers follow once it exists.
                result.changes.append(Change(.add, .link(name: device.name, .create(kind: "wireguard")), reason: .missing))
                why = "\(missing(device.name)): created first"
            }
            guard let kernel else {
                // A device being created is counted by its change, not also as pending.
                if observed.link(named: device.name) != nil {
                    result.pending.append(Pending(kind: .link, object: "device \(device.name)", reason: why))
                }
                for peer in device.peers.sorted(by: { $0.name < $1.name }) {
                    result.pending.append(Pending(kind: .peer, object: "peer \(peer.name) dev \(device.name)", reason: why))
                }
                continue
            }
            planDevice(device, kernel)
            peerChanges += peers(device, kernel)
        }
        // A device wgkeeper created and the configuration no longer names goes, as on a fresh start;
        // on one it did not create, the peers it configured go.
        let named = Set(desired.devices.map(\.name))
        for name in records.createdDevices.sorted() where !named.contains(name) {
            guard let link = observed.link(named: name), link.kind == "wireguard" else { continue }
            result.changes.append(Change(.remove, .link(name: name, .delete(index: link.index)), reason: .unexpected))
        }
        for name in records.peers.keys.sorted() where !named.contains(name) && !records.createdDevices.contains(name) {
            guard observed.link(named: name)?.kind == "wireguard", let kernel = observed.wireGuard?[name] else { continue }
            peerChanges += peerRemovals(kernel, device: name) { records.configuredPeer($0, device: name) }
        }
        result.changes += peerChanges
    }

    private mutating func planDevice(_ device: DesiredWireGuardDevice, _ kernel: WireGuardDevice) {
        var change = WireGuardDeviceChange()
        var fields: [String] = []
        var details: [String] = []
        if let key = device.privateKey, kernel.privateKey != key {
            change.privateKey = key
            fields.append("private_key")
            details.append("private_key: differs")
        }
        if let port = device.listenPort, kernel.listenPort != port {
            change.listenPort = port
            fields.append("listen_port")
            details.append("listen_port: \(port) (was \(kernel.listenPort))")
        }
        guard !fields.isEmpty else { return }
        result.changes.append(Change(.replace, .wireGuardDevice(name: device.name, change), reason: .differs(fields),
                                     detail: details.joined(separator: "; ")))
    }

    private func peers(_ device: DesiredWireGuardDevice, _ kernel: WireGuardDevice) -> [Change] {
        var changes: [Change] = []
        let kernelPeers = Dictionary(kernel.peers.map { ($0.publicKey, $0) }, uniquingKeysWith: { a, _ in a })
        let wanted = Set(device.peers.map(\.publicKey))
        for peer in device.peers.sorted(by: { $0.name < $1.name }) {
            if let current = kernelPeers[peer.publicKey] {
                if let change = update(peer, current, device: device.name) { changes.append(change) }
            } else {
                changes.append(create(peer, device: device.name))
            }
        }
        // Unknown peers go with prune_peers; without it only those wgkeeper configured do.
        changes += peerRemovals(kernel, device: device.name) { key in
            !wanted.contains(key) && (device.prunePeers || records.configuredPeer(key, device: device.name))
        }
        return changes
    }

    private func peerRemovals(_ kernel: WireGuardDevice, device: String, where unwanted: (WireGuardKey) -> Bool) -> [Change] {
        kernel.peers.map(\.publicKey).filter(unwanted).sorted { $0.base64 < $1.base64 }.map { key in
            Change(.remove, .peer(device: device, name: nil, WireGuardPeerChange(publicKey: key, remove: true), hostEndpoint: nil),
                   reason: .unexpected)
        }
    }

    private func create(_ peer: DesiredPeer, device: String) -> Change {
        let allowed = peer.allowedIPs.sorted()
        var change = WireGuardPeerChange(publicKey: peer.publicKey, presharedKey: peer.presharedKey,
                                         persistentKeepalive: peer.persistentKeepalive == 0 ? nil : peer.persistentKeepalive,
                                         allowedIPs: allowed)
        var host: HostEndpoint?
        switch peer.endpoint {
        case .address(let endpoint): change.endpoint = endpoint
        case .host(let name, let port): host = HostEndpoint(host: name, port: port)
        case nil: break
        }
        var detail = "allowed_ips: \(allowed.map(\.description).joined(separator: ","))"
        if let endpoint = peer.endpoint { detail += "; endpoint: \(endpoint)" }
        return Change(.add, .peer(device: device, name: peer.name, change, hostEndpoint: host), reason: .missing, detail: detail)
    }

    private func update(_ peer: DesiredPeer, _ current: WireGuardPeer, device: String) -> Change? {
        var change = WireGuardPeerChange(publicKey: peer.publicKey, updateOnly: true)
        var fields: [String] = []
        var details: [String] = []
        var host: HostEndpoint?

        let kernelPSK = current.presharedKey.flatMap { $0.key.isZero ? nil : $0 }
        if peer.presharedKey != kernelPSK {
            change.presharedKey = peer.presharedKey ?? PresharedKey(WireGuardKey(bytes: [UInt8](repeating: 0, count: 32))!)
            fields.append("preshared_key")
            details.append("preshared_key: differs")
        }
        if peer.persistentKeepalive != current.persistentKeepalive {
            change.persistentKeepalive = peer.persistentKeepalive
            fields.append("persistent_keepalive")
            details.append("persistent_keepalive: \(peer.persistentKeepalive) (was \(current.persistentKeepalive))")
        }

        let want = Set(peer.allowedIPs), have = Set(current.allowedIPs)
        let added = want.subtracting(have).sorted(), removed = have.subtracting(want).sorted()
        if !added.isEmpty || !removed.isEmpty {
            // Without a per-IP remove, dropping an allowed IP means replacing the list.
            change.replaceAllowedIPs = !removed.isEmpty
            change.allowedIPs = removed.isEmpty ? added : peer.allowedIPs.sorted()
            fields.append("allowed_ips")
            details.append("allowed_ips: " + (added.map { "+\($0)" } + removed.map { "-\($0)" }).joined(separator: " "))
        }

        if let configured = peer.endpoint, endpointNeedsWrite(configured, current, device: device) {
            switch configured {
            case .address(let endpoint): change.endpoint = endpoint
            case .host(let name, let port): host = HostEndpoint(host: name, port: port)
            }
            fields.append("endpoint")
            details.append("endpoint: \(configured) (was \(current.endpoint.map(\.description) ?? "none"))")
        }

        guard !fields.isEmpty else { return nil }
        return Change(.replace, .peer(device: device, name: peer.name, change, hostEndpoint: host),
                      reason: .differs(fields), detail: details.joined(separator: "; "))
    }

    /// README, configuration reference: set the endpoint when the peer has none, or when the configured value changed
    /// since it was last applied; otherwise a different kernel endpoint is roaming, left alone.
    private func endpointNeedsWrite(_ configured: ConfiguredEndpoint, _ current: WireGuardPeer, device: String) -> Bool {
        guard let kernel = current.endpoint else { return true }
        if case .address(let endpoint) = configured, endpoint == kernel { return false }
        let key = LastApplied.PeerKey(device: device, publicKey: current.publicKey)
        guard let record = lastApplied?.endpoint(key) else { return false }
        return record != configured
    }

    // MARK: sysctls

    mutating func planSysctls() {
        for item in desired.sysctls.sorted(by: { ($0.interface, $0.name) < ($1.interface, $1.name) }) {
            let sysctl = item.sysctl
            if !["all", "default"].contains(item.interface), indexByName[item.interface] == nil {
                result.pending.append(Pending(kind: .sysctl, object: "sysctl \(sysctl)", reason: missing(item.interface)))
                continue
            }
            let current = observed.sysctls[sysctl.key]
            if let why = refusal(item) {
                // Refused even when already set: a fresh start would not set it. What wgkeeper set
                // goes back to the value it found; an operator's own setting is reported, not undone.
                result.refused.append(Refusal(kind: .sysctl, object: "sysctl \(sysctl) = \(item.value)", reason: why))
                if let current, current == item.value, let original = records.sysctls[sysctl.key], original != current {
                    result.changes.append(Change(.replace, .sysctl(sysctl, value: original, previous: current), reason: .restore,
                                                 detail: "(was \(current); refused now, restoring the value found before wgkeeper's first write)"))
                }
                continue
            }
            guard current != item.value else { continue }
            result.changes.append(Change(.replace, .sysctl(sysctl, value: item.value, previous: current),
                                         reason: current == nil ? .missing : .differs(["value"]),
                                         detail: "(was \(current ?? "unread"))"))
        }
        // Sysctls no longer managed go back to what they held before wgkeeper's first write.
        let wanted = Set(desired.sysctls.map(\.sysctl.key))
        for (key, original) in records.sysctls.sorted(by: { $0.key < $1.key }) where !wanted.contains(key) {
            let sysctl = Sysctl(key)
            guard let current = observed.sysctls[key], current != original else { continue }
            result.changes.append(Change(.replace, .sysctl(sysctl, value: original, previous: current), reason: .restore,
                                         detail: "(was \(current); restoring the value found before wgkeeper's first write)"))
        }
        for check in desired.safetyChecks {
            if let actual = observed.sysctls[check.sysctl.key], actual != check.expected {
                result.violations.append(Violation(check: check, actual: actual))
            }
        }
    }

    /// docs/ARCHITECTURE.md, kernel facts: an interface with `forwarding = 1` joins the subnet-router anycast address of
    /// every prefix shorter than /127 it holds (addrconf_join_anycast()), and would then answer
    /// for the LAN router's address. So LAN forwarding stays off while such an address is there.
    private func refusal(_ item: DesiredSysctl) -> String? {
        guard let gateway = desired.gateway, !gateway.allowLANAnycast, item.interface == gateway.lan,
              item.name == "forwarding", item.value == "1" else { return nil }
        let unsafe = unsafeLANAddresses(lan: observed.link(named: gateway.lan), observed.addresses)
        guard !unsafe.isEmpty else { return nil }
        let names = unsafe.map(\.prefix.description).joined(separator: ", ")
        let anycast = unsafe.map { $0.prefix.canonical.address.description }.joined(separator: ", ")
        return "refusing \(item.sysctl)=1: \(gateway.lan) holds \(names); with forwarding on, the kernel would join the "
            + "subnet-router anycast \(anycast) and answer for the LAN's router. Keep only link-local or /128 addresses "
            + "on \(gateway.lan) (an on-link route covers the prefix), or set gateway.allow_lan_anycast: true"
    }

    // MARK: routes

    /// Desired and kernel routes both in identity order, walked side by side: no table or set
    /// of either (at 50 000 routes those cost 16 MiB for the length of a plan). Each sort is
    /// stable, so routes at one identity keep the kernel's order, desired ones the configuration's.
    mutating func planRoutes() {
        let protocolNumber = desired.routeProtocol
        var routes = remainingRoutes
        routes.sort { RouteIdentity($0) < RouteIdentity($1) }
        let items = desired.routes.sorted(by: { $0.identity < $1.identity })
        var unexpected: [Route] = []
        var extra: [Route] = []
        var next = 0  // the first kernel route not looked at yet
        var first = 0
        while first < items.count {
            let identity = items[first].identity
            var end = first + 1
            while end < items.count, items[end].identity == identity { end += 1 }
            // Kernel routes before this identity are at none a desired route holds.
            while next < routes.count, RouteIdentity(routes[next]) < identity {
                if routes[next].protocolNumber == protocolNumber { unexpected.append(routes[next]) }
                next += 1
            }
            var last = next
            while last < routes.count, RouteIdentity(routes[last]) == identity { last += 1 }
            let present = Array(routes[next ..< last])
            // A desired route whose device is missing holds no identity: a fresh start would have
            // no route there, so ours at that identity goes unless another desired route holds it.
            var wanted = false
            for item in items[first ..< end] {
                guard let index = indexByName[item.device] else {
                    result.pending.append(Pending(kind: .route, object: "route \(item.destination) dev \(item.device)",
                                                  reason: missing(item.device)))
                    continue
                }
                wanted = true
                let route = Route(destination: item.destination, table: item.table, protocolNumber: protocolNumber,
                                  outputInterface: index, gateway: item.gateway, metric: item.metric)
                // The names, not `deviceName`: that method passed on would copy the planner each time.
                extra += result.planRoute(route, device: item.device, present: present, routeProtocol: protocolNumber,
                                          names: nameByIndex)
            }
            if !wanted { unexpected += present.filter { $0.protocolNumber == protocolNumber } }
            next = last
            first = end
        }
        unexpected += routes[next...].filter { $0.protocolNumber == protocolNumber }
        unexpected += extra
        for route in unexpected.sorted(by: { (RouteIdentity($0), $0.outputInterface ?? 0) < (RouteIdentity($1), $1.outputInterface ?? 0) }) {
            result.changes.append(Change(.remove, .route(route, device: deviceName(route.outputInterface)), reason: .unexpected))
        }
    }

    // MARK: proxies

    /// The kernel's entries sorted by device and address and searched, the ones a desired entry
    /// holds marked beside them: no table or set of either (at 50 000 entries those cost 12 MiB
    /// for the length of a plan).
    mutating func planProxies() {
        let protocolNumber = desired.routeProtocol
        var proxies = remainingProxies
        proxies.sort { ($0.interfaceIndex, $0.address) < ($1.interfaceIndex, $1.address) }
        var wanted = [Bool](repeating: false, count: proxies.count)
        /// The entries at (index, address), in the kernel's order (the sort is stable).
        func equalRange(_ index: Int32, _ address: IPAddress) -> Range<Int> {
            var low = 0, high = proxies.count
            while low < high {
                let middle = (low + high) / 2
                if (proxies[middle].interfaceIndex, proxies[middle].address) < (index, address) { low = middle + 1 } else { high = middle }
            }
            var end = low
            while end < proxies.count, proxies[end].interfaceIndex == index, proxies[end].address == address { end += 1 }
            return low ..< end
        }
        let sorted = desired.proxies.sorted { ($0.device, $0.address) < ($1.device, $1.address) }
        for item in sorted {
            guard let index = indexByName[item.device] else {
                result.pending.append(Pending(kind: .proxy, object: "proxy \(item.address) dev \(item.device)",
                                              reason: missing(item.device)))
                continue
            }
            let range = equalRange(index, item.address)
            for i in range { wanted[i] = true }
            let entry = ProxyEntry(address: item.address, interfaceIndex: index, protocolNumber: protocolNumber)
            // Of several at one place (a kernel reports one), the last read stands, as in a table.
            switch range.isEmpty ? nil : proxies[range.upperBound - 1] {
            case nil:
                result.changes.append(Change(.add, .proxy(entry, device: item.device), reason: .missing))
            case let current? where current.protocolNumber != protocolNumber:
                result.conflicts.append(Conflict(kind: .proxy, desired: "proxy \(item.address) dev \(item.device)",
                                                 foreign: "proxy \(current.address) dev \(item.device) proto \(current.protocolNumber)"))
            case let current? where current.router:
                // Ours with the router flag, which wgkeeper never sets: written again without it.
                result.changes.append(Change(.replace, .proxy(entry, device: item.device), reason: .differs(["router"]), detail: "(was router)"))
            default:
                break
            }
        }
        for (i, entry) in proxies.enumerated() where entry.protocolNumber == protocolNumber && !wanted[i] {
            result.changes.append(Change(.remove, .proxy(entry, device: deviceName(entry.interfaceIndex)), reason: .unexpected))
        }
    }

    // MARK: datapath

    mutating func planDatapath() {
        guard let datapath = desired.datapath else { return }
        let wanted = Set(datapath.entries)
        let why: String?
        if let device = [datapath.lan, datapath.tunnel].first(where: { indexByName[$0] == nil }) {
            why = missing(device)
        } else if observed.datapath == nil {
            why = "datapath not loaded"
        } else {
            why = nil
        }
        guard let present = observed.datapath, why == nil else {
            for entry in wanted.sorted() {
                result.pending.append(Pending(kind: .datapath, object: "datapath \(entry)", reason: why ?? ""))
            }
            return
        }
        for entry in wanted.subtracting(present).sorted() {
            result.changes.append(Change(.add, .datapath(entry), reason: .missing))
        }
        for entry in present.subtracting(wanted).sorted() {
            result.changes.append(Change(.remove, .datapath(entry), reason: .unexpected))
        }
    }
}

/// Global addresses on the gateway's LAN whose prefix would make it claim an anycast address
/// once the LAN forwards: shorter than /127 and not link-local.
public func unsafeLANAddresses(lan: Link?, _ addresses: [Address]) -> [Address] {
    guard let lan else { return [] }
    return addresses.filter { address in
        guard address.interfaceIndex == lan.index, case .v6(let a) = address.prefix.address else { return false }
        return !a.isLinkLocal && address.prefix.length < 127
    }.sorted { $0.prefix < $1.prefix }
}

extension Plan {
    /// The name of the device with this index among `names` (by index), for messages.
    static func deviceName(_ index: Int32?, in names: [Int32: String]) -> String {
        guard let index else { return "none" }
        return names[index] ?? "index \(index)"
    }

    /// One desired route against the routes the kernel holds at its identity (`present`), as
    /// both the full plan and `RoutePlanner` decide it. Ours means our protocol, wherever it
    /// sits; anything else there is foreign, a conflict. Otherwise ours is kept (the one with the
    /// same next hop, else the first) and replaced when a field differs, or the route is added.
    /// Returns our other routes at that identity (`ip route append`), which go.
    mutating func planRoute(_ route: Route, device: String, present: [Route], routeProtocol: UInt8,
                            names: [Int32: String]) -> [Route] {
        func deviceName(_ index: Int32?) -> String { Plan.deviceName(index, in: names) }
        if let foreign = present.first(where: { $0.protocolNumber != routeProtocol }) {
            conflicts.append(Conflict(kind: .route, desired: "route " + Change.describe(route, device: device),
                                      foreign: "route " + Change.describe(foreign, device: deviceName(foreign.outputInterface))))
            return []
        }
        guard let ours = present.first(where: { $0.sameNextHop(route) }) ?? present.first else {
            changes.append(Change(.add, .route(route, device: device), reason: .missing))
            return []
        }
        var fields: [String] = []
        if ours.outputInterface != route.outputInterface { fields.append("dev") }
        if ours.gateway != route.gateway { fields.append("via") }
        if ours.type != route.type { fields.append("type") }
        if ours.scope != route.scope { fields.append("scope") }
        // What wgkeeper never sets (an MTU, an encapsulation, …): a replace writes the route without it.
        fields += ours.extras.subtracting(route.extras).names
        if !fields.isEmpty {
            let was = Change.describe(ours, device: deviceName(ours.outputInterface))
            changes.append(Change(.replace, .route(route, device: device), reason: .differs(fields), detail: "(was \(was))"))
        }
        return present.filter { $0 != ours }
    }
}
