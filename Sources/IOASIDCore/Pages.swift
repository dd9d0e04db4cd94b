import IOASIDStructures

/// Pinned pages: the memory behind one or more areas (the kernel's `iopt_pages`).
///
/// A `Pages` object covers whole host pages starting at `base`. Areas take byte slices of it;
/// `IOAS_COPY` makes a second area over the same object, so the pages are pinned once however
/// many IOAS or domains use them. Pinning is recorded as extents of page indexes with a use
/// count; a page is pinned (and charged to the accounting mode of its context) while any
/// extent covers it.
public final class Pages: @unchecked Sendable {
    /// Where the pages come from.
    public enum Source: Sendable {
        /// User memory at `base`.
        case user
        /// A file the framework mapped itself.
        case file(FileMapping)
    }

    /// The host address of the first byte (page aligned).
    public let base: UInt64
    /// The number of bytes covered (a multiple of the page size).
    public let byteLength: UInt64
    /// Whether DMA may write the pages.
    public let writable: Bool
    public let source: Source

    /// The address the kernel derives a picked IOVA's alignment from for the byte at `offset`:
    /// the user address, or the offset in the file (or DMA-buf) for file-backed pages.
    func placementAddress(at offset: UInt64) -> UInt64 {
        switch source {
        case .user: base &+ offset
        case .file(let mapping): mapping.fileOffset &+ offset
        }
    }
    let pageSize: UInt64
    /// Pinned extents of page indexes.
    @exclusivity(unchecked) private(set) var pins = PinExtents()
    /// The accounting mode the pinned pages are charged to, and how many are charged.
    @exclusivity(unchecked) var chargedMode: AccountingMode = .none
    @exclusivity(unchecked) var chargedPages: UInt64 = 0
    /// How many areas refer to the pages.
    @exclusivity(unchecked) var areaCount = 0
    let memory: any UserMemory

    /// The neighbours in the registry's list of live pages (guarded by the registry's lock).
    fileprivate var registryPrevious: Unmanaged<Pages>?
    fileprivate var registryNext: Unmanaged<Pages>?

    init(base: UInt64, byteLength: UInt64, writable: Bool, source: Source, pageSize: UInt64, memory: any UserMemory) {
        self.base = base
        self.byteLength = byteLength
        self.writable = writable
        self.source = source
        self.pageSize = pageSize
        self.memory = memory
        PinRegistry.shared.add(self)
    }

    deinit {
        if case .file(let m) = source { memory.unmapFile(m) }
        PinRegistry.shared.remove(self)
    }

    /// The host address of byte `offset`.
    @inlinable public func hostAddress(_ offset: UInt64) -> UInt64 { base + offset }

    /// Whether bytes `[offset, offset+length)` have host memory behind them: always for user
    /// memory; for a file, the part that is mapped (see `FileMapping.mappedLength`).
    func isHostMapped(_ offset: UInt64, _ length: UInt64) -> Bool {
        guard case .file(let mapping) = source else { return true }
        return offset < mapping.mappedLength && length <= mapping.mappedLength - offset
    }

    /// The number of distinct pages pinned.
    public var pinnedPageCount: UInt64 { pins.pageCount }

    /// Whether page `index` is pinned.
    public func isPinned(page index: UInt64) -> Bool { pins.contains(page: index) }

    /// Pins the pages holding bytes `[offset, offset+length)`, checking the memory first.
    func pin(offset: UInt64, length: UInt64, state: ContextState) throws(IOMMUError) {
        let first = offset / pageSize, last = (offset + length - 1) / pageSize
        if pins.addUse(first: first, last: last) { return }
        try FaultInjection.check(.pin)
        switch source {
        case .user:
            try state.memory.pin(address: base + first * pageSize, length: (last - first + 1) * pageSize, writable: writable)
        case .file(let mapping):
            // The kernel pins a file's pages from the file: a page past its end is EINVAL. (A
            // span larger than the address space is mapped only as far as the file reached.)
            guard (last + 1) * pageSize <= mapping.mappedLength else { throw .invalid("file pages past the end of the file") }
            do throws(IOMMUError) {
                try state.memory.pin(address: base + first * pageSize, length: (last - first + 1) * pageSize, writable: false)
            } catch {
                throw .invalid("file pages past the end of the file")
            }
        }
        let added = pins.insert(first: first, last: last)
        if added > 0 {
            do throws(IOMMUError) { try state.charge(self, pages: added) } catch {
                _ = pins.dropUse(first: first, last: last)
                throw error
            }
        }
    }

    /// Drops one pin of the pages holding bytes `[offset, offset+length)`.
    func unpin(offset: UInt64, length: UInt64, state: ContextState) {
        let first = offset / pageSize, last = (offset + length - 1) / pageSize
        let removed = pins.dropUse(first: first, last: last)
        if removed > 0 { state.uncharge(self, pages: removed) }
    }

    /// Whether the user page at `address` (of identity `identity`) belongs to these pages and is pinned.
    func pinsPage(address: UInt64, identity: PageIdentity) -> Bool {
        switch source {
        case .user:
            guard address >= base, address - base < byteLength else { return false }
            return isPinned(page: (address - base) / pageSize)
        case .file(let m):
            guard case .file(let f, let off) = identity, f == m.file,
                  off >= m.fileOffset, off - m.fileOffset < byteLength else { return false }
            return isPinned(page: (off - m.fileOffset) / pageSize)
        }
    }

    /// The identity of the page holding byte `offset`.
    public func identity(ofByte offset: UInt64) -> PageIdentity {
        switch source {
        case .user: return .address(base + offset)
        case .file(let m): return .file(m.file, offset: m.fileOffset + offset)
        }
    }
}

/// Every live `Pages` object of the process, so a test can ask how often a page is pinned
/// (the kernel's page reference count, which is process-wide) and `munmap` can tell memory an
/// IOAS maps.
public final class PinRegistry: @unchecked Sendable {
    public static let shared = PinRegistry()
    /// Live pages, unretained, in a list threaded through the objects themselves (adding and
    /// removing allocate and hash nothing): each `Pages` removes itself in `deinit`, so an entry
    /// never outlives its object.
    private let lock = Lock()
    private var head: Unmanaged<Pages>?
    private var count = 0

    func add(_ p: Pages) {
        lock.withLock {
            p.registryPrevious = nil
            p.registryNext = head
            if let h = head { h._withUnsafeGuaranteedRef { $0.registryPrevious = .passUnretained(p) } }
            head = .passUnretained(p)
            count += 1
        }
    }

    func remove(_ p: Pages) {
        lock.withLock {
            let previous = p.registryPrevious, next = p.registryNext
            if let previous { previous._withUnsafeGuaranteedRef { $0.registryNext = next } } else { head = next }
            if let next { next._withUnsafeGuaranteedRef { $0.registryPrevious = previous } }
            p.registryPrevious = nil
            p.registryNext = nil
            count -= 1
        }
    }

    /// Calls `body` with each live `Pages`; the lock is held.
    private func forEachLocked(_ body: (Pages) -> Void) {
        var at = head
        while let entry = at {
            entry._withUnsafeGuaranteedRef { body($0) }
            at = entry._withUnsafeGuaranteedRef { $0.registryNext }
        }
    }

    /// The parts of `[start, end)` that user memory behind a live `Pages` covers (memory an IOAS
    /// maps), sorted and merged. Reads only what never changes in a `Pages` (its span), so it is
    /// safe from any thread.
    public func userSpans(overlapping start: UInt64, _ end: UInt64) -> [(start: UInt64, end: UInt64)] {
        var spans: [(start: UInt64, end: UInt64)] = []
        lock.withLock {
            forEachLocked { p in
                guard case .user = p.source else { return }
                let lo = max(start, p.base), hi = min(end, p.base &+ p.byteLength)
                if lo < hi { spans.append((lo, hi)) }
            }
        }
        guard spans.count > 1 else { return spans }
        spans.sort { $0.start < $1.start }
        var merged = [spans[0]]
        for s in spans.dropFirst() {
            if s.start <= merged[merged.count - 1].end { merged[merged.count - 1].end = max(merged[merged.count - 1].end, s.end) }
            else { merged.append(s) }
        }
        return merged
    }

    /// How many pinned `Pages` hold the page at user `address` whose identity is `identity`.
    public func pinCount(address: UInt64, identity: PageIdentity) -> Int {
        var n = 0
        lock.withLock { forEachLocked { if $0.pinsPage(address: address, identity: identity) { n += 1 } } }
        return n
    }

    /// The number of live `Pages` objects; for leak tests.
    public var liveCount: Int { lock.withLock { count } }
}

/// The pinned extents of one `Pages`: page-index spans with a use count, the same span pinned
/// twice counting twice. The first extent is kept inline, so the usual `Pages` (one area, one
/// extent) allocates nothing for its pins.
struct PinExtents {
    typealias Extent = (first: UInt64, last: UInt64, count: Int)
    /// The first extent; `count` 0 when there is none (and then `rest` is empty).
    private var head: Extent = (0, 0, 0)
    /// Further extents, in pin order.
    private var rest: [Extent] = []

    var isEmpty: Bool { head.count == 0 }

    /// Adds a use of the extent `[first, last]` if it is already pinned; false if it is not.
    mutating func addUse(first: UInt64, last: UInt64) -> Bool {
        if head.count > 0, head.first == first, head.last == last { head.count += 1; return true }
        guard !rest.isEmpty, let i = rest.firstIndex(where: { $0.first == first && $0.last == last }) else { return false }
        rest[i].count += 1
        return true
    }

    /// Pins the new extent `[first, last]` once; returns how many pages became pinned.
    mutating func insert(first: UInt64, last: UInt64) -> UInt64 {
        if head.count == 0 {  // then `rest` is empty too
            head = (first, last, 1)
            return last - first + 1
        }
        let before = pageCount
        rest.append((first, last, 1))
        return pageCount - before
    }

    /// Drops one use of the extent `[first, last]`; returns how many pages stopped being pinned.
    mutating func dropUse(first: UInt64, last: UInt64) -> UInt64 {
        if head.count > 0, head.first == first, head.last == last {
            if head.count > 1 { head.count -= 1; return 0 }
            if rest.isEmpty { head.count = 0; return last - first + 1 }
            let before = pageCount
            head = rest.removeFirst()
            return before - pageCount
        }
        guard let i = rest.firstIndex(where: { $0.first == first && $0.last == last }) else { return 0 }
        if rest[i].count > 1 { rest[i].count -= 1; return 0 }
        let before = pageCount
        rest.remove(at: i)
        return before - pageCount
    }

    /// Whether page `index` is pinned.
    func contains(page index: UInt64) -> Bool {
        if head.count > 0, head.first <= index, index <= head.last { return true }
        return rest.contains { $0.first <= index && index <= $0.last }
    }

    /// The number of distinct pages pinned.
    var pageCount: UInt64 {
        if head.count == 0 { return 0 }
        if rest.isEmpty { return head.last - head.first + 1 }
        let sorted = ([head] + rest).sorted { $0.first < $1.first }
        var total: UInt64 = 0
        var curFirst = sorted[0].first, curLast = sorted[0].last
        for p in sorted.dropFirst() {
            if p.first > curLast + 1 { total += curLast - curFirst + 1; curFirst = p.first; curLast = p.last }
            else if p.last > curLast { curLast = p.last }
        }
        return total + curLast - curFirst + 1
    }
}

extension ContextState {
    /// Charges `pages` newly pinned pages to the context's accounting mode.
    func charge(_ p: Pages, pages: UInt64) throws(IOMMUError) {
        if p.chargedPages == 0 { p.chargedMode = accountingMode }
        let mode = p.chargedMode
        if mode != .none, let limit = memory.lockLimitPages() {
            let current = chargedPages[mode, default: 0]
            if current + pages > limit { throw .noMemory("pinned pages over RLIMIT_MEMLOCK") }
        }
        chargedPages[mode, default: 0] += pages
        p.chargedPages += pages
    }

    /// Returns the charge of `pages` unpinned pages.
    func uncharge(_ p: Pages, pages: UInt64) {
        chargedPages[p.chargedMode, default: 0] -= min(pages, chargedPages[p.chargedMode, default: 0])
        p.chargedPages -= min(pages, p.chargedPages)
    }
}
