import Config
@testable import Daemon
import Dispatch
import Glibc
import XCTest

/// The configuration is read off the caller's thread; the outcome comes back through the pipe.
final class ConfigReaderTests: XCTestCase {
    func testReadsOffTheCallerAndAnswersThroughThePipe() throws {
        let release = DispatchSemaphore(value: 0)
        let reader = try ConfigReader { path in
            release.wait()  // a file that takes as long as the test says to parse
            return .failure(ConfigErrors([ConfigError(SourceLocation(file: path, line: 1, column: 1), "refused")]))
        }
        let start = ContinuousClock.now
        reader.start("/etc/wgkeeper/wgkeeper.yaml")
        XCTAssertLessThan(ContinuousClock.now - start, .milliseconds(100), "start does not wait for the read")
        XCTAssertNil(reader.take(), "nothing while the read runs")
        var ready = pollfd(fd: reader.wakeFD, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&ready, 1, 50), 0, "the pipe stays quiet while the read runs")

        release.signal()
        XCTAssertEqual(poll(&ready, 1, 5_000), 1, "the pipe wakes the loop when the read is done")
        guard case .failure(let errors)? = reader.take()?.outcome else { return XCTFail("no outcome") }
        XCTAssertEqual(errors.description, "/etc/wgkeeper/wgkeeper.yaml:1:1: refused")
        XCTAssertNil(reader.take(), "an outcome is taken once")
        XCTAssertEqual(poll(&ready, 1, 0), 0, "and the pipe is drained")
    }
}
