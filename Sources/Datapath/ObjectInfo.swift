import CBPF
import Glibc

/// What the kernel says about a loaded program.
struct ProgramInfo: Equatable {
    var id: UInt32
    /// The kernel's SHA-1 prefix over the instructions, with map references zeroed.
    var tag: [UInt8]
    var mapIDs: [UInt32]
    /// The program's name as the kernel keeps it (at most 15 characters).
    var name: String

    init(_ fd: Descriptor, _ object: String) throws {
        var info = bpf_prog_info()
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        try check(bpf_obj_get_info_by_fd(fd.raw, &info, &length), "read program info of", object)
        id = info.id
        tag = withUnsafeBytes(of: info.tag) { Array($0) }
        name = withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        var ids = [UInt32](repeating: 0, count: Int(info.nr_map_ids))
        if !ids.isEmpty {
            var second = bpf_prog_info()
            second.nr_map_ids = UInt32(ids.count)
            length = UInt32(MemoryLayout<bpf_prog_info>.size)
            try ids.withUnsafeMutableBufferPointer { buffer in
                second.map_ids = UInt64(UInt(bitPattern: buffer.baseAddress))
                try check(bpf_obj_get_info_by_fd(fd.raw, &second, &length), "read map ids of", object)
            }
        }
        mapIDs = ids.sorted()
    }

    /// Same code over the same maps: such a program can stay attached. The tag alone is not
    /// enough, since it ignores which maps the instructions point at.
    func isEquivalent(to other: ProgramInfo) -> Bool { tag == other.tag && mapIDs == other.mapIDs }

    var tagText: String { tag.map { String($0, radix: 16).leftPadded(2) }.joined() }

    static func descriptor(id: UInt32) throws -> Descriptor {
        Descriptor(try check(bpf_prog_get_fd_by_id(id), "open program", "id \(id)"))
    }
}

/// What the kernel says about a BPF link.
struct LinkInfo {
    var id: UInt32
    var type: UInt32
    var programID: UInt32
    /// For a TCX link: the device it is attached to, zero when detached or the device is gone.
    var interfaceIndex: UInt32

    init(_ fd: Descriptor, _ object: String) throws {
        var info = bpf_link_info()
        var length = UInt32(MemoryLayout<bpf_link_info>.size)
        try check(bpf_obj_get_info_by_fd(fd.raw, &info, &length), "read link info of", object)
        id = info.id
        type = info.type
        programID = info.prog_id
        interfaceIndex = wgk_link_info_tcx_ifindex(&info)
    }

    var isTCX: Bool { type == UInt32(WGK_BPF_LINK_TYPE_TCX) }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
