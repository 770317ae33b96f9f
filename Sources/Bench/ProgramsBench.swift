import CBPF
import Datapath
import Foundation
import Glibc
import Netlink

/// Issue 15: the per-packet cost of each path through the TC programs, by BPF_PROG_TEST_RUN, on
/// the programs exactly as `wgkeeper run` installs them: N clients in the maps, `ndp: datapath`
/// (so the solicitation path is live), ICMPv6 errors on and not rate-limited. The anchor is an
/// empty program (`return TC_ACT_UNSPEC`) run the same way: the test run's own overhead, so
/// "added" = path − empty.
///
/// A test run always hands a `tc` program an Ethernet frame (`eth_type_trans` on loopback, whose
/// MAC is zero). `tunnel_ingress` expects a bare IPv6 packet, so its packets come from a client
/// address whose bytes 4–5 are 0x86dd: read as a frame, its ethertype is IPv6, and the program
/// sees the IPv6 header at offset 0 as it does on `wg0`.
func benchPrograms(count: Int, rounds: Int) throws {
    let directory = try scratchDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    var config = GatewayConfig(directory: directory, peers: count, timers: "2s")
    config.redirect = true
    config.ndp = "datapath"
    config.icmpRatelimit = "0"
    try config.write()
    // Mounted here, so that the pins are visible to this process (the daemon runs in the mount
    // namespace of `ip netns exec`, a copy of this one).
    let pins = directory.appendingPathComponent("bpf").path
    try FileManager.default.createDirectory(atPath: pins, withIntermediateDirectories: true)
    try shell(["mount", "-t", "bpf", "bpffs", pins])
    defer { while umount2(pins, Int32(MNT_DETACH)) == 0 {} }

    try withGatewayNamespace { name, _ in
        // The errors' source: a global address on the LAN (the default for both sides).
        try shell(["ip", "-n", name, "-6", "addr", "add", lanAddress + "/64", "dev", "private0", "nodad"])
        // WireGuard's default MTU (the stand-in is a veth).
        try shell(["ip", "-n", name, "link", "set", "wg0", "mtu", "1420"])
        let daemon = try GatewayDaemon(namespace: name, config: config)
        defer { daemon.stop() }
        _ = try daemon.wait(for: "READY=1", timeout: .seconds(300))
        try daemon.waitForDatapath(entries: count, timeout: .seconds(120))
        let lan = try pinnedProgram(pins + "/wg0/lan_ingress"), tunnel = try pinnedProgram(pins + "/wg0/tunnel_ingress")
        defer { close(lan); close(tunnel) }
        let empty = try emptyProgram()
        defer { close(empty) }

        let client = peerAddress(count / 2), group = IPv6Address(client)!.solicitedNodeGroup
        let zero: [UInt8] = [0, 0, 0, 0, 0, 0]
        func fromLAN(_ packet: [UInt8], to mac: [UInt8] = zero) -> [UInt8] { mac + hostMAC + [0x86, 0xdd] + packet }
        let solicitation = icmpv6(from: lanHost, to: group.description, hopLimit: 255,
                                  message: [135, 0, 0, 0, 0, 0, 0, 0] + IPv6Address(client)!.bytes + [1, 1] + hostMAC)
        // (what, program, input, repetitions per run, expected verdict, bytes expected at an offset of the output)
        let paths: [(String, Int32, [UInt8], Int32, Int, (Int, [UInt8])?)] = [
            ("lan_ingress: to a client, redirected to the tunnel", lan, fromLAN(datagram(from: lanHost, to: client, hopLimit: 255)), 200, 7, nil),
            ("lan_ingress: to a LAN address, passed to the stack", lan, fromLAN(datagram(from: lanHost, to: lanAddress)), 200, -1, nil),
            ("lan_ingress: Neighbor Solicitation for a client, answered", lan, fromLAN(solicitation, to: [0x33, 0x33] + group.bytes.suffix(4)), 1, 7,
             (14 + 40, [136])),
            ("lan_ingress: hop limit 1, Time Exceeded sent", lan, fromLAN(datagram(from: lanHost, to: client, hopLimit: 1)), 1, 7, (14 + 40, [3, 0])),
            ("lan_ingress: 1500 bytes for the tunnel (MTU 1420), Packet Too Big sent", lan,
             fromLAN(datagram(from: lanHost, to: client, length: 1500)), 1, 7, (14 + 40, [2, 0])),
            ("tunnel_ingress: to a LAN host, redirected to the LAN (head grown, redirect_neigh)", tunnel,
             datagram(from: tunnelClient, to: lanHost), 1, 7, (0, zero)),
            ("tunnel_ingress: to an address outside the LAN prefix, passed", tunnel,
             datagram(from: tunnelClient, to: "2001:db8:ffff::1"), 200, -1, nil),
            ("tunnel_ingress: hop limit 1, Time Exceeded sent", tunnel, datagram(from: tunnelClient, to: lanHost, hopLimit: 1), 1, 7, (40, [3, 0])),
            ("tunnel_ingress: 1600 bytes for the LAN (MTU 1500), Packet Too Big sent", tunnel,
             datagram(from: tunnelClient, to: lanHost, length: 1600), 1, 7, (40, [2, 0])),
        ]
        for (what, program, input, repetitions, verdict, expected) in paths {
            var ours: [Double] = [], anchor: [Double] = []
            for round in 0..<rounds {
                let run = programTestRun(program, input, repeat: repetitions)
                guard run.status == 0, run.verdict == verdict else {
                    throw BenchError("\(what): test run status \(run.status), verdict \(run.verdict) (expected \(verdict))")
                }
                if round == 0, let (offset, bytes) = expected, Array(run.output.dropFirst(offset).prefix(bytes.count)) != bytes {
                    throw BenchError("\(what): output at \(offset) is \(run.output.dropFirst(offset).prefix(bytes.count)), expected \(bytes)")
                }
                ours.append(Double(run.nanoseconds))
                anchor.append(Double(programTestRun(empty, input, repeat: repetitions).nanoseconds))
            }
            var figure = Figure(row: 10, what: what, unit: "ns", ours: Summary(ours), anchorName: "empty program", anchor: Summary(anchor),
                                target: "—", met: nil)
            figure.notes.append(String(format: "added by the program: %.0f ns (medians); ", Summary(ours).median - Summary(anchor).median)
                                + "\(rounds) test runs of \(repetitions) repetition\(repetitions == 1 ? "" : "s") each, \(count) clients in the maps, "
                                + "\(input.count)-byte input")
            figure.emit()
        }
        let counters = try daemon.request("status")["datapath"] as? [String: Any]
        FileHandle.standardOutput.write(Data("    datapath counters: \((counters?["counters"] as? [String: Any]) ?? [:])\n".utf8))
    }
}

private let lanAddress = "2001:db8:1::1", lanHost = "2001:db8:1::10"
/// A client whose address reads, as an Ethernet frame, as ethertype IPv6 (see above).
private let tunnelClient = "2001:db8:86dd::5"
private let hostMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x10]

/// An IPv6 packet with next header 253 (experimental), padded to `length` bytes.
private func datagram(from source: String, to destination: String, hopLimit: UInt8 = 64, length: Int = 64) -> [UInt8] {
    ipv6(from: source, to: destination, hopLimit: hopLimit, nextHeader: 253, payload: [UInt8](repeating: 0x5a, count: length - 40))
}

private func ipv6(from source: String, to destination: String, hopLimit: UInt8, nextHeader: UInt8, payload: [UInt8]) -> [UInt8] {
    [0x60, 0, 0, 0, UInt8(payload.count >> 8), UInt8(payload.count & 0xff), nextHeader, hopLimit]
        + IPv6Address(source)!.bytes + IPv6Address(destination)!.bytes + payload
}

/// An ICMPv6 packet with its checksum (RFC 4443 2.3: over the pseudo-header and the message).
private func icmpv6(from source: String, to destination: String, hopLimit: UInt8, message: [UInt8]) -> [UInt8] {
    var message = message
    var words = IPv6Address(source)!.bytes + IPv6Address(destination)!.bytes
        + [0, 0, UInt8(message.count >> 8), UInt8(message.count & 0xff), 0, 0, 0, 58] + message
    if words.count % 2 == 1 { words.append(0) }
    var sum: UInt32 = 0
    for i in stride(from: 0, to: words.count, by: 2) { sum += UInt32(words[i]) << 8 | UInt32(words[i + 1]) }
    while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
    let checksum = ~UInt16(sum)
    message[2] = UInt8(checksum >> 8)
    message[3] = UInt8(checksum & 0xff)
    return ipv6(from: source, to: destination, hopLimit: hopLimit, nextHeader: 58, payload: message)
}

private func pinnedProgram(_ path: String) throws -> Int32 {
    let fd = bpf_obj_get(path)
    guard fd >= 0 else { throw BenchError("bpf_obj_get \(path): errno \(errno)") }
    return fd
}

/// `r0 = verdict; exit` (-1: TC_ACT_UNSPEC, 2: TC_ACT_SHOT).
func emptyProgram(verdict: Int32 = -1) throws -> Int32 {
    var instructions = [bpf_insn](repeating: bpf_insn(), count: 2)
    instructions[0].code = UInt8(BPF_ALU64 | BPF_MOV | BPF_K)
    instructions[0].imm = verdict
    instructions[1].code = UInt8(BPF_JMP | BPF_EXIT)
    let fd = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "wgk_bench_empty", "GPL", instructions, 2, nil)
    guard fd >= 0 else { throw BenchError("loading the empty program: \(fd)") }
    return fd
}
