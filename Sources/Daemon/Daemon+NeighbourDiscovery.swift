import FoundationEssentials
import Datapath
import Logging
import Netlink
import Reconciler

/// `gateway.ndp: datapath`: the LAN program answers the clients' Neighbor Solicitations
/// (bpf/ndp.h), and the daemon joins each client address's solicited-node group on the LAN, so
/// that multicast solicitations pass the LAN device's hardware filter and switches that snoop
/// MLD send them to the gateway at all. Nothing is written to the LAN's sysctls.
///
/// `ndp: kernel` after `ndp: datapath` (a reload, or a restart that finds the pinned program
/// answering) is make-before-break: the program keeps answering, and the groups stay joined,
/// until the kernel's proxy path is complete and in effect (the LAN's `forwarding` and
/// `proxy_ndp` read back as 1, every proxy entry for the LAN in the kernel). A safety rule that
/// refuses LAN forwarding keeps it answering for as long as the refusal holds.
extension Daemon {
    /// What the solicited-node groups were last made equal to: the addresses answered for
    /// (which follow the configuration, the handover to the kernel and the LAN's own addresses)
    /// and the LAN.
    struct SolicitedNodeTarget: Equatable {
        var answered: [IPAddress]?
        var lanIndex: Int32?
    }

    /// The client addresses lan_ingress answers for, nil when it leaves solicitations to the
    /// kernel. `answering`: whether its config map says it answers now.
    func answeredAddresses(lan: Link, answering: Bool) -> [IPAddress]? {
        guard let wanted = desired.datapath, let gateway = desired.gateway else { return nil }
        let addresses: [IPAddress]
        if let answered = wanted.neighbourDiscovery {
            addresses = answered.addresses
        } else if answering, gateway.proxyNDP, gateway.ndp == .kernel, kernelProxyPathGaps(lan: lan) != nil {
            // The clients' proxy entries (an explicit one is the kernel's in either mode).
            addresses = desired.proxies.filter { $0.device == gateway.lan && $0.origin != .explicit }.map(\.address)
        } else {
            return nil
        }
        // An address the gateway holds on the LAN is refused (GatewayAddressRule): the clients
        // map has no entry for it, so the program would not answer for it anyway.
        guard !gateway.allowUnsafeAllowedIPs else { return addresses }
        let own = Set(kernel.addressList.filter { $0.interfaceIndex == lan.index }.map(\.prefix.address))
        return own.isEmpty ? addresses : addresses.filter { !own.contains($0) }
    }

    /// With `ndp: kernel` and `proxy_ndp: true`, what keeps the kernel from answering for every
    /// client on the LAN now, as read back: nil when nothing does.
    func kernelProxyPathGaps(lan: Link) -> [String]? {
        guard let gateway = desired.gateway, gateway.proxyNDP, gateway.ndp == .kernel else { return nil }
        var gaps: [String] = []
        for name in ["forwarding", "proxy_ndp"] {
            let sysctl = Sysctl.ipv6(interface: gateway.lan, name)
            let value = kernel.sysctls[sysctl.key]
            guard value != "1" else { continue }
            if let refusal = lastPlan.refused.first(where: { $0.kind == .sysctl && $0.object.hasPrefix("sysctl \(sysctl) ") }) {
                gaps.append(refusal.reason)
            } else {
                gaps.append("\(sysctl) is \(value ?? "unread"), not 1 yet")
            }
        }
        let wanted = desired.proxies.filter { $0.device == gateway.lan }.map(\.address)
        let present = Set(kernel.proxies.filter { $0.interfaceIndex == lan.index }.map(\.address))
        let own = gateway.allowUnsafeAllowedIPs ? []
            : Set(kernel.addressList.filter { $0.interfaceIndex == lan.index }.map(\.prefix.address))
        let missing = wanted.filter { !present.contains($0) && !own.contains($0) }.count
        if missing > 0 { gaps.append("\(missing) of \(wanted.count) proxy entries on \(gateway.lan) not in the kernel yet") }
        return gaps.isEmpty ? nil : gaps
    }

    /// Tells lan_ingress whether to answer, with the LAN's MAC, and joins the groups of the
    /// addresses it answers for. Clearing the answer flag is the last step of a handover to the
    /// kernel, so it happens only once `answeredAddresses` finds the kernel's path complete.
    func synchronizeNeighbourDiscovery(_ datapath: Datapath, lan: Link) throws {
        let answering = try datapath.neighbourDiscoverySettings().answersSolicitations
        let addresses = answeredAddresses(lan: lan, answering: answering)
        neighbourDiscovery.answered = addresses
        let handingOver = addresses != nil && desired.datapath?.neighbourDiscovery == nil
        // With the kernel's proxy entries answering, the program answers the unicast probes,
        // which the kernel answers only while the host forwards (kernel fact 28).
        let probes = desired.gateway.map { $0.ndp == .kernel && $0.proxyNDP } ?? false
        let settings = NeighbourDiscoverySettings(answersSolicitations: addresses != nil, answersUnicastProbes: probes,
                                                  lanMAC: lan.hardwareAddress)
        if try datapath.configure(settings) {
            datapathWrites += 1
            logger.info("datapath: \(settings)")
            if answering, !settings.answersSolicitations, desired.gateway?.ndp == .kernel, desired.gateway?.proxyNDP == true {
                logger.info("ndp: kernel in effect: \(lan.name) forwards with proxy_ndp and every proxy entry is in the kernel; lan_ingress no longer answers")
            }
        }
        neighbourDiscovery.handover = handingOver ? kernelProxyPathGaps(lan: lan) : nil
    }

    /// What status, the reload reply and the log say while the program answers for `ndp: kernel`.
    var neighbourDiscoveryHandoverLine: String? {
        guard let gaps = neighbourDiscovery.handover else { return nil }
        return "ndp: kernel is not in effect yet, so lan_ingress keeps answering the clients' neighbour solicitations "
            + "(their solicited-node groups stay joined) until it is: \(gaps.joined(separator: "; "))"
    }

    /// After a reconcile's writes (which may complete the kernel's path, or be refused): the
    /// handover to the kernel ends as soon as it can, and its reason is logged when it changes.
    func followNeighbourDiscoveryHandover() {
        if neighbourDiscovery.handover != nil, datapathProblem == nil, let wanted = desired.datapath,
           let lan = link(named: wanted.lan), let datapath = datapathMaps?.datapath {
            do {
                try synchronizeNeighbourDiscovery(datapath, lan: lan)
            } catch {
                logger.error("datapath: \(error)")
            }
            synchronizeSolicitedNodeGroups(lan: lan)
        }
        // Said when it starts or its reasons change (a count of missing entries going down is no news).
        let key = neighbourDiscovery.handover?.map { $0.hasSuffix("not in the kernel yet") ? "proxy entries" : $0 }
        guard key != neighbourDiscovery.logged else { return }
        neighbourDiscovery.logged = key
        if let line = neighbourDiscoveryHandoverLine { logger.warning("\(line)") }
    }

    /// Joins the solicited-node groups of the answered addresses on `lan` (none when it is
    /// nil) and leaves every other group joined before. Failures are retried at the next call
    /// (every `proxy_poll`), not logged again while they persist.
    func synchronizeSolicitedNodeGroups(lan: Link?) {
        // The groups follow the answered addresses and the LAN alone: while neither changed and
        // nothing failed, the memberships held are the wanted ones (no need to list them again;
        // comparing the list is cheaper than hashing every group).
        let target = SolicitedNodeTarget(answered: lan == nil ? nil : neighbourDiscovery.answered, lanIndex: lan?.index)
        if target == solicitedNodeTarget, solicitedNodeFailures.isEmpty { return }
        defer { solicitedNodeTarget = target }
        var wanted: Set<MulticastMembership> = []
        if let lan, let answered = neighbourDiscovery.answered {
            for case .v6(let address) in answered {
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

    /// One line for status: who answers neighbour discovery for the clients, and how. Nil when
    /// the kernel alone does (`ndp: kernel`, handover done, no MAC to answer probes with).
    var neighbourDiscoveryStatus: String? {
        guard let wanted = desired.datapath else { return nil }
        guard wanted.neighbourDiscovery != nil || neighbourDiscovery.handover != nil else {
            guard datapathProblem == nil, let settings = try? datapathMaps?.datapath.neighbourDiscoverySettings(),
                  settings.answersUnicastProbes, let mac = settings.lanMAC else { return nil }
            return "the kernel's proxy entries answer address resolution; lan_ingress answers the unicast reachability probes with "
                + mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
        }
        let lan = wanted.lan
        var line = "answered by lan_ingress for \(neighbourDiscovery.answered?.count ?? 0) addresses"
        // What the program uses now, read back from its config map; a datapath with a problem
        // (a device missing: both programs detached) answers nothing whatever its map says.
        if let datapathProblem {
            line = "not answered by lan_ingress (\(datapathProblem))"
        } else if let settings = try? datapathMaps?.datapath.neighbourDiscoverySettings(), let mac = settings.lanMAC {
            line += " with \(mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":"))"
        } else {
            line += " (not answering: \(link(named: lan).map { $0.hardwareAddress?.count == 6 } ?? false ? "datapath not configured" : "\(lan) has no MAC address"))"
        }
        line += "; \(solicitedNodeGroups.memberships.count) solicited-node groups joined on \(lan) through \(solicitedNodeGroups.socketCount) sockets"
        if let first = solicitedNodeFailures.keys.min() {
            line += "; \(solicitedNodeFailures.count) not joined (\(first.group): \(solicitedNodeFailures[first]!))"
        }
        if let handover = neighbourDiscoveryHandoverLine { line += "; \(handover)" }
        return line
    }
}

/// What the daemon last told lan_ingress about neighbour discovery, for the groups, status and the log.
struct NeighbourDiscoveryState {
    /// The client addresses it answers for (their solicited-node groups are joined); nil: none.
    var answered: [IPAddress]?
    /// While it answers for `ndp: kernel`: what keeps the kernel from answering yet.
    var handover: [String]?
    /// The handover's reasons as last logged (a count left out).
    var logged: [String]?
}
