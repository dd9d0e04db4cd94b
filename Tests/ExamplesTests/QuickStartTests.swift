// The README's Swift quick start is Examples/quick-start/main.swift, byte for byte, and the
// built program does what the README says it prints.
import Foundation
import Testing

@Suite struct QuickStartTests {
    /// The package root (this file is Tests/ExamplesTests/QuickStartTests.swift).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The fenced ```swift block that follows the `<!-- quick-start: PATH -->` marker in README.md,
    /// and PATH.
    static func readmeSnippet() throws -> (path: String, code: String) {
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let marker = try #require(readme.range(of: "<!-- quick-start: "), "README.md has no quick-start marker")
        let rest = readme[marker.upperBound...]
        let close = try #require(rest.range(of: " -->\n"))
        let path = String(rest[..<close.lowerBound])
        let afterMarker = rest[close.upperBound...]
        #expect(afterMarker.hasPrefix("```swift\n"), "the marker is followed directly by a ```swift block")
        let body = afterMarker.dropFirst("```swift\n".count)
        let end = try #require(body.range(of: "\n```\n"), "the ```swift block is closed")
        return (path, String(body[..<end.lowerBound]) + "\n")
    }

    @Test func theReadmePrintsTheProgramThatIsBuilt() throws {
        let (path, code) = try Self.readmeSnippet()
        #expect(path == "Examples/quick-start/main.swift")
        let source = try String(contentsOf: Self.root.appendingPathComponent(path), encoding: .utf8)
        #expect(code == source, "README.md's quick start differs from \(path)")
    }

    /// The `quick-start` executable that `swift build` / `swift test` builds beside the test runner.
    static var binary: URL {
        if let dir = ProcessInfo.processInfo.environment["IOASID_BIN_PATH"] {
            return URL(fileURLWithPath: dir).appendingPathComponent("quick-start")
        }
        let runner = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: runner).deletingLastPathComponent().appendingPathComponent("quick-start")
    }

    @Test func theProgramRunsAndPrintsWhatTheReadmeShows() throws {
        let binary = Self.binary
        try #require(FileManager.default.isExecutableFile(atPath: binary.path),
                     "no quick-start at \(binary.path): run `swift build` first")
        let process = Process()
        process.executableURL = binary
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        try #require(lines.count == 3, "\(lines)")
        #expect(!lines.contains { $0.hasPrefix("failed:") })
        // The mock device's aperture is [16 MiB, 2 GiB); mapping lands inside it.
        #expect(lines[0].hasSuffix("attached; usable IOVA: [[0x1000000, 0x7fffffff]]"))
        let iovaText = try #require(lines[1].split(separator: "0x").last)
        let iova = try #require(UInt64(iovaText, radix: 16))
        #expect(lines[1].hasPrefix("mapped 1048576 bytes at IOVA 0x"))
        #expect(iova >= 1 << 24 && iova + (1 << 20) <= 1 << 31)
        #expect(lines[2] == "unmapped 1048576 bytes")
        // The README shows the same output.
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.contains("    " + lines[0]) && readme.contains("    " + lines[2]))
    }
}
