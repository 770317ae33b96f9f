import Foundation
import Netlink

// Throwaway network namespaces, all named `wgk-bench-…` and removed when the closure returns,
// thrown errors included (`scripts/bench` sweeps what a killed run leaves behind).

/// `WGK_BENCH_NS_PREFIX` replaces the prefix for a run by hand beside a `make bench` of another
/// checkout, whose sweep removes every `wgk-bench-…` namespace (such a run removes its own).
func namespaceName() -> String {
    (ProcessInfo.processInfo.environment["WGK_BENCH_NS_PREFIX"] ?? "wgk-bench-") + "\(UInt32.random(in: 0...UInt32.max))"
}

/// An empty namespace with loopback up.
func withEmptyNamespace<T>(_ body: (String, NetworkNamespace) throws -> T) throws -> T {
    let name = namespaceName()
    try shell(["ip", "netns", "add", name])
    defer { _ = try? shell(["ip", "netns", "del", name]) }
    try shell(["ip", "-n", name, "link", "set", "lo", "up"])
    return try body(name, try NetworkNamespace(named: name))
}

/// A namespace with a veth pair, `veth0` up; the body gets `veth0`'s index.
func withNamespace<T>(_ body: (String, NetworkNamespace, Int32) throws -> T) throws -> T {
    try withEmptyNamespace { name, namespace in
        try shell(["ip", "-n", name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"])
        try shell(["ip", "-n", name, "link", "set", "veth0", "up"])
        try shell(["ip", "-n", name, "link", "set", "veth1", "up"])
        let index = try namespace.perform { try RTNetlink().link(named: "veth0")!.index }
        return try body(name, namespace, index)
    }
}

/// The gateway's two devices as veth stand-ins: `wg0` (tunnel) and `private0` (LAN). Without
/// WireGuard the daemon leaves peers pending but applies the routes and proxy entries derived
/// from them, which is what the host-kernel figures measure.
/// `wireGuard`: `wg0` is a WireGuard device (needs a kernel with WireGuard: run in the VM).
func withGatewayNamespace<T>(wireGuard: Bool = false, _ body: (String, NetworkNamespace) throws -> T) throws -> T {
    try withEmptyNamespace { name, namespace in
        if wireGuard {
            try shell(["ip", "-n", name, "link", "add", "wg0", "type", "wireguard"])
            try shell(["ip", "-n", name, "link", "set", "wg0", "up"])
        }
        for (device, peer) in [("wg0", "wg0p"), ("private0", "lanp")] where !(wireGuard && device == "wg0") {
            try shell(["ip", "-n", name, "link", "add", device, "type", "veth", "peer", "name", peer])
            try shell(["ip", "-n", name, "link", "set", device, "up"])
            try shell(["ip", "-n", name, "link", "set", peer, "up"])
        }
        return try body(name, namespace)
    }
}

/// A namespace holding an empty, up `wg0` (needs a kernel with WireGuard: run in the VM).
func withWireGuardNamespace<T>(_ body: (String, NetworkNamespace) throws -> T) throws -> T {
    try withEmptyNamespace { name, namespace in
        try shell(["ip", "-n", name, "link", "add", "wg0", "type", "wireguard"])
        try shell(["ip", "-n", name, "link", "set", "wg0", "up"])
        return try body(name, namespace)
    }
}

/// Namespaces for a topology of several, each removed by `removeAll` (call it in a `defer`).
final class NamespaceSet {
    private(set) var names: [String] = []

    /// A new namespace, loopback up, with duplicate address detection and forwarding off (so
    /// addresses are usable at once and nothing forwards unless a benchmark says so).
    func add() throws -> String {
        let name = namespaceName()
        try shell(["ip", "netns", "add", name])
        names.append(name)
        for key in ["all.accept_dad", "default.accept_dad", "all.forwarding", "default.forwarding"] {
            try shell(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.\(key)=0"])
        }
        try shell(["ip", "-n", name, "link", "set", "lo", "up"])
        return name
    }

    func removeAll() {
        for name in names { _ = try? shell(["ip", "netns", "del", name]) }
        names = []
    }
}
