import CBPF
import Glibc

/// `lan_to_client: replies`' flow table (policy_flows): the UDP and echo flows clients opened.
public struct PolicyFlowTable: Equatable, Sendable {
    /// Entries the LRU map holds, including flows past their timeout that nothing has reused yet.
    public var remembered = 0
    /// Those with a packet within the timeout: the ones a LAN reply can still use.
    public var recent = 0
    public var capacity = Datapath.policyFlowCapacity
    public var timeoutSeconds = Datapath.policyFlowTimeoutSeconds

    public init(remembered: Int = 0, recent: Int = 0) {
        (self.remembered, self.recent) = (remembered, recent)
    }
}

extension Datapath {
    /// bpf/policy.h: POLICY_FLOWS, POLICY_FLOW_TIMEOUT_NS, sizeof(struct policy_flow).
    public static let policyFlowCapacity = 65_536
    public static let policyFlowTimeoutSeconds = 120
    static let policyFlowKeySize = 40

    /// Counts the flow table's entries and those seen within the timeout: the values are
    /// bpf_ktime_get_ns stamps, CLOCK_MONOTONIC's. Read in batches of 4 096 where the kernel
    /// takes them (5.6 on: 16 calls for a full table), one key at a time otherwise.
    public func policyFlows() throws -> PolicyFlowTable {
        let fd = map("policy_flows").raw
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let nanoseconds = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
        var stamps: [UInt64] = []
        let chunk = 4096
        var keys = [UInt8](repeating: 0, count: chunk * Self.policyFlowKeySize)
        var values = [UInt64](repeating: 0, count: chunk)
        // A hash map's batch goes on from a bucket number.
        var token: UInt32 = 0, next: UInt32 = 0
        var first = true, batched = true
        while true {
            var count = UInt32(chunk)
            let status = first ? wgk_map_lookup_batch(fd, nil, &next, &keys, &values, &count)
                               : wgk_map_lookup_batch(fd, &token, &next, &keys, &values, &count)
            let code = status == -1 ? errno : -status
            _ = LibbpfLog.take()
            if status < 0, code != ENOENT {
                guard first else { throw DatapathError("read map", "policy_flows", code: code, detail: "batch lookup") }
                batched = false
                break
            }
            stamps += values.prefix(Int(count))
            if status < 0 || count == 0 { break }
            token = next
            first = false
        }
        if !batched {
            stamps = try Self.allEntries(fd, keySize: Self.policyFlowKeySize, valueSize: 8, "policy_flows").map { _, value in
                value.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            }
        }
        let timeout = UInt64(Self.policyFlowTimeoutSeconds) * 1_000_000_000
        return PolicyFlowTable(remembered: stamps.count, recent: stamps.filter { $0 > nanoseconds || nanoseconds - $0 <= timeout }.count)
    }
}
