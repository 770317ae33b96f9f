import Netlink
import Reconciler

/// The host's netfilter FORWARD chains for IPv6 (NetfilterForwarding.chains) next to the
/// datapath: the TC programs redirect traffic before ip6_forward, so those rules never see it.
/// An operator who moved from a forwarding gateway relies on them; status and check say so.
public enum ForwardFilters {
    public static let checkName = "netfilter forward (ipv6)"

    /// The safety check: failing while such chains exist and no policy section stands in for them.
    public static func safetyCheck(_ chains: Result<[String], Error>, datapath: DesiredDatapath, policy: DesiredPolicy?) -> StatusReport.SafetyCheck {
        switch chains {
        case .failure(let error):
            return .init(name: checkName, ok: true, detail: "not read: \(error)")
        case .success(let chains) where chains.isEmpty:
            return .init(name: checkName, ok: true, detail: "no nftables forward chain for ip6 or inet with a rule or a drop policy, no ip6tables filter table")
        case .success(let chains):
            return .init(name: checkName, ok: policy != nil, detail: note(chains, datapath: datapath, policy: policy))
        }
    }

    /// For `check`: the same note, when there is anything to say.
    public static func warning(_ chains: [String], datapath: DesiredDatapath, policy: DesiredPolicy?) -> String? {
        chains.isEmpty ? nil : note(chains, datapath: datapath, policy: policy)
    }

    private static func note(_ chains: [String], datapath: DesiredDatapath, policy: DesiredPolicy?) -> String {
        let path = "the traffic the datapath redirects between \(datapath.tunnel) and \(datapath.lan)"
        return "\(chains.joined(separator: ", ")): these FORWARD rules do not see \(path)"
            + (policy == nil ? "; express them in the policy section (README: Access policy)"
                             : "; the policy section applies to it instead")
    }
}
