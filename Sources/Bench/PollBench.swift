import Foundation
import Glibc
import Netlink

/// Row 9's parts: the CPU one poll's read costs the reading thread (user and kernel time, the
/// kernel's dump included: it runs in the reader's `recvmsg`), N entries, nothing changing, so
/// every read finds the bytes it read before. Proxy entries and routes are read the same way on
/// the host and in the VM, which gives how much slower the VM runs this kind of work; the
/// WireGuard device (`wireguard`: the VM) is read only there, and that factor carries its figure
/// over to a native kernel.
func benchPolls(count: Int, rounds: Int, wireGuard: Bool) throws {
    try withNamespace { name, namespace, index in
        let netlink = try namespace.perform { try RTNetlink() }
        let addresses = (0..<count).map { IPAddress("\(hostAddress($0))")! }
        var failures = 0
        for case .failure in try netlink.perform(addresses.map { Route(destination: IPPrefix(address: $0, length: 128), protocolNumber: 77, outputInterface: index, metric: 1024).addRequest() }) { failures += 1 }
        for case .failure in try netlink.perform(addresses.map { ProxyEntry(address: $0, interfaceIndex: index, protocolNumber: 77).addRequest() }) { failures += 1 }
        if failures > 0 { throw BenchError("\(failures) route or proxy adds failed") }

        var reads: [(String, () throws -> Bool)] = []
        var proxyDigest: ReadDigest?
        reads.append(("proxy entries (RTM_GETNEIGH dump, NTF_PROXY)", {
            switch try netlink.proxyEntries(unless: proxyDigest) {
            case .unchanged: return true
            case .read(_, let digest): proxyDigest = digest; return false
            }
        }))
        var routeDigest: ReadDigest?
        reads.append(("routes (RTM_GETROUTE dump, IPv6)", {
            switch try netlink.routes(family: .inet6, unless: routeDigest) {
            case .unchanged: return true
            case .read(_, let digest): routeDigest = digest; return false
            }
        }))
        if wireGuard {
            _ = try shell(["ip", "-n", name, "link", "add", "wg0", "type", "wireguard"])
            let wg = try namespace.perform { try WireGuardNetlink() }
            let peers = (0..<count).map { i in
                WireGuardPeerChange(publicKey: PrivateKey.generate().publicKey, allowedIPs: [IPPrefix("\(hostAddress(i))/128")!])
            }
            try wg.apply(device: "wg0", WireGuardDeviceChange(privateKey: .generate(), listenPort: 51820, replacePeers: true, peers: peers))
            var digest: ReadDigest?
            reads.append(("WireGuard device, \(count) peers (WG_CMD_GET_DEVICE dump)", {
                guard case .read(_, let read) = try wg.device(named: "wg0", unless: digest) else { return true }
                digest = read
                return false
            }))
        }
        for (what, read) in reads {
            // The first read decodes and keeps the digest; the rounds are the polls after it.
            _ = try read()
            var cpu: [Double] = [], user: [Double] = []
            for _ in 0..<rounds {
                let before = threadCPU(), userBefore = threadUserCPU()
                guard try read() else { throw BenchError("\(what): the read found a change where nothing changed") }
                cpu.append((threadCPU() - before) * 1e3)
                user.append((threadUserCPU() - userBefore) * 1e3)
            }
            var figure = Figure(row: 9, what: "one poll's read, nothing changed: \(what)", unit: "ms of CPU", ours: Summary(cpu), target: "—", met: nil)
            figure.notes.append("CPU time of the reading thread (CLOCK_THREAD_CPUTIME_ID: its user time and the kernel's dump in its recvmsg), \(rounds) polls; "
                + "user time alone (RUSAGE_THREAD, tick-grained): median \(String(format: "%.2f", Summary(user).median)) ms, mean \(String(format: "%.2f", user.reduce(0, +) / Double(rounds))) ms")
            figure.emit()
        }
    }
}

/// The calling thread's CPU time, in seconds.
func threadCPU() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// The calling thread's user time, in seconds (getrusage's resolution).
func threadUserCPU() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(1), &usage)  // RUSAGE_THREAD
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
}
