import TestSupport
import Foundation
import Glibc
import Netlink

/// A layer-3 TUN device (IFF_TUN | IFF_NO_PI): what WireGuard's wg0 looks like to TC.
final class TunDevice: @unchecked Sendable {
    let fd: Int32
    let name: String

    /// Creates the device in the calling thread's network namespace (call inside `perform`).
    init(name: String) throws {
        let fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw TestFailure("open /dev/net/tun: \(String(cString: strerror(errno)))") }
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { buffer in
            buffer.copyBytes(from: Array(name.utf8.prefix(15)))
        }
        request.ifr_ifru.ifru_flags = 0x0001 | 0x1000  // IFF_TUN | IFF_NO_PI
        let tunsetiff: UInt = 0x400454ca  // _IOW('T', 202, int)
        guard withUnsafeMutablePointer(to: &request, { ioctl(fd, tunsetiff, $0) }) == 0 else {
            let text = String(cString: strerror(errno))
            close(fd)
            throw TestFailure("TUNSETIFF \(name): \(text)")
        }
        self.fd = fd
        self.name = name
    }

    deinit { close(fd) }

    func write(_ packet: [UInt8]) throws {
        guard Glibc.write(fd, packet, packet.count) == packet.count else {
            throw TestFailure("write to \(name): \(String(cString: strerror(errno)))")
        }
    }

    /// Packets read until `timeout` passes without one.
    func drain(quiet timeout: Int32 = 300) -> [[UInt8]] { readAll(fd, quiet: timeout) { $0 } }
}

/// An AF_PACKET socket on one interface: sends raw frames and captures received ones.
final class PacketSocket: @unchecked Sendable {
    let fd: Int32

    /// Opens the socket in the calling thread's network namespace (call inside `perform`).
    init(interfaceIndex: Int32) throws {
        let all = UInt16(3).bigEndian  // ETH_P_ALL
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(all))
        guard fd >= 0 else { throw TestFailure("packet socket: \(String(cString: strerror(errno)))") }
        var size: Int32 = 16 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = LinkLayerAddress()
        address.sll_family = UInt16(AF_PACKET)
        address.sll_protocol = all
        address.sll_ifindex = interfaceIndex
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<LinkLayerAddress>.size)) }
        }
        guard bound == 0 else { throw TestFailure("bind packet socket: \(String(cString: strerror(errno)))") }
        self.fd = fd
    }

    deinit { close(fd) }

    func send(_ frame: [UInt8]) throws {
        guard Glibc.send(fd, frame, frame.count, 0) == frame.count else {
            throw TestFailure("send frame: \(String(cString: strerror(errno)))")
        }
    }

    /// Received (not outgoing) frames until `timeout` ms pass without one.
    func drain(quiet timeout: Int32 = 300) -> [[UInt8]] {
        readAll(fd, quiet: timeout) { $0 }.filter { !$0.isEmpty }
    }
}

private func readAll(_ fd: Int32, quiet timeout: Int32, _ transform: ([UInt8]) -> [UInt8]) -> [[UInt8]] {
    var packets: [[UInt8]] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pollfd, 1, timeout) > 0 else { return packets }
        while true {
            var from = LinkLayerAddress()
            var length = socklen_t(MemoryLayout<LinkLayerAddress>.size)
            let n = withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, 0, $0, &length) }
            }
            if n < 0 && errno == ENOTSOCK {
                let m = read(fd, &buffer, buffer.count)  // a TUN descriptor
                if m <= 0 { break }
                packets.append(transform(Array(buffer[..<m])))
                continue
            }
            if n <= 0 { break }
            if from.sll_pkttype == 4 { continue }  // PACKET_OUTGOING: our own sends
            packets.append(transform(Array(buffer[..<n])))
        }
    }
}

/// Test packets: IPv6 with next header 253 (experimental) and a payload "WGK" + sequence number.
enum Packet {
    static let marker: [UInt8] = Array("WGK".utf8)

    static func ipv6(from source: String, to destination: String, hopLimit: UInt8 = 64,
                     nextHeader: UInt8 = 253, payload: [UInt8]) -> [UInt8] {
        var packet: [UInt8] = [0x60, 0, 0, 0, UInt8(payload.count >> 8), UInt8(payload.count & 0xff), nextHeader, hopLimit]
        packet += IPv6Address(source)!.bytes + IPv6Address(destination)!.bytes + payload
        return packet
    }

    static func test(from source: String, to destination: String, hopLimit: UInt8 = 64, sequence: UInt32) -> [UInt8] {
        ipv6(from: source, to: destination, hopLimit: hopLimit, payload: marker + withUnsafeBytes(of: sequence.bigEndian, Array.init))
    }

    /// A neighbour solicitation (ICMPv6 type 135) sent to `destination` for itself (a NUD probe).
    static func neighbourSolicitation(from source: String, to destination: String) -> [UInt8] {
        ipv6(from: source, to: destination, hopLimit: 255, nextHeader: 58,
             payload: [135, 0, 0, 0, 0, 0, 0, 0] + IPv6Address(destination)!.bytes)
    }

    static func ethernet(to destination: [UInt8], from source: [UInt8], type: UInt16 = 0x86dd, _ payload: [UInt8]) -> [UInt8] {
        destination + source + [UInt8(type >> 8), UInt8(type & 0xff)] + payload
    }

    static func ipv4Frame(to destination: [UInt8], from source: [UInt8]) -> [UInt8] {
        let header: [UInt8] = [0x45, 0, 0, 24, 0, 0, 0, 0, 64, 253, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1]
        return ethernet(to: destination, from: source, type: 0x0800, header + marker + [0])
    }

    /// The sequence number of a test packet (bare IPv6), nil for anything else.
    static func sequence(ofIPv6 packet: [UInt8]) -> UInt32? {
        guard packet.count >= 47, packet[0] >> 4 == 6, packet[6] == 253, Array(packet[40..<43]) == marker else { return nil }
        return packet[43..<47].reduce(0) { $0 << 8 | UInt32($1) }
    }

    static func hopLimit(ofIPv6 packet: [UInt8]) -> UInt8 { packet[7] }
}

func mac(_ text: String) -> [UInt8] { text.split(separator: ":").map { UInt8($0, radix: 16)! } }

/// `struct sockaddr_ll` (linux/if_packet.h), which Glibc's module does not export.
struct LinkLayerAddress {
    var sll_family: UInt16 = 0
    var sll_protocol: UInt16 = 0
    var sll_ifindex: Int32 = 0
    var sll_hatype: UInt16 = 0
    var sll_pkttype: UInt8 = 0
    var sll_halen: UInt8 = 0
    var sll_addr: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0)
}
