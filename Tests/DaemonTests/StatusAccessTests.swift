@testable import Daemon
import Glibc
import XCTest

/// `runtime.status_group` is no use when a directory on the socket's path keeps the group out
/// (the unit's /run/wgkeeper is root:root 0750): the daemon warns at start.
final class StatusAccessTests: XCTestCase {
    private var base = ""

    override func setUpWithError() throws {
        var template = Array("/run/wgkeeper-tests/access.XXXXXX".utf8CString)
        mkdir("/run/wgkeeper-tests", 0o755)
        guard let made = mkdtemp(&template) else { throw XCTSkip("cannot create a directory under /run/wgkeeper-tests") }
        base = String(cString: made)
        chmod(base, 0o755)
    }

    override func tearDown() {
        rmdir(base + "/dir")
        rmdir(base)
    }

    func testDirectoryClosedToTheGroup() throws {
        let group: gid_t = 4242
        let access = StatusAccess(group: (group, "wgstat"))
        let directory = base + "/dir"
        XCTAssertEqual(mkdir(directory, 0o750), 0)
        chmod(directory, 0o750)
        let closed = access.directoryClosedToGroup(socketPath: directory + "/status.sock")
        XCTAssertEqual(closed?.path, directory, "0750 in another group keeps the group out")
        XCTAssertEqual(closed?.mode, 0o750)

        chmod(directory, 0o755)
        XCTAssertNil(access.directoryClosedToGroup(socketPath: directory + "/status.sock"), "others may search 0755")

        chmod(directory, 0o750)
        if chown(directory, UInt32.max, group) == 0 {
            XCTAssertNil(access.directoryClosedToGroup(socketPath: directory + "/status.sock"), "0750 in the group lets it through")
        }
        XCTAssertNil(StatusAccess(group: nil).directoryClosedToGroup(socketPath: directory + "/status.sock"), "no group, no warning")
    }
}
