import Foundation
import Glibc

/// A new directory for one test's configuration and key files, under a parent that passes
/// wgkeeper's StrictModes-like check: /tmp is sticky but world-writable, so the loader refuses
/// everything under it. As root the parent is /run/wgkeeper-tests (0755, root's); otherwise
/// ~/.cache/wgkeeper-tests (the user running the check is trusted like root).
public func scratchDirectory(_ prefix: String) throws -> String {
    let parent = geteuid() == 0 ? "/run/wgkeeper-tests" : NSHomeDirectory() + "/.cache/wgkeeper-tests"
    try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    guard chmod(parent, 0o755) == 0 else { throw TestFailure("chmod \(parent): \(String(cString: strerror(errno)))") }
    let directory = parent + "/\(prefix)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
    return directory
}
