import CNetlink
import Glibc

/// `WGPEER_A_ENDPOINT` is a `sockaddr_in` or `sockaddr_in6`.
extension Endpoint {
    init?(sockaddr bytes: ArraySlice<UInt8>) {
        let raw = Array(bytes)
        guard raw.count >= 2 else { return nil }
        let family = UInt16(raw[0]) | UInt16(raw[1]) << 8
        let port = UInt16(raw.count >= 4 ? raw[2] : 0) << 8 | UInt16(raw.count >= 4 ? raw[3] : 0)
        switch Int32(family) {
        case AF_INET where raw.count >= 16:
            self.init(address: .v4(IPv4Address(bytes: raw[4..<8])!), port: port)
        case AF_INET6 where raw.count >= 28:
            self.init(address: .v6(IPv6Address(bytes: raw[8..<24])!), port: port)
        default:
            return nil
        }
    }

    var sockaddr: [UInt8] {
        let port = [UInt8(self.port >> 8), UInt8(self.port & 0xff)]
        switch address {
        case .v4(let a):
            return [UInt8(AF_INET), 0] + port + a.bytes + [UInt8](repeating: 0, count: 8)
        case .v6(let a):
            return [UInt8(AF_INET6), 0] + port + [0, 0, 0, 0] + a.bytes + [0, 0, 0, 0]
        }
    }
}

enum WireGuardCodec {
    static let version: UInt8 = UInt8(WG_GENL_VERSION)

    /// Encoded sizes, for splitting a large change into messages before writing any.
    static func attributeSize(_ payload: Int) -> Int { 4 + Int(cnl_nla_align(UInt32(payload))) }
    static func allowedIPSize(_ prefix: IPPrefix) -> Int {
        4 + attributeSize(2) + attributeSize(prefix.family == .inet ? 4 : 16) + attributeSize(1)
    }

    static func putAllowedIP(_ writer: inout MessageWriter, _ prefix: IPPrefix) {
        writer.nest(0) { w in
            w.put(UInt16(WGALLOWEDIP_A_FAMILY.rawValue), u16: UInt16(prefix.family.rawValue))
            w.put(UInt16(WGALLOWEDIP_A_IPADDR.rawValue), address: prefix.address)
            w.put(UInt16(WGALLOWEDIP_A_CIDR_MASK.rawValue), u8: prefix.length)
        }
    }

    static func decodeAllowedIP(_ attributes: Attributes) throws -> IPPrefix {
        guard let address = try attributes.address(UInt16(WGALLOWEDIP_A_IPADDR.rawValue)),
              let length = try attributes.u8(UInt16(WGALLOWEDIP_A_CIDR_MASK.rawValue)),
              Int(length) <= address.bitWidth
        else { throw NetlinkError.malformed("allowed IP without a valid address and mask") }
        return IPPrefix(address: address, length: length)
    }

    static func decodeKey(_ attributes: Attributes, _ type: UInt16) throws -> WireGuardKey? {
        guard let bytes = attributes.bytes(type) else { return nil }
        guard let key = WireGuardKey(bytes: bytes) else { throw NetlinkError.malformed("key of \(bytes.count) bytes") }
        return key
    }

    /// A `LAST_HANDSHAKE_TIME` value (a 16-byte `__kernel_timespec`): seconds since the epoch,
    /// nil for all zeros (no handshake yet).
    static func handshake(_ time: UnsafeRawBufferPointer) -> Double? {
        let seconds = time.loadUnaligned(as: Int64.self), nanoseconds = time.loadUnaligned(fromByteOffset: 8, as: Int64.self)
        return seconds != 0 || nanoseconds != 0 ? Double(seconds) + Double(nanoseconds) / 1e9 : nil
    }

    /// One peer nest of a `WG_CMD_GET_DEVICE` reply. Allowed IPs may continue in the next message.
    static func decodePeer(_ attributes: Attributes) throws -> WireGuardPeer {
        guard let publicKey = try decodeKey(attributes, UInt16(WGPEER_A_PUBLIC_KEY.rawValue)) else {
            throw NetlinkError.malformed("peer without a public key")
        }
        var peer = WireGuardPeer(publicKey: publicKey)
        if let psk = try decodeKey(attributes, UInt16(WGPEER_A_PRESHARED_KEY.rawValue)), !psk.isZero {
            peer.presharedKey = PresharedKey(psk)
        }
        if let bytes = attributes.bytes(UInt16(WGPEER_A_ENDPOINT.rawValue)) { peer.endpoint = Endpoint(sockaddr: bytes) }
        peer.persistentKeepalive = try attributes.u16(UInt16(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL.rawValue)) ?? 0
        if let time = attributes.bytes(UInt16(WGPEER_A_LAST_HANDSHAKE_TIME.rawValue)), time.count == 16 {
            peer.latestHandshake = time.withUnsafeBytes { handshake($0) }
        }
        peer.receivedBytes = try attributes.u64(UInt16(WGPEER_A_RX_BYTES.rawValue)) ?? 0
        peer.transmittedBytes = try attributes.u64(UInt16(WGPEER_A_TX_BYTES.rawValue)) ?? 0
        if let ips = try attributes.nested(UInt16(WGPEER_A_ALLOWEDIPS.rawValue)) {
            peer.allowedIPs = try ips.all.map { try decodeAllowedIP(try Attributes(parsing: $0.payload)) }
        }
        return peer
    }

    /// Merges the messages of one `WG_CMD_GET_DEVICE` dump into a device. The kernel repeats a
    /// peer's public key at the start of the next message when its allowed IPs did not fit.
    static func mergeDevice(_ messages: [Message]) throws -> WireGuardDevice? {
        var device: WireGuardDevice?
        for message in messages {
            let attributes = try message.attributes(after: genlmsghdr.self)
            if device == nil {
                guard let index = try attributes.u32(UInt16(WGDEVICE_A_IFINDEX.rawValue)) else {
                    throw NetlinkError.malformed("device reply without an interface index")
                }
                device = WireGuardDevice(
                    name: attributes.string(UInt16(WGDEVICE_A_IFNAME.rawValue)) ?? "",
                    index: Int32(bitPattern: index),
                    privateKey: try decodeKey(attributes, UInt16(WGDEVICE_A_PRIVATE_KEY.rawValue)).map(PrivateKey.init),
                    publicKey: try decodeKey(attributes, UInt16(WGDEVICE_A_PUBLIC_KEY.rawValue)),
                    listenPort: try attributes.u16(UInt16(WGDEVICE_A_LISTEN_PORT.rawValue)) ?? 0,
                    firewallMark: try attributes.u32(UInt16(WGDEVICE_A_FWMARK.rawValue)) ?? 0)
            }
            guard let peers = try attributes.nested(UInt16(WGDEVICE_A_PEERS.rawValue)) else { continue }
            for nest in peers.all {
                let peer = try decodePeer(try Attributes(parsing: nest.payload))
                if let last = device!.peers.last, last.publicKey == peer.publicKey {
                    device!.peers[device!.peers.count - 1].allowedIPs += peer.allowedIPs
                } else {
                    device!.peers.append(peer)
                }
            }
        }
        if var found = device, found.privateKey?.key.isZero == true {
            found.privateKey = nil
            device = found
        }
        return device
    }
}
