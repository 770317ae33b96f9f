import CBPF
import Foundation
import Glibc
import Netlink

/// Issue 15, row 8 natively: the gateway's CPU per packet on the host kernel (no emulation), the
/// TC programs against the kernel's forwarding, two gateways side by side. The tunnel is a TUN
/// device (layer 3, like WireGuard, without the crypto) whose descriptor this process holds and
/// never reads: its queue fills and the rest is dropped at the same place on both gateways.
///
/// - LAN → client: one thread (the process pinned to a CPU by `taskset`) sends Ethernet frames from the LAN host's end of
///   the veth (`AF_PACKET`) to the gateway's MAC. A veth delivers to its peer on the sending CPU
///   and the receive softirq runs before the send returns, so the wall time of the sends holds the
///   gateway's whole path.
/// - client → LAN: the same thread writes bare IPv6 packets into the TUN descriptor (one packet a
///   write; the softirq again runs before the write returns); the LAN host drops them at its
///   ingress (a tc program that drops), after the gateway has sent them.
///
/// A baseline run sends the same frames to a MAC that is not the gateway's or, for the tunnel,
/// packets from a multicast source (both dropped first thing by `ip6_rcv`, after `lan_ingress`
/// or `tunnel_ingress` passed them on the programs' gateway): the sender's own cost and the
/// device's. The gateway's share is run − baseline.
///
/// With `policy`, the programs' gateway has 10 000 peers and enforces 1 000 rules
/// (`client_to_lan: deny`, `lan_to_client: replies`; 100 groups of 100 peers, 10 rules each, the
/// sending client's group allowed to the LAN host): issue 17's "throughput stays ≥ 0.95× of kernel forwarding".
func benchPacketRate(packets: Int, rounds: Int, policy: Bool = false) throws {
    let lanHost = "2001:db8:1::10", client = peerAddress(0)
    let namespaces = NamespaceSet()
    defer { namespaces.removeAll() }
    func namespace() throws -> (String, NetworkNamespace) {
        let name = try namespaces.add()
        return (name, try NetworkNamespace(named: name))
    }
    struct Side { let gateway: String; let tun: Int32; let packet: Int32; let gatewayMAC: [UInt8]; let hostMAC: [UInt8] }
    var descriptors: [Int32] = []
    defer { for fd in descriptors { close(fd) } }
    func topology() throws -> Side {
        let (g, gns) = try namespace(), (h, hns) = try namespace()
        let tun = try gns.perform { try openTun("wg0") }
        descriptors.append(tun)
        try shell(["ip", "-n", g, "link", "set", "wg0", "up"])
        try shell(["ip", "-n", g, "link", "add", "private0", "type", "veth", "peer", "name", "host0", "netns", h])
        try shell(["ip", "-n", g, "link", "set", "private0", "up"])
        try shell(["ip", "-n", g, "-6", "route", "add", "2001:db8:1::/64", "dev", "private0"])
        try shell(["ip", "-n", h, "-6", "addr", "add", "\(lanHost)/64", "dev", "host0", "nodad"])
        try shell(["ip", "-n", h, "link", "set", "host0", "up"])
        // The LAN host's sink: everything arriving is dropped before its stack (a tc program
        // returning TC_ACT_SHOT).
        let index = try hns.perform { try RTNetlink().link(named: "host0")!.index }
        let drop = try emptyProgram(verdict: 2)
        descriptors.append(drop)
        try hns.perform {
            guard wgk_tc_ingress_create(index) == 0, wgk_tc_ingress_replace(index, 1, 1, drop) == 0 else {
                throw BenchError("attaching the drop program to host0 failed")
            }
        }
        let socket = try hns.perform { try packetSocket(interfaceIndex: index) }
        descriptors.append(socket)
        // Resolved once, permanently: neither gateway's figure should hold neighbour discovery.
        try shell(["ip", "-n", g, "-6", "neigh", "replace", lanHost, "lladdr", try macAddress(h, "host0"), "dev", "private0", "nud", "permanent"])
        return Side(gateway: g, tun: tun, packet: socket, gatewayMAC: try mac(try macAddress(g, "private0")),
                    hostMAC: try mac(try macAddress(h, "host0")))
    }
    let ours = try topology(), kernel = try topology()
    try shell(["ip", "-n", kernel.gateway, "-6", "route", "add", "\(client)/128", "dev", "wg0"])
    try shell(["ip", "netns", "exec", kernel.gateway, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])

    let directory = try scratchDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    var config = GatewayConfig(directory: directory, peers: policy ? 10_000 : 1, timers: "5s")
    config.redirect = true
    if policy {
        var text = "policy:\n  client_to_lan: deny\n  lan_to_client: replies\n  groups:\n"
        for group in 0..<100 { text += "    g\(group): [" + (0..<100).map { "p\(group * 100 + $0)" }.joined(separator: ", ") + "]\n" }
        text += "  rules:\n"
        for group in 0..<100 {
            // Rule 0 of each group: the LAN host, every protocol (the packets carry next header 253).
            text += "    - {from: g\(group), to: \"\(lanHost)\"}\n"
            for r in 1..<10 {
                text += "    - {from: g\(group), to: \"2001:db8:1::\(String(0x100 + r, radix: 16))\", protocol: tcp, ports: [22, 443, 8000-8080]}\n"
            }
        }
        config.policy = text
    }
    try config.write()
    let daemon = try GatewayDaemon(namespace: ours.gateway, config: config)
    defer { daemon.stop() }
    _ = try daemon.wait(for: "READY=1")
    try daemon.waitForDatapath(entries: policy ? 10_001 : 2)

    let payload = [UInt8](repeating: 0x5a, count: 64)
    func ipv6(from source: String, to destination: String) -> [UInt8] {
        [0x60, 0, 0, 0, 0, UInt8(payload.count), 253, 64] + IPv6Address(source)!.bytes + IPv6Address(destination)!.bytes + payload
    }
    /// ns per packet of one run: `packets` sends of `frame` on `fd` (scripts/bench pins the
    /// process to one CPU with taskset).
    func run(_ fd: Int32, _ frame: [UInt8]) throws -> Double {
        let start = ContinuousClock.now
        for _ in 0..<packets where write(fd, frame, frame.count) != frame.count {
            guard errno == ENOBUFS || errno == EAGAIN else { throw BenchError("send: errno \(errno)") }
        }
        let elapsed = ContinuousClock.now - start
        return (Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9) / Double(packets)
    }

    let before = try daemon.request("status")["datapath"] as? [String: Any]
    for direction in ["LAN host → client", "client → LAN host"] {
        let lanSide = direction.hasPrefix("LAN")
        var mine: [Double] = [], anchor: [Double] = [], bases: [Double] = []
        for round in 0..<rounds {
            for (index, side) in [ours, kernel].enumerated() {
                let path: (Int32, [UInt8]), base: (Int32, [UInt8])
                if lanSide {
                    path = (side.packet, side.gatewayMAC + side.hostMAC + [0x86, 0xdd] + ipv6(from: lanHost, to: client))
                    base = (side.packet, [0x02, 0xde, 0xad, 0, 0, 1] + side.hostMAC + [0x86, 0xdd] + ipv6(from: lanHost, to: client))
                } else {
                    path = (side.tun, ipv6(from: client, to: lanHost))
                    base = (side.tun, ipv6(from: "ff02::1", to: "2001:db8:ffff::1"))
                }
                let cost = try run(path.0, path.1)
                (index == 0 ? { mine.append(cost) } : { anchor.append(cost) })()
                if round % 2 == index { bases.append(try run(base.0, base.1)) }
            }
        }
        let baseline = Summary(bases).median
        let gatewayShare = (Summary(mine).median - baseline, Summary(anchor).median - baseline)
        let enforced = policy ? ", policy enforced (10 000 peers, 1 000 rules, replies)" : ""
        var figure = Figure(row: 8, what: "gateway CPU per packet, \(direction), 104-byte IPv6 packets, native kernel, tunnel stand-in TUN\(enforced)",
                            unit: "ns", ours: Summary(mine), anchorName: "all.forwarding = 1", anchor: Summary(anchor),
                            target: "≤ 1.05× (throughput ≥ 0.95×)", met: gatewayShare.0 <= gatewayShare.1 * 1.05)
        figure.notes.append(String(format: "wall time per packet of a pinned sender including the gateway's softirq; baseline (the same sends, dropped on arrival by ip6_rcv) median %.0f ns (n=%d); gateway's share: TC programs %.0f ns, kernel forwarding %.0f ns, ratio %.2f",
                                   baseline, bases.count, gatewayShare.0, gatewayShare.1, gatewayShare.0 / gatewayShare.1))
        figure.notes.append("\(rounds) rounds of \(packets) packets per gateway, alternating; " + (lanSide
            ? "AF_PACKET writes on the LAN host's veth to the gateway's MAC; the TUN queue fills and drops the rest alike on both"
            : "writes into the TUN descriptor (a syscall per packet, most of the time); the LAN host drops them at its tc ingress (a program returning TC_ACT_SHOT)"))
        figure.emit()
    }
    let after = try daemon.request("status")["datapath"] as? [String: Any]
    let counters = ["lan_to_tunnel", "tunnel_to_lan", "passed", "errors", "policy_denied"].map { key in
        "\(key) +\((((after?["counters"] as? [String: Any])?[key] as? Int) ?? 0) - (((before?["counters"] as? [String: Any])?[key] as? Int) ?? 0))"
    }
    FileHandle.standardOutput.write(Data("    datapath counters: \(counters.joined(separator: ", "))\n".utf8))
    if policy {
        // The packets met the policy: its rule 0 (g0 to the LAN host) counted them.
        let rules = ((after?["policy"] as? [String: Any])?["rules"] as? [[String: Any]]) ?? []
        let allowed = rules.first.flatMap { $0["packets"] as? Int } ?? 0
        FileHandle.standardOutput.write(Data("    policy: \(rules.count) rules, rule 0 allowed \(allowed) packets\n".utf8))
        guard rules.count == 1000, allowed >= 2 * packets * rounds else { throw BenchError("the policy did not see the packets: \(rules.count) rules, \(allowed) allowed") }
    }
}

private func macAddress(_ namespace: String, _ device: String) throws -> String {
    try shell(["ip", "netns", "exec", namespace, "cat", "/sys/class/net/\(device)/address"]).trimmingCharacters(in: .whitespacesAndNewlines)
}

private func mac(_ text: String) throws -> [UInt8] {
    let bytes = text.split(separator: ":").compactMap { UInt8($0, radix: 16) }
    guard bytes.count == 6 else { throw BenchError("not a MAC address: \(text)") }
    return bytes
}

/// A layer-3 TUN device (IFF_TUN | IFF_NO_PI) in the calling thread's namespace; its descriptor.
private func openTun(_ name: String) throws -> Int32 {
    let fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { throw BenchError("open /dev/net/tun: errno \(errno)") }
    var request = ifreq()
    withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { $0.copyBytes(from: Array(name.utf8.prefix(15))) }
    request.ifr_ifru.ifru_flags = 0x0001 | 0x1000  // IFF_TUN | IFF_NO_PI
    guard withUnsafeMutablePointer(to: &request, { ioctl(fd, UInt(0x400454ca), $0) }) == 0 else {  // TUNSETIFF
        let error = errno
        close(fd)
        throw BenchError("TUNSETIFF \(name): errno \(error)")
    }
    return fd
}

/// An AF_PACKET socket bound to one interface, for sending whole frames.
private func packetSocket(interfaceIndex: Int32) throws -> Int32 {
    let all = UInt16(3).bigEndian  // ETH_P_ALL
    let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw BenchError("packet socket: errno \(errno)") }
    // struct sockaddr_ll: family, protocol, ifindex, hatype, pkttype, halen, addr[8].
    var address = [UInt8](repeating: 0, count: 20)
    withUnsafeBytes(of: UInt16(AF_PACKET)) { address.replaceSubrange(0..<2, with: $0) }
    withUnsafeBytes(of: all) { address.replaceSubrange(2..<4, with: $0) }
    withUnsafeBytes(of: interfaceIndex) { address.replaceSubrange(4..<8, with: $0) }
    let bound = address.withUnsafeBytes { bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(20)) }
    guard bound == 0 else { close(fd); throw BenchError("bind packet socket: errno \(errno)") }
    return fd
}
