import CBPF
import Foundation

/// libbpf's warnings (the kernel's extended-ack text, verifier logs) collected instead of
/// printed, so a failing call's error carries them and a tolerated failure stays quiet.
enum LibbpfLog {
    private final class Store: @unchecked Sendable {
        let lock = NSLock()
        var messages: [String] = []
    }

    private static let store = Store()

    /// Routes libbpf's output here; idempotent.
    static let install: Void = {
        _ = libbpf_set_print { level, format, arguments in
            guard level != LIBBPF_DEBUG, let format, let arguments else { return 0 }
            var buffer = [CChar](repeating: 0, count: 2048)
            let count = vsnprintf(&buffer, buffer.count, format, arguments)
            let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            LibbpfLog.append(text)
            return count
        }
    }()

    private static func append(_ text: String) {
        store.lock.lock()
        defer { store.lock.unlock() }
        store.messages.append(text)
        if store.messages.count > 32 { store.messages.removeFirst(store.messages.count - 32) }
    }

    /// The messages since the last call, joined; nil when there were none.
    static func take() -> String? {
        store.lock.lock()
        defer { store.lock.unlock() }
        let messages = store.messages
        store.messages = []
        return messages.isEmpty ? nil : messages.joined(separator: "; ")
    }
}
