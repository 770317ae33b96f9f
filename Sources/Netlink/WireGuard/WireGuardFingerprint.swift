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

/// A `WG_CMD_GET_DEVICE` dump's fingerprint without the traffic: every byte of every reply,
/// but with the values of the peers' `LAST_HANDSHAKE_TIME`, `RX_BYTES` and `TX_BYTES` read as
/// zeros; it keeps them instead, one `WireGuardTraffic` per peer in the order
/// `WireGuardCodec.mergeDevice` gives the peers. So a device with traffic but no other change
/// reads as unchanged, and the poll takes only the new figures (`traffic`).
///
/// Why the figures are all that can differ then: the digest is of the replies with those
/// values zeroed, and where the values are is told by attribute headers the digest covers, so
/// two dumps with one digest are the same bytes but for the values. Each peer's figures are
/// read from the first attribute of each type in the peer's first nest, as `Attributes.first`
/// does, and a nest that repeats the previous peer's public key (the kernel continues a peer's
/// allowed IPs in the next message) gives none, as `mergeDevice` takes only its allowed IPs;
/// only the first peers attribute of a message is walked, the one `mergeDevice` reads. Anything
/// it cannot walk as netlink attributes (a length past the end, a peer without a 32-byte public
/// key, counters not 8 bytes) makes it give no digest: such a dump is decoded (and its error
/// reported) every time.
///
/// Each reply is copied to a scratch buffer, the values are zeroed there and the buffer is
/// hashed in one go: hashing attribute by attribute, or run by run between the values, cost
/// 2–4 times as much (`wgkeeper-bench fingerprints`).
public struct WireGuardFingerprint: DumpFingerprint {
    private var digest = ReadDigest.Builder()
    private var regular = true
    /// One per peer, in the device's order.
    public private(set) var traffic: [WireGuardTraffic] = []
    /// The last peer's public key, as raw words (compared, never decoded).
    private var lastKey: (UInt64, UInt64, UInt64, UInt64)?
    private var scratch: [UInt8] = []

    public init() {
        digest.combine(0x7767_7466)
    }

    public func finalize() -> ReadDigest? { regular ? digest.finalize() : nil }

    public mutating func feed(type: UInt16, flags: UInt16, payload: UnsafeRawBufferPointer) {
        digest.combine(UInt64(type) << 16 | UInt64(flags))
        guard regular else { return }
        let header = MemoryLayout<genlmsghdr>.size
        guard payload.count >= header else { regular = false; return }
        if scratch.count < payload.count { scratch = [UInt8](repeating: 0, count: max(payload.count, 32 * 1024)) }
        var copy = scratch
        scratch = []
        defer { scratch = copy }
        copy.withUnsafeMutableBytes { copy in
            let copy = UnsafeMutableRawBufferPointer(rebasing: copy[..<payload.count])
            copy.copyMemory(from: payload)
            // The device's attributes; the first peers attribute is walked.
            var offset = Int(cnl_nla_align(UInt32(header)))
            while payload.count - offset >= 4 {
                guard let (type, length) = attribute(payload, at: offset) else { return }
                if type == UInt16(WGDEVICE_A_PEERS.rawValue) {
                    peers(payload, from: offset + 4, to: offset + length, zeroing: copy)
                    break
                }
                offset += Int(cnl_nla_align(UInt32(length)))
            }
            if regular { digest.combine(piece: UnsafeRawBufferPointer(copy)) }
        }
    }

    /// The type (flags masked off) and length of the attribute at `offset`; nil, and the walk
    /// irregular, when its length is below a header's or runs past `end`.
    private mutating func attribute(_ bytes: UnsafeRawBufferPointer, at offset: Int, end: Int? = nil) -> (UInt16, Int)? {
        let length = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
        guard length >= 4, length <= (end ?? bytes.count) - offset else { regular = false; return nil }
        return (bytes.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self) & cnl_nla_type_mask(), length)
    }

    /// The peer nests of a peers attribute's value, `start..<end` of the payload. 4 or more
    /// bytes left after the last attribute of a nest are irregular (`Attributes` rejects those
    /// too; fewer are alignment padding, as there).
    private mutating func peers(_ bytes: UnsafeRawBufferPointer, from start: Int, to end: Int, zeroing copy: UnsafeMutableRawBufferPointer) {
        var offset = start
        while regular, end - offset >= 4 {
            guard let (_, length) = attribute(bytes, at: offset, end: end) else { return }
            peer(bytes, from: offset + 4, to: offset + length, zeroing: copy)
            offset += Int(cnl_nla_align(UInt32(length)))
        }
    }

    /// One peer nest: its traffic values zeroed in the copy, and kept (a new peer's).
    private mutating func peer(_ bytes: UnsafeRawBufferPointer, from start: Int, to end: Int, zeroing copy: UnsafeMutableRawBufferPointer) {
        var key: (UInt64, UInt64, UInt64, UInt64)?
        var handshake: Double??, received: UInt64?, transmitted: UInt64?
        var offset = start
        while end - offset >= 4 {
            guard let (type, length) = attribute(bytes, at: offset, end: end) else { return }
            let value = offset + 4
            switch type {
            case UInt16(WGPEER_A_LAST_HANDSHAKE_TIME.rawValue):
                if handshake == nil {
                    handshake = .some(length == 20 ? WireGuardCodec.handshake(UnsafeRawBufferPointer(rebasing: bytes[value..<(value + 16)])) : nil)
                }
                UnsafeMutableRawBufferPointer(rebasing: copy[value..<(offset + length)]).initializeMemory(as: UInt8.self, repeating: 0)
            case UInt16(WGPEER_A_RX_BYTES.rawValue), UInt16(WGPEER_A_TX_BYTES.rawValue):
                guard length == 12 else { regular = false; return }
                let count = bytes.loadUnaligned(fromByteOffset: value, as: UInt64.self)
                if type == UInt16(WGPEER_A_RX_BYTES.rawValue) {
                    if received == nil { received = count }
                } else if transmitted == nil {
                    transmitted = count
                }
                copy.storeBytes(of: 0, toByteOffset: value, as: UInt64.self)
            case UInt16(WGPEER_A_PUBLIC_KEY.rawValue) where key == nil:
                guard length == 36 else { regular = false; return }
                key = (bytes.loadUnaligned(fromByteOffset: value, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: value + 8, as: UInt64.self),
                       bytes.loadUnaligned(fromByteOffset: value + 16, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: value + 24, as: UInt64.self))
            default:
                break
            }
            offset += Int(cnl_nla_align(UInt32(length)))
        }
        guard regular, let key else { regular = false; return }
        if let lastKey, lastKey == key { return }
        lastKey = key
        traffic.append(WireGuardTraffic(latestHandshake: handshake ?? nil, receivedBytes: received ?? 0, transmittedBytes: transmitted ?? 0))
    }
}
