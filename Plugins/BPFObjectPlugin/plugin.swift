import Foundation
import PackagePlugin

/// Compiles `bpf/*.bpf.c` with clang's BPF backend and embeds each object in the target as a
/// base64 string literal (a byte-array literal of this size is slow to type-check).
@main
struct BPFObjectPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let bpf = context.package.directoryURL.appending(path: "bpf")
        let files = try FileManager.default.contentsOfDirectory(at: bpf, includingPropertiesForKeys: nil)
            .sorted { $0.path < $1.path }
        let headers = files.filter { $0.pathExtension == "h" }
        let clang = try findClang(context)
        return files.filter { $0.lastPathComponent.hasSuffix(".bpf.c") }.map { source in
            let name = String(source.lastPathComponent.dropLast(".bpf.c".count))
            let output = context.pluginWorkDirectoryURL.appending(path: "BPFObject+\(name).swift")
            let symbol = "bpfObject_" + name.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
            // The multiarch directory holds <asm/types.h>, which the UAPI headers include.
            let script = """
                set -eu
                obj="${3%.swift}.o"
                "$1" -target bpf -O2 -g -Wall -Werror -I/usr/include/"$(uname -m)"-linux-gnu -c "$2" -o "$obj"
                { printf '// Generated from %s by BPFObjectPlugin; do not edit.\\n' "$2"
                  printf 'let %s: StaticString = "' "$4"
                  base64 -w0 "$obj"
                  printf '"\\n'; } > "$3.tmp"
                mv "$3.tmp" "$3"
                """
            return .buildCommand(
                displayName: "Compiling BPF object \(source.lastPathComponent)",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: ["-c", script, "sh", clang.path, source.path, output.path, symbol],
                inputFiles: [source] + headers,
                outputFiles: [output]
            )
        }
    }

    /// clang from the Swift toolchain (it has the BPF backend), else from PATH; `CLANG` overrides.
    private func findClang(_ context: PluginContext) throws -> URL {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["CLANG"], !explicit.isEmpty { return URL(fileURLWithPath: explicit) }
        if let tool = try? context.tool(named: "clang") { return tool.url }
        let path = (environment["PATH"] ?? "") + ":/opt/swift/usr/bin:/usr/bin"
        for directory in path.split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(directory)).appending(path: "clang")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw PluginError("clang not found: install a Swift toolchain with clang or set CLANG")
    }
}

struct PluginError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
