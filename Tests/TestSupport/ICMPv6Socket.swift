import Glibc
import Netlink

/// A raw ICMPv6 socket in the namespace it was created in (create it inside `perform`): it
/// sends echo requests and sees a copy of every ICMPv6 message the namespace receives, errors
/// included (raw6_local_deliver hands them out before the protocol handles them).
public final class ICMPv6Socket: @unchecked Sendable {
    public let fd: Int32

    /// A message as received: `bytes` from the ICMPv6 header on.
    public struct Message: CustomStringConvertible {
        public var from: String
        public var bytes: [UInt8]
        public var type: UInt8 { bytes[0] }
        public var code: UInt8 { bytes[1] }
        /// An error's quoted packet (from its IPv6 header), or an echo's identifier and data.
        public var body: ArraySlice<UInt8> { bytes.dropFirst(8) }

        /// For an error: the quoted packet's destination, next header and the two 16-bit words after
        /// its fixed header (TCP/UDP ports; an echo's type and code, then its checksum).
        public var quoted: (destination: String, nextHeader: UInt8, first: UInt16, second: UInt16)? {
            let quote = Array(body)
            guard quote.count >= 44 else { return nil }
            let destination = IPv6Address(bytes: quote[24..<40])!.description
            return (destination, quote[6], UInt16(quote[40]) << 8 | UInt16(quote[41]), UInt16(quote[42]) << 8 | UInt16(quote[43]))
        }

        public var description: String { "ICMPv6 \(type)/\(code) from \(from)" + (quoted.map { " quoting \($0)" } ?? "") }
    }

    public init() throws {
        fd = socket(AF_INET6, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(IPPROTO_ICMPV6))
        guard fd >= 0 else { throw TestFailure("raw icmpv6 socket: \(SocketError(errno))") }
    }

    deinit { close(fd) }

    /// An echo request (the kernel fills in the checksum of a raw ICMPv6 socket).
    public func sendEchoRequest(to address: String, identifier: UInt16, sequence: UInt16) throws {
        let message: [UInt8] = [128, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xff),
                                UInt8(sequence >> 8), UInt8(sequence & 0xff)] + Array("wgkeeper".utf8)
        var remote = socketAddress(address, 0)
        let sent = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, message, message.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
            }
        }
        guard sent == message.count else { throw TestFailure("echo request to \(address): \(SocketError(errno))") }
    }

    /// The next message, or nil after `timeout` milliseconds (0: only one already waiting).
    public func receive(timeout: Int32) -> Message? {
        var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pollfd, 1, timeout) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 2048)
        var source = sockaddr_in6()
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let n = withUnsafeMutablePointer(to: &source) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, 0, $0, &length) }
        }
        guard n >= 8 else { return nil }
        return Message(from: socketAddressText(source), bytes: Array(buffer[..<n]))
    }

    /// Every message that arrives until none has for `quiet` milliseconds.
    public func drain(quiet: Int32) -> [Message] {
        var messages: [Message] = []
        while let message = receive(timeout: quiet) { messages.append(message) }
        return messages
    }
}
