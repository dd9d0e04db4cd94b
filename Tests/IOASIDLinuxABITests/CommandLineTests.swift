import Foundation
import Testing

// The `ioasid` tool's messages and the trace it writes, tested on the built binary (the harness
// of PreloadTests.swift: `swift build` products next to the test bundle, `cc` for fixtures).

@Suite(.enabled(if: BuiltProducts.available, "needs `swift build` products next to the test bundle and `cc`"))
struct CommandLineTests {
    /// Runs the built `ioasid` with `arguments` (no `run` prepended).
    func ioasid(_ arguments: [String]) throws -> Outcome {
        try run(BuiltProducts.directory + "/ioasid", arguments: arguments)
    }

    /// The lines of `text`, without the empty one after the last newline.
    func lines(_ text: String) -> [Substring] { text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() }

    // MARK: Usage errors: status 2, one line naming the bad part, no usage text

    static let usageErrors: [(arguments: [String], message: String)] = [
        (["run", "--bogus", "--", "/bin/true"], "ioasid run: unknown option '--bogus'; see 'ioasid run --help'"),
        (["run", "-x", "/bin/true"], "ioasid run: unknown option '-x'; see 'ioasid run --help'"),
        (["run", "--machine", "foo", "--", "/bin/true"],
         "ioasid run: --machine: unknown IOMMU 'foo' in 'foo' (known: mock, vtd, smmuv3); see 'ioasid run --help'"),
        (["run", "--machine=vtd:x", "--", "/bin/true"],
         "ioasid run: --machine: unknown device 'x' in 'vtd:x' (known: pci, ioat; or a count); see 'ioasid run --help'"),
        (["run", "--machine", "vtd:0", "--", "/bin/true"],
         "ioasid run: --machine: bad count '0' in 'vtd:0' (expected 1 to 31); see 'ioasid run --help'"),
        (["run", "--machine", "", "--", "/bin/true"],
         "ioasid run: --machine: empty machine specification (expected IOMMU[:DEVICE][:COUNT],...); see 'ioasid run --help'"),
        (["run", "--machine=", "/bin/true"],
         "ioasid run: --machine: empty machine specification (expected IOMMU[:DEVICE][:COUNT],...); see 'ioasid run --help'"),
        (["run", "--machine"], "ioasid run: --machine needs a value; see 'ioasid run --help'"),
        (["run", "--machine", "--", "/bin/true"], "ioasid run: --machine needs a value; see 'ioasid run --help'"),
        (["run"], "ioasid run: missing the program to run; see 'ioasid run --help'"),
        (["run", "--trace", "--"], "ioasid run: missing the program to run; see 'ioasid run --help'"),
        (["run", "--trace-time", "--", "/bin/true"], "ioasid run: --trace-time needs --trace; see 'ioasid run --help'"),
        (["run", "--privileged=yes", "/bin/true"], "ioasid run: --privileged takes no value; see 'ioasid run --help'"),
        (["demo", "--bogus"], "ioasid: unknown option '--bogus'; see 'ioasid --help'"),
        (["frobnicate"], "ioasid: unexpected argument 'frobnicate'; see 'ioasid --help'"),
    ]

    @Test(arguments: CommandLineTests.usageErrors.indices)
    func usageErrorIsOneLineAndStatus2(_ index: Int) throws {
        let (arguments, message) = Self.usageErrors[index]
        let outcome = try ioasid(arguments)
        #expect(outcome.exited(2), "\(arguments): \(outcome)")
        #expect(lines(outcome.standardError) == [Substring(message)], "\(arguments): \(outcome)")
        #expect(outcome.standardOutput.isEmpty, "\(arguments): \(outcome)")
    }

    // MARK: Failures that are not usage errors: one line, no usage, their own status

    @Test func missingProgram() throws {
        let outcome = try ioasid(["run", "--", "/nonexistent/ioasid-program"])
        #expect(outcome.exited(127), "\(outcome)")
        #expect(lines(outcome.standardError) == ["ioasid: /nonexistent/ioasid-program: No such file or directory"], "\(outcome)")
    }

    @Test func programThatCannotBeExecuted() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-not-executable-\(UUID().uuidString)").path
        try "#!/bin/sh\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let outcome = try ioasid(["run", "--", path])
        #expect(outcome.exited(126), "\(outcome)")
        #expect(lines(outcome.standardError) == ["ioasid: \(path): Permission denied"], "\(outcome)")
    }

    @Test func librariesNotFound() throws {
        // A copy of the tool in a directory without the two libraries.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-alone-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(atPath: BuiltProducts.directory + "/ioasid", toPath: directory + "/ioasid")
        let outcome = try run(directory + "/ioasid", arguments: ["run", "--", "/bin/true"])
        #expect(outcome.exited(125), "\(outcome)")
        let errorLines = lines(outcome.standardError)
        #expect(errorLines.count == 1 && errorLines[0].hasPrefix("ioasid: cannot find libioasid-preload.so and libIOASIDEngine.so next to the ioasid executable (looked in \(directory)"), "\(outcome)")
    }

    @Test func traceFileThatCannotBeCreated() throws {
        let outcome = try ioasid(["run", "--trace=/nonexistent/dir/calls.log", "--", "/bin/true"])
        #expect(outcome.exited(125), "\(outcome)")
        #expect(lines(outcome.standardError) == ["ioasid: cannot create the trace file /nonexistent/dir/calls.log: No such file or directory"], "\(outcome)")
    }

    // MARK: --version, --help

    @Test func version() throws {
        let outcome = try ioasid(["--version"])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.range(of: #"^[0-9]+\.[0-9]+\.[0-9]+\n$"#, options: .regularExpression) != nil, "\(outcome)")
        #expect(outcome.standardError.isEmpty)
    }

    /// The options `ioasid run --help` lists are the ones `ioasid run` accepts, and only those.
    @Test func helpListsExactlyTheAcceptedOptions() throws {
        let help = try ioasid(["run", "--help"])
        #expect(help.exited(0), "\(help)")
        #expect(help.standardOutput.contains("USAGE: ioasid run [--trace[=<file>]] [--trace-time]"))
        let options = help.standardOutput.components(separatedBy: "OPTIONS:").last ?? ""
        let listed = Set(options.split(separator: "\n").compactMap { line in
            line.firstMatch(of: /^\s+(?:-[a-z], )?(--[a-z-]+)/).map { String($0.output.1) }
        })
        #expect(listed == ["--trace", "--trace-time", "--report", "--privileged", "--no-test-driver", "--machine", "--engine", "--fault-injection", "--fail",
                           "--version", "--help"], "\(listed)")
        #expect(try ioasid(["run", "--version"]).standardOutput == ioasid(["--version"]).standardOutput)
        for option in listed where option != "--help" && option != "--version" {
            let words: [String] = switch option {
            case "--trace-time": ["--trace=-", option]
            case "--machine": [option, "vtd"]
            case "--engine": [option, BuiltProducts.directory + "/libIOASIDEngine.so", "--machine", "vtd:ioat"]
            case "--fail": [option, "IOAS_MAP:3:ENOMEM"]
            case "--report": [option + "=" + NSTemporaryDirectory() + "ioasid-cli-report-\(getpid()).html"]
            default: [option]
            }
            let outcome = try ioasid(["run"] + words + ["--", "/bin/true"])
            #expect(outcome.exited(0), "\(option): \(outcome)")
        }
        #expect(try ioasid(["help", "run"]).standardOutput == help.standardOutput)
        #expect(try ioasid(["run", "-h"]).standardOutput == help.standardOutput)
    }

    // MARK: Where --trace writes

    @Test func traceFileAsASeparateWordBeforeDoubleDash() throws {
        let fixtures = try Fixtures.shared.get()
        for form in [["--trace", "FILE", "--"], ["--trace=FILE", "--"], ["--trace=FILE"]] {
            let file = fixtures.directory + "/trace-\(UUID().uuidString).log"
            let words = form.map { $0.replacingOccurrences(of: "FILE", with: file) }
            let outcome = try runUnderIOASID(words + [fixtures.trace])
            #expect(outcome.exited(0), "\(form): \(outcome)")
            #expect(!outcome.standardError.contains("[pid "), "\(form): nothing on stderr")
            let trace = try String(contentsOfFile: file, encoding: .utf8)
            #expect(trace.contains(" open path=/dev/iommu "), "\(form)")
        }
    }

    @Test func bareTraceBeforeTheProgramGoesToStandardError() throws {
        let fixtures = try Fixtures.shared.get()
        for form in [["--trace"], ["--trace", "--"], ["--trace=-"], ["--trace=stderr", "--"]] {
            let outcome = try runUnderIOASID(form + [fixtures.trace])
            #expect(outcome.exited(0), "\(form): \(outcome)")
            #expect(outcome.standardOutput == "trace fixture done\n", "\(form): \(outcome)")
            #expect(outcome.standardError.contains(" open path=/dev/iommu "), "\(form): \(outcome)")
        }
    }

    // MARK: The trace of the C fixture

    @Test func traceShowsEveryCall() throws {
        let fixtures = try Fixtures.shared.get()
        let file = fixtures.directory + "/trace-\(UUID().uuidString).log"
        let outcome = try runUnderIOASID(["--trace=\(file)", "--", fixtures.trace])
        #expect(outcome.exited(0), "\(outcome)")
        let trace = try String(contentsOfFile: file, encoding: .utf8)
        let body = trace.split(separator: "\n").map { line -> String in
            // "[pid N] " off, and the descriptor numbers made symbolic.
            String(line.drop { $0 != "]" }.dropFirst(2))
        }
        let fd = try #require(body.first?.firstMatch(of: /^iommu:(\d+) open/)?.output.1).description
        let queue = try #require(trace.firstMatch(of: /out_fault_fd=(\d+)/)?.output.1).description
        let expected = [
            "iommu:\(fd) open path=/dev/iommu flags=0x2 -> \(fd)",
            "iommu:\(fd) IOMMU_IOAS_ALLOC flags=0x0 out_ioas_id=1 -> 0",
            "iommu:\(fd) ioctl 0x3b7f arg=0x0 -> -ENOTTY (unknown request)",
            "iommu:\(fd) IOMMU_IOAS_ALLOC arg=0x10 -> -EFAULT (argument pointer not readable)",
            "iommu:\(fd) IOMMU_IOAS_MAP size=8 -> -EINVAL (argument size below the last mandatory field, which ends at 40)",
            "iommu:\(fd) read count=8 -> -EINVAL (iommu has no read)",
            "iommu:\(fd) write count=8 -> -EINVAL (iommu has no write)",
            "iommu:\(fd) IOMMU_FAULT_QUEUE_ALLOC flags=0x0 out_fault_id=2 out_fault_fd=\(queue) -> 0",
            "fault-queue:\(queue) read count=40 -> 0",
            "fault-queue:\(queue) read count=7 -> -ESPIPE (count is not a multiple of the fault record size)",
            "iommu:\(fd) mmap addr=0x0 length=0x1000 prot=0x1 flags=0x1 offset=0x1000 -> -ENXIO (no vIOMMU region at this offset and length)",
        ]
        for line in expected {
            #expect(body.contains(line), "missing: \(line)\n\(trace)")
        }
        #expect(body.contains { $0.hasPrefix("iommu:\(fd) dup -> ") }, "\(trace)")
        #expect(body.contains("fault-queue:\(queue) close -> 0 (last descriptor: file released)"), "\(trace)")
        #expect(body.contains("iommu:\(fd) close -> 0 (last descriptor: file released)"), "\(trace)")
        for line in body {
            let keys = line.matches(of: /\s([a-z_.0-9]+)=/).map { String($0.output.1) }
            #expect(Set(keys).count == keys.count, "a key repeats: \(line)")
        }
    }

    @Test func traceTimeEndsEachLineWithADuration() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["--trace", "--trace-time", fixtures.trace])
        #expect(outcome.exited(0), "\(outcome)")
        let traced = outcome.standardError.split(separator: "\n").filter { $0.hasPrefix("[pid ") }
        #expect(traced.count >= 12, "\(outcome)")
        for line in traced {
            #expect(line.contains(/\ \+[0-9]+(\.[0-9])?(ns|us|ms|s)$/), "\(line)")
        }
        let plain = try runUnderIOASID(["--trace", fixtures.trace])
        #expect(!plain.standardError.contains(/\ \+[0-9.]+(ns|us|ms|s)\n/), "no durations without --trace-time")
    }
}
