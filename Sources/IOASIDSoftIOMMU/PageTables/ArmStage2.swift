// Arm VMSAv8-64 stage-2 translation tables, 4 KiB granule (EL1&0 regime, the format an SMMUv3
// stream table entry's S2TTB points to): IPA → PA.

/// Bits of an Arm stage-2 descriptor (in addition to ``ArmDescriptor``).
public enum ArmStage2Descriptor {
    /// MemAttr, bits 5:2.
    public static let memoryAttributesMask: UInt64 = 0xF << 2
    /// The position of MemAttr.
    public static let memoryAttributesShift: UInt64 = 2
    /// S2AP[0], bit 6: reads allowed.
    public static let s2apRead: UInt64 = 1 << 6
    /// S2AP[1], bit 7: writes allowed.
    public static let s2apWrite: UInt64 = 1 << 7
    /// XN[1:0], bits 54:53 (FEAT_XNX): 0b00 executable at EL1 and EL0, 0b01 at EL0 only,
    /// 0b10 at neither, 0b11 at EL1 only.
    public static let executeNeverMask: UInt64 = 0x3 << 53
    /// The position of XN.
    public static let executeNeverShift: UInt64 = 53
}

/// The permissions of an Arm stage-2 block or page: S2AP and XN[1:0] as positive flags.
public struct ArmStage2Permissions: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The raw bits (not the descriptor's bits).
    public let rawValue: UInt8
    /// Creates permissions from raw bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// S2AP[0] = 1.
    public static let read = ArmStage2Permissions(rawValue: 1 << 0)
    /// S2AP[1] = 1.
    public static let write = ArmStage2Permissions(rawValue: 1 << 1)
    /// Instruction fetches for EL1 (privileged) stage-1 accesses allowed.
    public static let privilegedExecute = ArmStage2Permissions(rawValue: 1 << 2)
    /// Instruction fetches for EL0 (unprivileged) stage-1 accesses allowed.
    public static let userExecute = ArmStage2Permissions(rawValue: 1 << 3)
    /// Read and write, no execute.
    public static let readWrite: ArmStage2Permissions = [.read, .write]
    /// Everything.
    public static let all: ArmStage2Permissions = [.read, .write, .privilegedExecute, .userExecute]

    /// `S2AP=xx XN=yy` spelled as in the Arm ARM.
    public var description: String {
        let s2ap = (contains(.write) ? "1" : "0") + (contains(.read) ? "1" : "0")
        return "S2AP=\(s2ap) XN=\(String(ArmStage2Format.executeNeverBits(self), radix: 2))"
    }
}

/// The memory attributes of an Arm stage-2 block or page.
public struct ArmStage2Attributes: Hashable, Sendable {
    /// MemAttr[3:0] (0b1111: Normal, Inner and Outer Write-Back; 0b0000: Device-nGnRnE).
    public var memoryAttributes: UInt8
    /// SH.
    public var shareability: ArmShareability
    /// AF as written by `map`.
    public var accessFlag: Bool

    /// Creates attributes; the default is Normal Write-Back, inner shareable, AF = 1.
    public init(memoryAttributes: UInt8 = 0xF, shareability: ArmShareability = .innerShareable, accessFlag: Bool = true) {
        precondition(memoryAttributes < 16, "MemAttr is four bits")
        self.memoryAttributes = memoryAttributes
        self.shareability = shareability
        self.accessFlag = accessFlag
    }
}

/// The Arm VMSAv8-64 stage-2 format with the 4 KiB granule, for the generic ``PageTable`` engine.
///
/// The IPA size is 64 - T0SZ bits; the walk starts at the level VTCR.SL0 selects (SL0 = 0, 1, 2:
/// level 2, 1, 0). Stage-2 table descriptors carry no attributes (bits 63:59 are RES0 and
/// ignored). Leaves: MemAttr 5:2, S2AP 7:6 (read, write), SH, AF, DBM, XN 54:53 with FEAT_XNX
/// semantics. AF = 0 faults unless hardware AF update (VTCR.HA) is on; with hardware dirty state
/// (VTCR.HD, effective only with HA) a write to a DBM = 1, S2AP[1] = 0 page succeeds and sets
/// S2AP[1]. Execute permission does not depend on read permission (AArch64). Concatenated
/// start-level tables are not supported (the start level must resolve 1 … 9 bits).
public struct ArmStage2Format: PageTableFormat {
    /// Leaf permissions: S2AP, XN.
    public typealias Permissions = ArmStage2Permissions
    /// Leaf attributes: MemAttr, SH, AF.
    public typealias Attributes = ArmStage2Attributes

    /// Stage-2 table descriptors carry no limits: nothing to accumulate.
    public struct WalkState: Sendable {
        /// The (empty) state.
        public init() {}
    }

    /// The IPA size, 64 - T0SZ.
    public let inputAddressBits: Int
    /// The output address size (VTCR.PS): 32, 36, 40, 42, 44 or 48.
    public let outputAddressBits: Int
    /// The Arm level the walk starts at (0, 1 or 2).
    public let startLevel: Int
    /// VTCR.HA: the walker sets AF instead of faulting.
    public let hardwareAccessFlag: Bool
    /// VTCR.HD as programmed; effective only together with ``hardwareAccessFlag``.
    public let hardwareDirtyState: Bool

    /// Creates a format translating `inputAddressBits` IPA bits, starting at `startLevel` (by
    /// default the lowest level that needs no concatenated tables).
    ///
    /// - Throws: ``PageTableError/unsupportedConfiguration`` if the start level would need
    ///   concatenated tables or resolves no bits.
    public init(inputAddressBits: Int = 48, startLevel: Int? = nil, outputAddressBits: Int = 48,
                hardwareAccessFlag: Bool = false, hardwareDirtyState: Bool = false) throws(PageTableError) {
        guard (25...48).contains(inputAddressBits), [32, 36, 40, 42, 44, 48].contains(outputAddressBits) else {
            throw .unsupportedConfiguration
        }
        let start = startLevel ?? (4 - Radix.levels(forInputBits: inputAddressBits))
        guard (0...2).contains(start) else { throw .unsupportedConfiguration }
        let resolvedAtStart = inputAddressBits - Int(Radix.shift(4 - start))
        guard (1...9).contains(resolvedAtStart) else { throw .unsupportedConfiguration }
        self.inputAddressBits = inputAddressBits
        self.outputAddressBits = outputAddressBits
        self.startLevel = start
        self.hardwareAccessFlag = hardwareAccessFlag
        self.hardwareDirtyState = hardwareDirtyState
    }

    /// Creates a format from VTCR_EL2.T0SZ and SL0 (4 KiB granule: SL0 0, 1, 2 start at level 2, 1, 0).
    public init(t0sz: Int, sl0: Int, outputAddressBits: Int = 48, hardwareAccessFlag: Bool = false,
                hardwareDirtyState: Bool = false) throws(PageTableError) {
        guard (0...2).contains(sl0) else { throw .unsupportedConfiguration }
        try self.init(inputAddressBits: 64 - t0sz, startLevel: 2 - sl0, outputAddressBits: outputAddressBits,
                      hardwareAccessFlag: hardwareAccessFlag, hardwareDirtyState: hardwareDirtyState)
    }

    /// VTCR_EL2.T0SZ.
    public var t0sz: Int { 64 - inputAddressBits }
    /// VTCR_EL2.SL0.
    public var sl0: Int { 2 - startLevel }
    /// Whether hardware dirty state management is in effect (HA and HD).
    @inlinable public var dirtyStateEnabled: Bool { hardwareAccessFlag && hardwareDirtyState }

    /// XN[1:0] for `permissions`.
    @inlinable
    public static func executeNeverBits(_ permissions: ArmStage2Permissions) -> UInt64 {
        switch (permissions.contains(.privilegedExecute), permissions.contains(.userExecute)) {
        case (true, true): 0b00
        case (false, true): 0b01
        case (false, false): 0b10
        case (true, false): 0b11
        }
    }

    /// The engine level of the start level.
    @inlinable public var topLevel: Int { 4 - startLevel }
    /// Normal Write-Back, inner shareable, AF = 1.
    @inlinable public var defaultAttributes: ArmStage2Attributes { ArmStage2Attributes() }
    /// 4 - the engine level.
    @inlinable public func architecturalLevel(_ level: Int) -> Int { ArmVMSA.armLevel(level) }
    /// Pages at level 3, blocks at levels 1 and 2.
    @inlinable public func mayMapLeaf(atLevel level: Int) -> Bool { ArmVMSA.mayMapLeaf(atLevel: level, topLevel: topLevel) }

    /// An IPA beyond 2^(64-T0SZ) is a stage-2 translation fault at level 0.
    @inlinable @inline(__always)
    public func inputFault(_ input: UInt64) -> PageTableFault? {
        input &>> UInt64(truncatingIfNeeded: inputAddressBits) == 0 ? nil : PageTableFault(.translation, level: 0)
    }

    /// Below 2^(64-T0SZ).
    public func isValidInputRange(first: UInt64, last: UInt64) -> Bool { last >> UInt64(inputAddressBits) == 0 }
    /// The identity.
    public func externalInput(_ masked: UInt64) -> UInt64 { masked }
    /// Every combination is encodable (S2AP = 0b00 is a valid, inaccessible mapping).
    public func validate(_ permissions: ArmStage2Permissions) -> PageTableError? { nil }

    /// `table | 0b11`.
    public func tableEntry(_ table: UInt64, level: Int) -> UInt64 { table | ArmDescriptor.valid | ArmDescriptor.tableOrPage }

    /// A block (levels 1–2) or page (level 3) descriptor. A writable mapping is written
    /// writable-clean (DBM = 1, S2AP[1] = 0) when hardware dirty state is in effect.
    public func leafEntry(_ output: UInt64, level: Int, permissions: ArmStage2Permissions,
                          attributes: ArmStage2Attributes) -> UInt64 {
        var bits = ArmDescriptor.valid | (level == 1 ? ArmDescriptor.tableOrPage : 0)
        bits |= UInt64(attributes.memoryAttributes) << ArmStage2Descriptor.memoryAttributesShift
        if permissions.contains(.read) { bits |= ArmStage2Descriptor.s2apRead }
        if permissions.contains(.write) {
            bits |= dirtyStateEnabled ? ArmDescriptor.dirtyBitModifier : ArmStage2Descriptor.s2apWrite
        }
        bits |= UInt64(attributes.shareability.rawValue) << ArmDescriptor.shareabilityShift
        if attributes.accessFlag { bits |= ArmDescriptor.accessFlag }
        bits |= Self.executeNeverBits(permissions) << ArmStage2Descriptor.executeNeverShift
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

    /// S2AP and XN of the leaf; a writable-clean page (DBM = 1 while dirty state is in effect)
    /// counts as writable.
    public func permissions(ofLeaf entry: UInt64, level: Int) -> ArmStage2Permissions {
        var p: ArmStage2Permissions = []
        if entry & ArmStage2Descriptor.s2apRead != 0 { p.insert(.read) }
        let dbm = entry & ArmDescriptor.dirtyBitModifier != 0
        if entry & ArmStage2Descriptor.s2apWrite != 0 || (dbm && dirtyStateEnabled) { p.insert(.write) }
        switch (entry & ArmStage2Descriptor.executeNeverMask) >> ArmStage2Descriptor.executeNeverShift {
        case 0b00: p.formUnion([.privilegedExecute, .userExecute])
        case 0b01: p.insert(.userExecute)
        case 0b11: p.insert(.privilegedExecute)
        default: break
        }
        return p
    }

    /// MemAttr, SH, AF of the leaf.
    public func attributes(ofLeaf entry: UInt64, level: Int) -> ArmStage2Attributes {
        ArmStage2Attributes(
            memoryAttributes: UInt8((entry & ArmStage2Descriptor.memoryAttributesMask) >> ArmStage2Descriptor.memoryAttributesShift),
            shareability: ArmShareability(rawValue: UInt8((entry & ArmDescriptor.shareabilityMask) >> ArmDescriptor.shareabilityShift)) ?? .nonShareable,
            accessFlag: entry & ArmDescriptor.accessFlag != 0)
    }

    /// The block's attributes, as blocks one level down or as pages.
    public func splitChildBits(_ entry: UInt64, level: Int) -> UInt64 { ArmVMSA.splitChildBits(entry, level: level) }
    /// `table | 0b11`.
    public func tableEntry(replacingLeaf entry: UInt64, table: UInt64, level: Int) -> UInt64 { tableEntry(table, level: level) }

    /// The empty state.
    @inlinable public var initialWalkState: WalkState { WalkState() }

    /// Descriptor type and output-address size.
    @inlinable @inline(__always)
    public func walkStep(_ entry: UInt64, level: Int, state: inout WalkState) -> PageTableWalkStep {
        ArmVMSA.step(entry, level: level, outputBits: outputAddressBits)
    }

    /// Access flag first, then S2AP / XN; computes the AF and dirty-state updates.
    @inlinable @inline(__always)
    public func checkLeaf(_ entry: UInt64, level: Int, state: WalkState, access: PageAccess) -> PageTableLeafCheck {
        var updated = entry
        if entry & ArmDescriptor.accessFlag == 0 {
            guard hardwareAccessFlag else { return .fault(.accessFlag) }
            updated |= ArmDescriptor.accessFlag
        }
        let read = entry & ArmStage2Descriptor.s2apRead != 0
        let writable = entry & ArmStage2Descriptor.s2apWrite != 0
        let writableClean = dirtyStateEnabled && !writable && entry & ArmDescriptor.dirtyBitModifier != 0
        let xn = (entry & ArmStage2Descriptor.executeNeverMask) >> ArmStage2Descriptor.executeNeverShift
        let privilegedExecute = xn == 0b00 || xn == 0b11
        let userExecute = xn == 0b00 || xn == 0b01
        switch access.kind {
        case .read:
            if !read { return .fault(.permission(.read)) }
        case .write:
            if !writable && !writableClean { return .fault(.permission(.write)) }
            if writableClean { updated |= ArmStage2Descriptor.s2apWrite }
        case .execute:
            if !(access.user ? userExecute : privilegedExecute) { return .fault(.permission(.execute)) }
        }
        var rights = AccessRights.uniform(read: read, write: writable || writableClean, execute: false)
        if privilegedExecute { rights.insert(.execute) }
        if userExecute { rights.insert(.userExecute) }
        return .allowed(rights, updatedLeaf: updated)
    }

    /// Table descriptors hold no hardware-updated state.
    @inlinable @inline(__always)
    public func updatedTableEntry(_ entry: UInt64, level: Int) -> UInt64 { entry }

    /// DBM = 1 and S2AP[1] = 1: writable-dirty.
    public func isDirty(leaf entry: UInt64, level: Int) -> Bool {
        entry & ArmDescriptor.dirtyBitModifier != 0 && entry & ArmStage2Descriptor.s2apWrite != 0
    }
    /// Clears S2AP[1] again (writable-clean).
    public func cleaned(leaf entry: UInt64, level: Int) -> UInt64 { entry & ~ArmStage2Descriptor.s2apWrite }
}

/// An Arm VMSAv8-64 stage-2 page table.
public typealias ArmStage2PageTable = PageTable<ArmStage2Format>
