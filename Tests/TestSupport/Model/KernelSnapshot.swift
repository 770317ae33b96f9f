import Foundation
import Glibc
import Netlink
import XCTest

/// A namespace's kernel state as the model compares it, read with the kernel's own tools
/// (never with wgkeeper's code) and normalized to one sorted line per object:
///   route TABLE TYPE DST dev DEV proto N metric M via GW
///   proxy ADDRESS dev DEV proto N
///   sysctl IFACE KEY VALUE          (forwarding and proxy_ndp of every interface, all, default)
///   tcx DEV DIRECTION PROGRAM       (TCX attachments, by program name)
///   qdisc DEV KIND / filter DEV ingress KIND NAME   (clsact and its filters)
///   pin PATH                        (under the pin root)
///   map PATH KEY => VALUE           (the datapath's prefix and config maps)
///   mcast DEV GROUP users N         (solicited-node groups of peer addresses in the first LAN prefix)
///   wg DEV listen PORT public KEY / wgpeer DEV KEY endpoint E allowed A keepalive K
/// Kernel-owned noise is dropped: `proto kernel` routes, multicast, the local table.
public struct KernelSnapshot: Equatable {
    public var lines: Set<String>

    public init(lines: Set<String>) { self.lines = lines }

    static func routeLine(table: String, type: String, dst: String, dev: String, proto: String, metric: Int, gateway: String?) -> String {
        "route \(table) \(type) \(dst) dev \(dev) proto \(proto) metric \(metric) via \(gateway ?? "-")"
    }

    static func proxyLine(address: String, dev: String, proto: String) -> String {
        "proxy \(address) dev \(dev) proto \(proto)"
    }

    static func peerLine(dev: String, key: String, endpoint: String, allowed: String, keepalive: String) -> String {
        "wgpeer \(dev) \(key) endpoint \(endpoint) allowed \(allowed) keepalive \(keepalive)"
    }


    /// Reads `ns` with one `ip netns exec … sh` (process spawns from the test are the slow
    /// part); `pinRoot` is a bpffs this process can see.
    public static func read(_ ns: TestNamespace, pinRoot: String?, wireGuard: Bool) throws -> KernelSnapshot {
        let pins = pinRoot.map { "'\($0)'" } ?? "/nonexistent"
        let script = """
        echo @@routes; ip -N -j -6 route show table all
        echo @@proxies; ip -N -j -6 neigh show proxy
        echo @@links; ip -j link show
        echo @@qdiscs; tc -j qdisc show
        for d in $(tc qdisc show | sed -n 's/^qdisc clsact .* dev \\([^ ]*\\) .*/\\1/p'); do echo "@@filters $d"; tc -j filter show dev "$d" ingress; done
        echo @@sysctls; grep -H . /proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/proxy_ndp
        echo @@addresses; ip -j -6 addr show
        echo @@igmp6; cat /proc/net/igmp6
        [ -d \(pins) ] && cd \(pins) && { echo @@pins; find . -mindepth 1 | sort
          for f in $(find . -name client_prefixes -o -name lan_prefixes -o -name config); do echo "@@map ${f#./}"; bpftool -j map dump pinned "$f"; done; }
        \(wireGuard ? "[ -d /sys/class/net/wg0 ] && { echo @@wg; wg show wg0 dump; }" : "")
        true
        """
        let output = try shell(["ip", "netns", "exec", ns.name, "sh", "-c", script])
        var sections: [(String, String)] = []
        for chunk in output.components(separatedBy: "@@").dropFirst() {
            let newline = chunk.firstIndex(of: "\n") ?? chunk.endIndex
            sections.append((String(chunk[..<newline]), String(chunk[newline...])))
        }
        func json(_ text: String) -> [[String: Any]] {
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { return [] }
            return (try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [[String: Any]]) ?? [["unparsed": trimmed]]
        }
        var lines: Set<String> = []
        var indices: [(String, UInt32)] = []
        // The low 24 bits of each device's own addresses (hex, as /proc/net/igmp6 ends a group):
        // the kernel joins their solicited-node groups, and a link-local made from a random MAC
        // (a new one in each namespace) can end in 01:00XX like a peer address's group.
        var own: Set<String> = []
        for (header, body) in sections where header == "addresses" {
            for device in json(body) {
                for info in device["addr_info"] as? [[String: Any]] ?? [] {
                    guard let local = info["local"] as? String, let address = IPv6Address(local) else { continue }
                    own.insert("\(device["ifname"] ?? "?") " + String(format: "%06x", address.low & 0xff_ffff))
                }
            }
        }
        for (header, body) in sections {
            let words = header.split(separator: " ", maxSplits: 1).map(String.init)
            switch words[0] {
            case "routes":
                for route in json(body) {
                    let table = "\(route["table"] ?? "254")"
                    let type = "\(route["type"] ?? "unicast")"
                    let proto = "\(route["protocol"] ?? "3")"  // iproute2 leaves out `proto boot`
                    if table == "local" || table == "255" || proto == "2" || type == "multicast" || type == "5" { continue }
                    // `ip` prints a host route without its /128; the model's lines always carry it.
                    var dst = "\(route["dst"] ?? "?")"
                    if dst != "default" && !dst.contains("/") { dst += "/128" }
                    lines.insert(routeLine(table: table == "main" ? "254" : table, type: type, dst: dst,
                                           dev: "\(route["dev"] ?? "-")", proto: proto, metric: route["metric"] as? Int ?? 0,
                                           gateway: route["gateway"] as? String))
                }
            case "proxies":
                for entry in json(body) {
                    lines.insert(proxyLine(address: "\(entry["dst"] ?? "?")", dev: "\(entry["dev"] ?? "-")", proto: "\(entry["protocol"] ?? "0")"))
                }
            case "links":
                indices = json(body).compactMap { link in
                    (link["ifname"] as? String).flatMap { name in (link["ifindex"] as? Int).map { (name, UInt32($0)) } }
                }
            case "qdiscs":
                for qdisc in json(body) {
                    let kind = "\(qdisc["kind"] ?? "?")"
                    if kind != "noqueue" && kind != "noop" { lines.insert("qdisc \(qdisc["dev"] ?? "?") \(kind)") }
                }
            case "filters":
                for filter in json(body) {
                    guard let options = filter["options"] as? [String: Any] else { continue }
                    // "lan_ingress:[12]": the program id differs between namespaces; keep the name.
                    let name = "\(options["bpf_name"] ?? "-")".split(separator: ":").first.map(String.init) ?? "-"
                    lines.insert("filter \(words[1]) ingress \(filter["kind"] ?? "?") \(name)")
                }
            case "sysctls":
                // /proc/sys/net/ipv6/conf/IFACE/KEY:VALUE
                for line in body.split(separator: "\n") {
                    let parts = line.split(separator: ":", maxSplits: 1)
                    let path = parts[0].split(separator: "/")
                    guard parts.count == 2, path.count >= 2 else { continue }
                    lines.insert("sysctl \(path[path.count - 2]) \(path[path.count - 1]) \(parts[1])")
                }
            case "igmp6":
                // "INDEX DEV GROUP USERS …": only the groups of the peers' addresses in the first
                // LAN prefix (2001:db8:1::1:XX, group ff02::1:ff01:00XX), which no explicit or
                // foreign proxy entry shares: the proxy entries' (ndp: kernel) or the daemon's
                // (ndp: datapath). Others follow random MACs (link-local) or drift.
                for line in body.split(separator: "\n") {
                    let f = line.split(separator: " ", omittingEmptySubsequences: true)
                    guard f.count >= 4, f[2].hasPrefix("ff0200000000000000000001ff0100"), f[2].count == 32 else { continue }
                    let low = f[2].suffix(6)
                    if own.contains("\(f[1]) \(low)") { continue }
                    lines.insert("mcast \(f[1]) ff02::1:ff\(low.prefix(2)):\(low.suffix(4)) users \(f[3])")
                }
            case "pins":
                for path in body.split(separator: "\n") {
                    let relative = path.hasPrefix("./") ? String(path.dropFirst(2)) : String(path)
                    if !["progs.debug", "maps.debug"].contains(relative) { lines.insert("pin \(relative)") }
                }
            case "map":
                for entry in json(body) {
                    let key = mapKey(entry["key"])
                    var value = (entry["value"] as? [String])?.map { $0.replacingOccurrences(of: "0x", with: "") }.joined() ?? "\(entry["value"] ?? "?")"
                    // The config map's first 24 bytes are indexes, MTUs and the ICMP interval; the
                    // ICMP source addresses after them are found per namespace (link-local
                    // addresses follow each namespace's random MACs), so they are not compared.
                    if words[1].hasSuffix("/config"), value.count > 48 { value = String(value.prefix(48)) }
                    lines.insert("map \(words[1]) \(key) => \(value)")
                }
            case "wg":
                let dump = body.split(separator: "\n")
                if let first = dump.first {
                    let f = first.split(separator: "\t", omittingEmptySubsequences: false)
                    if f.count >= 4 { lines.insert("wg wg0 listen \(f[2]) public \(f[1]) fwmark \(f[3])") }
                }
                for line in dump.dropFirst() {
                    let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
                    guard f.count >= 8 else { continue }
                    let allowed = f[3].split(separator: ",").sorted().joined(separator: ",")
                    lines.insert(peerLine(dev: "wg0", key: f[0], endpoint: f[2], allowed: allowed, keepalive: f[7]))
                }
            default:
                break
            }
        }
        try ns.namespace.perform {
            for (name, index) in indices {
                for (direction, attachType) in [("ingress", UInt32(46)), ("egress", UInt32(47))] {
                    for program in TCXQuery.programs(ifindex: index, attachType: attachType) {
                        lines.insert("tcx \(name) \(direction) \(program)")
                    }
                }
            }
        }
        return KernelSnapshot(lines: lines)
    }

    /// An LPM key (4-byte little-endian prefix length, 16-byte address) as a prefix; else hex.
    static func mapKey(_ key: Any?) -> String {
        guard let hex = key as? [String] else { return "\(key ?? "?")" }
        let bytes = hex.compactMap { UInt8($0.replacingOccurrences(of: "0x", with: ""), radix: 16) }
        guard bytes.count == 20 else { return bytes.map { String(format: "%02x", $0) }.joined() }
        let length = Int(bytes[0]) | Int(bytes[1]) << 8
        var address = in6_addr()
        withUnsafeMutableBytes(of: &address) { $0.copyBytes(from: bytes[4..<20]) }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
        return "\(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))/\(length)"
    }

    /// Expected-versus-actual, one line per difference: `- ` missing, `+ ` unexpected.
    public static func diff(expected: KernelSnapshot, actual: KernelSnapshot) -> [String] {
        expected.lines.subtracting(actual.lines).sorted().map { "- expected, missing:   \($0)" }
            + actual.lines.subtracting(expected.lines).sorted().map { "+ unexpected, present: \($0)" }
    }

    /// The kinds of object a diff touches (its lines' first words), to tell failures apart.
    public static func kinds(_ diff: [String]) -> Set<String> {
        Set(diff.compactMap { $0.split(separator: ":", maxSplits: 1).last?.split(separator: " ").first.map(String.init) })
    }
}

/// TCX attachments read with bpf(2) itself (the bpftool here predates TCX): BPF_PROG_QUERY
/// on the device, then each program's name. Run inside the namespace.
enum TCXQuery {
    typealias Syscall = @convention(c) (Int, Int, UnsafeMutableRawPointer, Int) -> Int
    // syscall(2) is variadic, which Swift cannot call; with integer and pointer arguments the
    // x86-64 and arm64 calling conventions pass them as a fixed prototype would.
    static let syscall: Syscall = unsafeBitCast(dlsym(dlopen(nil, RTLD_NOW), "syscall")!, to: Syscall.self)
    static let bpfNumber = 321  // x86-64

    static func bpf(_ command: Int, _ attr: inout [UInt8]) -> Int {
        attr.withUnsafeMutableBytes { syscall(bpfNumber, command, $0.baseAddress!, $0.count) }
    }

    static func put<T: FixedWidthInteger>(_ value: T, at offset: Int, in buffer: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { buffer[offset + i] = b } }
    }

    static func get32(_ buffer: [UInt8], at offset: Int) -> UInt32 {
        buffer[offset..<offset + 4].enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * $1.offset) }
    }

    static func programs(ifindex: UInt32, attachType: UInt32) -> [String] {
        var ids = [UInt32](repeating: 0, count: 64)
        return ids.withUnsafeMutableBufferPointer { idBuffer -> [String] in
            var attr = [UInt8](repeating: 0, count: 128)
            put(ifindex, at: 0, in: &attr)
            put(attachType, at: 4, in: &attr)
            put(UInt64(UInt(bitPattern: idBuffer.baseAddress!)), at: 16, in: &attr)
            put(UInt32(64), at: 24, in: &attr)
            if bpf(16, &attr) != 0 {  // BPF_PROG_QUERY; EINVAL: no TCX on this kernel
                return errno == EINVAL || errno == EOPNOTSUPP || errno == ENODEV ? [] : ["error-\(errno)"]
            }
            let count = Int(get32(attr, at: 24))
            return (0..<count).map { name(ofProgram: idBuffer[$0]) }
        }
    }

    static func name(ofProgram id: UInt32) -> String {
        var attr = [UInt8](repeating: 0, count: 128)
        put(id, at: 0, in: &attr)
        let fd = bpf(13, &attr)  // BPF_PROG_GET_FD_BY_ID
        guard fd >= 0 else { return "id\(id)" }
        defer { close(Int32(fd)) }
        var info = [UInt8](repeating: 0, count: 256)
        return info.withUnsafeMutableBytes { infoBytes -> String in
            var get = [UInt8](repeating: 0, count: 128)
            put(UInt32(fd), at: 0, in: &get)
            put(UInt32(256), at: 4, in: &get)
            put(UInt64(UInt(bitPattern: infoBytes.baseAddress!)), at: 8, in: &get)
            guard bpf(15, &get) == 0 else { return "id\(id)" }  // BPF_OBJ_GET_INFO_BY_FD
            let name = infoBytes[64..<80].prefix { $0 != 0 }
            return String(decoding: name, as: UTF8.self)
        }
    }
}
