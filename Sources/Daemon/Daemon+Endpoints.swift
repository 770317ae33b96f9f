import CLinux
import Foundation
import Glibc
import Logging
import Netlink
import Reconciler

/// Name resolution off the loop: getaddrinfo can block for seconds on a dead DNS server, and
/// the loop must keep repairing meanwhile. Results come back through a lock-guarded mailbox and
/// a pipe the loop watches.
final class EndpointResolver: @unchecked Sendable {
    struct Result {
        var peer: LastApplied.PeerKey
        var host: HostEndpoint
        var endpoint: Endpoint?
    }

    let wakeFD: Int32
    private let signalFD: Int32
    private let lock = NSLock()
    private var results: [Result] = []
    private var inFlight: Set<LastApplied.PeerKey> = []

    init() throws {
        var fds: [Int32] = [0, 0]
        guard pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { throw DaemonError("resolver pipe: \(String(cString: strerror(errno)))") }
        wakeFD = fds[0]
        signalFD = fds[1]
    }

    deinit {
        close(wakeFD)
        close(signalFD)
    }

    func resolve(_ peer: LastApplied.PeerKey, _ host: HostEndpoint) {
        lock.lock()
        let started = inFlight.insert(peer).inserted
        lock.unlock()
        guard started else { return }
        DispatchQueue.global().async { [self] in
            let endpoint = resolveEndpoint(host)
            lock.lock()
            results.append(Result(peer: peer, host: host, endpoint: endpoint))
            inFlight.remove(peer)
            lock.unlock()
            var byte: UInt8 = 1
            _ = write(signalFD, &byte, 1)
        }
    }

    func take() -> [Result] {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(wakeFD, &buffer, buffer.count) > 0 {}
        lock.lock()
        defer { lock.unlock() }
        let taken = results
        results = []
        return taken
    }
}

extension Daemon {
    /// 135 s (DESIGN §5); WGKEEPER_RERESOLVE_SECONDS shortens it for tests.
    static let reresolveAfter: Double = ProcessInfo.processInfo.environment["WGKEEPER_RERESOLVE_SECONDS"].flatMap(Double.init) ?? 135

    /// Starts resolutions for host-name endpoints of peers that have been quiet too long.
    func reresolveQuietPeers() {
        let now = Date().timeIntervalSince1970
        for (peer, host) in hostEndpointsToResolve(desired, wireGuard: kernel.wireGuard ?? [:], now: now,
                                                   lastResolved: lastResolved, after: Daemon.reresolveAfter) {
            lastResolved[peer] = now
            resolver.resolve(peer, host)
        }
    }

    /// Applies what came back: a peer whose name now points elsewhere gets the new endpoint.
    func applyResolutions() {
        for result in resolver.take() {
            guard let endpoint = result.endpoint else {
                logger.warning("endpoint \(result.host) of a peer on \(result.peer.device) does not resolve; keeping the current one")
                continue
            }
            let current = kernel.wireGuard?[result.peer.device]?.peers.first { $0.publicKey == result.peer.publicKey }?.endpoint
            guard let wireGuard, current != endpoint else { continue }
            let name = desired.devices.first { $0.name == result.peer.device }?.peers.first { $0.publicKey == result.peer.publicKey }?.name ?? result.peer.publicKey.base64
            do {
                try wireGuard.apply(device: result.peer.device, WireGuardDeviceChange(peers: [
                    WireGuardPeerChange(publicKey: result.peer.publicKey, updateOnly: true, endpoint: endpoint),
                ]))
                logger.info("applied: ~ peer \(name) dev \(result.peer.device) endpoint: \(result.host) now resolves to \(endpoint) (was \(current.map(\.description) ?? "none"))")
                changesApplied += 1
                kernel.stale.insert(.wireGuard)
                schedule()
            } catch {
                logger.error("failed: endpoint of peer \(name): \(error)")
            }
        }
    }
}
