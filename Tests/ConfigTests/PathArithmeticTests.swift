import Config
import Foundation
import XCTest

/// Config's replacements for NSString's path methods (FoundationEssentials has none) give what
/// NSString gives, except where NSString traps or turns `//` into nothing.
final class PathArithmeticTests: XCTestCase {
    func testDeletingLastPathComponentAgreesWithNSString() {
        let paths = ["", "/", "/a", "/a/", "a/b", "a//b", "a/b/", "/a/b/c.yaml", "./x", "../x", "..", "//x", "///a",
                     "a/./b", "/tmp/", "a//b//c", "/a//b/c", "/a///b", "ab/", "ab//", "/ab//", "wgkeeper.yaml",
                     "/run/wgkeeper/status.sock", "conf.d/10-alice.yaml"]
        for path in paths {
            XCTAssertEqual(path.deletingLastPathComponent, (path as NSString).deletingLastPathComponent, path)
        }
        // NSString (swift-corelibs-foundation 6.3) traps on these, and gives "" for "//" and "///".
        for (path, parent) in [("a", ""), ("a/", ""), (".", ""), ("x//", ""), ("a///", ""), ("//", "/"), ("///", "/")] {
            XCTAssertEqual(path.deletingLastPathComponent, parent, path)
        }
    }

    func testAppendingPathComponentAgreesWithNSString() {
        let bases = ["", "/", "//", "a", "a/", "/a", "/a/", "a/b", "a//b", "a/b/", ".", "x//", "/tmp/"]
        let components = ["", "/", "f", "f/", "/f", "a/b", "a//b/", "../c", "//", "records.json"]
        for base in bases {
            for component in components {
                XCTAssertEqual(base.appendingPathComponent(component), (base as NSString).appendingPathComponent(component),
                               "\(base) + \(component)")
            }
        }
    }
}
