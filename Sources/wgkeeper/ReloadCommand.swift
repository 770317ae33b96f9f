import ArgumentParser
import Daemon

/// `wgkeeper reload`: what SIGHUP does, with the outcome printed.
struct ReloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload", abstract: "Reload the configuration of a running daemon (same as SIGHUP) and print the outcome.")

    @Option(name: .long, help: "The daemon's status socket.")
    var socket: String = "/run/wgkeeper/status.sock"

    func run() throws {
        let reply: ReloadReply
        do {
            reply = try decodeReply(ReloadReply.self, try askDaemon(socket: socket, command: "reload"))
        } catch {
            printToStandardError("\(error)")
            throw ExitCode(1)
        }
        if reply.ok {
            print("reloaded: configuration generation \(reply.configGeneration), \(reply.changesApplied) change(s) applied")
        } else {
            printToStandardError("reload refused; still enforcing generation \(reply.configGeneration):")
            for error in reply.errors { printToStandardError("  \(error)") }
            throw ExitCode(1)
        }
    }
}
