import IOASIDCore
import IOASIDLinuxABI

/// What a report page shows: one process of a run and every open of `/dev/iommu` it made,
/// as plain values (hand-built in tests, gathered from the engine's recorders in a run).
public struct ReportDocument: Sendable {
    /// The program's command line, as the page's title shows it.
    public var program: String
    /// The process the page describes.
    public var pid: Int32
    /// When the page was written, in words (UTC).
    public var written: String
    /// The opens of `/dev/iommu`, in the order they were made.
    public var contexts: [ContextReport]

    public init(program: String, pid: Int32, written: String, contexts: [ContextReport]) {
        self.program = program
        self.pid = pid
        self.written = written
        self.contexts = contexts
    }
}

/// One open of `/dev/iommu` in a report.
public struct ContextReport: Sendable {
    /// The order of the open in the process, from 1.
    public var sequence: Int
    /// The descriptor it was opened as.
    public var descriptor: Int32
    /// Whether the program closed it before the report was written.
    public var closed: Bool
    /// The final state: at close, or at exit for an open still live.
    public var final: ContextRecorder.Moment?
    /// The state with the most objects and areas, if richer than the final one.
    public var fullest: ContextRecorder.Moment?
    /// The calls made on it.
    public var calls: [ContextRecorder.CallRow]

    public init(sequence: Int, descriptor: Int32, closed: Bool, final: ContextRecorder.Moment?,
                fullest: ContextRecorder.Moment?, calls: [ContextRecorder.CallRow]) {
        self.sequence = sequence
        self.descriptor = descriptor
        self.closed = closed
        self.final = final
        self.fullest = fullest
        self.calls = calls
    }

    /// The report of what `recorder` saw.
    public init(_ recorder: ContextRecorder) {
        self.init(sequence: recorder.sequence, descriptor: recorder.descriptor, closed: recorder.isClosed,
                  final: recorder.final, fullest: recorder.fullest, calls: recorder.calls)
    }

    /// The moments the page draws: the fullest one when it held more than the final one,
    /// then the final one.
    public var moments: [(title: String, moment: ContextRecorder.Moment)] {
        var result: [(title: String, moment: ContextRecorder.Moment)] = []
        if let fullest, fullest.snapshot.weight > (final?.snapshot.weight ?? -1) {
            result.append((title: "At its fullest, \(fullest.when)", moment: fullest))
        }
        if let final { result.append((title: (closed ? "Closed, " : "Final, ") + final.when, moment: final)) }
        return result
    }
}
