// The translation cache: one tagged, set-associative cache of translations, used as the VT-d
// IOTLB, the SMMUv3 TLB, a nested (combined stage-1 + stage-2) TLB, a paging-structure cache,
// and a device's ATC.
//
// Tags. An entry is found by a `TranslationTag` and an input address:
//   - `domain`  the VT-d domain ID (DID) or the SMMUv3 VMID; 0 in an ATC.
//   - `space`   the PASID (VT-d, ATC) or ASID (SMMUv3); nil for none (a request without PASID
//               in an ATC, a stage-2-only SMMUv3 entry).
//   - `privileged` the privilege the translation was made for (permissions may differ).
//   - `table`   a non-leaf entry (paging-structure cache: output = the next table); leaf-only
//               invalidations keep them.
// Global entries (VT-d first-stage G, SMMUv3 nG = 0, ATS Global) match every space of their
// domain. Each entry records the stages it was made from (first, second, both when nested), so
// an invalidation of one stage can leave entries of the other alone.
//
// Geometry. One array of sets per *size class* (by default 4 KiB, 2 MiB and 1 GiB), as real
// TLBs keep one structure per page size. An entry goes to the class with the largest page size
// not above its own; a page larger than its class (a 64 KiB contiguous range in the 4 KiB class,
// say) is cached as the one class-sized fragment that was used ("splintered") but keeps its real
// size, so any invalidation overlapping the real page removes it. A set is chosen from the
// page number and the domain; lookups probe the classes from the smallest. Replacement is
// round-robin per set, preferring empty ways (hits never write, see below).
//
// Concurrency: a seqlock per set, and why. A lookup must allocate nothing and take about 10 ns,
// run on many threads at once, and be exact against invalidations. A mutex (even uncontended)
// costs two atomic read-modify-writes per lookup and makes every lookup write the lock's cache
// line, so threads translating for different devices would contend on it; the benchmark
// (section 6) measures a lookup wrapped in an uncontended pthread mutex for comparison. With a
// seqlock, readers write nothing: every word of a set (sequence number, keys, pages, outputs) is
// an atomic, writers (insert, invalidate) lock one set at a time by making its sequence number
// odd with a compare-exchange, and a reader that sees the sequence odd or changed across its
// probe simply reports a miss (always correct for a cache), so lookups never wait or retry.
// Exactness: an invalidation holds each set it scans locked while it clears entries, so a lookup
// that starts after `invalidate` returns cannot see a covered entry; a lookup that overlaps the
// call may still return one, as it is ordered before the invalidation. (An IOMMU model must still
// drain DMA in flight before it completes an invalidation-wait.) A walker's fill can race with an
// invalidation of the tables it read; `fillTicket()` / `insert(...ifUnchangedSince:)` drop
// such a fill: every invalidation first advances an epoch, and an insert checks the epoch while
// it holds its set locked.
//
// Statistics: hits and misses are counted in 16 per-thread stripes (chosen by the thread
// pointer), each increment a relaxed load and store: a hit costs no call, no atomic
// read-modify-write and no shared cache line. They are exact on one thread; two threads that share a stripe at the same moment
// may lose counts. Insertions, evictions and invalidated entries are exact.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CIOASIDSys
import IOASIDStructures
import Synchronization

/// The translation stages an entry was made from (both for a nested, combined entry).
public struct TranslationStages: OptionSet, Hashable, Sendable {
    /// The bits: 1 first stage, 2 second stage.
    public let rawValue: UInt8
    /// The stages with bits `rawValue`.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Made from a first-stage (stage-1) table.
    public static let first = TranslationStages(rawValue: 1)
    /// Made from a second-stage (stage-2) table.
    public static let second = TranslationStages(rawValue: 2)
    /// Both stages: a nested translation, or "any stage" in an invalidation.
    public static let all: TranslationStages = [.first, .second]
}

/// What a translation cache entry is looked up by, besides the address. See the comment at the
/// top of TranslationCache.swift for what each field means in each architecture.
public struct TranslationTag: Hashable, Sendable {
    /// The key word: bits 19:0 space, 20 has-space, 21 privileged, 22 table, 47:32 domain,
    /// 57:56 stages (ignored by lookups), 62 global, 63 valid. The tag is stored as its key so
    /// that a lookup compares it as it is.
    @usableFromInline var key: UInt64

    /// Creates a tag.
    @inlinable
    public init(domain: UInt16 = 0, space: UInt32? = nil, privileged: Bool = false, table: Bool = false) {
        key = UInt64(domain) << 32 | TranslationCache.Bits.valid
        self.space = space
        self.privileged = privileged
        self.table = table
    }

    /// A tag whose space is `pasid` (an ATC, or a VT-d IOTLB with domain ID `domain`).
    @inlinable
    public init(domain: UInt16 = 0, pasid: PASID?, privileged: Bool = false) {
        self.init(domain: domain, space: pasid?.rawValue, privileged: privileged)
    }

    /// VT-d domain ID or SMMUv3 VMID; 0 in an ATC.
    @inlinable
    public var domain: UInt16 {
        get { UInt16(truncatingIfNeeded: key >> 32) }
        set { key = key & ~(0xFFFF << 32) | UInt64(newValue) << 32 }
    }

    /// PASID or ASID (below 2^20), or nil for none.
    @inlinable
    public var space: UInt32? {
        get { key & TranslationCache.Bits.hasSpace != 0 ? UInt32(key & TranslationCache.Bits.spaceMask) : nil }
        set {
            precondition(newValue.map { $0 < 1 << 20 } ?? true, "a PASID or ASID has at most 20 bits")
            key &= ~(TranslationCache.Bits.spaceMask | TranslationCache.Bits.hasSpace)
            if let newValue { key |= UInt64(newValue) | TranslationCache.Bits.hasSpace }
        }
    }

    /// Whether the translation is for privileged (supervisor) requests.
    @inlinable
    public var privileged: Bool {
        get { key & TranslationCache.Bits.privileged != 0 }
        set { key = newValue ? key | TranslationCache.Bits.privileged : key & ~TranslationCache.Bits.privileged }
    }

    /// Whether the entry is a non-leaf (paging-structure) entry.
    @inlinable
    public var table: Bool {
        get { key & TranslationCache.Bits.table != 0 }
        set { key = newValue ? key | TranslationCache.Bits.table : key & ~TranslationCache.Bits.table }
    }
}

/// Which entries an invalidation removes: every condition must hold. Build with the static
/// helpers for the common VT-d and SMMUv3 granularities.
public struct TranslationCacheInvalidation: Hashable, Sendable {
    /// Which spaces (PASIDs / ASIDs) to match.
    public enum Spaces: Hashable, Sendable {
        /// Every entry, with or without a space, global or not.
        case all
        /// Entries without a space (and not global).
        case none
        /// Entries of this space, and global entries too if `includingGlobal`.
        case only(UInt32, includingGlobal: Bool)
    }

    /// Only this domain (DID / VMID); nil: every domain.
    public var domain: UInt16?
    /// Which spaces.
    public var spaces: Spaces
    /// Only entries whose page overlaps this range of input addresses; nil: every address.
    public var range: IOVARange?
    /// Keep non-leaf (paging-structure) entries: VT-d IH = 1, SMMUv3 Leaf = 1.
    public var leafOnly: Bool
    /// Only entries made from at least one of these stages.
    public var stages: TranslationStages

    /// Creates an invalidation; the defaults match everything.
    public init(domain: UInt16? = nil, spaces: Spaces = .all, range: IOVARange? = nil, leafOnly: Bool = false,
                stages: TranslationStages = .all) {
        self.domain = domain
        self.spaces = spaces
        self.range = range
        self.leafOnly = leafOnly
        self.stages = stages
    }

    /// Everything (VT-d global invalidation, SMMUv3 CMD_TLBI_NSNH_ALL, an ATC's "all").
    public static let all = TranslationCacheInvalidation()

    /// Every entry of `domain` (VT-d domain-selective, SMMUv3 CMD_TLBI_S12_VMALL).
    public static func domain(_ domain: UInt16) -> Self { Self(domain: domain) }

    /// The non-global entries of `space` in `domain` (VT-d PASID-selective, SMMUv3 CMD_TLBI_NH_ASID).
    public static func space(_ space: UInt32, domain: UInt16) -> Self {
        Self(domain: domain, spaces: .only(space, includingGlobal: false))
    }

    /// Page-selective, VT-d style: the `2^addressMask` 4 KiB pages at `address` (aligned down to
    /// that size) in `domain`. Global entries go too when `spaces` names one space.
    public static func pages(domain: UInt16, spaces: Spaces = .all, address: UInt64, addressMask: Int,
                             leafOnly: Bool = false, stages: TranslationStages = .all) -> Self {
        precondition(addressMask >= 0 && addressMask <= 52, "address mask is 0...52")
        let size = UInt64(1) << UInt64(12 + addressMask)
        let start = address & ~(size - 1)
        return Self(domain: domain, spaces: spaces, range: IOVARange(start: start, last: start + (size - 1)),
                    leafOnly: leafOnly, stages: stages)
    }
}

/// A tagged, set-associative cache of translations with exact invalidation; see the comment at
/// the top of this file for tags, geometry and the concurrency design (a per-set seqlock).
/// Thread-safe: lookups, inserts and invalidations may run on any threads at once.
public final class TranslationCache: @unchecked Sendable {
    /// One size class: entries of page size `2^pageShift` (and larger pages without a class of
    /// their own) in `sets` sets of `ways` entries.
    public struct SizeClass: Hashable, Sendable {
        /// log2 of the page size: 12, 21, 30, ... (at least 12).
        public var pageShift: Int
        /// The number of sets (a power of two).
        public var sets: Int
        /// Entries per set (1–32).
        public var ways: Int
        /// Creates a size class.
        public init(pageShift: Int, sets: Int, ways: Int) {
            self.pageShift = pageShift
            self.sets = sets
            self.ways = ways
        }
    }

    /// The geometry of a cache.
    public struct Configuration: Hashable, Sendable {
        /// Size classes by increasing page size.
        public var sizeClasses: [SizeClass]
        /// Creates a configuration; page shifts must increase.
        public init(sizeClasses: [SizeClass]) { self.sizeClasses = sizeClasses }

        /// An IOMMU's TLB: 2048 × 4 KiB (256 sets × 8 ways), 128 × 2 MiB, 16 × 1 GiB.
        public static let iotlb = Configuration(sizeClasses: [
            SizeClass(pageShift: 12, sets: 256, ways: 8),
            SizeClass(pageShift: 21, sets: 32, ways: 4),
            SizeClass(pageShift: 30, sets: 4, ways: 4),
        ])
        /// A device's ATC: 128 × 4 KiB (32 sets × 4 ways), 16 × 2 MiB, 4 × 1 GiB.
        public static let deviceTLB = Configuration(sizeClasses: [
            SizeClass(pageShift: 12, sets: 32, ways: 4),
            SizeClass(pageShift: 21, sets: 8, ways: 2),
            SizeClass(pageShift: 30, sets: 2, ways: 2),
        ])

        /// The total number of entries.
        public var capacity: Int { sizeClasses.reduce(0) { $0 + $1.sets * $1.ways } }
    }

    /// Counters since creation or ``resetStatistics()``.
    public struct Statistics: Hashable, Sendable {
        /// Lookups that found an entry.
        public var hits: UInt64 = 0
        /// Lookups that found none (including those that met a concurrent update).
        public var misses: UInt64 = 0
        /// Entries written by ``insert(_:tag:stages:covering:ifUnchangedSince:)`` (new or replacing
        /// an entry with the same tag and page).
        public var insertions: UInt64 = 0
        /// Valid entries replaced to make room.
        public var evictions: UInt64 = 0
        /// Entries removed by invalidations.
        public var invalidated: UInt64 = 0
        /// Invalidation calls.
        public var invalidations: UInt64 = 0
        /// hits / (hits + misses), or 0 before any lookup.
        public var hitRate: Double { hits + misses == 0 ? 0 : Double(hits) / Double(hits + misses) }
        /// All counters zero.
        public init() {}
    }

    /// A snapshot of the invalidation epoch, taken before a table walk (see ``fillTicket()``).
    public struct FillTicket: Hashable, Sendable {
        let epoch: UInt64
    }

    /// Key and output word layout (see ``TranslationTag``; output: bits 2:0 permissions,
    /// 8:3 page shift, the rest the output address of the cached fragment).
    @usableFromInline
    enum Bits {
        @inlinable static var spaceMask: UInt64 { 0xF_FFFF }
        @inlinable static var hasSpace: UInt64 { 1 << 20 }
        @inlinable static var privileged: UInt64 { 1 << 21 }
        @inlinable static var table: UInt64 { 1 << 22 }
        @inlinable static var stageShift: UInt64 { 56 }
        @inlinable static var stageMask: UInt64 { 3 << 56 }
        @inlinable static var global: UInt64 { 1 << 62 }
        @inlinable static var valid: UInt64 { 1 << 63 }
        /// Bits a lookup compares.
        @inlinable static var compare: UInt64 { ~stageMask }
        /// Bits of a lookup key kept when matching global entries.
        @inlinable static var globalMatch: UInt64 { ~(spaceMask | hasSpace) }
    }

    /// A size class as lookups use it. Set `i` of the class starts at word
    /// `firstWord + i * setStride` of `storage`: sequence, victim, then (key, page, output) for each
    /// way, so a hit in one of the first ways touches one or two cache lines.
    @usableFromInline
    struct Geometry {
        @usableFromInline var shift: UInt64
        @usableFromInline var setMask: UInt64
        @usableFromInline var ways: Int
        /// log2 of the words per set (a power of two, whole 64-byte lines).
        @usableFromInline var setShift: Int
        @usableFromInline var firstWord: Int
    }

    /// The configuration the cache was made with.
    public let configuration: Configuration
    @usableFromInline let geometry: UnsafeMutablePointer<Geometry>
    @usableFromInline let classCount: Int
    @usableFromInline let storage: UnsafeMutablePointer<Atomic<UInt64>>
    private let storageWords: Int
    /// Per class: the largest page shift ever inserted (0: never used).
    private let maxShifts: UnsafeMutablePointer<Atomic<UInt64>>
    /// 16 stripes of 16 words: word 0 hits, word 1 misses.
    @usableFromInline let counters: UnsafeMutablePointer<Atomic<UInt64>>
    private let epoch = Atomic<UInt64>(0)
    private let insertions = Atomic<UInt64>(0)
    private let evictions = Atomic<UInt64>(0)
    private let invalidated = Atomic<UInt64>(0)
    private let invalidations = Atomic<UInt64>(0)

    /// Creates an empty cache with the given geometry.
    public init(_ configuration: Configuration = .iotlb) {
        let classes = configuration.sizeClasses
        precondition(!classes.isEmpty, "a translation cache needs a size class")
        for (i, c) in classes.enumerated() {
            precondition(c.pageShift >= 12 && c.pageShift < 64, "page shifts are 12...63")
            precondition(i == 0 || c.pageShift > classes[i - 1].pageShift, "size classes must increase")
            precondition(c.sets > 0 && c.sets & (c.sets - 1) == 0, "sets must be a power of two")
            precondition(c.ways >= 1 && c.ways <= 32, "ways must be 1...32")
        }
        self.configuration = configuration
        classCount = classes.count
        geometry = .allocate(capacity: classes.count)
        var word = 0
        for (i, c) in classes.enumerated() {
            var setShift = 3  // at least one 64-byte line
            while 1 << setShift < 2 + 3 * c.ways { setShift += 1 }
            (geometry + i).initialize(to: Geometry(shift: UInt64(c.pageShift), setMask: UInt64(c.sets - 1),
                                                   ways: c.ways, setShift: setShift, firstWord: word))
            word += c.sets << setShift
        }
        storageWords = word
        storage = UnsafeMutableRawPointer.allocate(byteCount: word * 8, alignment: 64)
            .bindMemory(to: Atomic<UInt64>.self, capacity: word)
        for i in 0..<word { (storage + i).initialize(to: Atomic(0)) }
        maxShifts = .allocate(capacity: classes.count)
        for i in 0..<classes.count { (maxShifts + i).initialize(to: Atomic(0)) }
        counters = UnsafeMutableRawPointer.allocate(byteCount: 16 * 128, alignment: 128)
            .bindMemory(to: Atomic<UInt64>.self, capacity: 16 * 16)
        for i in 0..<(16 * 16) { (counters + i).initialize(to: Atomic(0)) }
    }

    deinit {
        geometry.deallocate()
        UnsafeMutableRawPointer(storage).deallocate()
        maxShifts.deallocate()
        UnsafeMutableRawPointer(counters).deallocate()
    }

    /// The total number of entries the cache can hold.
    public var capacity: Int { configuration.capacity }

    // MARK: Lookup (the hot path)

    /// Looks up the translation of `address` for `tag`: a cached leaf (or, with `tag.table`, non-leaf)
    /// entry whose page contains `address`, or nil. For a non-leaf entry, `outputBase` is the
    /// next table's address (see ``Translation/nextTable(_:inputBase:pageShift:permissions:)``);
    /// with several matching entries (a 4 KiB and a 2 MiB one), the smallest page wins. Allocates nothing, takes no lock, writes only
    /// this thread's statistics stripe.
    @inlinable @inline(__always)
    public func lookup(_ tag: TranslationTag, address: UInt64) -> Translation? {
        let want = tag.key
        // The key global entries have; all ones (matching nothing) when the tag has no space.
        let wantGlobal = (want & Bits.globalMatch) | Bits.global | (((want & Bits.hasSpace) &>> 20) &- 1)
        let mix = Self.mix(tag.domain)
        var c = 0
        while c < classCount {
            let g = geometry[c]
            let page = address &>> g.shift
            let set = storage + (g.firstWord &+ Int(truncatingIfNeeded: (page ^ mix) & g.setMask) &<< g.setShift)
            let s1 = set[0].load(ordering: .acquiring)
            var entry = set + 2
            let end = entry + 3 &* g.ways
            var hitKey: UInt64 = 0, hitOut: UInt64 = 0
            while entry < end {
                let k = entry[0].load(ordering: .relaxed) & Bits.compare
                if (k == want || k == wantGlobal) && entry[1].load(ordering: .relaxed) == page {
                    hitKey = k
                    hitOut = entry[2].load(ordering: .relaxed)
                    break
                }
                entry += 3
            }
            atomicMemoryFence(ordering: .acquiring)
            if s1 & 1 != 0 || set[0].load(ordering: .relaxed) != s1 { break }  // a writer was here: miss
            if hitKey != 0 {
                count(0)
                return Self.decode(key: hitKey, output: hitOut, page: page, classShift: g.shift)
            }
            c &+= 1
        }
        count(1)
        return nil
    }

    @inlinable @inline(__always)
    static func mix(_ domain: UInt16) -> UInt64 { (UInt64(domain) &* 0x9E37_79B9_7F4A_7C15) >> 40 }

    @inlinable @inline(__always)
    static func decode(key: UInt64, output: UInt64, page: UInt64, classShift: UInt64) -> Translation {
        let shift = (output &>> 3) & 63
        let mask = (UInt64(1) &<< shift) &- 1
        let fragment = page &<< classShift
        // A leaf's output is linear in the page; a table entry's is the next table's address.
        let outputBase = key & Bits.table != 0 ? output & ~0xFFF : (output & ~0xFFF) &- (fragment & mask)
        let t = Translation(uncheckedInputBase: fragment & ~mask, outputBase: outputBase,
                            pageShift: UInt8(truncatingIfNeeded: shift),
                            permissions: AccessPermissions(rawValue: UInt8(truncatingIfNeeded: output & 7)),
                            global: key & Bits.global != 0)
        return t
    }

    /// Adds one to counter `index` of this thread's stripe (a relaxed load and store).
    @inlinable @inline(__always)
    func count(_ index: Int) {
        let p = counters + (Self.stripe() &* 16 &+ index)
        p.pointee.store(p.pointee.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    /// This thread's statistics stripe, from its thread pointer (one instruction, no call).
    @inlinable @inline(__always)
    static func stripe() -> Int {
        let t = UInt64(UInt(ioasid_sys_thread_pointer()))
        return Int(truncatingIfNeeded: (t &* 0x9E37_79B9_7F4A_7C15) &>> 60)
    }

    // MARK: Insert

    /// The current invalidation epoch. Take it before walking the tables whose result you will
    /// insert, and pass it to ``insert(_:tag:stages:covering:ifUnchangedSince:)``: if any
    /// invalidation starts in between, the insert is dropped, so a walk that read tables an
    /// invalidation was about to cover never leaves a stale entry behind.
    public func fillTicket() -> FillTicket { FillTicket(epoch: epoch.load(ordering: .sequentiallyConsistent)) }

    /// Caches `translation` for `tag`. Returns false (and caches nothing) when `ticket` is given
    /// and an invalidation started since it was taken.
    ///
    /// An entry with the same tag and page is replaced; otherwise an empty way is used, or the
    /// set's round-robin victim is evicted.
    ///
    /// - Parameters:
    ///   - translation: the translation to cache.
    ///   - tag: the domain, PASID and privilege it was made for.
    ///   - stages: the stages the translation was made from (for stage-selective invalidation).
    ///   - address: for a page larger than its size class, the address whose fragment to cache
    ///     (default: the start of the page).
    ///   - ticket: from ``fillTicket()`` before the walk; the insert is dropped if an
    ///     invalidation started since.
    @discardableResult
    public func insert(_ translation: Translation, tag: TranslationTag, stages: TranslationStages = .first,
                       covering address: UInt64? = nil, ifUnchangedSince ticket: FillTicket? = nil) -> Bool {
        let shift = UInt64(translation.pageShift)
        var c = classCount - 1
        while c > 0 && geometry[c].shift > shift { c -= 1 }
        let g = geometry[c]
        precondition(g.shift <= shift, "page smaller than the smallest size class")
        let at = address ?? translation.inputBase
        precondition(translation.contains(at), "the covered address must be in the page")
        // Publish the page size before the entry (invalidations read it to size their scan).
        var seen = maxShifts[c].load(ordering: .sequentiallyConsistent)
        while seen < shift {
            let r = maxShifts[c].compareExchange(expected: seen, desired: shift, ordering: .sequentiallyConsistent)
            if r.exchanged { break }
            seen = r.original
        }
        var key = tag.key | UInt64(stages.rawValue & 3) << Bits.stageShift
        if translation.global && tag.space != nil { key = (key & Bits.globalMatch) | Bits.global }
        let page = at >> g.shift
        let fragmentOut = tag.table ? translation.outputBase : translation.output(for: page << g.shift)
        precondition(fragmentOut & 0xFFF == 0, "a table is 4 KiB aligned")
        let out = fragmentOut | shift << 3 | UInt64(translation.permissions.rawValue & 7)
        let set = storage + (g.firstWord + Int((page ^ Self.mix(tag.domain)) & g.setMask) << g.setShift)
        let s = lockSet(set)
        if let ticket, epoch.load(ordering: .sequentiallyConsistent) != ticket.epoch {
            unlockSet(set, s, changed: false)
            return false
        }
        @inline(__always) func word(_ w: Int, _ field: Int) -> UnsafeMutablePointer<Atomic<UInt64>> { set + (2 + 3 * w + field) }
        var target = -1
        for w in 0..<g.ways {
            let k = word(w, 0).pointee.load(ordering: .relaxed)
            if k & Bits.compare == key & Bits.compare && word(w, 1).pointee.load(ordering: .relaxed) == page { target = w; break }
            if target < 0 && k == 0 { target = w }
        }
        if target < 0 {
            let victim = set[1].load(ordering: .relaxed)
            target = Int(victim % UInt64(g.ways))
            set[1].store(victim &+ 1, ordering: .relaxed)
            evictions.wrappingAdd(1, ordering: .relaxed)
        }
        word(target, 0).pointee.store(key, ordering: .relaxed)
        word(target, 1).pointee.store(page, ordering: .relaxed)
        word(target, 2).pointee.store(out, ordering: .relaxed)
        unlockSet(set, s, changed: true)
        insertions.wrappingAdd(1, ordering: .relaxed)
        return true
    }

    /// Locks a set for writing: makes its sequence number odd. Returns the even value it had.
    private func lockSet(_ set: UnsafeMutablePointer<Atomic<UInt64>>) -> UInt64 {
        var s = set[0].load(ordering: .relaxed)
        var spins = 0
        while true {
            if s & 1 == 0 {
                let r = set[0].weakCompareExchange(expected: s, desired: s + 1, successOrdering: .sequentiallyConsistent,
                                                   failureOrdering: .relaxed)
                if r.exchanged { break }
                s = r.original
            } else {
                spins += 1
                if spins > 64 { sched_yield() }
                s = set[0].load(ordering: .relaxed)
            }
        }
        atomicMemoryFence(ordering: .releasing)
        return s
    }

    /// Unlocks a set: the next even sequence number if it changed, else the old one.
    private func unlockSet(_ set: UnsafeMutablePointer<Atomic<UInt64>>, _ s: UInt64, changed: Bool) {
        set[0].store(changed ? s + 2 : s, ordering: .releasing)
    }

    // MARK: Invalidate

    /// Removes every entry `invalidation` covers and returns how many it removed. Once it
    /// returns, no lookup that starts afterwards returns any of them.
    ///
    /// A page-selective invalidation within one domain scans only the sets the range maps to
    /// (widened to the largest page size cached in each class); others scan the whole cache.
    @discardableResult
    public func invalidate(_ invalidation: TranslationCacheInvalidation) -> Int {
        epoch.wrappingAdd(1, ordering: .sequentiallyConsistent)
        invalidations.wrappingAdd(1, ordering: .relaxed)
        var removed = 0
        for c in 0..<classCount {
            let g = geometry[c]
            let maxShift = maxShifts[c].load(ordering: .sequentiallyConsistent)
            if maxShift == 0 { continue }  // nothing was ever cached in this class
            let sets = Int(g.setMask) + 1
            if let range = invalidation.range, let domain = invalidation.domain {
                let align = (UInt64(1) << maxShift) - 1
                let first = (range.start & ~align) >> g.shift, last = (range.last | align) >> g.shift
                if last - first < UInt64(sets) {
                    let mix = Self.mix(domain)
                    for page in first...last {
                        removed += invalidateSet(c, Int((page ^ mix) & g.setMask), invalidation)
                    }
                    continue
                }
            }
            for i in 0..<sets { removed += invalidateSet(c, i, invalidation) }
        }
        invalidated.wrappingAdd(UInt64(removed), ordering: .relaxed)
        return removed
    }

    private func invalidateSet(_ c: Int, _ index: Int, _ inv: TranslationCacheInvalidation) -> Int {
        let g = geometry[c]
        let set = storage + (g.firstWord + index << g.setShift)
        let s = lockSet(set)
        var removed = 0
        for w in 0..<g.ways {
            let k = set[2 + 3 * w].load(ordering: .relaxed)
            guard k != 0 else { continue }
            let page = set[3 + 3 * w].load(ordering: .relaxed)
            let out = set[4 + 3 * w].load(ordering: .relaxed)
            if Self.covers(inv, key: k, page: page, output: out, classShift: g.shift) {
                set[2 + 3 * w].store(0, ordering: .relaxed)
                removed += 1
            }
        }
        unlockSet(set, s, changed: removed > 0)
        return removed
    }

    private static func covers(_ inv: TranslationCacheInvalidation, key k: UInt64, page: UInt64, output: UInt64,
                               classShift: UInt64) -> Bool {
        if let d = inv.domain, UInt16(truncatingIfNeeded: k >> 32) != d { return false }
        let global = k & Bits.global != 0, hasSpace = k & Bits.hasSpace != 0
        switch inv.spaces {
        case .all: break
        case .none: if hasSpace || global { return false }
        case .only(let space, let includingGlobal):
            if global { if !includingGlobal { return false } }
            else if !hasSpace || UInt32(k & Bits.spaceMask) != space { return false }
        }
        if inv.leafOnly && k & Bits.table != 0 { return false }
        if UInt8((k & Bits.stageMask) >> Bits.stageShift) & inv.stages.rawValue == 0 { return false }
        if let r = inv.range {
            let mask = (UInt64(1) << ((output >> 3) & 63)) - 1
            let start = (page << classShift) & ~mask
            if !r.overlaps(IOVARange(start: start, last: start | mask)) { return false }
        }
        return true
    }

    // MARK: Inspection

    /// The counters (see ``Statistics``).
    public var statistics: Statistics {
        var s = Statistics()
        for i in 0..<16 {
            s.hits += counters[i * 16].load(ordering: .relaxed)
            s.misses += counters[i * 16 + 1].load(ordering: .relaxed)
        }
        s.insertions = insertions.load(ordering: .relaxed)
        s.evictions = evictions.load(ordering: .relaxed)
        s.invalidated = invalidated.load(ordering: .relaxed)
        s.invalidations = invalidations.load(ordering: .relaxed)
        return s
    }

    /// Sets every counter to zero.
    public func resetStatistics() {
        for i in 0..<(16 * 16) { counters[i].store(0, ordering: .relaxed) }
        insertions.store(0, ordering: .relaxed)
        evictions.store(0, ordering: .relaxed)
        invalidated.store(0, ordering: .relaxed)
        invalidations.store(0, ordering: .relaxed)
    }

    /// One cached entry, as ``entries()`` lists it.
    public struct Entry: Hashable, Sendable {
        /// The tag (a global entry has no space).
        public var tag: TranslationTag
        /// The translation (for a splintered page: the whole page).
        public var translation: Translation
        /// The stages it was made from.
        public var stages: TranslationStages
    }

    /// Every valid entry (a snapshot; for tests and debugging, not for hot paths).
    public func entries() -> [Entry] {
        var result: [Entry] = []
        for c in 0..<classCount {
            let g = geometry[c]
            for i in 0...Int(g.setMask) {
                let set = storage + (g.firstWord + i << g.setShift)
                let s = lockSet(set)
                for w in 0..<g.ways {
                    let k = set[2 + 3 * w].load(ordering: .relaxed)
                    guard k != 0 else { continue }
                    let page = set[3 + 3 * w].load(ordering: .relaxed)
                    let out = set[4 + 3 * w].load(ordering: .relaxed)
                    let tag = TranslationTag(domain: UInt16(truncatingIfNeeded: k >> 32),
                                             space: k & Bits.hasSpace != 0 ? UInt32(k & Bits.spaceMask) : nil,
                                             privileged: k & Bits.privileged != 0, table: k & Bits.table != 0)
                    result.append(Entry(tag: tag, translation: Self.decode(key: k, output: out, page: page, classShift: g.shift),
                                        stages: TranslationStages(rawValue: UInt8((k & Bits.stageMask) >> Bits.stageShift))))
                }
                unlockSet(set, s, changed: false)
            }
        }
        return result
    }

    /// The number of valid entries.
    public var count: Int { entries().count }

    /// Checks the internal invariants (for tests; traps on a violation): every set unlocked,
    /// entries in the right class and set, no two entries with the same tag and page in a set.
    public func _checkInvariants() {
        for c in 0..<classCount {
            let g = geometry[c]
            let nextShift = c + 1 < classCount ? geometry[c + 1].shift : 64
            for i in 0...Int(g.setMask) {
                let set = storage + (g.firstWord + i << g.setShift)
                precondition(set[0].load(ordering: .relaxed) & 1 == 0, "set left locked")
                var seen: Set<[UInt64]> = []
                for w in 0..<g.ways {
                    let k = set[2 + 3 * w].load(ordering: .relaxed)
                    guard k != 0 else { continue }
                    precondition(k & Bits.valid != 0, "entry without valid bit")
                    let page = set[3 + 3 * w].load(ordering: .relaxed)
                    let out = set[4 + 3 * w].load(ordering: .relaxed)
                    let shift = (out >> 3) & 63
                    precondition(shift >= g.shift && (shift < nextShift || c == classCount - 1), "entry in the wrong size class")
                    precondition((page ^ Self.mix(UInt16(truncatingIfNeeded: k >> 32))) & g.setMask == UInt64(i), "entry in the wrong set")
                    precondition(k & Bits.table != 0 || (out & ~0xFFF) & ((UInt64(1) << g.shift) - 1) == 0,
                                 "fragment output not aligned")
                    precondition(seen.insert([k & Bits.compare, page]).inserted, "duplicate entry")
                }
            }
        }
    }
}
