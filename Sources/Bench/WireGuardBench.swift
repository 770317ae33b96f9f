import Foundation
import Netlink

/// Issue 9, rows 6 and 7 (a kernel with WireGuard: run in the VM): N peers (one /128 each)
/// applied to an empty device versus `wg setconf`, and one read of the device versus `wg show dump`.
func benchWireGuard(count: Int, runs: Int) throws {
    let privateKey = PrivateKey.generate()
    let peers = (0..<count).map { i in
        WireGuardPeerChange(publicKey: PrivateKey.generate().publicKey,
                            allowedIPs: [IPPrefix("\(hostAddress(i))/128")!])
    }
    var conf = "[Interface]\nPrivateKey = \(privateKey.key.base64)\nListenPort = 51820\n"
    for peer in peers { conf += "\n[Peer]\nPublicKey = \(peer.publicKey.base64)\nAllowedIPs = \(peer.allowedIPs[0])\n" }
    let directory = try scratchDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    let file = directory.appendingPathComponent("wg0.conf")
    try conf.write(to: file, atomically: true, encoding: .utf8)
    chmod(file.path, 0o600)
    let change = WireGuardDeviceChange(privateKey: privateKey, listenPort: 51820, replacePeers: true, peers: peers)

    var setconf: [Double] = [], apply: [Double] = [], show: [Double] = [], read: [Double] = []
    for _ in 0..<runs {
        try withWireGuardNamespace { name, _ in
            setconf.append(try seconds { try shell(["nsenter", "--net=/run/netns/\(name)", "wg", "setconf", "wg0", file.path]) } * 1e3)
            show.append(try seconds { try shell(["nsenter", "--net=/run/netns/\(name)", "wg", "show", "wg0", "dump"]) } * 1e3)
        }
        try withWireGuardNamespace { _, namespace in
            let wireguard = try namespace.perform { try WireGuardNetlink() }
            apply.append(try seconds { try wireguard.apply(device: "wg0", change) } * 1e3)
            var seen = 0
            read.append(try seconds { seen = try wireguard.device(named: "wg0")?.peers.count ?? 0 } * 1e3)
            if seen != count { throw BenchError("read back \(seen) peers, expected \(count)") }
        }
    }
    var applyFigure = Figure(row: 6, what: "apply \(count) WireGuard peers to an empty device", unit: "ms", ours: Summary(apply),
                             anchorName: "wg setconf", anchor: Summary(setconf), target: "≤ 1.0×",
                             met: Summary(apply).median <= Summary(setconf).median)
    applyFigure.notes.append("wg setconf is timed through `nsenter --net` (a fork, setns and exec; not `ip netns exec`, whose remount of /sys costs ~1.8 s per call under TCG)")
    applyFigure.emit()
    var pollFigure = Figure(row: 7, what: "one WireGuard poll at \(count) peers", unit: "ms", ours: Summary(read),
                            anchorName: "wg show dump", anchor: Summary(show), target: "≤ 1.0×",
                            met: Summary(read).median <= Summary(show).median)
    pollFigure.notes.append("wg show dump is timed through `nsenter --net`, output read to the end")
    pollFigure.emit()
}
