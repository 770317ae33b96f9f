import CBPF
import Glibc

/// Removing attachments and pins the configuration no longer wants, without loading anything:
/// `redirect: false`, a tunnel or LAN that changed, and `wgkeeper cleanup`.
extension Datapath {
    /// The tunnels that have a pin directory of ours under `pinRoot`: one that holds our
    /// `client_prefixes` map. Anything else there (a pin root set to a shared bpffs directory)
    /// belongs to someone else and is never touched.
    public static func pinnedTunnels(pinRoot: String) -> [String] {
        _ = LibbpfLog.install
        return entries(of: pinRoot, directoriesOnly: true)
            .filter { BPFFileSystem.exists("\(pinDirectory(pinRoot: pinRoot, tunnel: $0))/\(PrefixMap.clients.rawValue)") }.sorted()
    }

    /// The names in `directory` (none when it cannot be read), without `.` and `..`.
    private static func entries(of directory: String, directoriesOnly: Bool = false) -> [String] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name != ".", name != "..", !directoriesOnly || entry.pointee.d_type == UInt8(DT_DIR) else { continue }
            names.append(name)
        }
        return names
    }

    /// Detaches the TCX links pinned for `tunnel` and removes every pin of its directory.
    public static func removePins(pinRoot: String, tunnel: String) throws {
        _ = LibbpfLog.install
        let directory = pinDirectory(pinRoot: pinRoot, tunnel: tunnel)
        guard access(directory, F_OK) == 0 else { return }
        let names = entries(of: directory)
        for name in names where name.hasSuffix("_link") {
            let path = "\(directory)/\(name)"
            guard let link = try Descriptor.pinned(path) else { continue }
            if try LinkInfo(link, path).interfaceIndex != 0 { bpf_link_detach(link.raw) }
        }
        for name in names { try BPFFileSystem.unpin("\(directory)/\(name)") }
        if rmdir(directory) != 0 && errno != ENOENT { throw DatapathError("remove directory", directory, code: errno) }
    }

    /// Detaches and unpins the TCX link of each hook that is not on the interface `wanted` names
    /// for it (nil: the device is missing, so the hook should be nowhere). Returns the hooks.
    @discardableResult
    public static func detachLinks(pinRoot: String, tunnel: String, wanted: [Hook: Int32?]) throws -> [Hook] {
        _ = LibbpfLog.install
        let directory = pinDirectory(pinRoot: pinRoot, tunnel: tunnel)
        var detached: [Hook] = []
        for hook in Hook.allCases {
            let path = "\(directory)/\(hook.rawValue)_link"
            guard let link = try Descriptor.pinned(path) else { continue }
            let index = try LinkInfo(link, path).interfaceIndex
            if let want = wanted[hook] ?? nil, index == UInt32(bitPattern: want) { continue }
            if index != 0 { bpf_link_detach(link.raw) }
            try BPFFileSystem.unpin(path)
            detached.append(hook)
        }
        return detached
    }

    /// Deletes the clsact qdisc wgkeeper created on `index` (and so any filter on it); a qdisc
    /// or device already gone is not an error.
    public static func removeQdisc(interfaceIndex index: Int32) throws {
        _ = LibbpfLog.install
        let result = wgk_tc_clsact_destroy(index)
        if result == -ENOENT || result == -EINVAL || result == -ENODEV { _ = LibbpfLog.take(); return }
        try check(result, "delete clsact qdisc of", "interface \(index)")
    }

    /// Deletes our cls_bpf filter (our handle and priority, running one of our programs) from
    /// the ingress of each interface in `indexes`; returns the interfaces it was on. The clsact
    /// qdisc stays: others may hang filters on it, and an empty one changes no packet.
    @discardableResult
    public static func removeFilters(from indexes: [Int32]) throws -> [Int32] {
        _ = LibbpfLog.install
        var removed: [Int32] = []
        for index in indexes {
            var programID: UInt32 = 0
            let result = wgk_tc_ingress_query(index, filterHandle, filterPriority, &programID)
            if result == -ENOENT || result == -EINVAL || result == -ENODEV {
                _ = LibbpfLog.take()
                continue
            }
            try check(result, "query cls_bpf filter on", "interface \(index)")
            guard let fd = try? ProgramInfo.descriptor(id: programID),
                  let info = try? ProgramInfo(fd, "program \(programID)"),
                  Hook.allCases.map(\.rawValue).contains(info.name) else { continue }
            let deleted = wgk_tc_ingress_delete(index, filterHandle, filterPriority)
            if deleted == -ENOENT { _ = LibbpfLog.take() } else { try check(deleted, "delete cls_bpf filter on", "interface \(index)") }
            removed.append(index)
        }
        return removed
    }
}
