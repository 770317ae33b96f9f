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
        var errors = ConfigErrorList(limit: limits.errors)
        let top = SourceLocation(file: file, line: 1, column: 1)
        guard text.count <= limits.fileBytes else {
            return .failure(ConfigErrors([ConfigError(top, "the file is larger than \(limits.fileBytes) bytes (the limit)")]))
        }
        let string: String
        switch Self.decode(text, file: file) {
        case .success(let decoded): string = decoded
        case .failure(let error): return .failure(ConfigErrors([error]))
        }
        var budget = Tree.Budget(limits)
        guard let tree = Tree.parse(string, file: file, budget: &budget, errors: &errors) else {
            return .failure(errors.sorted(files: [file]))
        }
        var includeDir: String?
        if case .scalar(let dir, _)? = tree.lookup("runtime", "include_dir")?.node { includeDir = resolve(dir, relativeTo: file) }
        var round = CacheRound(previous: ConfigCache.State(), keeping: false)
        return validate(consume tree, files: [file], includeDir: includeDir, errors: errors, peers: &round) { configuration, _ in
            for d in configuration.devices.indices {
                if configuration.devices[d].privateKeyFile != nil {
                    configuration.devices[d].privateKey = PrivateKey(Self.placeholderKey)
                }
                for p in configuration.devices[d].peers.indices where configuration.devices[d].peers[p].presharedKeyFile != nil {
                    configuration.devices[d].peers[p].peer.presharedKey = PresharedKey(Self.placeholderKey)
                }
            }
        }
    }
}

extension ConfigLoader {
    /// Nil when `bytes` are UTF-8, else an error at the first byte that is not. ASCII (most
    /// configurations) is checked eight bytes at a time without a copy; other text through
    /// `String`, whose copy is dropped at once.
    static func utf8Problem(_ bytes: UnsafeRawBufferPointer, file: String) -> ConfigError? {
        var at = 0
        while at + 8 <= bytes.count, bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 { at += 8 }
        while at < bytes.count, bytes[at] < 0x80 { at += 1 }
        if at == bytes.count { return nil }
        if case .failure(let error) = decode(bytes, file: file) { return error }
        return nil
    }

    /// A file's bytes as text, or an error at its first byte that is not UTF-8.
    static func decode(_ bytes: some Collection<UInt8>, file: String) -> Result<String, ConfigError> {
        if let text = String(validating: bytes, as: UTF8.self) { return .success(text) }
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        var offset = 0
        while case .valid(let scalar) = parser.parseScalar(from: &iterator) { offset += scalar.count }
        let mark = YAMLEventReader.mark(atByte: offset, in: bytes)
        return .failure(ConfigError(SourceLocation(file: file, line: mark.line, column: mark.column),
                                    "the file is not UTF-8 (byte \(offset))"))
    }
}
