@testable import Config
import Foundation
import Glibc
import Reconciler

/// What the tests of cached loads compare with a fresh load's: the desired state, the files
/// read, the errors.
struct LoadOutcome: Equatable {
    var desired: DesiredState?
    var files: [String]
    var errors: [String]

    init(_ result: Result<LoadedConfig, ConfigErrors>) {
        switch result {
        case .success(let loaded): (desired, files, errors) = (loaded.desired, loaded.configuration.files, [])
        case .failure(let failure): (desired, files, errors) = (nil, [], failure.errors.map(\.description))
        }
    }
}

extension ConfigCache {
    /// A cache whose clock runs an hour ahead: every file counts as settled, so the identity
    /// path (no read at all) is taken whenever the stamps match. Sound only because the tests
    /// let a timestamp tick pass (`tickPastTimestamps`) between a change and the load after it,
    /// and between a load and the change after it, as real time does on a gateway.
    /// `deltas`: whether a load may be a delta of the last (`ConfigLoader.dropInDelta`);
    /// `watches`: whether the include directory is watched (without, a delta reads every
    /// file's `lstat`).
    static func settled(deltas: Bool = true, watches: Bool = true) -> ConfigCache {
        ConfigCache(now: {
            var now = realtimeNow()
            now.tv_sec += 3600
            return now
        }, deltas: deltas, watches: watches)
    }
}

/// Longer than the kernel's coarse clock tick (at most 10 ms), so changes on either side of it
/// get different ctimes.
func tickPastTimestamps() { usleep(25_000) }
