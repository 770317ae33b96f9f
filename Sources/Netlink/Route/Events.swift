import CNetlink
import Glibc

/// What an rtnetlink event socket reports.
public enum RouteEvent: Sendable {
    case newRoute(Route)
    /// `NLM_F_REPLACE`: the route took the place of the one(s) at its identity (table,
    /// destination, metric), which get no deletion event of their own.
    case replacedRoute(Route)
    case deletedRoute(Route)
    case newLink(Link)
    case deletedLink(Link)
    case newAddress(Address)
    case deletedAddress(Address)
    case netconf(Netconf)
    case newProxy(ProxyEntry)
    case deletedProxy(ProxyEntry)
    /// A qdisc or filter was added or removed on the interface with this index (the datapath's
    /// clsact attachment may be gone). TCX links are not notified.
    case trafficControl(interfaceIndex: Int32)
    /// The receive queue overflowed: events were lost and the state is unknown. Resync everything.
    case overflow
}

/// The multicast groups wgkeeper watches.
public enum RouteGroup: UInt32, CaseIterable, Sendable {
    case link = 1           // RTNLGRP_LINK
    case neighbour = 3      // RTNLGRP_NEIGH
    case trafficControl = 4 // RTNLGRP_TC
    case ipv4Route = 7      // RTNLGRP_IPV4_ROUTE
    case ipv6Address = 9    // RTNLGRP_IPV6_IFADDR
    case ipv6Route = 11     // RTNLGRP_IPV6_ROUTE
    case ipv4Netconf = 24   // RTNLGRP_IPV4_NETCONF
    case ipv6Netconf = 25   // RTNLGRP_IPV6_NETCONF
}

extension RouteEvent {
    /// Decodes one event message; nil for messages of no interest (or objects we do not model).
    public static func decode(_ message: Message) throws -> RouteEvent? {
        switch Int(message.type) {
        case Int(RTM_NEWROUTE):
            let replaced = message.flags & UInt16(NLM_F_REPLACE) != 0
            return try Route.decode(message).map { replaced ? RouteEvent.replacedRoute($0) : RouteEvent.newRoute($0) }
        case Int(RTM_DELROUTE): return try Route.decode(message).map(RouteEvent.deletedRoute)
        case Int(RTM_NEWLINK): return try Link.decode(message).map(RouteEvent.newLink)
        case Int(RTM_DELLINK): return try Link.decode(message).map(RouteEvent.deletedLink)
        case Int(RTM_NEWADDR): return try Address.decode(message).map(RouteEvent.newAddress)
        case Int(RTM_DELADDR): return try Address.decode(message).map(RouteEvent.deletedAddress)
        case Int(RTM_NEWNETCONF): return try Netconf.decode(message).map(RouteEvent.netconf)
        case Int(RTM_NEWNEIGH): return try ProxyEntry.decode(message).map(RouteEvent.newProxy)
        case Int(RTM_DELNEIGH): return try ProxyEntry.decode(message).map(RouteEvent.deletedProxy)
        case Int(RTM_NEWQDISC), Int(RTM_DELQDISC), Int(RTM_NEWTFILTER), Int(RTM_DELTFILTER):
            return .trafficControl(interfaceIndex: try message.familyHeader(tcmsg.self).tcm_ifindex)
        default: return nil
        }
    }
}

extension NetlinkSocket {
    /// Opens an event socket subscribed to `groups`.
    public static func events(_ groups: [RouteGroup] = RouteGroup.allCases) throws -> NetlinkSocket {
        try NetlinkSocket(.route, groups: groups.map(\.rawValue))
    }

    /// Drains what is queued, without blocking. An overflow is reported in order, as an event.
    public func readEvents(limit: Int = 4096) throws -> [RouteEvent] {
        var events: [RouteEvent] = []
        while events.count < limit {
            do {
                guard let messages = try receiveNow() else { break }
                for message in messages {
                    if let event = try RouteEvent.decode(message) { events.append(event) }
                }
            } catch let error as NetlinkError where error.reason == .overflow {
                events.append(.overflow)
            }
        }
        return events
    }

    /// Waits up to `timeout` for at least one event, then drains.
    public func waitForEvents(timeout: Duration) throws -> [RouteEvent] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let events = try readEvents()
            if !events.isEmpty { return events }
            var pfd = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 50)
        }
        return []
    }
}
