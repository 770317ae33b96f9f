import CBPF
import Foundation
import Glibc
import TestSupport

/// A program of bpf/datapath.bpf.c compiled here with `DATAPATH_MEASURE_HOT` (tunnel_ingress
/// stops before it changes the packet, so one test run can repeat it) and loaded on the maps
/// pinned in `pinDirectory`: it sees the entries the datapath under test holds. Its descriptor,
/// for the caller to close. Compiled as the build's plugin compiles the object
/// (Plugins/BPFObjectPlugin), with the toolchain's clang or `CLANG`.
func measuringProgram(_ name: String, pinDirectory: String) throws -> Int32 {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let source = root.appendingPathComponent("bpf/datapath.bpf.c").path
    let candidates = [ProcessInfo.processInfo.environment["CLANG"], "/opt/swift/usr/bin/clang", "/usr/bin/clang"].compactMap { $0 }
    guard let clang = candidates.first(where: { !$0.isEmpty && FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw TestFailure("no clang with a BPF backend (tried \(candidates.joined(separator: ", "))): set CLANG")
    }
    var machine = utsname()
    uname(&machine)
    let architecture = withUnsafeBytes(of: machine.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    let object = FileManager.default.temporaryDirectory.appendingPathComponent("wgk-measure-\(UInt32.random(in: 0...UInt32.max)).o").path
    defer { unlink(object) }
    try shell(clang, "-target", "bpf", "-O2", "-g", "-Wall", "-Werror", "-DDATAPATH_MEASURE_HOT",
              "-I/usr/include/\(architecture)-linux-gnu", "-c", source, "-o", object)

    guard let loaded = bpf_object__open_file(object, nil) else { throw TestFailure("open \(object): errno \(errno)") }
    defer { bpf_object__close(loaded) }
    var other = bpf_object__next_program(loaded, nil)
    while let current = other {
        if String(cString: bpf_program__name(current)) != name { bpf_program__set_autoload(current, false) }
        other = bpf_object__next_program(loaded, current)
    }
    var map = bpf_object__next_map(loaded, nil)
    while let current = map {
        // Global data (none now) would be the build's own.
        if bpf_map__is_internal(current) { map = bpf_object__next_map(loaded, current); continue }
        let path = "\(pinDirectory)/\(String(cString: bpf_map__name(current)))"
        let pinned = bpf_obj_get(path)
        guard pinned >= 0 else { throw TestFailure("\(path) is not pinned: errno \(errno)") }
        defer { close(pinned) }
        guard bpf_map__reuse_fd(current, pinned) == 0 else { throw TestFailure("reuse \(path): errno \(errno)") }
        map = bpf_object__next_map(loaded, current)
    }
    guard bpf_object__load(loaded) == 0 else { throw TestFailure("load the measuring build: errno \(errno)") }
    guard let program = bpf_object__find_program_by_name(loaded, name) else { throw TestFailure("no program \(name)") }
    let descriptor = dup(bpf_program__fd(program))
    guard descriptor >= 0 else { throw TestFailure("dup: errno \(errno)") }
    return descriptor
}
