import ArgumentParser
import Config
import Daemon
import Glibc
import Netlink
import Reconciler

/// `wgkeeper check`: validate the configuration and everything it names, change nothing.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate the configuration; exit 0 with a summary, or 1 with every error as file:line:column.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        switch ConfigLoader(root: options.root).load(path: options.config) {
        case .success(let loaded):
            print(loaded.summary)
            for line in icmpWarnings(loaded.desired) { printToStandardError("warning: \(line)") }
            for line in loaded.configuration.policyWarnings { printToStandardError("warning: \(line)") }
            if let datapath = loaded.desired.datapath, let chains = try? NetfilterForwarding.chains(),
               let line = ForwardFilters.warning(chains, datapath: datapath, policy: loaded.desired.policy) {
                printToStandardError("warning: \(line)")
            }
        case .failure(let errors):
            printErrors(errors)
            throw ExitCode(1)
        }
    }
}

/// The datapath sends ICMPv6 errors only from a source the receiver accepts: say which side
/// has none with the interfaces as they are now, or a configured one this host does not hold. Not an error: the addresses may come later,
/// and `check` also runs where the gateway's interfaces do not exist.
private func icmpWarnings(_ desired: DesiredState) -> [String] {
    guard let datapath = desired.datapath,
          let rtnetlink = try? RTNetlink(), let links = try? rtnetlink.links(),
          let addresses = try? rtnetlink.addresses(family: .inet6)
    else { return [] }
    return ICMPSources.missing(datapath.icmp, lan: datapath.lan, tunnel: datapath.tunnel, links: links, addresses: addresses)
}

func printErrors(_ errors: ConfigErrors) {
    for error in errors.errors { printToStandardError(error.description) }
}

/// A plain write(2): FileHandle.write raises (and so kills the process) when standard error is
/// a closed pipe; a lost error line is better than a crash.
func printToStandardError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
        if n > 0 { offset += n } else if n < 0, errno == EINTR { continue } else { return }
    }
}
