// IOVARange against 128-bit arithmetic, exhaustively near both ends of the 64-bit space.
@testable import IOASIDStructures
import Testing

@Suite struct IOVARangeTests {
    /// Addresses near 0, near 2^63 and near 2^64 - 1.
    static let edges: [UInt64] = [0, 1, 2, 3, 1 << 63 - 1, 1 << 63, .max - 3, .max - 2, .max - 1, .max]

    @Test func initWithLengthAgreesWithWideArithmetic() {
        var m = Mismatches()
        for start in Self.edges {
            for length in Self.edges {
                let r = IOVARange(start: start, length: length)
                let end = UInt128(start) + UInt128(length)  // one past the last address
                let fits = length != 0 && end <= UInt128(UInt64.max) + 1
                m.check((r != nil) == fits, "IOVARange(start: \(start), length: \(length))")
                if let r {
                    m.check(r.start == start && UInt128(r.last) == end - 1, "\(r) for start \(start) length \(length)")
                    m.check(r.length == length, "length of \(r)")
                }
            }
        }
        #expect(IOVARange.all.length == nil)
        #expect(IOVARange(start: 0, last: .max - 1).length == .max)
        m.expectNone()
    }

    @Test func predicatesAgreeWithTheAddressSets() {
        var spans: [IOVARange] = []
        for s in Self.edges { for l in Self.edges where s <= l { spans.append(IOVARange(start: s, last: l)) } }
        var m = Mismatches()
        for a in spans {
            for b in spans {
                let overlaps = max(a.start, b.start) <= min(a.last, b.last)
                m.check(a.overlaps(b) == overlaps, "\(a).overlaps(\(b))")
                m.check(a.contains(b) == (a.start <= b.start && b.last <= a.last), "\(a).contains(\(b))")
                let i = a.intersection(b)
                m.check((i != nil) == overlaps, "\(a).intersection(\(b)) = \(String(describing: i))")
                if let i { m.check(i.start == max(a.start, b.start) && i.last == min(a.last, b.last), "\(a) ∩ \(b) = \(i)") }
            }
            for x in Self.edges { m.check(a.contains(x) == (a.start <= x && x <= a.last), "\(a).contains(\(x))") }
        }
        m.expectNone()
    }

    @Test func descriptionIsHexInclusive() {
        #expect(IOVARange(start: 0x1000, last: 0x1fff).description == "[0x1000, 0x1fff]")
        #expect(IOVARange.all.description == "[0x0, 0xffffffffffffffff]")
    }
}
