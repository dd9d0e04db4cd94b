/// The horizontal scale of an IOVA layout: piecewise logarithmic.
///
/// A 64-bit IOVA space holds areas of a few pages next to holes of exabytes, so a linear scale
/// would draw every area as nothing. The addresses where something starts or ends (*cuts*) split
/// the space into segments; each segment is drawn with a width that grows with the logarithm of
/// its size (`1 + log2(bytes)`), and no segment is narrower than `minimumSegment`. Within a
/// segment the scale is linear. Order is kept: a larger address is never drawn left of a smaller
/// one, and of two segments the larger is never drawn narrower.
struct PiecewiseScale {
    /// The cuts, ascending and distinct, the first one 0. Segment `i` is `[cuts[i], cuts[i+1])`;
    /// the last segment ends at 2^64.
    let cuts: [UInt64]
    /// The x of each cut, and last the x of 2^64 (so `xs.count == cuts.count + 1`).
    let xs: [Double]

    /// A scale over `[0, 2^64)` drawn from `origin` to `origin + width`.
    init(cuts: some Sequence<UInt64>, origin: Double = 0, width: Double, minimumSegment: Double = 6) {
        var sorted = Array(Set(cuts).union([0])).sorted()
        if sorted.isEmpty { sorted = [0] }
        self.cuts = sorted
        let lengths: [Double] = sorted.indices.map { i in
            i + 1 < sorted.count ? Double(sorted[i + 1] - sorted[i]) : 18_446_744_073_709_551_616.0 - Double(sorted[i])
        }
        let weights = lengths.map { 1 + Swift.max(0, log2Approximation($0)) }
        let n = Double(sorted.count)
        let minimum = Swift.min(minimumSegment, width / n)
        let spare = width - minimum * n
        let total = weights.reduce(0, +)
        var xs = [origin]
        xs.reserveCapacity(sorted.count + 1)
        var x = origin
        for w in weights {
            x += minimum + spare * w / total
            xs.append(x)
        }
        xs[xs.count - 1] = origin + width  // no rounding drift at the end
        self.xs = xs
    }

    /// The x of `address`.
    func x(_ address: UInt64) -> Double {
        // The last cut <= address (binary search).
        var low = 0, high = cuts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if cuts[mid] <= address { low = mid } else { high = mid - 1 }
        }
        let start = cuts[low]
        let length = low + 1 < cuts.count ? Double(cuts[low + 1] - start) : 18_446_744_073_709_551_616.0 - Double(start)
        let fraction = Double(address - start) / length
        return xs[low] + (xs[low + 1] - xs[low]) * fraction
    }

    /// The x just past `last`: the end of a span whose last byte is `last`.
    func x(after last: UInt64) -> Double {
        last == .max ? xs[xs.count - 1] : x(last + 1)
    }
}

/// log2 of a positive double, without Foundation.
func log2Approximation(_ value: Double) -> Double {
    guard value > 1 else { return 0 }
    // value = m * 2^e with m in [1, 2): log2 = e + log2(m); log2(m) from a short series of ln.
    let e = value.exponent
    let m = value.significand
    // ln(m) = 2 * atanh((m-1)/(m+1)), converging quickly for m in [1, 2).
    let t = (m - 1) / (m + 1)
    var term = t, sum = 0.0
    var k = 1.0
    for _ in 0..<12 { sum += term / k; term *= t * t; k += 2 }
    return Double(e) + 2 * sum / 0.6931471805599453
}
