import Foundation
import Glibc
import TestSupport
import XCTest

/// `wgkeeper check` as a process, on input meant to crash or exhaust it: it must exit 1 with an
/// error, within bounded time and memory (the child's own `ru_maxrss`, from `wait4`).
final class CheckCommandTests: XCTestCase {
    private var fixture: ConfigFixture!

    override func setUpWithError() throws { fixture = try ConfigFixture(for: self) }

    struct Run {
        var status: Int32
        var output: String
        var seconds: Double
        var peakKiB: Int
    }

    /// Runs `wgkeeper check --config FILE` with stdout and stderr into one file.
    func check(_ text: String) throws -> Run {
        let binary = DaemonHarness.binary
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw TestFailure("\(binary) is missing: run `swift build` first")
        }
        try fixture.write("wgkeeper.yaml", text)
        let outputPath = fixture.path("output")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let arguments = [binary, "check", "--config", fixture.path("wgkeeper.yaml")]
        var argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let start = ContinuousClock.now
        let spawned = posix_spawn(&pid, binary, &actions, nil, &argv, environ)
        guard spawned == 0 else { throw TestFailure("posix_spawn \(binary): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 {
            guard errno == EINTR else { throw TestFailure("wait4: \(String(cString: strerror(errno)))") }
        }
        let elapsed = ContinuousClock.now - start
        let output = try String(contentsOfFile: outputPath, encoding: .utf8)
        // WIFSIGNALED: a crash is reported as such, with what it printed.
        if status & 0x7f != 0 { throw TestFailure("wgkeeper check was killed by signal \(status & 0x7f): \(output.prefix(2000))") }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Run(status: (status >> 8) & 0xff, output: output, seconds: seconds, peakKiB: usage.ru_maxrss)
    }

    func testTwentyThousandOpenBracketsExitWithAnError() throws {
        let run = try check("routes: " + String(repeating: "[", count: 20_000) + "\n")
        XCTAssertEqual(run.status, 1)
        XCTAssertEqual(run.output, "\(fixture.path("wgkeeper.yaml")):1:40: nested deeper than 32 levels (the limit)\n")
    }

    func testDeepBlockNestingExitsWithAnError() throws {
        let run = try check("routes:\n" + String(repeating: "- ", count: 50_000) + "x\n")
        XCTAssertEqual(run.status, 1)
        XCTAssertEqual(run.output, "\(fixture.path("wgkeeper.yaml")):2:63: nested deeper than 32 levels (the limit)\n")
        // A list item on each line, one column further in than the one before.
        let nested = try check("routes:\n" + (1...200).map { String(repeating: " ", count: $0) + "-\n" }.joined())
        XCTAssertEqual(nested.status, 1)
        XCTAssertTrue(nested.output.hasSuffix("nested deeper than 32 levels (the limit)\n"), nested.output)
    }

    func testAliasBombIsRefusedInBoundedTimeAndMemory() throws {
        // Nine levels of ten: 10⁹ nodes expanded, 400 bytes written.
        var text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...9 { text += "a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ") + "]\n" }
        text += "routes: *a9\n"
        let run = try check(text)
        XCTAssertEqual(run.status, 1)
        XCTAssertTrue(run.output.hasSuffix(":4:45: aliases expand to more than 10000 nodes (the limit)\n"), run.output)
        XCTAssertLessThan(run.seconds, 2, "took \(run.seconds) s")
        XCTAssertLessThan(run.peakKiB, 200 * 1024, "peak RSS \(run.peakKiB) KiB")
    }

    func testPastedKeyAppearsInNoOutput() throws {
        let secret = PrivateKeyText.sample
        let text = AcceptedConfigs.base
            .replacingOccurrences(of: "private_key_file: wg0.key", with: "private_key_file: \(secret)")
            .replacingOccurrences(of: "preshared_key_file: alice.psk", with: "preshared_key_file: \(secret.dropLast())")
        let run = try check(text)
        XCTAssertEqual(run.status, 1)
        XCTAssertTrue(run.output.contains("private_key_file: looks like a key, not a file name"), run.output)
        XCTAssertTrue(run.output.contains("preshared_key_file: cannot read the key file"), run.output)
        XCTAssertFalse(run.output.contains(secret.prefix(12)), "the key leaked: \(run.output)")
    }
}
