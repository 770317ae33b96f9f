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

    func allows<Groups: Sequence<UInt32>>(uid: UInt32, gid: UInt32, groups: Groups) -> Bool {
        if uid == 0 || uid == geteuid() { return true }
        guard let group else { return false }
        return gid == group.id || groups.contains(group.id)
    }
}
