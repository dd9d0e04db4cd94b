// IOVAAllocator.find against a model that marks every address of a small universe free or
// taken and scans for the first maximal free run (per allowed span) where the kernel's
// placement rule fits: exhaustive over small layouts, then seeded random layouts.
@testable import IOASIDStructures
import Testing

/// The kernel's placement rule inside one free run: round the run's start up to `alignment`,
/// put `pageOffset` in the low bits, and accept when `length` bytes end inside the run and the
/// start is not the run's last address.
func modelFit(_ run: IOVARange, length: UInt64, alignment: UInt64, pageOffset: UInt64) -> UInt64? {
    let rounded = (UInt128(run.start) + UInt128(alignment) - 1) / UInt128(alignment) * UInt128(alignment)
    let start = rounded | UInt128(pageOffset)
    guard start < UInt128(run.last), UInt128(run.last) - start >= UInt128(length) - 1 else { return nil }
    return UInt64(start)
}

/// The lowest IOVA the model places `length` bytes at, scanning the universe `0 ..< size`.
/// Every allowed span must lie inside the universe.
func modelFind(size: UInt64, length: UInt64, alignment: UInt64, pageOffset: UInt64, allowed: [IOVARange],
               reserved: [IOVARange], areas: [IOVARange], pageSize: UInt64) -> UInt64? {
    let taken = reserved + areas
    for span in allowed.sorted(by: { $0.start < $1.start }) {
        // The free runs of this allowed span, address by address.
        var runStart: UInt64? = nil
        var runs: [IOVARange] = []
        for a in span.start...span.last {
            let free = a >= pageSize && a <= UInt64.max - pageSize && !taken.contains { $0.contains(a) }
            if free, runStart == nil { runStart = a }
            if !free, let s = runStart { runs.append(IOVARange(start: s, last: a - 1)); runStart = nil }
        }
        if let s = runStart { runs.append(IOVARange(start: s, last: span.last)) }
        for run in runs {
            if let s = modelFit(run, length: length, alignment: alignment, pageOffset: pageOffset) { return s }
        }
    }
    return nil
}

@Suite struct IOVAAllocatorTests {
    static func find(length: UInt64, alignment: UInt64, pageOffset: UInt64, allowed: [IOVARange],
                     reserved: [IOVARange], areas: [IOVARange], pageSize: UInt64) -> UInt64? {
        var allowedMap = IntervalMap<Void>(), reservedMap = IntervalMap<Void>(), areaMap = IntervalMap<Void>()
        for r in allowed { allowedMap.insert(r) }
        for r in reserved { reservedMap.insert(r) }
        for r in areas { areaMap.insert(r) }
        return IOVAAllocator.find(length: length, alignment: alignment, pageOffset: pageOffset, allowed: allowedMap,
                                  reserved: reservedMap, areasHoles: { areaMap.holes(in: $0) }, pageSize: pageSize)
    }

    /// Over 12 addresses: every allowed span, every single reserved span (or none) and every
    /// single area (or none) that do not overlap, every length up to 5 and alignments 1, 2, 4.
    @Test func everySmallLayoutPlacesWhereTheModelDoes() {
        let size: UInt64 = 12
        let spans = allSpans(size: size, base: 0)
        let optional: [IOVARange?] = [nil] + spans.filter { $0.last - $0.start < 2 }
        var m = Mismatches()
        var cases = 0
        for allowed in spans where allowed.last - allowed.start >= 2 {
            for reserved in optional {
                for area in optional {
                    if let reserved, let area, reserved.overlaps(area) { continue }
                    for alignment: UInt64 in [1, 2, 4] {
                        for length: UInt64 in 1...5 {
                            let r = reserved.map { [$0] } ?? [], a = area.map { [$0] } ?? []
                            let got = Self.find(length: length, alignment: alignment, pageOffset: 0, allowed: [allowed],
                                                reserved: r, areas: a, pageSize: 1)
                            let want = modelFind(size: size, length: length, alignment: alignment, pageOffset: 0,
                                                 allowed: [allowed], reserved: r, areas: a, pageSize: 1)
                            cases += 1
                            m.check(got == want, "length \(length) align \(alignment) allowed \(allowed) reserved \(r) area \(a): \(String(describing: got)), model \(String(describing: want))")
                        }
                    }
                }
            }
        }
        #expect(cases > 100_000)
        m.expectNone()
    }

    /// Random layouts of several allowed spans, reserved spans and areas over 256 addresses,
    /// page sizes 1 and 4, page offsets below the alignment.
    @Test(arguments: 0..<6)
    func randomLayoutsPlaceWhereTheModelDoes(seed: UInt64) {
        var rng = SplitMix64(seed: 0xA110C + seed)
        let size: UInt64 = 256
        var m = Mismatches()
        func spans(_ n: Int, maxLength: UInt64) -> [IOVARange] {
            var map = IntervalMap<Void>()
            for _ in 0..<n {
                let s = UInt64.random(in: 0..<size, using: &rng)
                map.insert(IOVARange(start: s, last: min(size - 1, s + UInt64.random(in: 0..<maxLength, using: &rng))))
            }
            return map.all.map(\.range)
        }
        for trial in 0..<300 {
            let allowed = spans(Int.random(in: 1...4, using: &rng), maxLength: 96)
            let reserved = spans(Int.random(in: 0...4, using: &rng), maxLength: 16)
            let areas = spans(Int.random(in: 0...6, using: &rng), maxLength: 24).filter { a in !reserved.contains { $0.overlaps(a) } }
            let pageSize: UInt64 = Bool.random(using: &rng) ? 1 : 4
            let alignment = UInt64(1) << UInt64.random(in: 0...4, using: &rng)
            let pageOffset = alignment > 1 && Bool.random(using: &rng) ? UInt64.random(in: 0..<alignment, using: &rng) : 0
            let length = UInt64.random(in: 1...40, using: &rng)
            let got = Self.find(length: length, alignment: alignment, pageOffset: pageOffset, allowed: allowed,
                                reserved: reserved, areas: areas, pageSize: pageSize)
            let want = modelFind(size: size, length: length, alignment: alignment, pageOffset: pageOffset, allowed: allowed,
                                 reserved: reserved, areas: areas, pageSize: pageSize)
            m.check(got == want, "seed \(seed) trial \(trial): length \(length) align \(alignment)+\(pageOffset) page \(pageSize) allowed \(allowed) reserved \(reserved) areas \(areas): \(String(describing: got)), model \(String(describing: want))")
            if let got {
                // Whatever it returns is free, inside one allowed span, aligned, never page 0.
                let placed = IOVARange(start: got, last: got + length - 1)
                m.check(allowed.contains { $0.contains(placed) } && !(reserved + areas).contains { $0.overlaps(placed) }
                        && got % alignment == pageOffset && got >= pageSize, "seed \(seed) trial \(trial): \(placed) is not free")
            }
        }
        m.expectNone()
    }

    @Test func withoutAllowedSpansTheFirstAndLastPageAreNeverUsed() {
        let pageSize: UInt64 = 4096
        #expect(Self.find(length: 4096, alignment: 4096, pageOffset: 0, allowed: [], reserved: [], areas: [], pageSize: pageSize) == 4096)
        // Everything below the top two pages taken: the top page stays out of reach.
        let low = IOVARange(start: 0, last: UInt64.max - 2 * pageSize)
        #expect(Self.find(length: 4096, alignment: 4096, pageOffset: 0, allowed: [], reserved: [low], areas: [], pageSize: pageSize)
                == UInt64.max - 2 * pageSize + 1)
        #expect(Self.find(length: 8192, alignment: 4096, pageOffset: 0, allowed: [], reserved: [low], areas: [], pageSize: pageSize) == nil)
        // A huge length that would overflow past the top.
        #expect(Self.find(length: .max - 1, alignment: 1, pageOffset: 0, allowed: [], reserved: [], areas: [], pageSize: pageSize) == nil)
    }
}
