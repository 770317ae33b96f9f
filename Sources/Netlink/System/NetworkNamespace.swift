import CNetlink
import Glibc
import SystemPackage

/// A network namespace, entered by the calling thread for the length of a closure.
///
/// Sockets and /proc/sys files stay in the namespace they were opened in, so opening them
/// inside `perform` is enough: nothing else needs to run there.
public final class NetworkNamespace: Sendable {
    public let path: String
    private let fd: Int32

    /// Opens a namespace by path (`/run/netns/NAME`, `/proc/PID/ns/net`).
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        self.fd = fd
    }

    public convenience init(named name: String) throws {
        try self.init(path: "/run/netns/\(name)")
    }

    deinit { close(fd) }

    /// Runs `body` with the calling thread in this namespace, then moves it back.
    public func perform<T>(_ body: () throws -> T) throws -> T {
        let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard home >= 0 else { throw Errno(rawValue: errno) }
        defer { close(home) }
        guard cnl_enter_netns(fd) == 0 else { throw Errno(rawValue: errno) }
        defer {
            // Failing to return would leave this thread in the wrong namespace: never continue.
            precondition(cnl_enter_netns(home) == 0, "cannot return to the original network namespace")
        }
        return try body()
    }
}
