/// Every key the validator knows, by path (`wireguard.*` is any device name, `[]` a list item).
/// The JSON schema in deploy/ names exactly these; a test keeps the two in step.
public enum ConfigKeys {
    public static let top = ["runtime", "wireguard", "gateway", "routes", "proxies", "policy"]
    public static let runtime = ["status_socket", "bpf_pin_root", "route_protocol", "wireguard_poll", "proxy_poll", "resync",
                                 "include_dir", "state_dir", "status_group"]
    public static let device = ["private_key_file", "listen_port", "prune_peers", "peers"]
    public static let peer = ["name", "public_key", "preshared_key_file", "allowed_ips", "endpoint", "persistent_keepalive"]
    public static let gateway = ["tunnel", "lan", "lan_prefix", "proxy_ndp", "ndp", "redirect", "allow_lan_anycast", "allow_unsafe_allowed_ips",
                                 "icmp_source_lan", "icmp_source_tunnel", "icmp_ratelimit"]
    public static let route = ["destination", "device", "gateway", "table", "metric"]
    public static let proxy = ["address", "device"]
    public static let policy = ["client_to_lan", "lan_to_client", "groups", "rules"]
    public static let rule = ["from", "to", "protocol", "ports"]

    public static let byPath: [String: [String]] = [
        "": top,
        "runtime": runtime,
        "wireguard.*": device,
        "wireguard.*.peers[]": peer,
        "gateway": gateway,
        "routes[]": route,
        "proxies[]": proxy,
        "policy": policy,
        "policy.rules[]": rule,
    ]

    /// Route protocol numbers the kernel names (include/uapi/linux/rtnetlink.h, RTPROT_*):
    /// tagging our routes with one would claim another daemon's routes as ours.
    public static let reservedRouteProtocols: [UInt8: String] = [
        0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra", 10: "mrt",
        11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp", 17: "mrouted",
        18: "keepalived", 42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp",
        // FRR's own numbers (its rt_protos.d/frr.conf): zebra tags each daemon's routes with them.
        190: "ripng (FRR)", 191: "nhrp (FRR)", 193: "ldp (FRR)", 194: "sharp (FRR)", 195: "pbr (FRR)", 196: "static (FRR)",
        197: "openfabric (FRR)", 198: "srte (FRR)",
    ]
}
