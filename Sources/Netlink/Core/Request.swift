import CNetlink

/// One request to the kernel: a message type, its flags, and how to write its body.
/// `summary` names the object in errors and logs; it never holds a secret.
public struct Request: Sendable {
    public var type: UInt16
    public var flags: UInt16
    public var summary: String
    public var body: @Sendable (inout MessageWriter) -> Void

    public init(type: UInt16, flags: UInt16, summary: String, body: @escaping @Sendable (inout MessageWriter) -> Void) {
        self.type = type
        self.flags = flags
        self.summary = summary
        self.body = body
    }

    public static let create = UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
    public static let replace = UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
    public static let remove = UInt16(NLM_F_REQUEST | NLM_F_ACK)
    public static let dump = UInt16(NLM_F_REQUEST | NLM_F_DUMP)
    public static let get = UInt16(NLM_F_REQUEST | NLM_F_ACK)

    /// The request's bytes as a single message (for tests and fixtures).
    public func encoded(sequence: UInt32, portID: UInt32 = 0) -> [UInt8]? {
        let buffer = MessageBuffer(capacity: 1 << 20)
        guard buffer.append(type: type, flags: flags, sequence: sequence, portID: portID, body) else { return nil }
        return buffer.bytes
    }
}
