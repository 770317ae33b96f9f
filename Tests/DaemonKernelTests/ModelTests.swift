import Foundation
import TestSupport
import XCTest

/// The reconcile contract under change (docs/ARCHITECTURE.md, ownership: after any reload the kernel equals what a
/// fresh start with that configuration on a clean kernel produces), checked model-style:
/// a seeded random sequence of configurations, applied by SIGHUP and every tenth by restart,
/// with drift made behind the daemon's back, each step compared with a fresh daemon's result;
/// at the end cleanup must leave the namespace as it found it. Host kernel: `wg0` is a veth
/// (no WireGuard here), so peers stay pending while its routes are reconciled; `lan0.100` is a
/// veth with a VLAN-style name. `make soak` runs the same test with 2 000 steps.
/// Environment: WGK_MODEL_SEED, WGK_MODEL_STEPS, WGK_MODEL_FEATURES (turn parts off to look past a
/// bug: -lanmove,-dotted,-redirect,-proxyndp,-ndp,-prune,-routes,-proxies,-drift,-move,-restart,-gatewaydrop),
/// WGK_MODEL_ONLY (step indices to keep), WGK_MODEL_SHRINK_SECONDS, WGK_MODEL_KEEP_GOING=1.
final class ModelTests: XCTestCase {
    func testRandomConfigurationSequencesMatchAFreshStart() throws {
        let settings = ModelRun.Settings.fromEnvironment(defaultSteps: 200, testFilter: "DaemonKernelTests.ModelTests")
        let run = try ModelRun(self, topology: ModelTopology(wireGuard: false, vlan: false), settings: settings)
        try run.check()
    }
}
