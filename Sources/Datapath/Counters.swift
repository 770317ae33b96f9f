import CBPF
import Glibc

/// The programs' counters, summed over every CPU.
public struct DatapathCounters: Equatable, Sendable, CustomStringConvertible {
    /// LAN frames redirected to the tunnel.
    public var lanToTunnel: UInt64 = 0
    /// Tunnel packets redirected to the LAN.
    public var tunnelToLan: UInt64 = 0
    /// Packets handed to the stack unchanged (not IPv6, not ours, neighbour discovery, …).
    public var passed: UInt64 = 0
    /// Packets for a redirected destination that arrived with hop limit ≤ 1.
    public var hopLimitExpired: UInt64 = 0
    /// Redirects or ICMPv6 errors that failed half-way (no room for a header).
    public var errors: UInt64 = 0
    /// ICMPv6 Time Exceeded sent (to either side).
    public var timeExceeded: UInt64 = 0
    /// ICMPv6 Packet Too Big sent (to either side).
    public var packetTooBig: UInt64 = 0
    /// ICMPv6 errors not sent because their destination's token bucket was empty.
    public var rateLimited: UInt64 = 0
    /// Neighbor Solicitations for a client answered by the program (`gateway.ndp: datapath`).
    public var solicitationsAnswered: UInt64 = 0
    /// Packets the access policy denied (dropped; see `Datapath.policyCounters` per rule).
    public var policyDenied: UInt64 = 0
    /// ICMPv6 Destination Unreachable "administratively prohibited" sent for them.
    public var prohibited: UInt64 = 0

    public init() {}

    /// Name → value, for status output; the names are stable.
    public var byName: [String: UInt64] {
        ["lan_to_tunnel": lanToTunnel, "tunnel_to_lan": tunnelToLan, "passed": passed,
         "hop_limit_expired": hopLimitExpired, "errors": errors, "time_exceeded": timeExceeded,
         "packet_too_big": packetTooBig, "rate_limited": rateLimited, "solicitations_answered": solicitationsAnswered,
         "policy_denied": policyDenied, "prohibited": prohibited]
    }

    public var description: String {
        "lan→tunnel \(lanToTunnel), tunnel→lan \(tunnelToLan), passed \(passed), hop limit expired \(hopLimitExpired), errors \(errors), "
            + "time exceeded \(timeExceeded), packet too big \(packetTooBig), rate limited \(rateLimited), "
            + "solicitations answered \(solicitationsAnswered), policy denied \(policyDenied), prohibited \(prohibited)"
    }
}

extension Datapath {
    /// Reads the per-CPU counters (indexes are `enum counter` in bpf/datapath.bpf.c).
    public func counters() throws -> DatapathCounters {
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { throw DatapathError("count possible CPUs for", "counters", code: -Int32(cpus)) }
        let fd = map("counters").raw
        var sums: [UInt64] = []
        for index in UInt32(0)..<11 {
            var key = index
            var values = [UInt64](repeating: 0, count: cpus)
            try check(bpf_map_lookup_elem(fd, &key, &values), "read map", "counters")
            sums.append(values.reduce(0, &+))
        }
        var counters = DatapathCounters()
        counters.lanToTunnel = sums[0]
        counters.tunnelToLan = sums[1]
        counters.passed = sums[2]
        counters.hopLimitExpired = sums[3]
        counters.errors = sums[4]
        counters.timeExceeded = sums[5]
        counters.packetTooBig = sums[6]
        counters.rateLimited = sums[7]
        counters.solicitationsAnswered = sums[8]
        counters.policyDenied = sums[9]
        counters.prohibited = sums[10]
        return counters
    }
}
