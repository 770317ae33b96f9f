import CBPF
import Netlink
import Synchronization

/// libbpf's warnings (the kernel's extended-ack text, verifier logs) collected instead of
/// printed, so a failing call's error carries them and a tolerated failure stays quiet.
enum LibbpfLog {
    private static let messages = Mutex<[String]>([])

    /// Routes libbpf's output here; idempotent.
    static let install: Void = {
        _ = libbpf_set_print { level, format, arguments in
            guard level != LIBBPF_DEBUG, let format, let arguments else { return 0 }
            var buffer = [CChar](repeating: 0, count: 2048)
            let count = vsnprintf(&buffer, buffer.count, format, arguments)
            let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            let text = String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
            LibbpfLog.append(text)
            return count
        }
    }()

    private static func append(_ text: String) {
        messages.withLock { messages in
            messages.append(text)
            if messages.count > 32 { messages.removeFirst(messages.count - 32) }
        }
    }

    /// The messages since the last call, joined; nil when there were none.
    static func take() -> String? {
        let taken = messages.withLock { messages in
            defer { messages = [] }
            return messages
        }
        return taken.isEmpty ? nil : taken.joined(separator: "; ")
    }
}
