/// Whether lan_ingress answers Neighbor Solicitations for the VPN clients itself
/// (`gateway.ndp: datapath`, bpf/ndp.h), only the unicast ones (`ndp: kernel`: the kernel's
/// proxy entries answer the rest), and with which MAC.
public struct NeighbourDiscoverySettings: Equatable, Sendable, CustomStringConvertible {
    /// Answer for every address of the clients map that lies inside a LAN prefix.
    public var answersSolicitations: Bool
    /// Answer the solicitations sent to such an address itself (a LAN host's reachability
    /// probes, RFC 4861 7.3), which the kernel's proxy path answers only while the host
    /// forwards (ARCHITECTURE, kernel fact 28). Implied by `answersSolicitations`.
    public var answersUnicastProbes: Bool
    /// The LAN device's address: the advertisements' Ethernet source and target link-layer
    /// address. Six bytes; nothing is answered without it.
    public var lanMAC: [UInt8]?

    /// `CONFIG_ANSWER_NS` and `CONFIG_ANSWER_UNICAST_NS` of bpf/datapath.bpf.c.
    static let answerFlag: UInt32 = 1
    static let unicastFlag: UInt32 = 2

    public init(answersSolicitations: Bool = false, answersUnicastProbes: Bool = false, lanMAC: [UInt8]? = nil) {
        let mac = lanMAC?.count == 6 ? lanMAC : nil
        self.answersSolicitations = answersSolicitations && mac != nil
        self.answersUnicastProbes = (answersSolicitations || answersUnicastProbes) && mac != nil
        self.lanMAC = self.answersUnicastProbes ? mac : nil
    }

    init(flags: UInt32, lanMAC: [UInt8]) {
        self.init(answersSolicitations: flags & Self.answerFlag != 0, answersUnicastProbes: flags & Self.unicastFlag != 0,
                  lanMAC: lanMAC)
    }

    var flags: UInt32 { answersSolicitations ? Self.answerFlag | Self.unicastFlag : answersUnicastProbes ? Self.unicastFlag : 0 }
    var macBytes: [UInt8] { lanMAC ?? [0, 0, 0, 0, 0, 0] }

    public var description: String {
        guard let lanMAC else { return "neighbour solicitations left to the kernel" }
        let mac = lanMAC.map { hex($0) }.joined(separator: ":")
        guard answersSolicitations else {
            return "unicast neighbour solicitations for the clients (reachability probes) answered with \(mac), the rest left to the kernel"
        }
        return "neighbour solicitations for the clients answered with \(mac)"
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
