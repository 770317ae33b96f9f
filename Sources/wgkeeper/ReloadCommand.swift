import ArgumentParser
import Daemon

/// `wgkeeper reload`: what SIGHUP does, with the outcome printed.
struct ReloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload", abstract: "Reload the configuration of a running daemon (same as SIGHUP) and print the outcome.",
        discussion: """
            Exit status: 0 when the configuration took effect, even if a safety rule refuses some of \
            its changes (they are counted on the "reloaded:" line, their reasons printed on standard \
            error, and `wgkeeper status` lists them); 1 when the configuration is refused (the \
            previous generation stays in force) or the daemon does not answer; 2 when --timeout \
            passes first.
            """)

    @Option(name: .long, help: "The daemon's status socket.")
    var socket: String = "/run/wgkeeper/status.sock"

    @Option(name: .long, help: "Give up waiting for the outcome after this many seconds (default: wait until the reload is done).")
    var timeout: Int?

    func validate() throws {
        if let timeout, timeout <= 0 { throw ValidationError("--timeout must be a positive number of seconds") }
    }

    func run() throws {
        let reply: ReloadReply
        do {
            // A large configuration can take minutes to read: wait for it unless told otherwise.
            reply = try decodeReply(ReloadReply.self, try askDaemon(socket: socket, command: "reload", timeout: timeout.map { .seconds($0) }))
        } catch let error as AskTimeout {
            printToStandardError("\(error); the reload is still in progress (or queued) in the daemon, which applies it "
                + "when the read is done. `wgkeeper status --socket \(socket)` shows its outcome: the configuration "
                + "generation goes up when it takes effect, a refused one is listed as \"config error (last reload refused)\"")
            throw ExitCode(2)
        } catch {
            printToStandardError("\(error)")
            throw ExitCode(1)
        }
        if reply.ok {
            // The generation took effect (exit status 0, as `systemctl reload` expects); what a
            // safety rule holds back is still said, on standard error, so that it is seen.
            let refused = reply.refusedObjects ?? 0
            print("reloaded: configuration generation \(reply.configGeneration), \(reply.changesApplied) change(s) applied"
                + (refused > 0 ? ", \(refused) change(s) refused" : ""))
            if refused > 0 {
                printToStandardError("\(refused) change(s) refused (`wgkeeper status` lists them):")
                for reason in reply.refused ?? [] { printToStandardError("  \(reason)") }
            }
            for warning in reply.warnings ?? [] { printToStandardError("warning: \(warning)") }
        } else {
            printToStandardError("reload refused; still enforcing generation \(reply.configGeneration):")
            for error in reply.errors { printToStandardError("  \(error)") }
            throw ExitCode(1)
        }
    }
}
