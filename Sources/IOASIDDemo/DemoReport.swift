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

    /// An event.
    public init(step: Int, actor: String, action: String, outcome: String, asExpected: Bool) {
        self.step = step; self.actor = actor; self.action = action; self.outcome = outcome; self.asExpected = asExpected
    }
}

/// How many PASIDs an IOASID set holds and how many it may hold.
public struct DemoQuota: Codable, Sendable, Equatable, CustomStringConvertible {
    /// PASIDs held at the end of the scenario.
    public var used: Int
    /// The set's quota; nil when the set is unlimited.
    public var limit: Int?

    /// A quota.
    public init(used: Int, limit: Int?) { self.used = used; self.limit = limit }

    /// `used/limit`, or `used/unlimited`.
    public var description: String { "\(used)/\(limit.map(String.init) ?? "unlimited")" }
}

/// One host PASID of a set, with its set-private (guest) ID where one exists.
public struct DemoPASID: Codable, Sendable, Equatable, CustomStringConvertible {
    /// The host PASID.
    public var host: UInt32
    /// The set-private ID (the guest's PASID), if any.
    public var guest: UInt32?

    /// A PASID.
    public init(host: UInt32, guest: UInt32? = nil) { self.host = host; self.guest = guest }

    /// `host←gGUEST`, or `host`.
    public var description: String { guest.map { "\(host)←g\($0)" } ?? "\(host)" }
}

/// A device whose DMA carries a set's PASIDs.
public struct DemoDevice: Codable, Sendable, Equatable, CustomStringConvertible {
    /// The device's name in the timeline (`vf0`, `mdev-a`, …).
    public var name: String
    /// A remark on how it uses the set (`vm1`, `SSIDs guest-owned`), if any.
    public var note: String?

    /// A device.
    public init(_ name: String, note: String? = nil) { self.name = name; self.note = note }

    /// `name (note)`, or `name`.
    public var description: String { note.map { "\(name) (\($0))" } ?? name }
}

/// One line of the summary table.
///
/// Each field is a value, not a display string: the text table renders them (`2/2`,
/// `1←g7, 6←g6`), the JSON carries numbers, arrays and objects (`docs/demo.schema.json`).
public struct DemoSummaryRow: Codable, Sendable, Equatable {
    /// The IOASID set's user: `vm1`, `vm2`, `vendor`.
    public var actor: String
    /// The PASID model and hardware.
    public var model: String
    /// The IOASID set's number (`set#N` in the text), nil if the set was never made.
    public var set: UInt32?
    /// PASIDs held and the quota at the end of the scenario; nil if the set was never made.
    public var quota: DemoQuota?
    /// The set's host PASIDs at the end, ascending, with their set-private (guest) IDs.
    public var pasids: [DemoPASID]
    /// The devices whose DMA carries the set's PASIDs.
    public var devices: [DemoDevice]
    /// DMA tagged with the set's PASIDs (or its devices) that landed where expected.
    public var dmaCompleted: Int
    /// DMA that the IOMMU blocked.
    public var dmaBlocked: Int
    /// I/O page fault groups answered by the owner.
    public var faultsAnswered: Int

    /// A row.
    public init(actor: String, model: String, set: UInt32?, quota: DemoQuota?, pasids: [DemoPASID], devices: [DemoDevice],
                dmaCompleted: Int, dmaBlocked: Int, faultsAnswered: Int) {
        self.actor = actor; self.model = model; self.set = set; self.quota = quota; self.pasids = pasids
        self.devices = devices; self.dmaCompleted = dmaCompleted; self.dmaBlocked = dmaBlocked; self.faultsAnswered = faultsAnswered
    }

    /// The row's cells as the text table shows them.
    var cells: [String] {
        [actor, model, set.map { "set#\($0)" } ?? "-", quota?.description ?? "-",
         pasids.isEmpty ? "none" : pasids.map(\.description).joined(separator: ", "),
         devices.map(\.description).joined(separator: ", "),
         String(dmaCompleted), String(dmaBlocked), String(faultsAnswered)]
    }
}

/// The whole run.
///
/// Encoded as `{"version": 1, "allAsExpected": …, "events": […], "summary": […]}`
/// (`docs/demo.schema.json`); `allAsExpected` is written for programs that only want the
/// verdict and recomputed from `events` when decoding.
public struct DemoReport: Codable, Sendable {
    /// The timeline, in order.
    public var events: [DemoEvent] = []
    /// The summary table, one row per IOASID set of the scenario.
    public var summary: [DemoSummaryRow] = []
    /// True when every step had its expected outcome.
    public var allAsExpected: Bool { events.allSatisfy(\.asExpected) }

    /// An empty report.
    public init() {}

    /// The version of the JSON layout (`version` in the JSON); it changes when a field changes
    /// meaning or goes away, not when one is added.
    public static let jsonVersion = 1

    private enum CodingKeys: String, CodingKey { case version, allAsExpected, events, summary }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        events = try c.decode([DemoEvent].self, forKey: .events)
        summary = try c.decode([DemoSummaryRow].self, forKey: .summary)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Self.jsonVersion, forKey: .version)
        try c.encode(allAsExpected, forKey: .allAsExpected)
        try c.encode(events, forKey: .events)
        try c.encode(summary, forKey: .summary)
    }
}

/// Collects events as the scenario runs; optionally echoes each one as it happens.
public final class DemoRecorder {
    /// What was recorded so far.
    public private(set) var report = DemoReport()
    private let echo: ((DemoEvent) -> Void)?

    /// A recorder that calls `echo` with each step as it is recorded.
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
                            summary.map(\.cells))
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
