import FoundationEssentials
import Datapath
import Logging
import Netlink
import Reconciler

/// `gateway.ndp: datapath`: the LAN program answers the clients' Neighbor Solicitations
/// (bpf/ndp.h), and the daemon joins each client address's solicited-node group on the LAN, so
/// that multicast solicitations pass the LAN device's hardware filter and switches that snoop
/// MLD send them to the gateway at all. Nothing is written to the LAN's sysctls.
extension Daemon {
    /// What the solicited-node groups were last made equal to: a configuration and a LAN.
    struct SolicitedNodeTarget: Equatable {
        var generation: Int
        var lanIndex: Int32?
    }

    /// What lan_ingress is told: answer, with the LAN's MAC, when the desired state wants it.
    func neighbourDiscoverySettings(lan: Link) -> NeighbourDiscoverySettings {
        guard desired.datapath?.neighbourDiscovery != nil else { return NeighbourDiscoverySettings() }
        return NeighbourDiscoverySettings(answersSolicitations: true, lanMAC: lan.hardwareAddress)
    }

    /// Joins the solicited-node groups of the answered addresses on `lan` (none when it is
    /// nil) and leaves every other group joined before. Failures are retried at the next call
    /// (every `proxy_poll`), not logged again while they persist.
    func synchronizeSolicitedNodeGroups(lan: Link?) {
        // The groups follow the configuration and the LAN alone: while neither changed and
        // nothing failed, the memberships held are the wanted ones (no need to list them again).
        let target = SolicitedNodeTarget(generation: generation, lanIndex: lan?.index)
        if target == solicitedNodeTarget, solicitedNodeFailures.isEmpty { return }
        defer { solicitedNodeTarget = target }
        var wanted: Set<MulticastMembership> = []
        if let lan, let answered = desired.datapath?.neighbourDiscovery {
            for case .v6(let address) in answered.addresses {
                wanted.insert(MulticastMembership(interfaceIndex: lan.index, group: address.solicitedNodeGroup))
            }
        }
        let before = solicitedNodeGroups.memberships
        guard before != wanted || !solicitedNodeFailures.isEmpty else { return }
        let failures = solicitedNodeGroups.synchronize(wanted).mapValues { "\($0)" }
        let after = solicitedNodeGroups.memberships
        let joined = after.subtracting(before).count, left = before.subtracting(after).count
        if joined + left > 0 {
            logger.info("datapath: solicited-node groups: joined \(joined), left \(left); \(after.count) held on \(solicitedNodeGroups.socketCount) sockets")
        }
        let new = failures.filter { solicitedNodeFailures[$0.key] != $0.value }
        if let first = new.keys.min() {
            logger.error("datapath: \(failures.count) solicited-node groups not joined or left; retried every proxy_poll",
                         metadata: ["first": "\(first)", "error": "\(new[first]!)"])
        }
        solicitedNodeFailures = failures
    }

    /// One line for status: who answers neighbour discovery for the clients, and how.
    var neighbourDiscoveryStatus: String? {
        guard let answered = desired.datapath?.neighbourDiscovery, let lan = desired.datapath?.lan else { return nil }
        var line = "answered by lan_ingress for \(answered.addresses.count) addresses"
        // What the program uses now, read back from its config map.
        if let settings = try? datapathMaps?.datapath.neighbourDiscoverySettings(), let mac = settings.lanMAC {
            line += " with \(mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":"))"
        } else {
            line += " (not answering: \(link(named: lan).map { $0.hardwareAddress?.count == 6 } ?? false ? "datapath not configured" : "\(lan) has no MAC address"))"
        }
        line += "; \(solicitedNodeGroups.memberships.count) solicited-node groups joined on \(lan) through \(solicitedNodeGroups.socketCount) sockets"
        if let first = solicitedNodeFailures.keys.min() {
            line += "; \(solicitedNodeFailures.count) not joined (\(first.group): \(solicitedNodeFailures[first]!))"
        }
        return line
    }
}
