// IntervalMap against a list scanned address by address: every sequence of three inserts over
// small universes (at 0 and at the top of the 64-bit space), then long seeded random sequences.
@testable import IOASIDStructures
import Testing

@Suite struct IntervalMapTests {
    /// Every sequence of three inserts of spans of a 5-address universe, at 0 and ending at
    /// 2^64 - 1 (where `last + 1` would overflow); after each sequence every query agrees with the model.
    @Test(arguments: [0, UInt64.max - 4])
    func everySequenceOfThreeInsertsOverFiveAddresses(base: UInt64) {
        let size: UInt64 = 5
        let spans = allSpans(size: size, base: base)
        var m = Mismatches()
        for a in spans.indices {
            for b in spans.indices {
                for c in spans.indices {
                    var map = IntervalMap<Int>()
                    var model = IntervalModel()
                    for (k, i) in [a, b, c].enumerated() {
                        let inserted = map.insert(spans[i], k)
                        m.check(inserted == model.insert(spans[i], k), "insert \(spans[i]) #\(k) of \([a, b, c].map { spans[$0] })")
                    }
                    map.compare(with: model, size: size, base: base, windows: spans, into: &m, "\([a, b, c].map { spans[$0] })")
                }
            }
        }
        m.expectNone()
    }

    /// Seeded random inserts, removals, value updates and clears over 48 addresses (low, and at
    /// the top for odd seeds), each step checked against the model; a failure names the seed.
    @Test(arguments: 0..<8)
    func randomOperationSequencesMatchTheModel(seed: UInt64) {
        var rng = SplitMix64(seed: 0x1_0A51D + seed)
        let size: UInt64 = 48
        let base: UInt64 = seed % 2 == 0 ? 0 : .max - (size - 1)
        let windows = (0..<24).map { _ -> IOVARange in
            let s = UInt64.random(in: 0..<size, using: &rng)
            return IOVARange(start: base + s, last: base + UInt64.random(in: s..<size, using: &rng))
        } + [IOVARange(start: base, last: base + (size - 1))]
        var map = IntervalMap<Int>()
        map.reserveCapacity(8)
        var model = IntervalModel()
        var m = Mismatches()
        for step in 0..<400 {
            let roll = Int.random(in: 0..<100, using: &rng)
            if roll < 60 {
                let s = UInt64.random(in: 0..<size, using: &rng)
                let l = min(size - 1, s + UInt64.random(in: 0..<6, using: &rng))
                let r = IOVARange(start: base + s, last: base + l)
                m.check(map.insert(r, step) == model.insert(r, step), "seed \(seed) step \(step): insert \(r)")
            } else if roll < 95, !map.isEmpty {
                let i = Int.random(in: 0..<map.count, using: &rng)
                let removed = map.remove(at: i)
                let j = model.spans.firstIndex { $0.range == removed.range && $0.value == removed.value }
                m.check(j != nil, "seed \(seed) step \(step): removed \(removed.range), not in the model")
                if let j { model.spans.remove(at: j) }
            } else if roll < 97 {
                map.removeAll()
                model.spans.removeAll()
            } else if !map.isEmpty {
                let i = Int.random(in: 0..<map.count, using: &rng)
                map[i].value = -step
                let r = map[i].range
                if let j = model.spans.firstIndex(where: { $0.range == r }) { model.spans[j].value = -step }
            }
            map.compare(with: model, size: size, base: base, windows: windows, into: &m, "seed \(seed) step \(step)")
        }
        m.expectNone()
    }

    @Test func holesOfAnEmptyMapAreTheWindowAndOfAFullMapNone() {
        var map = IntervalMap<Void>()
        #expect(map.holes(in: .all) == [.all])
        map.insert(.all)
        #expect(map.holes(in: .all).isEmpty)
        #expect(map.holes(in: IOVARange(start: 5, last: 9)).isEmpty)
        let inserted = map.insert(IOVARange(start: 0, last: 0))
        #expect(!inserted)
        map._checkInvariants()
    }
}
