import CLinux
import Glibc

/// One wgkeeper per network namespace: two would fight over the same sysctls, pins and
/// protocol. The lock is an abstract Unix socket name, which the kernel keeps per network
/// namespace and releases when the process dies, however it dies: no stale lock file.
final class InstanceLock {
    static let name = "@wgkeeper"
    private let fd: Int32

    /// Nil when another process in this network namespace holds it.
    init?() throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DaemonError("instance lock: \(String(cString: strerror(errno)))") }
        guard let address = UnixSocketAddress(Self.name), address.bind(fd) == 0 else {
            let code = errno
            close(fd)
            if code == EADDRINUSE { return nil }
            throw DaemonError("instance lock: \(String(cString: strerror(code)))")
        }
    }

    deinit { close(fd) }
}
