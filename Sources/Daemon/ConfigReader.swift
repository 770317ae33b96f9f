import CLinux
import Config
import FoundationEssentials
import Glibc
import Synchronization

/// Reads and validates the configuration off the loop: a large file (32 MiB is allowed) takes
/// seconds to parse, and the loop must keep repairing, answering status and feeding the
/// watchdog meanwhile. One read at a time; its result comes back through a lock-guarded
/// mailbox and a pipe the loop watches, as the `EndpointResolver`'s answers do.
final class ConfigReader: @unchecked Sendable {
    typealias Outcome = Result<LoadedConfig, ConfigErrors>

    let wakeFD: Int32
    private let signalFD: Int32
    /// A read's outcome, how long it took, and what the cache says it read.
    typealias Finished = (outcome: Outcome, took: Duration, statistics: ConfigCache.Statistics?)
    private let finished = Mutex<Finished?>(nil)
    private let load: @Sendable (String) -> Outcome
    private let cache: ConfigCache?

    /// Reads with `cache` (the one the daemon's first load filled), so a reload re-reads and
    /// re-decodes only what changed. What the daemon does not keep of a load is dropped here,
    /// on the reader's thread, not held until the reload's reconcile is over.
    convenience init(cache: ConfigCache?) throws {
        try self.init(cache: cache) { ConfigLoader().load(path: $0, cache: cache).map(Daemon.kept) }
    }

    init(cache: ConfigCache? = nil, load: @escaping @Sendable (String) -> Outcome) throws {
        var fds: [Int32] = [0, 0]
        guard pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { throw DaemonError("configuration reader pipe: \(String(cString: strerror(errno)))") }
        wakeFD = fds[0]
        signalFD = fds[1]
        self.load = load
        self.cache = cache
    }

    deinit {
        close(wakeFD)
        close(signalFD)
    }

    /// Starts reading `path` on a thread of its own. The caller (the loop) starts no second
    /// read before it has taken this one's outcome.
    func start(_ path: String) {
        let body: @Sendable () -> Void = { [self] in
            let start = ContinuousClock.now
            let outcome = load(path)
            let took = ContinuousClock.now - start
            let statistics = cache?.lastLoad
            finished.withLock { $0 = (outcome, took, statistics) }
            var byte: UInt8 = 1
            _ = write(signalFD, &byte, 1)
        }
        // The loader's recursion is bounded by the nesting limit (32 levels); 8 MiB is ample.
        if !detachThread(stackSize: 8 << 20, body) {
            let error = ConfigErrors([ConfigError(SourceLocation(file: path, line: 1, column: 1), "cannot start a thread to read the configuration: \(String(cString: strerror(errno)))")])
            finished.withLock { $0 = (.failure(error), .zero, nil) }
            var byte: UInt8 = 1
            _ = write(signalFD, &byte, 1)
        }
    }

    /// The finished read, once (nil while it runs).
    func take() -> Finished? {
        var buffer = [UInt8](repeating: 0, count: 16)
        while read(wakeFD, &buffer, buffer.count) > 0 {}
        return finished.withLock { outcome in
            defer { outcome = nil }
            return outcome
        }
    }
}
