import CLinux
import Glibc
import SystemPackage

/// A single-threaded epoll loop: file descriptors are registered with a token; `wait` returns
/// the tokens that are ready. Timers are deadlines the caller folds into the wait timeout.
final class EventLoop {
    struct Ready {
        var token: UInt64
        var readable: Bool
        var writable: Bool
        var hangup: Bool
    }

    private let epoll: Int32
    private var events = [epoll_event](repeating: epoll_event(), count: 64)

    init() throws {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw Errno(rawValue: errno) }
    }

    deinit { close(epoll) }

    func add(_ fd: Int32, token: UInt64, writable: Bool = false) throws {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | (writable ? EPOLLOUT.rawValue : 0)
        event.data.u64 = token
        guard epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) == 0 else { throw Errno(rawValue: errno) }
    }

    func modify(_ fd: Int32, token: UInt64, readable: Bool = true, writable: Bool) {
        var event = epoll_event()
        event.events = (readable ? EPOLLIN.rawValue : 0) | (writable ? EPOLLOUT.rawValue : 0)
        event.data.u64 = token
        _ = epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &event)
    }

    func remove(_ fd: Int32) {
        _ = epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nil)
    }

    /// Waits until something is ready or the deadline passes (nil: no deadline).
    func wait(until deadline: ContinuousClock.Instant?) -> [Ready] {
        var timeout: Int32 = -1
        if let deadline {
            let left = ContinuousClock.now.duration(to: deadline)
            let ms = left.components.seconds * 1000 + (left.components.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
            timeout = Int32(max(0, min(ms, 60_000)))
        }
        let n = epoll_wait(epoll, &events, Int32(events.count), timeout)
        guard n > 0 else { return [] }
        return events[0..<Int(n)].map { e in
            Ready(token: e.data.u64, readable: e.events & EPOLLIN.rawValue != 0,
                  writable: e.events & EPOLLOUT.rawValue != 0,
                  hangup: e.events & (EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0)
        }
    }
}

/// Signals arrive on a self-pipe written by an async-signal-safe handler, so whichever thread
/// the kernel picks to run the handler, the loop sees the signal as a readable descriptor.
enum SignalPipe {
    nonisolated(unsafe) static var writeEnd: Int32 = -1
    nonisolated(unsafe) static var readEnd: Int32 = -1

    static func install(_ signals: [Int32]) throws {
        var fds: [Int32] = [0, 0]
        guard pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { throw Errno(rawValue: errno) }
        readEnd = fds[0]
        writeEnd = fds[1]
        for signal in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                var byte = UInt8(truncatingIfNeeded: number)
                let saved = errno
                _ = Glibc.write(SignalPipe.writeEnd, &byte, 1)
                errno = saved
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
    }

    /// The signals received since the last call.
    static func drain() -> [Int32] {
        var buffer = [UInt8](repeating: 0, count: 64)
        var received: [Int32] = []
        while true {
            let n = read(readEnd, &buffer, buffer.count)
            if n <= 0 { break }
            received += buffer[0..<n].map { Int32($0) }
        }
        return received
    }
}
