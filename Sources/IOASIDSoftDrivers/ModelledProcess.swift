// A modelled process address space: what the kernel's mm is to SVA.
//
// The process's CPU page table is an x86-64 first-stage table (``X86PageTable``) in the IOMMU's
// modelled memory, so a VT-d PASID entry can point at its root (FSPTPTR) and the unit walks it as
// the CPU would. Its pages are frames of the same memory. The operations are the system calls
// that change an address space:
//   map      mmap(MAP_FIXED_NOREPLACE | MAP_ANONYMOUS): fresh zeroed frames, 4 KiB leaves;
//   unmap    munmap: clear the leaves, tell the observers (IOTLB and device-TLB invalidation,
//            the mm notifier's job), and only then free the pages and the page-table pages the
//            unmap emptied (retired until then: a walk in flight may still read them);
//   protect  mprotect: rewrite the leaves in place (PROT_NONE clears P, keeping the frame), then
//            tell the observers;
//   exit     the observers are told the address space is released (the IOMMU stops walking it),
//            then every frame and table is freed.
// Every page is a user page (U/S = 1): SVA DMA is an unprivileged access.
//
// Locks: `mm` (the kernel's mmap lock) serializes map, unmap, protect and exit and is held while
// observers invalidate, so an unmap or protect returns only after the IOMMU forgot the old
// translation; observers must not call back into the process. `observers` is a leaf lock. exit
// calls `released()` with no lock held (observers may take context locks there). Observers are
// called newest first, as the kernel's mmu notifiers: a device's SVA domain (registered at bind)
// tears its PASID entries down before the IOASID layer's exit handling (registered before it).

import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

/// A process address space in modelled memory that devices can share through SVA.
public final class ModelledProcess: SharedAddressSpace, @unchecked Sendable {
    /// Access rights of a mapping, as `PROT_READ`, `PROT_WRITE` and `PROT_EXEC`.
    public struct Protection: OptionSet, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// `PROT_READ`.
        public static let read = Protection(rawValue: 1 << 0)
        /// `PROT_WRITE` (x86 pages that are writable are readable too).
        public static let write = Protection(rawValue: 1 << 1)
        /// `PROT_EXEC`.
        public static let execute = Protection(rawValue: 1 << 2)
        /// `PROT_NONE`: mapped, but every access faults.
        public static let none: Protection = []
        /// `PROT_READ | PROT_WRITE`.
        public static let readWrite: Protection = [.read, .write]

        public var description: String {
            (contains(.read) || contains(.write) ? "r" : "-") + (contains(.write) ? "w" : "-") + (contains(.execute) ? "x" : "-")
        }
    }

    /// The process ID.
    public let pid: Int32
    /// The memory the page table and the pages live in (the IOMMU's).
    public let memory: PhysicalMemory
    /// The CPU page table.
    public let pageTable: X86PageTable

    struct Page {
        var frame: UInt64
        var protection: Protection
    }
    struct MM {
        /// Mapped pages by virtual page address.
        var pages: [UInt64: Page] = [:]
        var exited = false
    }
    let mm = Locked(MM())
    struct WeakObserver { weak var observer: (any AddressSpaceObserver)? }
    let observers = Locked<[WeakObserver]>([])
    let exitedFlag = Locked(false)

    /// Creates an empty address space for `pid` with a `levels`-level page table in `memory`.
    /// - Throws: `ENOMEM` without a frame for the root; `EINVAL` unless `levels` is 4 or 5.
    public init(pid: Int32, memory: PhysicalMemory, levels: Int = 4) throws(IOMMUError) {
        guard levels == 4 || levels == 5 else { throw .invalid("4- or 5-level paging") }
        self.pid = pid
        self.memory = memory
        do { pageTable = try X86PageTable(memory: memory, levels: levels) } catch { throw .noMemory("no frame for the page table") }
    }

    deinit { if !hasExited { exit() } }

    // MARK: SharedAddressSpace

    /// The physical address of the PML4 (PML5) table.
    public var pageTableRoot: UInt64 { pageTable.root }
    /// 4 or 5.
    public var pagingLevels: Int { pageTable.levels }
    /// Whether ``exit()`` was called.
    public var hasExited: Bool { exitedFlag.withLock { $0 } }

    /// - Throws: `ESRCH` after ``exit()``.
    public func addObserver(_ observer: any AddressSpaceObserver) throws(IOMMUError) {
        try observers.withLock { (list) throws(IOMMUError) in
            guard !hasExitedUnlocked else { throw .noProcess("the process has exited") }
            list.removeAll { $0.observer == nil }
            list.append(WeakObserver(observer: observer))
        }
    }

    public func removeObserver(_ observer: any AddressSpaceObserver) {
        observers.withLock { $0.removeAll { $0.observer == nil || $0.observer === observer } }
    }

    /// Read under the observers lock (exit sets it under both).
    private var hasExitedUnlocked: Bool { exitedFlag.withLock { $0 } }

    /// Newest first, as the kernel calls mmu notifiers (each is added at the head of the list).
    private func liveObservers() -> [any AddressSpaceObserver] {
        observers.withLock { $0.reversed().compactMap(\.observer) }
    }

    // MARK: System calls

    /// Maps `length` bytes at `address` to fresh zeroed pages with `protection` (mmap with
    /// `MAP_FIXED_NOREPLACE | MAP_ANONYMOUS`). Nothing is invalidated: no IOMMU caches a
    /// not-present translation.
    ///
    /// - Throws: `EINVAL` for a misaligned, empty or non-canonical span; `EEXIST` if a page of it
    ///   is mapped; `ENOMEM` without frames; `ESRCH` after exit.
    public func map(_ address: UInt64, length: UInt64, protection: Protection = .readWrite) throws(IOMMUError) {
        let pages = try span(address, length)
        try mm.withLock { (s) throws(IOMMUError) in
            guard !s.exited else { throw .noProcess("the process has exited") }
            for va in pages where s.pages[va] != nil { throw .exists("already mapped") }
            var made: [UInt64] = []
            for va in pages {
                guard let frame = memory.allocateFrame() else {
                    for v in made { release(&s, v) }
                    throw .noMemory("no frames")
                }
                s.pages[va] = Page(frame: frame, protection: protection)
                made.append(va)
                if protection != .none {
                    do { try pageTable.map(iova: va, physical: frame, size: 0x1000, permissions: Self.permissions(protection)) } catch {
                        for v in made { release(&s, v) }
                        throw .noMemory("no frames for the page table")
                    }
                }
            }
        }
    }

    /// Unmaps every page of `length` bytes at `address` (munmap): clears the leaves, tells the
    /// observers (every cached translation is gone when they return), then frees the pages.
    /// Unmapped parts of the span are ignored, as munmap ignores them.
    ///
    /// - Throws: `EINVAL` for a misaligned, empty or non-canonical span; `ESRCH` after exit.
    public func unmap(_ address: UInt64, length: UInt64) throws(IOMMUError) {
        let pages = try span(address, length)
        try mm.withLock { (s) throws(IOMMUError) in
            guard !s.exited else { throw .noProcess("the process has exited") }
            var freed: [UInt64] = []
            for va in pages {
                guard let p = s.pages.removeValue(forKey: va) else { continue }
                if p.protection != .none { _ = try? pageTable.unmap(iova: va, size: 0x1000) }
                freed.append(p.frame)
            }
            guard !freed.isEmpty else { return }
            // Emptied page-table pages are retired, not freed: a walk in flight may still hold
            // their address until the invalidation below completed.
            let epoch = pageTable.closeRetirementEpoch()
            for o in liveObservers() { o.invalidate(first: address, last: address + length - 1) }
            for f in freed { memory.freeFrame(f) }
            _ = pageTable.reclaimFreedTables(through: epoch)
        }
    }

    /// Changes the protection of every page of `length` bytes at `address` (mprotect): the
    /// leaves are rewritten in place (A and D kept), `.none` clears P; then the observers drop
    /// what they cached.
    ///
    /// - Throws: `ENOMEM` if part of the span is not mapped (nothing changes then); `EINVAL` for
    ///   a misaligned, empty or non-canonical span; `ESRCH` after exit.
    public func protect(_ address: UInt64, length: UInt64, protection: Protection) throws(IOMMUError) {
        let pages = try span(address, length)
        try mm.withLock { (s) throws(IOMMUError) in
            guard !s.exited else { throw .noProcess("the process has exited") }
            for va in pages where s.pages[va] == nil { throw .noMemory("part of the span is not mapped") }
            let bits = pageTable.format.leafEntry(0, level: 1, permissions: Self.permissions(protection), attributes: [])
            for va in pages {
                let old = s.pages[va]!
                s.pages[va]!.protection = protection
                switch (old.protection == .none, protection == .none) {
                case (true, true): continue
                case (false, true): _ = try? pageTable.unmap(iova: va, size: 0x1000)
                case (true, false):
                    do { try pageTable.map(iova: va, physical: old.frame, size: 0x1000, permissions: Self.permissions(protection)) } catch {
                        throw .noMemory("no frames for the page table")
                    }
                case (false, false):
                    guard let leaf = pageTable.entries(for: va).last, leaf.level == 1 else { continue }
                    // Keep A and D, which the walkers set concurrently.
                    var current = memory.read64(leaf.address)
                    while true {
                        let new = old.frame | bits | (current & (X86PTE.accessed | X86PTE.dirty))
                        let r = memory.compareExchange64(leaf.address, expected: current, desired: new)
                        if r.exchanged { break }
                        current = r.original
                    }
                }
            }
            let epoch = pageTable.closeRetirementEpoch()
            for o in liveObservers() { o.invalidate(first: address, last: address + length - 1) }
            _ = pageTable.reclaimFreedTables(through: epoch)
        }
    }

    /// Ends the process: observers are told the address space is released (each stops using the
    /// page table before returning), then every page and table frame is freed. Later calls fail
    /// with `ESRCH`; a second exit does nothing.
    public func exit() {
        let first = mm.withLock { s -> Bool in
            if s.exited { return false }
            s.exited = true
            return true
        }
        guard first else { return }
        let list = observers.withLock { list -> [any AddressSpaceObserver] in
            exitedFlag.withLock { $0 = true }
            defer { list.removeAll() }
            return list.reversed().compactMap(\.observer)
        }
        for o in list { o.released() }
        mm.withLock { s in
            for (va, p) in s.pages {
                if p.protection != .none { _ = try? pageTable.unmap(iova: va, size: 0x1000) }
                memory.freeFrame(p.frame)
            }
            s.pages.removeAll()
        }
        _ = pageTable.reclaimFreedTables()   // no IOMMU walks the table any more
        memory.freeFrame(pageTable.root)
    }

    // MARK: The CPU's view

    /// Reads `count` bytes at `address` as the process would (user mode, through its page table).
    /// - Throws: `EFAULT` where the process would take a segmentation fault; `ESRCH` after exit.
    public func read(_ address: UInt64, count: Int) throws(IOMMUError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try access(address, count: count, write: false) { (physical, offset, n) throws(IOMMUError) in
            let r: Result<Void, PhysicalMemoryError> = out.withUnsafeMutableBytes { b in
                Result { () throws(PhysicalMemoryError) in
                    try memory.read(UnsafeMutableRawBufferPointer(rebasing: b[offset..<(offset + n)]), at: physical)
                }
            }
            if case .failure = r { throw .fault("page not backed") }
        }
        return out
    }

    /// Writes `bytes` at `address` as the process would.
    /// - Throws: `EFAULT` where the process would take a segmentation fault; `ESRCH` after exit.
    public func write(_ bytes: [UInt8], at address: UInt64) throws(IOMMUError) {
        try access(address, count: bytes.count, write: true) { (physical, offset, n) throws(IOMMUError) in
            let r: Result<Void, PhysicalMemoryError> = bytes.withUnsafeBytes { b in
                Result { () throws(PhysicalMemoryError) in
                    try memory.write(UnsafeRawBufferPointer(rebasing: b[offset..<(offset + n)]), at: physical)
                }
            }
            if case .failure = r { throw .fault("page not backed") }
        }
    }

    /// The mappings, ascending: (virtual page, protection).
    public var mappings: [(address: UInt64, protection: Protection)] {
        mm.withLock { s in s.pages.keys.sorted().map { ($0, s.pages[$0]!.protection) } }
    }

    /// The frame behind the page at `address`, if mapped (for tests: where DMA lands).
    public func frame(of address: UInt64) -> UInt64? { mm.withLock { $0.pages[address & ~0xFFF]?.frame } }

    // MARK: Helpers

    private func access(_ address: UInt64, count: Int, write: Bool,
                        _ body: (UInt64, Int, Int) throws(IOMMUError) -> Void) throws(IOMMUError) {
        try mm.withLock { (s) throws(IOMMUError) in
            guard !s.exited else { throw .noProcess("the process has exited") }
            var done = 0
            while done < count {
                let va = address &+ UInt64(done)
                let n = min(count - done, Int(0x1000 - (va & 0xFFF)))
                guard case .success(let t) = pageTable.translate(va, access: PageAccess(write ? .write : .read, user: true)) else {
                    throw .fault("segmentation fault")
                }
                try body(t.physical, done, n)
                done += n
            }
        }
    }

    private func span(_ address: UInt64, _ length: UInt64) throws(IOMMUError) -> StrideTo<UInt64> {
        guard length > 0, address & 0xFFF == 0, length & 0xFFF == 0 else { throw .invalid("span must be page aligned and non-empty") }
        let (end, overflow) = address.addingReportingOverflow(length)
        guard !overflow, pageTable.isCanonical(address), pageTable.isCanonical(end - 1),
              (address >> 63) == ((end - 1) >> 63) else { throw .invalid("span is not canonical") }
        return stride(from: address, to: end, by: 0x1000)
    }

    private func release(_ s: inout MM, _ va: UInt64) {
        guard let p = s.pages.removeValue(forKey: va) else { return }
        if p.protection != .none { _ = try? pageTable.unmap(iova: va, size: 0x1000) }
        memory.freeFrame(p.frame)
    }

    static func permissions(_ p: Protection) -> X86Permissions {
        var x: X86Permissions = [.user]
        if p.contains(.write) { x.insert(.write) }
        if p.contains(.execute) { x.insert(.execute) }
        return x
    }
}
