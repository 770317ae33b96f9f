@testable import Netlink

/// The replies of one `WG_CMD_GET_DEVICE` dump, concatenated as one datagram: a device whose
/// peers' allowed IPs continue from message to message. Decoded, and fingerprinted as a poll does.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWireGuard(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let messages = try? Message.parse(UnsafeRawBufferPointer(start: data, count: size)) else { return 0 }
    // The poll's fingerprint walks every input without trapping; where it vouches for the
    // bytes and they decode, the traffic figures it hands over are the decoded ones.
    var fingerprint = WireGuardFingerprint()
    for message in messages { message.payload.withUnsafeBytes { fingerprint.feed(type: message.type, flags: message.flags, payload: $0) } }
    guard let device = try? WireGuardCodec.mergeDevice(messages) else { return 0 }
    if fingerprint.finalize() != nil, fingerprint.traffic != device.peers.map(\.traffic) {
        fatalError("the fingerprint's traffic figures are not the decoded ones")
    }
    // What status and the planner do with a device read from the kernel.
    _ = device.peers.map { "\($0.publicKey) \($0.endpoint.map { "\($0)" } ?? "") \($0.allowedIPs)" }
    _ = device.privateKey.map { "\($0)" }
    return 0
}
