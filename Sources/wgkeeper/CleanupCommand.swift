import ArgumentParser
import Daemon
import Logging

/// `wgkeeper cleanup`: undo everything wgkeeper did, with the daemon stopped.
struct CleanupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup",
        abstract: "Remove what wgkeeper owns and restore what it changed (the daemon must be stopped).",
        discussion: """
            Removes routes and proxy entries tagged with runtime.route_protocol (on any interface), \
            the datapath's attachments and every pin under runtime.bpf_pin_root, the WireGuard \
            devices wgkeeper created, the peers it configured (now or before) on devices it did not create, and puts \
            back each sysctl's value from before wgkeeper's first write (recorded in runtime.state_dir). \
            It keeps what it cannot tell apart from the operator's own: an empty clsact qdisc, the \
            private key and listen port of a device it did not create, peers it pruned.
            """)

    @Option(name: .long, help: "The main configuration file (for runtime.* and the configured devices).")
    var config: String = "/etc/wgkeeper/wgkeeper.yaml"

    func run() throws {
        LoggingSystem.bootstrap { label in JournalLogHandler(label: label) }
        let logger = Logger(label: "wgkeeper")
        do {
            let daemon = try Daemon(options: .init(configPath: config, listen: false), logger: logger)
            throw ExitCode(daemon.cleanupAndExit())
        } catch let error as DaemonError {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
    }
}
