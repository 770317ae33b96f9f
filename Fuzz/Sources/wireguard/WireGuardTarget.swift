@testable import Netlink

/// The replies of one `WG_CMD_GET_DEVICE` dump, concatenated as one datagram: a device whose
/// peers' allowed IPs continue from message to message.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWireGuard(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let messages = try? Message.parse(UnsafeRawBufferPointer(start: data, count: size)) else { return 0 }
    guard let device = try? WireGuardCodec.mergeDevice(messages) else { return 0 }
    // What status and the planner do with a device read from the kernel.
    _ = device.peers.map { "\($0.publicKey) \($0.endpoint.map { "\($0)" } ?? "") \($0.allowedIPs)" }
    _ = device.privateKey.map { "\($0)" }
    return 0
}
