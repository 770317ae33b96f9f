import CBPF
import Glibc
import Netlink

/// The two LPM maps the programs look destinations up in.
public enum PrefixMap: String, Sendable, CaseIterable, CustomStringConvertible {
    /// VPN-client prefixes: LAN packets to these go to the tunnel.
    case clients = "client_prefixes"
    /// LAN prefixes: tunnel packets to these go to the LAN.
    case lan = "lan_prefixes"

    public var description: String { rawValue }
}

/// What the programs do with a destination that matches a prefix (longest match wins).
public enum PrefixAction: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    /// To the stack: e.g. the gateway's own /128 inside a redirected LAN prefix.
    case pass = 0
    case redirect = 1

    public var description: String { self == .pass ? "pass" : "redirect" }
}

extension Datapath {
    /// Every entry of `map`, as the kernel holds it now (LPM tries have no batch lookup:
    /// this walks `get_next_key`).
    public func entries(in map: PrefixMap) throws -> [IPPrefix: PrefixAction] {
        try Self.entries(of: self.map(map.rawValue).raw, map)
    }

    /// The entries of a map pinned by an earlier run, read without loading anything (for
    /// `wgkeeper plan`); nil when nothing is pinned for `tunnel`.
    public static func pinnedEntries(pinRoot: String, tunnel: String, in map: PrefixMap) throws -> [IPPrefix: PrefixAction]? {
        guard let fd = try Descriptor.pinned("\(pinDirectory(pinRoot: pinRoot, tunnel: tunnel))/\(map.rawValue)") else { return nil }
        return try entries(of: fd.raw, map)
    }

    /// Whether the kernel took a BPF_MAP_LOOKUP_BATCH on an LPM trie; nil until one was tried.
    nonisolated(unsafe) public internal(set) static var batchLookups: Bool?

    static func entries(of fd: Int32, _ map: PrefixMap) throws -> [IPPrefix: PrefixAction] {
        if batchLookups != false, let found = try batchEntries(of: fd, map) { return found }
        return try walkedEntries(of: fd, map)
    }

    /// The entries in chunks of 4 096 per system call; nil when the kernel has no batch lookup
    /// for LPM tries (then `walkedEntries` reads them, two system calls per entry).
    static func batchEntries(of fd: Int32, _ map: PrefixMap) throws -> [IPPrefix: PrefixAction]? {
        let chunk = 4096
        var result: [IPPrefix: PrefixAction] = [:]
        var keys = [UInt8](repeating: 0, count: 20 * chunk)
        var values = [UInt32](repeating: 0, count: chunk)
        var token = [UInt8](repeating: 0, count: 20), next = [UInt8](repeating: 0, count: 20)
        var first = true
        while true {
            var count = UInt32(chunk)
            let status = first
                ? wgk_map_lookup_batch(fd, nil, &next, &keys, &values, &count)
                : wgk_map_lookup_batch(fd, &token, &next, &keys, &values, &count)
            let code = status == -1 ? errno : -status
            _ = LibbpfLog.take()
            if status < 0, code != ENOENT {
                // ENOTSUPP (524) or EINVAL: no batch lookup here; anything else on the first call too.
                if first, batchLookups == nil { batchLookups = false; return nil }
                throw DatapathError("read map", map.rawValue, code: code, detail: "batch lookup")
            }
            batchLookups = true
            for i in 0..<Int(min(count, UInt32(chunk))) {
                guard let prefix = Self.prefix(fromKey: Array(keys[(20 * i)..<(20 * i + 20)])) else {
                    throw DatapathError("read map", map.rawValue, code: 0, detail: "malformed key")
                }
                result[prefix] = PrefixAction(rawValue: values[i]) ?? .pass
            }
            if status < 0 { return result }  // ENOENT: that was the last of them
            first = false
            token = next
        }
    }

    static func walkedEntries(of fd: Int32, _ map: PrefixMap) throws -> [IPPrefix: PrefixAction] {
        var result: [IPPrefix: PrefixAction] = [:]
        var key = [UInt8](repeating: 0, count: 20)
        var next = [UInt8](repeating: 0, count: 20)
        var first = true
        while true {
            let status = first ? bpf_map_get_next_key(fd, nil, &next) : bpf_map_get_next_key(fd, &key, &next)
            first = false
            if status == -ENOENT { break }
            try check(status, "iterate map", map.rawValue)
            key = next
            var value: UInt32 = 0
            let found = bpf_map_lookup_elem(fd, &key, &value)
            if found == -ENOENT { continue }  // deleted while we walked
            try check(found, "read map", map.rawValue)
            guard let prefix = Self.prefix(fromKey: key) else {
                throw DatapathError("read map", map.rawValue, code: 0, detail: "malformed key \(key)")
            }
            result[prefix] = PrefixAction(rawValue: value) ?? .pass
        }
        return result
    }

    /// Adds or changes one entry.
    public func set(_ action: PrefixAction, for prefix: IPPrefix, in map: PrefixMap) throws {
        var key = try Self.key(prefix, map)
        var value = action.rawValue
        try check(bpf_map_update_elem(self.map(map.rawValue).raw, &key, &value, UInt64(BPF_ANY)),
                  "write \(prefix) to map", map.rawValue)
    }

    /// Whether the kernel took a BPF_MAP_UPDATE_BATCH on an LPM trie; nil until one was tried.
    nonisolated(unsafe) public internal(set) static var batchUpdates: Bool?

    /// Adds or changes many entries of one map with one `BPF_MAP_UPDATE_BATCH` where the kernel
    /// takes it on an LPM trie, else (or from the first that fails) one update each. Returns the
    /// prefixes whose write failed, with the error.
    public func set(_ action: PrefixAction, for prefixes: [IPPrefix], in map: PrefixMap) -> [IPPrefix: DatapathError] {
        var failures: [IPPrefix: DatapathError] = [:]
        var keyed: [(prefix: IPPrefix, key: [UInt8])] = []
        for prefix in prefixes {
            do { keyed.append((prefix, try Self.key(prefix, map))) } catch let error as DatapathError { failures[prefix] = error } catch {}
        }
        var written = 0
        if Self.batchUpdates != false, keyed.count > 1 {
            let keys = keyed.flatMap(\.key)
            let values = [UInt32](repeating: action.rawValue, count: keyed.count)
            var count = UInt32(keyed.count)
            let result = wgk_map_update_batch(self.map(map.rawValue).raw, keys, values, &count)
            _ = LibbpfLog.take()
            if result == 0 {
                Self.batchUpdates = true
                return failures
            }
            let code = result == -1 ? errno : -result
            // ENOTSUPP (524): no batch operation for this map type; EINVAL: no batch command at all.
            if count == 0, Self.batchUpdates == nil, [524, EOPNOTSUPP, EINVAL].contains(code) {
                Self.batchUpdates = false
            }
            // The kernel stops at the first entry it cannot write: that one and the rest go one by one.
            written = Int(min(count, UInt32(keyed.count)))
        }
        for (prefix, _) in keyed[written...] {
            do { try set(action, for: prefix, in: map) } catch let error as DatapathError { failures[prefix] = error } catch {}
        }
        return failures
    }

    /// Removes one entry; true when it was there.
    @discardableResult
    public func remove(_ prefix: IPPrefix, from map: PrefixMap) throws -> Bool {
        var key = try Self.key(prefix, map)
        let result = bpf_map_delete_elem(self.map(map.rawValue).raw, &key)
        if result == -ENOENT { return false }
        try check(result, "delete \(prefix) from map", map.rawValue)
        return true
    }

    /// Makes `map` hold exactly `desired`; returns the prefixes whose write failed, with the
    /// error, so each failed entry can carry its own status.
    @discardableResult
    public func synchronize(_ map: PrefixMap, to desired: [IPPrefix: PrefixAction]) throws -> [IPPrefix: DatapathError] {
        let current = try entries(in: map)
        var failures: [IPPrefix: DatapathError] = [:]
        for (prefix, action) in desired where current[prefix.canonical] != action {
            do { try set(action, for: prefix, in: map) } catch let error as DatapathError { failures[prefix] = error }
        }
        let wanted = Set(desired.keys.map(\.canonical))
        for prefix in current.keys where !wanted.contains(prefix) {
            do { try remove(prefix, from: map) } catch let error as DatapathError { failures[prefix] = error }
        }
        return failures
    }

    /// `struct prefix_key` of bpf/datapath.bpf.c: prefix length (host order), then the address.
    static func key(_ prefix: IPPrefix, _ map: PrefixMap) throws -> [UInt8] {
        guard case .v6 = prefix.address else {
            throw DatapathError("write \(prefix) to map", map.rawValue, code: EAFNOSUPPORT, detail: "the datapath is IPv6 only")
        }
        return withUnsafeBytes(of: UInt32(prefix.length)) { Array($0) } + prefix.canonical.address.bytes
    }

    static func prefix(fromKey key: [UInt8]) -> IPPrefix? {
        let length = key[0..<4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        guard length <= 128, let address = IPAddress(bytes: key[4..<20]) else { return nil }
        return IPPrefix(address: address, length: UInt8(length))
    }
}
