import CLinux
import Glibc

/// An `AF_UNIX` socket address: a path, or an abstract name written `@name` (as systemd does for
/// `NOTIFY_SOCKET`). The one place that fills a `sockaddr_un`.
public struct UnixSocketAddress: Sendable {
    public let path: String
    private let storage: sockaddr_un
    private let length: socklen_t

    /// Nil when the path does not fit `sun_path`.
    public init?(_ path: String) {
        var bytes = Array(path.utf8)
        var address = sockaddr_un()
        guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        let abstract = bytes[0] == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        self.path = path
        storage = address
        // An abstract name is exactly its bytes; a path includes its terminating NUL.
        length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
    }

    private func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafePointer(to: storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }

    public func bind(_ fd: Int32) -> Int32 { withSockaddr { Glibc.bind(fd, $0, $1) } }
    public func connect(_ fd: Int32) -> Int32 { withSockaddr { Glibc.connect(fd, $0, $1) } }

    public func send(_ fd: Int32, _ bytes: [UInt8], flags: Int32) -> Int {
        bytes.withUnsafeBytes { payload in withSockaddr { sendto(fd, payload.baseAddress, payload.count, flags, $0, $1) } }
    }
}
