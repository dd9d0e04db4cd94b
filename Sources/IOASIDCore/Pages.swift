import Synchronization

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
    @exclusivity(unchecked) private(set) var pins: [(first: UInt64, last: UInt64, count: Int)] = []
    /// The accounting mode the pinned pages are charged to, and how many are charged.
    @exclusivity(unchecked) var chargedMode: AccountingMode = .none
    @exclusivity(unchecked) var chargedPages: UInt64 = 0
    /// How many areas refer to the pages.
    @exclusivity(unchecked) var areaCount = 0
    let memory: any UserMemory

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

    /// The number of distinct pages pinned.
    public var pinnedPageCount: UInt64 {
        if pins.isEmpty { return 0 }
        if pins.count == 1 { return pins[0].last - pins[0].first + 1 }
        let sorted = pins.sorted { $0.first < $1.first }
        var total: UInt64 = 0
        var curFirst = sorted[0].first, curLast = sorted[0].last
        for p in sorted.dropFirst() {
            if p.first > curLast + 1 { total += curLast - curFirst + 1; curFirst = p.first; curLast = p.last }
            else if p.last > curLast { curLast = p.last }
        }
        return total + curLast - curFirst + 1
    }

    /// Whether page `index` is pinned.
    public func isPinned(page index: UInt64) -> Bool { pins.contains { $0.first <= index && index <= $0.last } }

    /// Pins the pages holding bytes `[offset, offset+length)`, checking the memory first.
    func pin(offset: UInt64, length: UInt64, state: ContextState) throws(IOMMUError) {
        let first = offset / pageSize, last = (offset + length - 1) / pageSize
        if let i = pins.firstIndex(where: { $0.first == first && $0.last == last }) {
            pins[i].count += 1
            return
        }
        try FaultInjection.check(.pin)
        let before = pinnedPageCount
        switch source {
        case .user:
            try state.memory.pin(address: base + first * pageSize, length: (last - first + 1) * pageSize, writable: writable)
        case .file:
            // The kernel pins a file's pages from the file: a page past its end is EINVAL.
            do throws(IOMMUError) {
                try state.memory.pin(address: base + first * pageSize, length: (last - first + 1) * pageSize, writable: false)
            } catch {
                throw .invalid("file pages past the end of the file")
            }
        }
        pins.append((first, last, 1))
        let added = pinnedPageCount - before
        if added > 0 {
            do throws(IOMMUError) { try state.charge(self, pages: added) } catch {
                pins.removeLast()
                throw error
            }
        }
    }

    /// Drops one pin of the pages holding bytes `[offset, offset+length)`.
    func unpin(offset: UInt64, length: UInt64, state: ContextState) {
        let first = offset / pageSize, last = (offset + length - 1) / pageSize
        guard let i = pins.firstIndex(where: { $0.first == first && $0.last == last }) else { return }
        let before = pinnedPageCount
        pins[i].count -= 1
        if pins[i].count == 0 { pins.remove(at: i) }
        let removed = before - pinnedPageCount
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
/// (the kernel's page reference count, which is process-wide).
public final class PinRegistry: Sendable {
    public static let shared = PinRegistry()
    /// Live pages, unretained: each `Pages` removes itself in `deinit`, so an entry never
    /// outlives its object (no weak references on the map path).
    private let live = Mutex<[ObjectIdentifier: UnretainedPages]>([:])

    struct UnretainedPages: @unchecked Sendable { let pages: Unmanaged<Pages> }

    func add(_ p: Pages) { live.withLock { $0[ObjectIdentifier(p)] = UnretainedPages(pages: .passUnretained(p)) } }
    func remove(_ p: Pages) { _ = live.withLock { $0.removeValue(forKey: ObjectIdentifier(p)) } }

    /// The parts of `[start, end)` that user memory behind a live `Pages` covers (memory an IOAS
    /// maps), sorted and merged. Reads only what never changes in a `Pages` (its span), so it is
    /// safe from any thread.
    public func userSpans(overlapping start: UInt64, _ end: UInt64) -> [(start: UInt64, end: UInt64)] {
        var spans: [(start: UInt64, end: UInt64)] = live.withLock { all in
            all.values.compactMap { entry in
                let p = entry.pages.takeUnretainedValue()
                guard case .user = p.source else { return nil }
                let lo = max(start, p.base), hi = min(end, p.base &+ p.byteLength)
                return lo < hi ? (lo, hi) : nil
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
        live.withLock { all in
            all.values.reduce(0) { $0 + ($1.pages.takeUnretainedValue().pinsPage(address: address, identity: identity) ? 1 : 0) }
        }
    }

    /// The number of live `Pages` objects; for leak tests.
    public var liveCount: Int { live.withLock { $0.count } }
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
