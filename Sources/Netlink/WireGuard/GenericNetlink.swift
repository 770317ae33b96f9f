import CNetlink
import SystemPackage

/// A generic-netlink message body starts with `struct genlmsghdr` (command, version).
func putGenericHeader(_ writer: inout MessageWriter, command: UInt8, version: UInt8) {
    var header = genlmsghdr()
    header.cmd = command
    header.version = version
    writer.put(header: header)
}

extension NetlinkSocket {
    /// Resolves a generic-netlink family's id by name through nlctrl (`CTRL_CMD_GETFAMILY`).
    /// The kernel loads the family's module on demand when it can.
    public func genericFamilyID(_ name: String) throws -> UInt16 {
        let request = Request(type: UInt16(GENL_ID_CTRL), flags: Request.get, summary: "resolve generic netlink family \(name)") { writer in
            putGenericHeader(&writer, command: UInt8(CTRL_CMD_GETFAMILY), version: 1)
            writer.put(UInt16(CTRL_ATTR_FAMILY_NAME), string: name)
        }
        let ids = try dump(request) { message -> UInt16? in
            guard message.type == UInt16(GENL_ID_CTRL) else { return nil }
            return try message.attributes(after: genlmsghdr.self).u16(UInt16(CTRL_ATTR_FAMILY_ID))
        }
        guard let id = ids.first else {
            throw NetlinkError(.malformed("nlctrl answered without a family id"), context: "resolve generic netlink family \(name)")
        }
        return id
    }
}
