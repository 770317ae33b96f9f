import CNetlink
import Glibc
import SystemPackage

public enum NetlinkProtocol: Int32, Sendable {
    case route = 0      // NETLINK_ROUTE
    case netfilter = 12 // NETLINK_NETFILTER (read only: nftables chains)
    case generic = 16   // NETLINK_GENERIC
}

/// A netlink socket: non-blocking, close-on-exec, bound to a kernel-assigned port id, with a
/// large receive queue, extended acks, capped acks and strict dump checking.
///
/// Not thread-safe by design: one thread (the daemon's loop) owns each socket.
public final class NetlinkSocket {
    public let netlinkProtocol: NetlinkProtocol
    public let portID: UInt32
    public var fileDescriptor: Int32 { mnl_socket_get_fd(handle) }
    /// Total requests written to the kernel through this socket (dumps excluded).
    public internal(set) var writeCount = 0

    private let handle: OpaquePointer
    private var nextSequence: UInt32
    let receiveBuffer: UnsafeMutableRawBufferPointer

    /// Opens a socket and joins the given multicast groups (an event subscription when non-empty).
    public init(_ netlinkProtocol: NetlinkProtocol, groups: [UInt32] = [], receiveBufferBytes: Int = 32 << 20) throws {
        self.netlinkProtocol = netlinkProtocol
        guard let handle = mnl_socket_open2(netlinkProtocol.rawValue, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue)) else {
            throw NetlinkError(.system(Errno(rawValue: Glibc.errno)), context: "opening a netlink socket")
        }
        self.handle = handle
        receiveBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        do {
            // Best effort where the kernel is older; EXT_ACK gives error text, CAP_ACK keeps acks small.
            try? Self.setOption(handle, Int32(NETLINK_EXT_ACK), 1)
            try? Self.setOption(handle, Int32(NETLINK_CAP_ACK), 1)
            try? Self.setOption(handle, Int32(NETLINK_GET_STRICT_CHK), 1)
            // SO_RCVBUFFORCE needs CAP_NET_ADMIN; fall back to what rmem_max allows.
            var size = Int32(receiveBufferBytes)
            if setsockopt(mnl_socket_get_fd(handle), SOL_SOCKET, SO_RCVBUFFORCE, &size, 4) != 0 {
                _ = setsockopt(mnl_socket_get_fd(handle), SOL_SOCKET, SO_RCVBUF, &size, 4)
            }
            var sendSize = Int32(4 << 20)
            if setsockopt(mnl_socket_get_fd(handle), SOL_SOCKET, SO_SNDBUFFORCE, &sendSize, 4) != 0 {
                _ = setsockopt(mnl_socket_get_fd(handle), SOL_SOCKET, SO_SNDBUF, &sendSize, 4)
            }
            guard mnl_socket_bind(handle, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
                throw NetlinkError(.system(Errno(rawValue: Glibc.errno)), context: "binding a netlink socket")
            }
            for group in groups {
                try Self.setOption(handle, Int32(NETLINK_ADD_MEMBERSHIP), Int32(group))
            }
        } catch {
            mnl_socket_close(handle)
            receiveBuffer.deallocate()
            throw error
        }
        portID = mnl_socket_get_portid(handle)
        // A random start keeps replies meant for an earlier socket with this port id from matching.
        nextSequence = UInt32.random(in: 1...(1 << 30))
    }

    deinit {
        mnl_socket_close(handle)
        receiveBuffer.deallocate()
    }

    func allocateSequence() -> UInt32 {
        nextSequence &+= 1
        if nextSequence == 0 { nextSequence = 1 }
        return nextSequence
    }

    private static func setOption(_ handle: OpaquePointer, _ option: Int32, _ value: Int32) throws {
        var value = value
        guard mnl_socket_setsockopt(handle, option, &value, 4) == 0 else {
            throw NetlinkError(.system(Errno(rawValue: Glibc.errno)), context: "setsockopt(SOL_NETLINK, \(option))")
        }
    }

    /// Sends the buffer's messages with one `sendmsg`, retrying `EINTR` and waiting out `EAGAIN`.
    public func send(_ buffer: MessageBuffer) throws {
        try buffer.withBytes { bytes in
            while true {
                if mnl_socket_sendto(handle, bytes.baseAddress, bytes.count) >= 0 { return }
                switch Glibc.errno {
                case EINTR: continue
                case EAGAIN: try wait(for: Int16(POLLOUT), deadline: .now + .seconds(5))
                case let code: throw NetlinkError(.system(Errno(rawValue: code)), context: "sending to netlink")
                }
            }
        }
    }

    /// Reads one datagram without blocking. Returns nil when nothing is queued.
    /// `ENOBUFS` (the receive queue overflowed and messages were dropped) is thrown as `.overflow`.
    public func receiveNow() throws -> [Message]? {
        try receiveDatagramNow().map { try Message.parse($0) }
    }

    /// Reads one datagram without blocking, as bytes valid until the next receive; nil when
    /// nothing is queued. Errors as `receiveNow`.
    func receiveDatagramNow() throws -> UnsafeRawBufferPointer? {
        while true {
            let n = mnl_socket_recvfrom(handle, receiveBuffer.baseAddress, receiveBuffer.count)
            if n >= 0 { return UnsafeRawBufferPointer(rebasing: receiveBuffer[..<n]) }
            switch Glibc.errno {
            case EINTR: continue
            case EAGAIN: return nil
            case ENOBUFS: throw NetlinkError(.overflow, context: "receiving from netlink")
            case let code: throw NetlinkError(.system(Errno(rawValue: code)), context: "receiving from netlink")
            }
        }
    }

    /// Reads one datagram, waiting until the deadline.
    public func receive(deadline: ContinuousClock.Instant) throws -> [Message] {
        while true {
            if let messages = try receiveNow() { return messages }
            try wait(for: Int16(POLLIN), deadline: deadline)
        }
    }

    /// Reads one datagram as bytes (valid until the next receive), waiting until the deadline.
    func receiveDatagram(deadline: ContinuousClock.Instant) throws -> UnsafeRawBufferPointer {
        while true {
            if let datagram = try receiveDatagramNow() { return datagram }
            try wait(for: Int16(POLLIN), deadline: deadline)
        }
    }

    private func wait(for events: Int16, deadline: ContinuousClock.Instant) throws {
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            if left <= .zero { throw NetlinkError(.timeout, context: "waiting for netlink") }
            let ms = Int32(min(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1, 60_000))
            var pfd = pollfd(fd: fileDescriptor, events: events, revents: 0)
            let r = poll(&pfd, 1, ms)
            if r > 0 { return }
            if r < 0, Glibc.errno != EINTR {
                throw NetlinkError(.system(Errno(rawValue: Glibc.errno)), context: "poll on netlink")
            }
        }
    }
}
