import Glibc
import Netlink

/// The seam to WireGuard's generic netlink family (`WireGuardNetlink` conforms).
public protocol WireGuardControl {
    func device(named name: String) throws -> WireGuardDevice?
    func apply(device: String, _ change: WireGuardDeviceChange) throws
}

/// The seam to the datapath's pinned maps (issue 6).
public protocol DatapathMaps {
    func entries() throws -> Set<DatapathEntry>
    func insert(_ entry: DatapathEntry) throws
    func remove(_ entry: DatapathEntry) throws
    /// Inserts many at once (one batched map update where the kernel has it); returns the
    /// entries that failed, with the error.
    func insert(_ entries: [DatapathEntry]) -> [DatapathEntry: String]
}

extension DatapathMaps {
    public func insert(_ entries: [DatapathEntry]) -> [DatapathEntry: String] {
        var failed: [DatapathEntry: String] = [:]
        for entry in entries {
            do { try insert(entry) } catch { failed[entry] = "\(error)" }
        }
        return failed
    }
}

extension ObservedState {
    /// Reads what `plan` needs for `desired`. A part that cannot be read is left nil (unknown).
    public static func read(for desired: DesiredState, rtnetlink: RTNetlink, wireGuard: WireGuardControl?,
                            datapath: DatapathMaps? = nil, records: Records = Records()) throws -> ObservedState {
        var observed = ObservedState(links: try rtnetlink.links(), routes: try rtnetlink.routes(family: .inet6),
                                     proxies: try rtnetlink.proxyEntries(), addresses: try rtnetlink.addresses(family: .inet6),
                                     wireGuard: nil, datapath: nil)
        observed.sysctls = readSysctls(desired.sysctlKeys(records))
        // WireGuard and the datapath need privileges the routing dumps do not: without them
        // those parts stay unknown (their objects pending) instead of failing the whole read.
        if let wireGuard {
            do {
                var devices: [String: WireGuardDevice] = [:]
                for name in desired.wireGuardDeviceNames(records) where observed.link(named: name)?.kind == "wireguard" {
                    devices[name] = try wireGuard.device(named: name)
                }
                observed.wireGuard = devices
            } catch {
                observed.readProblems.append("WireGuard: \(error)")
            }
        } else {
            observed.readProblems.append("WireGuard: no generic-netlink client (is wireguard.ko loaded?)")
        }
        if let datapath {
            do { observed.datapath = try datapath.entries() } catch { observed.readProblems.append("datapath: \(error)") }
        }
        return observed
    }
}

/// Reads each sysctl; one that cannot be read (its interface is gone) is left out.
public func readSysctls(_ sysctls: [Sysctl]) -> [String: String] {
    var values: [String: String] = [:]
    for sysctl in sysctls { values[sysctl.key] = try? sysctl.read() }
    return values
}

extension DesiredState {
    /// The sysctls `plan` needs to see: those it sets, those it checks, those it must restore.
    public func sysctlKeys(_ records: Records) -> [Sysctl] {
        sysctls.map(\.sysctl) + safetyChecks.map(\.sysctl) + records.sysctls.keys.sorted().map(Sysctl.init)
    }

    /// The WireGuard devices `plan` needs to see: those configured, and those holding peers
    /// wgkeeper configured earlier.
    public func wireGuardDeviceNames(_ records: Records) -> [String] {
        let names = devices.map(\.name)
        return names + records.peers.keys.filter { !names.contains($0) }.sorted()
    }
}

/// One kernel write to make for a change.
public enum Operation: Sendable {
    case netlink(Request)
    case sysctl(Sysctl, String)
    case wireGuard(device: String, WireGuardDeviceChange)
    case datapath(DatapathEntry, insert: Bool)
}

extension Change {
    /// The write for this change. A peer with a host-name endpoint gets it from `resolve`.
    public func operation(resolve: (HostEndpoint) -> Endpoint? = resolveEndpoint) -> Operation {
        switch object {
        case .link(let name, .create(let kind)):
            return .netlink(Link.createRequest(name: name, kind: kind, up: true))
        case .link(_, .setUp(let index)):
            return .netlink(Link.setUpRequest(index: index))
        case .link(_, .delete(let index)):
            return .netlink(Link.deleteRequest(index: index))
        case .wireGuardDevice(let name, let change):
            return .wireGuard(device: name, change)
        case .sysctl(let sysctl, let value, _):
            return .sysctl(sysctl, value)
        case .peer(let device, _, var change, let host):
            if let host { change.endpoint = resolve(host) }
            return .wireGuard(device: device, WireGuardDeviceChange(peers: [change]))
        case .route(let route, _):
            switch action {
            case .add: return .netlink(route.addRequest())
            case .replace: return .netlink(route.replaceRequest())
            case .remove: return .netlink(route.deleteRequest())
            }
        case .proxy(let entry, _):
            switch action {
            case .add: return .netlink(entry.addRequest())
            case .replace: return .netlink(entry.replaceRequest())
            case .remove: return .netlink(entry.deleteRequest())
            }
        case .datapath(let entry):
            return .datapath(entry, insert: action != .remove)
        }
    }
}

/// Resolves a host-name endpoint (IPv6 preferred), or nil when it does not resolve. Blocks for
/// as long as the resolver does: the daemon calls it only on its resolver thread.
public func resolveEndpoint(_ host: HostEndpoint) -> Endpoint? {
    try? lookUpEndpoint(host).get()
}

/// As `resolveEndpoint`, with the resolver's reason when the name does not resolve.
public func lookUpEndpoint(_ host: HostEndpoint) -> Result<Endpoint, EndpointLookupError> {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(host.host, nil, &hints, &list)
    guard status == 0, let list else { return .failure(EndpointLookupError(description: String(cString: gai_strerror(status)))) }
    defer { freeaddrinfo(list) }
    var found: [IPAddress] = []
    var cursor: UnsafeMutablePointer<addrinfo>? = list
    while let info = cursor {
        if info.pointee.ai_family == AF_INET6, let raw = info.pointee.ai_addr {
            let address = raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
            found.append(.v6(IPv6Address(bytes: withUnsafeBytes(of: address, Array.init))!))
        } else if info.pointee.ai_family == AF_INET, let raw = info.pointee.ai_addr {
            let address = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            found.append(.v4(IPv4Address(bytes: withUnsafeBytes(of: address, Array.init))!))
        }
        cursor = info.pointee.ai_next
    }
    guard let address = found.first(where: { $0.family == .inet6 }) ?? found.first else {
        return .failure(EndpointLookupError(description: "no IPv6 or IPv4 address"))
    }
    return .success(Endpoint(address: address, port: host.port))
}

public struct EndpointLookupError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// The outcome of one change; `error` never holds a secret.
public struct ChangeResult: Sendable {
    public var change: Change
    public var error: String?

    public var succeeded: Bool { error == nil }

    public init(change: Change, error: String?) {
        self.change = change
        self.error = error
    }
}

/// Applies a plan's changes to the kernel. Routes and proxy entries go out in one batch;
/// a failed change does not stop the others.
public struct KernelApplier {
    public var rtnetlink: RTNetlink
    public var wireGuard: WireGuardControl?
    public var datapath: DatapathMaps?
    public var resolve: (HostEndpoint) -> Endpoint?

    public init(rtnetlink: RTNetlink, wireGuard: WireGuardControl? = nil, datapath: DatapathMaps? = nil,
                resolve: @escaping (HostEndpoint) -> Endpoint? = resolveEndpoint) {
        self.rtnetlink = rtnetlink
        self.wireGuard = wireGuard
        self.datapath = datapath
        self.resolve = resolve
    }

    /// Results in the order of `changes`.
    public func apply(_ changes: [Change]) -> [ChangeResult] {
        var results = changes.map { ChangeResult(change: $0, error: nil) }
        var batch: [(Int, Request)] = []
        func flush() {
            guard !batch.isEmpty else { return }
            do {
                for (slot, outcome) in zip(batch.map(\.0), try rtnetlink.perform(batch.map(\.1))) {
                    if case .failure(let error) = outcome { results[slot].error = error.description }
                }
            } catch {
                for (slot, _) in batch { results[slot].error = "\(error)" }
            }
            batch = []
        }
        // Peer changes of one device go out as one set-device request (split into as few
        // messages as fit): 10 000 new peers cost a few dozen messages, not 10 000 round trips.
        var peers: (device: String, slots: [Int], changes: [WireGuardPeerChange])?
        func flushPeers() {
            guard let group = peers else { return }
            peers = nil
            guard let wireGuard else {
                for slot in group.slots { results[slot].error = "WireGuard control unavailable" }
                return
            }
            if (try? wireGuard.apply(device: group.device, WireGuardDeviceChange(peers: group.changes))) != nil { return }
            // Something in the group failed: apply one by one to say which.
            for (slot, peer) in zip(group.slots, group.changes) {
                do { try wireGuard.apply(device: group.device, WireGuardDeviceChange(peers: [peer])) } catch {
                    results[slot].error = "\(changes[slot].subject): \(error)"
                }
            }
        }
        // Consecutive map inserts go out together: 10 000 client entries are a few batched
        // map updates where the kernel takes them, not 10 000 system calls.
        var inserts: [(slot: Int, entry: DatapathEntry)] = []
        func flushInserts() {
            guard !inserts.isEmpty else { return }
            defer { inserts = [] }
            guard let datapath else {
                for (slot, _) in inserts { results[slot].error = "datapath unavailable" }
                return
            }
            let failed = datapath.insert(inserts.map(\.entry))
            for (slot, entry) in inserts { if let error = failed[entry] { results[slot].error = error } }
        }
        for (slot, change) in changes.enumerated() {
            let operation = change.operation(resolve: resolve)
            if case .datapath(let entry, insert: true) = operation {
                flush()
                flushPeers()
                inserts.append((slot, entry))
                continue
            }
            flushInserts()
            if change.kind < .route { flush() }
            if case .wireGuard(let device, let deviceChange) = operation, case .peer = change.object,
               deviceChange.privateKey == nil, deviceChange.listenPort == nil, !deviceChange.replacePeers {
                if peers?.device != device {
                    flushPeers()
                    peers = (device, [], [])
                }
                peers!.slots.append(slot)
                peers!.changes.append(contentsOf: deviceChange.peers)
                continue
            }
            flushPeers()
            switch operation {
            case .netlink(let request):
                batch.append((slot, request))
            case .sysctl(let sysctl, let value):
                do { try sysctl.write(value) } catch { results[slot].error = "write \(sysctl): \(error)" }
            case .wireGuard(let device, let deviceChange):
                guard let wireGuard else { results[slot].error = "WireGuard control unavailable"; continue }
                do { try wireGuard.apply(device: device, deviceChange) } catch { results[slot].error = "\(change.subject): \(error)" }
            case .datapath(let entry, let insert):
                flush()
                guard let datapath else { results[slot].error = "datapath unavailable"; continue }
                do { try insert ? datapath.insert(entry) : datapath.remove(entry) } catch { results[slot].error = "\(error)" }
            }
        }
        flushInserts()
        flushPeers()
        flush()
        return results
    }
}

extension WireGuardNetlink: WireGuardControl {
    public func apply(device name: String, _ change: WireGuardDeviceChange) throws {
        try apply(device: name, change, messageBytes: 32 * 1024)
    }
}
