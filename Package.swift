// swift-tools-version:6.0
import PackageDescription

// The layers and which module may import which: docs/architecture.md (the table there is the
// one statement; LayeringTests checks the sources against it).
let package = Package(
    name: "ioasid",
    platforms: [.macOS(.v15)],
    products: [
        // Everything a Swift user imports: the object model, the structures its API speaks in, the
        // software IOMMU and its drivers (SoftMachine), the IOASID layer, the mock test driver and
        // the Linux ABI (ProcessMemory, the dispatcher).
        .library(name: "IOASID", targets: ["IOASIDStructures", "IOASIDCore", "IOASIDSoftIOMMU", "IOASIDSoftDrivers",
                                           "IOASIDSets", "IOASIDTestDriver", "IOASIDProcessMemory", "IOASIDLinuxABI"]),
        .library(name: "IOASIDEngine", type: .dynamic, targets: ["IOASIDEngine"]),
        // The engine's module for a package that builds its own engine library with device kinds
        // of its own: its dynamic library product lists its device module and depends on this
        // (docs/machine.md, "Adding a device kind").
        .library(name: "IOASIDEngineKit", targets: ["IOASIDEngine"]),
        // Examples/custom-device: the engine with the example's checksum device built in (one
        // library, one copy of the model types), for `ioasid run --engine`.
        .library(name: "CustomDeviceEngine", type: .dynamic, targets: ["IOASIDEngine", "ChecksumDevice"]),
        .library(name: "ioasid-preload", type: .dynamic, targets: ["CIOASIDPreload"]),
        .executable(name: "ioasid", targets: ["ioasid"]),
        .executable(name: "ioasid-benchmark", targets: ["ioasid-benchmark"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        // `swift package generate-documentation` (scripts/docs.sh); a plugin, linked into nothing.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .target(name: "IOASIDStructures"),
        // Layer 2: the software IOMMU (page-table formats in modelled memory, IOTLBs, VT-d, SMMUv3).
        .target(name: "IOASIDSoftIOMMU", dependencies: ["IOASIDStructures", "CIOASIDSys"]),
        .target(name: "IOASIDCore", dependencies: ["IOASIDStructures", "CIOASIDFaultInjection"]),
        // The IOASID layer of the original design: host PASID allocation with per-VM sets.
        .target(name: "IOASIDSets", dependencies: ["IOASIDCore", "IOASIDStructures"]),
        .target(name: "IOASIDTestDriver", dependencies: ["IOASIDCore"]),
        // This process's memory as a context's user memory (system calls: fault-safe copies, pins).
        .target(name: "IOASIDProcessMemory", dependencies: ["IOASIDCore", "CIOASIDSys"]),
        // Drivers under the core on the software IOMMU: VT-d scalable mode and SMMUv3.
        .target(name: "IOASIDSoftDrivers", dependencies: ["IOASIDCore", "IOASIDSoftIOMMU", "IOASIDStructures"]),
        .target(name: "CIOASIDSys"),
        // The per-thread fault-injection word (fail-nth and `ioasid run --fail`), read by every injection point.
        .target(name: "CIOASIDFaultInjection"),
        // `ioasid demo`: the seed end to end on the software IOMMU (a library, so tests can run it).
        .target(name: "IOASIDDemo", dependencies: ["IOASIDCore", "IOASIDSets", "IOASIDSoftIOMMU", "IOASIDSoftDrivers", "IOASIDProcessMemory", "IOASIDStructures"]),
        .target(name: "IOASIDLinuxABI", dependencies: ["IOASIDProcessMemory", "IOASIDStructures", "IOASIDCore", "IOASIDSets", "IOASIDTestDriver", "IOASIDSoftIOMMU", "IOASIDSoftDrivers", "CIOASIDSys"]),
        // The report page (layer 6): plain values in, self-contained HTML out.
        .target(name: "IOASIDReport", dependencies: ["IOASIDCore", "IOASIDLinuxABI", "IOASIDStructures"]),
        .target(name: "IOASIDEngine", dependencies: ["IOASIDLinuxABI", "IOASIDReport", "IOASIDCore", "IOASIDTestDriver", "IOASIDSoftDrivers", "IOASIDSoftIOMMU", "CIOASIDSys"]),
        // The preload links CIOASIDSys for the safe user copies (its handler fixes up their faults;
        // the engine it loads then binds to the preload's copy of those symbols).
        .target(name: "CIOASIDPreload", dependencies: ["CIOASIDSys"], linkerSettings: [.linkedLibrary("dl")]),
        .executableTarget(name: "ioasid", dependencies: [
            "IOASIDCore",
            "IOASIDLinuxABI",
            "IOASIDSoftDrivers",
            "IOASIDDemo",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .executableTarget(name: "ioasid-benchmark", dependencies: ["IOASIDProcessMemory", "IOASIDLinuxABI", "IOASIDCore", "IOASIDSets", "IOASIDTestDriver", "IOASIDSoftIOMMU", "IOASIDSoftDrivers", "CIOASIDSys"]),
        // Examples: a device emulator in Swift on the software IOMMU.
        .executableTarget(name: "device-emulator", dependencies: ["IOASIDProcessMemory", "IOASIDCore", "IOASIDLinuxABI", "IOASIDSoftDrivers", "IOASIDSoftIOMMU"],
                          path: "Examples/device-emulator"),
        // The README's quick start, verbatim (a test checks that the README prints this file).
        .executableTarget(name: "quick-start", dependencies: ["IOASIDProcessMemory", "IOASIDCore", "IOASIDLinuxABI", "IOASIDTestDriver"],
                          path: "Examples/quick-start"),
        // Examples: a custom device in Swift, used from a C program through VFIO (Examples/custom-device).
        .target(name: "ChecksumDevice", dependencies: ["IOASIDSoftIOMMU", "IOASIDSoftDrivers"],
                path: "Examples/custom-device/ChecksumDevice"),
        .testTarget(name: "ExamplesTests", dependencies: ["ChecksumDevice", "IOASIDSoftDrivers", "IOASIDSoftIOMMU"]),
        .testTarget(name: "IOASIDStructuresTests", dependencies: ["IOASIDStructures"]),
        .testTarget(name: "IOASIDSoftIOMMUTests", dependencies: ["IOASIDSoftIOMMU", "IOASIDStructures"]),
        .testTarget(name: "IOASIDSoftDriversTests", dependencies: ["IOASIDProcessMemory", "IOASIDSoftDrivers", "IOASIDSoftIOMMU", "IOASIDCore", "IOASIDStructures", "IOASIDLinuxABI", "IOASIDSets"]),
        .testTarget(name: "IOASIDDemoTests", dependencies: ["IOASIDProcessMemory", "IOASIDDemo", "IOASIDSets", "IOASIDCore", "IOASIDSoftDrivers", "IOASIDSoftIOMMU", "IOASIDLinuxABI", "IOASIDStructures"]),
        .testTarget(name: "IOASIDSetsTests", dependencies: ["IOASIDProcessMemory", "IOASIDSets", "IOASIDStructures", "IOASIDCore", "IOASIDTestDriver", "IOASIDLinuxABI"]),
        .testTarget(name: "IOASIDCoreTests", dependencies: ["IOASIDProcessMemory", "IOASIDCore", "IOASIDTestDriver", "IOASIDLinuxABI", "IOASIDStructures"]),
        .testTarget(name: "IOASIDReportTests", dependencies: ["IOASIDReport", "IOASIDCore", "IOASIDLinuxABI", "IOASIDStructures", "IOASIDTestDriver"]),
        // zlib, for the render check that decodes a headless browser's PNG screenshot.
        .systemLibrary(name: "CZlib", path: "Tests/CZlib"),
        .testTarget(name: "IOASIDLinuxABITests", dependencies: ["IOASIDProcessMemory", "IOASIDLinuxABI", "CIOASIDSys", "IOASIDStructures", "IOASIDSoftDrivers", "IOASIDSoftIOMMU", "IOASIDReport", "CZlib"]),
    ]
)
