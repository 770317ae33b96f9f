import CBPF
import Glibc
import Netlink

/// How the programs are attached to the two devices' ingress.
public enum AttachMode: String, Sendable, CaseIterable, CustomStringConvertible {
    /// A TCX link (Linux ≥ 6.6), pinned, so it outlives the daemon.
    case tcx
    /// A `clsact` qdisc with a direct-action `cls_bpf` filter (older kernels).
    case clsact

    public var description: String { rawValue }

    /// The mode this kernel supports best: TCX (kernel/bpf/tcx.c) arrived in Linux 6.6.
    public static var preferred: AttachMode { kernelRelease >= (6, 6) ? .tcx : .clsact }

    static var kernelRelease: (Int, Int) {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let numbers = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return numbers.count == 2 ? (numbers[0], numbers[1]) : (0, 0)
    }
}

/// One of the two programs and where it sits.
public enum Hook: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Ethernet frames arriving from the LAN; VPN-client destinations go to the tunnel.
    case lanIngress = "lan_ingress"
    /// Bare IPv6 packets arriving from the tunnel; LAN destinations go to the LAN.
    case tunnelIngress = "tunnel_ingress"

    public var description: String { rawValue }
}

/// What sits at a hook right now.
public enum HookState: Equatable, Sendable, CustomStringConvertible {
    /// The embedded program (or one with the same code over the same maps).
    case attached(programID: UInt32)
    /// Our attachment holds a different program: an older build, or someone replaced it.
    case foreign(programID: UInt32)
    /// Nothing of ours: link removed or defunct, filter or qdisc deleted.
    case detached

    public var description: String {
        switch self {
        case .attached(let id): "attached (program \(id))"
        case .foreign(let id): "foreign program \(id)"
        case .detached: "detached"
        }
    }
}

/// The datapath as observed: compare with the desired interfaces to find drift.
public struct DatapathState: Equatable, Sendable {
    public var mode: AttachMode
    public var lan: HookState
    public var tunnel: HookState
    /// The programs' config map names these interface indexes.
    public var configured: Bool

    public var isInSync: Bool {
        guard configured, case .attached = lan, case .attached = tunnel else { return false }
        return true
    }
}

/// One thing `attach` changed in the kernel; an adopted, already-correct datapath yields none.
public enum AttachChange: Equatable, Sendable, CustomStringConvertible {
    case configured(lanIndex: Int32, tunnelIndex: Int32)
    case attached(Hook, AttachMode, programID: UInt32)
    case replaced(Hook, AttachMode, oldProgramID: UInt32, newProgramID: UInt32)
    /// A leftover attachment of the other mode was removed after the new one was in place.
    case removedStale(Hook, AttachMode)
    /// There was no clsact qdisc on the device: this one is wgkeeper's, to remove when done.
    case createdQdisc(interfaceIndex: Int32)

    public var description: String {
        switch self {
        case .configured(let lan, let tunnel): "configured LAN index \(lan), tunnel index \(tunnel)"
        case .attached(let hook, let mode, let id): "attached \(hook) (\(mode), program \(id))"
        case .replaced(let hook, let mode, let old, let new): "replaced \(hook) (\(mode), program \(old) → \(new))"
        case .removedStale(let hook, let mode): "removed stale \(mode) attachment of \(hook)"
        case .createdQdisc(let index): "created the clsact qdisc of interface \(index)"
        }
    }
}

/// The pinned TC redirect programs of one tunnel (docs/ARCHITECTURE.md), their maps and attachments.
///
/// Everything lives under `<pinRoot>/<tunnel>/`: creating an instance adopts what a previous
/// run pinned (map entries kept; programs kept when their code is unchanged), so a restart
/// changes nothing in the kernel. Interface-facing calls (`attach`, `state`, `uninstall`) act
/// in the calling thread's network namespace.
public final class Datapath {
    public let pinDirectory: String
    public let mode: AttachMode
    /// Maps whose pinned copy no longer matched the embedded definition and were recreated empty
    /// (the policy's maps all go when one of them does: `ObjectLoader.policyMapSet`).
    public let recreatedMaps: [String]

    let maps: [String: Descriptor]
    var programs: [Hook: (fd: Descriptor, info: ProgramInfo)] = [:]
    var checkedForStaleFilters: Set<Int32> = []
    /// When this instance last switched policy generations (`install(policy:)`).
    var lastPolicySwap: ContinuousClock.Instant?

    /// The handle and priority of our cls_bpf filter; stable so a replace hits the same filter.
    static let filterHandle: UInt32 = 0x77
    static let filterPriority: UInt32 = 0x77

    /// Loads the embedded object, adopting pinned maps and unchanged pinned programs.
    /// - Parameters:
    ///   - pinRoot: a bpffs directory, mounted here when it is not one already.
    ///   - mode: forces an attach mode; by default TCX where the kernel has it.
    public init(pinRoot: String, tunnel: String, mode: AttachMode? = nil) throws {
        guard !tunnel.isEmpty, !tunnel.contains("/"), tunnel != ".", tunnel != ".." else {
            throw DatapathError("use tunnel name", "'\(tunnel)'", code: EINVAL)
        }
        _ = LibbpfLog.install
        self.mode = mode ?? .preferred
        let root = Self.trimmed(pinRoot)
        pinDirectory = Self.pinDirectory(pinRoot: pinRoot, tunnel: tunnel)
        try BPFFileSystem.prepare(root: root)
        try BPFFileSystem.makeDirectories(pinDirectory)

        let loaded = try ObjectLoader.load(ObjectLoader.embeddedBytes, name: "datapath.bpf.o", pinDirectory: pinDirectory)
        maps = loaded.maps
        recreatedMaps = loaded.recreatedMaps
        for hook in Hook.allCases {
            guard let fresh = loaded.programs[hook.rawValue] else {
                throw DatapathError("find program", hook.rawValue, code: ENOENT, detail: "not in the embedded object")
            }
            let freshInfo = try ProgramInfo(fresh, hook.rawValue)
            let path = programPin(hook)
            if let pinned = try Descriptor.pinned(path), let info = try? ProgramInfo(pinned, path),
               info.isEquivalent(to: freshInfo) {
                programs[hook] = (pinned, info)
            } else {
                try BPFFileSystem.unpin(path)
                try check(bpf_obj_pin(fresh.raw, path), "pin program", path)
                programs[hook] = (fresh, freshInfo)
            }
        }
    }

    /// The program each hook should run (what `attach` puts there).
    public var programIDs: [Hook: UInt32] { programs.mapValues { $0.info.id } }

    /// The embedded programs' tags, as `bpftool prog` prints them.
    public var programTags: [Hook: String] { programs.mapValues { $0.info.tagText } }

    /// `<pinRoot>/<tunnel>`, the one place a tunnel's pins live.
    static func pinDirectory(pinRoot: String, tunnel: String) -> String { "\(trimmed(pinRoot))/\(tunnel)" }

    /// The pin root without a trailing slash (unless it is `/`).
    static func trimmed(_ pinRoot: String) -> String {
        pinRoot.count > 1 && pinRoot.hasSuffix("/") ? String(pinRoot.dropLast()) : pinRoot
    }

    func programPin(_ hook: Hook) -> String { "\(pinDirectory)/\(hook.rawValue)" }
    func linkPin(_ hook: Hook) -> String { "\(pinDirectory)/\(hook.rawValue)_link" }

    func map(_ name: String) -> Descriptor {
        guard let fd = maps[name] else { preconditionFailure("map \(name) is not in the embedded object") }
        return fd
    }
}
