// The report as JSON, for programs (`ioasid demo --json`).

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension DemoReport {
    /// The report as pretty-printed JSON with sorted keys: `events` (the timeline: `step`,
    /// `actor`, `action`, `outcome`, `asExpected`) and `summary` (one object per row of the table).
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// Decodes a report written by ``json()``.
    public init(json: String) throws {
        self = try JSONDecoder().decode(DemoReport.self, from: Data(json.utf8))
    }
}
