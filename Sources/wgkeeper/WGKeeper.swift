import ArgumentParser

@main
struct WGKeeper: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wgkeeper",
        abstract: "Keeps an IPv6 WireGuard gateway's kernel state equal to its declared state.",
        version: "0.1.0-dev",
        // One file per subcommand; `run`, `status` and `reload` join this list.
        subcommands: [RunCommand.self, CheckCommand.self, PlanCommand.self, StatusCommand.self, ReloadCommand.self,
                      CleanupCommand.self])
}

/// Options every command that reads the configuration shares.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "The main configuration file.")
    var config: String = "/etc/wgkeeper/wgkeeper.yaml"

    @Option(name: .long, help: ArgumentHelp("Read absolute paths named in the configuration (key files, include_dir) under this directory.",
                                            valueName: "DIR"))
    var root: String?
}
