import CBPF
import FoundationEssentials
import Glibc

/// The embedded object loaded into the kernel, with maps adopted from the pin directory.
struct LoadedObject {
    var maps: [String: Descriptor] = [:]
    var mapIDs: [String: UInt32] = [:]
    /// Programs as loaded now; the caller decides whether the pinned ones stay instead.
    var programs: [String: Descriptor] = [:]
    /// Maps whose pin was incompatible with the embedded definition and were created afresh.
    var recreatedMaps: [String] = []
}

enum ObjectLoader {
    /// Opens the object from memory, reuses every compatible pinned map (entries kept), loads
    /// the programs, and pins maps that were created. Only descriptors leave this function.
    static func load(_ bytes: [UInt8], name: String, pinDirectory: String) throws -> LoadedObject {
        guard let object = bytes.withUnsafeBytes({ bpf_object__open_mem($0.baseAddress, $0.count, nil) }) else {
            throw DatapathError("open BPF object", name, code: errno, detail: LibbpfLog.take())
        }
        defer { bpf_object__close(object) }

        var result = LoadedObject()
        var reused = Set<String>()
        // Which pinned maps match the embedded definitions; nil: none pinned.
        var compatible: [String: Bool] = [:]
        var map = bpf_object__next_map(object, nil)
        while let current = map {
            let mapName = String(cString: bpf_map__name(current))
            let path = "\(pinDirectory)/\(mapName)"
            if let pinned = try Descriptor.pinned(path) { compatible[mapName] = try isCompatible(current, pinned, path) }
            map = bpf_object__next_map(object, current)
        }
        // The policy's maps go together: the programs still attached keep the maps they were
        // loaded with until the new ones replace them, and the policy is installed before that.
        // Were some of the set reused (the select word, sources, items) and others recreated,
        // that install would switch the attached programs' word to a generation whose other
        // half is what they last held there: a mixture of two policies (an older build's, a
        // pin removed behind our back). One of the set recreated recreates all of it.
        let policyPinned = policyMapSet.filter { compatible[$0] != nil }
        let renewPolicy = !policyPinned.isEmpty && policyMapSet.contains { compatible[$0] != true }
        map = bpf_object__next_map(object, nil)
        while let current = map {
            let mapName = String(cString: bpf_map__name(current))
            let path = "\(pinDirectory)/\(mapName)"
            if let isCompatible = compatible[mapName] {
                if isCompatible, !(renewPolicy && policyMapSet.contains(mapName)), let pinned = try Descriptor.pinned(path) {
                    try check(bpf_map__reuse_fd(current, pinned.raw), "reuse pinned map", path)
                    reused.insert(mapName)
                } else {
                    // The embedded definition changed: start afresh; the reconciler refills it.
                    try BPFFileSystem.unpin(path)
                    result.recreatedMaps.append(mapName)
                }
            }
            map = bpf_object__next_map(object, current)
        }

        try check(bpf_object__load(object), "load BPF object", name)

        map = bpf_object__next_map(object, nil)
        while let current = map {
            let mapName = String(cString: bpf_map__name(current))
            let path = "\(pinDirectory)/\(mapName)"
            let fd = try Descriptor.duplicate(bpf_map__fd(current), "map \(mapName)")
            if !reused.contains(mapName) { try check(bpf_obj_pin(fd.raw, path), "pin map", path) }
            var info = bpf_map_info()
            var length = UInt32(MemoryLayout<bpf_map_info>.size)
            try check(bpf_obj_get_info_by_fd(fd.raw, &info, &length), "read map info of", path)
            result.maps[mapName] = fd
            result.mapIDs[mapName] = info.id
            map = bpf_object__next_map(object, current)
        }
        var program = bpf_object__next_program(object, nil)
        while let current = program {
            let programName = String(cString: bpf_program__name(current))
            result.programs[programName] = try Descriptor.duplicate(bpf_program__fd(current), "program \(programName)")
            program = bpf_object__next_program(object, current)
        }
        return result
    }

    /// The maps one policy generation is spread over (bpf/policy.h), with the counters and the
    /// fragments the generations index: recreated together or not at all. (`policy_flows`, the
    /// flows clients opened, holds no generation and stays.)
    static let policyMapSet: Set<String> = [
        "policy_select", "policy_info", "policy_sources", "policy_source_prefixes_0", "policy_source_prefixes_1",
        "policy_rules", "policy_items", "policy_counters", "policy_fragments",
    ]

    private static func isCompatible(_ map: OpaquePointer, _ pinned: Descriptor, _ path: String) throws -> Bool {
        var info = bpf_map_info()
        var length = UInt32(MemoryLayout<bpf_map_info>.size)
        try check(bpf_obj_get_info_by_fd(pinned.raw, &info, &length), "read map info of", path)
        return info.type == bpf_map__type(map).rawValue
            && info.key_size == bpf_map__key_size(map)
            && info.value_size == bpf_map__value_size(map)
            && info.max_entries == bpf_map__max_entries(map)
            && info.map_flags == bpf_map__map_flags(map)
    }

    /// The object the build embedded (see Plugins/BPFObjectPlugin).
    static var embeddedBytes: [UInt8] {
        let text = bpfObject_datapath.withUTF8Buffer { String(decoding: $0, as: UTF8.self) }
        guard let data = Data(base64Encoded: text) else { preconditionFailure("the embedded BPF object is not base64") }
        return Array(data)
    }
}
