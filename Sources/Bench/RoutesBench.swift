import Foundation
import Netlink

/// Issue 2's figure (not a row of issue 9's table): N routes through the batched API versus
/// `ip -batch`, fresh namespaces each run.
func benchRoutes(count: Int, runs: Int) throws {
    var ours: [Double] = []
    var iproute: [Double] = []
    let batch = (0..<count).map { "route add \(hostAddress($0))/128 dev veth0 proto 77" }.joined(separator: "\n") + "\n"
    let directory = try scratchDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    let file = directory.appendingPathComponent("routes.batch")
    try batch.write(to: file, atomically: true, encoding: .utf8)
    for _ in 0..<runs {
        try withNamespace { name, _, _ in
            iproute.append(try seconds { try shell(["ip", "-6", "-n", name, "-batch", file.path]) } * 1e3)
        }
        try withNamespace { _, namespace, index in
            let netlink = try namespace.perform { try RTNetlink() }
            let routes = (0..<count).map {
                Route(destination: IPPrefix("\(hostAddress($0))/128")!, protocolNumber: 77, outputInterface: index, metric: 1024)
            }
            var failures = 0
            ours.append(try seconds {
                for case .failure in try netlink.perform(routes.map { $0.addRequest() }) { failures += 1 }
            } * 1e3)
            if failures > 0 { throw BenchError("\(failures) route adds failed") }
        }
    }
    let figure = Figure(row: 0, what: "route writes alone, N = \(count), Netlink module's batched API (issue 2)", unit: "ms",
                        ours: Summary(ours), anchorName: "ip -batch", anchor: Summary(iproute), target: "≤ 1.0×",
                        met: Summary(ours).median <= Summary(iproute).median)
    figure.emit()
}
