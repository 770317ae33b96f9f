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
            // A read that found a change is not a figure: the namespace's own routes still settle
            // for a moment after it is made (link-local addresses leaving duplicate detection).
            var cpu: [Double] = [], user: [Double] = [], changes = 0
            while cpu.count < rounds {
                let before = threadCPUTime(), userBefore = threadUserTime()
                guard try read() else {
                    changes += 1
                    if changes > 3 { throw BenchError("\(what): the read found a change where nothing changed, \(changes) times") }
                    continue
                }
                cpu.append((threadCPUTime() - before) * 1e3)
                user.append((threadUserTime() - userBefore) * 1e3)
            }
            var figure = Figure(row: 9, what: "one poll's read, nothing changed: \(what)", unit: "ms of CPU", ours: Summary(cpu), target: "—", met: nil)
            figure.notes.append("CPU time of the reading thread (CLOCK_THREAD_CPUTIME_ID: its user time and the kernel's dump in its recvmsg), \(rounds) polls (\(changes) more found a change and are left out); "
                + "user time alone (RUSAGE_THREAD, tick-grained): median \(String(format: "%.2f", Summary(user).median)) ms, mean \(String(format: "%.2f", user.reduce(0, +) / Double(rounds))) ms")
            figure.emit()
        }
    }
}

/// Row 9's user-space part of a WireGuard poll, natively (no WireGuard here): the fingerprints
/// of a synthetic `WG_CMD_GET_DEVICE` dump laid out as the kernel lays one out (N peers, one
/// /128 each, ≈ 32 KB replies), every byte (`WholeDumpFingerprint`) and without the traffic
/// figures (`WireGuardFingerprint`).
func benchFingerprints(count: Int, rounds: Int) throws {
    var messages: [(UInt16, UInt16, [UInt8])] = []
    var peer = 0
    while peer < count {
        let buffer = MessageBuffer(capacity: 32 * 1024)
        let first = peer == 0
        _ = buffer.append(type: 30, flags: 2, sequence: 1) { w in
            w.put(header: (UInt8(1), UInt8(1), UInt16(0)))
            w.put(1, u32: 5)
            w.put(2, string: "wg0")
            if first {
                w.put(3, bytes: [UInt8](repeating: 7, count: 32))
                w.put(4, bytes: [UInt8](repeating: 8, count: 32))
                w.put(6, u16: 51820)
                w.put(7, u32: 0)
            }
            w.nest(8) { w in
                for i in peer..<min(peer + 100, count) {
                    w.nest(0) { p in
                        p.put(1, bytes: (0..<32).map { UInt8(truncatingIfNeeded: i >> ($0 % 3 * 8) &+ $0) })
                        p.put(2, bytes: [UInt8](repeating: 0, count: 32))
                        p.put(4, bytes: [UInt8](repeating: 0, count: 16))
                        p.put(5, u16: 0)
                        p.put(7, u64: 0)
                        p.put(6, u64: 0)
                        p.put(10, u32: 1)
                        p.nest(9) { a in
                            a.nest(0) { e in
                                e.put(1, u16: 10)
                                e.put(2, address: IPAddress(hostAddress(i))!)
                                e.put(3, u8: 128)
                            }
                        }
                    }
                }
            }
        }
        peer += 100
        let bytes = buffer.bytes
        messages.append((30, 2, Array(bytes.dropFirst(16))))
    }
    let total = messages.reduce(0) { $0 + $1.2.count }
    func time<F: DumpFingerprint>(_: F.Type) -> [Double] {
        (0..<rounds).map { _ in
            let start = threadCPUTime()
            var fingerprint = F()
            for (type, flags, payload) in messages { payload.withUnsafeBytes { fingerprint.feed(type: type, flags: flags, payload: $0) } }
            precondition(fingerprint.finalize() != nil)
            return (threadCPUTime() - start) * 1e3
        }
    }
    for (what, figures) in [("every byte", time(WholeDumpFingerprint.self)), ("without the traffic figures", time(WireGuardFingerprint.self))] {
        var figure = Figure(row: 9, what: "fingerprint of a WireGuard dump, \(count) peers (\(total) bytes), \(what)", unit: "ms of CPU",
                            ours: Summary(figures), target: "—", met: nil)
        figure.notes.append("in-process, synthetic replies laid out as the kernel's, \(rounds) rounds")
        figure.emit()
    }
}
