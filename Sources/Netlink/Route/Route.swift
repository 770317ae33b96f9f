import CNetlink

/// A route as the kernel holds it (`struct rtmsg` + `RTA_*`), for one destination in one table.
public struct Route: Hashable, Sendable, CustomStringConvertible {
    public var destination: IPPrefix
    public var table: UInt32
    public var protocolNumber: UInt8
    public var scope: UInt8
    public var type: UInt8
    public var outputInterface: Int32?
    public var gateway: IPAddress?
    public var metric: UInt32?
    /// What the kernel's route holds beyond the fields above, none of which wgkeeper sets (a
    /// route of its protocol carrying any of them is drift: `ip route change` gave it an MTU or
    /// an encapsulation that sends its traffic elsewhere).
    public var extras: Extras = []

    /// Route attributes wgkeeper never sets, by kind.
    public struct Extras: OptionSet, Hashable, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// `RTA_METRICS` with any metric (`mtu`, `hoplimit`, `advmss`, …).
        public static let metrics = Extras(rawValue: 1 << 0)
        /// `RTA_PREFSRC` (`src`).
        public static let preferredSource = Extras(rawValue: 1 << 1)
        /// `RTA_PREF` other than medium (`pref high`, `pref low`).
        public static let preference = Extras(rawValue: 1 << 2)
        /// `RTA_ENCAP_TYPE`/`RTA_ENCAP` (`encap seg6`, `encap mpls`, …).
        public static let encapsulation = Extras(rawValue: 1 << 3)
        /// `RTA_NH_ID` (`nhid`): the next hop is a nexthop object.
        public static let nexthopObject = Extras(rawValue: 1 << 4)

        /// As `ip route` names them.
        public var names: [String] {
            [(Extras.metrics, "metrics"), (.preferredSource, "src"), (.preference, "pref"), (.encapsulation, "encap"), (.nexthopObject, "nhid")]
                .filter { contains($0.0) }.map(\.1)
        }
    }

    public static let mainTable = UInt32(RT_TABLE_MAIN.rawValue)
    public static let unicast = UInt8(RTN_UNICAST)
    public static let universe = UInt8(RT_SCOPE_UNIVERSE.rawValue)
    public static let link = UInt8(RT_SCOPE_LINK.rawValue)

    public init(
        destination: IPPrefix, table: UInt32 = Route.mainTable, protocolNumber: UInt8,
        scope: UInt8 = Route.universe, type: UInt8 = Route.unicast,
        outputInterface: Int32? = nil, gateway: IPAddress? = nil, metric: UInt32? = nil, extras: Extras = []
    ) {
        self.destination = destination
        self.table = table
        self.protocolNumber = protocolNumber
        self.scope = scope
        self.type = type
        self.outputInterface = outputInterface
        self.gateway = gateway
        self.metric = metric
        self.extras = extras
    }

    public var family: AddressFamily { destination.family }

    public var description: String {
        var text = "\(destination)"
        if let gateway { text += " via \(gateway)" }
        if let outputInterface { text += " oif \(outputInterface)" }
        if table != Route.mainTable { text += " table \(table)" }
        if let metric { text += " metric \(metric)" }
        if !extras.isEmpty { text += " " + extras.names.joined(separator: " ") }
        return text + " proto \(protocolNumber)"
    }

    // MARK: codec

    /// Writes `rtmsg` and attributes in iproute2's order (see Tests/NetlinkTests/Fixtures/README.md).
    /// A delete names the route by family, table, destination, protocol, metric and device, with
    /// type unspecified and (IPv4) scope `RT_SCOPE_NOWHERE`: wildcards, as iproute2 sends them.
    public func encode(into writer: inout MessageWriter, forDelete: Bool = false) {
        var header = rtmsg()
        header.rtm_family = family.rawValue
        header.rtm_dst_len = destination.length
        header.rtm_table = table < 256 ? UInt8(table) : UInt8(RT_TABLE_UNSPEC.rawValue)
        header.rtm_protocol = protocolNumber
        header.rtm_scope = forDelete ? (family == .inet ? UInt8(RT_SCOPE_NOWHERE.rawValue) : 0) : scope
        header.rtm_type = forDelete ? 0 : type
        writer.put(header: header)
        writer.put(UInt16(RTA_DST.rawValue), address: destination.address)
        if let gateway { writer.put(UInt16(RTA_GATEWAY.rawValue), address: gateway) }
        if let metric { writer.put(UInt16(RTA_PRIORITY.rawValue), u32: metric) }
        if table >= 256 { writer.put(UInt16(RTA_TABLE.rawValue), u32: table) }
        if let outputInterface { writer.put(UInt16(RTA_OIF.rawValue), i32: outputInterface) }
    }

    /// Decodes an `RTM_NEWROUTE`/`RTM_DELROUTE`. Returns nil for routes this model does not hold
    /// (cached clones, multipath, source-specific): they are never wgkeeper's.
    public static func decode(_ message: Message) throws -> Route? {
        let header = try message.familyHeader(rtmsg.self)
        let attributes = try message.attributes(after: rtmsg.self)
        guard let family = AddressFamily(rawValue: header.rtm_family) else { return nil }
        if header.rtm_flags & UInt32(RTM_F_CLONED) != 0 || header.rtm_src_len != 0 { return nil }
        let bits = family == .inet ? 32 : 128
        guard Int(header.rtm_dst_len) <= bits else {
            throw NetlinkError.malformed("route prefix length \(header.rtm_dst_len)")
        }
        let address = try attributes.address(UInt16(RTA_DST.rawValue))
            ?? (family == .inet ? .v4(IPv4Address(0)) : .v6(IPv6Address(high: 0, low: 0)))
        guard address.family == family else { throw NetlinkError.malformed("route destination of the wrong family") }
        return Route(
            destination: IPPrefix(address: address, length: header.rtm_dst_len),
            table: try attributes.u32(UInt16(RTA_TABLE.rawValue)) ?? UInt32(header.rtm_table),
            protocolNumber: header.rtm_protocol,
            scope: header.rtm_scope,
            type: header.rtm_type,
            outputInterface: try attributes.i32(UInt16(RTA_OIF.rawValue)),
            gateway: try attributes.address(UInt16(RTA_GATEWAY.rawValue)),
            metric: try attributes.u32(UInt16(RTA_PRIORITY.rawValue)),
            extras: try extras(attributes))
    }

    /// The attributes of a dumped or notified route that wgkeeper never sets (`Extras`).
    private static func extras(_ attributes: Attributes) throws -> Extras {
        var extras: Extras = []
        if let metrics = attributes.bytes(UInt16(RTA_METRICS.rawValue)), !metrics.isEmpty { extras.insert(.metrics) }
        if attributes.bytes(UInt16(RTA_PREFSRC.rawValue)) != nil { extras.insert(.preferredSource) }
        // ICMPV6_ROUTER_PREF_MEDIUM is 0: the kernel puts RTA_PREF on every IPv6 route.
        if let preference = try attributes.u8(UInt16(RTA_PREF.rawValue)), preference != 0 { extras.insert(.preference) }
        if attributes.bytes(UInt16(RTA_ENCAP_TYPE.rawValue)) != nil || attributes.bytes(UInt16(RTA_ENCAP.rawValue)) != nil {
            extras.insert(.encapsulation)
        }
        if attributes.bytes(UInt16(RTA_NH_ID.rawValue)) != nil { extras.insert(.nexthopObject) }
        return extras
    }

    // MARK: requests

    public func addRequest() -> Request { request(UInt16(RTM_NEWROUTE), Request.create, "add route") }
    public func replaceRequest() -> Request { request(UInt16(RTM_NEWROUTE), Request.replace, "replace route") }
    /// Deletes carry the protocol: the kernel then refuses to delete another owner's route.
    public func deleteRequest() -> Request { request(UInt16(RTM_DELROUTE), Request.remove, "delete route") }

    private func request(_ type: UInt16, _ flags: UInt16, _ verb: String) -> Request {
        let route = self
        let forDelete = type == UInt16(RTM_DELROUTE)
        return Request(type: type, flags: flags, summary: "\(verb) \(route)") { route.encode(into: &$0, forDelete: forDelete) }
    }

    /// Dumps one family's routes; with strict checking the kernel filters by table when given.
    public static func dumpRequest(family: AddressFamily, table: UInt32? = nil) -> Request {
        Request(type: UInt16(RTM_GETROUTE), flags: Request.dump, summary: "dump \(family) routes") { writer in
            var header = rtmsg()
            header.rtm_family = family.rawValue
            writer.put(header: header)
            if let table { writer.put(UInt16(RTA_TABLE.rawValue), u32: table) }
        }
    }
}
