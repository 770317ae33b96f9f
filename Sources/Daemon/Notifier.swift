import CLinux
import CSystemd
import FoundationEssentials
import Glibc

/// The service manager's view of us: the `sd_notify` protocol, one datagram per state.
///
/// libsystemd's `sd_notify()` sends on a blocking socket, so a manager that stops reading its
/// notify socket (a full queue) would freeze the loop in `sendmsg`. The datagrams are sent here
/// non-blocking instead: a notification that does not fit is dropped, the loop goes on.
/// libsystemd still decides whether the watchdog is on. Without `NOTIFY_SOCKET` every call is a no-op.
struct Notifier {
    /// Half of `WATCHDOG_USEC` when the watchdog is on, as systemd recommends.
    let watchdogInterval: Duration?
    private let fd: Int32
    private let address: UnixSocketAddress?

    init() {
        var usec: UInt64 = 0
        if sd_watchdog_enabled(0, &usec) > 0, usec > 0 {
            watchdogInterval = .microseconds(Int64(usec / 2))
        } else {
            watchdogInterval = nil
        }
        address = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"]
            .flatMap { $0.hasPrefix("/") || $0.hasPrefix("@") ? UnixSocketAddress($0) : nil }
        fd = address == nil ? -1
            : socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    }

    func send(_ state: String) {
        guard fd >= 0, let address else { return }
        _ = address.send(fd, Array(state.utf8), flags: Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
    }

    func ready(status: String) { send("READY=1\nSTATUS=\(status)") }

    /// `RELOADING=1` must carry the monotonic clock so systemd can order it against `READY=1`.
    func reloading() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let usec = UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
        send("RELOADING=1\nMONOTONIC_USEC=\(usec)")
    }

    func stopping() { send("STOPPING=1") }
    func status(_ line: String) { send("STATUS=\(line)") }
    func watchdog() { send("WATCHDOG=1") }
}
