// Bitmap against an array of Bools: every size up to 130 bits, then seeded random writes.
@testable import IOASIDStructures
import Testing

@Suite struct BitmapTests {
    @Test func everySizeUpTo130StartsClearAndHoldsEachBit() {
        var m = Mismatches()
        for count in 0...130 {
            var bitmap = Bitmap(count: count)
            bitmap._checkInvariants()
            m.check(bitmap.nonzeroBitCount == 0 && bitmap.words.count == (count + 63) / 64, "Bitmap(count: \(count))")
            for i in 0..<count {
                bitmap[i] = true
                bitmap._checkInvariants()
                m.check(bitmap[i] && bitmap.nonzeroBitCount == 1, "bit \(i) of \(count) set")
                m.check((0..<count).allSatisfy { bitmap[$0] == ($0 == i) }, "only bit \(i) of \(count) is set")
                bitmap[i] = false
                m.check(bitmap == Bitmap(count: count), "bit \(i) of \(count) cleared")
            }
        }
        m.expectNone()
    }

    @Test(arguments: 0..<4)
    func randomWritesMatchAnArrayOfBools(seed: UInt64) {
        var rng = SplitMix64(seed: 0xB17_0000 + seed)
        var m = Mismatches()
        for _ in 0..<20 {
            let count = Int.random(in: 1...300, using: &rng)
            var bitmap = Bitmap(count: count)
            var model = [Bool](repeating: false, count: count)
            for step in 0..<500 {
                let i = Int.random(in: 0..<count, using: &rng)
                let v = Bool.random(using: &rng)
                bitmap[i] = v
                model[i] = v
                bitmap._checkInvariants()
                m.check(bitmap.nonzeroBitCount == model.filter { $0 }.count, "seed \(seed) count \(count) step \(step)")
            }
            m.check((0..<count).allSatisfy { bitmap[$0] == model[$0] }, "seed \(seed) count \(count): bits differ")
        }
        m.expectNone()
    }
}
