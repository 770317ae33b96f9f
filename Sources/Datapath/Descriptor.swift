import CBPF
import Glibc

/// An owned BPF object file descriptor (map, program or link), closed when released.
final class Descriptor {
    let raw: Int32

    init(_ raw: Int32) { self.raw = raw }

    /// Duplicates a descriptor owned by someone else (libbpf) so it outlives its owner.
    static func duplicate(_ raw: Int32, _ object: String) throws -> Descriptor {
        Descriptor(try retrying("duplicate descriptor of", object) { fcntl(raw, F_DUPFD_CLOEXEC, 0) })
    }

    /// Opens a pinned object; nil when nothing is pinned at `path`.
    static func pinned(_ path: String) throws -> Descriptor? {
        let fd = bpf_obj_get(path)
        if fd >= 0 { return Descriptor(fd) }
        let code = fd == -1 ? errno : -fd
        if code == ENOENT { return nil }
        throw DatapathError("open pinned object", path, code: code)
    }

    deinit { close(raw) }
}
