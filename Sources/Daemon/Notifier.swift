import CSystemd
import Glibc

/// The service manager's view of us (`sd_notify`). Every call is a no-op without
/// `NOTIFY_SOCKET`, so the daemon runs the same under systemd and in a terminal.
struct Notifier {
    /// Half of `WATCHDOG_USEC` when the watchdog is on, as systemd recommends.
    let watchdogInterval: Duration?

    init() {
        var usec: UInt64 = 0
        if sd_watchdog_enabled(0, &usec) > 0, usec > 0 {
            watchdogInterval = .microseconds(Int64(usec / 2))
        } else {
            watchdogInterval = nil
        }
    }

    func send(_ state: String) { _ = sd_notify(0, state) }

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
