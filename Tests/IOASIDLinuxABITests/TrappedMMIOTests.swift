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
        outcome.expectOK(["stores and loads of 1, 2, 4 and 8 bytes in order", "sign and zero extension",
                          "partial register writes", "stores from ah and r10w", "immediate stores",
                          "base + index * scale + displacement", "RIP-relative addressing", "absolute addressing",
                          "xchg and read-modify-write/compare forms with flags", "SSE moves", "MOVDIR64B, MOVDIRI and MOVNTI"], asPrefix: true)
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
        outcome.expectOK(["the program's SIGSEGV handler gets its own faults with siginfo",
                          "signal(), handlers without SA_SIGINFO, SA_RESETHAND",
                          "signal masks, SIGILL and ignored user-sent SIGSEGV"], asPrefix: true)
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

// What glibc's memcpy/memmove/memset do to a BAR, in each implementation it offers this CPU:
// GLIBC_TUNABLES masks CPU features the way a machine without them would pick (the default is
// the EVEX/AVX-512 one here; then AVX-512 without VL, AVX2 with VEX, SSSE3 with legacy SSE, no
// ERMS), and lowers the non-temporal threshold so that large copies use VMOVNTDQ.
extension TrappedMMIOTests {
    static let cpuFlags: Set<String> = {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
        return Set(line.split(separator: " ").map(String.init))
    }()
    static var hasAVX512: Bool { ["avx512f", "avx512vl", "avx512bw"].allSatisfy(cpuFlags.contains) }

    @Test(arguments: variants)
    func vexAndEVEXMovesReachTheDeviceExactly(_ variant: String) throws {
        guard let fixture = try MMIOFixture.build(variant) else { return }
        let outcome = try fixture.run("vector", timeout: 120)
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardError.isEmpty, "\(outcome)")
        guard Self.cpuFlags.contains("avx2") else { return }
        #expect(outcome.standardOutput.contains("ok VEX stores ("), "\(outcome)")
        guard Self.hasAVX512 else { return }
        outcome.expectOK(["VEX loads zero the register above what they load, up to 512 bits",
                          "loads into vector state the frame holds in its init state (after vzeroupper)", "EVEX stores (",
                          "EVEX loads (zmm0-31, 128/256/512 bits) zero the register above what they load",
                          "masked EVEX stores write the selected elements only, lowest first",
                          "masked EVEX loads merge or zero the unselected elements exactly",
                          "a masked store whose unselected elements lie past the region's end"], asPrefix: true)
    }

    @Test(arguments: variants)
    func stringInstructionsReachTheDeviceElementByElement(_ variant: String) throws {
        guard let fixture = try MMIOFixture.build(variant) else { return }
        let outcome = try fixture.run("strings", timeout: 120)
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardError.isEmpty, "\(outcome)")
        outcome.expectOK(["rep movsb from memory to the BAR: 100 byte writes in order, rsi/rdi/rcx updated",
                          "rep movsq from the BAR to memory", "rep movsl from the BAR to the BAR, each element read then written",
                          "DF=1: rep movsw and rep stosb go downwards", "stosl and movsb without REP, rep stosq",
                          "rep stosb of 20000 bytes: every element, in order, across restarts", "67 prefix",
                          "rep movsb from memory that turns unreadable: SIGSEGV at that byte, registers at that element",
                          "a bus error in the middle of rep stosq stops at that element"], asPrefix: true)
    }

    @Test func aBadStringSourceWithoutAHandlerKillsWithSIGSEGV() throws {
        let fixture = try #require(try MMIOFixture.build("gcc -O2"))
        let outcome = try fixture.run("string-segv-default")
        #expect(outcome.killed(by: SIGSEGV), "\(outcome)")
        #expect(outcome.standardOutput == "ready\n")
        #expect(outcome.standardError.isEmpty, "\(outcome)")
    }

    static let libcTunables = [
        "",
        "glibc.cpu.hwcaps=-AVX512VL",
        "glibc.cpu.hwcaps=-AVX512F,-AVX512VL",
        "glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX2,-AVX_Fast_Unaligned_Load",
        "glibc.cpu.hwcaps=-ERMS,-FSRM",
        "glibc.cpu.x86_non_temporal_threshold=0x4040:glibc.cpu.x86_rep_movsb_threshold=0x1000000",
    ]

    @Test(arguments: libcTunables)
    func glibcMemcpyMemmoveAndMemsetOnABAR(_ tunables: String) throws {
        let fixture = try #require(try MMIOFixture.build("gcc -O2"))
        let outcome = try fixture.run("libc", environment: tunables.isEmpty ? [:] : ["GLIBC_TUNABLES": tunables], timeout: 300)
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardError.isEmpty, "\(outcome)")
        outcome.expectOK(["memcpy, memset and memmove of 1..2048 bytes to, from and inside the BAR",
                          "memcpy, memset and memmove of 16 KiB", "memcpy of 160 KiB to and from the BAR"], asPrefix: true)
        if tunables.isEmpty && Self.cpuFlags.contains("erms") {
            #expect(outcome.standardOutput.contains("16 KiB (with rep movsb, with rep stosb)"), "\(outcome)")
        }
        if tunables.contains("non_temporal") && Self.hasAVX512 {
            let wide = outcome.standardOutput.split(separator: "\n").first { $0.contains("160 KiB") }?
                .split(separator: " ").last.flatMap { Int($0.dropLast()) } ?? 0
            #expect(wide > 1000, "VMOVNTDQ stores of 64 bytes expected: \(outcome)")
        }
    }

    @Test(arguments: ["gcc", "clang"])
    func decoderUnitTests(_ compiler: String) throws {
        guard let path = MMIOFixture.find(compiler) else { return }
        let root = URL(fileURLWithPath: Fixtures.source).deletingLastPathComponent().deletingLastPathComponent().path
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-mmio-decoder-\(getpid())-\(compiler)").path
        let build = try IOASIDLinuxABITests.run(path, arguments: [
            "-O2", "-Wall", "-Wextra", "-Werror", "-I", Fixtures.source, "-I", root + "/Sources/CIOASIDPreload",
            "-o", output, Fixtures.source + "/mmio_decoder.c", root + "/Sources/CIOASIDPreload/mmio_decoder.c",
        ])
        try #require(build.exited(0), "\(build)")
        defer { try? FileManager.default.removeItem(atPath: output) }
        let outcome = try IOASIDLinuxABITests.run("/usr/bin/timeout", arguments: ["-k", "5", "60", output])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("VEX, EVEX and string encodings decode field by field"), "\(outcome)")
        #expect(outcome.standardOutput.contains("encodings refused"), "\(outcome)")
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

    /// The same under `timeout`, with `environment` added: for modes that must exit 0 (a
    /// killed fixture shows as exit 124 or 137).
    func run(_ mode: String, environment: [String: String] = [:], timeout seconds: Int) throws -> Outcome {
        try IOASIDLinuxABITests.run("/usr/bin/timeout", arguments: [
            "-k", "5", "\(seconds)", "/usr/bin/env", "LD_PRELOAD=" + BuiltProducts.directory + "/libioasid-preload.so",
            path, mode,
        ], environment: ["SWIFT_BACKTRACE": "enable=no"].merging(environment) { $1 })
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

    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"
        for directory in path.split(separator: ":").map(String.init) + ["/usr/bin", "/opt/swift/usr/bin"] {
            let candidate = directory + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
