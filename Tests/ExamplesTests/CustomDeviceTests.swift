// Examples/custom-device end to end: the checksum engine (a device model in Swift, built into
// its own engine library) driven by the example's C program through VFIO and iommufd under
// `ioasid run --engine`, and listed by `ioasid devices --engine`.
import Foundation
import Testing

/// Where the example and the built products are.
enum CustomDeviceExample {
    /// The package root (this file is Tests/ExamplesTests/CustomDeviceTests.swift).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Where `swift build` put the products (the test runner's directory).
    static let products: String = {
        if let configured = ProcessInfo.processInfo.environment["IOASID_BIN_PATH"] { return configured }
        let runner = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: runner).deletingLastPathComponent().path
    }()
    static var ioasid: String { products + "/ioasid" }
    static var engine: String { products + "/libCustomDeviceEngine.so" }
    static let compiler: String? = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    static let available: Bool = compiler != nil
        && [ioasid, engine, products + "/libioasid-preload.so"].allSatisfy { FileManager.default.fileExists(atPath: $0) }

    /// The example's C program, built once (with the warnings a careful driver author uses).
    static let program: Result<String, ExampleError> = Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-custom-device-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let output = directory + "/checksum"
        let built = try run(compiler!, ["-O2", "-Wall", "-Wextra", "-Werror", "-o", output,
                                        root.appendingPathComponent("Examples/custom-device/checksum.c").path])
        guard built.exited(0) else { throw ExampleError(message: "cc Examples/custom-device/checksum.c failed:\n\(built)") }
        return output
    }.mapError { $0 as? ExampleError ?? ExampleError(message: "\($0)") }

}

@Suite(.enabled(if: CustomDeviceExample.available, "needs `swift build` products next to the test bundle and `cc`"))
struct CustomDeviceTests {
    typealias Example = CustomDeviceExample

    /// The bytes the program fills its buffer with (checksum.c, `data[i]`).
    static func pattern(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 131 &+ 7) ^ UInt8(truncatingIfNeeded: i >> 8) }

    /// 64-bit FNV-1a, computed here independently of the device and of the C program.
    static func fnv1a(_ bytes: some Sequence<UInt8>) -> UInt64 {
        bytes.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01b3 }
    }

    @Test(arguments: ["vtd:csum", "smmuv3:csum", "vtd:ioat,smmuv3,vtd:csum"])
    func theCProgramDrivesTheSwiftDeviceThroughVFIO(machine: String) throws {
        let program = try Example.program.get()
        let outcome = try run(Example.ioasid, ["run", "--engine", Example.engine, "--machine", machine, "--", program])
        #expect(outcome.exited(0), "\(outcome)")
        let lines = outcome.standardOutput.split(separator: "\n").map(String.init)
        // Found in sysfs by its IDs, wherever the specification puts it.
        let slot = machine.split(separator: ",").count
        #expect(lines.first == "ok found the checksum engine at 0100:00:0\(slot).0, VFIO cdev vfio\(slot - 1)", "\(outcome)")
        // The device's checksum is the real one: the C program's, and this test's own.
        let expected = Self.fnv1a((100..<40100).map(Self.pattern))
        let hex = "0x" + String(repeating: "0", count: 16 - String(expected, radix: 16).count) + String(expected, radix: 16)
        #expect(lines.contains("device checksum \(hex), computed \(hex), in memory \(hex)"), "\(outcome)")
        // An unmapped IOVA: the error status (source fault), the IOMMU's fault record in the
        // device's registers — the IOVA, this requester (slot << 3), a read, no translation.
        let requester = String(slot << 3, radix: 16)
        #expect(lines.contains("unmapped source: status 0x103, fault address 0x40000000, fault info 0x10000\(requester.count == 1 ? "0" : "")\(requester)"), "\(outcome)")
        for check in ["ok DMA across the end of the mapping faults at IOVA 0x110000",
                      "ok result to a read-only page: write permission fault, memory unchanged",
                      "ok with bus mastering off the device issues no DMA"] {
            #expect(lines.contains(check), "missing: \(check)\n\(outcome)")
        }
        #expect(lines.last == "checksum: all checks passed", "\(outcome)")
    }

    @Test func devicesListsTheCustomKindWithItsEngine() throws {
        let listed = try run(Example.ioasid, ["devices", "--engine", Example.engine, "--machine", "vtd:csum,smmuv3:ioat"])
        #expect(listed.exited(0), "\(listed)")
        #expect(listed.standardOutput == """
            0100:00:01.0 Processing accelerators [1200]: ioasid checksum engine [1b36:00f1] (rev 01) kind=csum iommu=vtd group=0 cdev=vfio0 caps=msix,pcie
            0100:00:02.0 System peripheral [0880]: Intel I/OAT DMA engine [8086:2021] (rev 04) kind=ioat iommu=smmuv3 group=1 cdev=vfio1 caps=msix,pcie,pm

            """, "\(listed)")
        // The built-in engine does not know the kind; neither does run without --engine.
        let builtIn = try run(Example.ioasid, ["devices", "--machine", "vtd:csum"])
        #expect(builtIn.exited(2) && builtIn.standardError.contains("unknown device 'csum' in 'vtd:csum' (known: pci, ioat; or a count)"), "\(builtIn)")
        let withBuiltInEngine = try run(Example.ioasid, ["devices", "--engine", Example.products + "/libIOASIDEngine.so", "--machine", "vtd:csum"])
        #expect(withBuiltInEngine.exited(2), "\(withBuiltInEngine)")
        let runWithout = try run(Example.ioasid, ["run", "--machine", "vtd:csum", "--", "/bin/true"])
        #expect(runWithout.exited(2) && runWithout.standardError.contains("unknown device 'csum'"), "\(runWithout)")
        let runWrongKind = try run(Example.ioasid, ["run", "--engine", Example.engine, "--machine", "vtd:sum", "--", "/bin/true"])
        #expect(runWrongKind.exited(2) && runWrongKind.standardError.contains("(known: pci, ioat, csum; or a count)"), "\(runWrongKind)")
        let noEngine = try run(Example.ioasid, ["run", "--engine", "/nonexistent/engine.so", "--", "/bin/true"])
        #expect(noEngine.exited(125), "\(noEngine)")
    }

    @Test func theReadmeGivesTheCommandsTheTestRuns() throws {
        let readme = try String(contentsOf: Example.root.appendingPathComponent("Examples/custom-device/README.md"), encoding: .utf8)
        #expect(readme.contains("swift build && cc -O2 -Wall -o checksum Examples/custom-device/checksum.c"))
        #expect(readme.contains(".build/debug/ioasid run --engine .build/debug/libCustomDeviceEngine.so --machine vtd:csum -- ./checksum"))
    }
}

struct ExampleError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// How a process ended and what it printed.
struct ExampleOutcome: CustomStringConvertible {
    var status: Int32
    var signalled: Bool
    var standardOutput: String
    var standardError: String

    func exited(_ code: Int32) -> Bool { !signalled && status == code }

    var description: String {
        "\(signalled ? "signal" : "exit") \(status)\n--- stdout\n\(standardOutput)--- stderr\n\(standardError)"
    }
}

/// Runs `executable` with a time limit (timeout(1): TERM after 120 s, KILL 5 s later), the test's
/// environment without any preload settings, standard input from /dev/null.
func run(_ executable: String, _ arguments: [String]) throws -> ExampleOutcome {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
    process.arguments = ["-k", "5", "120", executable] + arguments
    process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("IOASID_") && $0.key != "LD_PRELOAD" }
    let errorFile = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-example-stderr-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: errorFile.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: errorFile) }
    let errorHandle = try FileHandle(forWritingTo: errorFile)
    let output = Pipe()
    process.standardOutput = output
    process.standardError = errorHandle
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let standardOutput = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    try errorHandle.close()
    return ExampleOutcome(status: process.terminationStatus, signalled: process.terminationReason == .uncaughtSignal,
                          standardOutput: String(decoding: standardOutput, as: UTF8.self),
                          standardError: (try? String(contentsOf: errorFile, encoding: .utf8)) ?? "")
}
