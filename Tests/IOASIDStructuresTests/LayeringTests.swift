import Foundation
import Testing

/// The layers are stated once, in docs/architecture.md's table (rows in dependency order), and
/// this suite holds every `import` in `Sources/` to it: a module imports only modules of its own
/// row or of rows above it.
@Suite struct LayeringTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Module name → row index, from the first table of docs/architecture.md.
    static func rows() throws -> [String: Int] {
        let text = try String(contentsOf: root.appendingPathComponent("docs/architecture.md"), encoding: .utf8)
        var rows: [String: Int] = [:]
        var index = 0
        var inTable = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("| layer | module |") { inTable = true; continue }
            guard inTable else { continue }
            if line.hasPrefix("|---") { continue }
            guard line.hasPrefix("|") else { break }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false)
            guard cells.count > 2 else { continue }
            for match in cells[2].matches(of: /`([A-Za-z-]+)`/) { rows[String(match.output.1)] = index }
            index += 1
        }
        return rows
    }

    /// The project modules `module`'s sources import.
    static func imports(of module: String) throws -> Set<String> {
        let folder = root.appendingPathComponent("Sources/\(module)")
        var found: Set<String> = []
        guard let files = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: nil) else { return found }
        for case let file as URL in files where file.pathExtension == "swift" {
            let text = try String(contentsOf: file, encoding: .utf8)
            for line in text.split(separator: "\n") where line.hasPrefix("import ") {
                let name = line.dropFirst("import ".count).split(separator: " ").first.map(String.init) ?? ""
                found.insert(name)
            }
        }
        return found
    }

    @Test func everyModuleIsInTheTable() throws {
        let rows = try Self.rows()
        let modules = try FileManager.default.contentsOfDirectory(atPath: Self.root.appendingPathComponent("Sources").path)
        for module in modules.sorted() {
            #expect(rows[module] != nil, "Sources/\(module) is not in docs/architecture.md's layer table")
        }
    }

    @Test func importsFollowTheTable() throws {
        let rows = try Self.rows()
        #expect(rows.count >= 10, "the layer table was not found")
        for (module, row) in rows.sorted(by: { $0.key < $1.key }) {
            for imported in try Self.imports(of: module) {
                guard let importedRow = rows[imported] else { continue }  // the toolchain's and packages' modules
                #expect(importedRow <= row, "\(module) (row \(row)) imports \(imported) (row \(importedRow)), a later layer")
            }
        }
    }

    @Test func theDemoDoesNotNeedTheLinuxABI() throws {
        #expect(!(try Self.imports(of: "IOASIDDemo").contains("IOASIDLinuxABI")))
    }
}
