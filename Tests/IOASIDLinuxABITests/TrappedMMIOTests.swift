import Foundation
import Testing

// Trapped MMIO (Sources/CIOASIDPreload/trap.c): the fixture Tests/Fixtures/mmio.c maps regions
// with ioasid_trap_map under libioasid-preload.so, with a device that logs every access, and
// checks what each instruction did to the device, to registers and to flags. It is built with
// every compiler found (gcc, clang) at -O0 and -O2, since what a volatile access compiles to
// differs between them.

@Suite(.enabled(if: BuiltProducts.available, "needs `swift build` products next to the test bundle and `cc`"))
struct TrappedMMIOTests {
    static let variants = ["gcc -O0", "gcc -O2", "clang -O0", "clang -O2"]

    @Test(arguments: variants)
    func everyDecodedFormReachesTheDeviceInOrder(_ variant: String) throws {
        guard let fixture = try MMIOFixture.build(variant) else { return }
        let outcome = try fixture.run("accesses")
        #expect(outcome.exited(0), "\(outcome)")
        for check in ["stores and loads of 1, 2, 4 and 8 bytes in order", "sign and zero extension",
                      "partial register writes", "stores from ah and r10w", "immediate stores",
                      "base + index * scale + displacement", "RIP-relative addressing", "absolute addressing",
                      "xchg and read-modify-write/compare forms with flags", "SSE moves", "MOVDIR64B, MOVDIRI and MOVNTI"] {
            #expect(outcome.standardOutput.contains("ok \(check)"), "missing: \(check)\n\(outcome)")
        }
        #expect(outcome.standardError.isEmpty, "\(outcome)")
    }

    @Test(arguments: variants)
    func volatileDriverCodeAsCompiled(_ variant: String) throws {
        guard let fixture = try MMIOFixture.build(variant) else { return }
        let outcome = try fixture.run("volatile")
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("ok volatile driver code: 13 accesses in program order"), "\(outcome)")
    }

    @Test func busErrorReachesTheProgramsSIGBUSHandler() throws {
        let fixture = try #require(try MMIOFixture.build("gcc -O2"))
        let outcome = try fixture.run("bus-error")
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("ok bus error from the handler raises SIGBUS with si_addr"))
    }

    @Test func busErrorWithoutAHandlerKillsWithSIGBUS() throws {
        let fixture = try #require(try MMIOFixture.build("gcc -O2"))
        let outcome = try fixture.run("bus-error-default")
        #expect(outcome.killed(by: SIGBUS), "\(outcome)")
        #expect(outcome.standardOutput == "ready\n")
    }

    @Test func theProgramsOwnHandlersKeepWorking() throws {
        let fixture = try #require(try MMIOFixture.build("gcc -O2"))
        let outcome = try fixture.run("own-handlers")
        #expect(outcome.exited(0), "\(outcome)")
        for check in ["the program's SIGSEGV handler gets its own faults with siginfo",
                      "signal(), handlers without SA_SIGINFO, SA_RESETHAND",
                      "signal masks, SIGILL and ignored user-sent SIGSEGV"] {
            #expect(outcome.standardOutput.contains("ok \(check)"), "missing: \(check)\n\(outcome)")
        }
    }

    @Test func stackOverflowIsCaughtOnTheProgramsAlternateStack() throws {
        let fixture = try #require(try MMIOFixture.build("gcc -O2"))
        let outcome = try fixture.run("stack-overflow")
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("ok stack overflow caught on the program's alternate stack"))
    }

    @Test(arguments: ["default-segv", "ignored-segv"])
    func aRealCrashStillKillsWithSIGSEGV(_ mode: String) throws {
        let fixture = try #require(try MMIOFixture.build("gcc -O2"))
        let outcome = try fixture.run(mode)
        #expect(outcome.killed(by: SIGSEGV), "\(outcome)")
        #expect(outcome.standardOutput == "ready\n")
        #expect(outcome.standardError.isEmpty, "\(outcome)")
    }

    @Test(arguments: ["gcc -O0", "clang -O2"])
    func unknownInstructionFailsClearly(_ variant: String) throws {
        guard let fixture = try MMIOFixture.build(variant) else { return }
        let outcome = try fixture.run("unknown")
        #expect(outcome.killed(by: SIGBUS), "\(outcome)")
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome)")
        let line = String(lines.first ?? "")
        #expect(line.hasPrefix("ioasid-preload: trapped MMIO at 0x"), "\(line)")
        #expect(line.contains(": unknown instruction at 0x"), "\(line)")
        #expect(line.contains(" 0f af "), "the bytes of IMUL r32, r/m32 (REX first with clang): \(line)")
    }

    @Test func munmapEndsTrapping() throws {
        let fixture = try #require(try MMIOFixture.build("gcc -O2"))
        let outcome = try fixture.run("munmap")
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("ok munmap and ioasid_trap_unmap end trapping (whole and part)"))
    }

    @Test func threadsTrapConcurrently() throws {
        let fixture = try #require(try MMIOFixture.build("gcc -O2"))
        let outcome = try fixture.run("threads")
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("threads trapping concurrently"), "\(outcome)")
    }

    @Test func trapsUnderTheLauncher() throws {
        let fixture = try #require(try MMIOFixture.build("gcc -O2"))
        let outcome = try runUnderIOASID([fixture.path, "accesses"])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("mmio accesses ok"), "\(outcome)")
    }
}

/// Tests/Fixtures/mmio.c built with one compiler and optimization level.
struct MMIOFixture {
    var path: String

    /// Runs the fixture under the preload as `ioasid run` would: SwiftPM links the preload
    /// library against libswiftCore, whose crash backtracer would otherwise install itself as the
    /// program's SIGSEGV/SIGBUS/SIGILL handler; the launcher turns it off the same way.
    func run(_ mode: String) throws -> Outcome {
        try IOASIDLinuxABITests.run(path, arguments: [mode], environment: [
            "LD_PRELOAD": BuiltProducts.directory + "/libioasid-preload.so",
            "SWIFT_BACKTRACE": "enable=no",
        ])
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var built: [String: String] = [:]

    /// The fixture for "COMPILER -OLEVEL", or nil when that compiler is not installed.
    static func build(_ variant: String) throws -> MMIOFixture? {
        let parts = variant.split(separator: " ").map(String.init)
        guard let compiler = find(parts[0]) else { return nil }
        lock.lock()
        defer { lock.unlock() }
        if let path = built[variant] { return MMIOFixture(path: path) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-mmio-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/mmio-" + parts.joined(separator: "").replacingOccurrences(of: "-", with: "")
        let outcome = try IOASIDLinuxABITests.run(compiler, arguments: [
            parts[1], "-Wall", "-Wextra", "-Werror", "-D_FORTIFY_SOURCE=2", "-pthread", "-I", Fixtures.source,
            "-o", path, Fixtures.source + "/mmio.c", "-ldl",
        ])
        guard outcome.exited(0) else { throw FixtureError(message: "\(variant) mmio.c failed:\n\(outcome)") }
        built[variant] = path
        return MMIOFixture(path: path)
    }

    private static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"
        for directory in path.split(separator: ":").map(String.init) + ["/usr/bin", "/opt/swift/usr/bin"] {
            let candidate = directory + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
