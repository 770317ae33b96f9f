import CBPF
import Glibc

/// The pin root: a bpffs mount, created when missing (`ip netns exec` hides /sys/fs/bpf; docs/ARCHITECTURE.md, "Kernel facts").
enum BPFFileSystem {
    static func isMounted(at path: String) -> Bool {
        wgk_statfs_type(path) == Int(WGK_BPF_FS_MAGIC)
    }

    /// The kernel's mount point for bpffs: an empty sysfs directory until someone mounts it.
    static let conventionalMountPoint = "/sys/fs/bpf"

    /// `mkdir -p path`, then mounts a bpffs on it unless the directory is already on one.
    static func prepare(root: String) throws {
        try makeDirectories(root)
        if isMounted(at: root) { return }
        try mountBPF(on: root)
    }

    static func mountBPF(on path: String) throws {
        try retrying("mount bpffs on", path) { mount("bpffs", path, "bpf", 0, "mode=0700") }
    }

    /// `mkdir -p`. A directory cannot be made inside an unmounted /sys/fs/bpf (sysfs refuses;
    /// `ip netns exec` shows a fresh sysfs): mount a bpffs there first, as bpftool does.
    static func makeDirectories(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            let parent = prefix.isEmpty ? "/" : prefix
            prefix += "/" + component
            if mkdir(prefix, 0o700) == 0 || errno == EEXIST { continue }
            let code = errno
            if parent == conventionalMountPoint && !isMounted(at: parent) {
                try mountBPF(on: parent)
                if mkdir(prefix, 0o700) == 0 || errno == EEXIST { continue }
            }
            throw DatapathError("create directory", prefix, code: code)
        }
    }

    /// Removes a pin; a missing pin is not an error.
    static func unpin(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw DatapathError("remove pin", path, code: errno) }
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
}
