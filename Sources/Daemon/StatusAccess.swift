import Glibc
import SystemPackage

/// Who may use the status socket: root, the daemon's own user, and members of `status_group`
/// (by the peer's primary or supplementary groups as the kernel recorded them at connect()).
struct StatusAccess {
    let group: (id: gid_t, name: String)?

    init(group: (id: gid_t, name: String)?) { self.group = group }

    /// Resolves `status_group` once, at start: a name through the group database, or a number.
    init(statusGroup: String?) throws {
        guard let spec = statusGroup else { group = nil; return }
        if let number = UInt32(spec) {
            group = (number, spec)
            return
        }
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let status = getgrnam_r(spec, &entry, &buffer, buffer.count, &result)
        guard status == 0, let found = result else {
            throw DaemonError("runtime.status_group: no group named \"\(spec)\"\(status == 0 ? "" : " (\(Errno(rawValue: status)))")", configuration: status == 0)
        }
        group = (found.pointee.gr_gid, spec)
    }

    /// The first directory on the way to `socketPath` that members of `status_group` cannot
    /// search (neither others' x, nor the group's x with the directory in that group), if any:
    /// with it the socket's group is no use to them. The unit's /run/wgkeeper (root:root 0750) is
    /// one unless the drop-in sets `RuntimeDirectoryMode=0755`.
    func directoryClosedToGroup(socketPath: String) -> (path: String, mode: mode_t, gid: gid_t)? {
        guard let group, socketPath.hasPrefix("/") else { return nil }
        var directory = ""
        for component in socketPath.split(separator: "/").dropLast() {
            directory += "/" + component
            var info = stat()
            guard stat(directory, &info) == 0 else { return nil }
            let searchable = info.st_mode & S_IXOTH != 0 || (info.st_gid == group.id && info.st_mode & S_IXGRP != 0)
            if !searchable { return (directory, info.st_mode & 0o7777, info.st_gid) }
        }
        return nil
    }

    func allows<Groups: Sequence<UInt32>>(uid: UInt32, gid: UInt32, groups: Groups) -> Bool {
        if uid == 0 || uid == geteuid() { return true }
        guard let group else { return false }
        return gid == group.id || groups.contains(group.id)
    }
}
