import CNetlink

/// What traffic changes in a peer: its latest handshake and byte counters, as
/// `WireGuardCodec.decodePeer` reads them.
public struct WireGuardTraffic: Hashable, Sendable {
    public var latestHandshake: Double?
    public var receivedBytes: UInt64
    public var transmittedBytes: UInt64

    public init(latestHandshake: Double? = nil, receivedBytes: UInt64 = 0, transmittedBytes: UInt64 = 0) {
        self.latestHandshake = latestHandshake
        self.receivedBytes = receivedBytes
        self.transmittedBytes = transmittedBytes
    }
}

/// A `WG_CMD_GET_DEVICE` dump's fingerprint without the traffic: every byte of every reply
/// except the values of the peers' `LAST_HANDSHAKE_TIME`, `RX_BYTES` and `TX_BYTES` (their
/// headers are in), which it keeps instead, one `WireGuardTraffic` per peer in the order
/// `WireGuardCodec.mergeDevice` gives the peers. So a device with traffic but no other change
/// reads as unchanged, and the poll takes only the new figures (`traffic`).
///
/// Why the figures are all that can differ then: everything else `mergeDevice` reads is in the
/// digest, attribute headers (type and length) included, so the attributes are the same ones
/// in the same places; a peer's figures are read from the first attribute of each type in the
/// peer's first nest, as `Attributes.first` does, and a nest that repeats the previous peer's
/// public key (the kernel continues a peer's allowed IPs in the next message) gives none, as
/// `mergeDevice` takes only its allowed IPs. Anything it cannot walk as netlink attributes
/// (a length past the end, a peer without a 32-byte public key, counters not 8 bytes) makes it
/// give no digest: such a dump is decoded (and its error reported) every time.
public struct WireGuardFingerprint: DumpFingerprint {
    private var digest = ReadDigest.Builder()
    private var regular = true
    /// One per peer, in the device's order.
    public private(set) var traffic: [WireGuardTraffic] = []
    /// The last peer's public key, as raw words (compared, never decoded).
    private var lastKey: (UInt64, UInt64, UInt64, UInt64)?

    public init() {
        digest.combine(0x7767_7466)
    }

    public func finalize() -> ReadDigest? { regular ? digest.finalize() : nil }

    public mutating func feed(type: UInt16, flags: UInt16, payload: UnsafeRawBufferPointer) {
        digest.combine(UInt64(type) << 16 | UInt64(flags))
        guard regular else { return }
        let header = MemoryLayout<genlmsghdr>.size
        guard payload.count >= header else { regular = false; return }
        digest.combine(piece: UnsafeRawBufferPointer(rebasing: payload[..<header]))
        // `mergeDevice` reads the first peers attribute of each message; any other is hashed whole.
        var peersSeen = false
        walk(payload, from: Int(cnl_nla_align(UInt32(header)))) { me, type, attribute, value in
            guard type == UInt16(WGDEVICE_A_PEERS.rawValue), !peersSeen else {
                me.digest.combine(piece: attribute)
                return
            }
            peersSeen = true
            me.digest.combine(Self.tag(attribute, 1))
            me.walk(value, from: 0) { me, _, nest, peer in
                me.digest.combine(Self.tag(nest, 2))
                me.feedPeer(peer)
            }
        }
    }

    /// One peer nest: its attributes into the digest, its traffic figures kept (a new peer's).
    private mutating func feedPeer(_ peer: UnsafeRawBufferPointer) {
        var key: (UInt64, UInt64, UInt64, UInt64)?
        var handshake: Double??, received: UInt64?, transmitted: UInt64?
        walk(peer, from: 0) { me, type, attribute, value in
            switch type {
            case UInt16(WGPEER_A_LAST_HANDSHAKE_TIME.rawValue):
                me.digest.combine(Self.tag(attribute, 3))
                if handshake == nil { handshake = .some(value.count == 16 ? WireGuardCodec.handshake(value) : nil) }
            case UInt16(WGPEER_A_RX_BYTES.rawValue), UInt16(WGPEER_A_TX_BYTES.rawValue):
                me.digest.combine(Self.tag(attribute, 3))
                guard value.count == 8 else { me.regular = false; return }
                let count = value.loadUnaligned(as: UInt64.self)
                if type == UInt16(WGPEER_A_RX_BYTES.rawValue) {
                    if received == nil { received = count }
                } else if transmitted == nil {
                    transmitted = count
                }
            case UInt16(WGPEER_A_PUBLIC_KEY.rawValue):
                me.digest.combine(piece: attribute)
                if key == nil {
                    guard value.count == 32 else { me.regular = false; return }
                    key = (value.loadUnaligned(as: UInt64.self), value.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                           value.loadUnaligned(fromByteOffset: 16, as: UInt64.self), value.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
                }
            default:
                me.digest.combine(piece: attribute)
            }
        }
        guard regular, let key else { regular = false; return }
        if let lastKey, lastKey == key { return }
        lastKey = key
        traffic.append(WireGuardTraffic(latestHandshake: handshake ?? nil, receivedBytes: received ?? 0, transmittedBytes: transmitted ?? 0))
    }

    /// An attribute's header (its length and type, flags included) with a tag saying what the
    /// digest left out after it: 1 and 2, nests walked; 3, a traffic figure's value.
    private static func tag(_ attribute: UnsafeRawBufferPointer, _ tag: UInt64) -> UInt64 {
        tag << 32 | UInt64(attribute.loadUnaligned(as: UInt32.self))
    }

    /// The attributes from `offset` to the end: each one's type (flags masked off), its bytes
    /// (header and value) and its value. A length below a header's or past the end makes the
    /// walk irregular; so do 4 or more bytes left after the last attribute (`Attributes`
    /// rejects those too; fewer are alignment padding, as there).
    private mutating func walk(_ bytes: UnsafeRawBufferPointer, from offset: Int,
                               _ body: (inout Self, UInt16, UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Void) {
        var offset = offset
        while regular, bytes.count - offset >= 4 {
            let length = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            let type = bytes.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self) & cnl_nla_type_mask()
            guard length >= 4, length <= bytes.count - offset else { regular = false; return }
            body(&self, type, UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)]),
                 UnsafeRawBufferPointer(rebasing: bytes[(offset + 4)..<(offset + length)]))
            offset += Int(cnl_nla_align(UInt32(length)))
        }
    }
}
