// x86-64 first-stage paging (Intel SDM Vol. 3A ch. 4; VT-d spec ch. 3.6 "first-stage translation"),
// 4-level and 5-level, with 4 KiB, 2 MiB and 1 GiB pages, written bit-exactly into PhysicalMemory.

/// Bits of an x86-64 paging-structure entry (Intel SDM Vol. 3A §4.5, tables 4-15 … 4-20).
public enum X86PTE {
    /// Present.
    public static let present: UInt64 = 1 << 0
    /// Read/write: writes allowed if set (at every level of the walk).
    public static let writable: UInt64 = 1 << 1
    /// User/supervisor: user-mode accesses allowed if set (at every level of the walk).
    public static let user: UInt64 = 1 << 2
    /// Page-level write-through.
    public static let writeThrough: UInt64 = 1 << 3
    /// Page-level cache disable.
    public static let cacheDisable: UInt64 = 1 << 4
    /// Accessed: set by the walker in every entry it uses.
    public static let accessed: UInt64 = 1 << 5
    /// Dirty: set by the walker in the leaf entry on a write.
    public static let dirty: UInt64 = 1 << 6
    /// Page size: in a PDPTE or PDE, the entry maps a 1 GiB / 2 MiB page.
    public static let pageSize: UInt64 = 1 << 7
    /// PAT bit of a 4 KiB PTE (same position as `pageSize` in the upper levels).
    public static let pat4K: UInt64 = 1 << 7
    /// Global.
    public static let global: UInt64 = 1 << 8
    /// PAT bit of a 2 MiB or 1 GiB leaf.
    public static let patLarge: UInt64 = 1 << 12
    /// Execute-disable (NX).
    public static let noExecute: UInt64 = 1 << 63
    /// Physical-address bits 51:12 (MAXPHYADDR = 52).
    public static let addressMask: UInt64 = 0x000F_FFFF_FFFF_F000
    /// The largest physical address width (bits).
    public static let maxPhysicalAddressBits = 52
}

/// Permissions of a mapping. A present x86 page is always readable.
public struct X86Permissions: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// R/W = 1.
    public static let write = X86Permissions(rawValue: 1 << 0)
    /// U/S = 1.
    public static let user = X86Permissions(rawValue: 1 << 1)
    /// NX = 0.
    public static let execute = X86Permissions(rawValue: 1 << 2)
    /// Readable only, supervisor, no execute.
    public static let readOnly: X86Permissions = []
    /// Everything.
    public static let all: X86Permissions = [.write, .user, .execute]

    public var description: String {
        "r" + (contains(.write) ? "w" : "-") + (contains(.execute) ? "x" : "-") + (contains(.user) ? "u" : "s")
    }
}

/// Memory-type and TLB attributes of a leaf (PWT, PCD, G).
public struct X86PageAttributes: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// PWT.
    public static let writeThrough = X86PageAttributes(rawValue: 1 << 0)
    /// PCD.
    public static let cacheDisable = X86PageAttributes(rawValue: 1 << 1)
    /// G.
    public static let global = X86PageAttributes(rawValue: 1 << 2)
}

/// The page sizes of x86-64 paging.
public enum X86PageSize: UInt64, CaseIterable, Sendable {
    case size4K = 0x1000
    case size2M = 0x20_0000
    case size1G = 0x4000_0000

    /// The size in bytes.
    public var bytes: UInt64 { rawValue }
    /// The paging level whose entry maps this size (1 = PT, 2 = PD, 3 = PDPT).
    public var level: Int {
        switch self { case .size4K: 1; case .size2M: 2; case .size1G: 3 }
    }
}

/// An access to translate.
public struct X86Access: Hashable, Sendable {
    /// What the access does.
    public enum Kind: Hashable, Sendable { case read, write, execute }
    /// Read, write or instruction fetch.
    public var kind: Kind
    /// A user-mode (U/S-checked) access; supervisor accesses are not checked against U/S.
    public var user: Bool
    /// Creates an access.
    public init(_ kind: Kind, user: Bool = false) { self.kind = kind; self.user = user }
    public static let read = X86Access(.read)
    public static let write = X86Access(.write)
    public static let execute = X86Access(.execute)
}

/// Why a translation failed.
public enum X86PageFault: Error, Hashable, Sendable {
    /// The address is not canonical for the paging mode.
    case nonCanonical
    /// The entry at `level` (5…1) was not present.
    case notPresent(level: Int)
    /// A write through a translation whose R/W is 0 at some level.
    case writeToReadOnly
    /// A user access through a translation whose U/S is 0 at some level.
    case userAccessToSupervisor
    /// An instruction fetch from a page with NX = 1 at some level.
    case executeNoExecute
    /// A reserved bit was set (PS in a PML4E/PML5E, or address bits above MAXPHYADDR).
    case reservedBit(level: Int)
}

/// A successful translation.
public struct X86Translation: Hashable, Sendable {
    /// The physical address the IOVA translates to.
    public var physical: UInt64
    /// The effective permissions: W and U are the AND over all levels, NX the OR.
    public var permissions: X86Permissions
    /// The size of the leaf page that mapped the address.
    public var pageSize: X86PageSize
}

/// Errors of map and unmap.
public enum X86PageTableError: Error, Hashable, Sendable {
    /// An address or size is not 4 KiB aligned, or the size is zero.
    case misaligned
    /// The range is not canonical / does not fit the address width of the paging mode.
    case outOfRange
    /// The physical address does not fit in 52 bits.
    case physicalAddressTooLarge
    /// Part of the range is already mapped.
    case alreadyMapped
    /// The frame allocator ran out of frames.
    case outOfMemory
}

/// A dirty leaf reported by ``X86PageTable/readAndClearDirty(iova:size:clear:)``.
public struct X86DirtyRange: Hashable, Sendable {
    /// The IOVA of the whole leaf page.
    public var iova: UInt64
    /// The leaf's size in bytes.
    public var length: UInt64
}

/// A leaf mapping reported by ``X86PageTable/forEachMapping(_:)``.
public struct X86Mapping: Hashable, Sendable {
    public var iova: UInt64
    public var physical: UInt64
    public var pageSize: X86PageSize
    /// The entry's own permissions (intermediate entries created by this table allow everything).
    public var permissions: X86Permissions
    /// The raw leaf entry.
    public var entry: UInt64
}

/// An x86-64 first-stage page table (4- or 5-level) whose paging structures live in
/// ``PhysicalMemory`` frames with bit-exact entries, as read by the CPU or by VT-d first-stage
/// translation.
///
/// Intermediate entries written by this type are P|R/W|U/S (permissions are carried by leaves);
/// the walker nevertheless combines the permissions of every level as hardware does, so tables
/// written by someone else (a guest) are translated correctly.
public final class X86PageTable {
    /// The memory the tables live in.
    public let memory: PhysicalMemory
    /// 4 or 5.
    public let levels: Int
    /// Whether 1 GiB pages are used when a range is suitably aligned (CPUID.80000001H:EDX.Page1GB).
    public let supports1GiB: Bool
    /// The physical address of the top-level table (what CR3 / the PASID entry's FSPTPTR holds).
    public let root: UInt64
    /// The number of paging-structure frames in use, including the root.
    public private(set) var tableFrameCount: Int = 1

    /// The number of IOVA bits translated: 48 for 4-level, 57 for 5-level.
    public var addressBits: Int { 12 + 9 * levels }

    /// Creates an empty table, allocating its root frame from `memory`.
    public init(memory: PhysicalMemory, levels: Int = 4, supports1GiB: Bool = true) throws(X86PageTableError) {
        precondition(levels == 4 || levels == 5, "x86-64 paging has 4 or 5 levels")
        guard let root = memory.allocateFrame() else { throw .outOfMemory }
        self.memory = memory
        self.levels = levels
        self.supports1GiB = supports1GiB
        self.root = root
    }

    // MARK: Geometry

    @inline(__always) static func shift(_ level: Int) -> UInt64 { UInt64(12 + 9 * (level - 1)) }
    @inline(__always) static func span(_ level: Int) -> UInt64 { 1 << shift(level) }
    @inline(__always) static func index(_ iova: UInt64, _ level: Int) -> UInt64 { (iova >> shift(level)) & 511 }

    /// Whether `iova` is canonical: bits 63 … addressBits-1 are all equal.
    public func isCanonical(_ iova: UInt64) -> Bool {
        let top = Int64(bitPattern: iova) >> (addressBits - 1)
        return top == 0 || top == -1
    }

    private func checkRange(_ iova: UInt64, _ size: UInt64) throws(X86PageTableError) {
        guard size > 0, iova & 0xFFF == 0, size & 0xFFF == 0 else { throw .misaligned }
        let (end, overflow) = iova.addingReportingOverflow(size - 1)
        guard !overflow, isCanonical(iova), isCanonical(end) else { throw .outOfRange }
        // Both ends canonical but in different halves means the range crosses the hole.
        guard (iova >> 63) == (end >> 63) else { throw .outOfRange }
    }

    private static func leafBits(_ permissions: X86Permissions, _ attributes: X86PageAttributes, large: Bool) -> UInt64 {
        var bits = X86PTE.present
        if permissions.contains(.write) { bits |= X86PTE.writable }
        if permissions.contains(.user) { bits |= X86PTE.user }
        if !permissions.contains(.execute) { bits |= X86PTE.noExecute }
        if attributes.contains(.writeThrough) { bits |= X86PTE.writeThrough }
        if attributes.contains(.cacheDisable) { bits |= X86PTE.cacheDisable }
        if attributes.contains(.global) { bits |= X86PTE.global }
        if large { bits |= X86PTE.pageSize }
        return bits
    }

    private static func permissions(of entry: UInt64) -> X86Permissions {
        var p: X86Permissions = []
        if entry & X86PTE.writable != 0 { p.insert(.write) }
        if entry & X86PTE.user != 0 { p.insert(.user) }
        if entry & X86PTE.noExecute == 0 { p.insert(.execute) }
        return p
    }

    private static let tableBits = X86PTE.present | X86PTE.writable | X86PTE.user

    @inline(__always) private func isLeaf(_ entry: UInt64, _ level: Int) -> Bool {
        level == 1 || ((level == 2 || level == 3) && entry & X86PTE.pageSize != 0)
    }

    /// The address mask of a leaf at `level`.
    private static func leafAddressMask(_ level: Int) -> UInt64 {
        X86PTE.addressMask & ~(span(level) - 1)
    }

    // MARK: Map

    /// Maps `[iova, iova + size)` to `[physical, physical + size)` with `permissions`.
    ///
    /// Uses 1 GiB and 2 MiB pages wherever IOVA, physical address and remaining length allow,
    /// 4 KiB pages elsewhere. Fails without changing anything if any page of the range is mapped.
    public func map(iova: UInt64, physical: UInt64, size: UInt64, permissions: X86Permissions,
                    attributes: X86PageAttributes = []) throws(X86PageTableError) {
        try checkRange(iova, size)
        guard physical & 0xFFF == 0 else { throw .misaligned }
        let (physEnd, overflow) = physical.addingReportingOverflow(size - 1)
        guard !overflow, physEnd >> X86PTE.maxPhysicalAddressBits == 0 else { throw .physicalAddressTooLarge }
        guard !isAnyMapped(iova: iova, size: size) else { throw .alreadyMapped }
        var offset: UInt64 = 0
        while offset < size {
            let va = iova &+ offset, pa = physical + offset, remaining = size - offset
            var page = X86PageSize.size4K
            for candidate in [X86PageSize.size1G, .size2M] where candidate != .size1G || supports1GiB {
                if va % candidate.bytes == 0, pa % candidate.bytes == 0, remaining >= candidate.bytes {
                    page = candidate; break
                }
            }
            let slot = try entryAddress(for: va, level: page.level, create: true)!
            memory.write64(slot, pa | Self.leafBits(permissions, attributes, large: page != .size4K))
            offset += page.bytes
        }
    }

    /// The address of the entry for `iova` at `level`, creating intermediate tables if `create`.
    /// Returns nil if a table on the way is absent and `create` is false. Must not meet a leaf above `level`.
    private func entryAddress(for iova: UInt64, level target: Int, create: Bool) throws(X86PageTableError) -> UInt64? {
        var table = root
        var level = levels
        while true {
            let slot = table + Self.index(iova, level) * 8
            if level == target { return slot }
            let entry = memory.read64(slot)
            if entry & X86PTE.present == 0 {
                guard create else { return nil }
                guard let frame = memory.allocateFrame() else { throw .outOfMemory }
                tableFrameCount += 1
                memory.write64(slot, frame | Self.tableBits)
                table = frame
            } else {
                precondition(!isLeaf(entry, level), "unexpected leaf above target level")
                table = entry & X86PTE.addressMask
            }
            level -= 1
        }
    }

    /// Whether any page of `[iova, iova + size)` is mapped.
    public func isAnyMapped(iova: UInt64, size: UInt64) -> Bool {
        anyMapped(table: root, level: levels, base: 0, start: iova, end: iova &+ size)
    }

    private static func vaMask(_ levels: Int) -> UInt64 { (1 << UInt64(12 + 9 * levels)) - 1 }

    /// Recursive range check. `base` is the IOVA (low addressBits only) of entry 0 of `table`.
    private func anyMapped(table: UInt64, level: Int, base: UInt64, start: UInt64, end: UInt64) -> Bool {
        let mask = Self.vaMask(levels)
        let s = start & mask, e = (end &- 1) & mask  // inclusive, within the translated bits
        let span = Self.span(level)
        let first = max(s, base), last = min(e, base + span * 512 - 1)
        if first > last { return false }
        var i = (first - base) / span
        let lastIndex = (last - base) / span
        while i <= lastIndex {
            let entry = memory.read64(table + i * 8)
            if entry & X86PTE.present != 0 {
                if isLeaf(entry, level) { return true }
                if anyMapped(table: entry & X86PTE.addressMask, level: level - 1, base: base + i * span,
                             start: start, end: end) { return true }
            }
            i += 1
        }
        return false
    }

    // MARK: Unmap

    /// Unmaps every page in `[iova, iova + size)`, splitting 2 MiB / 1 GiB leaves that the range
    /// covers only partly (the rest of such a leaf stays mapped with the same bits). Frees
    /// paging-structure frames that become empty. Returns the number of bytes that were mapped.
    @discardableResult
    public func unmap(iova: UInt64, size: UInt64) throws(X86PageTableError) -> UInt64 {
        try checkRange(iova, size)
        let mask = Self.vaMask(levels)
        return try unmapRange(table: root, level: levels, base: 0, first: iova & mask, last: (iova + size - 1) & mask)
    }

    /// `first`/`last` are inclusive, masked to the translated bits.
    private func unmapRange(table: UInt64, level: Int, base: UInt64, first f: UInt64, last l: UInt64) throws(X86PageTableError) -> UInt64 {
        let span = Self.span(level)
        let first = max(f, base), last = min(l, base + span * 512 - 1)
        if first > last { return 0 }
        var removed: UInt64 = 0
        var i = (first - base) / span
        let lastIndex = (last - base) / span
        while i <= lastIndex {
            let slot = table + i * 8
            var entry = memory.read64(slot)
            let entryBase = base + i * span
            if entry & X86PTE.present != 0 {
                let covered = first <= entryBase && entryBase + span - 1 <= last
                if isLeaf(entry, level) {
                    if covered {
                        memory.write64(slot, 0)
                        removed += span
                        i += 1
                        continue
                    }
                    try split(slot: slot, level: level)
                    entry = memory.read64(slot)
                }
                let child = entry & X86PTE.addressMask
                removed += try unmapRange(table: child, level: level - 1, base: entryBase, first: first, last: last)
                if isEmpty(child) {
                    memory.write64(slot, 0)
                    memory.freeFrame(child)
                    tableFrameCount -= 1
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

    /// Replaces the large leaf at `slot` (level 2 or 3) by a table of 512 leaves one level down
    /// with the same permissions, attributes and A/D bits.
    private func split(slot: UInt64, level: Int) throws(X86PageTableError) {
        let entry = memory.read64(slot)
        guard let frame = memory.allocateFrame() else { throw .outOfMemory }
        tableFrameCount += 1
        let physical = entry & Self.leafAddressMask(level)
        let pat = entry & X86PTE.patLarge != 0
        var bits = entry & ~X86PTE.addressMask & ~X86PTE.patLarge  // flags incl. PS, NX
        let childSpan = Self.span(level - 1)
        if level - 1 == 1 {
            bits &= ~X86PTE.pageSize  // PS position is PAT in a PTE
            if pat { bits |= X86PTE.pat4K }
        } else if pat {
            bits |= X86PTE.patLarge
        }
        for i in 0..<UInt64(512) {
            memory.write64(frame + i * 8, (physical + i * childSpan) | bits)
        }
        // The new table entry: the leaf's permissions live in the children now; keep A.
        memory.write64(slot, frame | Self.tableBits | (entry & X86PTE.accessed))
    }

    // MARK: Walk

    /// Translates `iova` for `access`, walking the tables as hardware does.
    ///
    /// W and U/S must be allowed at every level, NX at any level forbids execution. On success
    /// (and only then), with `setAccessedDirty`, the walker sets A in every entry it used and,
    /// for a write, D in the leaf — as the CPU and VT-d first-stage translation do.
    public func translate(_ iova: UInt64, access: X86Access = .read, setAccessedDirty: Bool = true) -> Result<X86Translation, X86PageFault> {
        guard isCanonical(iova) else { return .failure(.nonCanonical) }
        var table = root
        var level = levels
        var write = true, user = true, noExecute = false
        // Slots used, top-down; at most 5. A tuple avoids a per-call allocation.
        var slots: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
        var used = 0
        while true {
            let slot = table + Self.index(iova, level) * 8
            let entry = memory.read64(slot)
            guard entry & X86PTE.present != 0 else { return .failure(.notPresent(level: level)) }
            if entry >> X86PTE.maxPhysicalAddressBits & 0x7FF != 0 { return .failure(.reservedBit(level: level)) }
            if level >= 4 && entry & X86PTE.pageSize != 0 { return .failure(.reservedBit(level: level)) }
            withUnsafeMutableBytes(of: &slots) { $0.storeBytes(of: slot, toByteOffset: used * 8, as: UInt64.self) }
            used += 1
            write = write && entry & X86PTE.writable != 0
            user = user && entry & X86PTE.user != 0
            noExecute = noExecute || entry & X86PTE.noExecute != 0
            if isLeaf(entry, level) {
                switch access.kind {
                case .write where !write: return .failure(.writeToReadOnly)
                case .execute where noExecute: return .failure(.executeNoExecute)
                default: break
                }
                if access.user && !user { return .failure(.userAccessToSupervisor) }
                if setAccessedDirty {
                    withUnsafeBytes(of: &slots) { raw in
                        for k in 0..<used {
                            let s = raw.load(fromByteOffset: k * 8, as: UInt64.self)
                            let isLast = k == used - 1
                            memory.or64(s, X86PTE.accessed | (isLast && access.kind == .write ? X86PTE.dirty : 0))
                        }
                    }
                }
                let size: X86PageSize = level == 1 ? .size4K : level == 2 ? .size2M : .size1G
                let physical = (entry & Self.leafAddressMask(level)) | (iova & (size.bytes - 1))
                var perms: X86Permissions = []
                if write { perms.insert(.write) }
                if user { perms.insert(.user) }
                if !noExecute { perms.insert(.execute) }
                return .success(X86Translation(physical: physical, permissions: perms, pageSize: size))
            }
            table = entry & X86PTE.addressMask
            level -= 1
        }
    }

    /// The raw entries of the walk for `iova`, top-down, ending at the leaf or the first
    /// non-present entry. For inspection and tests; sets no bits.
    public func entries(for iova: UInt64) -> [(level: Int, address: UInt64, value: UInt64)] {
        var result: [(level: Int, address: UInt64, value: UInt64)] = []
        var table = root
        var level = levels
        while level >= 1 {
            let slot = table + Self.index(iova, level) * 8
            let entry = memory.read64(slot)
            result.append((level, slot, entry))
            if entry & X86PTE.present == 0 || isLeaf(entry, level) { break }
            table = entry & X86PTE.addressMask
            level -= 1
        }
        return result
    }

    // MARK: Enumeration and dirty tracking

    /// Calls `body` for every leaf, in IOVA order (IOVAs sign-extended to canonical form).
    public func forEachMapping(_ body: (X86Mapping) -> Void) {
        visitLeaves(table: root, level: levels, base: 0, first: 0, last: Self.vaMask(levels)) { slot, entry, level, va in
            let size: X86PageSize = level == 1 ? .size4K : level == 2 ? .size2M : .size1G
            body(X86Mapping(iova: va, physical: entry & Self.leafAddressMask(level), pageSize: size,
                            permissions: Self.permissions(of: entry), entry: entry))
        }
    }

    private func canonical(_ va: UInt64) -> UInt64 {
        let shift = UInt64(64 - addressBits)
        return UInt64(bitPattern: Int64(bitPattern: va << shift) >> shift)
    }

    private func visitLeaves(table: UInt64, level: Int, base: UInt64, first f: UInt64, last l: UInt64,
                             _ body: (UInt64, UInt64, Int, UInt64) -> Void) {
        let span = Self.span(level)
        let first = max(f, base), last = min(l, base + span * 512 - 1)
        if first > last { return }
        var i = (first - base) / span
        let lastIndex = (last - base) / span
        while i <= lastIndex {
            let slot = table + i * 8
            let entry = memory.read64(slot)
            if entry & X86PTE.present != 0 {
                if isLeaf(entry, level) {
                    body(slot, entry, level, canonical(base + i * span))
                } else {
                    visitLeaves(table: entry & X86PTE.addressMask, level: level - 1, base: base + i * span,
                                first: first, last: last, body)
                }
            }
            i += 1
        }
    }

    /// Reports every leaf intersecting `[iova, iova + size)` whose D bit is set, as the whole
    /// leaf's range, and (if `clear`) clears D in those leaves — the IOMMU dirty-tracking
    /// read-and-clear. The caller must invalidate cached translations afterwards.
    public func readAndClearDirty(iova: UInt64, size: UInt64, clear: Bool = true) throws(X86PageTableError) -> [X86DirtyRange] {
        try checkRange(iova, size)
        let mask = Self.vaMask(levels)
        var result: [X86DirtyRange] = []
        visitLeaves(table: root, level: levels, base: 0, first: iova & mask, last: (iova + size - 1) & mask) { slot, entry, level, va in
            guard entry & X86PTE.dirty != 0 else { return }
            result.append(X86DirtyRange(iova: va, length: Self.span(level)))
            if clear { memory.write64(slot, entry & ~X86PTE.dirty) }
        }
        return result
    }
}
