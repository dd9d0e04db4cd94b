// What `ioasid demo` shows: a timeline of steps and a summary per actor, for people (a table)
// and for programs (JSON).

/// One step of the scenario.
public struct DemoEvent: Codable, Sendable, Equatable {
    /// 1-based position in the timeline.
    public var step: Int
    /// Who acts: `host`, `vm1`, `vm2`, a device name.
    public var actor: String
    /// What was done, in words.
    public var action: String
    /// What happened (a value, an errno, a fault reason).
    public var outcome: String
    /// Whether the outcome is the one the design promises (a refusal can be the right outcome).
    public var asExpected: Bool
}

/// One line of the summary table.
public struct DemoSummaryRow: Codable, Sendable, Equatable {
    public var actor: String
    public var model: String
    public var set: String
    public var quota: String
    public var pasids: String
    public var devices: String
    public var dmaCompleted: Int
    public var dmaBlocked: Int
    public var faultsAnswered: Int
}

/// The whole run.
public struct DemoReport: Codable, Sendable {
    public var events: [DemoEvent] = []
    public var summary: [DemoSummaryRow] = []
    /// True when every step had its expected outcome.
    public var allAsExpected: Bool { events.allSatisfy(\.asExpected) }
}

/// Collects events as the scenario runs; optionally echoes each one as it happens.
public final class DemoRecorder {
    public private(set) var report = DemoReport()
    private let echo: ((DemoEvent) -> Void)?

    public init(echo: ((DemoEvent) -> Void)? = nil) { self.echo = echo }

    /// Records one step.
    public func record(_ actor: String, _ action: String, _ outcome: String, expected: Bool = true) {
        let e = DemoEvent(step: report.events.count + 1, actor: actor, action: action, outcome: outcome, asExpected: expected)
        report.events.append(e)
        echo?(e)
    }

    /// Adds a summary row.
    public func summarize(_ row: DemoSummaryRow) { report.summary.append(row) }
}

extension DemoReport {
    /// The timeline and the summary as aligned text.
    public func text() -> String {
        var out = ""
        for e in events { out += DemoReport.line(e) + "\n" }
        return out + summaryText()
    }

    /// What follows the timeline: a blank line, the summary table and the verdict line.
    public func summaryText() -> String {
        var out = "\n" + table(["actor", "model", "IOASID set", "held/quota", "PASIDs (host←guest)", "devices", "DMA ok", "DMA blocked", "faults answered"],
                            summary.map { [$0.actor, $0.model, $0.set, $0.quota, $0.pasids, $0.devices,
                                           String($0.dmaCompleted), String($0.dmaBlocked), String($0.faultsAnswered)] })
        let bad = events.filter { !$0.asExpected }.count
        out += "\n" + (bad == 0 ? "all \(events.count) steps went as the design says" : "\(bad) of \(events.count) steps did NOT go as expected") + "\n"
        return out
    }

    /// One timeline line: step, actor, action, outcome (a cross where the outcome was unexpected).
    public static func line(_ e: DemoEvent) -> String {
        let step = String(e.step).leftPadded(3)
        return "\(step)  \(e.actor.rightPadded(8))  \(e.action.rightPadded(62))  \(e.asExpected ? "" : "UNEXPECTED: ")\(e.outcome)"
    }

    private func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        // Text columns left-aligned, counts (the last three) right-aligned.
        func line(_ r: [String]) -> String {
            r.enumerated().map { i, c in i < header.count - 3 ? c.rightPadded(widths[i]) : c.leftPadded(widths[i]) }.joined(separator: "  ")
        }
        return ([line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")] + rows.map(line)).joined(separator: "\n") + "\n"
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
    func rightPadded(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}
