import CLinux
import Config
import Foundation
import Glibc

/// Reads and validates the configuration off the loop: a large file (32 MiB is allowed) takes
/// seconds to parse, and the loop must keep repairing, answering status and feeding the
/// watchdog meanwhile. One read at a time; its result comes back through a lock-guarded
/// mailbox and a pipe the loop watches, as the `EndpointResolver`'s answers do.
final class ConfigReader: @unchecked Sendable {
    typealias Outcome = Result<LoadedConfig, ConfigErrors>

    let wakeFD: Int32
    private let signalFD: Int32
    private let lock = NSLock()
    private var finished: Outcome?
    private let load: @Sendable (String) -> Outcome

    init(load: @escaping @Sendable (String) -> Outcome = { ConfigLoader().load(path: $0) }) throws {
        var fds: [Int32] = [0, 0]
        guard pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { throw DaemonError("configuration reader pipe: \(String(cString: strerror(errno)))") }
        wakeFD = fds[0]
        signalFD = fds[1]
        self.load = load
    }

    deinit {
        close(wakeFD)
        close(signalFD)
    }

    /// Starts reading `path` on a thread of its own. The caller (the loop) starts no second
    /// read before it has taken this one's outcome.
    func start(_ path: String) {
        let thread = Thread { [self] in
            let outcome = load(path)
            lock.lock()
            finished = outcome
            lock.unlock()
            var byte: UInt8 = 1
            _ = write(signalFD, &byte, 1)
        }
        // The loader's recursion is bounded by the nesting limit (32 levels); this is ample.
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// The finished read's outcome, once (nil while it runs).
    func take() -> Outcome? {
        var buffer = [UInt8](repeating: 0, count: 16)
        while read(wakeFD, &buffer, buffer.count) > 0 {}
        lock.lock()
        defer { lock.unlock() }
        let outcome = finished
        finished = nil
        return outcome
    }
}
