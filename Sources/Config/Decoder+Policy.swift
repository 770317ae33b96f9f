import Netlink
import Reconciler

extension Decoder {
    /// `policy`: defaults, groups and rules. Groups (a mapping of lists) and rules (a list) merge
    /// across files like everything else, so a conf.d file can add its peer to a group and
    /// carry that peer's rules; the defaults are scalars, set once.
    mutating func decodePolicy(_ entry: Tree.Entry, limits: ConfigLimits) -> PolicySection? {
        guard let fields = mapping(entry.value, "policy", known: ConfigKeys.policy) else { return nil }
        var policy = PolicySection(location: entry.keyLocation)
        if let value = parse(fields["client_to_lan"], "allow or deny", { DesiredPolicy.ClientToLAN(rawValue: $0) }) {
            policy.clientToLAN = value
        }
        if let value = parse(fields["lan_to_client"], "allow, deny or replies", { DesiredPolicy.LANToClient(rawValue: $0) }) {
            policy.lanToClient = value
        }
        if let groupsEntry = fields["groups"], let groups = mapping(groupsEntry.value, "policy.groups", known: nil) {
            for name in groups.keys.sorted() {
                let group = groups[name]!
                if policy.groups.count >= limits.policyGroups {
                    fail(group.keyLocation, "policy.groups: more than \(limits.policyGroups) groups (the limit)")
                    break
                }
                guard Scalars.isPeerName(name), name != "any" else {
                    fail(group.keyLocation, "policy.groups: \(Scalars.quoted(name)) is not a group name (letters, digits and . _ @ + -, at most 64; not \"any\")")
                    continue
                }
                var members: [(name: String, location: SourceLocation)] = []
                var seen: [String: SourceLocation] = [:]
                for item in list(group.value, "policy.groups.\(name)") {
                    guard case .scalar(let member, let at) = item.node else {
                        fail(item.location, "policy.groups.\(name): expected a peer name, got \(item.kindName)")
                        continue
                    }
                    // A peer's name, as peers are named: anything else (a pasted key, a line
                    // break) could only be a mistake, and would be repeated by the warnings.
                    guard Scalars.isPeerName(member) else {
                        fail(at, "policy.groups.\(name): \(Scalars.quoted(member)) is not a peer name (letters, digits and . _ @ + -, at most 64)")
                        continue
                    }
                    if let first = seen[member] {
                        fail(at, "policy.groups.\(name): \(Scalars.quoted(member)) is listed twice (first at \(first))")
                        continue
                    }
                    seen[member] = at
                    members.append((member, at))
                }
                policy.groups[name] = (group.keyLocation, members)
            }
        }
        for (i, item) in list(fields["rules"]?.value, "policy.rules").enumerated() {
            if i >= limits.policyRules {
                fail(item.location, "policy.rules: more than \(limits.policyRules) rules (the limit)")
                break
            }
            if let rule = decodeRule(item, "policy.rules[\(i)]", limits: limits) { policy.rules.append(rule) }
        }
        return policy
    }

    private mutating func decodeRule(_ tree: Tree, _ name: String, limits: ConfigLimits) -> PolicyRuleSection? {
        guard let fields = mapping(tree, name, known: ConfigKeys.rule) else { return nil }
        let at = tree.location
        var from: [(name: String, location: SourceLocation)] = []
        var ok = true
        switch fields["from"]?.value.node {
        case nil, .null?:
            fail(at, "\(name): missing required key \"from\" (a peer, a group or any)")
            ok = false
        case .scalar(let text, let textAt)?:
            from = [(text, textAt)]
        case .sequence(let items, let listAt)?:
            for item in items {
                guard case .scalar(let text, let textAt) = item.node else {
                    fail(item.location, "from: expected a peer or group name, got \(item.kindName)")
                    ok = false
                    continue
                }
                from.append((text, textAt))
            }
            if items.isEmpty {
                fail(listAt, "from: an empty list allows nothing; name a peer, a group or any")
                ok = false
            }
        case .mapping?:
            let other = fields["from"]!.value
            fail(other.location, "from: expected a peer, a group, any, or a list of them, got \(other.kindName)")
            ok = false
        }
        // Peers and groups are named with the letters of a peer name: anything else is no
        // reference (a pasted key, a line break), and the rule's text goes to `status` and the metrics.
        for source in from where source.name != "any" && !Scalars.isPeerName(source.name) {
            fail(source.location, "from: \(Scalars.quoted(source.name)) is not a peer or group name (letters, digits and . _ @ + -, at most 64)")
            ok = false
        }
        var destination: IPPrefix?
        if let (text, textAt) = required(fields, "to", in: name, at: at) {
            // A bare address is its /128.
            if !text.contains("/"), let address = Scalars.ipv6Address(text) {
                destination = .host(address)
            } else if !text.contains("/") {
                fail(textAt, "to: \(Scalars.quoted(text)) is neither an IPv6 address nor a prefix")
            } else {
                destination = prefix(text, "to", at: textAt)
            }
        }
        // A key left empty (a template's blank) would widen the rule to everything: said, not guessed.
        if let entry = fields["protocol"], case .null = entry.value.node {
            fail(entry.keyLocation, "protocol: empty; name tcp, udp or icmpv6, or leave the key out for every protocol")
            ok = false
        }
        if let entry = fields["ports"] {
            switch entry.value.node {
            case .null:
                fail(entry.keyLocation, "ports: empty; name ports such as 22 or 8000-8080, or leave the key out for every port")
                ok = false
            case .sequence(let items, let listAt) where items.isEmpty:
                fail(listAt, "ports: an empty list allows nothing; name ports, or leave the key out for every port")
                ok = false
            default:
                break
            }
        }
        let proto = parse(fields["protocol"], "tcp, udp or icmpv6") { PolicyProtocol(name: $0) }
        if fields["protocol"] != nil, proto == nil { ok = false }
        var ports: [PortRange] = []
        if let portsEntry = fields["ports"] {
            let items: [Tree]
            if portsEntry.value.kind == .scalar { items = [portsEntry.value] } else { items = list(portsEntry.value, "ports") }
            if proto == nil || proto?.hasPorts == false, !items.isEmpty {
                fail(portsEntry.keyLocation, "ports: only with protocol tcp or udp")
                ok = false
            }
            if items.count > limits.policyPorts {
                fail(portsEntry.keyLocation, "ports: more than \(limits.policyPorts) ranges in one rule (the limit)")
                ok = false
            }
            for item in items.prefix(limits.policyPorts) {
                guard case .scalar(let text, _) = item.node, let range = Self.portRange(text) else {
                    fail(item.location, "ports: expected a port (1-65535) or a range such as 8000-8080, got \(item.kindName == "a scalar" ? Scalars.quoted(item.text ?? "") : item.kindName)")
                    ok = false
                    continue
                }
                ports.append(range)
            }
        }
        guard ok, let destination else { return nil }
        return PolicyRuleSection(location: at, from: from, destination: destination, proto: proto, ports: ports)
    }

    /// `22` or `8000-8080`, within 1-65535.
    static func portRange(_ text: String) -> PortRange? {
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        let numbers = parts.map { part -> UInt16? in
            let digits = part.trimmingCharacters(in: " ")
            // No leading zero: `080` is not quietly port 80 (nor octal 64).
            guard !digits.isEmpty, digits.count <= 5, digits.first != "0", digits.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let n = Int(digits), (1...65535).contains(n) else { return nil }
            return UInt16(n)
        }
        guard numbers.allSatisfy({ $0 != nil }), let first = numbers.first! else { return nil }
        let last = numbers.last!!
        guard first <= last else { return nil }
        return PortRange(first, last)
    }
}


private extension Substring {
    func trimmingCharacters(in set: Character) -> Substring {
        var text = self
        while text.first == set { text = text.dropFirst() }
        while text.last == set { text = text.dropLast() }
        return text
    }
}

extension Configuration {
    /// Resolves the policy's names (groups to peers of the gateway's tunnel), compiles it for
    /// the datapath, and reports what cannot hold: a policy without the datapath that enforces
    /// it, names that are no tunnel peer or group, rule sets that do not fit the maps.
    func desiredPolicy(errors: inout ConfigErrorList) -> (DesiredPolicy, CompiledPolicy)? {
        guard let policy else { return nil }
        guard let gateway, gateway.redirect else {
            errors.append(policy.location, "policy: enforced by the datapath, so it needs a gateway section with redirect: true (without it, the kernel forwards and netfilter's FORWARD chain is the place for rules)")
            return nil
        }
        guard let tunnel = devices.first(where: { $0.name == gateway.tunnel }) else { return nil }
        let tunnelPeers = Set(tunnel.peers.map(\.peer.name))
        var otherDevice: [String: String] = [:]
        for device in devices where device.name != gateway.tunnel {
            for section in device.peers { otherDevice[section.peer.name] = device.name }
        }
        var ok = true
        if let peer = tunnel.peers.first(where: { $0.peer.name == "any" }) {
            errors.append(peer.location, "name: a peer called \"any\" cannot be told from a rule's from: any (every peer); rename it")
            ok = false
        }
        // A name that is no peer at all allows nothing (`absentPolicyNames` warns of it): the
        // rules only allow, so a departed peer's drop-in can go without editing every group
        // that names it, and the reload that removes the peer is not refused for it.
        func peerProblem(_ name: String) -> String? {
            if let device = otherDevice[name], !tunnelPeers.contains(name) {
                return "peer \(Scalars.quoted(name)) is on \(device); the policy applies to the peers of the gateway's tunnel \(gateway.tunnel)"
            }
            return nil
        }
        var members: [String: [String]] = [:]
        for (name, group) in policy.groups {
            if tunnelPeers.contains(name) || otherDevice[name] != nil {
                errors.append(group.location, "policy.groups: \(Scalars.quoted(name)) is also a peer's name; a rule's from could not tell them apart")
                ok = false
            }
            for member in group.members {
                if policy.groups[member.name] != nil, !tunnelPeers.contains(member.name) {
                    errors.append(member.location, "policy.groups.\(name): \(Scalars.quoted(member.name)) is a group; groups do not contain groups, list its peers")
                    ok = false
                } else if let problem = peerProblem(member.name) {
                    errors.append(member.location, "policy.groups.\(name): \(problem)")
                    ok = false
                }
            }
            members[name] = group.members.map(\.name).filter(tunnelPeers.contains)
        }
        // Bounded before the groups are expanded into each rule (PolicyCompiler: maximumMemberships).
        var memberships = 0
        for rule in policy.rules { for source in rule.from { memberships += members[source.name]?.count ?? 1 } }
        guard memberships <= CompiledPolicy.maximumMemberships else {
            errors.append(policy.location, "policy: the rules name \(memberships) peers in all, each group counted with its members (at most \(CompiledPolicy.maximumMemberships)); use fewer rules for large groups, or any")
            return nil
        }
        var rules: [PolicyRule] = []
        var ruleLocations: [SourceLocation] = []
        for rule in policy.rules {
            var names = Set<String>()
            var any = false
            for source in rule.from {
                if source.name == "any" {
                    any = true
                } else if let group = members[source.name] {
                    names.formUnion(group)
                } else if let problem = peerProblem(source.name) {
                    errors.append(source.location, "from: \(problem)")
                    ok = false
                } else if tunnelPeers.contains(source.name) {
                    names.insert(source.name)
                }
            }
            let label = rule.from.map(\.name).joined(separator: ",")
            rules.append(PolicyRule(source: any ? .any : .peers(names.sorted()), destination: rule.destination,
                                    proto: rule.proto, ports: rule.ports, label: label))
            ruleLocations.append(rule.location)
        }
        guard ok else { return nil }
        let desired = DesiredPolicy(clientToLAN: policy.clientToLAN, lanToClient: policy.lanToClient, rules: rules)
        switch desired.compile(clients: PolicyClients(peers: tunnel.peers.map(\.peer))) {
        case .success(let compiled):
            return (desired, compiled)
        case .failure(let problem):
            errors.append(problem.rule.map { ruleLocations[$0] } ?? policy.location, "policy: \(problem.description)")
            return nil
        }
    }

    /// Names in groups and rules' `from` that are no peer of any device (nor a group, nor
    /// `any`): they allow nothing. Said by `check` and logged at each load, since a typo fails
    /// closed without an error.
    public var absentPolicyNames: [String] { absentPolicyNames(peers: Set(devices.flatMap { $0.peers.map(\.peer.name) })) }

    /// The same against `peers`, every configured peer's name: the daemon keeps no sections
    /// (`Daemon.kept`), so it passes its desired state's (`LoadedConfig.absentPolicyNames`).
    public func absentPolicyNames(peers: Set<String>) -> [String] {
        guard let policy, let gateway, gateway.redirect else { return [] }
        var lines: [String] = []
        func note(_ at: SourceLocation, _ context: String, _ name: String) {
            lines.append("\(at): \(context): \(Scalars.quoted(name)) is no peer of \(gateway.tunnel) (a departed peer, or a typo); it allows nothing until a peer of that name is configured")
        }
        for name in policy.groups.keys.sorted() {
            for member in policy.groups[name]!.members where !peers.contains(member.name) && policy.groups[member.name] == nil {
                note(member.location, "policy.groups.\(name)", member.name)
            }
        }
        for rule in policy.rules {
            for source in rule.from where source.name != "any" && policy.groups[source.name] == nil && !peers.contains(source.name) {
                note(source.location, "from", source.name)
            }
        }
        // As errors are: a million absent names must not be a million log lines at each reload.
        let limit = 1000
        return lines.count <= limit ? lines : Array(lines.prefix(limit)) + ["and \(lines.count - limit) more names that are no peer"]
    }

    /// What `check` says about the policy without failing: none set, names that are no peer, or
    /// rules that cannot matter.
    public var policyWarnings: [String] {
        guard let gateway, gateway.redirect else { return [] }
        guard let policy else {
            return ["no policy section: every peer of \(gateway.tunnel) reaches every LAN address on every port and every LAN host reaches every client; netfilter FORWARD rules do not see this traffic (the datapath redirects it past the forwarding path)"]
        }
        var warnings = absentPolicyNames
        for name in policy.groups.keys.sorted() where policy.groups[name]!.members.isEmpty {
            warnings.append("\(policy.groups[name]!.location): policy.groups.\(name): no members; rules from it allow nothing")
        }
        // A client's own address is the tunnel's side: packets to it are never judged as LAN traffic.
        let clientPrefixes = devices.first { $0.name == gateway.tunnel }?.peers.flatMap { section in section.peer.allowedIPs.map { ($0, section.peer.name) } } ?? []
        for rule in policy.rules {
            if let (prefix, peer) = clientPrefixes.first(where: { gateway.lanPrefix.contains($0.0) && $0.0.contains(rule.destination) }) {
                warnings.append("\(rule.location): policy: \(rule.destination) is within \(prefix), peer \(Scalars.quoted(peer))'s address: packets to it go to the tunnel, so this rule never matches")
            }
        }
        // The programs judge only what they redirect: packets between a client and lan_prefix.
        for rule in policy.rules where !gateway.lanPrefix.contains(rule.destination) && !rule.destination.contains(gateway.lanPrefix) {
            warnings.append("\(rule.location): policy: \(rule.destination) is outside lan_prefix \(gateway.lanPrefix); the datapath judges only traffic to the LAN prefix, so this rule never matches")
        }
        if policy.clientToLAN == .allow, !policy.rules.isEmpty {
            warnings.append("\(policy.location): policy: client_to_lan is allow, so the rules have no effect; set client_to_lan: deny to enforce them")
        }
        if policy.lanToClient == .deny {
            warnings.append("\(policy.location): policy: lan_to_client: deny drops the LAN's replies too (TCP and ping to the LAN cannot work); lan_to_client: replies lets replies through")
        }
        if policy.clientToLAN == .deny, policy.lanToClient == .allow {
            warnings.append("\(policy.location): policy: with client_to_lan: deny, the clients' answers to connections LAN hosts open are denied unless a rule allows them (lan_to_client: allow lets LAN hosts open them)")
        }
        return warnings
    }
}
