/// Bounds on what one load reads, checked before the work they bound: a hostile or broken
/// file is refused with an error, never allowed to exhaust the stack, memory or time.
public struct ConfigLimits: Sendable, Equatable {
    /// Per file (main file and each include): a 50 000-peer file is about 10 MiB.
    public var fileBytes = 32 << 20
    /// All files of one load together (main file and every include): many large conf.d files
    /// must not add up to minutes of parsing on the daemon's loop.
    public var totalBytes = 64 << 20
    /// `*.yaml` files in `include_dir`: one per device is the expected use.
    public var includeFiles = 100_000
    /// YAML nodes in one load, all files together, aliases counted as what they expand to.
    public var nodes = 2_000_000
    /// Lists and mappings inside one another; the schema itself needs 6.
    public var depth = 32
    /// Nodes that aliases may add, all files together: anchors save typing, not gigabytes.
    public var aliasNodes = 10_000
    /// Bytes of scalar text all aliases together may stand for: a node count alone lets one
    /// anchored 30 MB scalar be used 10 000 times, each use scanned in full.
    public var aliasBytes = 1 << 20
    /// Peers of all devices together. Each reconcile still compares every object on the event
    /// loop (150 000 peers take 1.6 s): until reconciles are incremental, this keeps one well
    /// inside the watchdog and the status socket's patience.
    public var peers = 100_000
    /// Allowed IPs, explicit routes and explicit proxies together: 1.3 million allowed IPs in one
    /// peer take 4 s per reconcile.
    public var objects = 200_000
    /// Errors kept and reported; the rest are counted. A broken file of a million list items
    /// must not become a million messages in memory, in the journal and in status.
    public var errors = 1_000
    /// `policy.rules`, all files together: each has a per-CPU counter pair in the datapath
    /// (and 1 000 rules at 10 000 peers is what the per-packet cost is measured at).
    public var policyRules = 4_096
    /// `policy.groups`, all files together.
    public var policyGroups = 10_000
    /// Port ranges of one rule: each is an item of the datapath entry (16 at most per entry).
    public var policyPorts = 16

    public init() {}

    public static let standard = ConfigLimits()
}
