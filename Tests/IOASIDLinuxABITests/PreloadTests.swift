import Foundation
import Testing

// The front doors, tested from the outside: C fixtures (Tests/Fixtures) are compiled with `cc` at
// test time and run under the built `ioasid run`, or directly under libioasid-preload.so with a
// fake engine. These tests need the products of `swift build` (ioasid, libioasid-preload.so,
// libIOASIDEngine.so) next to the test bundle; without them, or without `cc`, they are skipped.
// Set IOASID_BIN_PATH to test products elsewhere.

@Suite(.enabled(if: BuiltProducts.available, "needs `swift build` products next to the test bundle and `cc`"))
struct PreloadTests {
    // MARK: Programs that never open /dev/iommu

    @Test func programWithoutIOMMURunsUnchangedAndNeverLoadsTheEngine() throws {
        let fixtures = try Fixtures.shared.get()
        let plain = try run(fixtures.passthrough)
        #expect(plain.exited(0), "\(plain)")
        let preloaded = try runUnderIOASID([fixtures.passthrough, "preloaded"])
        #expect(preloaded.exited(0), "\(preloaded)")
        #expect(preloaded.standardOutput.contains("ok engine not loaded"))
        #expect(preloaded.standardOutput.contains("passthrough ok"))
        #expect(preloaded.standardError.isEmpty, "\(preloaded)")
    }

    @Test(arguments: [0, 1, 42, 255] as [Int32])
    func exitStatusPassesThrough(_ status: Int32) throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID([fixtures.status, "exit", String(status)])
        #expect(outcome.exited(status), "\(outcome)")
    }

    @Test(arguments: [SIGTERM, SIGKILL, SIGSEGV, SIGUSR1] as [Int32])
    func deathBySignalPassesThrough(_ signal: Int32) throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID([fixtures.status, "signal", String(signal)])
        #expect(outcome.killed(by: signal), "\(outcome)")
    }

    @Test func terminationIsForwardedToTheProgram() throws {
        let fixtures = try Fixtures.shared.get()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: BuiltProducts.directory + "/ioasid")
        process.arguments = ["run", "--", fixtures.status, "wait"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        var ready = Data()
        while !String(decoding: ready, as: UTF8.self).contains("ready\n") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            ready.append(chunk)
        }
        process.terminate()  // SIGTERM to ioasid, which forwards it to the program
        process.waitUntilExit()
        #expect(String(decoding: ready, as: UTF8.self) == "ready\n")
        #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGTERM)
    }

    @Test func missingProgramExits127() throws {
        let outcome = try runUnderIOASID(["/nonexistent/ioasid-program"])
        #expect(outcome.exited(127), "\(outcome)")
        #expect(outcome.standardError.contains("No such file or directory"))
    }

    // MARK: /dev/iommu through the real engine

    @Test func iommuCallsReachTheEngine() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID([fixtures.iommu])
        #expect(outcome.exited(0), "\(outcome)")
        outcome.expectOK(["open and ioctl reach the engine", "poll", "file-level ioctls", "open variants", "dup outlives the original",
                          "dup2, dup3, F_DUPFD", "fork", "close_range", "threads", "close"])
    }

    /// Bad argument and array pointers are EFAULT, as on the kernel (the fixture's expectations
    /// were checked on it), from every context a program may call from; nothing is created by
    /// a call that cannot answer, and the program's own SIGSEGV handler keeps its faults.
    @Test func badPointersAreEFAULTNeverACrash() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID([fixtures.badPointers])
        #expect(outcome.exited(0), "\(outcome)")
        for context in ["main thread", "signal handler with every signal masked", "thread blocking SIGSEGV and SIGBUS",
                        "the program's SIGSEGV handler: its own faults reach it", "main thread after all that"] {
            #expect(outcome.standardOutput.contains("ok \(context)"), "missing: \(context)\n\(outcome)")
        }
    }

    /// Handlers that call /dev/iommu while their thread is inside a call on it: they run when
    /// that call has returned, as on the kernel (without that, this deadlocks on the engine's
    /// lock), with their siginfo; the actions read back as the program installed them.
    @Test func signalHandlersCallingTheEngineWaitForItsCallToEnd() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["/usr/bin/timeout", "-k", "5", "120", fixtures.signals, "3000"])
        #expect(outcome.exited(0), "\(outcome)")
        outcome.expectOK(["actions read back as installed", "handlers interrupting calls on /dev/iommu: each ran and made its calls",
                          "SA_RESETHAND"])
    }

    /// Descriptor ownership (the fixture's expectations were checked on the kernel): numbers
    /// closed by raw system calls are the kernel's again, close_range/closefrom/dup2 over ours,
    /// vfork and posix_spawn children, fork during an ioctl, close racing an ioctl, readiness.
    @Test func descriptorsAreOursExactlyWhileTheKernelSaysSo() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["/usr/bin/timeout", "-k", "5", "120", fixtures.fds])
        #expect(outcome.exited(0), "\(outcome)")
        outcome.expectOK(["a number closed by a raw system call is the kernel's again",
                          "close_range, closefrom, dup2 and dup3 over an iommufd",
                          "a vfork child's dup2 and close leave the parent's descriptors alone",
                          "a posix_spawn child's file actions leave the parent's descriptors alone",
                          "fork while another thread is inside an ioctl",
                          "an ioctl racing close answers success or EBADF",
                          "poll follows the descriptor on a reused number"])
    }

    /// Memory the program unmaps while an IOAS maps it: the device never reaches the program's
    /// new memory at that address (the range stays reserved; the DMA is a DMA error).
    @Test func dmaNeverReachesMemoryMappedAfterAnUnmap() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["--machine", "vtd", "--", "/usr/bin/timeout", "-k", "5", "60", fixtures.unmapped])
        #expect(outcome.exited(0), "\(outcome)")
        outcome.expectOK(["DMA lands in the mapped buffer",
                          "after munmap the device never reaches the program's new memory (it gets a DMA error)",
                          "the IOAS unmaps what the program unmapped first"])
    }

    /// Memory that passed the pin check is remembered until the program's mappings change, and
    /// every map still gets the kernel's answer: secret memory put there with `mmap` or
    /// `mremap` (usable by the CPU, never pinned) is `EFAULT`, and so are read-only, `PROT_NONE`
    /// and unmapped pages made with calls the preload does not see.
    @Test func rememberedMemoryStillMeetsThePinRules() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["--machine", "vtd", "--", "/usr/bin/timeout", "-k", "5", "60", fixtures.pinnable])
        #expect(outcome.exited(0), "\(outcome)")
        outcome.expectOK(["memory maps again and again",
                          "read-only, PROT_NONE and unmapped pages are EFAULT, however they came about"])
        if !outcome.standardOutput.contains("ok secret memory skipped") {
            outcome.expectOK(["secret memory mapped over remembered memory is EFAULT", "secret memory moved over remembered memory is EFAULT"])
        }
    }

    @Test func vfioDeviceThroughGroupContainerAndCdev() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["--machine", "vtd", "--", fixtures.vfio])
        #expect(outcome.exited(0), "\(outcome)")
        outcome.expectOK(["group and container", "device info", "pread and pwrite", "msix eventfd", "cdev", "memcpy to and from a mapped BAR", "ioeventfd", "the device held the iommufd"])
    }

    @Test func descriptorsHandedAcrossExecAreTheNodesAgain() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["--machine", "vtd", "--", fixtures.exec])
        #expect(outcome.exited(0), "\(outcome)")
        outcome.expectOK(["handed descriptors are the nodes again", "close-on-exec and foreign descriptors", "bind after exec"])
    }

    @Test func aStaleHandOverListLeavesOtherDescriptorsAlone() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["--machine", "vtd", "--", fixtures.exec, "forged"])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("ok a listed descriptor that is no eventfd is left alone\n"), "\(outcome)")
    }

    @Test func aKVMGuestReachesTheDeviceThroughABARSlot() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["--machine", "vtd", "--", fixtures.kvmBAR])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("ok a KVM guest's accesses to a BAR slot reach the device\n")
                || outcome.standardOutput.contains("skip kvm"), "\(outcome)")
    }

    @Test func kvmVFIODeviceAcceptsTheServedVFIOFiles() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["--machine", "vtd", "--", fixtures.kvm])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("ok the request on another descriptor reaches the kernel\n"), "\(outcome)")
        #expect(outcome.standardOutput.contains("ok kvm-vfio accepts ioasid's VFIO files and refuses the rest\n")
                || outcome.standardOutput.contains("skip kvm"), "\(outcome)")
    }

    @Test func traceToFile() throws {
        let fixtures = try Fixtures.shared.get()
        let file = fixtures.directory + "/trace-\(UUID().uuidString).log"
        try "stale".write(toFile: file, atomically: true, encoding: .utf8)
        let outcome = try runUnderIOASID(["--trace=\(file)", "--", fixtures.iommu])
        #expect(outcome.exited(0), "\(outcome)")
        let trace = try String(contentsOfFile: file, encoding: .utf8)
        #expect(!trace.hasPrefix("stale"), "the trace file is truncated first")
        #expect(trace.contains(" open path=/dev/iommu flags=0x2 -> "))
        #expect(trace.contains("file released"))
        let lines = trace.split(separator: "\n")
        #expect(!lines.isEmpty && lines.allSatisfy { $0.hasPrefix("[pid ") }, "every line names its process")
        #expect(!outcome.standardError.contains("[pid "))
    }

    @Test func bareTraceGoesToStandardError() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["--trace", fixtures.iommu])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardError.contains(" open path=/dev/iommu flags="))
    }

    // MARK: The preload contract, against a fake engine

    @Test func preloadContractWithAFakeEngine() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try run(fixtures.contract, environment: [
            "LD_PRELOAD": BuiltProducts.directory + "/libioasid-preload.so",
            "IOASID_ENGINE": fixtures.fakeEngine,
        ])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("contract ok"))
    }

    @Test func missingEngineFailsOpenWithENXIO() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try run(fixtures.contract, arguments: ["missing-engine"], environment: [
            "LD_PRELOAD": BuiltProducts.directory + "/libioasid-preload.so",
            "IOASID_ENGINE": fixtures.directory + "/no-such-engine.so",
        ])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardError.contains("ioasid-preload: cannot load the engine"))
    }

    // MARK: The launcher's environment and help

    @Test func environmentForTheProgram() throws {
        let defaults = try runUnderIOASID(["--", "/usr/bin/env"], environment: ["LD_PRELOAD": "libm.so.6", "IOASID_TRACE": "x"])
        #expect(defaults.exited(0), "\(defaults)")
        let variables = defaults.environmentLines
        #expect(variables["LD_PRELOAD"] == BuiltProducts.directory + "/libioasid-preload.so:libm.so.6")
        #expect(variables["IOASID_ENGINE"] == BuiltProducts.directory + "/libIOASIDEngine.so")
        #expect(variables["IOASID_TEST_DRIVER"] == "1")
        #expect(variables["IOASID_TRACE"] == nil)

        let options = try runUnderIOASID(["--no-test-driver", "--trace=-", "/usr/bin/env"])
        #expect(options.exited(0), "\(options)")
        #expect(options.environmentLines["IOASID_TEST_DRIVER"] == "0")
        #expect(options.environmentLines["IOASID_TRACE"] == "stderr")
        #expect(options.environmentLines["LD_PRELOAD"] == BuiltProducts.directory + "/libioasid-preload.so")
    }

}

// MARK: - Harness

/// The directory with the products of `swift build`.
enum BuiltProducts {
    static let directory: String = {
        if let configured = ProcessInfo.processInfo.environment["IOASID_BIN_PATH"] { return configured }
        // The test runner is .build/<triple>/<configuration>/ioasidPackageTests.xctest.
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: executable).deletingLastPathComponent().path
    }()

    static let available: Bool = {
        let files = ["ioasid", "libioasid-preload.so", "libIOASIDEngine.so"].map { directory + "/" + $0 }
        return files.allSatisfy { FileManager.default.isExecutableFile(atPath: $0) } && Fixtures.compiler != nil
    }()
}

/// The C fixtures, compiled once per test run.
struct Fixtures: Sendable {
    var directory: String
    var passthrough: String
    var status: String
    var iommu: String
    var contract: String
    var fakeEngine: String
    var discovery: String
    var trace: String
    var vfio: String
    var badPointers: String
    var signals: String
    var unmapped: String
    var pinnable: String
    var exec: String
    var kvm: String
    var kvmBAR: String
    var fds: String

    static let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path

    static let compiler: String? = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    static let shared: Result<Fixtures, FixtureError> = Result { try compile() }.mapError { $0 as? FixtureError ?? FixtureError(message: "\($0)") }

    private static func compile() throws -> Fixtures {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-fixtures-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func build(_ name: String, output: String, _ flags: [String]) throws -> String {
            let path = directory + "/" + output
            let outcome = try run(compiler!, arguments: ["-O2", "-Wall", "-Wextra", "-Werror", "-I", source] + flags
                + ["-o", path, source + "/" + name])
            guard outcome.exited(0) else { throw FixtureError(message: "cc \(name) failed:\n\(outcome)") }
            return path
        }
        let program = ["-D_FORTIFY_SOURCE=2"]
        return Fixtures(
            directory: directory,
            passthrough: try build("passthrough.c", output: "passthrough", program),
            status: try build("status.c", output: "status", program),
            iommu: try build("iommu.c", output: "iommu", program + ["-pthread"]),
            contract: try build("contract.c", output: "contract", program),
            fakeEngine: try build("fake_engine.c", output: "fake_engine.so", ["-shared", "-fPIC"]),
            discovery: try build("discovery.c", output: "discovery", program + ["-ldl"]),
            trace: try build("trace.c", output: "trace", program),
            vfio: try build("vfio.c", output: "vfio", program),
            badPointers: try build("badpointers.c", output: "badpointers", program + ["-pthread"]),
            signals: try build("signals.c", output: "signals", program + ["-pthread"]),
            unmapped: try build("unmapped.c", output: "unmapped", program),
            pinnable: try build("pinnable.c", output: "pinnable", program),
            exec: try build("exec.c", output: "exec", program),
            kvm: try build("kvm.c", output: "kvm", program),
            kvmBAR: try build("kvm_bar.c", output: "kvm_bar", program),
            fds: try build("fds.c", output: "fds", program + ["-pthread"]))
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// How a process ended and what it printed.
struct Outcome: CustomStringConvertible {
    var reason: Process.TerminationReason
    var status: Int32
    var standardOutput: String
    var standardError: String

    func exited(_ code: Int32) -> Bool { reason == .exit && status == code }
    func killed(by signal: Int32) -> Bool { reason == .uncaughtSignal && status == signal }

    /// Expects the fixture to have printed `ok CHECK` for each check: a whole line, or with
    /// `asPrefix` the start of one (for checks whose line goes on with details).
    func expectOK(_ checks: [String], asPrefix: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) {
        for check in checks {
            #expect(standardOutput.contains("ok \(check)" + (asPrefix ? "" : "\n")), "missing: \(check)\n\(self)",
                    sourceLocation: sourceLocation)
        }
    }

    /// `NAME=value` lines of `env` output.
    var environmentLines: [String: String] {
        var variables: [String: String] = [:]
        for line in standardOutput.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            variables[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return variables
    }

    var description: String {
        "\(reason == .exit ? "exit" : "signal") \(status)\n--- stdout\n\(standardOutput)--- stderr\n\(standardError)"
    }
}

/// Runs `ioasid run ARGUMENTS` from the build directory.
func runUnderIOASID(_ arguments: [String], environment: [String: String] = [:]) throws -> Outcome {
    try run(BuiltProducts.directory + "/ioasid", arguments: ["run"] + arguments, environment: environment)
}

/// Runs a program with the test's environment minus any preload settings, plus `environment`.
func run(_ executable: String, arguments: [String] = [], environment: [String: String] = [:]) throws -> Outcome {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var inherited = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("IOASID_") && $0.key != "LD_PRELOAD" }
    inherited.merge(environment) { $1 }
    process.environment = inherited
    let errorFile = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-stderr-\(UUID().uuidString)")
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
    return Outcome(
        reason: process.terminationReason, status: process.terminationStatus,
        standardOutput: String(decoding: standardOutput, as: UTF8.self),
        standardError: (try? String(contentsOf: errorFile, encoding: .utf8)) ?? "")
}
