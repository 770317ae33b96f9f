import FoundationEssentials
import Netlink
import Reconciler

/// A configuration that passed every check, and the desired state it expands to.
public struct LoadedConfig: Sendable {
    public var configuration: Configuration
    public var desired: DesiredState

    /// `2 devices, 3 peers, 5 routes, 2 proxies`.
    public var summary: String {
        func count(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : word.hasSuffix("y") ? "" : "s")" }
        return [count(desired.devices.count, "device"), count(desired.peerCount, "peer"),
                count(desired.routes.count, "route"), "\(desired.proxies.count) \(desired.proxies.count == 1 ? "proxy" : "proxies")"]
            .joined(separator: ", ")
    }
}

/// Reads the main file and its `include_dir`, validates everything, reads the key files and
/// derives the desired state. Every problem is reported, not only the first.
public struct ConfigLoader: Sendable {
    /// When set, absolute paths in the configuration (key files, `include_dir`) are read under
    /// this directory: checking an image or a test fixture instead of the running system.
    public var root: String?
    public var limits: ConfigLimits

    public init(root: String? = nil, limits: ConfigLimits = .standard) {
        self.root = root
        self.limits = limits
    }

    public func load(path: String) -> Result<LoadedConfig, ConfigErrors> {
        var errors = ConfigErrorList(limit: limits.errors)
        var files = [path]
        var budget = Tree.Budget(limits)
        var checked = Set<String>()
        guard var tree = read(path, order: 0, budget: &budget, checked: &checked, errors: &errors) else {
            return .failure(errors.sorted(mainFile: path))
        }

        var includeDir: String?
        // A path the decoder refuses (a pasted key, `..`) is reported by it and never opened.
        if case .scalar(let dir, let at)? = tree.lookup("runtime", "include_dir"), !dir.isEmpty,
           Decoder.runtimePathProblem(dir, relativeAllowed: true) == nil {
            let resolved = resolve(dir, relativeTo: path)
            includeDir = resolved
            var trees = [tree]
            for file in includeFiles(resolved, at: at, checked: &checked, errors: &errors) {
                files.append(file)
                guard let included = read(file, order: files.count - 1, budget: &budget, checked: &checked, errors: &errors) else { continue }
                if let nested = included.lookup("runtime", "include_dir") {
                    errors.append(ConfigError(nested.location, "include_dir: only the main configuration file may name one"))
                }
                trees.append(included)
            }
            tree = Tree.merge(trees, path: "", errors: &errors)
        }

        return validate(tree, files: files, includeDir: includeDir, errors: errors) { readKeys(&$0, checked: &checked, errors: &$1) }
    }

    /// Everything after parsing, the same for a file and for bytes (`load(text:)`): decoding,
    /// the keys (`keys` reads or stands in for them), the checks that span objects, derivation.
    func validate(_ tree: Tree, files: [String], includeDir: String?, errors: ConfigErrorList,
                  keys: (inout Configuration, inout ConfigErrorList) -> Void) -> Result<LoadedConfig, ConfigErrors> {
        var errors = errors
        var decoder = Decoder(errors: ConfigErrorList(limit: limits.errors))
        decoder.limits = limits
        var configuration = decoder.decode(tree)
        errors += decoder.errors
        configuration.files = files
        configuration.runtime.includeDir = includeDir
        configuration.checkObjectLimits(limits, errors: &errors)
        keys(&configuration, &errors)
        configuration.checkPeers(errors: &errors)
        configuration.checkAllowedIPs(errors: &errors)
        let desired = configuration.desiredState(errors: &errors)
        guard errors.isEmpty else { return .failure(errors.sorted(mainFile: files[0])) }
        return .success(LoadedConfig(configuration: configuration, desired: desired))
    }

    /// The `*.yaml` files of `include_dir` in name order (not dot files), once the directory
    /// itself and every directory on its path are known to be writable only by root (or whoever
    /// runs this).
    private func includeFiles(_ directory: String, at: SourceLocation, checked: inout Set<String>, errors: inout ConfigErrorList) -> [String] {
        if case .failure(let problem) = resolveTrusted(directory, directory: true, checked: &checked) {
            errors.append(ConfigError(at, "include_dir: \(problem.message)"))
            return []
        }
        switch directoryEntries(directory) {
        case .success(let entries):
            let names = entries.filter { $0.hasSuffix(".yaml") && !$0.hasPrefix(".") }
            guard names.count <= limits.includeFiles else {
                errors.append(ConfigError(at, "include_dir: more than \(limits.includeFiles) *.yaml files (the limit)"))
                return []
            }
            return names.sorted().map { directory.appendingPathComponent($0) }
        case .failure(let problem):
            errors.append(ConfigError(at, "include_dir: cannot read directory \(Scalars.shown(directory)): \(problem.message)"))
            return []
        }
    }

    /// Reads one file after checking that only root (or whoever runs this) could have written it:
    /// the file, every directory on its path, and every symbolic link's and target's (see
    /// `resolveTrusted`). A file under an untrusted directory is still opened, for its own errors.
    private func read(_ file: String, order: Int, budget: inout Tree.Budget, checked: inout Set<String>, errors: inout ConfigErrorList) -> Tree? {
        let top = SourceLocation(file: file, line: 1, column: 1, fileOrder: order)
        var trusted = true
        var real = file
        switch resolveTrusted(file, checked: &checked) {
        case .success(let resolved): real = resolved
        case .failure(let problem):
            errors.append(ConfigError(top, problem.message))
            trusted = false
        }
        let data: Data
        switch readConfigFile(real, limit: limits.fileBytes) {
        case .success(let read): data = read
        case .failure(let problem):
            errors.append(ConfigError(top, problem.message))
            return nil
        }
        guard trusted else { return nil }
        budget.bytes -= data.count
        guard budget.bytes >= 0 else {
            errors.append(ConfigError(top, "the configuration's files add up to more than \(limits.totalBytes) bytes (the limit)"))
            return nil
        }
        switch Self.decode(data, file: file, fileOrder: order) {
        case .success(let text):
            return Tree.parse(text, file: file, fileOrder: order, budget: &budget, errors: &errors)
        case .failure(let error):
            errors.append(error)
            return nil
        }
    }

    /// Absolute paths go under `root`; relative ones are relative to the file that names them.
    func resolve(_ path: String, relativeTo file: String) -> String {
        if path.hasPrefix("/") {
            guard let root else { return path }
            return root.appendingPathComponent(String(path.drop { $0 == "/" }))
        }
        return file.deletingLastPathComponent.appendingPathComponent(path)
    }

    /// Reads the key files. An error never repeats the value written for the file name: an
    /// operator may have pasted the key itself there, and errors reach the journal and status.
    private func readKeys(_ configuration: inout Configuration, checked: inout Set<String>, errors: inout ConfigErrorList) {
        func key(_ field: String, _ path: String, at: SourceLocation) -> WireGuardKey? {
            if WireGuardKey(base64: path.trimmingWhitespace(newlines: false)) != nil {
                errors.append(ConfigError(at, "\(field): looks like a key, not a file name (put the key in a file, chmod 600, and name that file here)"))
                return nil
            }
            // The directories on the key file's path are checked like the configuration's; the
            // message never names them (they are part of the value written here).
            let real: String
            switch resolveTrusted(resolve(path, relativeTo: at.file), checked: &checked, name: { _ in "a directory on the key file's path" }) {
            case .success(let resolved): real = resolved
            case .failure(let problem):
                errors.append(ConfigError(at, "\(field): \(problem.message)"))
                return nil
            }
            do {
                return try readSecretKeyFile(real)
            } catch {
                errors.append(ConfigError(at, "\(field): \(error.problem)"))
                return nil
            }
        }
        for d in configuration.devices.indices {
            if let (path, at) = configuration.devices[d].privateKeyFile, let read = key("private_key_file", path, at: at) {
                configuration.devices[d].privateKey = PrivateKey(read)
            }
            for p in configuration.devices[d].peers.indices {
                guard let (path, at) = configuration.devices[d].peers[p].presharedKeyFile,
                      let read = key("preshared_key_file", path, at: at) else { continue }
                configuration.devices[d].peers[p].peer.presharedKey = PresharedKey(read)
            }
        }
    }
}

extension Configuration {
    /// The object limits (`ConfigLimits.peers`, `.objects`), reported once each at the first
    /// object past them, in the order the decoder produced them.
    func checkObjectLimits(_ limits: ConfigLimits, errors: inout ConfigErrorList) {
        var peers = 0, objects = 0
        var peersReported = false, objectsReported = false
        func object(_ at: SourceLocation) {
            objects += 1
            if objects > limits.objects, !objectsReported {
                objectsReported = true
                errors.append(at, "more than \(limits.objects) allowed IPs, routes and proxies in all (the limit)")
            }
        }
        for device in devices {
            for section in device.peers {
                peers += 1
                if peers > limits.peers, !peersReported {
                    peersReported = true
                    errors.append(section.location, "more than \(limits.peers) peers in all (the limit)")
                }
                section.allowedIPLocations.forEach(object)
            }
        }
        routes.map(\.location).forEach(object)
        proxies.map(\.location).forEach(object)
    }
}

extension Tree {
    func lookup(_ keys: String...) -> Tree? {
        var node: Tree? = self
        for key in keys {
            guard case .mapping(let entries, _)? = node else { return nil }
            node = entries.first { $0.key == key }?.value
        }
        return node
    }
}
