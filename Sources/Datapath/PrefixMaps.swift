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
    /// Every entry of `map`, as the kernel holds it now.
    public func entries(in map: PrefixMap) throws -> [IPPrefix: PrefixAction] {
        try read(map).entries()
    }

    /// Every entry of `map` as the kernel returned it, decoded only on demand: a poll compares
    /// the read's digest with the last one's before paying for the decoding.
    public func read(_ map: PrefixMap) throws -> PrefixMapRead {
        try Self.read(of: self.map(map.rawValue).raw, map)
    }

    /// What the kernel says `map`'s entries take in memory: `memlock` in the map's fdinfo. Since
    /// Linux 6.4 an LPM trie's figure is its entry count times one entry's size
    /// (`trie_mem_usage`), so it moves with every entry added or removed; before, it is fixed by
    /// the map's size (`footprintCountsEntries`). Nil when it cannot be read.
    public func footprint(_ map: PrefixMap) -> UInt64? {
        Self.footprint(of: self.map(map.rawValue).raw)
    }

    /// Whether this kernel's `footprint` of an LPM trie counts its entries (Linux 6.4 gave each
    /// map type its own memory figure).
    public static let footprintCountsEntries = AttachMode.kernelRelease >= (6, 4)

    static func footprint(of fd: Int32) -> UInt64? {
        let file = open("/proc/self/fdinfo/\(fd)", O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { return nil }
        defer { close(file) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        var used = 0
        while used < buffer.count {
            let got = buffer.withUnsafeMutableBytes { Glibc.read(file, $0.baseAddress! + used, $0.count - used) }
            if got < 0, errno == EINTR { continue }
            guard got > 0 else { break }
            used += got
        }
        let field = Array("memlock:".utf8)
        for line in buffer[..<used].split(separator: UInt8(ascii: "\n")) {
            guard line.starts(with: field) else { continue }
            var value: UInt64 = 0, digits = 0
            for byte in line.dropFirst(field.count) where byte != UInt8(ascii: "\t") && byte != UInt8(ascii: " ") {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), digits < 19 else { return nil }
                value = value * 10 + UInt64(byte - UInt8(ascii: "0"))
                digits += 1
            }
            return digits > 0 ? value : nil
        }
        return nil
    }

    /// The entries of a map pinned by an earlier run, read without loading anything (for
    /// `wgkeeper plan`); nil when nothing is pinned for `tunnel`.
    public static func pinnedEntries(pinRoot: String, tunnel: String, in map: PrefixMap) throws -> [IPPrefix: PrefixAction]? {
        guard let fd = try Descriptor.pinned("\(pinDirectory(pinRoot: pinRoot, tunnel: tunnel))/\(map.rawValue)") else { return nil }
        return try read(of: fd.raw, map).entries()
    }

    /// Whether the kernel took a BPF_MAP_LOOKUP_BATCH on an LPM trie; nil until one was tried.
    nonisolated(unsafe) public internal(set) static var batchLookups: Bool?

    static func read(of fd: Int32, _ map: PrefixMap) throws -> PrefixMapRead {
        if batchLookups != false, let found = try batchRead(of: fd, map) { return found }
        return try walkedRead(of: fd, map)
    }

    /// The entries in chunks of 4 096 per system call; nil when the kernel has no batch lookup
    /// for LPM tries (then `walkedRead` reads them, two system calls per entry).
    static func batchRead(of fd: Int32, _ map: PrefixMap) throws -> PrefixMapRead? {
        let chunk = 4096
        var read = PrefixMapRead(map: map)
        var keys = [UInt8](repeating: 0, count: PrefixMapRead.keySize * chunk)
        var values = [UInt32](repeating: 0, count: chunk)
        var token = [UInt8](repeating: 0, count: PrefixMapRead.keySize), next = token
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
            let got = Int(min(count, UInt32(chunk)))
            read.keys += keys[..<(PrefixMapRead.keySize * got)]
            read.values += values[..<got]
            if status < 0 { return read.finished() }  // ENOENT: that was the last of them
            first = false
            token = next
        }
    }

    static func walkedRead(of fd: Int32, _ map: PrefixMap) throws -> PrefixMapRead {
        var read = PrefixMapRead(map: map)
        var key = [UInt8](repeating: 0, count: PrefixMapRead.keySize)
        var next = key
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
            read.keys += key
            read.values.append(value)
        }
        return read.finished()
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

    static func prefix(fromKey key: ArraySlice<UInt8>) -> IPPrefix? {
        let base = key.startIndex
        let length = key[base..<(base + 4)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        guard length <= 128, let address = IPAddress(bytes: key[(base + 4)..<(base + 20)]) else { return nil }
        return IPPrefix(address: address, length: UInt8(length))
    }
}

/// One read of a prefix map: its keys and values as the kernel returned them, in the kernel's
/// order, and their digest. The same entries read twice give the same bytes (the trie is walked
/// in the order of its keys); different bytes are decoded, so a digest can only err towards work.
public struct PrefixMapRead: Sendable {
    /// `struct prefix_key`: a 32-bit prefix length, then 16 address bytes.
    static let keySize = 20
    let map: PrefixMap
    var keys: [UInt8] = []
    var values: [UInt32] = []
    public private(set) var digest = ReadDigest.Builder().finalize()

    init(map: PrefixMap) { self.map = map }

    public var count: Int { values.count }

    mutating func finished() -> PrefixMapRead {
        var builder = ReadDigest.Builder()
        keys.withUnsafeBytes { builder.combine(piece: $0) }
        values.withUnsafeBytes { builder.combine(piece: $0) }
        digest = builder.finalize()
        return self
    }

    public func entries() throws -> [IPPrefix: PrefixAction] {
        var result: [IPPrefix: PrefixAction] = [:]
        result.reserveCapacity(count)
        for i in 0..<count {
            guard let prefix = Datapath.prefix(fromKey: keys[(Self.keySize * i)..<(Self.keySize * (i + 1))]) else {
                throw DatapathError("read map", map.rawValue, code: 0, detail: "malformed key")
            }
            result[prefix] = PrefixAction(rawValue: values[i]) ?? .pass
        }
        return result
    }
}
