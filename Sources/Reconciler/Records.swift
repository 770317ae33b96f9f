import Netlink

/// What wgkeeper changed that the kernel cannot tag with a protocol number: the value of each
/// sysctl before wgkeeper's first write, and the WireGuard devices it created. Kept in
/// `runtime.state_dir` (under /run by default), so it outlives a restart but not a reboot,
/// exactly like the sysctls and devices themselves.
public struct Records: Codable, Hashable, Sendable {
    /// Value found before the first write, by `Sysctl.key`.
    public var sysctls: [String: String]
    /// WireGuard devices wgkeeper created: removed when the configuration stops naming them.
    public var createdDevices: Set<String>

    public init(sysctls: [String: String] = [:], createdDevices: Set<String> = []) {
        self.sysctls = sysctls
        self.createdDevices = createdDevices
    }

    /// Before writing `sysctl`: remember what it held, unless an earlier write already did.
    /// Returns whether the records changed (and must be saved before the write).
    public mutating func recordBeforeWrite(_ sysctl: Sysctl, previous: String?) -> Bool {
        guard sysctls[sysctl.key] == nil, let previous else { return false }
        sysctls[sysctl.key] = previous
        return true
    }

    /// Drops the records of interfaces that no longer exist: a device created later under the
    /// same name starts from the kernel's defaults, not from what its namesake held.
    public mutating func forget(missingFrom links: [String]) -> Bool {
        let present = Set(links).union(["all", "default"])
        let before = self
        sysctls = sysctls.filter { key, _ in Sysctl(key).interface.map(present.contains) ?? true }
        createdDevices = createdDevices.filter(present.contains)
        return self != before
    }
}

extension Sysctl {
    /// The interface of a `net/ipv6/conf/<interface>/<name>` key.
    public var interface: String? {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "net", parts[2] == "conf" else { return nil }
        return String(parts[3])
    }
}
