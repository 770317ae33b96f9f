import CNetlink

/// A `WG_CMD_SET_DEVICE` too large for one message is split at peer and allowed-IP boundaries.
/// Only a peer's first fragment carries its settings and `WGPEER_F_REPLACE_ALLOWEDIPS`: a later
/// fragment with that flag would wipe the IPs the earlier ones just added.
struct SetDeviceFragment: Equatable {
    struct Peer: Equatable {
        var change: WireGuardPeerChange
        /// The peer's first fragment: flags, keys, endpoint, keepalive.
        var isFirst: Bool
        var allowedIPs: ArraySlice<IPPrefix>
    }

    /// The first fragment carries the device's own settings and flags.
    var isFirst: Bool
    var peers: [Peer] = []
}

extension WireGuardCodec {
    /// Netlink nests have a 16-bit length, so no fragment may exceed 64 KiB; 32 KiB keeps the
    /// kernel's per-message work small while still needing few messages.
    static let defaultMessageBytes = 32 * 1024

    static func deviceSize(_ change: WireGuardDeviceChange, name: String, isFirst: Bool) -> Int {
        var size = 20 + attributeSize(name.utf8.count + 1) + 4
        if isFirst {
            if change.privateKey != nil { size += attributeSize(32) }
            if change.listenPort != nil { size += attributeSize(2) }
            if change.firewallMark != nil { size += attributeSize(4) }
            if change.replacePeers { size += attributeSize(4) }
        }
        return size
    }

    static func peerFlags(_ change: WireGuardPeerChange, isFirst: Bool) -> UInt32 {
        var flags: UInt32 = 0
        if change.updateOnly { flags |= UInt32(WGPEER_F_UPDATE_ONLY.rawValue) }
        guard isFirst else { return flags }
        if change.remove { flags |= UInt32(WGPEER_F_REMOVE_ME.rawValue) }
        if change.replaceAllowedIPs { flags |= UInt32(WGPEER_F_REPLACE_ALLOWEDIPS.rawValue) }
        return flags
    }

    static func peerBaseSize(_ change: WireGuardPeerChange, isFirst: Bool, hasIPs: Bool) -> Int {
        var size = 4 + attributeSize(32)
        if peerFlags(change, isFirst: isFirst) != 0 { size += attributeSize(4) }
        if isFirst {
            if change.presharedKey != nil { size += attributeSize(32) }
            if let endpoint = change.endpoint { size += attributeSize(endpoint.sockaddr.count) }
            if change.persistentKeepalive != nil { size += attributeSize(2) }
        }
        if hasIPs { size += 4 }
        return size
    }

    static func fragments(_ change: WireGuardDeviceChange, name: String, limit: Int = defaultMessageBytes) -> [SetDeviceFragment] {
        var done: [SetDeviceFragment] = []
        var current = SetDeviceFragment(isFirst: true)
        var size = deviceSize(change, name: name, isFirst: true)
        func flush() {
            done.append(current)
            current = SetDeviceFragment(isFirst: false)
            size = deviceSize(change, name: name, isFirst: false)
        }
        for peer in change.peers {
            var ips = peer.allowedIPs[...]
            var ipBytes = ips.reduce(0) { $0 + allowedIPSize($1) }
            var isFirst = true
            repeat {
                let base = peerBaseSize(peer, isFirst: isFirst, hasIPs: !ips.isEmpty)
                // A peer that fits a message whole is never split: move on to a fresh one.
                if size + base + ipBytes > limit, !current.peers.isEmpty { flush() }
                size += base
                var taken = ips.startIndex
                while taken < ips.endIndex, size + allowedIPSize(ips[taken]) <= limit || taken == ips.startIndex {
                    size += allowedIPSize(ips[taken])
                    ipBytes -= allowedIPSize(ips[taken])
                    taken += 1
                }
                current.peers.append(.init(change: peer, isFirst: isFirst, allowedIPs: ips[..<taken]))
                ips = ips[taken...]
                isFirst = false
                if !ips.isEmpty { flush() }
            } while !ips.isEmpty
        }
        if !current.peers.isEmpty || done.isEmpty { done.append(current) }
        return done
    }

    static func encode(_ fragment: SetDeviceFragment, of change: WireGuardDeviceChange, name: String, into writer: inout MessageWriter) {
        putGenericHeader(&writer, command: UInt8(WG_CMD_SET_DEVICE.rawValue), version: version)
        writer.put(UInt16(WGDEVICE_A_IFNAME.rawValue), string: name)
        if fragment.isFirst {
            if let key = change.privateKey { writer.put(UInt16(WGDEVICE_A_PRIVATE_KEY.rawValue), bytes: key.key.bytes) }
            if let port = change.listenPort { writer.put(UInt16(WGDEVICE_A_LISTEN_PORT.rawValue), u16: port) }
            if let mark = change.firewallMark { writer.put(UInt16(WGDEVICE_A_FWMARK.rawValue), u32: mark) }
            if change.replacePeers { writer.put(UInt16(WGDEVICE_A_FLAGS.rawValue), u32: UInt32(WGDEVICE_F_REPLACE_PEERS.rawValue)) }
        }
        guard !fragment.peers.isEmpty else { return }
        writer.nest(UInt16(WGDEVICE_A_PEERS.rawValue)) { w in
            for peer in fragment.peers {
                w.nest(0) { p in
                    let c = peer.change
                    p.put(UInt16(WGPEER_A_PUBLIC_KEY.rawValue), bytes: c.publicKey.bytes)
                    let flags = peerFlags(c, isFirst: peer.isFirst)
                    if flags != 0 { p.put(UInt16(WGPEER_A_FLAGS.rawValue), u32: flags) }
                    if peer.isFirst {
                        if let psk = c.presharedKey { p.put(UInt16(WGPEER_A_PRESHARED_KEY.rawValue), bytes: psk.key.bytes) }
                        if let endpoint = c.endpoint { p.put(UInt16(WGPEER_A_ENDPOINT.rawValue), bytes: endpoint.sockaddr) }
                        if let keepalive = c.persistentKeepalive {
                            p.put(UInt16(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL.rawValue), u16: keepalive)
                        }
                    }
                    if !peer.allowedIPs.isEmpty {
                        p.nest(UInt16(WGPEER_A_ALLOWEDIPS.rawValue)) { a in
                            for ip in peer.allowedIPs { putAllowedIP(&a, ip) }
                        }
                    }
                }
            }
        }
    }
}
