import ArgumentParser
import Netlink

@main
struct WGKeeper: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wgkeeper",
        abstract: "Keeps an IPv6 WireGuard gateway's kernel state equal to its declared state.",
        version: "0.1.0-dev")
}
