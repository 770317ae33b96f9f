import ArgumentParser
import Config
import Foundation

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
        case .failure(let errors):
            printErrors(errors)
            throw ExitCode(1)
        }
    }
}

func printErrors(_ errors: ConfigErrors) {
    for error in errors.errors { printToStandardError(error.description) }
}

func printToStandardError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
