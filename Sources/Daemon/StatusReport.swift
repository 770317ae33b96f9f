
/// The status socket's reply to `{"command":"status"}` (README, operations). Never holds a private or
/// preshared key.
public struct StatusReport: Codable, Sendable {
    public struct KindCounts: Codable, Sendable {
        public var inSync = 0
        public var pending = 0
        public var failed = 0
        /// A foreign object holds the desired object's identity; wgkeeper leaves both alone.
        public var conflict = 0
        /// A safety rule holds the write back.
        public var refused = 0
        public init() {}

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            inSync = try c.decode(Int.self, forKey: .inSync)
            pending = try c.decode(Int.self, forKey: .pending)
            failed = try c.decode(Int.self, forKey: .failed)
            conflict = try c.decodeIfPresent(Int.self, forKey: .conflict) ?? 0
            refused = try c.decodeIfPresent(Int.self, forKey: .refused) ?? 0
        }
    }

    public struct FailedObject: Codable, Sendable {
        public var kind: String
        public var object: String
        public var error: String
        public var attempts: Int
        public var nextRetryInSeconds: Double
    }

    public struct PendingObject: Codable, Sendable {
        public var kind: String
        public var object: String
        public var reason: String
    }

    public struct Peer: Codable, Sendable {
        public var device: String
        public var name: String?
        public var publicKey: String
        public var endpoint: String?
        public var latestHandshake: Double?
        public var receivedBytes: UInt64
        public var transmittedBytes: UInt64
    }

    public struct SafetyCheck: Codable, Sendable {
        public var name: String
        public var ok: Bool
        public var detail: String
    }

    public struct Datapath: Codable, Sendable {
        public var attachMode: String
        public var counters: [String: UInt64]
        /// Program ids by hook (`lan_ingress`, `tunnel_ingress`), as `bpftool prog` shows them.
        public var programs: [String: UInt32] = [:]
        /// Where ICMPv6 errors to each side (`lan`, `tunnel`) come from, or why none are sent.
        public var icmpErrors: [String: String]? = nil
        /// `ndp: datapath`: how many addresses the LAN program answers for and the solicited-node
        /// groups joined; nil when the kernel answers (`ndp: kernel`).
        public var neighbourDiscovery: String? = nil
        /// The clients' solicited-node groups while lan_ingress answers: `joined`, `not_joined`
        /// (a join that failed, retried every proxy_poll). Nil when it does not answer.
        public var solicitedNodeGroups: [String: Int]? = nil
        /// The access policy in force (nil: none, everything allowed both ways).
        public var policy: Policy? = nil
    }

    /// The live policy's defaults, its rules as compiled (groups expanded) and their counters.
    public struct Policy: Codable, Sendable {
        public var clientToLan: String
        public var lanToClient: String
        /// Packets the defaults denied, per direction.
        public var deniedToLan: UInt64
        public var deniedToClients: UInt64
        public var rules: [Rule]
        /// `lan_to_client: replies`: the clients' UDP and echo flows the programs remember.
        public var replyFlows: ReplyFlows? = nil

        public struct ReplyFlows: Codable, Sendable {
            /// Entries held, some past `timeoutSeconds` until the table reuses them.
            public var remembered: Int
            /// With a packet within `timeoutSeconds`: a LAN reply can use these.
            public var recent: Int
            public var capacity: Int
            public var timeoutSeconds: Int
        }

        public struct Rule: Codable, Sendable {
            public var rule: String
            /// Packets the rule allowed (counted only where a default denies).
            public var packets: UInt64
        }
    }

    public struct StatusSocket: Codable, Sendable {
        public var clients: Int
        /// Connections refused by the peer-credential check.
        public var refused: Int
        /// Idle clients closed to make room for new ones.
        public var evicted: Int
        /// Connections turned away because every client had a request or a reply in progress.
        public var busy: Int?
    }

    /// A host-name endpoint: `resolving`, `resolved` (to `address`) or `unresolved` (`error`).
    public struct HostEndpointState: Codable, Sendable {
        public var endpoint: String
        public var state: String
        public var address: String?
        public var error: String?
    }

    /// Reconcile durations since start, bucketed as a Prometheus histogram.
    public struct DurationHistogram: Codable, Sendable {
        /// Ascending; the implicit last bucket (+Inf) holds `count`.
        public var upperBoundsSeconds: [Double]
        /// Observations at or below each bound (cumulative).
        public var cumulativeCounts: [Int]
        public var sumSeconds: Double
        public var count: Int
    }

    public var version: String
    public var pid: Int32
    public var configGeneration: Int
    public var configFiles: [String]
    public var configErrors: [String]
    public var lastReconcile: Double?
    public var lastReconcileDurationMs: Double?
    public var reconciles: Int
    public var netlinkWrites: Int
    public var changesApplied: Int
    public var resyncs: Int
    public var overflows: Int
    /// Reloads performed (SIGHUP and socket requests, coalesced).
    public var reloads: Int
    public var statusSocket: StatusSocket
    /// Log lines lost because standard error or the journal would have blocked or failed.
    public var logLinesDropped: Int
    public var kinds: [String: KindCounts]
    public var failed: [FailedObject]
    public var pending: [PendingObject]
    public var conflicts: [String]
    public var refused: [PendingObject]
    public var peers: [Peer]
    public var endpoints: [HostEndpointState]
    public var datapath: Datapath?
    public var safety: [SafetyCheck]
    // Optional, so a newer client still reads a daemon started before they existed.
    public var reconcileDuration: DurationHistogram? = nil
    /// Changes applied since start, by kind (`changes_applied` is their sum).
    public var changesAppliedByKind: [String: Int]? = nil
    /// Changes applied since start that repaired drift (see ReconcileMetrics), by kind.
    public var repairs: [String: Int]? = nil
    /// Reloads refused since start (invalid configuration, a changed claim).
    public var reloadFailures: Int? = nil
    /// Of `reconciles`, those that planned only the routes route events touched (the rest
    /// planned everything).
    public var routeReconciles: Int? = nil
    /// Of `reconciles`, those due to plan everything (a resync) that did not: nothing `plan`
    /// reads had changed since a full plan that found nothing to write.
    public var skippedPlans: Int? = nil
    /// Of `reconciles`, reloads that planned only the objects their change touched (a peer
    /// added, removed or edited, and what derives from it) rather than everything.
    public var touchedPlans: Int? = nil
    /// Reloads whose configuration read was a delta of the last: only the changed drop-in
    /// files' peers decoded and checked, the include directory's other files not read.
    public var configDeltas: Int? = nil
    /// Polls whose read returned the very bytes the cache was decoded from, so nothing was
    /// decoded or planned, by part (`proxies`, `datapath`).
    public var unchangedReads: [String: Int]? = nil
}

public struct ReloadReply: Codable, Sendable {
    public var ok: Bool
    public var configGeneration: Int
    public var errors: [String]
    public var changesApplied: Int
    /// Objects of the new generation a safety rule holds back (nil from a daemon before this field).
    public var refusedObjects: Int? = nil
    /// Why, each reason once.
    public var refused: [String]? = nil
    /// What the reload took effect with but not yet in full (`ndp: kernel` while lan_ingress still answers).
    public var warnings: [String]? = nil
}

public struct ErrorReply: Codable, Sendable {
    public var error: String
}
