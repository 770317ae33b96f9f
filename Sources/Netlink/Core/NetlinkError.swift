import SystemPackage

/// A failed netlink operation: what failed, why, and the kernel's own words when it gave any.
public struct NetlinkError: Error, Sendable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        /// The kernel answered the request with a negative errno.
        case kernel(Errno)
        /// A system call on the socket failed.
        case system(Errno)
        /// Bytes that do not parse as netlink.
        case malformed(String)
        /// No answer within the deadline.
        case timeout
        /// A dump stayed inconsistent (`NLM_F_DUMP_INTR`) after every retry.
        case dumpInterrupted
        /// The socket's receive queue overflowed (`ENOBUFS`): answers were lost.
        case overflow
    }

    public var reason: Reason
    /// The extended-ack message (`NLMSGERR_ATTR_MSG`), when the kernel sent one.
    public var kernelMessage: String?
    /// Which request or operation failed, in words (never contains a secret).
    public var context: String

    public init(_ reason: Reason, context: String, kernelMessage: String? = nil) {
        self.reason = reason
        self.context = context
        self.kernelMessage = kernelMessage
    }

    /// The errno, for kernel and system failures.
    public var errno: Errno? {
        switch reason {
        case .kernel(let e), .system(let e): e
        default: nil
        }
    }

    public var description: String {
        var text = context.isEmpty ? "" : "\(context): "
        switch reason {
        case .kernel(let e): text += e.description
        case .system(let e): text += e.description
        case .malformed(let why): text += "malformed netlink data: \(why)"
        case .timeout: text += "no answer from the kernel"
        case .dumpInterrupted: text += "dump kept changing underneath (NLM_F_DUMP_INTR)"
        case .overflow: text += "netlink receive queue overflowed (ENOBUFS)"
        }
        if let kernelMessage, !kernelMessage.isEmpty { text += " (kernel: \(kernelMessage))" }
        return text
    }

    static func malformed(_ why: String) -> NetlinkError { NetlinkError(.malformed(why), context: "") }
}
