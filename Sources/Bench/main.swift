import Foundation
import Glibc

// wgkeeper-bench: issue 9's figures, side by side with the tools operators use today.
// Each run builds fresh `wgk-bench-…` namespaces and removes them; each figure is printed and,
// with WGK_BENCH_RESULTS set, appended to that file as a JSON line for `report`.

let usage = """
usage: wgkeeper-bench converge N RUNS        rows 1 and 5: cold start of wgkeeper run vs ip -batch
       wgkeeper-bench memory N RELOADS       row 5 alone: resident memory after convergence and RELOADS reloads, check's peak
       wgkeeper-bench steady N RELOADS SECS [confd] [datapath]
                                             rows 2 and 4: no-op reconcile, reload of 1 changed peer (confd: row 4 only, one file per peer;
                                             datapath: redirect on, a map entry per client)
       wgkeeper-bench config N RUNS [one|confd]  row 4's configuration reading alone, in-process: fresh and cached loads
       wgkeeper-bench repair N[,N...] DELETIONS
                                             row 3: repair latency at each N; at the smallest vs FRR zebra and BIRD 2
       wgkeeper-bench wireguard N RUNS       rows 6 and 7 (needs WireGuard: the VM)
       wgkeeper-bench forward RUNS SECS      row 8: iperf3 through the TC programs vs all.forwarding (the VM)
       wgkeeper-bench programs N ROUNDS      per-packet cost of each TC program path (BPF_PROG_TEST_RUN), N clients
       wgkeeper-bench pps PACKETS ROUNDS [policy]
                                             row 8 natively: gateway CPU per packet, TC programs vs all.forwarding (TUN as the tunnel);
                                             policy: 10 000 peers and 1 000 rules enforced (client_to_lan: deny, lan_to_client: replies)
       wgkeeper-bench routes N RUNS          issue 2's route-write figure
       wgkeeper-bench idle N SECS [datapath] [wireguard]
                                             row 9: CPU while nothing changes, N peers, default polls
                                             (datapath: gateway.ndp datapath, the program answers NDP;
                                             wireguard: wg0 a WireGuard device with the peers, the VM)
       wgkeeper-bench polls N ROUNDS [wireguard]
                                             row 9's parts: one poll's read (proxy entries, routes; wireguard: the device, the VM)
       wgkeeper-bench fingerprints N ROUNDS  row 9's user-space part of a WireGuard poll: fingerprints of a synthetic N-peer dump
       wgkeeper-bench report OUTPUT NOTES RESULTS...
"""

signal(SIGPIPE, SIG_IGN)
let arguments = Array(CommandLine.arguments.dropFirst())
func number(_ index: Int, _ otherwise: Int) -> Int { arguments.count > index ? Int(arguments[index]) ?? otherwise : otherwise }
do {
    switch arguments.first {
    case "converge": try benchConverge(count: number(1, 10_000), runs: number(2, 5))
    case "memory": try benchMemory(count: number(1, 50_000), reloads: number(2, 3))
    case "steady": try benchSteadyState(count: number(1, 10_000), reloads: number(2, 10), window: .seconds(Double(number(3, 8))),
                                        confD: arguments.dropFirst(4).contains("confd"), redirect: arguments.dropFirst(4).contains("datapath"))
    case "config":
        let layouts = arguments.count > 3 ? [arguments[3] == "confd"] : [false, true]
        try benchConfigLoad(count: number(1, 10_000), runs: number(2, 10), confD: layouts)
    case "repair":
        let sizes = (arguments.count > 1 ? arguments[1] : "1000").split(separator: ",").compactMap { Int($0) }
        guard !sizes.isEmpty else { throw BenchError(usage) }
        try benchRepair(sizes: sizes, deletions: number(2, 1000), birdBudget: .seconds(60))
    case "wireguard": try benchWireGuard(count: number(1, 10_000), runs: number(2, 5))
    case "forward": try benchForwarding(runs: number(1, 3), duration: number(2, 5))
    case "programs": try benchPrograms(count: number(1, 10_000), rounds: number(2, 2000))
    case "pps": try benchPacketRate(packets: number(1, 200_000), rounds: number(2, 10), policy: arguments.dropFirst(3).contains("policy"))
    case "routes": try benchRoutes(count: number(1, 10_000), runs: number(2, 5))
    case "idle": try benchIdle(count: number(1, 10_000), window: number(2, 60), ndpDatapath: arguments.dropFirst(3).contains("datapath"),
                               wireGuard: arguments.dropFirst(3).contains("wireguard"))
    case "fingerprints": try benchFingerprints(count: number(1, 10_000), rounds: number(2, 50))
    case "polls": try benchPolls(count: number(1, 10_000), rounds: number(2, 50), wireGuard: arguments.dropFirst(3).contains("wireguard"))
    case "report":
        guard arguments.count >= 3 else { throw BenchError(usage) }
        let notes = try? String(contentsOfFile: arguments[2], encoding: .utf8)
        try writeReport(results: Array(arguments.dropFirst(3)), notes: notes, output: arguments[1])
    default: throw BenchError(usage)
    }
} catch {
    FileHandle.standardError.write(Data("wgkeeper-bench: \(error)\n".utf8))
    exit(1)
}
