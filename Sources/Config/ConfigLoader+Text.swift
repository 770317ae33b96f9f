import Netlink

extension ConfigLoader {
    /// A key that stands in for every key file when loading from bytes. Not a secret: it is
    /// never written to a device, it only lets the checks that follow key reading run.
    static let placeholderKey = WireGuardKey(bytes: [UInt8](repeating: 0x5a, count: 32))!

    /// Checks one configuration given as bytes, as `load(path:)` checks a file, without touching
    /// the file system: `include_dir` is not read and key files are not opened (each stands for
    /// a placeholder key), so hostile input (the fuzzer's) cannot make it read any file.
    /// `file` only names the input in error locations.
    public func load(text: [UInt8], file: String = "<input>") -> Result<LoadedConfig, ConfigErrors> {
        var errors: [ConfigError] = []
        guard let string = String(validating: text, as: UTF8.self) else {
            let at = SourceLocation(file: file, line: 1, column: 1)
            return .failure(ConfigErrors([ConfigError(at, "the file is not UTF-8")]))
        }
        guard let tree = Tree.parse(string, file: file, fileOrder: 0, errors: &errors) else {
            return .failure(ConfigErrors(errors))
        }
        var decoder = Decoder()
        var configuration = decoder.decode(tree)
        errors += decoder.errors
        configuration.files = [file]
        if case .scalar(let dir, _)? = tree.lookup("runtime", "include_dir") {
            configuration.runtime.includeDir = resolve(dir, relativeTo: file)
        }
        for d in configuration.devices.indices {
            if configuration.devices[d].privateKeyFile != nil {
                configuration.devices[d].privateKey = PrivateKey(Self.placeholderKey)
            }
            for p in configuration.devices[d].peers.indices where configuration.devices[d].peers[p].presharedKeyFile != nil {
                configuration.devices[d].peers[p].peer.presharedKey = PresharedKey(Self.placeholderKey)
            }
        }
        configuration.checkPeers(errors: &errors)
        let desired = configuration.desiredState(errors: &errors)
        guard errors.isEmpty else {
            return .failure(ConfigErrors(errors.enumerated().sorted { ($0.element.location, $0.offset) < ($1.element.location, $1.offset) }.map(\.element)))
        }
        return .success(LoadedConfig(configuration: configuration, desired: desired))
    }
}
