import ArgumentParser
import Daemon
import Logging

/// `wgkeeper run`: the daemon, in the foreground (systemd `Type=notify`).
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Keep the kernel equal to the configuration until stopped (SIGHUP reloads).")

    @Option(name: .long, help: "The main configuration file.")
    var config: String = "/etc/wgkeeper/wgkeeper.yaml"

    @Flag(name: .long, help: "On stop, do what `wgkeeper cleanup` does: remove what wgkeeper owns, restore the sysctls it changed.")
    var cleanup = false

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() throws {
        StandardStreams.reserve()
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = JournalLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "wgkeeper")
        do {
            let daemon = try Daemon(options: .init(configPath: config, cleanupOnExit: cleanup), logger: logger)
            throw ExitCode(try daemon.run())
        } catch let error as DaemonError {
            logger.critical("\(error)")
            throw ExitCode(error.isConfiguration ? DaemonError.configurationExitStatus : 1)
        }
    }
}
