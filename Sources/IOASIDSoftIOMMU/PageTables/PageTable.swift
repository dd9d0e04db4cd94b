// The radix engine: one implementation of map, unmap (with large-page splitting), walk,
// enumeration and dirty read-and-clear for every page-table format.

/// A page table of format `Format` whose tables live in ``PhysicalMemory`` frames, with entries
/// bit-exact to the architecture, as the hardware walker reads them.
///
/// Table entries written by this type never restrict (permissions are carried by leaves); the
/// walker nevertheless applies every level's restrictions as the hardware does, so tables
/// written by someone else (a guest) translate correctly.
///
/// `map` chooses the largest page or block size the format allows at each position where input
/// address, output address and remaining length are all aligned. `unmap` splits large leaves the
/// range only partly covers and unlinks tables that become empty.
///
/// Complexity: `translate` reads one entry per level; `map` and `unmap` are linear in the number
/// of leaves and tables they touch.
///
/// ## Concurrency
///
/// Walks (``translate(_:access:updateAccessedDirty:)``, ``NestedPageTable``, and an IOMMU model
/// walking from ``root``) may run on any number of threads while one thread changes the table:
///
/// - *Writers* — `map`, `unmap`, dirty read-and-clear, and the software readers (`isAnyMapped`,
///   `entries(for:)`, enumeration) — are serialized by one pthread mutex (the writer lock; a
///   leaf lock: it is taken after nothing and only the frame allocator's lock is taken under
///   it; no caller code runs while it is held).
/// - *Walkers* take no lock: each entry is one atomic word, written so that a walk sees every
///   entry before or after a change (a new table is filled before it is linked; a split fills
///   the new table before it replaces the leaf). Hardware updates are compare-exchanges from the
///   value the walk read (see `PageTableWalk.swift`), and the writers' own changes to live
///   leaves — splitting a leaf, cleaning dirty state — are compare-exchange loops too, so
///   neither side loses the other's bits.
/// - *Table frames are not freed by `unmap`.* A walker may have read a table's address just
///   before `unmap` unlinked it, and an IOMMU's paging-structure cache may still hold it; if the
///   frame went back to the allocator it could be reused for another table and the walker would
///   read entries that were never part of its translation. So `unmap` *retires* emptied table
///   frames instead, into the current *retirement epoch*, and the owner returns them when it
///   knows nothing can use them any more — as Linux's IOMMU drivers free page-table pages only
///   after the IOTLB flush that follows an unmap:
///
///   ```swift
///   try table.unmap(iova: iova, size: size)     // unlinks; emptied tables are retired
///   let epoch = table.closeRetirementEpoch()    // everything retired so far
///   // invalidate the IOTLB and paging-structure caches for the range and wait for completion
///   // (VT-d invalidation wait, SMMUv3 CMD_SYNC); the completion must also wait for walks
///   // that were in flight, e.g. walks run as readers of a ReadMostlyLock whose write side the
///   // completion takes
///   table.reclaimFreedTables(through: epoch)    // now the frames go back to memory
///   ```
///
///   Frames retired after `closeRetirementEpoch()` (another thread's later unmap) stay retired
///   until a later epoch is reclaimed. ``reclaimFreedTables()`` reclaims everything retired so
///   far, for an owner whose invalidation covers all of it. Until reclaimed, retired frames count
///   in ``retiredTableFrameCount`` and in `memory.allocatedFrameCount`, not in
///   ``tableFrameCount``. Retired frames read as the empty tables they were when unlinked.
import IOASIDStructures

public final class PageTable<Format: PageTableFormat>: @unchecked Sendable {
    /// The memory the tables live in.
    public let memory: PhysicalMemory
    /// The format and its configuration.
    public let format: Format
    /// The physical address of the root table.
    public let root: UInt64

    /// What the writer lock protects.
    private struct WriterState {
        /// Table frames linked into the table, including the root.
        var tableFrameCount = 1
        /// Frames unlinked by unmap and not returned to memory yet, with their retirement epoch.
        var retired: [(frame: UInt64, epoch: UInt64)] = []
        /// The epoch frames retire into now.
        var epoch: UInt64 = 0
    }

    /// Serializes writers and software readers; see "Concurrency" above.
    private let writerLock = Lock()
    /// Only touched with `writerLock` held.
    private var state = WriterState()

    /// The number of table frames linked into the table, including the root.
    public var tableFrameCount: Int { writerLock.withLock { state.tableFrameCount } }

    /// The number of table frames `unmap` unlinked that are not yet returned to memory (see
    /// ``reclaimFreedTables(through:)``).
    public var retiredTableFrameCount: Int { writerLock.withLock { state.retired.count } }

    /// Creates an empty table, allocating its root frame from `memory`.
    public init(memory: PhysicalMemory, format: Format) throws(PageTableError) {
        guard let root = memory.allocateFrame() else { throw .outOfMemory }
        self.memory = memory
        self.format = format
        self.root = root
    }

    // MARK: Retired tables

    /// Ends the current retirement epoch and returns its number: every table frame retired
    /// before this call is in that epoch or an earlier one; frames retired afterwards are in
    /// later epochs. Call it after the unmaps whose invalidation is about to be issued.
    public func closeRetirementEpoch() -> UInt64 {
        writerLock.withLock {
            defer { state.epoch &+= 1 }
            return state.epoch
        }
    }

    /// Returns to memory the table frames retired in epochs up to and including `epoch`, and
    /// returns how many.
    ///
    /// Call it only when nothing can use those frames any more: the invalidation of the IOTLB
    /// and paging-structure caches covering the unmapped ranges has completed, and every walk
    /// that could have read their addresses before they were unlinked has finished.
    @discardableResult
    public func reclaimFreedTables(through epoch: UInt64) -> Int {
        writerLock.withLock {
            var kept: [(frame: UInt64, epoch: UInt64)] = []
            var freed = 0
            for r in state.retired {
                if r.epoch <= epoch {
                    memory.freeFrame(r.frame)
                    freed += 1
                } else {
                    kept.append(r)
                }
            }
            state.retired = kept
            return freed
        }
    }

    /// Returns every retired table frame to memory (closing the current epoch), and returns how
    /// many: for an owner whose completed invalidation covers every unmap so far.
    @discardableResult
    public func reclaimFreedTables() -> Int {
        reclaimFreedTables(through: closeRetirementEpoch())
    }

    /// Unlinked `frame` (with the writer lock held): it goes back to memory when its epoch is
    /// reclaimed.
    private func retire(_ frame: UInt64) {
        state.tableFrameCount -= 1
        state.retired.append((frame, state.epoch))
    }

    @usableFromInline var inputMask: UInt64 { Radix.mask(bits: format.inputAddressBits) }

    private func checkRange(_ iova: UInt64, _ size: UInt64) throws(PageTableError) -> (first: UInt64, last: UInt64) {
        guard size > 0, iova & 0xFFF == 0, size & 0xFFF == 0 else { throw .misaligned }
        let (last, overflow) = iova.addingReportingOverflow(size - 1)
        guard !overflow, format.isValidInputRange(first: iova, last: last) else { throw .outOfRange }
        return (iova & inputMask, last & inputMask)
    }

    // MARK: Map

    /// Maps `[iova, iova + size)` to `[physical, physical + size)` with `permissions` and
    /// `attributes`.
    ///
    /// Fails without changing anything if any page of the range is mapped, the permissions
    /// cannot be encoded, or the frame allocator runs out (what was mapped is undone).
    public func map(iova: UInt64, physical: UInt64, size: UInt64, permissions: Format.Permissions,
                    attributes: Format.Attributes) throws(PageTableError) {
        let (first, _) = try checkRange(iova, size)
        guard physical & 0xFFF == 0 else { throw .misaligned }
        let (physicalLast, overflow) = physical.addingReportingOverflow(size - 1)
        guard !overflow, physicalLast & ~Radix.mask(bits: format.outputAddressBits) == 0 else {
            throw .physicalAddressTooLarge
        }
        if let error = format.validate(permissions) { throw error }
        try writerLock.withLock { () throws(PageTableError) in
            try mapLocked(iova: iova, first: first, physical: physical, size: size, permissions: permissions,
                          attributes: attributes)
        }
    }

    private func mapLocked(iova: UInt64, first: UInt64, physical: UInt64, size: UInt64, permissions: Format.Permissions,
                           attributes: Format.Attributes) throws(PageTableError) {
        guard !anyMapped(iova: iova, size: size) else { throw .alreadyMapped }
        var offset: UInt64 = 0
        while offset < size {
            let va = first &+ offset, pa = physical + offset, remaining = size - offset
            var level = min(format.topLevel, 5)
            while level > 1 {
                let span = Radix.span(level)
                if format.mayMapLeaf(atLevel: level), va % span == 0, pa % span == 0, remaining >= span { break }
                level -= 1
            }
            let slot: UInt64
            do {
                slot = try entryAddress(for: va, level: level)
            } catch {
                if offset > 0 { _ = try? unmapRange(table: root, level: format.topLevel, base: 0, first: first, last: first &+ (offset - 1)) }
                throw error
            }
            memory.write64(slot, format.leafEntry(pa, level: level, permissions: permissions, attributes: attributes))
            offset += Radix.span(level)
        }
    }

    /// Maps with the format's ``PageTableFormat/defaultAttributes``.
    public func map(iova: UInt64, physical: UInt64, size: UInt64, permissions: Format.Permissions) throws(PageTableError) {
        try map(iova: iova, physical: physical, size: size, permissions: permissions, attributes: format.defaultAttributes)
    }

    /// The address of the entry for `va` (masked) at `target`, creating tables on the way.
    private func entryAddress(for va: UInt64, level target: Int) throws(PageTableError) -> UInt64 {
        var table = root
        var level = format.topLevel
        while true {
            let slot = table + Radix.index(va, level) * 8
            if level == target { return slot }
            let entry = memory.read64(slot)
            switch format.kind(of: entry, level: level) {
            case .invalid:
                // Nothing is mapped below an invalid entry, whatever its other bits hold.
                // The new frame is zero; the release store publishes it only once it is.
                guard let frame = memory.allocateFrame() else { throw .outOfMemory }
                state.tableFrameCount += 1
                memory.write64(slot, format.tableEntry(frame, level: level))
                table = frame
            case .table:
                table = format.tableAddress(entry, level: level)
            case .leaf:
                preconditionFailure("unexpected leaf above the target level")
            }
            level -= 1
        }
    }

    /// Whether any page of `[iova, iova + size)` is mapped. The range must be valid for the table.
    public func isAnyMapped(iova: UInt64, size: UInt64) -> Bool {
        writerLock.withLock { anyMapped(iova: iova, size: size) }
    }

    private func anyMapped(iova: UInt64, size: UInt64) -> Bool {
        guard size > 0 else { return false }
        let first = iova & inputMask, last = (iova &+ size &- 1) & inputMask
        return anyMapped(table: root, level: format.topLevel, base: 0, first: first, last: last)
    }

    private func anyMapped(table: UInt64, level: Int, base: UInt64, first f: UInt64, last l: UInt64) -> Bool {
        let span = Radix.span(level)
        let first = max(f, base), last = min(l, base &+ span &* 512 &- 1)
        if first > last { return false }
        var i = (first - base) / span
        let lastIndex = (last - base) / span
        while i <= lastIndex {
            let entry = memory.read64(table + i * 8)
            switch format.kind(of: entry, level: level) {
            case .invalid: break
            case .leaf: return true
            case .table:
                if anyMapped(table: format.tableAddress(entry, level: level), level: level - 1,
                             base: base + i * span, first: first, last: last) { return true }
            }
            i += 1
        }
        return false
    }

    // MARK: Unmap

    /// Unmaps every page in `[iova, iova + size)`, splitting large leaves that the range covers
    /// only partly (the rest of such a leaf stays mapped with the same bits). Unlinks tables that
    /// become empty and retires their frames (returned to memory by
    /// ``reclaimFreedTables(through:)``). Returns the number of bytes that were mapped.
    @discardableResult
    public func unmap(iova: UInt64, size: UInt64) throws(PageTableError) -> UInt64 {
        let (first, last) = try checkRange(iova, size)
        return try writerLock.withLock { () throws(PageTableError) -> UInt64 in
            try unmapRange(table: root, level: format.topLevel, base: 0, first: first, last: last)
        }
    }

    private func unmapRange(table: UInt64, level: Int, base: UInt64, first f: UInt64, last l: UInt64) throws(PageTableError) -> UInt64 {
        let span = Radix.span(level)
        let first = max(f, base), last = min(l, base &+ span &* 512 &- 1)
        if first > last { return 0 }
        var removed: UInt64 = 0
        var i = (first - base) / span
        let lastIndex = (last - base) / span
        while i <= lastIndex {
            let slot = table + i * 8
            var entry = memory.read64(slot)
            let entryBase = base + i * span
            var kind = format.kind(of: entry, level: level)
            if kind == .leaf {
                if first <= entryBase && entryBase + span - 1 <= last {
                    memory.write64(slot, 0)
                    removed += span
                    i += 1
                    continue
                }
                try split(slot: slot, level: level)
                entry = memory.read64(slot)
                kind = .table
            }
            if kind == .table {
                let child = format.tableAddress(entry, level: level)
                removed += try unmapRange(table: child, level: level - 1, base: entryBase, first: first, last: last)
                if isEmpty(child) {
                    memory.write64(slot, 0)
                    retire(child)
                }
            }
            i += 1
        }
        return removed
    }

    private func isEmpty(_ table: UInt64) -> Bool {
        for i in 0..<UInt64(512) where memory.read64(table + i * 8) != 0 { return false }
        return true
    }

    /// Replaces the large leaf at `slot` by a table of 512 leaves one level down with the same
    /// permissions, attributes and hardware-managed state.
    ///
    /// The children are written before the table replaces the leaf, with a compare-exchange: if
    /// a walker set accessed/dirty state in the leaf meanwhile, the children are written again
    /// from the new value, so the split loses none of it.
    private func split(slot: UInt64, level: Int) throws(PageTableError) {
        var entry = memory.read64(slot)
        guard let frame = memory.allocateFrame() else { throw .outOfMemory }
        state.tableFrameCount += 1
        let childSpan = Radix.span(level - 1)
        while true {
            let output = format.leafAddress(entry, level: level)
            let bits = format.splitChildBits(entry, level: level)
            for i in 0..<UInt64(512) {
                memory.write64(frame + i * 8, (output + i * childSpan) | bits)
            }
            let table = format.tableEntry(replacingLeaf: entry, table: frame, level: level)
            let (exchanged, seen) = memory.compareExchange64(slot, expected: entry, desired: table)
            if exchanged { return }
            entry = seen
        }
    }

    // MARK: Walk

    /// Translates `iova` for `access`, walking the tables as the hardware does.
    ///
    /// On success (and only then), with `updateAccessedDirty`, the walker makes the format's
    /// hardware updates (accessed/dirty flags, Arm AF and dirty state). Allocates nothing, takes
    /// no lock: safe on any thread while writers change the table (see "Concurrency").
    @inlinable
    public func translate(_ iova: UInt64, access: PageAccess = .read,
                          updateAccessedDirty: Bool = true) -> Result<PageTranslation, PageTableFault> {
        var port = DirectWalkPort(memory: memory)
        switch format.walk(root: root, input: iova, access: access, update: updateAccessedDirty, port: &port) {
        case .translated(let t, _, _, _): return .success(t)
        case .fault(let f): return .failure(f)
        case .portFault: preconditionFailure("the direct port never faults")
        }
    }

    /// The raw entries of the walk for `iova`, top-down, ending at the leaf or the first entry that
    /// is not a table. For inspection and tests; sets no bits.
    public func entries(for iova: UInt64) -> [PageTableWalkEntry] {
        writerLock.withLock { entriesLocked(for: iova) }
    }

    private func entriesLocked(for iova: UInt64) -> [PageTableWalkEntry] {
        var result: [PageTableWalkEntry] = []
        var table = root
        var level = format.topLevel
        while level >= 1 {
            let slot = table + Radix.index(iova & inputMask, level) * 8
            let entry = memory.read64(slot)
            result.append(PageTableWalkEntry(level: format.architecturalLevel(level), address: slot, value: entry))
            guard format.kind(of: entry, level: level) == .table else { break }
            table = format.tableAddress(entry, level: level)
            level -= 1
        }
        return result
    }

    // MARK: Enumeration and dirty tracking

    /// Calls `body` for every leaf, in input-address order: the leaves as they were at one moment
    /// (collected with the writer lock held; `body` runs after it is released, so it may change
    /// the table).
    public func forEachMapping(_ body: (PageMapping<Format>) throws -> Void) rethrows {
        let mappings: [PageMapping<Format>] = writerLock.withLock {
            var result: [PageMapping<Format>] = []
            visitLeaves(table: root, level: format.topLevel, base: 0, first: 0, last: inputMask) { _, entry, level, va in
                result.append(PageMapping(iova: format.externalInput(va), physical: format.leafAddress(entry, level: level),
                                          size: Radix.span(level), level: format.architecturalLevel(level),
                                          permissions: format.permissions(ofLeaf: entry, level: level),
                                          attributes: format.attributes(ofLeaf: entry, level: level), entry: entry))
            }
            return result
        }
        for m in mappings { try body(m) }
    }

    private func visitLeaves(table: UInt64, level: Int, base: UInt64, first f: UInt64, last l: UInt64,
                             _ body: (UInt64, UInt64, Int, UInt64) throws -> Void) rethrows {
        let span = Radix.span(level)
        let first = max(f, base), last = min(l, base &+ span &* 512 &- 1)
        if first > last { return }
        var i = (first - base) / span
        let lastIndex = (last - base) / span
        while i <= lastIndex {
            let slot = table + i * 8
            let entry = memory.read64(slot)
            switch format.kind(of: entry, level: level) {
            case .invalid: break
            case .leaf: try body(slot, entry, level, base + i * span)
            case .table:
                try visitLeaves(table: format.tableAddress(entry, level: level), level: level - 1,
                                base: base + i * span, first: first, last: last, body)
            }
            i += 1
        }
    }

    /// Calls `body` with every dirty leaf intersecting `[iova, iova + size)` (the whole leaf's
    /// range) and, if `clear`, cleans those leaves — the IOMMU dirty-tracking read-and-clear.
    /// The caller must invalidate cached translations afterwards.
    ///
    /// Each leaf is cleaned with a compare-exchange loop, so a walker's concurrent update of the
    /// same leaf (setting the access flag, say) is kept, and a write that makes the leaf dirty
    /// again after it was cleaned is seen by the next read-and-clear. The leaves are collected
    /// with the writer lock held; `body` runs after it is released.
    public func forEachDirty(iova: UInt64, size: UInt64, clear: Bool = true,
                             _ body: (DirtyRange) -> Void) throws(PageTableError) {
        let (first, last) = try checkRange(iova, size)
        let dirty: [DirtyRange] = writerLock.withLock {
            var result: [DirtyRange] = []
            visitLeaves(table: root, level: format.topLevel, base: 0, first: first, last: last) { slot, entry, level, va in
                var current = entry
                while format.isDirty(leaf: current, level: level) {
                    if clear {
                        let (exchanged, seen) = memory.compareExchange64(slot, expected: current,
                                                                         desired: format.cleaned(leaf: current, level: level))
                        if !exchanged {
                            current = seen
                            continue
                        }
                    }
                    result.append(DirtyRange(iova: format.externalInput(va), length: Radix.span(level)))
                    break
                }
            }
            return result
        }
        for range in dirty { body(range) }
    }

    /// The dirty leaves intersecting `[iova, iova + size)`, cleaned if `clear`; see
    /// ``forEachDirty(iova:size:clear:_:)``.
    public func readAndClearDirty(iova: UInt64, size: UInt64, clear: Bool = true) throws(PageTableError) -> [DirtyRange] {
        var result: [DirtyRange] = []
        try forEachDirty(iova: iova, size: size, clear: clear) { result.append($0) }
        return result
    }
}
