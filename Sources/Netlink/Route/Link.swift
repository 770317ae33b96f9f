import CNetlink

/// A network interface (`struct ifinfomsg` + `IFLA_*`).
public struct Link: Hashable, Sendable, CustomStringConvertible {
    public var index: Int32
    public var name: String
    /// `IFLA_INFO_KIND` (`wireguard`, `veth`, `bridge`, …); nil for devices without one.
    public var kind: String?
    public var flags: UInt32
    public var mtu: UInt32
    /// `IFLA_ADDRESS`: the MAC of an Ethernet device; nil for a layer-3 device such as WireGuard.
    public var hardwareAddress: [UInt8]?

    public init(index: Int32, name: String, kind: String? = nil, flags: UInt32 = 0, mtu: UInt32 = 0,
                hardwareAddress: [UInt8]? = nil) {
        self.index = index
        self.name = name
        self.kind = kind
        self.flags = flags
        self.mtu = mtu
        self.hardwareAddress = hardwareAddress
    }

    public var isUp: Bool { flags & UInt32(IFF_UP) != 0 }
    public var description: String { "\(name) (index \(index)\(kind.map { ", \($0)" } ?? ""))" }

    public static func decode(_ message: Message) throws -> Link? {
        let header = try message.familyHeader(ifinfomsg.self)
        let attributes = try message.attributes(after: ifinfomsg.self)
        guard let name = attributes.string(UInt16(IFLA_IFNAME)) else { return nil }
        let kind = try attributes.nested(UInt16(IFLA_LINKINFO))?.string(UInt16(IFLA_INFO_KIND))
        let address = attributes.bytes(UInt16(IFLA_ADDRESS)).map(Array.init)
        return Link(index: header.ifi_index, name: name, kind: kind, flags: header.ifi_flags,
                    mtu: try attributes.u32(UInt16(IFLA_MTU)) ?? 0, hardwareAddress: address?.isEmpty == true ? nil : address)
    }

    public static func dumpRequest() -> Request {
        Request(type: UInt16(RTM_GETLINK), flags: Request.dump, summary: "dump links") { writer in
            writer.put(header: ifinfomsg())
        }
    }

    public static func getRequest(name: String) -> Request {
        Request(type: UInt16(RTM_GETLINK), flags: Request.get, summary: "look up link \(name)") { writer in
            writer.put(header: ifinfomsg())
            writer.put(UInt16(IFLA_IFNAME), string: name)
        }
    }

    /// Creates a link of the given kind (`wireguard`, `dummy`, …); it starts down.
    /// Creates a link of `kind`; `up` brings it up in the same message (no second write, and
    /// no moment where the new link sits down).
    public static func createRequest(name: String, kind: String, up: Bool = false) -> Request {
        Request(type: UInt16(RTM_NEWLINK), flags: Request.create, summary: "create \(kind) link \(name)") { writer in
            var header = ifinfomsg()
            if up {
                header.ifi_flags = UInt32(IFF_UP)
                header.ifi_change = UInt32(IFF_UP)
            }
            writer.put(header: header)
            writer.put(UInt16(IFLA_IFNAME), string: name)
            writer.nest(UInt16(IFLA_LINKINFO)) { $0.put(UInt16(IFLA_INFO_KIND), string: kind) }
        }
    }

    public static func setUpRequest(index: Int32, up: Bool = true) -> Request {
        Request(type: UInt16(RTM_NEWLINK), flags: Request.get, summary: "set link \(index) \(up ? "up" : "down")") { writer in
            var header = ifinfomsg()
            header.ifi_index = index
            header.ifi_flags = up ? UInt32(IFF_UP) : 0
            header.ifi_change = UInt32(IFF_UP)
            writer.put(header: header)
        }
    }

    public static func deleteRequest(index: Int32) -> Request {
        Request(type: UInt16(RTM_DELLINK), flags: Request.remove, summary: "delete link \(index)") { writer in
            var header = ifinfomsg()
            header.ifi_index = index
            writer.put(header: header)
        }
    }
}
