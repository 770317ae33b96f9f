import FoundationEssentials
import Netlink
import Reconciler

/// The anycast safety check (docs/ARCHITECTURE.md, kernel facts): an interface with `forwarding = 1` joins the
/// subnet-router anycast address of every prefix shorter than /127 it holds
/// (addrconf_join_anycast()), and then answers for the LAN router's address.
extension Daemon {
    /// Global addresses on the LAN whose prefix would make the gateway claim an anycast address.
    func unsafeLANAddresses() -> [Address] {
        guard let gateway = desired.gateway else { return [] }
        return Reconciler.unsafeLANAddresses(lan: link(named: gateway.lan), kernel.addressList)
    }

    /// Global subnet-router anycast addresses the LAN interface holds now (`/proc/net/anycast6`).
    /// The link-local one (`fe80::`) is left out: it is joined too, but no LAN uses it as a router.
    func lanAnycastHeld() -> [IPv6Address] {
        guard let gateway = desired.gateway,
              let text = try? String(contentsOfFile: "/proc/net/anycast6", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3, fields[1] == gateway.lan, fields[2].count == 32 else { return nil }
            let hex = Array(fields[2])
            let bytes = stride(from: 0, to: 32, by: 2).compactMap { UInt8(String(hex[$0..<$0 + 2]), radix: 16) }
            guard let address = IPv6Address(bytes: bytes), !address.isLinkLocal else { return nil }
            return address
        }
    }

    var anycastSafety: [StatusReport.SafetyCheck] {
        guard let gateway = desired.gateway else { return [] }
        let held = lanAnycastHeld()
        // Only a LAN that wgkeeper makes forward (ndp: kernel) joins an anycast for its prefixes.
        let forwards = desired.sysctls.contains { $0.interface == gateway.lan && $0.name == "forwarding" && $0.value == "1" }
        let unsafe = forwards ? unsafeLANAddresses() : []
        return [
            .init(name: "lan anycast (\(gateway.lan))", ok: held.isEmpty || gateway.allowLANAnycast,
                  detail: held.isEmpty ? "no global subnet-router anycast held"
                      : "holds \(held.map(\.description).joined(separator: ", "))\(gateway.allowLANAnycast ? " (allowed by allow_lan_anycast)" : ": the gateway answers for the LAN router's address")"),
            .init(name: "lan addresses (\(gateway.lan))", ok: unsafe.isEmpty || gateway.allowLANAnycast,
                  detail: !forwards ? "wgkeeper leaves \(gateway.lan)'s forwarding off: any prefix is safe there"
                      : unsafe.isEmpty ? "only link-local or /127-/128 global addresses"
                      : "\(unsafe.map(\.prefix.description).joined(separator: ", ")) would claim an anycast with forwarding on"),
        ]
    }
}
