// Section 6 of ioasid-benchmark: the software IOMMU's translation cache (IOTLB).
//
//   - the hit path: ns per lookup (median of runs) against a plain array load loop measured in
//     the same runs, and the same lookup inside an uncontended pthread mutex (the alternative
//     to the per-set seqlock, see TranslationCache.swift);
//   - lookups on two threads at once (seqlock vs mutex);
//   - hit rate and lookups/s for a streaming and a random DMA pattern over a working set eight
//     times the cache's 4 KiB capacity (256-byte requests; a miss inserts a computed translation,
//     no table walk);
//   - mallocs per hit: `softIOMMUHitLookup()` is counted in section 4's child.

import Dispatch
import Glibc
import IOASIDSoftIOMMU

/// Keeps `x` alive so the optimizer cannot drop the work that made it.
@inline(never) func softIOMMUBlackHole(_ x: UInt64) { if x == 0x5EED_5EED_5EED_5EED { print("") } }

/// A cache holding 1024 4 KiB translations (domain 1, PASID 5) and 4096 addresses that hit them.
private struct HitRig {
    let cache = TranslationCache(.iotlb)
    let tag = TranslationTag(domain: 1, space: 5)
    var addresses: [UInt64] = []
    var words: [UInt64] = []
    static let base: UInt64 = 0x1000_0000

    init() {
        for page in 0..<UInt64(1024) {
            cache.insert(Translation(inputBase: Self.base + page << 12, outputBase: 0x8_0000_0000 + page << 12, permissions: .readWrite),
                         tag: tag)
        }
        var state: UInt64 = 12345
        for _ in 0..<4096 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            addresses.append(Self.base + ((state >> 33) % 1024) << 12 + (state >> 20) & 0xFF8)
        }
        words = addresses.map { $0 ^ 0x55 }
    }
}

/// A closure doing one IOTLB hit lookup, for section 4's malloc counting.
func softIOMMUHitLookup() -> () -> Void {
    let rig = HitRig()
    var i = 0
    return {
        i = (i + 1) & 4095
        softIOMMUBlackHole(rig.cache.lookup(rig.tag, address: rig.addresses[i])?.outputBase ?? 0)
    }
}

private final class PthreadLock: @unchecked Sendable {
    let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(m, nil) }
}

@MainActor
func softIOMMUSection() {
    print("== 7. software IOMMU: the translation cache (IOTLB, \(TranslationCache.Configuration.iotlb.capacity) entries: 256 sets x 8 ways of 4 KiB, 2 MiB and 1 GiB classes) ==")
    let rig = HitRig()
    let batch = 256
    var position = 0
    let lock = PthreadLock()

    func lookups() {
        var acc: UInt64 = 0
        let start = position
        for i in 0..<batch {
            if let t = rig.cache.lookup(rig.tag, address: rig.addresses[(start &+ i) & 4095]) { acc &+= t.outputBase }
        }
        position = (start &+ batch) & 4095
        softIOMMUBlackHole(acc)
    }
    func loads() {
        var acc: UInt64 = 0
        let start = position
        for i in 0..<batch { acc &+= rig.words[(start &+ i) & 4095] }
        position = (start &+ batch) & 4095
        softIOMMUBlackHole(acc)
    }
    func lockedLookups() {
        var acc: UInt64 = 0
        let start = position
        for i in 0..<batch {
            pthread_mutex_lock(lock.m)
            if let t = rig.cache.lookup(rig.tag, address: rig.addresses[(start &+ i) & 4095]) { acc &+= t.outputBase }
            pthread_mutex_unlock(lock.m)
        }
        position = (start &+ batch) & 4095
        softIOMMUBlackHole(acc)
    }

    let n = calibrate { lookups(); loads() }
    let hit = paired(iterations: n, op: lookups, baseline: loads)
    let locked = paired(iterations: n, op: lockedLookups, baseline: loads)
    let b = Double(batch)
    let statistics = rig.cache.statistics
    printTable(["hit path (per lookup)", "ns", "spread", "array load ns", "spread", "ratio", "goal <= 10 ns"], [
        ["IOTLB hit lookup (seqlock)", fmt(hit.op.median / b, 2), "\(fmt(hit.op.min / b, 2))..\(fmt(hit.op.max / b, 2))",
         fmt(hit.base.median / b, 2), "\(fmt(hit.base.min / b, 2))..\(fmt(hit.base.max / b, 2))", fmt(hit.ratio.median, 1),
         hit.op.median / b <= 10 ? "yes" : "NO"],
        ["(alternative) lookup in a pthread mutex", fmt(locked.op.median / b, 2), "\(fmt(locked.op.min / b, 2))..\(fmt(locked.op.max / b, 2))",
         fmt(locked.base.median / b, 2), "\(fmt(locked.base.min / b, 2))..\(fmt(locked.base.max / b, 2))", fmt(locked.ratio.median, 1), ""],
    ])
    print("(batches of \(batch) lookups of 4096 precomputed addresses over 1024 cached pages; all hits: \(statistics.misses == 0 ? "yes" : "NO, \(statistics.misses) misses"))")

    // Two threads at once: the seqlock's readers write nothing shared; the mutex's share its line.
    func twoThreads(_ locked: Bool) -> Double {
        let per = 2_000_000
        var samples: [Double] = []
        for _ in 0..<max(3, reps / 3) {
            let t0 = nowNS()
            DispatchQueue.concurrentPerform(iterations: 2) { worker in
                var acc: UInt64 = 0
                for i in 0..<per {
                    let a = rig.addresses[(i &+ worker &* 2048) & 4095]
                    if locked { pthread_mutex_lock(lock.m) }
                    if let t = rig.cache.lookup(rig.tag, address: a) { acc &+= t.outputBase }
                    if locked { pthread_mutex_unlock(lock.m) }
                }
                softIOMMUBlackHole(acc)
            }
            samples.append(Double(2 * per) / (Double(nowNS() - t0) / 1e9))
        }
        return Stats(samples).median
    }
    let concurrent = twoThreads(false), concurrentLocked = twoThreads(true)
    printTable(["2 threads looking up at once", "M lookups/s (both threads)"], [
        ["seqlock", fmt(concurrent / 1e6, 1)],
        ["pthread mutex around each lookup", fmt(concurrentLocked / 1e6, 1)],
    ])

    // Streaming vs random DMA over a working set eight times the 4 KiB capacity.
    let workingSetPages: UInt64 = 8 * 2048
    let requestSize: UInt64 = 256
    let requests = 1 << 20
    var state: UInt64 = 99
    let randomAddresses: [UInt64] = (0..<65536).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return ((state >> 20) % (workingSetPages << 12)) & ~(requestSize - 1)
    }
    func run(streaming: Bool) -> (rate: Double, hitRate: Double) {
        let cache = TranslationCache(.iotlb)
        let tag = TranslationTag(domain: 2, space: 1)
        var rates: [Double] = [], hitRates: [Double] = []
        var offset: UInt64 = 0
        for rep in -1..<max(3, reps / 2) {
            cache.resetStatistics()
            var acc: UInt64 = 0
            let t0 = nowNS()
            for i in 0..<requests {
                let address: UInt64
                if streaming {
                    address = offset
                    offset = (offset + requestSize) % (workingSetPages << 12)
                } else {
                    address = randomAddresses[i & 65535]
                }
                if let t = cache.lookup(tag, address: address) {
                    acc &+= t.output(for: address)
                } else {
                    let t = Translation(inputBase: address, outputBase: 0x40_0000_0000 + address, permissions: .readWrite)
                    cache.insert(t, tag: tag)
                    acc &+= t.output(for: address)
                }
            }
            let dt = Double(nowNS() - t0)
            softIOMMUBlackHole(acc)
            guard rep >= 0 else { continue }
            rates.append(Double(requests) / (dt / 1e9))
            hitRates.append(cache.statistics.hitRate)
        }
        return (Stats(rates).median, Stats(hitRates).median)
    }
    let stream = run(streaming: true), random = run(streaming: false)
    printTable(["DMA pattern (256 B requests, 64 MiB working set)", "hit rate", "M lookups/s (incl. miss fills)"], [
        ["streaming (sequential)", fmt(stream.hitRate * 100, 2) + "%", fmt(stream.rate / 1e6, 1)],
        ["random", fmt(random.hitRate * 100, 2) + "%", fmt(random.rate / 1e6, 1)],
    ])
    print("(expected hit rates: streaming 15/16 = 93.75%; random about 2048/16384 = 12.5%)")
    print("")
}
