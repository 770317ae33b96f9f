// swift-tools-version:6.0
import PackageDescription

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
    ],
    targets: [
        // System libraries: each shim includes exactly what its module needs.
        .systemLibrary(name: "CNetlink", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        .systemLibrary(name: "CBPF", pkgConfig: "libbpf", providers: [.apt(["libbpf-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),

        .target(
            name: "Netlink",
            dependencies: ["CNetlink", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .executableTarget(
            name: "wgkeeper",
            dependencies: ["Netlink", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(name: "wgkeeper-bench", dependencies: ["Netlink"], path: "Sources/Bench"),

        .testTarget(name: "NetlinkTests", dependencies: ["Netlink"], resources: [.copy("Fixtures")]),
        .testTarget(name: "KernelTests", dependencies: ["Netlink"]),
    ],
    swiftLanguageModes: [.v6]
)
