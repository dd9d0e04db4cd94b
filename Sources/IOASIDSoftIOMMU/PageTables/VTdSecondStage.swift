// Intel VT-d second-stage paging (VT-d spec §3.7 "Second-Stage Translation", §9.8 "Second-Stage
// Paging Entries"): 3-, 4- or 5-level tables for AGAW 39, 48 and 57, 4 KiB pages, 2 MiB and
// 1 GiB superpages, written bit-exactly into PhysicalMemory.

/// Bits of a VT-d second-stage paging entry (SS-PML5E … SS-PTE).
public enum VTdSSPTE {
    /// R: reads allowed (at every level of the walk).
    public static let read: UInt64 = 1 << 0
    /// W: writes allowed (at every level of the walk).
    public static let write: UInt64 = 1 << 1
    /// X: execute requests allowed; ignored unless second-stage execute is enabled (SSEE / ERS).
    public static let execute: UInt64 = 1 << 2
    /// EMT, bits 5:3 of a leaf: the extended memory type.
    public static let memoryTypeMask: UInt64 = 0x7 << 3
    /// The position of EMT.
    public static let memoryTypeShift: UInt64 = 3
    /// IPAT, bit 6 of a leaf: ignore the PAT memory type.
    public static let ignorePAT: UInt64 = 1 << 6
    /// PS, bit 7 of an SS-PDPTE or SS-PDE: the entry maps a 1 GiB / 2 MiB page.
    /// Reserved in an SS-PML5E / SS-PML4E, ignored in an SS-PTE.
    public static let pageSize: UInt64 = 1 << 7
    /// A, bit 8: set by the walker in every entry it uses, when second-stage A/D is enabled.
    public static let accessed: UInt64 = 1 << 8
    /// D, bit 9 of a leaf: set by the walker on a write, when second-stage A/D is enabled.
    public static let dirty: UInt64 = 1 << 9
    /// SNP, bit 11 of a leaf: snoop; reserved in non-leaf entries.
    public static let snoop: UInt64 = 1 << 11
    /// Bit 62: reserved (formerly TM).
    public static let reserved62: UInt64 = 1 << 62
    /// Address bits 51:12.
    public static let addressMask: UInt64 = 0x000F_FFFF_FFFF_F000
}

/// The permissions of a VT-d second-stage leaf.
public struct VTdSecondStagePermissions: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The raw bits, equal to the entry's bits 2:0.
    public let rawValue: UInt8
    /// Creates permissions from raw bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// R = 1.
    public static let read = VTdSecondStagePermissions(rawValue: 1 << 0)
    /// W = 1.
    public static let write = VTdSecondStagePermissions(rawValue: 1 << 1)
    /// X = 1.
    public static let execute = VTdSecondStagePermissions(rawValue: 1 << 2)
    /// R and W.
    public static let readWrite: VTdSecondStagePermissions = [.read, .write]

    /// `rwx`, with `-` for what is not allowed.
    public var description: String {
        (contains(.read) ? "r" : "-") + (contains(.write) ? "w" : "-") + (contains(.execute) ? "x" : "-")
    }
}

/// The memory attributes of a VT-d second-stage leaf.
public struct VTdSecondStageAttributes: Hashable, Sendable {
    /// EMT (0 … 7; 0 = UC, 6 = WB), used when memory-type support is enabled.
    public var memoryType: UInt8
    /// IPAT: ignore the PAT-derived memory type.
    public var ignorePAT: Bool
    /// SNP: snoop the processor caches regardless of the request's no-snoop attribute.
    public var snoop: Bool

    /// Creates attributes; the default is EMT 0, no IPAT, no snoop (bits 6:3 and 11 clear).
    public init(memoryType: UInt8 = 0, ignorePAT: Bool = false, snoop: Bool = false) {
        precondition(memoryType < 8, "EMT is three bits")
        self.memoryType = memoryType
        self.ignorePAT = ignorePAT
        self.snoop = snoop
    }
}

/// The VT-d second-stage paging format, for the generic ``PageTable`` engine.
///
/// An entry is present if any of R, W (and X, when execute requests are enabled) is set. R, W
/// and X are combined over all levels (AND). Reserved: address bits 51:HAW, bit 62, PS (bit 7)
/// and bit 11 in an SS-PML5E / SS-PML4E, bit 11 in non-leaf SS-PDPTE / SS-PDE, PS in an SS-PDPTE
/// (SS-PDE) without 1 GiB (2 MiB) support, and a large page's address bits below its alignment
/// (20:12, 29:12). With second-stage A/D enabled (SSADE), the walker sets A in every entry of a
/// successful walk and D in the leaf on a write; without it bits 8 and 9 are ignored.
public struct VTdSecondStageFormat: PageTableFormat {
    /// Leaf permissions: R, W, X.
    public typealias Permissions = VTdSecondStagePermissions
    /// Leaf attributes: EMT, IPAT, SNP.
    public typealias Attributes = VTdSecondStageAttributes

    /// What a walk accumulates: R, W and X ANDed over the table entries.
    public struct WalkState: Sendable {
        /// R = 1 in every table entry so far.
        public var read = true
        /// W = 1 in every table entry so far.
        public var write = true
        /// X = 1 in every table entry so far.
        public var execute = true
        /// The state before the root entry.
        public init() {}
    }

    /// The adjusted guest address width: 39 (3-level), 48 (4-level) or 57 (5-level).
    public let addressWidth: Int
    /// The host address width (HAW): output-address bits above it are reserved.
    public let hostAddressWidth: Int
    /// SSADE: the walker maintains A and D.
    public let accessedDirtyEnabled: Bool
    /// SSEE (with ECAP.ERS): X is honoured. Without it X is ignored and an execute request needs
    /// read permission.
    public let executeEnabled: Bool
    /// SS-PDEs may map 2 MiB pages (CAP.SLLPS bit 0).
    public let supports2MiB: Bool
    /// SS-PDPTEs may map 1 GiB pages (CAP.SLLPS bit 1).
    public let supports1GiB: Bool

    /// Creates a format.
    public init(addressWidth: Int = 48, hostAddressWidth: Int = 52, accessedDirtyEnabled: Bool = false,
                executeEnabled: Bool = false, supports2MiB: Bool = true, supports1GiB: Bool = true) {
        precondition([39, 48, 57].contains(addressWidth), "VT-d second-stage AGAW is 39, 48 or 57")
        precondition((32...52).contains(hostAddressWidth), "HAW is 32 … 52")
        self.addressWidth = addressWidth
        self.hostAddressWidth = hostAddressWidth
        self.accessedDirtyEnabled = accessedDirtyEnabled
        self.executeEnabled = executeEnabled
        self.supports2MiB = supports2MiB
        self.supports1GiB = supports1GiB
    }

    /// 3, 4 or 5.
    @inlinable public var topLevel: Int { (addressWidth &- 12) / 9 }
    /// The AGAW.
    @inlinable public var inputAddressBits: Int { addressWidth }
    /// The HAW.
    @inlinable public var outputAddressBits: Int { hostAddressWidth }
    /// EMT 0, no IPAT, no snoop.
    @inlinable public var defaultAttributes: VTdSecondStageAttributes { VTdSecondStageAttributes() }
    /// VT-d numbers levels as the engine does (SS-PTE = 1 … SS-PML5E = 5).
    @inlinable public func architecturalLevel(_ level: Int) -> Int { level }

    /// 4 KiB always; 2 MiB and 1 GiB as supported.
    @inlinable
    public func mayMapLeaf(atLevel level: Int) -> Bool {
        level == 1 || (level == 2 && supports2MiB) || (level == 3 && supports1GiB)
    }

    /// An input address at or above 2^AGAW faults (address beyond the guest address width),
    /// reported as an address-size fault at the root level.
    @inlinable @inline(__always)
    public func inputFault(_ input: UInt64) -> PageTableFault? {
        input &>> UInt64(truncatingIfNeeded: addressWidth) == 0 ? nil : PageTableFault(.addressSize, level: topLevel)
    }

    /// Below 2^AGAW.
    public func isValidInputRange(first: UInt64, last: UInt64) -> Bool { last >> UInt64(addressWidth) == 0 }
    /// The identity.
    public func externalInput(_ masked: UInt64) -> UInt64 { masked }

    /// A leaf needs R or W (or X with execute enabled): otherwise it would not be present.
    public func validate(_ permissions: VTdSecondStagePermissions) -> PageTableError? {
        let present: VTdSecondStagePermissions = executeEnabled ? [.read, .write, .execute] : .readWrite
        return permissions.isDisjoint(with: present) ? .unsupportedPermissions : nil
    }

    /// R, W (and X when execute is enabled) of a table entry written by ``PageTable``.
    @inlinable public var tableBits: UInt64 {
        VTdSSPTE.read | VTdSSPTE.write | (executeEnabled ? VTdSSPTE.execute : 0)
    }

    /// The bits that make an entry present.
    @inlinable @inline(__always) var presentBits: UInt64 {
        VTdSSPTE.read | VTdSSPTE.write | (executeEnabled ? VTdSSPTE.execute : 0)
    }

    /// `table | R | W` (| X).
    public func tableEntry(_ table: UInt64, level: Int) -> UInt64 { table | tableBits }

    /// R, W, X; EMT, IPAT, SNP; PS above level 1.
    public func leafEntry(_ output: UInt64, level: Int, permissions: VTdSecondStagePermissions,
                          attributes: VTdSecondStageAttributes) -> UInt64 {
        var bits = UInt64(permissions.rawValue & 0x7)
        bits |= UInt64(attributes.memoryType & 0x7) << VTdSSPTE.memoryTypeShift
        if attributes.ignorePAT { bits |= VTdSSPTE.ignorePAT }
        if attributes.snoop { bits |= VTdSSPTE.snoop }
        if level > 1 { bits |= VTdSSPTE.pageSize }
        return output | bits
    }

    @inlinable @inline(__always)
    func isLeaf(_ entry: UInt64, _ level: Int) -> Bool {
        level == 1 || ((level == 2 || level == 3) && entry & VTdSSPTE.pageSize != 0)
    }

    /// Invalid if not present; a leaf at level 1 or with PS at levels 2–3; otherwise a table.
    public func kind(of entry: UInt64, level: Int) -> PageTableEntryKind {
        entry & presentBits == 0 ? .invalid : isLeaf(entry, level) ? .leaf : .table
    }

    /// Bits 51:12.
    public func tableAddress(_ entry: UInt64, level: Int) -> UInt64 { entry & VTdSSPTE.addressMask }
    /// Bits 51:12 above the page's alignment.
    public func leafAddress(_ entry: UInt64, level: Int) -> UInt64 {
        entry & VTdSSPTE.addressMask & ~(Radix.span(level) - 1)
    }

    /// R, W, X of the leaf alone.
    public func permissions(ofLeaf entry: UInt64, level: Int) -> VTdSecondStagePermissions {
        VTdSecondStagePermissions(rawValue: UInt8(entry & 0x7))
    }

    /// EMT, IPAT, SNP of the leaf.
    public func attributes(ofLeaf entry: UInt64, level: Int) -> VTdSecondStageAttributes {
        VTdSecondStageAttributes(memoryType: UInt8((entry & VTdSSPTE.memoryTypeMask) >> VTdSSPTE.memoryTypeShift),
                                 ignorePAT: entry & VTdSSPTE.ignorePAT != 0, snoop: entry & VTdSSPTE.snoop != 0)
    }

    /// The leaf's flags including A and D; PS is dropped when the children are SS-PTEs.
    public func splitChildBits(_ entry: UInt64, level: Int) -> UInt64 {
        var bits = entry & ~VTdSSPTE.addressMask
        if level - 1 == 1 { bits &= ~VTdSSPTE.pageSize }
        return bits
    }

    /// `table | R | W` (| X), keeping the leaf's A.
    public func tableEntry(replacingLeaf entry: UInt64, table: UInt64, level: Int) -> UInt64 {
        table | tableBits | (entry & VTdSSPTE.accessed)
    }

    /// Everything allowed so far.
    @inlinable public var initialWalkState: WalkState { WalkState() }

    /// Address bits 51:HAW and bit 62.
    @inlinable @inline(__always) var reservedEverywhere: UInt64 {
        (VTdSSPTE.addressMask & ~Radix.mask(bits: hostAddressWidth)) | VTdSSPTE.reserved62
    }

    /// Not present is a translation fault; then the reserved-field checks; a table entry's R, W
    /// and X limit the levels below it.
    @inlinable @inline(__always)
    public func walkStep(_ entry: UInt64, level: Int, state: inout WalkState) -> PageTableWalkStep {
        guard entry & presentBits != 0 else { return .fault(.translation) }
        if entry & reservedEverywhere != 0 { return .fault(.reservedBit) }
        let ps = entry & VTdSSPTE.pageSize != 0
        if level >= 4 {
            if entry & (VTdSSPTE.pageSize | VTdSSPTE.snoop) != 0 { return .fault(.reservedBit) }
        } else if level > 1 && ps {
            if (level == 2 && !supports2MiB) || (level == 3 && !supports1GiB) { return .fault(.reservedBit) }
        }
        if level == 1 || ps {
            let span = Radix.span(level)
            if entry & (span - 1) & VTdSSPTE.addressMask != 0 { return .fault(.reservedBit) }
            return .leaf(entry & VTdSSPTE.addressMask & ~(span - 1))
        }
        if entry & VTdSSPTE.snoop != 0 { return .fault(.reservedBit) }
        state.read = state.read && entry & VTdSSPTE.read != 0
        state.write = state.write && entry & VTdSSPTE.write != 0
        state.execute = state.execute && entry & VTdSSPTE.execute != 0
        return .table(entry & VTdSSPTE.addressMask)
    }

    /// R, W (and X) must be allowed at every level. With A/D enabled a successful access sets A
    /// in the leaf, and D for a write.
    @inlinable @inline(__always)
    public func checkLeaf(_ entry: UInt64, level: Int, state: WalkState, access: PageAccess) -> PageTableLeafCheck {
        let read = state.read && entry & VTdSSPTE.read != 0
        let write = state.write && entry & VTdSSPTE.write != 0
        let execute = executeEnabled ? state.execute && entry & VTdSSPTE.execute != 0 : read
        switch access.kind {
        case .read where !read: return .fault(.permission(.read))
        case .write where !write: return .fault(.permission(.write))
        case .execute where !execute: return .fault(.permission(.execute))
        default: break
        }
        var updated = entry
        if accessedDirtyEnabled {
            updated |= VTdSSPTE.accessed | (access.kind == .write ? VTdSSPTE.dirty : 0)
        }
        return .allowed(.uniform(read: read, write: write, execute: execute), updatedLeaf: updated)
    }

    /// Sets A when A/D is enabled.
    @inlinable @inline(__always)
    public func updatedTableEntry(_ entry: UInt64, level: Int) -> UInt64 {
        accessedDirtyEnabled ? entry | VTdSSPTE.accessed : entry
    }

    /// D = 1 (only with A/D enabled; otherwise bit 9 is ignored).
    public func isDirty(leaf entry: UInt64, level: Int) -> Bool {
        accessedDirtyEnabled && entry & VTdSSPTE.dirty != 0
    }
    /// Clears D.
    public func cleaned(leaf entry: UInt64, level: Int) -> UInt64 { entry & ~VTdSSPTE.dirty }
}

/// A VT-d second-stage page table.
public typealias VTdSecondStagePageTable = PageTable<VTdSecondStageFormat>
