import CLinux
import FoundationEssentials
import Glibc
import Netlink
import Synchronization

/// Dumps the proxy entries off the loop for the `proxy_poll`: the kernel sends no event for
/// them, and at 50 000 entries the dump and its decoding take tens of milliseconds, which the
/// loop would otherwise spend away from route events. One dump at a time, on a socket of its
/// own; its result comes back through a lock-guarded mailbox and a pipe the loop watches, as
/// the `ConfigReader`'s does. Reads the loop needs at once (after its own writes, on a proxy or
/// link event, at a resync) stay synchronous; the loop drops an off-loop result that one of
/// those overtook (`Daemon.proxyEpoch`). A dump whose bytes are the ones the loop's cache was
/// decoded from is not decoded again: at 10 000 entries, most of what an idle poll would cost.
final class ProxyReader: @unchecked Sendable {
    let wakeFD: Int32
    private let signalFD: Int32
    private let finished = Mutex<Result<DumpOutcome<ProxyEntry>, any Error>?>(nil)
    /// Loop only: a dump runs, and the loop's proxy epoch when it was started.
    private(set) var startedAt: Int?

    init() throws {
        var fds: [Int32] = [0, 0]
        guard pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { throw DaemonError("proxy reader pipe: \(String(cString: strerror(errno)))") }
        wakeFD = fds[0]
        signalFD = fds[1]
    }

    deinit {
        close(wakeFD)
        close(signalFD)
    }

    /// Starts a dump unless one runs, decoded unless its bytes are those of `previous`; false
    /// when none could be started (the caller reads on the loop).
    func start(epoch: Int, unless previous: ReadDigest?) -> Bool {
        if startedAt != nil { return true }
        let body: @Sendable () -> Void = { [self] in
            let result = Result<DumpOutcome<ProxyEntry>, any Error> { try RTNetlink().proxyEntries(unless: previous) }
            finished.withLock { $0 = result }
            var byte: UInt8 = 1
            _ = write(signalFD, &byte, 1)
        }
        guard detachThread(stackSize: 1 << 20, body) else { return false }
        startedAt = epoch
        return true
    }

    /// The finished dump and the epoch it started at, once (nil while it runs).
    func take() -> (Result<DumpOutcome<ProxyEntry>, any Error>, epoch: Int)? {
        var buffer = [UInt8](repeating: 0, count: 16)
        while read(wakeFD, &buffer, buffer.count) > 0 {}
        guard let result = finished.withLock({ outcome in defer { outcome = nil }; return outcome }), let epoch = startedAt else { return nil }
        startedAt = nil
        return (result, epoch)
    }
}
