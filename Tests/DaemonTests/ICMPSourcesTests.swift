@testable import Daemon
import Netlink
import Reconciler
import XCTest

/// Where the datapath's ICMPv6 errors come from, as status, the log and `check` say it.
final class ICMPSourcesTests: XCTestCase {
    let lan = Link(index: 2, name: "private0")
    let tunnel = Link(index: 3, name: "wg0")
    let held = [Address(prefix: IPPrefix("2001:db8:1::1/128")!, interfaceIndex: 2)]

    func testAConfiguredSourceTheHostDoesNotHoldIsUsedAndSaidSo() {
        let wanted = DatapathICMP(sourceLAN: IPAddress("2001:db8:1::99"), sourceTunnel: IPAddress("2001:db8:1::1"))
        let (settings, lanLine, tunnelLine) = ICMPSources.settings(wanted, lan: lan, tunnel: tunnel, addresses: held)
        XCTAssertEqual(settings.lanSource, IPv6Address("2001:db8:1::99"))
        XCTAssertEqual(lanLine, "from 2001:db8:1::99 (icmp_source_lan), which is not an address of this host: add it to an interface, or change gateway.icmp_source_lan")
        XCTAssertEqual(tunnelLine, "from 2001:db8:1::1 (icmp_source_tunnel)")
        // `check` on the gateway (its LAN is there) warns; elsewhere it cannot know.
        XCTAssertEqual(ICMPSources.missing(wanted, lan: "private0", tunnel: "wg0", links: [lan, tunnel], addresses: held),
                       ["ICMPv6 errors to the LAN: \(lanLine)"])
        XCTAssertEqual(ICMPSources.missing(wanted, lan: "private0", tunnel: "wg0", links: [], addresses: []), [])
    }

    func testSourcesFoundOnTheInterfaces() {
        let (settings, lanLine, tunnelLine) = ICMPSources.settings(DatapathICMP(), lan: lan, tunnel: tunnel, addresses: held)
        XCTAssertEqual(settings.lanSource, IPv6Address("2001:db8:1::1"))
        XCTAssertEqual(lanLine, "from 2001:db8:1::1 (found on private0)")
        XCTAssertEqual(tunnelLine, "from 2001:db8:1::1 (found on wg0 or private0)")
        XCTAssertEqual(ICMPSources.missing(DatapathICMP(), lan: "private0", tunnel: "wg0", links: [lan, tunnel], addresses: held), [])
    }
}
