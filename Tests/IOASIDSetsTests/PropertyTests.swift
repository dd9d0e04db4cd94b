import IOASIDCore
@testable import IOASIDSets
import Synchronization
import Testing
import Dispatch

/// The obvious implementation: linear scans over small dictionaries. Each operation returns what
/// the allocator must return: a value or an errno, with the same checks in the same order.
private struct Model {
    struct PState { var set: UInt32; var users = 0; var pending = false }
    struct SState { var owner: IOASIDSetOwner; var quota: Int? ; var count = 0 }
    let capacity: Int
    let maxPASID: UInt32
    var reserved = 0
    var pasids: [UInt32: PState] = [:]
    var sets: [UInt32: SState] = [:]
    var nextSet: UInt32 = 1

    var pool: Int {
        capacity - reserved - sets.values.reduce(0) { $0 + ($1.quota ?? $1.count) }
    }

    enum R: Equatable { case ok(Int), err(Int32) }

    mutating func reserve(_ n: Int) -> R {
        guard n >= 0 else { return .err(EINVAL) }
        guard n <= pool else { return .err(ENOSPC) }
        reserved += n; return .ok(0)
    }
    mutating func cancel(_ n: Int) -> R {
        guard n >= 0, n <= reserved else { return .err(EINVAL) }
        reserved -= n; return .ok(0)
    }
    mutating func allocSet(_ owner: IOASIDSetOwner, _ quota: Int?) -> R {
        if owner != .none, sets.values.contains(where: { $0.owner == owner }) { return .err(EEXIST) }
        if let q = quota, q > pool { return .err(ENOSPC) }
        let id = nextSet; nextSet += 1
        sets[id] = SState(owner: owner, quota: quota)
        return .ok(Int(id))
    }
    mutating func freeSet(_ id: UInt32) -> R {
        guard let s = sets[id] else { return .err(ENOENT) }
        guard s.count == 0 else { return .err(EBUSY) }
        sets[id] = nil; return .ok(0)
    }
    mutating func alloc(_ set: UInt32, _ lo: UInt32, _ hi: UInt32) -> R {
        guard lo != 0 else { return .err(EINVAL) }
        guard lo <= hi, hi <= maxPASID else { return .err(EINVAL) }
        guard let s = sets[set] else { return .err(ENOENT) }
        if let q = s.quota { guard s.count < q else { return .err(ENOSPC) } } else { guard pool > 0 else { return .err(ENOSPC) } }
        guard let p = (lo...hi).first(where: { pasids[$0] == nil }) else { return .err(ENOSPC) }
        pasids[p] = PState(set: set)
        sets[set]!.count += 1
        return .ok(Int(p))
    }
    mutating func release(_ p: UInt32) {
        sets[pasids[p]!.set]!.count -= 1
        pasids[p] = nil
    }
    func owned(_ p: UInt32, _ set: UInt32) -> Int32? {
        guard let e = pasids[p] else { return ENOENT }
        return e.set == set ? nil : EPERM
    }
    mutating func free(_ p: UInt32, _ set: UInt32) -> R {
        if let e = owned(p, set) { return .err(e) }
        guard !pasids[p]!.pending else { return .err(ENOENT) }
        if pasids[p]!.users == 0 { release(p); return .ok(1) }
        pasids[p]!.pending = true; return .ok(0)
    }
    mutating func get(_ p: UInt32, _ set: UInt32) -> R {
        if let e = owned(p, set) { return .err(e) }
        guard !pasids[p]!.pending else { return .err(EBUSY) }
        pasids[p]!.users += 1; return .ok(pasids[p]!.users)
    }
    mutating func put(_ p: UInt32, _ set: UInt32) -> R {
        if let e = owned(p, set) { return .err(e) }
        guard pasids[p]!.users > 0 else { return .err(EINVAL) }
        pasids[p]!.users -= 1
        if pasids[p]!.users == 0, pasids[p]!.pending { release(p); return .ok(1) }
        return .ok(0)
    }
    mutating func freeAll(_ set: UInt32) -> R {
        guard sets[set] != nil else { return .err(ENOENT) }
        var n = 0
        for (p, e) in pasids where e.set == set && !e.pending {
            if e.users == 0 { release(p); n += 1 } else { pasids[p]!.pending = true }
        }
        return .ok(n)
    }
}

private func run(_ body: () throws -> Int) -> Model.R {
    do { return .ok(try body()) } catch { return .err((error as? IOMMUError)?.errno ?? -1) }
}

@Suite struct PropertyTests {
    @Test(arguments: 0..<24)
    func allocatorMatchesReferenceModel(seed: Int) throws {
        var rng = SeededRNG(seed: UInt64(seed) &* 0x1234_5678_9ABC)
        let width = [3, 5, 6][seed % 3]
        let a = try PASIDAllocator(pasidWidth: width)
        var m = Model(capacity: a.systemCapacity, maxPASID: a.maxPASID)
        let maxP = a.maxPASID
        func anySet() -> UInt32 { UInt32.random(in: 1...(m.nextSet + 1), using: &rng) }
        func anyPASID() -> UInt32 { UInt32.random(in: 0...(maxP + 1), using: &rng) }
        /// Mostly a held PASID with its own set, sometimes a wrong set or a random PASID.
        func target() -> (UInt32, UInt32) {
            let held = m.pasids.keys.sorted()
            guard !held.isEmpty, Int.random(in: 0..<10, using: &rng) < 8 else { return (anyPASID(), anySet()) }
            let p = held.randomElement(using: &rng)!
            return (p, Int.random(in: 0..<10, using: &rng) < 9 ? m.pasids[p]!.set : anySet())
        }
        var allocated = 0, released = 0
        defer {
            // The sequence must exercise the interesting paths, not only error cases.
            #expect(allocated >= 15)
            #expect(released >= 5)
        }
        for step in 0..<600 {
            let op = Int.random(in: 0..<100, using: &rng)
            let got: Model.R, want: Model.R
            switch op {
            case 0..<4:
                let n = Int.random(in: -1...4, using: &rng)
                got = run { try a.reserveCapacity(n); return 0 }; want = m.reserve(n)
            case 4..<8:
                let n = Int.random(in: -1...4, using: &rng)
                got = run { try a.cancelCapacity(n); return 0 }; want = m.cancel(n)
            case 8..<14:
                let owner: IOASIDSetOwner = [.none, .vm(id: UInt64.random(in: 0..<3, using: &rng)),
                                             .process(pid: Int32.random(in: 0..<3, using: &rng))][Int.random(in: 0..<3, using: &rng)]
                let q: Int? = Bool.random(using: &rng) ? nil : Int.random(in: 0...6, using: &rng)
                got = run { Int(try a.allocSet(owner: owner, quota: q.map { .limited(UInt32($0)) } ?? .unlimited).rawValue) }
                want = m.allocSet(owner, q)
            case 14..<17:
                let s = anySet()
                got = run { try a.freeSet(IOASIDSetID(rawValue: s)); return 0 }; want = m.freeSet(s)
            case 17..<50:
                let s = anySet()
                var lo = UInt32.random(in: 0...maxP, using: &rng), hi = UInt32.random(in: 0...(maxP + 1), using: &rng)
                if Int.random(in: 0..<10, using: &rng) < 8 { lo = max(1, min(lo, hi)); hi = max(lo, min(hi, maxP)) }
                got = run { Int(try a.alloc(in: IOASIDSetID(rawValue: s), min: lo, max: hi)) }
                want = m.alloc(s, lo, hi)
                if case .ok(let p) = got {
                    allocated += 1
                    #expect(m.pasids[UInt32(p)]?.users == 0, "PASID \(p) handed out while held")
                }
            case 50..<68:
                let (p, s) = target()
                got = run { try a.free(p, in: IOASIDSetID(rawValue: s)) ? 1 : 0 }; want = m.free(p, s)
                if got == .ok(1) { released += 1 }
            case 68..<80:
                let (p, s) = target()
                got = run { try a.get(p, in: IOASIDSetID(rawValue: s)) }; want = m.get(p, s)
            case 80..<95:
                let (p, s) = target()
                got = run { try a.put(p, in: IOASIDSetID(rawValue: s)) ? 1 : 0 }; want = m.put(p, s)
            default:
                let s = anySet()
                got = run { try a.freeAll(in: IOASIDSetID(rawValue: s)) }; want = m.freeAll(s)
            }
            #expect(got == want, "seed \(seed) step \(step) op \(op)")
            if got != want { return }
            // Invariants, read from the allocator itself.
            #expect(a.availableCapacity == m.pool)
            #expect(a.availableCapacity >= 0)
            var seen = Set<PASID>()
            for id in m.sets.keys.sorted() {
                let set = IOASIDSetID(rawValue: id)
                let info = try a.setInfo(set)
                let held = try a.entries(in: set)
                if case .limited(let q) = info.quota { #expect(held.count <= Int(q), "quota exceeded") }
                for e in held {
                    #expect(seen.insert(e.pasid).inserted, "PASID \(e.pasid) in two places")
                    #expect(e.pasid != 0 && e.pasid <= maxP)
                }
            }
            #expect(seen == Set(m.pasids.keys))
        }
    }

    @Test func fourThreadsNeverDuplicateOrOverrunQuota() throws {
        let a = try PASIDAllocator(pasidWidth: 8)
        let quota = 40
        let limited = try a.allocSet(owner: .vm(id: 1), quota: .limited(UInt32(quota)))
        let shared = try a.allocSet(owner: .vm(id: 2), quota: .unlimited)
        final class Shared: Sendable {
            let live = Mutex<Set<PASID>>([])
            let limitedCount = Mutex(0)
            let failures = Mutex<[String]>([])
        }
        let box = Shared()
        @Sendable func fail(_ s: String) { box.failures.withLock { $0.append(s) } }

        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            var rng = SeededRNG(seed: UInt64(thread) + 100)
            var mine: [(PASID, IOASIDSetID)] = []
            for _ in 0..<3000 {
                if mine.isEmpty || Int.random(in: 0..<3, using: &rng) < 2 {
                    let set = Bool.random(using: &rng) ? limited : shared
                    do {
                        let p = try a.alloc(in: set)
                        if !box.live.withLock({ $0.insert(p).inserted }) { fail("duplicate \(p)") }
                        if set == limited {
                            let n = box.limitedCount.withLock { $0 += 1; return $0 }
                            if n > quota { fail("quota overrun \(n)") }
                        }
                        mine.append((p, set))
                    } catch {
                        if (error as? IOMMUError)?.errno ?? -1 != ENOSPC { fail("alloc errno \((error as? IOMMUError)?.errno ?? -1)") }
                    }
                } else {
                    let (p, set) = mine.remove(at: Int.random(in: 0..<mine.count, using: &rng))
                    box.live.withLock { _ = $0.remove(p) }
                    if set == limited { box.limitedCount.withLock { $0 -= 1 } }
                    do { try a.free(p, in: set) } catch { fail("free errno \((error as? IOMMUError)?.errno ?? -1)") }
                }
            }
            for (p, set) in mine {
                box.live.withLock { _ = $0.remove(p) }
                if set == limited { box.limitedCount.withLock { $0 -= 1 } }
                do { try a.free(p, in: set) } catch { fail("free errno \((error as? IOMMUError)?.errno ?? -1)") }
            }
        }
        #expect(box.failures.withLock { $0 } == [])
        #expect(try a.setInfo(limited).count == 0)
        #expect(try a.setInfo(shared).count == 0)
        #expect(a.availableCapacity == a.systemCapacity - quota)
    }
}
