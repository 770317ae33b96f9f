import Reconciler

/// What the daemon counts about its own reconciles, for `status` (and so for Prometheus):
/// how long they take, what they applied by kind, which of those writes repaired drift, and
/// how many reloads were refused.
///
/// A write repairs drift when the object was in sync after the previous reconcile of the same
/// configuration generation: not a start or a reload (their writes follow the configuration),
/// not a retry of a failed or unwritten change, not an object that was pending, refused or in
/// conflict (its device appearing, a safety rule lifting), and not a host-name endpoint looked
/// up again.
struct ReconcileMetrics {
    /// Histogram upper bounds in seconds: a no-op reconcile takes well under a millisecond, a
    /// first one on a large gateway seconds.
    static let bounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    /// Observations per bucket (not cumulative); the last one is above every bound.
    private(set) var buckets = [Int](repeating: 0, count: bounds.count + 1)
    private(set) var sumSeconds = 0.0
    private(set) var count = 0
    private(set) var applied: [Change.Kind: Int] = [:]
    private(set) var repairs: [Change.Kind: Int] = [:]
    var reloadFailures = 0

    private var reconciledGeneration = 0
    /// Subjects and kinds the previous reconcile left unsettled; nil while a start or reload is
    /// being reconciled.
    private var unsettled: (subjects: Set<String>, kinds: Set<Change.Kind>)?

    /// Called before a reconcile applies anything, with the plan the previous one left and the
    /// kinds it had pending objects of (the plan may list only some of them).
    mutating func begin(generation: Int, previous: Plan, pendingKinds: [Change.Kind] = [], failing: some Sequence<String>) {
        if generation == reconciledGeneration {
            let kinds = pendingKinds + previous.pending.map(\.kind) + previous.refused.map(\.kind) + previous.conflicts.map(\.kind)
            unsettled = (Set(previous.changes.map(\.subject)).union(failing), Set(kinds))
        } else {
            unsettled = nil
        }
        reconciledGeneration = generation
    }

    /// A change the kernel accepted.
    mutating func applied(_ change: Change) {
        applied[change.kind, default: 0] += 1
        guard let unsettled, !unsettled.subjects.contains(change.subject), !unsettled.kinds.contains(change.kind) else { return }
        if case .peer(_, _, _, hostEndpoint: .some) = change.object, change.reason != .missing { return }
        repairs[change.kind, default: 0] += 1
    }

    mutating func end(duration: Duration) {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        buckets[Self.bounds.firstIndex { seconds <= $0 } ?? Self.bounds.count] += 1
        sumSeconds += seconds
        count += 1
    }

    /// The histogram as status reports it: cumulative, as Prometheus counts buckets.
    var histogram: StatusReport.DurationHistogram {
        var running = 0
        let cumulative = buckets.dropLast().map { running += $0; return running }
        return .init(upperBoundsSeconds: Self.bounds, cumulativeCounts: cumulative, sumSeconds: sumSeconds, count: count)
    }

    static func byName(_ counts: [Change.Kind: Int]) -> [String: Int] {
        Dictionary(uniqueKeysWithValues: Change.Kind.allCases.map { ($0.description, counts[$0] ?? 0) })
    }
}

extension Duration {
    /// In milliseconds, as status and the logs give durations.
    var milliseconds: Double { Double(components.seconds) * 1e3 + Double(components.attoseconds) / 1e15 }
}
