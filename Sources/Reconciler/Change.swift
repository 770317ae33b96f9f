import Netlink

/// One write `plan` asks for: add, replace or remove one object, and why.
public struct Change: Hashable, Sendable, CustomStringConvertible {
    /// The order `plan` emits kinds in: what later kinds need comes first.
    public enum Kind: Int, Hashable, Sendable, Comparable, CaseIterable, CustomStringConvertible {
        case link, sysctl, peer, route, proxy, datapath

        public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
        public var description: String {
            switch self {
            case .link: "link"
            case .sysctl: "sysctl"
            case .peer: "peer"
            case .route: "route"
            case .proxy: "proxy"
            case .datapath: "datapath"
            }
        }
    }

    public enum Action: String, Hashable, Sendable {
        case add, replace, remove

        public var symbol: String {
            switch self {
            case .add: "+"
            case .replace: "~"
            case .remove: "-"
            }
        }
    }

    public enum Reason: Hashable, Sendable, CustomStringConvertible {
        case missing
        /// The object exists with these fields different.
        case differs([String])
        /// The object is wgkeeper's and not desired.
        case unexpected
        /// wgkeeper no longer manages this sysctl: back to the value found before its first write.
        case restore

        public var description: String {
            switch self {
            case .missing: "missing"
            case .differs(let fields): "differs: \(fields.joined(separator: ", "))"
            case .unexpected: "unexpected"
            case .restore: "restore"
            }
        }
    }

    /// What to do to a network device: only WireGuard devices are ever created or deleted.
    public enum LinkOperation: Hashable, Sendable {
        case create(kind: String)
        case setUp(index: Int32)
        case delete(index: Int32)
    }

    public enum Object: Hashable, Sendable {
        case link(name: String, LinkOperation)
        /// WireGuard device settings (private key, listen port).
        case wireGuardDevice(name: String, WireGuardDeviceChange)
        case sysctl(Sysctl, value: String, previous: String?)
        /// `name` is nil for a peer the configuration does not know. `hostEndpoint` is a host name
        /// the applier must resolve and put in the change's endpoint. Boxed: its 150 bytes would
        /// set the size of every change (a start plans 100 000 route and proxy changes).
        indirect case peer(device: String, name: String?, WireGuardPeerChange, hostEndpoint: HostEndpoint?)
        /// The route to add, replace with, or remove (as observed, with its protocol).
        case route(Route, device: String)
        case proxy(ProxyEntry, device: String)
        case datapath(DatapathEntry)
    }

    public var action: Action
    public var object: Object
    public var reason: Reason
    /// What differs, in words (`allowed_ips: +2001:db8:1::101/128`); never holds a secret.
    public var detail: String

    public init(_ action: Action, _ object: Object, reason: Reason, detail: String = "") {
        self.action = action
        self.object = object
        self.reason = reason
        self.detail = detail
    }

    public var kind: Kind {
        switch object {
        case .link, .wireGuardDevice: .link
        case .sysctl: .sysctl
        case .peer: .peer
        case .route: .route
        case .proxy: .proxy
        case .datapath: .datapath
        }
    }

    /// The object in `ip`-like words, without the action.
    public var subject: String {
        switch object {
        case .link(let name, .create(let kind)):
            return "link \(name) type \(kind)"
        case .link(let name, .setUp):
            return "link \(name) up"
        case .link(let name, .delete):
            return "link \(name)"
        case .wireGuardDevice(let name, _):
            return "device \(name)"
        case .sysctl(let sysctl, let value, _):
            return "sysctl \(sysctl) = \(value)"
        case .peer(let device, let name, let change, _):
            return "peer \(name ?? change.publicKey.base64) dev \(device)"
        case .route(let route, let device):
            return "route \(Change.describe(route, device: device))"
        case .proxy(let entry, let device):
            return "proxy \(entry.address) dev \(device)"
        case .datapath(let entry):
            return "datapath \(entry)"
        }
    }

    /// One line: `+ route 2001:db8:1::100/128 dev wg0 proto 77`, `~ peer alice-laptop dev wg0 allowed_ips: +…`.
    public var description: String {
        var line = "\(action.symbol) \(subject)"
        if !detail.isEmpty { line += " \(detail)" }
        return line
    }

    static func describe(_ route: Route, device: String) -> String {
        var text = "\(route.destination)"
        if let gateway = route.gateway { text += " via \(gateway)" }
        text += " dev \(device)"
        if route.table != Route.mainTable { text += " table \(route.table)" }
        if let metric = route.metric, metric != DesiredRoute.defaultMetric { text += " metric \(metric)" }
        text += " proto \(route.protocolNumber)"
        // What wgkeeper never sets, named so that a replace shows what it took away.
        return route.extras.isEmpty ? text : text + " with " + route.extras.names.joined(separator: ", ")
    }
}

public struct HostEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

/// A desired object that cannot be planned yet (its device is missing, its state unread), or,
/// as a `Refusal`, one a safety rule holds back.
public struct Pending: Hashable, Sendable, CustomStringConvertible {
    public var kind: Change.Kind
    public var object: String
    public var reason: String

    public init(kind: Change.Kind, object: String, reason: String) {
        self.kind = kind
        self.object = object
        self.reason = reason
    }

    public var description: String { "\(object): \(reason)" }
}

/// A desired object whose identity a foreign object holds: wgkeeper leaves both alone.
public struct Conflict: Hashable, Sendable, CustomStringConvertible {
    public var kind: Change.Kind
    public var desired: String
    public var foreign: String

    public init(kind: Change.Kind, desired: String, foreign: String) {
        self.kind = kind
        self.desired = desired
        self.foreign = foreign
    }

    public var description: String { "\(desired): held by a foreign \(foreign)" }
}

/// A desired write a safety rule holds back (the LAN forwarding that would claim an anycast
/// address), and why: the same shape as a pending object, listed and counted apart.
public typealias Refusal = Pending

/// A safety check that does not hold.
public struct Violation: Hashable, Sendable, CustomStringConvertible {
    public var check: SafetyCheck
    public var actual: String

    public init(check: SafetyCheck, actual: String) {
        self.check = check
        self.actual = actual
    }

    public var description: String { "\(check.sysctl) is \(actual), must be \(check.expected): \(check.why)" }
}
