/// Whether lan_ingress answers Neighbor Solicitations for the VPN clients itself
/// (`gateway.ndp: datapath`, bpf/ndp.h), and with which MAC.
public struct NeighbourDiscoverySettings: Equatable, Sendable, CustomStringConvertible {
    /// Answer for every address of the clients map that lies inside a LAN prefix.
    public var answersSolicitations: Bool
    /// The LAN device's address: the advertisements' Ethernet source and target link-layer
    /// address. Six bytes; nothing is answered without it.
    public var lanMAC: [UInt8]?

    /// `CONFIG_ANSWER_NS` of bpf/datapath.bpf.c.
    static let answerFlag: UInt32 = 1

    public init(answersSolicitations: Bool = false, lanMAC: [UInt8]? = nil) {
        self.answersSolicitations = answersSolicitations && lanMAC?.count == 6
        self.lanMAC = answersSolicitations && lanMAC?.count == 6 ? lanMAC : nil
    }

    init(flags: UInt32, lanMAC: [UInt8]) {
        self.init(answersSolicitations: flags & Self.answerFlag != 0, lanMAC: lanMAC)
    }

    var flags: UInt32 { answersSolicitations ? Self.answerFlag : 0 }
    var macBytes: [UInt8] { lanMAC ?? [0, 0, 0, 0, 0, 0] }

    public var description: String {
        guard answersSolicitations, let lanMAC else { return "neighbour solicitations left to the kernel" }
        return "neighbour solicitations for the clients answered with \(lanMAC.map { hex($0) }.joined(separator: ":"))"
    }
}

private func hex(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
}

extension Datapath {
    /// Writes how lan_ingress answers neighbour discovery; true when it changed.
    @discardableResult
    public func configure(_ settings: NeighbourDiscoverySettings) throws -> Bool {
        var config = try readConfigValue()
        if config.neighbourDiscovery == settings { return false }
        config.neighbourDiscovery = settings
        try writeConfigValue(config)
        return true
    }

    /// What lan_ingress does now.
    public func neighbourDiscoverySettings() throws -> NeighbourDiscoverySettings { try readConfigValue().neighbourDiscovery }
}
