import Glibc
import Netlink

/// An IPv6 UDP socket bound in the namespace it was created in (create it inside `perform`).
public final class UDPSocket: @unchecked Sendable {
    public let fd: Int32

    public init(bind address: String, port: UInt16) throws {
        fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("udp socket: \(String(cString: strerror(errno)))") }
        var local = socketAddress(address, port)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
        guard bound == 0 else { throw TestFailure("bind [\(address)]:\(port): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    public func send(_ bytes: [UInt8], to address: String, port: UInt16) throws {
        var remote = socketAddress(address, port)
        let sent = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
            }
        }
        guard sent == bytes.count else { throw TestFailure("send to [\(address)]:\(port): \(String(cString: strerror(errno)))") }
    }

    /// One datagram and its source, or nil after `timeout` milliseconds (0: only one waiting).
    public func receive(timeout: Int32) -> (bytes: [UInt8], from: String, port: UInt16)? {
        var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pollfd, 1, timeout) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 2048)
        var source = sockaddr_in6()
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let n = withUnsafeMutablePointer(to: &source) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, 0, $0, &length) }
        }
        guard n >= 0 else { return nil }
        return (Array(buffer[..<n]), socketAddressText(source), UInt16(bigEndian: source.sin6_port))
    }
}

/// `struct sockaddr_in6` for an IPv6 address in text and a port.
func socketAddress(_ text: String, _ port: UInt16) -> sockaddr_in6 {
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_port = port.bigEndian
    withUnsafeMutableBytes(of: &address.sin6_addr) { $0.copyBytes(from: IPv6Address(text)!.bytes) }
    return address
}

func socketAddressText(_ address: sockaddr_in6) -> String {
    withUnsafeBytes(of: address.sin6_addr) { IPv6Address(bytes: $0)! }.description
}

/// What a failed socket call left in errno, as a value a test can compare (`EACCES`).
public struct SocketError: Error, Equatable, CustomStringConvertible {
    public let code: Int32
    public init(_ code: Int32) { self.code = code }
    public var description: String { "\(String(cString: strerror(code))) (errno \(code))" }
}
