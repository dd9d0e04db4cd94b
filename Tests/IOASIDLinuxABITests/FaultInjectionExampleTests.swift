// docs/fault-injection.md's example, run: Examples/fault-injection/leaky_regions.c under
// `ioasid run --fail`, whose check at exit must name the IOAS the program's error path leaks.

import Foundation
import Testing

@Suite(.enabled(if: BuiltProducts.available, "needs `swift build` products next to the test bundle and `cc`"))
struct FaultInjectionExampleTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The example compiled into a temporary folder.
    static func compiled() throws -> String {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-leaky-regions-\(getpid())").path
        let outcome = try run(Fixtures.compiler!, arguments: ["-O2", "-Wall", "-Wextra", "-Werror", "-o", output,
                                                            root.path + "/Examples/fault-injection/leaky_regions.c"])
        guard outcome.exited(0) else { throw FixtureError(message: "cc leaky_regions.c failed:\n\(outcome)") }
        return output
    }

    /// `ioasid run OPTIONS -- program`, stopped after 60 s whatever happens.
    static func runExample(_ options: [String], _ program: String) throws -> Outcome {
        try run("/usr/bin/timeout", arguments: ["-k", "5", "60", BuiltProducts.directory + "/ioasid", "run"] + options + ["--", program])
    }

    /// The output lines the document shows after the marked command (the pid prefix dropped).
    static func documentedLines() throws -> (command: String, lines: [String]) {
        let text = try String(contentsOf: root.appendingPathComponent("docs/fault-injection.md"), encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let marker = lines.firstIndex(where: { $0.hasPrefix("<!-- leaky-regions-output") }),
              lines.count > marker + 3, lines[marker + 1] == "```", lines[marker + 2].hasPrefix("$ ") else {
            throw FixtureError(message: "docs/fault-injection.md: the marked example block is missing")
        }
        let body = lines[(marker + 3)...].prefix { $0 != "```" }
        return (lines[marker + 2], body.map(Self.withoutPid))
    }

    static func withoutPid(_ line: String) -> String {
        guard line.hasPrefix("[pid "), let end = line.firstIndex(of: "]") else { return line }
        return String(line[line.index(end, offsetBy: 2)...])
    }

    @Test func theDocumentedLeakIsFound() throws {
        let program = try Self.compiled()
        defer { try? FileManager.default.removeItem(atPath: program) }
        let (command, expected) = try Self.documentedLines()
        #expect(command == "$ ioasid run --fail IOMMU_IOAS_MAP:4 -- ./leaky_regions")
        let leaking = try Self.runExample(["--fail", "IOMMU_IOAS_MAP:4"], program)
        #expect(leaking.exited(0), "\(leaking)")
        let printed = (leaking.standardOutput + leaking.standardError).split(separator: "\n").map { Self.withoutPid(String($0)) }
        for line in expected {
            #expect(printed.contains(line), "documented but not printed: \(line)\n\(leaking)")
        }
        #expect(expected.contains { $0.contains("still holds 1 object: IOAS 2") })

        // The same program without the failure, and with the failure its error path handles.
        for options in [["--fault-injection"], ["--fail", "IOMMU_IOAS_MAP:3"]] {
            let clean = try Self.runExample(options, program)
            #expect(clean.exited(0), "\(clean)")
            #expect(clean.standardError.contains("ioasid: at exit, no /dev/iommu holds any object"), "\(options): \(clean)")
            #expect(!clean.standardError.contains("still holds"), "\(options): \(clean)")
        }
    }

    @Test func aRuleThatDoesNotParseIsAUsageError() throws {
        let outcome = try run(BuiltProducts.directory + "/ioasid", arguments: ["run", "--fail", "IOAS_MAP:0", "--", "/bin/true"])
        #expect(outcome.exited(2), "\(outcome)")
        #expect(outcome.standardError.contains("--fail"), "\(outcome)")
    }
}
