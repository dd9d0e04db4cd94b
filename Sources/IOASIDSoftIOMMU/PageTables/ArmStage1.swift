// Arm VMSAv8-64 stage-1 translation tables, 4 KiB granule, EL1&0 regime (TTBR0 range): the
// format an SMMUv3 context descriptor points to, or a process page table shared with a device.

/// Bits of an Arm stage-1 descriptor (in addition to ``ArmDescriptor``).
public enum ArmStage1Descriptor {
    /// AttrIndx, bits 4:2: index into MAIR.
    public static let attributeIndexMask: UInt64 = 0x7 << 2
    /// The position of AttrIndx.
    public static let attributeIndexShift: UInt64 = 2
    /// NS, bit 5 (ignored for Non-secure accesses).
    public static let nonSecure: UInt64 = 1 << 5
    /// AP[1], bit 6: EL0 (unprivileged) data access allowed.
    public static let ap1User: UInt64 = 1 << 6
    /// AP[2], bit 7: read-only (writes not allowed at any level of privilege).
    public static let ap2ReadOnly: UInt64 = 1 << 7
    /// nG, bit 11: not global (the translation is ASID-specific).
    public static let notGlobal: UInt64 = 1 << 11
    /// PXN, bit 53: privileged execute-never.
    public static let privilegedExecuteNever: UInt64 = 1 << 53
    /// UXN, bit 54: unprivileged execute-never.
    public static let userExecuteNever: UInt64 = 1 << 54
    /// PXNTable, bit 59 of a table descriptor: PXN for everything below.
    public static let pxnTable: UInt64 = 1 << 59
    /// UXNTable, bit 60 of a table descriptor: UXN for everything below.
    public static let uxnTable: UInt64 = 1 << 60
    /// APTable[0], bit 61 of a table descriptor: no EL0 access below.
    public static let apTableNoUser: UInt64 = 1 << 61
    /// APTable[1], bit 62 of a table descriptor: no writes below.
    public static let apTableReadOnly: UInt64 = 1 << 62
    /// NSTable, bit 63 of a table descriptor (ignored for Non-secure accesses).
    public static let nsTable: UInt64 = 1 << 63
}

/// The permissions of an Arm stage-1 block or page, as positive flags: AP[2] = 0 is `write`,
/// AP[1] = 1 is `user`, PXN = 0 is `privilegedExecute`, UXN = 0 is `userExecute`.
///
/// A valid leaf is always readable at EL1; `user` makes it readable (and, with `write`,
/// writable) at EL0. Every combination is encodable.
public struct ArmStage1Permissions: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The raw bits (not the descriptor's bits).
    public let rawValue: UInt8
    /// Creates permissions from raw bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// AP[2] = 0: writable (by EL0 too if `user`).
    public static let write = ArmStage1Permissions(rawValue: 1 << 0)
    /// AP[1] = 1: EL0 may access the data.
    public static let user = ArmStage1Permissions(rawValue: 1 << 1)
    /// PXN = 0: EL1 may execute (unless the page is writable at EL0, which implies PXN).
    public static let privilegedExecute = ArmStage1Permissions(rawValue: 1 << 2)
    /// UXN = 0: EL0 may execute.
    public static let userExecute = ArmStage1Permissions(rawValue: 1 << 3)

    /// `AP=xx` and `PXN`/`UXN` spelled as in the Arm ARM.
    public var description: String {
        let ap = (contains(.write) ? "0" : "1") + (contains(.user) ? "1" : "0")
        return "AP=\(ap)" + (contains(.privilegedExecute) ? "" : " PXN") + (contains(.userExecute) ? "" : " UXN")
    }
}

/// The memory attributes of an Arm stage-1 block or page.
public struct ArmStage1Attributes: Hashable, Sendable {
    /// AttrIndx: which MAIR attribute (0 … 7).
    public var memoryAttributeIndex: UInt8
    /// SH.
    public var shareability: ArmShareability
    /// nG: the translation belongs to the current ASID only.
    public var notGlobal: Bool
    /// AF as written by `map`; false leaves the first access to fault (or, with hardware
    /// access-flag update, to set it).
    public var accessFlag: Bool

    /// Creates attributes; the default is AttrIndx 0, inner shareable, global, AF = 1.
    public init(memoryAttributeIndex: UInt8 = 0, shareability: ArmShareability = .innerShareable,
                notGlobal: Bool = false, accessFlag: Bool = true) {
        precondition(memoryAttributeIndex < 8, "AttrIndx is three bits")
        self.memoryAttributeIndex = memoryAttributeIndex
        self.shareability = shareability
        self.notGlobal = notGlobal
        self.accessFlag = accessFlag
    }
}

/// The Arm VMSAv8-64 stage-1 format with the 4 KiB granule, for the generic ``PageTable`` engine.
///
/// The input size is 64 - T0SZ bits (25 … 48); the walk starts at level 0, 1 or 2 accordingly.
/// Table descriptors at levels 0–2, block descriptors at levels 1–2 (1 GiB, 2 MiB), page
/// descriptors at level 3. The walker honours the hierarchical table attributes (APTable,
/// UXNTable, PXNTable; TCR.HPD = 0), treats an EL0-writable page as PXN, checks faults in the
/// Arm priority order (translation, address size, access flag, permission), raises an
/// access-flag fault on AF = 0 unless hardware AF update (TCR.HA) is on — then it sets AF — and
/// with hardware dirty state (TCR.HD, effective only with HA) treats DBM = 1 as an effective
/// AP[2] of 0, so a write to a DBM = 1, AP[2] = 1 page succeeds (unless APTable forbids it) and
/// clears AP[2]. Hardware updates are made only when the access succeeds. WXN, PAN and the
/// TTBR1 range are not modelled.
public struct ArmStage1Format: PageTableFormat {
    /// Leaf permissions: AP[2:1], PXN, UXN.
    public typealias Permissions = ArmStage1Permissions
    /// Leaf attributes: AttrIndx, SH, nG, AF.
    public typealias Attributes = ArmStage1Attributes

    /// What a walk accumulates from table descriptors.
    public struct WalkState: Sendable {
        /// Some APTable[1] = 1 so far: no writes.
        public var readOnly = false
        /// Some APTable[0] = 1 so far: no EL0 access.
        public var noUser = false
        /// Some PXNTable = 1 so far.
        public var privilegedExecuteNever = false
        /// Some UXNTable = 1 so far.
        public var userExecuteNever = false
        /// The state before the root entry.
        public init() {}
    }

    /// The input address size, 64 - T0SZ.
    public let inputAddressBits: Int
    /// The output address size (TCR.IPS): 32, 36, 40, 42, 44 or 48.
    public let outputAddressBits: Int
    /// TCR.HA: the walker sets AF instead of faulting.
    public let hardwareAccessFlag: Bool
    /// TCR.HD as programmed; effective only together with ``hardwareAccessFlag``.
    public let hardwareDirtyState: Bool

    /// Creates a format translating `inputAddressBits` bits (25 … 48).
    public init(inputAddressBits: Int = 48, outputAddressBits: Int = 48,
                hardwareAccessFlag: Bool = false, hardwareDirtyState: Bool = false) {
        precondition((25...48).contains(inputAddressBits), "64 - T0SZ is 25 … 48 with 4 KiB granules")
        precondition([32, 36, 40, 42, 44, 48].contains(outputAddressBits), "IPS encodes 32 … 48 bits")
        self.inputAddressBits = inputAddressBits
        self.outputAddressBits = outputAddressBits
        self.hardwareAccessFlag = hardwareAccessFlag
        self.hardwareDirtyState = hardwareDirtyState
    }

    /// Creates a format from TCR_EL1.T0SZ (16 … 39).
    public init(t0sz: Int, outputAddressBits: Int = 48, hardwareAccessFlag: Bool = false, hardwareDirtyState: Bool = false) {
        self.init(inputAddressBits: 64 - t0sz, outputAddressBits: outputAddressBits,
                  hardwareAccessFlag: hardwareAccessFlag, hardwareDirtyState: hardwareDirtyState)
    }

    /// TCR_EL1.T0SZ.
    public var t0sz: Int { 64 - inputAddressBits }
    /// The Arm level the walk starts at (0, 1 or 2).
    public var startLevel: Int { 4 - topLevel }
    /// Whether hardware dirty state management is in effect (HA and HD).
    @inlinable public var dirtyStateEnabled: Bool { hardwareAccessFlag && hardwareDirtyState }

    /// The engine level of the start level.
    @inlinable public var topLevel: Int { Radix.levels(forInputBits: inputAddressBits) }
    /// AttrIndx 0, inner shareable, global, AF = 1.
    @inlinable public var defaultAttributes: ArmStage1Attributes { ArmStage1Attributes() }
    /// 4 - the engine level.
    @inlinable public func architecturalLevel(_ level: Int) -> Int { ArmVMSA.armLevel(level) }
    /// Pages at level 3, blocks at levels 1 and 2.
    @inlinable public func mayMapLeaf(atLevel level: Int) -> Bool { ArmVMSA.mayMapLeaf(atLevel: level, topLevel: topLevel) }

    /// An input address beyond 2^(64-T0SZ) is a translation fault at level 0 (the pseudocode's
    /// level for an address outside the TTBR ranges).
    @inlinable @inline(__always)
    public func inputFault(_ input: UInt64) -> PageTableFault? {
        input &>> UInt64(truncatingIfNeeded: inputAddressBits) == 0 ? nil : PageTableFault(.translation, level: 0)
    }

    /// Below 2^(64-T0SZ).
    public func isValidInputRange(first: UInt64, last: UInt64) -> Bool { last >> UInt64(inputAddressBits) == 0 }
    /// The identity.
    public func externalInput(_ masked: UInt64) -> UInt64 { masked }
    /// Every combination is encodable.
    public func validate(_ permissions: ArmStage1Permissions) -> PageTableError? { nil }

    /// `table | 0b11`, with no hierarchical restriction.
    public func tableEntry(_ table: UInt64, level: Int) -> UInt64 { table | ArmDescriptor.valid | ArmDescriptor.tableOrPage }

    /// A block (levels 1–2) or page (level 3) descriptor. A writable mapping is written
    /// writable-clean (DBM = 1, AP[2] = 1) when hardware dirty state is in effect.
    public func leafEntry(_ output: UInt64, level: Int, permissions: ArmStage1Permissions,
                          attributes: ArmStage1Attributes) -> UInt64 {
        var bits = ArmDescriptor.valid | (level == 1 ? ArmDescriptor.tableOrPage : 0)
        bits |= UInt64(attributes.memoryAttributeIndex) << ArmStage1Descriptor.attributeIndexShift
        if permissions.contains(.user) { bits |= ArmStage1Descriptor.ap1User }
        if !permissions.contains(.write) {
            bits |= ArmStage1Descriptor.ap2ReadOnly
        } else if dirtyStateEnabled {
            bits |= ArmStage1Descriptor.ap2ReadOnly | ArmDescriptor.dirtyBitModifier
        }
        bits |= UInt64(attributes.shareability.rawValue) << ArmDescriptor.shareabilityShift
        if attributes.accessFlag { bits |= ArmDescriptor.accessFlag }
        if attributes.notGlobal { bits |= ArmStage1Descriptor.notGlobal }
        if !permissions.contains(.privilegedExecute) { bits |= ArmStage1Descriptor.privilegedExecuteNever }
        if !permissions.contains(.userExecute) { bits |= ArmStage1Descriptor.userExecuteNever }
        return output | bits
    }

    /// Invalid, table (levels 0–2, bit 1 = 1), block (levels 1–2, bit 1 = 0) or page (level 3).
    public func kind(of entry: UInt64, level: Int) -> PageTableEntryKind { ArmVMSA.kind(entry, level: level) }
    /// Bits 47:12.
    public func tableAddress(_ entry: UInt64, level: Int) -> UInt64 { entry & ArmDescriptor.addressMask }
    /// Bits 47:12 above the block's alignment.
    public func leafAddress(_ entry: UInt64, level: Int) -> UInt64 {
        entry & ArmDescriptor.addressMask & ~(Radix.span(level) - 1)
    }

    /// AP[2:1], PXN, UXN of the leaf alone; a writable-clean page (DBM = 1 while dirty state is
    /// in effect) counts as writable.
    public func permissions(ofLeaf entry: UInt64, level: Int) -> ArmStage1Permissions {
        var p: ArmStage1Permissions = []
        let dbm = entry & ArmDescriptor.dirtyBitModifier != 0
        if entry & ArmStage1Descriptor.ap2ReadOnly == 0 || (dbm && dirtyStateEnabled) { p.insert(.write) }
        if entry & ArmStage1Descriptor.ap1User != 0 { p.insert(.user) }
        if entry & ArmStage1Descriptor.privilegedExecuteNever == 0 { p.insert(.privilegedExecute) }
        if entry & ArmStage1Descriptor.userExecuteNever == 0 { p.insert(.userExecute) }
        return p
    }

    /// AttrIndx, SH, nG, AF of the leaf.
    public func attributes(ofLeaf entry: UInt64, level: Int) -> ArmStage1Attributes {
        ArmStage1Attributes(
            memoryAttributeIndex: UInt8((entry & ArmStage1Descriptor.attributeIndexMask) >> ArmStage1Descriptor.attributeIndexShift),
            shareability: ArmShareability(rawValue: UInt8((entry & ArmDescriptor.shareabilityMask) >> ArmDescriptor.shareabilityShift)) ?? .nonShareable,
            notGlobal: entry & ArmStage1Descriptor.notGlobal != 0,
            accessFlag: entry & ArmDescriptor.accessFlag != 0)
    }

    /// The block's attributes, as blocks one level down or as pages.
    public func splitChildBits(_ entry: UInt64, level: Int) -> UInt64 { ArmVMSA.splitChildBits(entry, level: level) }
    /// `table | 0b11`.
    public func tableEntry(replacingLeaf entry: UInt64, table: UInt64, level: Int) -> UInt64 { tableEntry(table, level: level) }

    /// No restriction so far.
    @inlinable public var initialWalkState: WalkState { WalkState() }

    /// Descriptor type and output-address size; a table descriptor's APTable, UXNTable and
    /// PXNTable restrict every level below it.
    @inlinable @inline(__always)
    public func walkStep(_ entry: UInt64, level: Int, state: inout WalkState) -> PageTableWalkStep {
        let step = ArmVMSA.step(entry, level: level, outputBits: outputAddressBits)
        if case .table = step {
            state.readOnly = state.readOnly || entry & ArmStage1Descriptor.apTableReadOnly != 0
            state.noUser = state.noUser || entry & ArmStage1Descriptor.apTableNoUser != 0
            state.privilegedExecuteNever = state.privilegedExecuteNever || entry & ArmStage1Descriptor.pxnTable != 0
            state.userExecuteNever = state.userExecuteNever || entry & ArmStage1Descriptor.uxnTable != 0
        }
        return step
    }

    /// Access flag first, then permissions; computes the AF and dirty-state updates.
    @inlinable @inline(__always)
    public func checkLeaf(_ entry: UInt64, level: Int, state: WalkState, access: PageAccess) -> PageTableLeafCheck {
        var updated = entry
        if entry & ArmDescriptor.accessFlag == 0 {
            guard hardwareAccessFlag else { return .fault(.accessFlag) }
            updated |= ArmDescriptor.accessFlag
        }
        let ap2 = entry & ArmStage1Descriptor.ap2ReadOnly != 0
        // With dirty state in effect, DBM = 1 makes the effective AP[2] 0 before any permission
        // is derived: a write is allowed (and makes the page dirty by clearing AP[2]).
        let dbm = dirtyStateEnabled && entry & ArmDescriptor.dirtyBitModifier != 0
        let userData = entry & ArmStage1Descriptor.ap1User != 0 && !state.noUser
        let canWrite = !(ap2 && !dbm) && !state.readOnly
        // A location writable at EL0 is never executable at EL1.
        let privilegedExecuteNever = entry & ArmStage1Descriptor.privilegedExecuteNever != 0
            || state.privilegedExecuteNever || (userData && canWrite)
        let userExecuteNever = entry & ArmStage1Descriptor.userExecuteNever != 0 || state.userExecuteNever
        switch access.kind {
        case .read:
            if access.user && !userData { return .fault(.permission(.privilege)) }
        case .write:
            if access.user && !userData { return .fault(.permission(.privilege)) }
            if !canWrite { return .fault(.permission(.write)) }
            if ap2 { updated &= ~ArmStage1Descriptor.ap2ReadOnly }
        case .execute:
            if access.user ? userExecuteNever : privilegedExecuteNever { return .fault(.permission(.execute)) }
        }
        var rights: AccessRights = .read
        if canWrite { rights.insert(.write) }
        if !privilegedExecuteNever { rights.insert(.execute) }
        if userData {
            rights.insert(.userRead)
            if canWrite { rights.insert(.userWrite) }
        }
        if !userExecuteNever { rights.insert(.userExecute) }
        return .allowed(rights, updatedLeaf: updated)
    }

    /// Table descriptors hold no hardware-updated state.
    @inlinable @inline(__always)
    public func updatedTableEntry(_ entry: UInt64, level: Int) -> UInt64 { entry }

    /// DBM = 1 and AP[2] = 0: writable-dirty.
    public func isDirty(leaf entry: UInt64, level: Int) -> Bool {
        entry & ArmDescriptor.dirtyBitModifier != 0 && entry & ArmStage1Descriptor.ap2ReadOnly == 0
    }
    /// Sets AP[2] again (writable-clean).
    public func cleaned(leaf entry: UInt64, level: Int) -> UInt64 { entry | ArmStage1Descriptor.ap2ReadOnly }
}

/// An Arm VMSAv8-64 stage-1 page table.
public typealias ArmStage1PageTable = PageTable<ArmStage1Format>
