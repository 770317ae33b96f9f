/// Where a peer's packets go: an IP address and a UDP port.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// `[2001:db8::1]:51820` or `192.0.2.1:51820`.
    public init?(_ text: some StringProtocol) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = host.dropFirst().dropLast()
            guard let address = IPv6Address(host) else { return nil }
            self.init(address: .v6(address), port: port)
        } else {
            guard let address = IPv4Address(host) else { return nil }
            self.init(address: .v4(address), port: port)
        }
    }

    public var description: String {
        switch address {
        case .v4(let a): "\(a):\(port)"
        case .v6(let a): "[\(a)]:\(port)"
        }
    }
}

/// A WireGuard peer as the kernel reports it.
public struct WireGuardPeer: Hashable, Sendable {
    public var publicKey: WireGuardKey
    public var presharedKey: PresharedKey?
    public var endpoint: Endpoint?
    /// Seconds; 0 is off.
    public var persistentKeepalive: UInt16
    /// Seconds since the epoch of the latest handshake; nil when there was none.
    public var latestHandshake: Double?
    public var receivedBytes: UInt64
    public var transmittedBytes: UInt64
    /// In the kernel's order.
    public var allowedIPs: [IPPrefix]

    public init(
        publicKey: WireGuardKey, presharedKey: PresharedKey? = nil, endpoint: Endpoint? = nil,
        persistentKeepalive: UInt16 = 0, latestHandshake: Double? = nil,
        receivedBytes: UInt64 = 0, transmittedBytes: UInt64 = 0, allowedIPs: [IPPrefix] = []
    ) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.persistentKeepalive = persistentKeepalive
        self.latestHandshake = latestHandshake
        self.receivedBytes = receivedBytes
        self.transmittedBytes = transmittedBytes
        self.allowedIPs = allowedIPs
    }
}

/// A WireGuard device as the kernel reports it (`WG_CMD_GET_DEVICE`, merged across messages).
public struct WireGuardDevice: Hashable, Sendable {
    public var name: String
    public var index: Int32
    public var privateKey: PrivateKey?
    public var publicKey: WireGuardKey?
    public var listenPort: UInt16
    public var firewallMark: UInt32
    public var peers: [WireGuardPeer]

    public init(name: String, index: Int32, privateKey: PrivateKey? = nil, publicKey: WireGuardKey? = nil,
                listenPort: UInt16 = 0, firewallMark: UInt32 = 0, peers: [WireGuardPeer] = []) {
        self.name = name
        self.index = index
        self.privateKey = privateKey
        self.publicKey = publicKey
        self.listenPort = listenPort
        self.firewallMark = firewallMark
        self.peers = peers
    }
}

/// What to change on a peer (`WGPEER_A_*`): the request side of `WireGuardPeer`.
public struct WireGuardPeerChange: Hashable, Sendable {
    public var publicKey: WireGuardKey
    /// `WGPEER_F_REMOVE_ME`.
    public var remove: Bool
    /// `WGPEER_F_UPDATE_ONLY`: change the peer only if it exists.
    public var updateOnly: Bool
    /// `WGPEER_F_REPLACE_ALLOWEDIPS`: `allowedIPs` replaces the peer's list instead of adding to it.
    public var replaceAllowedIPs: Bool
    /// nil leaves it as it is; a zero key removes it.
    public var presharedKey: PresharedKey?
    public var endpoint: Endpoint?
    public var persistentKeepalive: UInt16?
    public var allowedIPs: [IPPrefix]

    public init(publicKey: WireGuardKey, remove: Bool = false, updateOnly: Bool = false,
                replaceAllowedIPs: Bool = false, presharedKey: PresharedKey? = nil, endpoint: Endpoint? = nil,
                persistentKeepalive: UInt16? = nil, allowedIPs: [IPPrefix] = []) {
        self.publicKey = publicKey
        self.remove = remove
        self.updateOnly = updateOnly
        self.replaceAllowedIPs = replaceAllowedIPs
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.persistentKeepalive = persistentKeepalive
        self.allowedIPs = allowedIPs
    }
}

/// What to change on a device (`WG_CMD_SET_DEVICE`): the request side of `WireGuardDevice`.
public struct WireGuardDeviceChange: Hashable, Sendable {
    public var privateKey: PrivateKey?
    public var listenPort: UInt16?
    public var firewallMark: UInt32?
    /// `WGDEVICE_F_REPLACE_PEERS`: peers not listed are removed.
    public var replacePeers: Bool
    public var peers: [WireGuardPeerChange]

    public init(privateKey: PrivateKey? = nil, listenPort: UInt16? = nil, firewallMark: UInt32? = nil,
                replacePeers: Bool = false, peers: [WireGuardPeerChange] = []) {
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.firewallMark = firewallMark
        self.replacePeers = replacePeers
        self.peers = peers
    }
}

extension WireGuardDevice {
    /// Takes the traffic figures of a poll that found nothing else changed, one per peer in
    /// order. False, and nothing taken, when the count is not the peers'.
    public mutating func take(_ traffic: [WireGuardTraffic]) -> Bool {
        guard traffic.count == peers.count else { return false }
        for (i, figures) in traffic.enumerated() where peers[i].traffic != figures { peers[i].traffic = figures }
        return true
    }
}

extension WireGuardPeer {
    /// The figures traffic changes.
    public var traffic: WireGuardTraffic {
        get { WireGuardTraffic(latestHandshake: latestHandshake, receivedBytes: receivedBytes, transmittedBytes: transmittedBytes) }
        set {
            latestHandshake = newValue.latestHandshake
            receivedBytes = newValue.receivedBytes
            transmittedBytes = newValue.transmittedBytes
        }
    }
}
