import Foundation
import TestSupport
import XCTest

/// The model-based test (see DaemonKernelTests/ModelTests) with real WireGuard and a real
/// 802.1Q VLAN LAN, on the VM's 6.1 kernel (clsact attach, no TCX): the daemon creates `wg0`,
/// peers and listen port are compared with `wg show wg0 dump`, and peer drift (`wg set … remove`,
/// a peer the configuration does not name) joins the other drift. Short: TCG is slow.
/// Same environment knobs (pass them with VM_PASS_ENV); WGK_MODEL_STEPS defaults to 2 here: under TCG
/// one step (fresh-daemon reference plus the step itself) takes ~40 s (3 steps measured 126 s).
final class ModelVMTests: XCTestCase {
    func testRandomConfigurationSequencesMatchAFreshStartWithWireGuardAndAVLAN() throws {
        _ = try? shell("modprobe", "wireguard")
        _ = try? shell("modprobe", "8021q")
        var settings = ModelRun.Settings.fromEnvironment(defaultSteps: 2, testFilter: "DaemonVMTests.ModelVMTests")
        if ProcessInfo.processInfo.environment["WGK_MODEL_SETTLE_MS"] == nil { settings.settle = .seconds(15) }
        if ProcessInfo.processInfo.environment["WGK_MODEL_SHRINK_SECONDS"] == nil { settings.shrinkBudget = .seconds(30) }
        settings.readyWithin = .seconds(60)
        settings.replayRunner = "Tests/Scenarios/vm/run.sh -- .build/x86_64-unknown-linux-gnu/debug/wgkeeperPackageTests.xctest DaemonVMTests.ModelVMTests"
        let run = try ModelRun(self, topology: ModelTopology(wireGuard: true, vlan: true), settings: settings)
        try run.check()
    }
}
