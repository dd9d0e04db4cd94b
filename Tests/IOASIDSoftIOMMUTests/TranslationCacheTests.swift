import Dispatch
import IOASIDStructures
import Synchronization
import Testing
@testable import IOASIDSoftIOMMU

private let K4: UInt64 = 0x1000, K64: UInt64 = 0x1_0000, M2: UInt64 = 0x20_0000, G1: UInt64 = 0x4000_0000

private func page(_ input: UInt64, _ output: UInt64, shift: UInt8 = 12, _ perms: AccessPermissions = .readWrite,
                  global: Bool = false) -> Translation {
    Translation(inputBase: input, outputBase: output, pageShift: shift, permissions: perms, global: global)
}

@Suite struct TranslationCacheTests {
    @Test func hitsMissesAndTagsAreExact() throws {
        let cache = TranslationCache()
        let tag = TranslationTag(domain: 3, space: 7)
        cache.insert(page(0x1234_5000, 0x9_8765_4000, .read), tag: tag)
        let t = try #require(cache.lookup(tag, address: 0x1234_5ABC))
        #expect(t.output(for: 0x1234_5ABC) == 0x9_8765_4ABC)
        #expect(t.permissions == .read && t.pageShift == 12 && !t.global)
        #expect(cache.lookup(tag, address: 0x1234_6000) == nil)
        #expect(cache.lookup(TranslationTag(domain: 4, space: 7), address: 0x1234_5000) == nil)
        #expect(cache.lookup(TranslationTag(domain: 3, space: 8), address: 0x1234_5000) == nil)
        #expect(cache.lookup(TranslationTag(domain: 3), address: 0x1234_5000) == nil)
        #expect(cache.lookup(TranslationTag(domain: 3, space: 7, privileged: true), address: 0x1234_5000) == nil)
        #expect(cache.lookup(TranslationTag(domain: 3, space: 7, table: true), address: 0x1234_5000) == nil)
        let s = cache.statistics
        #expect(s.hits == 1 && s.misses == 6 && s.insertions == 1 && s.evictions == 0)
        // Replacing the entry for the same tag and page does not add one.
        cache.insert(page(0x1234_5000, 0x5000, .readWrite), tag: tag)
        #expect(cache.count == 1)
        #expect(cache.lookup(tag, address: 0x1234_5000)?.outputBase == 0x5000)
        cache.resetStatistics()
        #expect(cache.statistics == TranslationCache.Statistics())
        cache._checkInvariants()
    }

    @Test func largePagesHitAnywhereAndAnyOverlappingInvalidationRemovesThem() throws {
        let cache = TranslationCache()
        let tag = TranslationTag(domain: 1, space: 2)
        cache.insert(page(4 * M2, 0x8000_0000, shift: 21), tag: tag)
        cache.insert(page(G1, 3 * G1, shift: 30, .all), tag: tag)
        let t = try #require(cache.lookup(tag, address: 4 * M2 + 0x1_2345))
        #expect(t.pageShift == 21 && t.output(for: 4 * M2 + 0x1_2345) == 0x8001_2345)
        #expect(cache.lookup(tag, address: G1 + 0x3FFF_FFFF)?.output(for: G1 + 0x3FFF_FFFF) == 4 * G1 - 1)
        // A 4 KiB invalidation just past the 2 MiB page leaves it; one inside removes it.
        #expect(cache.invalidate(.pages(domain: 1, address: 5 * M2, addressMask: 0)) == 0)
        #expect(cache.invalidate(.pages(domain: 1, address: 4 * M2 + 0x1F_F000, addressMask: 0)) == 1)
        #expect(cache.lookup(tag, address: 4 * M2) == nil)
        // An invalidation of 512 pages that overlaps the 1 GiB page's last 4 KiB.
        #expect(cache.invalidate(.pages(domain: 1, address: 2 * G1 - M2, addressMask: 9)) == 1)
        #expect(cache.lookup(tag, address: G1) == nil)
        cache._checkInvariants()
    }

    @Test func pagesWithoutASizeClassAreSplinteredButInvalidatedWhole() throws {
        let cache = TranslationCache()
        let tag = TranslationTag(domain: 0, space: 1)
        // A 64 KiB page (an SMMUv3 contiguous range) goes to the 4 KiB class, one fragment each.
        let big = page(16 * K64, 0xA0_0000, shift: 16)
        cache.insert(big, tag: tag, covering: 16 * K64 + 3 * K4)
        #expect(cache.lookup(tag, address: 16 * K64) == nil)  // that fragment was not cached
        let t = try #require(cache.lookup(tag, address: 16 * K64 + 3 * K4 + 8))
        #expect(t == big && t.output(for: 16 * K64 + 3 * K4 + 8) == 0xA0_3008)
        cache.insert(big, tag: tag, covering: 16 * K64 + 9 * K4)
        #expect(cache.count == 2)
        // Invalidating the first 4 KiB of the 64 KiB page removes both fragments.
        #expect(cache.invalidate(.pages(domain: 0, spaces: .only(1, includingGlobal: false), address: 16 * K64, addressMask: 0)) == 2)
        cache._checkInvariants()
    }

    @Test func invalidationGranularities() {
        let cache = TranslationCache()
        func fill() {
            _ = cache.invalidate(.all)
            for d: UInt16 in [1, 2] {
                for s: UInt32? in [nil, 5, 6] {
                    cache.insert(page(0x10_0000, 0x20_0000), tag: TranslationTag(domain: d, space: s))
                    cache.insert(page(0x40_0000, 0x60_0000, shift: 21), tag: TranslationTag(domain: d, space: s))
                }
            }
        }
        fill()
        #expect(cache.count == 12)
        #expect(cache.invalidate(.domain(1)) == 6)
        fill()
        #expect(cache.invalidate(.space(5, domain: 2)) == 2)
        fill()
        #expect(cache.invalidate(TranslationCacheInvalidation(domain: 2, spaces: .none)) == 2)
        fill()
        #expect(cache.invalidate(.pages(domain: 2, spaces: .only(6, includingGlobal: false), address: 0x10_0000, addressMask: 0)) == 1)
        #expect(cache.invalidate(.pages(domain: 2, address: 0x40_0000, addressMask: 9)) == 3)
        // A range across domains (domain nil) scans everything.
        fill()
        #expect(cache.invalidate(TranslationCacheInvalidation(range: IOVARange(start: 0x10_0000, last: 0x10_0FFF))) == 6)
        #expect(cache.invalidate(.all) == 6)
        #expect(cache.statistics.invalidated == 60 && cache.statistics.invalidations == 12)
        cache._checkInvariants()
    }

    @Test func globalEntriesMatchEverySpaceAndSurviveSpaceSelectiveInvalidation() throws {
        let cache = TranslationCache()
        cache.insert(page(0x7000, 0x8000, global: true), tag: TranslationTag(domain: 9, space: 5))
        let t = try #require(cache.lookup(TranslationTag(domain: 9, space: 77), address: 0x7010))
        #expect(t.global && t.outputBase == 0x8000)
        #expect(cache.lookup(TranslationTag(domain: 9), address: 0x7010) == nil)  // no space: no global match
        #expect(cache.lookup(TranslationTag(domain: 8, space: 77), address: 0x7010) == nil)
        #expect(cache.invalidate(.space(5, domain: 9)) == 0)
        #expect(cache.invalidate(TranslationCacheInvalidation(domain: 9, spaces: .none)) == 0)
        #expect(cache.invalidate(.pages(domain: 9, spaces: .only(77, includingGlobal: true), address: 0x7000, addressMask: 0)) == 1)
        #expect(cache.lookup(TranslationTag(domain: 9, space: 5), address: 0x7010) == nil)
    }

    @Test func leafOnlyAndStageSelectiveInvalidation() {
        let cache = TranslationCache()
        let leaf = TranslationTag(domain: 1, space: 3), table = TranslationTag(domain: 1, space: 3, table: true)
        cache.insert(page(0, 0x5000), tag: leaf, stages: .first)
        cache.insert(.nextTable(0x9000, inputBase: 0, pageShift: 21), tag: table, stages: .first)  // a PDE: the PT is at 0x9000
        #expect(cache.lookup(table, address: 0x1234)?.outputBase == 0x9000)
        #expect(cache.invalidate(.pages(domain: 1, address: 0, addressMask: 0, leafOnly: true)) == 1)
        #expect(cache.lookup(leaf, address: 0) == nil && cache.lookup(table, address: 0) != nil)
        #expect(cache.invalidate(.pages(domain: 1, address: 0, addressMask: 0)) == 1)

        let s2only = TranslationTag(domain: 4), nested = TranslationTag(domain: 4, space: 1)
        cache.insert(page(0x1000, 0x2000), tag: s2only, stages: .second)
        cache.insert(page(0x1000, 0x3000), tag: nested, stages: .all)
        cache.insert(page(0x5000, 0x4000), tag: nested, stages: .first)
        // SMMUv3 TLBI_NH_ALL: every stage-1 entry of the VMID (the nested one too), not the stage-2-only one.
        #expect(cache.invalidate(TranslationCacheInvalidation(domain: 4, stages: .first)) == 2)
        #expect(cache.lookup(s2only, address: 0x1000) != nil)
        #expect(cache.invalidate(TranslationCacheInvalidation(domain: 4, stages: .second)) == 1)
    }

    @Test func evictionIsRoundRobinWithinASet() {
        let cache = TranslationCache(.init(sizeClasses: [.init(pageShift: 12, sets: 1, ways: 2)]))
        let tag = TranslationTag()
        for i: UInt64 in 0..<3 { cache.insert(page(i * K4, i * K4), tag: tag) }
        #expect(cache.statistics.evictions == 1)
        #expect(cache.lookup(tag, address: 0) == nil)
        #expect(cache.lookup(tag, address: K4) != nil && cache.lookup(tag, address: 2 * K4) != nil)
        cache.insert(page(3 * K4, 0), tag: tag)
        #expect(cache.lookup(tag, address: K4) == nil)
        #expect(cache.capacity == 2)
    }

    @Test func aFillThatRacedWithAnInvalidationIsDropped() {
        let cache = TranslationCache()
        let tag = TranslationTag(domain: 1, space: 1)
        let ticket = cache.fillTicket()
        cache.invalidate(.space(1, domain: 1))  // the tables changed while we walked
        #expect(!cache.insert(page(0, 0x1000), tag: tag, ifUnchangedSince: ticket))
        #expect(cache.lookup(tag, address: 0) == nil)
        #expect(cache.insert(page(0, 0x1000), tag: tag, ifUnchangedSince: cache.fillTicket()))
        #expect(cache.lookup(tag, address: 0) != nil)
    }

    // MARK: Randomized against a reference

    /// The reference: what may be cached. The cache may have evicted any of it, but must never
    /// return (or hold) anything else.
    struct Reference {
        var live: [TranslationCache.Entry] = []

        static func normalize(_ tag: TranslationTag, _ t: Translation, _ stages: TranslationStages) -> TranslationCache.Entry {
            var tag = tag, t = t
            t.global = t.global && tag.space != nil
            if t.global { tag.space = nil }
            return TranslationCache.Entry(tag: tag, translation: t, stages: stages)
        }

        static func covers(_ inv: TranslationCacheInvalidation, _ e: TranslationCache.Entry) -> Bool {
            if let d = inv.domain, d != e.tag.domain { return false }
            switch inv.spaces {
            case .all: break
            case .none: if e.tag.space != nil || e.translation.global { return false }
            case .only(let s, let g): if e.translation.global ? !g : e.tag.space != s { return false }
            }
            if inv.leafOnly && e.tag.table { return false }
            if inv.stages.isDisjoint(with: e.stages) { return false }
            if let r = inv.range, !r.overlaps(e.translation.inputRange) { return false }
            return true
        }

        func matches(_ e: TranslationCache.Entry, _ tag: TranslationTag, _ address: UInt64) -> Bool {
            guard e.translation.contains(address), e.tag.domain == tag.domain, e.tag.privileged == tag.privileged,
                  e.tag.table == tag.table else { return false }
            return e.translation.global ? tag.space != nil : e.tag.space == tag.space
        }
    }

    @Test(arguments: [1, 2, 3, 42, 0xBEEF] as [UInt64])
    func randomOperationsNeverReturnAnInvalidatedEntry(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let cache = TranslationCache(.init(sizeClasses: [
            .init(pageShift: 12, sets: 8, ways: 2), .init(pageShift: 21, sets: 2, ways: 2), .init(pageShift: 30, sets: 1, ways: 2),
        ]))
        var ref = Reference()
        let shifts: [UInt8] = [12, 12, 12, 14, 16, 21, 21, 25, 30]
        func randomTag() -> TranslationTag {
            TranslationTag(domain: UInt16.random(in: 0..<3, using: &rng),
                           space: Int.random(in: 0..<4, using: &rng) == 0 ? nil : UInt32.random(in: 0..<3, using: &rng),
                           privileged: Int.random(in: 0..<8, using: &rng) == 0, table: Int.random(in: 0..<6, using: &rng) == 0)
        }
        func randomAddress() -> UInt64 { UInt64.random(in: 0..<(4 * G1), using: &rng) & ~0xFFF | UInt64.random(in: 0..<4096, using: &rng) }
        var hits = 0
        for step in 0..<4000 {
            let roll = Int.random(in: 0..<100, using: &rng)
            if roll < 40 {
                let tag = randomTag()
                let shift = shifts.randomElement(using: &rng)!
                let address = randomAddress() & (Int.random(in: 0..<3, using: &rng) == 0 ? ~(M2 - 1) : ~0)
                let permissions = AccessPermissions(rawValue: UInt8.random(in: 0..<8, using: &rng))
                let output = UInt64.random(in: 0..<(1 << 40), using: &rng) & ~0xFFF
                var t = tag.table ? .nextTable(output, inputBase: address, pageShift: shift, permissions: permissions)
                    : Translation(inputBase: address, outputBase: output, pageShift: shift, permissions: permissions)
                t.global = Int.random(in: 0..<5, using: &rng) == 0
                let stages = [TranslationStages.first, .second, .all].randomElement(using: &rng)!
                cache.insert(t, tag: tag, stages: stages, covering: address)
                let e = Reference.normalize(tag, t, stages)
                // Only the replaced entry (same tag and cached fragment) leaves; other fragments of the page stay.
                ref.live.append(e)
            } else if roll < 85 {
                var tag = randomTag()
                let address: UInt64
                if let e = ref.live.randomElement(using: &rng), Int.random(in: 0..<4, using: &rng) != 0 {
                    address = e.translation.inputBase + UInt64.random(in: 0..<e.translation.size, using: &rng)
                    if Bool.random(using: &rng) { tag = e.tag }
                    if e.translation.global { tag.space = UInt32.random(in: 0..<3, using: &rng) }
                } else {
                    address = randomAddress()
                }
                if let hit = cache.lookup(tag, address: address) {
                    hits += 1
                    #expect(ref.live.contains { $0.translation == hit && ref.matches($0, tag, address) },
                            "step \(step): lookup returned \(hit), which the reference does not hold")
                }
            } else {
                let domain: UInt16? = Int.random(in: 0..<4, using: &rng) == 0 ? nil : UInt16.random(in: 0..<3, using: &rng)
                let spaces: TranslationCacheInvalidation.Spaces = switch Int.random(in: 0..<4, using: &rng) {
                case 0: .all
                case 1: .none
                default: .only(UInt32.random(in: 0..<3, using: &rng), includingGlobal: Bool.random(using: &rng))
                }
                var range: IOVARange? = nil
                if Int.random(in: 0..<4, using: &rng) != 0 {
                    let am = [0, 0, 1, 4, 9, 18].randomElement(using: &rng)!
                    let size = UInt64(1) << UInt64(12 + am)
                    let start = randomAddress() & ~(size - 1)
                    range = IOVARange(start: start, last: start + size - 1)
                }
                let inv = TranslationCacheInvalidation(domain: domain, spaces: spaces, range: range,
                                                       leafOnly: Int.random(in: 0..<4, using: &rng) == 0,
                                                       stages: [TranslationStages.first, .second, .all].randomElement(using: &rng)!)
                cache.invalidate(inv)
                let covered = ref.live.filter { Reference.covers(inv, $0) }
                ref.live.removeAll { Reference.covers(inv, $0) }
                for e in covered {
                    let probe = e.translation.inputBase + UInt64.random(in: 0..<e.translation.size, using: &rng)
                    let tag = TranslationTag(domain: e.tag.domain, space: e.tag.space ?? (e.translation.global ? 1 : nil),
                                             privileged: e.tag.privileged, table: e.tag.table)
                    if let hit = cache.lookup(tag, address: probe) {
                        #expect(ref.live.contains { $0.translation == hit && ref.matches($0, tag, probe) },
                                "step \(step): \(hit) survived \(inv)")
                    }
                }
            }
            if step % 97 == 0 {
                cache._checkInvariants()
                // Everything cached is in the reference (entries() reports whole pages).
                for e in cache.entries() { #expect(ref.live.contains(e), "cached \(e) is not in the reference") }
            }
        }
        #expect(hits > 100)
    }

    // MARK: Concurrency

    /// Readers look up while a writer fills and invalidates, round after round. Round r fills
    /// domain 2 + r % 4, space r % 4, then invalidates round r - 2 (with a different granularity
    /// each time), so two rounds are live at any moment. Every output records the round that
    /// inserted it; once round r's invalidation has returned (a reader reads `done` before its
    /// lookup), no lookup may return an entry of round r or earlier. Every hit is checked for a
    /// torn entry (page and output must agree).
    @Test func lookupsRacingInvalidationsNeverSeeInvalidatedEntriesUnderStress() {
        let cache = TranslationCache(.init(sizeClasses: [.init(pageShift: 12, sets: 32, ways: 4), .init(pageShift: 21, sets: 4, ways: 2)]))
        let done = Atomic<UInt64>(0)  // rounds whose invalidation returned
        let stop = Atomic<Bool>(false)
        let violations = Atomic<Int>(0)
        let hits = Atomic<Int>(0)
        let rounds: UInt64 = 1500
        let pagesPerRound: UInt64 = 32
        @Sendable func tag(_ r: UInt64) -> TranslationTag { TranslationTag(domain: UInt16(2 + r % 4), space: UInt32(r % 4)) }
        @Sendable func input(_ p: UInt64) -> UInt64 { p % 16 == 15 ? p * M2 : p * K4 }
        onThreads(3) { worker in
            if worker == 0 {
                for r in 1...rounds {
                    for p in 0..<pagesPerRound {
                        cache.insert(Translation(inputBase: input(p), outputBase: r << 32 | input(p), pageShift: p % 16 == 15 ? 21 : 12,
                                                 permissions: .read), tag: tag(r))
                    }
                    guard r > 2 else { continue }
                    let old = r - 2, t = tag(old)
                    switch old % 4 {
                    case 0: cache.invalidate(.space(t.space!, domain: t.domain))
                    case 1: cache.invalidate(.domain(t.domain))
                    case 2:
                        cache.invalidate(TranslationCacheInvalidation(domain: t.domain, spaces: .only(t.space!, includingGlobal: false),
                                                                      range: IOVARange(start: 0, last: pagesPerRound * M2)))
                    default:
                        for p in 0..<pagesPerRound {
                            cache.invalidate(.pages(domain: t.domain, spaces: .only(t.space!, includingGlobal: false),
                                                    address: input(p) + (p % 16 == 15 ? K4 : 8) * (p % 3), addressMask: 0))
                        }
                    }
                    done.store(old, ordering: .releasing)
                }
                stop.store(true, ordering: .releasing)
            } else {
                var rng = SplitMix64(seed: UInt64(worker))
                var local = 0
                while !stop.load(ordering: .acquiring) {
                    let finished = done.load(ordering: .acquiring)
                    let p = UInt64.random(in: 0..<pagesPerRound, using: &rng)
                    let address = input(p) + UInt64.random(in: 0..<K4, using: &rng)
                    if let t = cache.lookup(tag(UInt64.random(in: 0..<4, using: &rng)), address: address) {
                        local += 1
                        let round = t.outputBase >> 32
                        if round <= finished || t.outputBase & 0xFFFF_FFFF != t.inputBase || !t.contains(address) {
                            violations.wrappingAdd(1, ordering: .relaxed)
                        }
                    }
                }
                hits.wrappingAdd(local, ordering: .relaxed)
            }
        }
        #expect(violations.load(ordering: .relaxed) == 0)
        #expect(hits.load(ordering: .relaxed) > 0)
        cache._checkInvariants()
    }
}
