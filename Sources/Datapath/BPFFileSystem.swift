import CBPF
import Glibc

/// The pin root: a bpffs mount, created when missing (`ip netns exec` hides /sys/fs/bpf, DESIGN §2).
enum BPFFileSystem {
    static func isMounted(at path: String) -> Bool {
        wgk_statfs_type(path) == Int(WGK_BPF_FS_MAGIC)
    }

    /// `mkdir -p path`, then mounts a bpffs on it unless the directory is already on one.
    static func prepare(root: String) throws {
        try makeDirectories(root)
        if isMounted(at: root) { return }
        try retrying("mount bpffs on", root) { mount("bpffs", root, "bpf", 0, "mode=0700") }
    }

    static func makeDirectories(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw DatapathError("create directory", prefix, code: errno)
            }
        }
    }

    /// Removes a pin; a missing pin is not an error.
    static func unpin(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw DatapathError("remove pin", path, code: errno) }
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
}
