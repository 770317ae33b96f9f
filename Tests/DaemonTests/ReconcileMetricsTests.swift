@testable import Daemon
import Netlink
import Reconciler
import XCTest

/// What the daemon counts about its reconciles: which applied changes count as repairs, and the
/// duration histogram status reports.
final class ReconcileMetricsTests: XCTestCase {
    private let forwarding = Change(.replace, .sysctl(Sysctl("net.ipv6.conf.private0.forwarding"), value: "1", previous: "0"),
                                    reason: .differs(["value"]))
    private let up = Change(.replace, .link(name: "wg0", .setUp(index: 3)), reason: .differs(["up"]))
    private let key = WireGuardKey(base64: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")!

    private func peer(_ reason: Change.Reason) -> Change {
        Change(reason == .missing ? .add : .replace,
               .peer(device: "wg0", name: "alice", WireGuardPeerChange(publicKey: key), hostEndpoint: HostEndpoint(host: "vpn.example", port: 51820)),
               reason: reason)
    }

    func testWritesOfAStartOrAReloadAreNoRepairs() {
        var m = ReconcileMetrics()
        m.begin(generation: 1, previous: Plan(), failing: [])
        m.applied(forwarding)
        m.applied(up)
        XCTAssertEqual(m.applied, [.sysctl: 1, .link: 1])
        XCTAssertEqual(m.repairs, [:], "the first reconcile of a start follows the configuration")
        m.begin(generation: 1, previous: Plan(), failing: [])
        m.applied(forwarding)
        XCTAssertEqual(m.repairs, [.sysctl: 1], "in sync before, written again: drift repaired")
        m.begin(generation: 2, previous: Plan(), failing: [])
        m.applied(forwarding)
        XCTAssertEqual(m.repairs, [.sysctl: 1], "the reload's own reconcile repairs nothing")
        XCTAssertEqual(m.applied, [.sysctl: 3, .link: 1])
    }

    func testRetriesPendingRefusedAndReresolvedAreNoRepairs() {
        var m = ReconcileMetrics()
        m.begin(generation: 1, previous: Plan(), failing: [])
        var previous = Plan()
        previous.changes = [up]
        m.begin(generation: 1, previous: previous, failing: [forwarding.subject])
        m.applied(up)
        m.applied(forwarding)
        XCTAssertEqual(m.repairs, [:], "an unwritten or failed change that goes through is a retry")

        previous = Plan()
        previous.pending = [Pending(kind: .sysctl, object: "sysctl net.ipv6.conf.private0.forwarding", reason: "device private0 missing")]
        previous.refused = [Refusal(kind: .link, object: "x", reason: "y")]
        m.begin(generation: 1, previous: previous, failing: [])
        m.applied(forwarding)
        m.applied(up)
        XCTAssertEqual(m.repairs, [:], "a kind with pending or refused objects: their writes are not drift")

        m.begin(generation: 1, previous: Plan(), failing: [])
        m.applied(peer(.differs(["endpoint"])))
        XCTAssertEqual(m.repairs, [:], "a host-name endpoint looked up again is not drift")
        m.applied(peer(.missing))
        XCTAssertEqual(m.repairs, [.peer: 1], "a peer removed behind wgkeeper's back and put back is")
    }

    func testHistogramIsCumulative() {
        var m = ReconcileMetrics()
        for micros in [100, 400, 700, 3000, 20_000_000] { m.end(duration: .microseconds(micros)) }
        let h = m.histogram
        XCTAssertEqual(h.upperBoundsSeconds, ReconcileMetrics.bounds)
        XCTAssertEqual(h.count, 5)
        XCTAssertEqual(h.sumSeconds, 20.0042, accuracy: 1e-9)
        XCTAssertEqual(Array(h.cumulativeCounts.prefix(4)), [2, 3, 3, 4], "≤0.5 ms, ≤1 ms, ≤2.5 ms, ≤5 ms")
        XCTAssertEqual(h.cumulativeCounts.last, 4, "20 s is above every bound: only +Inf (count) holds it")
    }
}
