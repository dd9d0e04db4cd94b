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
    /// The raw bits (not the entry's bits).
    public let rawValue: UInt8
    /// Creates permissions from raw bits.
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

    /// `rwxu` style: `r`, then `w`, `x` or `-`, then `u` (user) or `s` (supervisor).
    public var description: String {
        "r" + (contains(.write) ? "w" : "-") + (contains(.execute) ? "x" : "-") + (contains(.user) ? "u" : "s")
    }
}

/// Memory-type and TLB attributes of a leaf (PWT, PCD, G).
public struct X86PageAttributes: OptionSet, Hashable, Sendable {
    /// The raw bits (not the entry's bits).
    public let rawValue: UInt8
    /// Creates attributes from raw bits.
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
    /// 4 KiB, mapped by a PTE.
    case size4K = 0x1000
    /// 2 MiB, mapped by a PDE with PS = 1.
    case size2M = 0x20_0000
    /// 1 GiB, mapped by a PDPTE with PS = 1.
    case size1G = 0x4000_0000

    /// The size in bytes.
    public var bytes: UInt64 { rawValue }
    /// The paging level whose entry maps this size (1 = PT, 2 = PD, 3 = PDPT).
    public var level: Int {
        switch self { case .size4K: 1; case .size2M: 2; case .size1G: 3 }
    }
}

/// An access to translate (the shared ``PageAccess``: read, write or execute, user or supervisor).
public typealias X86Access = PageAccess

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
    /// A reserved bit was set (PS in a PML4E/PML5E, address bits above MAXPHYADDR, or address
    /// bits below a large page's alignment).
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

    /// Creates a translation.
    public init(physical: UInt64, permissions: X86Permissions, pageSize: X86PageSize) {
        self.physical = physical
        self.permissions = permissions
        self.pageSize = pageSize
    }
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

    /// Creates a range.
    public init(iova: UInt64, length: UInt64) {
        self.iova = iova
        self.length = length
    }
}

/// A leaf mapping reported by ``X86PageTable/forEachMapping(_:)``.
public struct X86Mapping: Hashable, Sendable {
    /// The canonical IOVA of the whole leaf.
    public var iova: UInt64
    /// The physical address of the whole leaf.
    public var physical: UInt64
    /// The leaf's size.
    public var pageSize: X86PageSize
    /// The entry's own permissions (intermediate entries created by this table allow everything).
    public var permissions: X86Permissions
    /// The raw leaf entry.
    public var entry: UInt64

    /// Creates a mapping record.
    public init(iova: UInt64, physical: UInt64, pageSize: X86PageSize, permissions: X86Permissions, entry: UInt64) {
        self.iova = iova
        self.physical = physical
        self.pageSize = pageSize
        self.permissions = permissions
        self.entry = entry
    }
}

// MARK: - The format

/// The x86-64 first-stage paging format (Intel SDM Vol. 3A §4.5; VT-d first-stage translation),
/// 4- or 5-level, for the generic ``PageTable`` engine.
///
/// Entries: P bit 0, R/W 1, U/S 2, PWT 3, PCD 4, A 5, D 6 (leaves), PS 7 (PDPTE / PDE leaves;
/// PAT in a PTE), G 8 (leaves), PAT 12 (large leaves), address 51:12, XD 63. Bits 62:52 are
/// ignored (software-available / protection keys). Reserved: address bits 51:MAXPHYADDR, PS in a
/// PML5E / PML4E, PS in a PDPTE without 1 GiB support, and the address bits below a large page's
/// alignment (20:13, 29:13). The walker models CR0.WP = 1 and EFER.NXE = 1; SMEP, SMAP and
/// protection keys are not modelled.
public struct X86FirstStageFormat: PageTableFormat {
    /// Leaf permissions: R/W, U/S and the absence of XD.
    public typealias Permissions = X86Permissions
    /// Leaf attributes: PWT, PCD, G.
    public typealias Attributes = X86PageAttributes

    /// What a walk accumulates: W and U/S are ANDed over the levels, XD ORed.
    public struct WalkState: Sendable {
        /// R/W = 1 in every table entry so far.
        public var write = true
        /// U/S = 1 in every table entry so far.
        public var user = true
        /// XD = 1 in some table entry so far.
        public var noExecute = false
        /// The state before the root entry.
        public init() {}
    }

    /// 4 or 5.
    public let levels: Int
    /// Whether a PDPTE may map a 1 GiB page (CPUID.80000001H:EDX.Page1GB). Without it, PS in a
    /// PDPTE is a reserved bit and `map` uses 2 MiB pages at most.
    public let supports1GiB: Bool
    /// MAXPHYADDR: the physical-address width (at most 52).
    public let physicalAddressBits: Int

    /// Creates a format.
    public init(levels: Int = 4, supports1GiB: Bool = true, physicalAddressBits: Int = X86PTE.maxPhysicalAddressBits) {
        precondition(levels == 4 || levels == 5, "x86-64 paging has 4 or 5 levels")
        precondition((32...52).contains(physicalAddressBits), "MAXPHYADDR is 32 … 52")
        self.levels = levels
        self.supports1GiB = supports1GiB
        self.physicalAddressBits = physicalAddressBits
    }

    /// The entry bits of a table entry written by ``PageTable``: P, R/W, U/S.
    public static let tableBits = X86PTE.present | X86PTE.writable | X86PTE.user

    /// The root's level, `levels`.
    @inlinable public var topLevel: Int { levels }
    /// 48 for 4-level paging, 57 for 5-level.
    @inlinable public var inputAddressBits: Int { 12 &+ 9 &* levels }
    /// MAXPHYADDR.
    @inlinable public var outputAddressBits: Int { physicalAddressBits }
    /// No PWT, PCD or G.
    @inlinable public var defaultAttributes: X86PageAttributes { [] }
    /// x86 numbers levels as the engine does (PT = 1 … PML5 = 5).
    @inlinable public func architecturalLevel(_ level: Int) -> Int { level }

    /// 4 KiB and 2 MiB always, 1 GiB with ``supports1GiB``.
    @inlinable
    public func mayMapLeaf(atLevel level: Int) -> Bool {
        level == 1 || level == 2 || (level == 3 && supports1GiB)
    }

    /// Whether bits 63 … inputAddressBits-1 of `input` are all equal.
    @inlinable @inline(__always)
    public func isCanonical(_ input: UInt64) -> Bool {
        let top = Int64(bitPattern: input) &>> (inputAddressBits &- 1)  // 47 or 56
        return top == 0 || top == -1
    }

    /// A non-canonical address faults (the CPU raises #GP, VT-d reports a non-canonical fault);
    /// reported as an address-size fault at the root level.
    @inlinable @inline(__always)
    public func inputFault(_ input: UInt64) -> PageTableFault? {
        isCanonical(input) ? nil : PageTableFault(.addressSize, level: levels)
    }

    /// Both ends canonical and in the same half of the address space.
    public func isValidInputRange(first: UInt64, last: UInt64) -> Bool {
        isCanonical(first) && isCanonical(last) && first >> 63 == last >> 63
    }

    /// Sign-extends from bit inputAddressBits-1 (the canonical form).
    public func externalInput(_ masked: UInt64) -> UInt64 {
        let shift = UInt64(64 - inputAddressBits)
        return UInt64(bitPattern: Int64(bitPattern: masked << shift) >> shift)
    }

    /// Every combination is encodable (a present page is always readable).
    public func validate(_ permissions: X86Permissions) -> PageTableError? { nil }

    /// `table | P | R/W | U/S`.
    public func tableEntry(_ table: UInt64, level: Int) -> UInt64 { table | Self.tableBits }

    /// P, R/W, U/S, XD from `permissions`; PWT, PCD, G from `attributes`; PS above level 1.
    public func leafEntry(_ output: UInt64, level: Int, permissions: X86Permissions, attributes: X86PageAttributes) -> UInt64 {
        var bits = X86PTE.present
        if permissions.contains(.write) { bits |= X86PTE.writable }
        if permissions.contains(.user) { bits |= X86PTE.user }
        if !permissions.contains(.execute) { bits |= X86PTE.noExecute }
        if attributes.contains(.writeThrough) { bits |= X86PTE.writeThrough }
        if attributes.contains(.cacheDisable) { bits |= X86PTE.cacheDisable }
        if attributes.contains(.global) { bits |= X86PTE.global }
        if level > 1 { bits |= X86PTE.pageSize }
        return output | bits
    }

    @inlinable @inline(__always)
    func isLeaf(_ entry: UInt64, _ level: Int) -> Bool {
        level == 1 || ((level == 2 || level == 3) && entry & X86PTE.pageSize != 0)
    }

    /// Invalid if P = 0; a leaf at level 1 or with PS at levels 2–3; otherwise a table.
    public func kind(of entry: UInt64, level: Int) -> PageTableEntryKind {
        entry & X86PTE.present == 0 ? .invalid : isLeaf(entry, level) ? .leaf : .table
    }

    /// Bits 51:12.
    public func tableAddress(_ entry: UInt64, level: Int) -> UInt64 { entry & X86PTE.addressMask }

    /// Bits 51:12 above the page's alignment (so PAT, bit 12, is not part of a large page's address).
    public func leafAddress(_ entry: UInt64, level: Int) -> UInt64 {
        entry & X86PTE.addressMask & ~(Radix.span(level) - 1)
    }

    /// R/W, U/S and XD of the leaf alone.
    public func permissions(ofLeaf entry: UInt64, level: Int) -> X86Permissions {
        var p: X86Permissions = []
        if entry & X86PTE.writable != 0 { p.insert(.write) }
        if entry & X86PTE.user != 0 { p.insert(.user) }
        if entry & X86PTE.noExecute == 0 { p.insert(.execute) }
        return p
    }

    /// PWT, PCD and G of the leaf.
    public func attributes(ofLeaf entry: UInt64, level: Int) -> X86PageAttributes {
        var a: X86PageAttributes = []
        if entry & X86PTE.writeThrough != 0 { a.insert(.writeThrough) }
        if entry & X86PTE.cacheDisable != 0 { a.insert(.cacheDisable) }
        if entry & X86PTE.global != 0 { a.insert(.global) }
        return a
    }

    /// The leaf's flags (including A, D and XD); PS is dropped when the children are PTEs, where
    /// bit 7 is PAT, and the PAT bit moves between bit 12 (large) and bit 7 (PTE).
    public func splitChildBits(_ entry: UInt64, level: Int) -> UInt64 {
        let pat = entry & X86PTE.patLarge != 0
        var bits = entry & ~X86PTE.addressMask
        if level - 1 == 1 {
            bits &= ~X86PTE.pageSize
            if pat { bits |= X86PTE.pat4K }
        } else if pat {
            bits |= X86PTE.patLarge
        }
        return bits
    }

    /// `table | P | R/W | U/S`, keeping the leaf's A.
    public func tableEntry(replacingLeaf entry: UInt64, table: UInt64, level: Int) -> UInt64 {
        table | Self.tableBits | (entry & X86PTE.accessed)
    }

    /// Everything allowed so far.
    @inlinable public var initialWalkState: WalkState { WalkState() }

    /// Address bits 51:MAXPHYADDR (reserved when MAXPHYADDR < 52).
    @inlinable @inline(__always) var reservedAddressBits: UInt64 {
        X86PTE.addressMask & ~Radix.mask(bits: physicalAddressBits)
    }

    /// P = 0 is a translation fault; then the reserved-bit checks; a table entry's R/W, U/S and
    /// XD limit the levels below it.
    @inlinable @inline(__always)
    public func walkStep(_ entry: UInt64, level: Int, state: inout WalkState) -> PageTableWalkStep {
        guard entry & X86PTE.present != 0 else { return .fault(.translation) }
        if entry & reservedAddressBits != 0 { return .fault(.reservedBit) }
        let ps = entry & X86PTE.pageSize != 0
        if ps && (level >= 4 || (level == 3 && !supports1GiB)) { return .fault(.reservedBit) }
        if level == 1 || ps {
            let span = Radix.span(level)
            // A large page's address bits below its alignment, above PAT (bit 12), are reserved.
            if level > 1 && entry & (span - 1) & ~UInt64(0x1FFF) != 0 { return .fault(.reservedBit) }
            return .leaf(entry & X86PTE.addressMask & ~(span - 1))
        }
        state.write = state.write && entry & X86PTE.writable != 0
        state.user = state.user && entry & X86PTE.user != 0
        state.noExecute = state.noExecute || entry & X86PTE.noExecute != 0
        return .table(entry & X86PTE.addressMask)
    }

    /// W and U/S must be allowed at every level, XD at any level forbids execution (checked in
    /// that order: write, execute, user). A successful access sets A in the leaf, and D for a write.
    @inlinable @inline(__always)
    public func checkLeaf(_ entry: UInt64, level: Int, state: WalkState, access: PageAccess) -> PageTableLeafCheck {
        let write = state.write && entry & X86PTE.writable != 0
        let user = state.user && entry & X86PTE.user != 0
        let noExecute = state.noExecute || entry & X86PTE.noExecute != 0
        switch access.kind {
        case .write where !write: return .fault(.permission(.write))
        case .execute where noExecute: return .fault(.permission(.execute))
        default: break
        }
        if access.user && !user { return .fault(.permission(.privilege)) }
        var rights: AccessRights = .read
        if write { rights.insert(.write) }
        if !noExecute { rights.insert(.execute) }
        if user {
            rights.insert(.userRead)
            if write { rights.insert(.userWrite) }
            if !noExecute { rights.insert(.userExecute) }
        }
        let updated = entry | X86PTE.accessed | (access.kind == .write ? X86PTE.dirty : 0)
        return .allowed(rights, updatedLeaf: updated)
    }

    /// Sets A.
    @inlinable @inline(__always)
    public func updatedTableEntry(_ entry: UInt64, level: Int) -> UInt64 { entry | X86PTE.accessed }

    /// D = 1.
    public func isDirty(leaf entry: UInt64, level: Int) -> Bool { entry & X86PTE.dirty != 0 }
    /// Clears D.
    public func cleaned(leaf entry: UInt64, level: Int) -> UInt64 { entry & ~X86PTE.dirty }
}

// MARK: - The table

/// An x86-64 first-stage page table (4- or 5-level) whose paging structures live in
/// ``PhysicalMemory`` frames with bit-exact entries, as read by the CPU or by VT-d first-stage
/// translation: ``PageTable`` with ``X86FirstStageFormat`` behind x86-specific result types.
///
/// Intermediate entries written by this type are P|R/W|U/S (permissions are carried by leaves);
/// the walker nevertheless combines the permissions of every level as hardware does, so tables
/// written by someone else (a guest) are translated correctly.
public final class X86PageTable {
    /// The generic table this type presents.
    public let pageTable: PageTable<X86FirstStageFormat>

    /// The memory the tables live in.
    public var memory: PhysicalMemory { pageTable.memory }
    /// The format (levels, 1 GiB support, MAXPHYADDR).
    public var format: X86FirstStageFormat { pageTable.format }
    /// 4 or 5.
    public var levels: Int { pageTable.format.levels }
    /// Whether 1 GiB pages are used when a range is suitably aligned (CPUID.80000001H:EDX.Page1GB).
    public var supports1GiB: Bool { pageTable.format.supports1GiB }
    /// The physical address of the top-level table (what CR3 / the PASID entry's FSPTPTR holds).
    public var root: UInt64 { pageTable.root }
    /// The number of paging-structure frames in use, including the root.
    public var tableFrameCount: Int { pageTable.tableFrameCount }
    /// Paging-structure frames unmap unlinked and not yet returned to memory; see
    /// ``PageTable`` ("Concurrency") and ``reclaimFreedTables(through:)``.
    public var retiredTableFrameCount: Int { pageTable.retiredTableFrameCount }
    /// The number of IOVA bits translated: 48 for 4-level, 57 for 5-level.
    public var addressBits: Int { pageTable.format.inputAddressBits }

    /// Creates an empty table, allocating its root frame from `memory`.
    public init(memory: PhysicalMemory, levels: Int = 4, supports1GiB: Bool = true) throws(X86PageTableError) {
        let format = X86FirstStageFormat(levels: levels, supports1GiB: supports1GiB)
        do {
            pageTable = try PageTable(memory: memory, format: format)
        } catch {
            throw Self.x86Error(error)
        }
    }

    private static func x86Error(_ error: PageTableError) -> X86PageTableError {
        switch error {
        case .misaligned: .misaligned
        case .outOfRange: .outOfRange
        case .physicalAddressTooLarge: .physicalAddressTooLarge
        case .alreadyMapped: .alreadyMapped
        case .outOfMemory: .outOfMemory
        // The x86 format encodes every permission and has no unsupported configuration.
        case .unsupportedPermissions, .unsupportedConfiguration: preconditionFailure("not an x86 page-table error: \(error)")
        }
    }

    /// Whether `iova` is canonical: bits 63 … addressBits-1 are all equal.
    public func isCanonical(_ iova: UInt64) -> Bool { format.isCanonical(iova) }

    /// Maps `[iova, iova + size)` to `[physical, physical + size)` with `permissions`.
    ///
    /// Uses 1 GiB and 2 MiB pages wherever IOVA, physical address and remaining length allow,
    /// 4 KiB pages elsewhere. Fails without changing anything if any page of the range is mapped.
    public func map(iova: UInt64, physical: UInt64, size: UInt64, permissions: X86Permissions,
                    attributes: X86PageAttributes = []) throws(X86PageTableError) {
        do {
            try pageTable.map(iova: iova, physical: physical, size: size, permissions: permissions, attributes: attributes)
        } catch {
            throw Self.x86Error(error)
        }
    }

    /// Whether any page of `[iova, iova + size)` is mapped.
    public func isAnyMapped(iova: UInt64, size: UInt64) -> Bool {
        pageTable.isAnyMapped(iova: iova, size: size)
    }

    /// Unmaps every page in `[iova, iova + size)`, splitting 2 MiB / 1 GiB leaves that the range
    /// covers only partly (the rest of such a leaf stays mapped with the same bits). Unlinks
    /// paging-structure frames that become empty and retires them (freed by
    /// ``reclaimFreedTables(through:)``). Returns the number of bytes that were mapped.
    @discardableResult
    public func unmap(iova: UInt64, size: UInt64) throws(X86PageTableError) -> UInt64 {
        do {
            return try pageTable.unmap(iova: iova, size: size)
        } catch {
            throw Self.x86Error(error)
        }
    }

    /// Ends the current retirement epoch; see ``PageTable/closeRetirementEpoch()``.
    public func closeRetirementEpoch() -> UInt64 { pageTable.closeRetirementEpoch() }

    /// Frees the paging-structure frames retired up to `epoch`, once the invalidation covering
    /// them completed; see ``PageTable/reclaimFreedTables(through:)``.
    @discardableResult
    public func reclaimFreedTables(through epoch: UInt64) -> Int { pageTable.reclaimFreedTables(through: epoch) }

    /// Frees every retired paging-structure frame; see ``PageTable/reclaimFreedTables()``.
    @discardableResult
    public func reclaimFreedTables() -> Int { pageTable.reclaimFreedTables() }

    /// Translates `iova` for `access`, walking the tables as hardware does.
    ///
    /// W and U/S must be allowed at every level, NX at any level forbids execution. On success
    /// (and only then), with `setAccessedDirty`, the walker sets A in every entry it used and,
    /// for a write, D in the leaf — as the CPU and VT-d first-stage translation do.
    @inlinable
    public func translate(_ iova: UInt64, access: X86Access = .read, setAccessedDirty: Bool = true) -> Result<X86Translation, X86PageFault> {
        switch pageTable.translate(iova, access: access, updateAccessedDirty: setAccessedDirty) {
        case .success(let t):
            var permissions: X86Permissions = []
            if t.rights.contains(.write) { permissions.insert(.write) }
            if t.rights.contains(.userRead) { permissions.insert(.user) }
            if t.rights.contains(.execute) { permissions.insert(.execute) }
            let size: X86PageSize = t.pageSize == X86PageSize.size1G.bytes ? .size1G
                : t.pageSize == X86PageSize.size2M.bytes ? .size2M : .size4K
            return .success(X86Translation(physical: t.output, permissions: permissions, pageSize: size))
        case .failure(let f):
            switch f.reason {
            case .translation, .accessFlag: return .failure(.notPresent(level: f.level))
            case .addressSize: return .failure(.nonCanonical)
            case .reservedBit: return .failure(.reservedBit(level: f.level))
            case .permission(.write), .permission(.read): return .failure(.writeToReadOnly)
            case .permission(.execute): return .failure(.executeNoExecute)
            case .permission(.privilege): return .failure(.userAccessToSupervisor)
            }
        }
    }

    /// The raw entries of the walk for `iova`, top-down, ending at the leaf or the first
    /// non-present entry. For inspection and tests; sets no bits.
    public func entries(for iova: UInt64) -> [(level: Int, address: UInt64, value: UInt64)] {
        pageTable.entries(for: iova).map { ($0.level, $0.address, $0.value) }
    }

    /// Calls `body` for every leaf, in IOVA order (IOVAs sign-extended to canonical form).
    public func forEachMapping(_ body: (X86Mapping) -> Void) {
        pageTable.forEachMapping { m in
            let size: X86PageSize = m.level == 1 ? .size4K : m.level == 2 ? .size2M : .size1G
            body(X86Mapping(iova: m.iova, physical: m.physical, pageSize: size, permissions: m.permissions, entry: m.entry))
        }
    }

    /// Reports every leaf intersecting `[iova, iova + size)` whose D bit is set, as the whole
    /// leaf's range, and (if `clear`) clears D in those leaves — the IOMMU dirty-tracking
    /// read-and-clear. The caller must invalidate cached translations afterwards.
    public func readAndClearDirty(iova: UInt64, size: UInt64, clear: Bool = true) throws(X86PageTableError) -> [X86DirtyRange] {
        do {
            return try pageTable.readAndClearDirty(iova: iova, size: size, clear: clear)
                .map { X86DirtyRange(iova: $0.iova, length: $0.length) }
        } catch {
            throw Self.x86Error(error)
        }
    }
}
