// Timing and statistics shared by every section: a monotonic clock, medians with spread,
// calibrated and paired (figure + baseline, run by run) measurements, and table printing.
import Glibc

@inline(__always) func nowNS() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

struct Stats {
    let samples: [Double]
    init(_ s: [Double]) { samples = s.sorted() }
    var median: Double {
        let n = samples.count
        return n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2
    }
    var min: Double { samples.first ?? .nan }
    var max: Double { samples.last ?? .nan }
}

func fmt(_ v: Double, _ digits: Int = 1) -> String {
    if v.isNaN { return "n/a" }
    var s = String(Int((abs(v) * pow(10, Double(digits))).rounded()))
    while s.count <= digits { s = "0" + s }
    if digits > 0 { s.insert(".", at: s.index(s.endIndex, offsetBy: -digits)) }
    return (v < 0 ? "-" : "") + s
}

func pad(_ s: String, _ w: Int, left: Bool = false) -> String {
    s.count >= w ? s : (left ? s + String(repeating: " ", count: w - s.count) : String(repeating: " ", count: w - s.count) + s)
}

func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = Swift.max(widths[i], c.count) } }
    func line(_ r: [String]) -> String {
        r.enumerated().map { i, c in pad(c, widths[i], left: i == 0) }.joined(separator: "  ")
    }
    print(line(header))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    for r in rows { print(line(r)) }
}

/// Picks an iteration count so that one run of `body` takes about `target` ns.
func calibrate(target: UInt64 = 20_000_000, _ body: () -> Void) -> Int {
    var n = 1
    while true {
        let t0 = nowNS()
        for _ in 0..<n { body() }
        let dt = nowNS() - t0
        if dt >= target / 4 || n >= 1 << 24 {
            return Swift.max(1, Int(Double(n) * Double(target) / Double(Swift.max(dt, 1))))
        }
        n *= 4
    }
}

/// `reps` runs of `iterations` calls of `op`, each immediately followed by `iterations` calls
/// of `baseline`: ns per call of both, and the ratio op/baseline of each run.
func paired(iterations: Int, op: () -> Void, baseline: () -> Void) -> (op: Stats, base: Stats, ratio: Stats) {
    var o: [Double] = [], b: [Double] = [], r: [Double] = []
    for rep in -2..<reps { // two warm-up runs
        let t0 = nowNS()
        for _ in 0..<iterations { op() }
        let t1 = nowNS()
        for _ in 0..<iterations { baseline() }
        let t2 = nowNS()
        guard rep >= 0 else { continue }
        let x = Double(t1 - t0) / Double(iterations), y = Double(t2 - t1) / Double(iterations)
        o.append(x); b.append(y); r.append(x / y)
    }
    return (Stats(o), Stats(b), Stats(r))
}

func fail(_ message: String) -> Never {
    let line = "ioasid-benchmark: " + message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(1)
}
