@testable import Daemon
import Foundation
import TestSupport
import XCTest

/// `status --format prometheus`: the exposition rendered from a status reply, as the client
/// decodes it off the socket.
final class PrometheusTextTests: XCTestCase {
    static let keys = ["xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
                       "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="]

    /// A reply as the daemon writes it (snake-case keys), with a peer the configuration does not
    /// name and a safety check name holding every character a label value must escape.
    static let reply = """
    {"version":"0.1.0-dev","pid":42,"config_generation":3,"config_files":["/etc/wgkeeper/wgkeeper.yaml"],
     "config_errors":["wgkeeper.yaml:4:7: unknown key"],"last_reconcile":1700000000.5,"last_reconcile_duration_ms":1.25,
     "reconciles":7,"netlink_writes":12,"changes_applied":9,"resyncs":2,"overflows":1,"reloads":2,
     "status_socket":{"clients":1,"refused":3,"evicted":0},"log_lines_dropped":4,
     "kinds":{"link":{"in_sync":1,"pending":0,"failed":0,"conflict":0,"refused":0},
              "sysctl":{"in_sync":1,"pending":0,"failed":0,"conflict":0,"refused":1},
              "peer":{"in_sync":2,"pending":1,"failed":0,"conflict":0,"refused":0},
              "route":{"in_sync":3,"pending":0,"failed":1,"conflict":1,"refused":0},
              "proxy":{"in_sync":2,"pending":0,"failed":0},
              "datapath":{"in_sync":4,"pending":0,"failed":0,"conflict":0,"refused":0}},
     "failed":[{"kind":"route","object":"route 2001:db8:2::/64 dev wg0","error":"File exists","attempts":2,"next_retry_in_seconds":3}],
     "pending":[],"conflicts":["route 2001:db8:3::/64 held by proto static"],"refused":[],
     "peers":[{"device":"wg0","name":"bob","public_key":"\(keys[1])","received_bytes":0,"transmitted_bytes":0},
              {"device":"wg0","name":"alice-laptop","public_key":"\(keys[0])","endpoint":"[2001:db8:ff::2]:51820",
               "latest_handshake":1700000090,"received_bytes":1234,"transmitted_bytes":18446744073709551615},
              {"device":"wg0","public_key":"\(keys[2])","received_bytes":1,"transmitted_bytes":2}],
     "endpoints":[{"endpoint":"vpn.example:51820","state":"resolved","address":"[2001:db8::1]:51820"},
                  {"endpoint":"gone.example:51820","state":"unresolved","error":"Name or service not known"}],
     "datapath":{"attach_mode":"tcx","counters":{"tunnel_to_lan":20,"lan_to_tunnel":10,"rate_limited":0},
                 "programs":{"lan_ingress":11},"icmp_errors":{"lan":"from fe80::1"},
                 "neighbour_discovery":"answered by lan_ingress for 3 addresses","solicited_node_groups":{"joined":2,"not_joined":1}},
     "safety":[{"name":"net.ipv6.conf.all.forwarding","ok":true,"detail":"is 0, must be 0"},
               {"name":"odd \\"check\\" \\\\ name\\nline","ok":false,"detail":""}],
     "reconcile_duration":{"upper_bounds_seconds":[0.0005,0.01,2.5],"cumulative_counts":[4,6,6],"sum_seconds":2.75,"count":7},
     "changes_applied_by_kind":{"link":1,"sysctl":1,"peer":2,"route":4,"proxy":1,"datapath":0},
     "repairs":{"link":0,"sysctl":0,"peer":0,"route":2,"proxy":0,"datapath":0},"reload_failures":1}
    """

    static func decode(_ json: String) throws -> StatusReport {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(StatusReport.self, from: Data(json.utf8))
    }

    func testGolden() throws {
        let text = PrometheusText.render(try Self.decode(Self.reply), now: 1700000100)
        XCTAssertEqual(text, Self.golden)
        if text != Self.golden {
            for (got, want) in zip(text.split(separator: "\n"), Self.golden.split(separator: "\n")) where got != want {
                XCTFail("first difference: got \(got), want \(want)")
                break
            }
        }
    }

    func testValidExpositionWithoutKeyMaterial() throws {
        let text = PrometheusText.render(try Self.decode(Self.reply), now: 1700000100)
        let exposition = try PrometheusExposition(text)
        XCTAssertEqual(exposition.types.count, exposition.help.count, "HELP and TYPE for every family")
        XCTAssertTrue(exposition.types.keys.allSatisfy { $0.hasPrefix("wgkeeper_") })
        for key in Self.keys {
            XCTAssertFalse(text.contains(key), "a public key in the exposition")
            XCTAssertFalse(text.contains(key.prefix(16)), "part of a public key in the exposition")
        }
        XCTAssertFalse(text.contains("2001:db8:ff::2"), "endpoints are not exported")
        // The peer the configuration does not name is counted, never a series of its own.
        XCTAssertEqual(exposition.value("wgkeeper_peers", ["device": "wg0", "configured": "false"]), 1)
        XCTAssertEqual(exposition.values("wgkeeper_peer_receive_bytes_total").count, 2)
        XCTAssertEqual(exposition.value("wgkeeper_peer_latest_handshake_age_seconds", ["device": "wg0", "peer": "bob"]), .infinity)
        // 2^64 - 1 survives as text (a Double would round it).
        XCTAssertTrue(text.contains(#"wgkeeper_peer_transmit_bytes_total{device="wg0",peer="alice-laptop"} 18446744073709551615"#))
    }

    func testLabelValuesAreEscaped() throws {
        let report = try Self.decode(Self.reply)
        let odd = try XCTUnwrap(report.safety.last?.name)
        XCTAssertEqual(odd, "odd \"check\" \\ name\nline")
        let text = PrometheusText.render(report, now: 1700000100)
        XCTAssertTrue(text.contains(#"wgkeeper_safety_check_ok{check="odd \"check\" \\ name\nline"} 0"#), text)
        // Read back, the label is the name it was made from.
        XCTAssertEqual(try PrometheusExposition(text).value("wgkeeper_safety_check_ok", ["check": odd]), 0)
        XCTAssertEqual(PrometheusText.escapeLabel("a\\b\"c\nd\te"), #"a\\b\"c\nd"# + "\te", "a tab stays as it is")
        XCTAssertEqual(PrometheusText.escapeHelp("say \"hi\"\\\n"), #"say "hi"\\\n"#, "HELP keeps double quotes")
    }

    func testNumbers() {
        XCTAssertEqual(PrometheusText.number(0), "0")
        XCTAssertEqual(PrometheusText.number(-3), "-3")
        XCTAssertEqual(PrometheusText.number(0.0005), "0.0005")
        XCTAssertEqual(PrometheusText.number(1700000000.5), "1700000000.5")
        XCTAssertEqual(PrometheusText.number(1e20), "1e+20")
        XCTAssertEqual(PrometheusText.number(.infinity), "+Inf")
        XCTAssertEqual(PrometheusText.number(-.infinity), "-Inf")
        XCTAssertEqual(PrometheusText.number(.nan), "NaN")
        for text in ["0.0005", "1e+20", "+Inf", "NaN", "-3"] {
            XCTAssertNotNil(PrometheusExposition.float(text), text)
        }
    }

    /// A daemon started before the histogram and per-kind counters existed still gives a valid
    /// exposition: those families are left out, and changes applied is one unlabelled total.
    func testReplyOfAnOlderDaemon() throws {
        var json = Self.reply
        for key in ["reconcile_duration", "changes_applied_by_kind", "repairs"] {
            let range = try XCTUnwrap(json.range(of: #""\#(key)":"#))
            let end = try XCTUnwrap(json[range.upperBound...].firstIndex(of: "}"))
            json.removeSubrange(range.lowerBound...json.index(after: end))
        }
        json = json.replacingOccurrences(of: #""reload_failures":1"#, with: #""a_key_from_the_future":1"#)
        let report = try Self.decode(json)
        XCTAssertNil(report.reconcileDuration)
        let exposition = try PrometheusExposition(PrometheusText.render(report, now: 1700000100))
        XCTAssertNil(exposition.types["wgkeeper_reconcile_duration_seconds"])
        XCTAssertNil(exposition.types["wgkeeper_repairs_total"])
        XCTAssertNil(exposition.types["wgkeeper_reload_failures_total"])
        XCTAssertEqual(exposition.value("wgkeeper_changes_applied_total"), 9)
    }

    func testDown() throws {
        XCTAssertEqual(PrometheusText.down(), """
        # HELP wgkeeper_up Whether the daemon answered on its status socket.
        # TYPE wgkeeper_up gauge
        wgkeeper_up 0

        """)
        XCTAssertEqual(try PrometheusExposition(PrometheusText.down()).value("wgkeeper_up"), 0)
    }

    /// The exposition format's own rules, as the test parser enforces them.
    func testParserRefusesInvalidText() {
        for bad in [
            "1metric 1\n", "m{1a=\"x\"} 1\n", "m{__a=\"x\"} 1\n", "m{a=\"x\\q\"} 1\n", "m{a=\"x} 1\n", "m one\n", "m 1",
            "# TYPE m gauge\n# TYPE m gauge\nm 1\n", "m 1\nn 1\nm 2\n", "m 1\nm 1\n", "# TYPE m counter\nm -1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        ] {
            XCTAssertThrowsError(try PrometheusExposition(bad), bad.debugDescription)
        }
        XCTAssertNoThrow(try PrometheusExposition("# a comment\n# HELP m x \\\\ y\n# TYPE m gauge\nm{a=\"\\n\"} 1 1700000000000\n"))
    }

    static let golden = #"""
    # HELP wgkeeper_up Whether the daemon answered on its status socket.
    # TYPE wgkeeper_up gauge
    wgkeeper_up 1
    # HELP wgkeeper_build_info The running daemon's version, as a label.
    # TYPE wgkeeper_build_info gauge
    wgkeeper_build_info{version="0.1.0-dev"} 1
    # HELP wgkeeper_config_generation Configuration generation: 1 at start, one more for each reload that took effect.
    # TYPE wgkeeper_config_generation gauge
    wgkeeper_config_generation 3
    # HELP wgkeeper_config_last_reload_refused 1 while the last reload was refused (the previous generation is enforced), else 0.
    # TYPE wgkeeper_config_last_reload_refused gauge
    wgkeeper_config_last_reload_refused 1
    # HELP wgkeeper_reloads_total Reloads performed (SIGHUP and status socket requests, coalesced).
    # TYPE wgkeeper_reloads_total counter
    wgkeeper_reloads_total 2
    # HELP wgkeeper_reload_failures_total Reloads refused: an invalid configuration or a changed claim.
    # TYPE wgkeeper_reload_failures_total counter
    wgkeeper_reload_failures_total 1
    # HELP wgkeeper_objects Desired objects by kind and state; each is counted once, in_sync only when nothing else holds.
    # TYPE wgkeeper_objects gauge
    wgkeeper_objects{kind="link",state="in_sync"} 1
    wgkeeper_objects{kind="link",state="pending"} 0
    wgkeeper_objects{kind="link",state="failed"} 0
    wgkeeper_objects{kind="link",state="conflict"} 0
    wgkeeper_objects{kind="link",state="refused"} 0
    wgkeeper_objects{kind="sysctl",state="in_sync"} 1
    wgkeeper_objects{kind="sysctl",state="pending"} 0
    wgkeeper_objects{kind="sysctl",state="failed"} 0
    wgkeeper_objects{kind="sysctl",state="conflict"} 0
    wgkeeper_objects{kind="sysctl",state="refused"} 1
    wgkeeper_objects{kind="peer",state="in_sync"} 2
    wgkeeper_objects{kind="peer",state="pending"} 1
    wgkeeper_objects{kind="peer",state="failed"} 0
    wgkeeper_objects{kind="peer",state="conflict"} 0
    wgkeeper_objects{kind="peer",state="refused"} 0
    wgkeeper_objects{kind="route",state="in_sync"} 3
    wgkeeper_objects{kind="route",state="pending"} 0
    wgkeeper_objects{kind="route",state="failed"} 1
    wgkeeper_objects{kind="route",state="conflict"} 1
    wgkeeper_objects{kind="route",state="refused"} 0
    wgkeeper_objects{kind="proxy",state="in_sync"} 2
    wgkeeper_objects{kind="proxy",state="pending"} 0
    wgkeeper_objects{kind="proxy",state="failed"} 0
    wgkeeper_objects{kind="proxy",state="conflict"} 0
    wgkeeper_objects{kind="proxy",state="refused"} 0
    wgkeeper_objects{kind="datapath",state="in_sync"} 4
    wgkeeper_objects{kind="datapath",state="pending"} 0
    wgkeeper_objects{kind="datapath",state="failed"} 0
    wgkeeper_objects{kind="datapath",state="conflict"} 0
    wgkeeper_objects{kind="datapath",state="refused"} 0
    # HELP wgkeeper_reconciles_total Reconciles run: plan against the cached kernel state, then apply.
    # TYPE wgkeeper_reconciles_total counter
    wgkeeper_reconciles_total 7
    # HELP wgkeeper_reconcile_duration_seconds How long each reconcile took, reading the kernel and applying included.
    # TYPE wgkeeper_reconcile_duration_seconds histogram
    wgkeeper_reconcile_duration_seconds_bucket{le="0.0005"} 4
    wgkeeper_reconcile_duration_seconds_bucket{le="0.01"} 6
    wgkeeper_reconcile_duration_seconds_bucket{le="2.5"} 6
    wgkeeper_reconcile_duration_seconds_bucket{le="+Inf"} 7
    wgkeeper_reconcile_duration_seconds_sum 2.75
    wgkeeper_reconcile_duration_seconds_count 7
    # HELP wgkeeper_last_reconcile_timestamp_seconds When the last reconcile ended, in seconds since the epoch.
    # TYPE wgkeeper_last_reconcile_timestamp_seconds gauge
    wgkeeper_last_reconcile_timestamp_seconds 1700000000.5
    # HELP wgkeeper_netlink_writes_total Writes to the kernel: netlink requests, sysctl writes and BPF map updates.
    # TYPE wgkeeper_netlink_writes_total counter
    wgkeeper_netlink_writes_total 12
    # HELP wgkeeper_changes_applied_total Changes the kernel accepted, by kind.
    # TYPE wgkeeper_changes_applied_total counter
    wgkeeper_changes_applied_total{kind="link"} 1
    wgkeeper_changes_applied_total{kind="sysctl"} 1
    wgkeeper_changes_applied_total{kind="peer"} 2
    wgkeeper_changes_applied_total{kind="route"} 4
    wgkeeper_changes_applied_total{kind="proxy"} 1
    wgkeeper_changes_applied_total{kind="datapath"} 0
    # HELP wgkeeper_repairs_total Changes that put back an object that had been in sync (drift repaired), by kind.
    # TYPE wgkeeper_repairs_total counter
    wgkeeper_repairs_total{kind="link"} 0
    wgkeeper_repairs_total{kind="sysctl"} 0
    wgkeeper_repairs_total{kind="peer"} 0
    wgkeeper_repairs_total{kind="route"} 2
    wgkeeper_repairs_total{kind="proxy"} 0
    wgkeeper_repairs_total{kind="datapath"} 0
    # HELP wgkeeper_resyncs_total Full re-reads of the kernel state on the resync timer.
    # TYPE wgkeeper_resyncs_total counter
    wgkeeper_resyncs_total 2
    # HELP wgkeeper_event_overflows_total Kernel event queue overflows (ENOBUFS), each followed by a full re-read.
    # TYPE wgkeeper_event_overflows_total counter
    wgkeeper_event_overflows_total 1
    # HELP wgkeeper_safety_check_ok 1 while the safety check passes, 0 while it fails.
    # TYPE wgkeeper_safety_check_ok gauge
    wgkeeper_safety_check_ok{check="net.ipv6.conf.all.forwarding"} 1
    wgkeeper_safety_check_ok{check="odd \"check\" \\ name\nline"} 0
    # HELP wgkeeper_peers WireGuard peers on each managed device; configured="false": peers the configuration does not name.
    # TYPE wgkeeper_peers gauge
    wgkeeper_peers{device="wg0",configured="true"} 2
    wgkeeper_peers{device="wg0",configured="false"} 1
    # HELP wgkeeper_peer_latest_handshake_age_seconds Seconds since the peer's latest handshake (+Inf: none yet).
    # TYPE wgkeeper_peer_latest_handshake_age_seconds gauge
    wgkeeper_peer_latest_handshake_age_seconds{device="wg0",peer="alice-laptop"} 10
    wgkeeper_peer_latest_handshake_age_seconds{device="wg0",peer="bob"} +Inf
    # HELP wgkeeper_peer_receive_bytes_total Bytes received from the peer, as WireGuard counts them.
    # TYPE wgkeeper_peer_receive_bytes_total counter
    wgkeeper_peer_receive_bytes_total{device="wg0",peer="alice-laptop"} 1234
    wgkeeper_peer_receive_bytes_total{device="wg0",peer="bob"} 0
    # HELP wgkeeper_peer_transmit_bytes_total Bytes sent to the peer, as WireGuard counts them.
    # TYPE wgkeeper_peer_transmit_bytes_total counter
    wgkeeper_peer_transmit_bytes_total{device="wg0",peer="alice-laptop"} 18446744073709551615
    wgkeeper_peer_transmit_bytes_total{device="wg0",peer="bob"} 0
    # HELP wgkeeper_endpoint_names Host-name endpoints by lookup state.
    # TYPE wgkeeper_endpoint_names gauge
    wgkeeper_endpoint_names{state="resolved"} 1
    wgkeeper_endpoint_names{state="resolving"} 0
    wgkeeper_endpoint_names{state="unresolved"} 1
    # HELP wgkeeper_datapath_loaded 1 while the TC redirect programs are loaded and attached.
    # TYPE wgkeeper_datapath_loaded gauge
    wgkeeper_datapath_loaded 1
    # HELP wgkeeper_datapath_info How the TC programs are attached (tcx or clsact), as a label.
    # TYPE wgkeeper_datapath_info gauge
    wgkeeper_datapath_info{attach_mode="tcx"} 1
    # HELP wgkeeper_datapath_packets_total The TC programs' counters, summed over every CPU, by counter.
    # TYPE wgkeeper_datapath_packets_total counter
    wgkeeper_datapath_packets_total{counter="lan_to_tunnel"} 10
    wgkeeper_datapath_packets_total{counter="rate_limited"} 0
    wgkeeper_datapath_packets_total{counter="tunnel_to_lan"} 20
    # HELP wgkeeper_datapath_solicited_node_groups The clients' solicited-node groups on the LAN while the LAN program answers them: joined, or not joined (retried).
    # TYPE wgkeeper_datapath_solicited_node_groups gauge
    wgkeeper_datapath_solicited_node_groups{state="joined"} 2
    wgkeeper_datapath_solicited_node_groups{state="not_joined"} 1
    # HELP wgkeeper_log_lines_dropped_total Log lines dropped because standard error or the journal would have blocked.
    # TYPE wgkeeper_log_lines_dropped_total counter
    wgkeeper_log_lines_dropped_total 4
    # HELP wgkeeper_status_clients Clients connected to the status socket.
    # TYPE wgkeeper_status_clients gauge
    wgkeeper_status_clients 1
    # HELP wgkeeper_status_clients_refused_total Status socket connections refused by the peer-credential check.
    # TYPE wgkeeper_status_clients_refused_total counter
    wgkeeper_status_clients_refused_total 3
    # HELP wgkeeper_status_clients_evicted_total Idle status socket clients closed to make room for new ones.
    # TYPE wgkeeper_status_clients_evicted_total counter
    wgkeeper_status_clients_evicted_total 0

    """#
}
