import Config
import Foundation
import Glibc
import TestSupport
import XCTest

/// Key files and configuration files are trusted only when nobody but root (or the user running
/// the check) could have written them, like sshd's StrictModes, and a key-file field's value is
/// never repeated in an error. Ownership by another user is in `FileOwnershipKernelTests`.
final class FileTrustTests: XCTestCase {
    private var fixture: ConfigFixture!

    override func setUpWithError() throws { fixture = try ConfigFixture(for: self) }

    private func errors(replacing old: String, with new: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        XCTAssertTrue(AcceptedConfigs.base.contains(old), file: file, line: line)
        return try fixture.errors(AcceptedConfigs.base.replacingOccurrences(of: old, with: new), file: file, line: line)
    }

    // MARK: key files

    func testPastedKeyIsNeverRepeated() throws {
        let secret = PrivateKeyText.sample
        let errors = try errors(replacing: "private_key_file: wg0.key", with: "private_key_file: \(secret)")
        XCTAssertEqual(errors, [
            "wgkeeper.yaml:8:23: private_key_file: looks like a key, not a file name (put the key in a file, chmod 600, and name that file here)",
        ])
        XCTAssertEqual(try self.errors(replacing: "preshared_key_file: alice.psk", with: "preshared_key_file: \"\(secret)\""), [
            "wgkeeper.yaml:14:29: preshared_key_file: looks like a key, not a file name (put the key in a file, chmod 600, and name that file here)",
        ])
        // Half a key is no file name either, and is not repeated.
        let half = String(secret.prefix(22))
        let missing = try self.errors(replacing: "private_key_file: wg0.key", with: "private_key_file: \(half)")
        XCTAssertEqual(missing, ["wgkeeper.yaml:8:23: private_key_file: cannot read the key file: No such file or directory"])
    }

    func testKeyFileWithGroupOrOtherBits() throws {
        try fixture.writeKey("written.key", mode: 0o620)
        try fixture.writeKey("run.key", mode: 0o601)
        XCTAssertEqual(try errors(replacing: "private_key_file: wg0.key", with: "private_key_file: written.key"), [
            "wgkeeper.yaml:8:23: private_key_file: the key file is writable or executable by group or others (mode 0620); run chmod 600 on it",
        ])
        XCTAssertEqual(try errors(replacing: "preshared_key_file: alice.psk", with: "preshared_key_file: run.key"), [
            "wgkeeper.yaml:14:29: preshared_key_file: the key file is writable or executable by group or others (mode 0601); run chmod 600 on it",
        ])
    }

    func testKeyFileMustBeARegularFile() throws {
        XCTAssertEqual(try errors(replacing: "private_key_file: wg0.key", with: "private_key_file: /dev/null"), [
            "wgkeeper.yaml:8:23: private_key_file: the key file is not a regular file",
        ])
    }

    // MARK: configuration files

    func testConfigurationFileWritableByGroupOrOthers() throws {
        try fixture.write("wgkeeper.yaml", AcceptedConfigs.base)
        for bits: mode_t in [0o664, 0o646, 0o620] {
            try fixture.chmod("wgkeeper.yaml", bits)
            XCTAssertEqual(fixture.errorsLoading(), [
                "wgkeeper.yaml:1:1: the file is writable by group or others (mode 0\(String(bits, radix: 8))); run chmod go-w on it",
            ])
        }
        // Readable by everyone is fine: the configuration holds no secret.
        try fixture.chmod("wgkeeper.yaml", 0o644)
        XCTAssertEqual(fixture.errorsLoading(), [])
    }

    func testSymlinkedConfigurationIsJudgedByItsTargetAndBothDirectories() throws {
        // Relative paths in it stay relative to the name it was given by.
        try fixture.write("real/wgkeeper.yaml", AcceptedConfigs.base)
        try FileManager.default.createSymbolicLink(atPath: fixture.path("wgkeeper.yaml"), withDestinationPath: "real/wgkeeper.yaml")
        try fixture.chmod("real/wgkeeper.yaml", 0o666)
        XCTAssertEqual(fixture.errorsLoading(), ["wgkeeper.yaml:1:1: the file is writable by group or others (mode 0666); run chmod go-w on it"])
        try fixture.chmod("real/wgkeeper.yaml", 0o644)
        try fixture.chmod("real", 0o777)
        XCTAssertEqual(fixture.errorsLoading(), [
            "wgkeeper.yaml:1:1: directory real is writable by group or others (mode 0777); run chmod go-w on it",
        ])
        try fixture.chmod("real", 0o755)
        XCTAssertEqual(fixture.errorsLoading(), [])
    }

    func testSymlinkedIncludeFileIsJudgedByItsTarget() throws {
        let main = "runtime:\n  include_dir: conf.d\n" + AcceptedConfigs.minimal
        try fixture.write("elsewhere/carol.yaml", AcceptedConfigs.includeFragment)
        try FileManager.default.createDirectory(atPath: fixture.path("conf.d"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: fixture.path("conf.d/carol.yaml"), withDestinationPath: "../elsewhere/carol.yaml")
        try fixture.chmod("elsewhere", 0o777)
        XCTAssertEqual(try fixture.errors(main), [
            "conf.d/carol.yaml:1:1: directory elsewhere is writable by group or others (mode 0777); run chmod go-w on it",
        ])
        try fixture.chmod("elsewhere", 0o755)
        XCTAssertEqual(try fixture.loaded(main).desired.peerCount, 1)
    }
}

/// Every directory on the path of a configuration or key file, and on each symbolic link's
/// path, hop by hop: not only the first link's directory and the final target's.
final class PathTrustTests: XCTestCase {
    private var fixture: ConfigFixture!

    override func setUpWithError() throws { fixture = try ConfigFixture(for: self) }

    func testEveryHopOfALinkChainIsChecked() throws {
        // conf.d/chain.yaml → ww/link.yaml (in a 0777 directory) → ok.yaml
        let main = "runtime:\n  include_dir: conf.d\n" + AcceptedConfigs.minimal
        try fixture.write("ok.yaml", AcceptedConfigs.includeFragment)
        try FileManager.default.createDirectory(atPath: fixture.path("ww"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: fixture.path("conf.d"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: fixture.path("ww/link.yaml"), withDestinationPath: fixture.path("ok.yaml"))
        try FileManager.default.createSymbolicLink(atPath: fixture.path("conf.d/chain.yaml"), withDestinationPath: fixture.path("ww/link.yaml"))
        try fixture.chmod("ww", 0o777)
        XCTAssertEqual(try fixture.errors(main), [
            "conf.d/chain.yaml:1:1: directory ww is writable by group or others (mode 0777); run chmod go-w on it",
        ])
        try fixture.chmod("ww", 0o755)
        XCTAssertEqual(try fixture.loaded(main).desired.peerCount, 1)
    }

    func testAnAncestorOfTheMainFileIsChecked() throws {
        try fixture.write("a/b/wgkeeper.yaml", AcceptedConfigs.base.replacingOccurrences(of: "wg0.key", with: "../../wg0.key")
            .replacingOccurrences(of: "alice.psk", with: "../../alice.psk"))
        try fixture.chmod("a", 0o757)
        XCTAssertEqual(fixture.errorsLoading("a/b/wgkeeper.yaml"), [
            "a/b/wgkeeper.yaml:1:1: directory a is writable by group or others (mode 0757); run chmod go-w on it",
        ])
        try fixture.chmod("a", 0o755)
        XCTAssertEqual(fixture.errorsLoading("a/b/wgkeeper.yaml"), [])
    }

    func testAKeyFileUnderAWritableAncestorIsRefusedWithoutNamingIt() throws {
        try fixture.writeKey("keys/inner/wg0.key")
        try fixture.chmod("keys", 0o777)
        XCTAssertEqual(try fixture.errors(AcceptedConfigs.base.replacingOccurrences(of: "private_key_file: wg0.key", with: "private_key_file: keys/inner/wg0.key")), [
            "wgkeeper.yaml:8:23: private_key_file: a directory on the key file's path is writable by group or others (mode 0777); run chmod go-w on it",
        ])
    }

    func testALinkLoopStopsAtTheHopLimit() throws {
        try FileManager.default.createSymbolicLink(atPath: fixture.path("loop.yaml"), withDestinationPath: "loop.yaml")
        XCTAssertEqual(fixture.errorsLoading("loop.yaml"), [
            "loop.yaml:1:1: more than 40 symbolic links on the path (a loop?)",
            // The file is still opened for its own errors, as under any untrusted directory.
            "loop.yaml:1:1: cannot read the file: Too many levels of symbolic links",
        ])
    }

    func testTmpIsRefused() throws {
        let directory = NSTemporaryDirectory() + "wgk-tmp-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try AcceptedConfigs.minimal.write(toFile: directory + "/wgkeeper.yaml", atomically: false, encoding: .utf8)
        guard case .failure(let errors) = ConfigLoader().load(path: directory + "/wgkeeper.yaml") else { return XCTFail("accepted under /tmp") }
        XCTAssertEqual(errors.errors.first?.message, "directory /tmp is writable by group or others (mode 1777); run chmod go-w on it")
    }
}

/// The same rules for files and directories that belong to another user (uid 65534), and for
/// root's sticky directories. Named for the root tier (`make test-kernel`): chown needs root,
/// and these tests fail rather than skip without it.
final class FileOwnershipKernelTests: XCTestCase {
    private var fixture: ConfigFixture!

    override func setUpWithError() throws { fixture = try ConfigFixture(for: self) }

    private func errors(replacing old: String, with new: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        XCTAssertTrue(AcceptedConfigs.base.contains(old), file: file, line: line)
        return try fixture.errors(AcceptedConfigs.base.replacingOccurrences(of: old, with: new), file: file, line: line)
    }

    func testKeyFileOwnedByAnotherUser() throws {
        try fixture.writeKey("other.key")
        try fixture.giveToNobody("other.key")
        XCTAssertEqual(try errors(replacing: "private_key_file: wg0.key", with: "private_key_file: other.key"), [
            "wgkeeper.yaml:8:23: private_key_file: the key file belongs to uid 65534, not to root; run chown root on it",
        ])
    }

    func testKeyFileSymlinkIsJudgedByItsTarget() throws {
        try fixture.writeKey("other.key")
        try fixture.giveToNobody("other.key")
        try FileManager.default.createSymbolicLink(atPath: fixture.path("bad-link.key"), withDestinationPath: "other.key")
        try FileManager.default.createSymbolicLink(atPath: fixture.path("good-link.key"), withDestinationPath: "wg0.key")
        XCTAssertEqual(try errors(replacing: "private_key_file: wg0.key", with: "private_key_file: bad-link.key"), [
            "wgkeeper.yaml:8:23: private_key_file: the key file belongs to uid 65534, not to root; run chown root on it",
        ])
        XCTAssertNoThrow(try fixture.loaded(AcceptedConfigs.base.replacingOccurrences(of: "private_key_file: wg0.key", with: "private_key_file: good-link.key")))
    }

    func testConfigurationFileOwnedByAnotherUser() throws {
        try fixture.write("wgkeeper.yaml", AcceptedConfigs.base)
        try fixture.giveToNobody("wgkeeper.yaml")
        XCTAssertEqual(fixture.errorsLoading(), [
            "wgkeeper.yaml:1:1: the file belongs to uid 65534, not to root (whoever can write it controls the gateway); run chown root on it",
        ])
    }

    func testDirectoryHoldingTheConfiguration() throws {
        try fixture.write("wgkeeper.yaml", AcceptedConfigs.base)
        try fixture.chmod(".", 0o775)
        XCTAssertEqual(fixture.errorsLoading(), [
            "wgkeeper.yaml:1:1: directory \(fixture.directory) is writable by group or others (mode 0775); run chmod go-w on it",
        ])
        // Sticky and root's like /tmp is not enough: anyone may create what a later path passes through.
        try fixture.chmod(".", 0o1777)
        XCTAssertEqual(fixture.errorsLoading(), [
            "wgkeeper.yaml:1:1: directory \(fixture.directory) is writable by group or others (mode 1777); run chmod go-w on it",
        ])
        try fixture.chmod(".", 0o755)
        try fixture.giveToNobody(".")
        XCTAssertEqual(fixture.errorsLoading(), [
            "wgkeeper.yaml:1:1: directory \(fixture.directory) belongs to uid 65534, not to root (whoever can write it controls the gateway); run chown root on it",
        ])
    }

    func testIncludeDirectoryAndItsFiles() throws {
        let main = "runtime:\n  include_dir: conf.d\n" + AcceptedConfigs.minimal
        try fixture.write("conf.d/carol.yaml", AcceptedConfigs.includeFragment)
        try fixture.chmod("conf.d", 0o1777)
        XCTAssertEqual(try fixture.errors(main), [
            "wgkeeper.yaml:2:16: include_dir: directory conf.d is writable by group or others (mode 1777); run chmod go-w on it",
        ])
        try fixture.chmod("conf.d", 0o755)
        try fixture.giveToNobody("conf.d/carol.yaml")
        XCTAssertEqual(try fixture.errors(main), [
            "conf.d/carol.yaml:1:1: the file belongs to uid 65534, not to root (whoever can write it controls the gateway); run chown root on it",
        ])
        try fixture.giveToNobody("conf.d")
        XCTAssertEqual(try fixture.errors(main), [
            "wgkeeper.yaml:2:16: include_dir: directory conf.d belongs to uid 65534, not to root (whoever can write it controls the gateway); run chown root on it",
        ])
    }
}

extension ConfigFixture {
    /// Loads the configuration already on disk (so its owner and mode stay as the test set them).
    func errorsLoading(_ name: String = "wgkeeper.yaml") -> [String] {
        switch ConfigLoader().load(path: path(name)) {
        case .success: return []
        case .failure(let errors): return errors.errors.map { $0.description.replacingOccurrences(of: directory + "/", with: "") }
        }
    }

    func giveToNobody(_ name: String) throws {
        guard chown(path(name), 65534, 65534) == 0 else {
            throw TestFailure("chown 65534 \(name): \(String(cString: strerror(errno))); this test needs root")
        }
    }

    func chmod(_ name: String, _ mode: mode_t) throws {
        guard Glibc.chmod(path(name), mode) == 0 else { throw TestFailure("chmod \(name): \(String(cString: strerror(errno)))") }
    }
}

enum PrivateKeyText {
    /// A private key as `wg genkey` prints it.
    static let sample = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
}
