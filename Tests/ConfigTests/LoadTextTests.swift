import Config
import Foundation
import Netlink
import XCTest

/// `ConfigLoader.load(text:file:)`, the fuzz target's entry: the same checks as a file, and no
/// file is ever opened for the input's sake.
final class LoadTextTests: XCTestCase {
    private func load(_ text: String) -> Result<LoadedConfig, ConfigErrors> {
        ConfigLoader().load(text: Array(text.utf8), file: "input.yaml")
    }

    func testAcceptsWhatAFileAcceptsWithoutItsKeyFiles() throws {
        // wg0.key and alice.psk do not exist here; as bytes, they are not read.
        let loaded = try load(AcceptedConfigs.base).get()
        XCTAssertEqual(loaded.summary, "1 device, 2 peers, 5 routes, 3 proxies")
        XCTAssertEqual(loaded.configuration.files, ["input.yaml"])
    }

    func testNeverReadsAKeyFile() throws {
        let text = AcceptedConfigs.minimal.replacingOccurrences(of: "wg0.key", with: "/etc/passwd")
        let loaded = try load(text).get()
        XCTAssertNotNil(loaded.configuration.devices.first?.privateKey)
        XCTAssertFalse("\(loaded.configuration.devices)".contains("root:"))
    }

    func testErrorsNameTheInput() {
        guard case .failure(let errors) = load("wireguard:\n  wg0:\n    private_key_file: k\n    listen_port: 70000\n") else { return XCTFail() }
        XCTAssertEqual(errors.errors.map(\.description),
                       [#"input.yaml:4:18: listen_port: expected an integer from 1 to 65535, got "70000""#])
    }

    func testRefusesBytesThatAreNotUTF8() {
        guard case .failure(let errors) = ConfigLoader().load(text: [0x72, 0xff, 0x3a], file: "input.yaml") else { return XCTFail() }
        XCTAssertEqual(errors.errors.map(\.description), ["input.yaml:1:2: the file is not UTF-8 (byte 1)"])
        // Where the bad byte is: line 2, after a two-byte character (one column).
        guard case .failure(let later) = ConfigLoader().load(text: Array("a: 1\nb: é".utf8) + [0xc3, 0x28], file: "input.yaml")
        else { return XCTFail() }
        XCTAssertEqual(later.errors.map(\.description), ["input.yaml:2:5: the file is not UTF-8 (byte 10)"])
    }
}
