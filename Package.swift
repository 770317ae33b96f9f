// swift-tools-version:6.0
import PackageDescription

// Tiers (see Makefile): test targets whose name ends in `KernelTests` need root and run in
// throwaway network namespaces on the host kernel; `VMTests` run inside the VM; the rest are unit.
let package = Package(
    name: "wgkeeper",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "wgkeeper", targets: ["wgkeeper"]),
        .library(name: "Netlink", targets: ["Netlink"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // System libraries: each shim includes exactly what its module needs.
        .systemLibrary(name: "CNetlink", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        .systemLibrary(name: "CBPF", pkgConfig: "libbpf", providers: [.apt(["libbpf-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(name: "CLinux"),
        // libyaml's event parser: Config builds its tree from events with an explicit stack.
        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1", providers: [.apt(["libyaml-dev"])]),

        // Edges: the kernel.
        .target(
            name: "Netlink",
            dependencies: [
                "CNetlink",
                "X25519",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // Optimised in every configuration: unoptimised it is 160 times slower (13 ms a key), which
        // made a test that derives 2 000 keys take minutes under the VM tier's emulation.
        .target(name: "X25519", swiftSettings: [.unsafeFlags(["-O"])]),
        // The BPF object (bpf/) is compiled by the plugin and embedded as a generated source.
        .target(name: "Datapath", dependencies: ["CBPF", "Netlink", "Reconciler"], plugins: ["BPFObjectPlugin"]),
        .plugin(name: "BPFObjectPlugin", capability: .buildTool()),

        // The pure core and its input.
        .target(name: "Reconciler", dependencies: ["Netlink"]),
        .target(name: "Config", dependencies: ["Reconciler", "Netlink", "CYAML", "CLinux"]),

        // The loop and the command line.
        .target(
            name: "Daemon",
            dependencies: [
                "Config", "Reconciler", "Datapath", "Netlink", "CSystemd", "CLinux",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "wgkeeper",
            dependencies: [
                "Config", "Reconciler", "Daemon", "Datapath", "Netlink",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "wgkeeper-bench", dependencies: ["Netlink", "Config", "CBPF", "Datapath"], path: "Sources/Bench"),

        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "X25519", "TestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "DatapathKernelTests", dependencies: ["Datapath", "Netlink", "CBPF", "Reconciler", "TestSupport"]),
        .testTarget(name: "DatapathVMTests", dependencies: ["Datapath", "Netlink", "TestSupport"]),
        .target(name: "TestSupport", dependencies: ["Netlink", "Reconciler"], path: "Tests/TestSupport"),
        .testTarget(name: "DaemonVMTests", dependencies: ["Netlink", "TestSupport"]),
        .testTarget(name: "KernelTests", dependencies: ["Netlink", "TestSupport"]),
        .testTarget(name: "WireGuardVMTests", dependencies: ["Netlink", "TestSupport"]),
        .testTarget(name: "DaemonKernelTests", dependencies: ["Datapath", "Netlink", "TestSupport"]),
        .testTarget(name: "DaemonTests", dependencies: ["Daemon", "Reconciler", "Netlink", "TestSupport"]),
        .testTarget(name: "ConfigTests", dependencies: ["Config", "Reconciler", "Netlink", "TestSupport"]),
        .testTarget(name: "ReconcilerTests", dependencies: ["Reconciler", "Netlink", "TestSupport"]),
        .testTarget(name: "ReconcilerKernelTests", dependencies: ["Reconciler", "Config", "Netlink", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)

// libFuzzer targets (Fuzz/, `make fuzz`, scripts/fuzz). Declared only when WGKEEPER_FUZZ is set,
// which scripts/fuzz does for its own scratch path (.build-fuzz): `swift build` and `swift test`
// never see them, and their sanitizer flags never reach the normal build.
if Context.environment["WGKEEPER_FUZZ"] != nil {
    func fuzzTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
        .executableTarget(name: "fuzz-\(name)", dependencies: dependencies + ["FuzzDriver"], path: "Fuzz/Sources/\(name)")
    }
    package.targets += [
        .systemLibrary(name: "CFuzzer", path: "Fuzz/Sources/CFuzzer"),
        .target(name: "FuzzDriver", dependencies: ["CFuzzer"], path: "Fuzz/Sources/FuzzDriver"),
        fuzzTarget("rtnetlink", ["Netlink"]),
        fuzzTarget("wireguard", ["Netlink"]),
        fuzzTarget("config", ["Config"]),
        // StatusRequest.parse (Sources/Daemon/StatusRequest.swift) comes with the status server's hardening.
        fuzzTarget("status-request", ["Daemon"]),
    ]
}
