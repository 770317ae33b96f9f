import CBPF
import Glibc

extension Datapath {
    /// Makes the kernel run the embedded programs on both devices' ingress. Idempotent: an
    /// attachment that already runs the right program is left alone; one that runs another
    /// program is switched in place (`bpf_link_update` / filter replace), so traffic never
    /// meets an empty hook. Returns what was changed; empty when the kernel was already right.
    @discardableResult
    public func attach(lanIndex: Int32, tunnelIndex: Int32) throws -> [AttachChange] {
        var changes: [AttachChange] = []
        if try configure(lanIndex: lanIndex, tunnelIndex: tunnelIndex) {
            changes.append(.configured(lanIndex: lanIndex, tunnelIndex: tunnelIndex))
        }
        for (hook, index) in [(Hook.lanIngress, lanIndex), (.tunnelIngress, tunnelIndex)] {
            switch mode {
            case .tcx:
                if let change = try attachLink(hook, index) { changes.append(change) }
                // A filter of ours exists only after a mode switch (kernel upgrade, forced
                // mode): look once per device, not at every resync.
                if !checkedForStaleFilters.contains(index) {
                    if try removeFilter(hook, index) { changes.append(.removedStale(hook, .clsact)) }
                    checkedForStaleFilters.insert(index)
                }
            case .clsact:
                changes += try attachFilter(hook, index)
                if try removeLink(hook) { changes.append(.removedStale(hook, .tcx)) }
            }
        }
        return changes
    }

    /// What is attached now: drift detection for a resync or a link event.
    public func state(lanIndex: Int32, tunnelIndex: Int32) throws -> DatapathState {
        var hooks: [Hook: HookState] = [:]
        for (hook, index) in [(Hook.lanIngress, lanIndex), (.tunnelIngress, tunnelIndex)] {
            let attached = mode == .tcx ? try linkProgram(hook, index) : try filterProgram(index)
            hooks[hook] = try attached.map { try classify(hook, $0) } ?? .detached
        }
        let config = try readConfig()
        return DatapathState(mode: mode, lan: hooks[.lanIngress]!, tunnel: hooks[.tunnelIngress]!,
                             configured: config == (UInt32(bitPattern: tunnelIndex), UInt32(bitPattern: lanIndex)))
    }

    /// Detaches both programs (either mode) and removes every pin: `wgkeeper --cleanup`.
    public func uninstall(lanIndex: Int32, tunnelIndex: Int32) throws {
        for (hook, index) in [(Hook.lanIngress, lanIndex), (.tunnelIngress, tunnelIndex)] {
            _ = try removeLink(hook)
            _ = try removeFilter(hook, index)
            try BPFFileSystem.unpin(programPin(hook))
        }
        for name in maps.keys { try BPFFileSystem.unpin("\(pinDirectory)/\(name)") }
        rmdir(pinDirectory)
    }

    // MARK: config map

    /// Writes the interface indexes the programs redirect to; true when they changed.
    func configure(lanIndex: Int32, tunnelIndex: Int32) throws -> Bool {
        let wanted = (UInt32(bitPattern: tunnelIndex), UInt32(bitPattern: lanIndex))
        var config = try readConfigValue()
        if (config.tunnelIndex, config.lanIndex) == wanted { return false }
        (config.tunnelIndex, config.lanIndex) = wanted
        try writeConfigValue(config)
        return true
    }

    func readConfig() throws -> (UInt32, UInt32) {
        let config = try readConfigValue()
        return (config.tunnelIndex, config.lanIndex)
    }

    func readConfigValue() throws -> ConfigValue {
        var key: UInt32 = 0
        var value = [UInt8](repeating: 0, count: ConfigValue.size)
        try check(bpf_map_lookup_elem(map("config").raw, &key, &value), "read map", "config")
        return ConfigValue(value)
    }

    func writeConfigValue(_ config: ConfigValue) throws {
        var key: UInt32 = 0
        var value = config.bytes
        try check(bpf_map_update_elem(map("config").raw, &key, &value, UInt64(BPF_ANY)), "write map", "config")
    }

    // MARK: shared

    private func classify(_ hook: Hook, _ programID: UInt32) throws -> HookState {
        let current = programs[hook]!.info
        if programID == current.id { return .attached(programID: programID) }
        if let other = try? ProgramInfo(ProgramInfo.descriptor(id: programID), "program \(programID)"),
           other.isEquivalent(to: current) {
            return .attached(programID: programID)
        }
        return .foreign(programID: programID)
    }

    /// Keeps an attached program that is ours (adopting an equivalent one, so its id stays),
    /// else switches the attachment to ours with `replace`.
    private func keepOrReplace(_ hook: Hook, attached programID: UInt32,
                               replace: (Int32) throws -> Void) throws -> AttachChange? {
        let current = programs[hook]!
        if programID == current.info.id { return nil }
        if let fd = try? ProgramInfo.descriptor(id: programID),
           let info = try? ProgramInfo(fd, "program \(programID)"), info.isEquivalent(to: current.info) {
            // The pin was lost but the attachment survived: keep the attached program.
            try BPFFileSystem.unpin(programPin(hook))
            try check(bpf_obj_pin(fd.raw, programPin(hook)), "pin program", programPin(hook))
            programs[hook] = (fd, info)
            return nil
        }
        try replace(current.fd.raw)
        return .replaced(hook, mode, oldProgramID: programID, newProgramID: current.info.id)
    }

    // MARK: TCX

    /// The program of our pinned TCX link when it is attached to `index`.
    private func linkProgram(_ hook: Hook, _ index: Int32) throws -> UInt32? {
        guard let link = try Descriptor.pinned(linkPin(hook)) else { return nil }
        let info = try LinkInfo(link, linkPin(hook))
        return info.isTCX && info.interfaceIndex == UInt32(bitPattern: index) ? info.programID : nil
    }

    private func attachLink(_ hook: Hook, _ index: Int32) throws -> AttachChange? {
        let path = linkPin(hook)
        if let link = try Descriptor.pinned(path) {
            let info = try LinkInfo(link, path)
            if info.isTCX && info.interfaceIndex == UInt32(bitPattern: index) {
                return try keepOrReplace(hook, attached: info.programID) { program in
                    try check(bpf_link_update(link.raw, program, nil), "replace program of TCX link", path)
                }
            }
            // Defunct (device gone, `bpftool link detach`) or on a device that is no longer ours.
            if info.interfaceIndex != 0 { bpf_link_detach(link.raw) }
            try BPFFileSystem.unpin(path)
        }
        let program = programs[hook]!
        let link = Descriptor(try check(
            bpf_link_create(program.fd.raw, index, bpf_attach_type(UInt32(WGK_BPF_TCX_INGRESS)), nil),
            "create TCX ingress link for \(hook) on", "interface \(index)"))
        try check(bpf_obj_pin(link.raw, path), "pin TCX link", path)
        return .attached(hook, .tcx, programID: program.info.id)
    }

    /// Detaches and unpins our TCX link; true when there was one.
    private func removeLink(_ hook: Hook) throws -> Bool {
        guard let link = try Descriptor.pinned(linkPin(hook)) else { return false }
        if try LinkInfo(link, linkPin(hook)).interfaceIndex != 0 { bpf_link_detach(link.raw) }
        try BPFFileSystem.unpin(linkPin(hook))
        return true
    }

    // MARK: clsact + cls_bpf

    /// The program of our filter on `index`'s ingress; nil when the filter or qdisc is gone.
    private func filterProgram(_ index: Int32) throws -> UInt32? {
        var programID: UInt32 = 0
        let result = wgk_tc_ingress_query(index, Self.filterHandle, Self.filterPriority, &programID)
        // ENOENT: no such filter; EINVAL: no clsact qdisc (the kernel finds no block).
        if result == -ENOENT || result == -EINVAL {
            _ = LibbpfLog.take()
            return nil
        }
        try check(result, "query cls_bpf filter on", "interface \(index)")
        return programID
    }

    private func attachFilter(_ hook: Hook, _ index: Int32) throws -> [AttachChange] {
        let replace = { (program: Int32) throws in
            _ = try check(wgk_tc_ingress_replace(index, Self.filterHandle, Self.filterPriority, program),
                          "attach cls_bpf filter for \(hook) on", "interface \(index)")
        }
        if let attached = try filterProgram(index) {
            return try keepOrReplace(hook, attached: attached, replace: replace).map { [$0] } ?? []
        }
        var changes: [AttachChange] = []
        let created = wgk_tc_ingress_create(index)
        if created == -EEXIST { _ = LibbpfLog.take() } else {
            try check(created, "create clsact qdisc on", "interface \(index)")
            changes.append(.createdQdisc(interfaceIndex: index))
        }
        let program = programs[hook]!
        try replace(program.fd.raw)
        return changes + [.attached(hook, .clsact, programID: program.info.id)]
    }

    /// Deletes our filter (never the qdisc: others may use it); true when there was one.
    private func removeFilter(_ hook: Hook, _ index: Int32) throws -> Bool {
        // try? flattens: nil when there is no filter or it cannot be queried.
        guard (try? filterProgram(index)) != nil else { return false }
        let result = wgk_tc_ingress_delete(index, Self.filterHandle, Self.filterPriority)
        if result == -ENOENT {
            _ = LibbpfLog.take()
        } else {
            try check(result, "delete cls_bpf filter for \(hook) on", "interface \(index)")
        }
        return true
    }
}
