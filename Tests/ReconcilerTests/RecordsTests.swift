import Foundation
import Netlink
import Reconciler
import XCTest

final class RecordsTests: XCTestCase {
    func testPeersFollowTheirDeviceThroughARenameAndGoWithIt() {
        var records = Records()
        XCTAssertTrue(records.recordPeers([F.alice.publicKey, F.bob.publicKey], device: "wg0", interfaceIndex: 5))
        XCTAssertFalse(records.recordPeers([F.alice.publicKey], device: "wg0", interfaceIndex: 5), "already recorded")
        XCTAssertTrue(records.configuredPeer(F.bob.publicKey, device: "wg0"))
        XCTAssertFalse(records.configuredPeer(F.key(9), device: "wg0"))

        XCTAssertTrue(records.follow([Link(index: 5, name: "vpn0", kind: "wireguard")]))
        XCTAssertEqual(records.peers, ["vpn0": [F.alice.publicKey.base64, F.bob.publicKey.base64]])
        XCTAssertFalse(records.isEmpty)

        // A new device under the old index's name is not the one recorded.
        XCTAssertTrue(records.follow([Link(index: 9, name: "vpn0", kind: "wireguard")]))
        XCTAssertEqual(records.peers, [:])
        XCTAssertTrue(records.isEmpty)
    }

    func testForgetPeersKeepsOnlyThoseStillThere() {
        var records = Records(peers: ["wg0": [F.alice.publicKey.base64, F.bob.publicKey.base64]])
        XCTAssertTrue(records.forgetPeers(device: "wg0") { $0 == F.alice.publicKey.base64 })
        XCTAssertEqual(records.peers, ["wg0": [F.alice.publicKey.base64]])
        XCTAssertFalse(records.forgetPeers(device: "wg0") { _ in true })
        XCTAssertTrue(records.forgetPeers(device: "wg0") { _ in false })
        XCTAssertEqual(records.peers, [:], "a device with no recorded peer left is dropped")
    }

    func testRecordsWrittenBeforePeersWereRecordedStillLoad() throws {
        let old = #"{"sysctls":{"net/ipv6/conf/lan0/forwarding":"0"},"createdDevices":["wg0"],"interfaceIndexes":{"lan0":3}}"#
        let records = try JSONDecoder().decode(Records.self, from: Data(old.utf8))
        XCTAssertEqual(records.peers, [:])
        XCTAssertEqual(records.sysctls, ["net/ipv6/conf/lan0/forwarding": "0"])
        let again = try JSONDecoder().decode(Records.self, from: JSONEncoder().encode(
            Records(peers: ["wg0": [F.alice.publicKey.base64]])))
        XCTAssertEqual(again.peers, ["wg0": [F.alice.publicKey.base64]])
    }

    func testOnlyWhatWgkeeperCouldHaveWrittenIsAccepted() {
        XCTAssertNil(Records(sysctls: ["net/ipv6/conf/eth0.100/forwarding": "0", "net/ipv6/conf/lan0/proxy_ndp": "2"],
                             createdDevices: ["wg0"], peers: ["wg0": [F.alice.publicKey.base64]]).problem)
        for sysctls in [["net/ipv6/conf/all/forwarding": "1"], ["net/ipv6/conf/default/forwarding": "0"],
                        ["net/ipv4/ip_forward": "1"], ["net/ipv6/conf/lan0/accept_ra": "0"],
                        ["net/ipv6/conf/lan0/forwarding": "1\n"], ["net/ipv6/conf/lan0/forwarding": ""],
                        ["net/ipv6/conf/../forwarding": "0"]] {
            XCTAssertNotNil(Records(sysctls: sysctls).problem, "\(sysctls)")
        }
        XCTAssertNotNil(Records(createdDevices: ["a/b"]).problem)
        XCTAssertNotNil(Records(createdDevices: ["sixteen-chars-xx"]).problem)
        XCTAssertNotNil(Records(peers: ["wg0": ["not a key"]]).problem)
    }
}
