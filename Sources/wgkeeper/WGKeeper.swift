import ArgumentParser
import Glibc

@main
struct WGKeeper: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wgkeeper",
        abstract: "Keeps an IPv6 WireGuard gateway's kernel state equal to its declared state.",
        version: "0.1.0-dev",
        // One file per subcommand; `run`, `status` and `reload` join this list.
        subcommands: [RunCommand.self, CheckCommand.self, PlanCommand.self, StatusCommand.self, ReloadCommand.self,
                      CleanupCommand.self])

    /// The statically linked Swift runtime reads the command line from /proc/self/cmdline. Without
    /// /proc (a chroot, an image build) it finds no arguments at all, and ArgumentParser would print
    /// the help and exit 0 for any command: `wgkeeper check` would pass without checking anything.
    static func main() {
        guard !CommandLine.arguments.isEmpty else {
            printToStandardError("wgkeeper: cannot read its command line (/proc/self/cmdline): is /proc mounted?")
            Glibc.exit(1)
        }
        main(nil)
    }
}

/// Options every command that reads the configuration shares.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "The main configuration file.")
    var config: String = "/etc/wgkeeper/wgkeeper.yaml"

    @Option(name: .long, help: ArgumentHelp("Read absolute paths named in the configuration (key files, include_dir) under this directory.",
                                            valueName: "DIR"))
    var root: String?
}
