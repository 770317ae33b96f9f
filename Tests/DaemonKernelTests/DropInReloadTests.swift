import Foundation
import Glibc
import Netlink
import TestSupport
import XCTest

/// A gateway whose peers live one per file in `include_dir`, the layout a reload reads as a
/// delta told by the directory's watch: edits by rename (as editors and `install` write), in
/// place, a file added and one removed in one reload, a peer behind a symbolic link whose
/// target is rewritten in place. After each reload the kernel, read with iproute2, holds what
/// the files say, only the changed peers' objects were written, and the read was a delta
/// (`config_deltas`).
final class DropInReloadTests: XCTestCase {
    func testDropInEditsReachTheKernel() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let confD = h.directory.appendingPathComponent("conf.d").path
        try FileManager.default.createDirectory(atPath: confD, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let keys = (0..<40).map { _ in PrivateKey.generate().publicKey }
        var address: [Int: Int] = [:]
        func text(_ peer: Int) -> String {
            "wireguard:\n  wg0:\n    peers:\n      - {name: c\(peer), public_key: \"\(keys[peer].base64)\", allowed_ips: [\"2001:db8:1::\(String(address[peer]!, radix: 16))/128\"]}\n"
        }
        func path(_ name: String) -> String { confD + "/" + name }
        for peer in 0..<30 {
            address[peer] = 0x100 + peer
            try text(peer).write(toFile: path(String(format: "%02d.yaml", peer)), atomically: false, encoding: .utf8)
        }
        try h.writeConfig(h.gatewayConfig(runtime: ["include_dir: conf.d", "proxy_poll: 200ms", "resync: 600s"], peers: [],
                                          gateway: ["redirect: false"]))
        try h.start()

        func routes() throws -> Set<String> {
            Set(try ns.ipJSON("-6", "route", "show", "dev", "wg0", "proto", "77").map { $0["dst"] as! String })
        }
        func proxies() throws -> Set<String> { Set(try ns.ipJSON("-6", "neigh", "show", "proxy").compactMap { $0["dst"] as? String }) }
        func expected() -> Set<String> { Set(address.values.map { "2001:db8:1::\(String($0, radix: 16))" }) }
        func reload(_ what: String, writes: Int, file: StaticString = #filePath, line: UInt = #line) throws {
            let before = try h.writes()
            let deltas = try XCTUnwrap(try h.status()["config_deltas"] as? Int)
            let output = try h.ask("reload")["output"] as? String ?? ""
            XCTAssertFalse(output.contains("error"), "\(what): \(output)", file: file, line: line)
            XCTAssertEqual(try h.status()["config_deltas"] as? Int, deltas + 1, "\(what): read as a delta", file: file, line: line)
            XCTAssertEqual(try routes(), expected(), what, file: file, line: line)
            XCTAssertEqual(try proxies(), expected(), what, file: file, line: line)
            XCTAssertEqual(try h.writes() - before, writes, "\(what): only the changed peers' routes and proxy entries", file: file, line: line)
        }
        XCTAssertEqual(try routes(), expected())

        // Replaced by rename, with a new address: its route and proxy entry go, new ones come.
        address[5] = 0x205
        try text(5).write(toFile: path(".05.tmp"), atomically: false, encoding: .utf8)
        XCTAssertEqual(rename(path(".05.tmp"), path("05.yaml")), 0)
        try reload("05.yaml replaced by rename", writes: 4)

        // Rewritten in place, same size.
        address[10] = 0x210
        let fd = open(path("10.yaml"), O_WRONLY | O_TRUNC)
        XCTAssertGreaterThanOrEqual(fd, 0)
        _ = text(10).withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
        try reload("10.yaml rewritten in place", writes: 4)

        // One file added, one removed, in one reload.
        address[35] = 0x135
        try text(35).write(toFile: path("35.yaml"), atomically: true, encoding: .utf8)
        address[3] = nil
        try FileManager.default.removeItem(atPath: path("03.yaml"))
        try reload("35.yaml added, 03.yaml removed", writes: 4)

        // A peer behind a symbolic link: its target, outside the directory, rewritten in place
        // (no event reaches the directory's watch).
        let outside = h.directory.appendingPathComponent("outside.yaml").path
        address[36] = 0x136
        try text(36).write(toFile: outside, atomically: false, encoding: .utf8)
        XCTAssertEqual(symlink(outside, path("36.yaml")), 0)
        try reload("36.yaml a symbolic link", writes: 2)
        address[36] = 0x236
        let target = open(outside, O_WRONLY | O_TRUNC)
        XCTAssertGreaterThanOrEqual(target, 0)
        _ = text(36).withCString { Glibc.write(target, $0, strlen($0)) }
        close(target)
        try reload("the link's target rewritten", writes: 4)

        // Nothing changed: nothing written.
        try reload("unchanged", writes: 0)

        // A file system mounted over the directory: the watch, on the directory beneath, no
        // longer tells what the path holds; the reload reads every file.
        // In the daemon's mount namespace (`ip netns exec` gives it one of its own); the test
        // writes through it too.
        let pid = try XCTUnwrap(h.process?.processIdentifier)
        let beneath = address
        _ = try shell("nsenter", "--mount", "--target", "\(pid)", "mount", "-t", "tmpfs", "-o", "mode=0755", "wgk-test", confD)
        func mounted(_ name: String) -> String { "/proc/\(pid)/root" + confD + "/" + name }
        let kept = Array(address.keys)
        for peer in kept where peer != 7 {
            try text(peer).write(toFile: mounted(String(format: "%02d.yaml", peer)), atomically: false, encoding: .utf8)
        }
        address[7] = nil
        let output = try h.ask("reload")["output"] as? String ?? ""
        XCTAssertFalse(output.contains("error"), output)
        XCTAssertEqual(try routes(), expected(), "the mounted directory's files")
        XCTAssertEqual(try proxies(), expected(), "the mounted directory's files")
        address[8] = 0x208
        try text(8).write(toFile: mounted(".08.tmp"), atomically: false, encoding: .utf8)
        XCTAssertEqual(rename(mounted(".08.tmp"), mounted("08.yaml")), 0)
        try reload("then watched again", writes: 4)
        // Unmounted: the directory beneath, as it was, read whole again.
        _ = try shell("nsenter", "--mount", "--target", "\(pid)", "umount", confD)
        address = beneath
        XCTAssertFalse((try h.ask("reload")["output"] as? String ?? "").contains("error"))
        XCTAssertEqual(try routes(), expected(), "the directory beneath")
        XCTAssertEqual(try proxies(), expected(), "the directory beneath")

        // A fresh start of the same files agrees with what the reloads left: nothing to write.
        h.stop()
        let before = try routes()
        try h.start()
        XCTAssertEqual(try routes(), before)
        XCTAssertEqual(try h.writes(), 0, "a fresh start of the same files writes nothing")
    }
}

extension DropInReloadTests {
    /// As the system tier does: an include directory empty at the start, then a file of proxy
    /// entries (no delta), then a broken file (refused), then removed.
    func testOtherSectionsInADropInAfterAnEmptyStart() throws {
        let ns = try TestNamespace(for: self)
        try ns.addGatewayDevices(lanAddress: "2001:db8:1::1/128")
        let h = try DaemonHarness(self, ns: ns)
        let confD = h.directory.appendingPathComponent("conf.d").path
        try FileManager.default.createDirectory(atPath: confD, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
        try h.writeConfig(h.gatewayConfig(runtime: ["include_dir: conf.d", "proxy_poll: 200ms"],
                                          peers: [TestPeer("alice", PrivateKey.generate().publicKey, allowedIPs: ["2001:db8:1::100/128"])],
                                          gateway: ["redirect: false"]))
        try h.start()
        try "proxies:\n  - address: 2001:db8:1::200\n    device: private0\n".write(toFile: confD + "/extra.yaml", atomically: false, encoding: .utf8)
        let output = try h.ask("reload")["output"] as? String ?? ""
        XCTAssertTrue(output.contains("reloaded"), output)
        let proxies = Set(try ns.ipJSON("-6", "neigh", "show", "proxy").compactMap { $0["dst"] as? String })
        XCTAssertTrue(proxies.contains("2001:db8:1::200"), "\(proxies)")
        try "proxies:\n  - address: nowhere\n    device: private0\n".write(toFile: confD + "/broken.yaml", atomically: false, encoding: .utf8)
        // Refused: `wgkeeper reload` exits 1 with the errors.
        var refused = ""
        do { refused = try h.ask("reload")["output"] as? String ?? "" } catch { refused = "\(error)" }
        XCTAssertTrue(refused.contains("broken.yaml:2:"), refused)
    }
}
