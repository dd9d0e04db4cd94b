// Modelled physical memory: the memory that page tables live in and devices read and write.
//
// Three kinds of storage back an address; an access tries them in this order:
//
//  1. The allocator window `[allocatorBase, allocatorLimit)`: one anonymous private mapping
//     reserved with MAP_NORESERVE when the memory is created. The kernel gives it pages only
//     when they are first touched, so a 60 GiB window costs nothing until used, frames never
//     move, and an access is a bounds check and one load (no hashing). Page-table frames come
//     from here (`allocateFrame()` / `freeFrame(_:)`).
//  2. RAM regions attached at a physical base: anonymous or memfd-backed memory this object maps
//     and owns, or memory the caller owns and keeps valid until it detaches it (pinned process
//     pages used as host-physical memory). A small sorted table, found by binary search under a
//     read-mostly lock.
//  3. Loose frames: a 64-bit word written anywhere else gets a private zeroed 4 KiB frame (so page
//     tables can be placed at any address in tests). Word accesses only; the bulk byte accesses
//     that model DMA data fail with `PhysicalMemoryError.unbacked` outside the window and regions.
//
// Concurrency. Every access to modelled memory is an atomic operation on an aligned 64-bit word,
// whichever API makes it: single-word reads (acquire), writes (release), OR, AND and
// compare-exchange (acquire-release) as a page walker needs for accessed/dirty updates, and bulk
// copies done word by word (relaxed, with a release fence before a write and an acquire fence
// after a read; partial words at the ends are merged with compare-exchange). So DMA from many
// threads while page tables change is free of data races by construction, as each aligned
// 8-byte access of real memory is single-copy atomic, and ThreadSanitizer sees only atomics.
// Two exceptions, for speed, both DMA data (never page tables or queues the models read with
// atomics): ``copy(from:to:count:)`` (a DMA engine moving data from memory to memory), and
// bulk reads and writes of RAM regions (memory a program owns, such as its pinned pages), move
// their bytes with plain copies. A program that touches the same bytes while a device moves them
// races with it exactly as it would with a real DMA engine. Every such byte moves in one
// function, `moveDMAData(to:from:count:)`, the single place that touches memory a program may
// unmap behind the model's back: it copies with the fault-safe copy where a fault can be caught,
// and a fault there fails the access (`PhysicalMemoryError.unbacked`) instead of the program.
// The frame allocator is a pthread mutex around a free list; allocation state is an atomic
// bitmap so `isAllocated` takes no lock. The region table changes under the writer side of a
// `ReadMostlyLock`, which waits for every access in flight: once `detachRAM` returns, no access
// touches the region's memory any more, so its owner may free it.
//
// The host is little-endian: byte `i` of a word is bits `8i..<8i+8`.

#if canImport(Glibc)
import IOASIDStructures
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CIOASIDSys
import Synchronization

/// Errors of ``PhysicalMemory``'s region management and bulk accesses.
public enum PhysicalMemoryError: Error, Hashable, Sendable {
    /// A bulk access touched `address`, which no allocator window frame or RAM region backs.
    /// Nothing was read or written.
    case unbacked(address: UInt64)
    /// A region's base or length is not 4 KiB aligned, or caller memory is not 8-byte aligned.
    case misaligned
    /// A region's length is zero or it would extend past the end of the physical address space.
    case invalidLength
    /// A region would overlap the frame allocator's window.
    case overlapsAllocatorWindow
    /// A region would overlap an attached region.
    case overlapsRegion(RAMRegion)
    /// The region to detach is not attached.
    case noSuchRegion
    /// A system call (mmap, memfd_create) failed with this errno.
    case systemError(errno: Int32)
}

/// A span of RAM attached to a ``PhysicalMemory`` at a physical base.
public struct RAMRegion: Hashable, Sendable, CustomStringConvertible {
    /// What stores the region's bytes.
    public enum Backing: Hashable, Sendable {
        /// Anonymous private memory, mapped and owned by the ``PhysicalMemory``.
        case anonymous
        /// A memfd of the region's length, mapped shared and owned by the ``PhysicalMemory``.
        /// The descriptor stays open while the region is attached, so another mapping (another
        /// process, or this one) can see the same bytes; it is closed by ``PhysicalMemory/detachRAM(_:)``.
        case memfd(fileDescriptor: Int32)
        /// Memory the caller provided and keeps valid until the region is detached.
        case external
    }

    /// The first physical address of the region (4 KiB aligned).
    public let base: UInt64
    /// The size in bytes (a multiple of 4 KiB).
    public let length: UInt64
    /// What stores the bytes.
    public let backing: Backing

    /// The last physical address of the region (inclusive).
    public var last: UInt64 { base + (length - 1) }

    /// Whether `address` lies in the region.
    public func contains(_ address: UInt64) -> Bool { address >= base && address <= last }

    /// The region's span and backing, for diagnostics.
    public var description: String {
        "RAM [0x\(String(base, radix: 16)), 0x\(String(last, radix: 16))] \(backing)"
    }
}

/// Modelled physical memory (host-physical or guest-physical), shared by page tables, IOMMUs
/// and devices, and safe to use from any number of threads.
///
/// Frames that were never written read as zero. Page-table frames come from the built-in frame
/// allocator (``allocateFrame()`` / ``freeFrame(_:)``), which hands out zeroed frames from
/// `[allocatorBase, allocatorLimit)`. DMA data lives in the window or in RAM regions
/// (``attachRAM(at:length:backing:)``, ``attachRAM(at:external:)``) and moves with
/// `read(_:at:)` and `write(_:at:)`. See the comment at the top of this file for the storage
/// and the concurrency design.
///
/// This is a reference type: several page tables (and devices) share one memory.
public final class PhysicalMemory: @unchecked Sendable {
    /// The size of a frame, 4 KiB.
    public static let frameSize: UInt64 = 4096
    /// 64-bit words per frame.
    static let wordsPerFrame = 512

    /// The first physical address the frame allocator hands out.
    public let allocatorBase: UInt64
    /// One past the last physical address the frame allocator may hand out.
    public let allocatorLimit: UInt64

    /// The window's words; word `i` is physical address `allocatorBase + 8 * i`.
    @usableFromInline let windowWords: UnsafeMutablePointer<Atomic<UInt64>>
    /// `allocatorLimit - allocatorBase`.
    @usableFromInline let windowSize: UInt64
    private let windowFrames: Int
    /// One bit per window frame: handed out by the allocator.
    private let allocatedBits: UnsafeMutablePointer<Atomic<UInt64>>
    /// One bit per window frame: holds storage (allocated, or written while not allocated).
    private let touchedBits: UnsafeMutablePointer<Atomic<UInt64>>
    private let bitmapBytes: Int

    /// Protects `freeList` and `nextFrame`.
    private let allocatorLock = Lock()
    /// Freed window frame indices, reused first (LIFO).
    private var freeList: [Int] = []
    /// The next never-allocated window frame index.
    private var nextFrame = 0
    private let allocatedCount = Atomic<Int>(0)
    private let touchedCount = Atomic<Int>(0)

    /// One attached region as readers see it: plain values, no references (nothing to retain).
    struct RegionRecord {
        var base: UInt64
        var last: UInt64
        var pointer: UnsafeMutableRawPointer
    }
    /// What the writer side keeps about a region to release it.
    private struct RegionOwner {
        var region: RAMRegion
        var mapping: UnsafeMutableRawPointer?
        var mappingLength: Int
    }
    /// Readers take the read side around every use of `regions`; attach and detach the write side.
    let regionLock = ReadMostlyLock()
    /// The attached regions sorted by base (`regionCount` of them); replaced whole by writers.
    private var regions: UnsafeMutablePointer<RegionRecord>
    private var regionCount = 0
    /// Writer-side details by region base (guarded by the write side of `regionLock`).
    private var owners: [UInt64: RegionOwner] = [:]

    /// Protects `looseFrames`. The frames themselves are accessed with atomics outside it; they
    /// are never freed before the memory is.
    private let looseLock = Lock()
    private var looseFrames: [UInt64: UnsafeMutableRawPointer] = [:]

    /// Creates an empty memory whose frame allocator serves `[allocatorBase, allocatorLimit)`.
    ///
    /// Both bounds must be 4 KiB aligned. The window is reserved (not committed) at once, so it
    /// must fit in the process's address space. Addresses outside the window can still be read
    /// and written (RAM regions, or loose frames for single words); they are just never
    /// allocated as frames.
    public init(allocatorBase: UInt64 = 0x1_0000_0000, allocatorLimit: UInt64 = 0x10_0000_0000) {
        precondition(allocatorBase % Self.frameSize == 0 && allocatorLimit % Self.frameSize == 0)
        precondition(allocatorBase < allocatorLimit)
        self.allocatorBase = allocatorBase
        self.allocatorLimit = allocatorLimit
        windowSize = allocatorLimit - allocatorBase
        precondition(windowSize <= 1 << 46, "allocator window too large to reserve")
        windowFrames = Int(windowSize / Self.frameSize)
        windowWords = Self.reserve(Int(windowSize)).bindMemory(to: Atomic<UInt64>.self, capacity: Int(windowSize / 8))
        let words = (windowFrames + 63) / 64
        bitmapBytes = (words * 8 + 4095) & ~4095
        allocatedBits = Self.reserve(bitmapBytes).bindMemory(to: Atomic<UInt64>.self, capacity: words)
        touchedBits = Self.reserve(bitmapBytes).bindMemory(to: Atomic<UInt64>.self, capacity: words)
        regions = .allocate(capacity: 1)
    }

    deinit {
        munmap(UnsafeMutableRawPointer(windowWords), Int(windowSize))
        munmap(UnsafeMutableRawPointer(allocatedBits), bitmapBytes)
        munmap(UnsafeMutableRawPointer(touchedBits), bitmapBytes)
        for owner in owners.values { Self.release(owner) }
        regions.deallocate()
        for frame in looseFrames.values { frame.deallocate() }
    }

    /// Zeroed, lazily committed anonymous memory (never returns on failure: the window is a
    /// precondition of the whole model).
    private static func reserve(_ bytes: Int) -> UnsafeMutableRawPointer {
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              p != MAP_FAILED else {
            fatalError("PhysicalMemory: cannot reserve \(bytes) bytes (errno \(errno))")
        }
        return p
    }

    // MARK: Counters

    /// The number of frames currently allocated by the frame allocator.
    public var allocatedFrameCount: Int { allocatedCount.load(ordering: .relaxed) }

    /// The number of frames that hold storage: window frames that are allocated or were written
    /// while not allocated, and loose frames. RAM regions are not counted.
    public var residentFrameCount: Int {
        touchedCount.load(ordering: .relaxed) + looseLock.withLock { looseFrames.count }
    }

    // MARK: Frame allocator

    /// Allocates a zeroed 4 KiB frame and returns its physical address, or `nil` when the
    /// allocator's window is exhausted. Thread-safe.
    public func allocateFrame() -> UInt64? {
        let next: Int? = allocatorLock.withLock {
            if let reused = freeList.popLast() { return reused }
            guard nextFrame < windowFrames else { return nil }
            defer { nextFrame += 1 }
            return nextFrame
        }
        guard let frame = next else { return nil }
        // Freed frames were zeroed and untouched; a touched one was written while free.
        if !markTouched(frame) { zeroFrame(frame) }
        let (word, mask) = Self.bit(frame)
        allocatedBits[word].bitwiseOr(mask, ordering: .relaxed)
        allocatedCount.wrappingAdd(1, ordering: .relaxed)
        return allocatorBase + UInt64(frame) * Self.frameSize
    }

    /// Returns a frame obtained from ``allocateFrame()`` to the allocator. Its contents are
    /// discarded (it reads as zero afterwards). Thread-safe.
    public func freeFrame(_ address: UInt64) {
        precondition(address % Self.frameSize == 0, "frame address must be 4 KiB aligned")
        let offset = address &- allocatorBase
        precondition(offset < windowSize, "freeing a frame that is not allocated")
        let frame = Int(offset / Self.frameSize)
        let (word, mask) = Self.bit(frame)
        let old = allocatedBits[word].bitwiseAnd(~mask, ordering: .relaxed).oldValue
        precondition(old & mask != 0, "freeing a frame that is not allocated")
        allocatedCount.wrappingSubtract(1, ordering: .relaxed)
        zeroFrame(frame)
        if touchedBits[word].bitwiseAnd(~mask, ordering: .relaxed).oldValue & mask != 0 {
            touchedCount.wrappingSubtract(1, ordering: .relaxed)
        }
        allocatorLock.withLock { freeList.append(frame) }
    }

    /// Whether the frame containing `address` is currently allocated by the frame allocator.
    public func isAllocated(_ address: UInt64) -> Bool {
        let offset = address &- allocatorBase
        guard offset < windowSize else { return false }
        let (word, mask) = Self.bit(Int(offset / Self.frameSize))
        return allocatedBits[word].load(ordering: .relaxed) & mask != 0
    }

    @inline(__always)
    private static func bit(_ frame: Int) -> (word: Int, mask: UInt64) { (frame >> 6, 1 << UInt64(frame & 63)) }

    /// Marks window frame `frame` as holding storage; false if it already was.
    @inline(__always)
    @discardableResult
    private func markTouched(_ frame: Int) -> Bool {
        let (word, mask) = Self.bit(frame)
        if touchedBits[word].load(ordering: .relaxed) & mask != 0 { return false }
        if touchedBits[word].bitwiseOr(mask, ordering: .relaxed).oldValue & mask != 0 { return false }
        touchedCount.wrappingAdd(1, ordering: .relaxed)
        return true
    }

    private func zeroFrame(_ frame: Int) {
        let first = windowWords + frame * Self.wordsPerFrame
        for i in 0..<Self.wordsPerFrame { first[i].store(0, ordering: .relaxed) }
    }

    // MARK: 64-bit words (page-table entries)

    /// Reads the 64-bit little-endian word at `address` (8-byte aligned), with acquire ordering.
    /// Unwritten memory is zero. In the allocator window this is a bounds check and a load.
    @inlinable
    public func read64(_ address: UInt64) -> UInt64 {
        precondition(address & 7 == 0, "unaligned 64-bit read")
        let offset = address &- allocatorBase
        if offset < windowSize { return windowWords[Int(offset >> 3)].load(ordering: .acquiring) }
        return slowRead64(address)
    }

    @usableFromInline
    func slowRead64(_ address: UInt64) -> UInt64 {
        withWord(address, materialize: false) { $0?.pointee.load(ordering: .acquiring) ?? 0 }
    }

    /// Writes the 64-bit word at `address` (8-byte aligned), with release ordering.
    public func write64(_ address: UInt64, _ value: UInt64) {
        precondition(address & 7 == 0, "unaligned 64-bit write")
        let offset = address &- allocatorBase
        if offset < windowSize {
            markTouched(Int(offset / Self.frameSize))
            windowWords[Int(offset >> 3)].store(value, ordering: .releasing)
            return
        }
        withWord(address, materialize: true) { $0!.pointee.store(value, ordering: .releasing) }
    }

    /// Atomically ORs `bits` into the word at `address` and returns the previous value, as a
    /// hardware walker does when it sets accessed/dirty flags.
    @discardableResult
    public func or64(_ address: UInt64, _ bits: UInt64) -> UInt64 {
        precondition(address & 7 == 0, "unaligned 64-bit access")
        return withMutableWord(address) { $0.pointee.bitwiseOr(bits, ordering: .acquiringAndReleasing).oldValue }
    }

    /// Atomically ANDs `mask` into the word at `address` and returns the previous value (clears
    /// dirty flags without losing a concurrent walker's update).
    @discardableResult
    public func and64(_ address: UInt64, _ mask: UInt64) -> UInt64 {
        precondition(address & 7 == 0, "unaligned 64-bit access")
        return withMutableWord(address) { $0.pointee.bitwiseAnd(mask, ordering: .acquiringAndReleasing).oldValue }
    }

    /// Atomically replaces the word at `address` with `desired` if it equals `expected`.
    /// Returns whether it did and the value found.
    @discardableResult
    public func compareExchange64(_ address: UInt64, expected: UInt64, desired: UInt64) -> (exchanged: Bool, original: UInt64) {
        precondition(address & 7 == 0, "unaligned 64-bit access")
        return withMutableWord(address) {
            $0.pointee.compareExchange(expected: expected, desired: desired, ordering: .acquiringAndReleasing)
        }
    }

    /// Reads one byte at `address`.
    public func read8(_ address: UInt64) -> UInt8 {
        UInt8(truncatingIfNeeded: read64(address & ~7) >> ((address & 7) * 8))
    }

    /// Writes one byte at `address` (atomically merged into its word).
    public func write8(_ address: UInt64, _ value: UInt8) {
        let shift = (address & 7) * 8
        withMutableWord(address & ~7) { Self.merge($0, mask: 0xFF << shift, bits: UInt64(value) << shift) }
    }

    /// Runs `body` on the word at `address` (allocated as a loose frame if nothing backs it).
    private func withMutableWord<R>(_ address: UInt64, _ body: (UnsafeMutablePointer<Atomic<UInt64>>) -> R) -> R {
        let offset = address &- allocatorBase
        if offset < windowSize {
            markTouched(Int(offset / Self.frameSize))
            return body(windowWords + Int(offset >> 3))
        }
        return withWord(address, materialize: true) { body($0!) }
    }

    /// Runs `body` on the word at `address` outside the window: in a region (under the region
    /// lock), else in a loose frame (`nil` if there is none and `materialize` is false).
    private func withWord<R>(_ address: UInt64, materialize: Bool,
                             _ body: (UnsafeMutablePointer<Atomic<UInt64>>?) -> R) -> R {
        let inRegion: R? = regionLock.withReadLock {
            guard let p = regionPointer(address) else { return nil }
            return body(p.assumingMemoryBound(to: Atomic<UInt64>.self))
        }
        if let inRegion { return inRegion }
        let frameNumber = address / Self.frameSize
        let frame: UnsafeMutableRawPointer? = looseLock.withLock {
            if let f = looseFrames[frameNumber] { return f }
            guard materialize else { return nil }
            let f = UnsafeMutableRawPointer.allocate(byteCount: Int(Self.frameSize), alignment: Int(Self.frameSize))
            f.initializeMemory(as: UInt64.self, repeating: 0, count: Self.wordsPerFrame)
            looseFrames[frameNumber] = f
            return f
        }
        return body(frame.map { ($0 + Int(address % Self.frameSize)).assumingMemoryBound(to: Atomic<UInt64>.self) })
    }

    /// Sets the bytes of `mask` in `word` to those of `bits`, atomically.
    @inline(__always)
    private static func merge(_ word: UnsafeMutablePointer<Atomic<UInt64>>, mask: UInt64, bits: UInt64) {
        var old = word.pointee.load(ordering: .relaxed)
        while true {
            let (done, seen) = word.pointee.weakCompareExchange(expected: old, desired: (old & ~mask) | bits,
                                                                ordering: .relaxed)
            if done { return }
            old = seen
        }
    }

    // MARK: RAM regions

    /// How memory that ``PhysicalMemory`` maps for a region is obtained.
    public enum RAMBacking: Sendable {
        /// Anonymous private memory (MAP_NORESERVE: committed as it is touched).
        case anonymous
        /// A memfd, mapped shared; see ``RAMRegion/Backing/memfd(fileDescriptor:)``.
        case memfd
    }

    /// Attaches `length` bytes of new zeroed RAM at physical address `base`, mapped and owned by
    /// this memory until ``detachRAM(_:)``.
    ///
    /// `base` and `length` must be 4 KiB aligned; the region may overlap neither the allocator
    /// window nor another region.
    public func attachRAM(at base: UInt64, length: UInt64, backing: RAMBacking = .anonymous) throws(PhysicalMemoryError) -> RAMRegion {
        try checkPlacement(base: base, length: length)
        guard length <= UInt64(Int.max) else { throw .invalidLength }
        var fd: Int32 = -1
        if case .memfd = backing {
            let r = ioasid_sys_memfd(length, 1)
            guard r >= 0 else { throw .systemError(errno: Int32(-r)) }
            fd = Int32(r)
        }
        let flags = fd >= 0 ? MAP_SHARED : (MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
        guard let p = mmap(nil, Int(length), PROT_READ | PROT_WRITE, flags, fd, 0), p != MAP_FAILED else {
            let e = errno
            if fd >= 0 { close(fd) }
            throw .systemError(errno: e)
        }
        let region = RAMRegion(base: base, length: length, backing: fd >= 0 ? .memfd(fileDescriptor: fd) : .anonymous)
        do {
            try insert(RegionOwner(region: region, mapping: p, mappingLength: Int(length)), pointer: p)
        } catch {
            Self.release(RegionOwner(region: region, mapping: p, mappingLength: Int(length)))
            throw error
        }
        return region
    }

    /// Attaches caller-provided memory as RAM at physical address `base`: accesses to
    /// `[base, base + memory.count)` read and write `memory` directly.
    ///
    /// The caller keeps `memory` valid (mapped, readable and writable) until ``detachRAM(_:)``
    /// returns; it may free it afterwards. `base` and `memory.count` must be 4 KiB aligned and
    /// `memory.baseAddress` 8-byte aligned. The caller's own accesses to the memory are not
    /// synchronized with DMA; that is the caller's business, as with real DMA.
    public func attachRAM(at base: UInt64, external memory: UnsafeMutableRawBufferPointer) throws(PhysicalMemoryError) -> RAMRegion {
        guard let p = memory.baseAddress, !memory.isEmpty else { throw .invalidLength }
        guard UInt(bitPattern: p) & 7 == 0 else { throw .misaligned }
        let length = UInt64(memory.count)
        try checkPlacement(base: base, length: length)
        let region = RAMRegion(base: base, length: length, backing: .external)
        try insert(RegionOwner(region: region, mapping: nil, mappingLength: 0), pointer: p)
        return region
    }

    /// Detaches `region`. Returns after every access in flight to it has finished; later
    /// accesses to its addresses find no RAM there. Owned memory is unmapped (and a memfd closed).
    public func detachRAM(_ region: RAMRegion) throws(PhysicalMemoryError) {
        let owner: RegionOwner = try regionLock.withWriteLock { () throws(PhysicalMemoryError) -> RegionOwner in
            guard let owner = owners[region.base], owner.region == region else { throw .noSuchRegion }
            owners[region.base] = nil
            let old = regions
            let index = (0..<regionCount).first { old[$0].base == region.base }!
            let new = UnsafeMutablePointer<RegionRecord>.allocate(capacity: max(1, regionCount - 1))
            new.initialize(from: old, count: index)
            (new + index).initialize(from: old + index + 1, count: regionCount - index - 1)
            regions = new
            regionCount -= 1
            old.deallocate()
            return owner
        }
        Self.release(owner)
    }

    /// The attached RAM regions, sorted by base.
    public var ramRegions: [RAMRegion] {
        regionLock.withReadLock { (0..<regionCount).map { owners[regions[$0].base]!.region } }
    }

    /// Whether every byte of `[address, address + count)` is RAM (window or region), i.e. whether
    /// a bulk access there would succeed now.
    public func isBacked(_ address: UInt64, count: Int) -> Bool {
        guard count > 0 else { return true }
        return regionLock.withReadLock { firstUnbacked(address, UInt64(count)) == nil }
    }

    private func checkPlacement(base: UInt64, length: UInt64) throws(PhysicalMemoryError) {
        guard length > 0, base <= UInt64.max - (length - 1) else { throw .invalidLength }
        guard base % Self.frameSize == 0, length % Self.frameSize == 0 else { throw .misaligned }
        if base < allocatorLimit && base + (length - 1) >= allocatorBase { throw .overlapsAllocatorWindow }
    }

    private func insert(_ owner: RegionOwner, pointer: UnsafeMutableRawPointer) throws(PhysicalMemoryError) {
        let r = owner.region
        try regionLock.withWriteLock { () throws(PhysicalMemoryError) in
            for o in owners.values where o.region.base <= r.last && r.base <= o.region.last {
                throw .overlapsRegion(o.region)
            }
            let old = regions
            let index = (0..<regionCount).first { old[$0].base > r.base } ?? regionCount
            let new = UnsafeMutablePointer<RegionRecord>.allocate(capacity: regionCount + 1)
            new.initialize(from: old, count: index)
            (new + index).initialize(to: RegionRecord(base: r.base, last: r.last, pointer: pointer))
            (new + index + 1).initialize(from: old + index, count: regionCount - index)
            regions = new
            regionCount += 1
            old.deallocate()
            owners[r.base] = owner
        }
    }

    private static func release(_ owner: RegionOwner) {
        if let m = owner.mapping { munmap(m, owner.mappingLength) }
        if case .memfd(let fd) = owner.region.backing { close(fd) }
    }

    /// The host address of physical `address` in a region. Call with the region lock held.
    @inline(__always)
    private func regionPointer(_ address: UInt64) -> UnsafeMutableRawPointer? {
        regionSegment(address).map { $0.pointer }
    }

    /// The region containing `address`: host pointer and bytes left in the region from there.
    /// Call with the region lock held.
    private func regionSegment(_ address: UInt64) -> (pointer: UnsafeMutableRawPointer, available: UInt64)? {
        var lo = 0, hi = regionCount  // first record with base > address
        while lo < hi {
            let mid = (lo + hi) / 2
            if regions[mid].base <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return nil }
        let r = regions[lo - 1]
        guard address <= r.last else { return nil }
        return (r.pointer + Int(address - r.base), r.last - address + 1)
    }

    /// RAM at `address`: host pointer, bytes available contiguously, and whether it is the window.
    /// Call with the region lock held.
    private func segment(_ address: UInt64) -> (pointer: UnsafeMutableRawPointer, available: UInt64, window: Bool)? {
        let offset = address &- allocatorBase
        if offset < windowSize {
            return (UnsafeMutableRawPointer(windowWords) + Int(offset), windowSize - offset, true)
        }
        return regionSegment(address).map { ($0.pointer, $0.available, false) }
    }

    /// The first address of `[address, address + count)` no RAM backs, if any (lock held).
    private func firstUnbacked(_ address: UInt64, _ count: UInt64) -> UInt64? {
        guard address <= UInt64.max - (count - 1) else { return UInt64.max }
        var a = address, left = count
        while left > 0 {
            guard let s = segment(a) else { return a }
            let step = min(s.available, left)
            left -= step
            a &+= step
        }
        return nil
    }

    // MARK: Bulk bytes (DMA data)

    /// Copies `buffer.count` bytes of memory at `address` into `buffer`.
    ///
    /// Throws ``PhysicalMemoryError/unbacked(address:)`` (and copies nothing) if any byte is
    /// outside the allocator window and every RAM region. Unwritten RAM reads as zero.
    public func read(_ buffer: UnsafeMutableRawBufferPointer, at address: UInt64) throws(PhysicalMemoryError) {
        guard let dst = buffer.baseAddress, buffer.count > 0 else { return }
        let count = UInt64(buffer.count)
        let offset = address &- allocatorBase
        if offset < windowSize && windowSize - offset >= count {
            Self.copyOut(UnsafeMutableRawPointer(windowWords) + Int(offset), dst, buffer.count)
            return
        }
        try regionLock.withReadLock { () throws(PhysicalMemoryError) in
            // The usual case: one region holds it all (one search).
            if let r = regionSegment(address), r.available >= count {
                guard Self.moveDMAData(to: dst, from: r.pointer, count: buffer.count) else { throw .unbacked(address: address) }
                return
            }
            if let bad = firstUnbacked(address, count) { throw .unbacked(address: bad) }
            var a = address, done = 0
            while done < buffer.count {
                let s = segment(a)!
                let step = Int(min(s.available, UInt64(buffer.count - done)))
                if s.window {
                    Self.copyOut(s.pointer, dst + done, step)
                } else if !Self.moveDMAData(to: dst + done, from: s.pointer, count: step) {
                    throw .unbacked(address: a)
                }
                done += step
                a &+= UInt64(step)
            }
        }
    }

    /// Copies `bytes` into memory at `address`.
    ///
    /// Throws ``PhysicalMemoryError/unbacked(address:)`` (and writes nothing) if any byte is
    /// outside the allocator window and every RAM region.
    public func write(_ bytes: UnsafeRawBufferPointer, at address: UInt64) throws(PhysicalMemoryError) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        let count = UInt64(bytes.count)
        let offset = address &- allocatorBase
        if offset < windowSize && windowSize - offset >= count {
            touchWindow(offset, count)
            Self.copyIn(src, UnsafeMutableRawPointer(windowWords) + Int(offset), bytes.count)
            return
        }
        try regionLock.withReadLock { () throws(PhysicalMemoryError) in
            // The usual case: one region holds it all (one search).
            if let r = regionSegment(address), r.available >= count {
                guard Self.moveDMAData(to: r.pointer, from: src, count: bytes.count) else { throw .unbacked(address: address) }
                return
            }
            if let bad = firstUnbacked(address, count) { throw .unbacked(address: bad) }
            var a = address, done = 0
            while done < bytes.count {
                let s = segment(a)!
                let step = Int(min(s.available, UInt64(bytes.count - done)))
                if s.window {
                    touchWindow(a - allocatorBase, UInt64(step))
                    Self.copyIn(src + done, s.pointer, step)
                } else if !Self.moveDMAData(to: s.pointer, from: src + done, count: step) {
                    throw .unbacked(address: a)
                }
                done += step
                a &+= UInt64(step)
            }
        }
    }

    /// Copies `count` bytes of memory at physical `source` to physical `destination` (as a DMA
    /// engine's memory-to-memory move does), with `memmove` between the host addresses: no
    /// intermediate buffer, no allocation. Overlapping spans copy as `memmove` does.
    ///
    /// Throws ``PhysicalMemoryError/unbacked(address:)`` (and copies nothing) if any byte of
    /// either span is outside the allocator window and every RAM region; the address tells which
    /// span it is in (the source is checked first).
    public func copy(from source: UInt64, to destination: UInt64, count: Int) throws(PhysicalMemoryError) {
        guard count > 0 else { return }
        let n = UInt64(count)
        let s = source &- allocatorBase, d = destination &- allocatorBase
        if s < windowSize && windowSize - s >= n && d < windowSize && windowSize - d >= n {
            touchWindow(d, n)
            _ = Self.moveDMAData(to: UnsafeMutableRawPointer(windowWords) + Int(d), from: UnsafeMutableRawPointer(windowWords) + Int(s),
                                 count: count)
            return
        }
        try regionLock.withReadLock { () throws(PhysicalMemoryError) in
            // The usual case: a region holds each span (two searches).
            if let a = regionSegment(source), a.available >= n, let b = regionSegment(destination), b.available >= n {
                guard Self.moveDMAData(to: b.pointer, from: a.pointer, count: count) else { throw .unbacked(address: source) }
                return
            }
            if let bad = firstUnbacked(source, n) { throw .unbacked(address: bad) }
            if let bad = firstUnbacked(destination, n) { throw .unbacked(address: bad) }
            var from = source, to = destination, left = count
            while left > 0 {
                let a = segment(from)!, b = segment(to)!
                let step = Int(min(a.available, b.available, UInt64(left)))
                if b.window { touchWindow(to - allocatorBase, UInt64(step)) }
                guard Self.moveDMAData(to: b.pointer, from: a.pointer, count: step) else { throw .unbacked(address: from) }
                left -= step
                from &+= UInt64(step)
                to &+= UInt64(step)
            }
        }
    }

    /// Reads `count` bytes at `address` into a new array (see ``read(_:at:)``).
    public func read(count: Int, at address: UInt64) throws(PhysicalMemoryError) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        try result.withUnsafeMutableBytes { b in
            Result { () throws(PhysicalMemoryError) in try read(b, at: address) }
        }.get()
        return result
    }

    /// Writes `bytes` at `address` (see ``write(_:at:)``).
    public func write(_ bytes: [UInt8], at address: UInt64) throws(PhysicalMemoryError) {
        try bytes.withUnsafeBytes { b in
            Result { () throws(PhysicalMemoryError) in try write(b, at: address) }
        }.get()
    }

    /// Moves `count` bytes of DMA data from host address `source` to host address
    /// `destination` (the spans may overlap): the one place where a device's data bytes touch
    /// memory a program owns. Returns false when the memory faulted (the program unmapped it,
    /// or truncated the file behind it): some bytes may have moved. It uses the fault-safe copy
    /// (`ioasid_sys_safe_copy`) where faults can be caught (the preload's handler, or
    /// `ioasid_sys_uaccess_install`), else — and for overlapping spans, which that forward copy
    /// does not handle — a plain `memmove`.
    @inline(__always)
    static func moveDMAData(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, count: Int) -> Bool {
        let distance = UInt(bitPattern: destination) &- UInt(bitPattern: source)
        if distance >= UInt(count) && (0 &- distance) >= UInt(count) {
            switch ioasid_sys_safe_copy(destination, source, count) {
            case 0: return true
            case -Int(EAGAIN): break  // no fault can be caught on this thread now
            default: return false     // -EFAULT
            }
        }
        memmove(destination, source, count)
        return true
    }

    private func touchWindow(_ offset: UInt64, _ count: UInt64) {
        for frame in (offset / Self.frameSize)...((offset + count - 1) / Self.frameSize) { markTouched(Int(frame)) }
    }

    /// Copies `count` bytes from modelled memory at `from` to plain memory at `to`, loading whole
    /// aligned words atomically (`from` has the alignment of its physical address).
    private static func copyOut(_ from: UnsafeMutableRawPointer, _ to: UnsafeMutableRawPointer, _ count: Int) {
        var s = UInt(bitPattern: from), d = to, n = count
        @inline(__always) func word(_ a: UInt) -> UInt64 {
            UnsafeMutablePointer<Atomic<UInt64>>(bitPattern: a)!.pointee.load(ordering: .relaxed)
        }
        let head = Int(s & 7)
        if head != 0 {
            let take = min(8 - head, n)
            var w = word(s & ~7) >> UInt64(head * 8)
            for i in 0..<take { d.storeBytes(of: UInt8(truncatingIfNeeded: w), toByteOffset: i, as: UInt8.self); w >>= 8 }
            s += UInt(take); d += take; n -= take
        }
        while n >= 8 {
            d.storeBytes(of: word(s), as: UInt64.self)
            s += 8; d += 8; n -= 8
        }
        if n > 0 {
            var w = word(s)
            for i in 0..<n { d.storeBytes(of: UInt8(truncatingIfNeeded: w), toByteOffset: i, as: UInt8.self); w >>= 8 }
        }
        atomicMemoryFence(ordering: .acquiring)
    }

    /// Copies `count` bytes from plain memory at `from` into modelled memory at `to`, storing
    /// whole aligned words atomically and merging partial words with compare-exchange.
    private static func copyIn(_ from: UnsafeRawPointer, _ to: UnsafeMutableRawPointer, _ count: Int) {
        atomicMemoryFence(ordering: .releasing)
        var s = from, d = UInt(bitPattern: to), n = count
        @inline(__always) func word(_ a: UInt) -> UnsafeMutablePointer<Atomic<UInt64>> { .init(bitPattern: a)! }
        @inline(__always) func partial(_ a: UInt, _ first: Int, _ bytes: Int, _ src: UnsafeRawPointer) {
            var mask: UInt64 = 0, bits: UInt64 = 0
            for i in 0..<bytes {
                let shift = UInt64((first + i) * 8)
                mask |= 0xFF << shift
                bits |= UInt64(src.load(fromByteOffset: i, as: UInt8.self)) << shift
            }
            merge(word(a), mask: mask, bits: bits)
        }
        let head = Int(d & 7)
        if head != 0 {
            let take = min(8 - head, n)
            partial(d & ~7, head, take, s)
            s += take; d += UInt(take); n -= take
        }
        while n >= 8 {
            word(d).pointee.store(s.loadUnaligned(as: UInt64.self), ordering: .relaxed)
            s += 8; d += 8; n -= 8
        }
        if n > 0 { partial(d, 0, n, s) }
    }
}
