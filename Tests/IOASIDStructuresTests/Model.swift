// The reference models the structure tests compare against: plain, obviously correct and slow.
@testable import IOASIDStructures
import Testing

/// Collects mismatches so a test that checks hundreds of thousands of cases reports the first
/// few instead of flooding the log (and stays fast: one `#expect` per test).
struct Mismatches {
    private(set) var lines: [String] = []
    private(set) var total = 0

    mutating func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        guard !condition else { return }
        total += 1
        if lines.count < 8 { lines.append(message()) }
    }

    func expectNone(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(total == 0, "\(total) mismatches, first: \(lines.joined(separator: "\n"))", sourceLocation: sourceLocation)
    }
}

/// An interval map as a list of spans in insertion order, every question answered by a scan.
struct IntervalModel {
    var spans: [(range: IOVARange, value: Int)] = []

    func overlaps(_ r: IOVARange) -> Bool { spans.contains { $0.range.start <= r.last && r.start <= $0.range.last } }

    mutating func insert(_ r: IOVARange, _ value: Int) -> Bool {
        if overlaps(r) { return false }
        spans.append((r, value))
        return true
    }

    /// Spans in ascending order (the order the map promises).
    var sorted: [(range: IOVARange, value: Int)] { spans.sorted { $0.range.start < $1.range.start } }

    func containing(_ a: UInt64) -> (range: IOVARange, value: Int)? { spans.first { $0.range.start <= a && a <= $0.range.last } }

    /// The free addresses of `window`, as maximal runs, found address by address.
    func holes(in window: IOVARange) -> [IOVARange] {
        var result: [IOVARange] = []
        var runStart: UInt64? = nil
        var a = window.start
        while true {
            let free = containing(a) == nil
            if free, runStart == nil { runStart = a }
            if !free, let s = runStart { result.append(IOVARange(start: s, last: a - 1)); runStart = nil }
            if a == window.last { break }
            a += 1
        }
        if let s = runStart { result.append(IOVARange(start: s, last: window.last)) }
        return result
    }
}

/// Every span `[base + i, base + j]` with `0 <= i <= j < size`.
func allSpans(size: UInt64, base: UInt64) -> [IOVARange] {
    var out: [IOVARange] = []
    for i in 0..<size { for j in i..<size { out.append(IOVARange(start: base + i, last: base + j)) } }
    return out
}

extension IntervalMap where Value == Int {
    /// Compares every query of the map with the model over the addresses `base ... base + size - 1`
    /// and every window given.
    func compare(with model: IntervalModel, size: UInt64, base: UInt64, windows: [IOVARange], into m: inout Mismatches,
                 _ context: @autoclosure () -> String) {
        _checkInvariants()
        let expected = model.sorted
        m.check(count == expected.count && isEmpty == expected.isEmpty, "count \(count) != \(expected.count) after \(context())")
        m.check(all.map(\.range) == expected.map(\.range) && all.map(\.value) == expected.map(\.value),
                "entries \(all.map(\.range)) != \(expected.map(\.range)) after \(context())")
        for k in 0..<size {
            let a = base + k
            let want = model.containing(a)
            let got = entry(containing: a)
            m.check(got?.range == want?.range && got?.value == want?.value, "entry(containing: \(a)) after \(context())")
            let gotIndex = index(containing: a)
            m.check(gotIndex.map { self[$0].range } == want?.range, "index(containing: \(a)) after \(context())")
            let firstEnding = expected.firstIndex { $0.range.last >= a } ?? expected.count
            m.check(firstIndex(endingAtOrAfter: a) == firstEnding, "firstIndex(endingAtOrAfter: \(a)) after \(context())")
        }
        for w in windows {
            let over = expected.filter { $0.range.start <= w.last && w.start <= $0.range.last }
            var seen: [IOVARange] = []
            forEach(overlapping: w) { seen.append($0.range) }
            m.check(seen == over.map(\.range), "forEach(overlapping: \(w)) = \(seen) after \(context())")
            m.check(intersects(w) == !over.isEmpty, "intersects(\(w)) after \(context())")
            m.check(firstIndex(overlapping: w).map { self[$0].range } == over.first?.range, "firstIndex(overlapping: \(w)) after \(context())")
            let holes = holes(in: w)
            m.check(holes == model.holes(in: w), "holes(in: \(w)) = \(holes), model \(model.holes(in: w)) after \(context())")
        }
    }
}
