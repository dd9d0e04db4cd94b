import Glibc
import IOASIDCore
import Synchronization

/// What a report needs to know about one open of `/dev/iommu`: the calls made on it (count,
/// errors by errno, time per ioctl), the context at its fullest (the last of its
/// richest moments), and its state when it closed.
///
/// An `IOMMUFile` has a recorder only when a front door gives it one (``IOMMUFile/recorder``,
/// the engine does with `IOASID_REPORT`); without one the ioctl path checks a nil and does
/// nothing else. With one, every call is timed and counted (allocating only when a request is
/// seen for the first time or its bounded sample of durations grows), and after every successful
/// call the context is snapshotted to keep the fullest picture: a report is a diagnostic, and
/// programs usually tear everything down before they exit.
public final class ContextRecorder: Sendable {
    /// One row of the call table.
    public struct CallRow: Sendable, Equatable {
        /// The request's C name (`IOMMU_IOAS_MAP`), or its number in hex when unknown.
        public var name: String
        public var count: Int
        /// Failed calls by errno name (`EINVAL`), most frequent first.
        public var errors: [(name: String, count: Int)]
        /// The time spent in the calls, in nanoseconds.
        public var totalNanoseconds: UInt64
        /// The median time of one call, in nanoseconds.
        public var medianNanoseconds: UInt64

        public init(name: String, count: Int, errors: [(name: String, count: Int)] = [], totalNanoseconds: UInt64 = 0,
                    medianNanoseconds: UInt64 = 0) {
            self.name = name
            self.count = count
            self.errors = errors
            self.totalNanoseconds = totalNanoseconds
            self.medianNanoseconds = medianNanoseconds
        }

        public static func == (a: CallRow, b: CallRow) -> Bool {
            a.name == b.name && a.count == b.count && a.totalNanoseconds == b.totalNanoseconds
                && a.medianNanoseconds == b.medianNanoseconds
                && a.errors.map(\.name) == b.errors.map(\.name) && a.errors.map(\.count) == b.errors.map(\.count)
        }
    }

    /// A snapshot and the moment it was taken.
    public struct Moment: Sendable, Equatable {
        public var snapshot: ContextSnapshot
        /// When it was taken, in words ("after call 12, IOMMU_HWPT_ALLOC").
        public var when: String
        public init(snapshot: ContextSnapshot, when: String) { self.snapshot = snapshot; self.when = when }
    }

    /// At most this many durations are kept per request: beyond, a uniform random sample of
    /// that size (reservoir sampling), so memory stays bounded and the median is that sample's.
    public static let samplesPerRequest = 65_536

    private struct PerRequest {
        var name: String
        var count = 0
        var totalNanoseconds: UInt64 = 0
        var samples: [UInt64] = []
        var errors: [Int32: Int] = [:]

        mutating func add(_ nanoseconds: UInt64, random: inout UInt64) {
            count += 1
            totalNanoseconds &+= nanoseconds
            if samples.count < ContextRecorder.samplesPerRequest {
                samples.append(nanoseconds)
            } else {
                // xorshift64: a sample slot, replaced with probability size/count.
                random ^= random << 13; random ^= random >> 7; random ^= random << 17
                let slot = Int(random % UInt64(count))
                if slot < samples.count { samples[slot] = nanoseconds }
            }
        }
    }

    private struct State {
        weak var context: Context?
        var requests: [UInt: PerRequest] = [:]
        var calls = 0
        var random: UInt64 = 0x9E37_79B9_7F4A_7C15
        var fullest: Moment?
        var closed: Moment?
    }

    private let state: Mutex<State>
    /// The descriptor the open got (for the report's headings).
    public let descriptor: Int32
    /// The order of this open among the process's opens, from 1.
    public let sequence: Int

    /// Creates the recorder of `context`, opened as `descriptor`, the `sequence`-th open.
    public init(context: Context, descriptor: Int32 = -1, sequence: Int = 0) {
        state = Mutex(State(context: context))
        self.descriptor = descriptor
        self.sequence = sequence
    }

    /// The monotonic clock in nanoseconds.
    @inline(__always)
    static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
    }

    /// Runs one call through `body`, timing and counting it; keeps the context's fullest snapshot.
    func measure(request: UInt, _ body: () -> Int) -> Int {
        let start = Self.now()
        let result = body()
        let elapsed = Self.now() &- start
        let context = state.withLock { s -> Context? in
            s.calls += 1
            let key = request & 0xffff_ffff
            if s.requests[key] == nil { s.requests[key] = PerRequest(name: Self.name(of: key)) }
            var random = s.random
            s.requests[key]!.add(elapsed, random: &random)
            s.random = random
            if result < 0 { s.requests[key]!.errors[Int32(-result), default: 0] += 1 }
            return result >= 0 ? s.context : nil
        }
        if let context {
            // Outside our lock: the snapshot takes the context's.
            let snapshot = context.snapshot()
            state.withLock { s in
                if s.fullest.map({ snapshot.weight >= $0.snapshot.weight }) ?? true {
                    let name = s.requests[request & 0xffff_ffff]?.name ?? "?"
                    s.fullest = Moment(snapshot: snapshot, when: "after call \(s.calls) (\(name))")
                }
            }
        }
        return result
    }

    /// Records the context's state as it is closed (before its objects are destroyed).
    func closing(_ context: Context) {
        let snapshot = context.snapshot()
        state.withLock { s in
            s.closed = Moment(snapshot: snapshot, when: "when it was closed, after \(s.calls) calls")
        }
    }

    /// The state the report shows as final: at the close, or now if the open is still live.
    public var final: Moment? {
        let (closed, context, calls) = state.withLock { s in (s.closed, s.context, s.calls) }
        if let closed { return closed }
        guard let context else { return nil }
        return Moment(snapshot: context.snapshot(), when: "at exit (still open), after \(calls) calls")
    }

    /// Whether the open was closed.
    public var isClosed: Bool { state.withLock { $0.closed != nil } }

    /// The last snapshot with the most objects, areas and attachments, taken after a successful call.
    public var fullest: Moment? { state.withLock { $0.fullest } }

    /// The call table, one row per request, sorted by name.
    public var calls: [CallRow] {
        state.withLock { s in
            s.requests.values.map { r in
                let sorted = r.samples.sorted()
                let median = sorted.isEmpty ? 0 : sorted.count % 2 == 1
                    ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
                let errors = r.errors.map { (name: TraceLine.errnoName($0.key), count: $0.value) }
                    .sorted { $0.count != $1.count ? $0.count > $1.count : $0.name < $1.name }
                return CallRow(name: r.name, count: r.count, errors: errors,
                               totalNanoseconds: r.totalNanoseconds, medianNanoseconds: median)
            }.sorted { $0.name < $1.name }
        }
    }

    /// The C name of a request on `/dev/iommu`, or its number.
    static func name(of request: UInt) -> String {
        if let row = Dispatcher.table.lazy.compactMap({ $0 }).first(where: { $0.request == request }) { return "\(row.name)" }
        if let row = IOMMUFile.ioasidTable.first(where: { $0.request == request }) { return "\(row.name)" }
        if let name = IOCTL.name(of: request) { return name }
        return "ioctl 0x" + String(request, radix: 16)
    }
}
