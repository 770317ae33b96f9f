import CNetlink
import Glibc
import SystemPackage

/// WireGuard's generic-netlink family. It has no multicast group: drift is found by polling.
public final class WireGuardNetlink {
    public let socket: NetlinkSocket
    public let familyID: UInt16

    /// Opens a generic-netlink socket and resolves the `wireguard` family. Fails with a clear
    /// error where the kernel has no WireGuard.
    public init() throws {
        socket = try NetlinkSocket(.generic)
        do {
            familyID = try socket.genericFamilyID(WG_GENL_NAME)
        } catch let error as NetlinkError where error.errno == Errno(rawValue: ENOENT) {
            throw NetlinkError(.kernel(Errno(rawValue: ENOENT)), context: "this kernel has no WireGuard (generic netlink family 'wireguard' not found; is wireguard.ko loaded?)")
        }
    }

    public var writeCount: Int { socket.writeCount }

    /// The device with its peers, or nil when there is no such interface.
    public func device(named name: String) throws -> WireGuardDevice? {
        try device { $0.put(UInt16(WGDEVICE_A_IFNAME.rawValue), string: name) }
    }

    /// A poll's read of a device: the dump is compared by its fingerprint without the traffic
    /// figures (`WireGuardFingerprint`) with `previous`, and decoded only when it differs.
    /// `expectingChange`: the last poll decoded (see `NetlinkSocket.dump(_:unless:fingerprint:…)`).
    public func device(named name: String, unless previous: ReadDigest?, expectingChange: Bool = false) throws -> WireGuardRead {
        let family = familyID
        let request = Request(type: family, flags: Request.dump, summary: "read wireguard device") { writer in
            putGenericHeader(&writer, command: UInt8(WG_CMD_GET_DEVICE.rawValue), version: WireGuardCodec.version)
            writer.put(UInt16(WGDEVICE_A_IFNAME.rawValue), string: name)
        }
        do {
            switch try socket.dump(request, unless: previous, fingerprint: WireGuardFingerprint.self, expectingChange: expectingChange, decode: { $0.type == family ? $0 : nil }) {
            case (.unchanged, let fingerprint): return .unchanged(fingerprint.traffic)
            case (.read(let messages, let digest), _): return .read(try WireGuardCodec.mergeDevice(messages), digest)
            }
        } catch let error as NetlinkError where error.errno == Errno(rawValue: ENODEV) {
            return .read(nil, nil)
        }
    }

    public func device(index: Int32) throws -> WireGuardDevice? {
        try device { $0.put(UInt16(WGDEVICE_A_IFINDEX.rawValue), u32: UInt32(bitPattern: index)) }
    }

    private func device(_ identify: @escaping @Sendable (inout MessageWriter) -> Void) throws -> WireGuardDevice? {
        let family = familyID
        let request = Request(type: family, flags: Request.dump, summary: "read wireguard device") { writer in
            putGenericHeader(&writer, command: UInt8(WG_CMD_GET_DEVICE.rawValue), version: WireGuardCodec.version)
            identify(&writer)
        }
        do {
            let messages = try socket.dump(request) { $0.type == family ? $0 : nil }
            return try WireGuardCodec.mergeDevice(messages)
        } catch let error as NetlinkError where error.errno == Errno(rawValue: ENODEV) {
            return nil
        }
    }

    /// Applies a change, split into as many messages as it needs and sent pipelined.
    /// Throws the first failure; fragments are applied in order, so what precedes it took effect.
    public func apply(device name: String, _ change: WireGuardDeviceChange,
                      messageBytes: Int = 32 * 1024) throws {
        let fragments = WireGuardCodec.fragments(change, name: name, limit: messageBytes)
        let family = familyID
        let requests = fragments.enumerated().map { i, fragment in
            let summary = "set wireguard device \(name)" + (fragments.count > 1 ? " (message \(i + 1) of \(fragments.count))" : "")
            return Request(type: family, flags: Request.get, summary: summary) { writer in
                WireGuardCodec.encode(fragment, of: change, name: name, into: &writer)
            }
        }
        for case .failure(let error) in try socket.perform(requests) { throw error }
    }
}

/// A poll's read of a WireGuard device.
public enum WireGuardRead: Sendable {
    /// The dump is the one the digest compared with was made of, but for the peers' traffic
    /// figures: these, one per peer in the device's order. Nothing was decoded.
    case unchanged([WireGuardTraffic])
    /// The device decoded (nil: there is no such interface) and the digest to compare the next
    /// poll's dump with (nil with no device).
    case read(WireGuardDevice?, ReadDigest?)
}
