// What Arm VMSAv8-64 stage-1 and stage-2 translation tables with the 4 KiB granule share
// (Arm ARM D8 "The AArch64 Virtual Memory System Architecture"): descriptor types per level,
// the output-address field, shareability, the access flag and DBM. 48-bit output addresses at
// most (no FEAT_LPA2; bits 49:48 of a descriptor are RES0 and ignored here).
//
// Arm numbers levels from the top: level 0 resolves input bits 47:39, level 1 38:30, level 2
// 29:21, level 3 20:12. The engine's level is 4 - Arm level.

/// Bits common to Arm VMSAv8-64 stage-1 and stage-2 descriptors (4 KiB granule).
public enum ArmDescriptor {
    /// Bit 0: the descriptor is valid.
    public static let valid: UInt64 = 1 << 0
    /// Bit 1: at levels 0–2 a table (1) or a block (0); at level 3 a page must have it set.
    public static let tableOrPage: UInt64 = 1 << 1
    /// SH, bits 9:8: shareability of a block or page.
    public static let shareabilityMask: UInt64 = 0x3 << 8
    /// The position of SH.
    public static let shareabilityShift: UInt64 = 8
    /// AF, bit 10: the access flag of a block or page.
    public static let accessFlag: UInt64 = 1 << 10
    /// DBM, bit 51: dirty bit modifier (hardware dirty state management).
    public static let dirtyBitModifier: UInt64 = 1 << 51
    /// Contiguous, bit 52 (never set by ``PageTable``; cleared when a block is split).
    public static let contiguous: UInt64 = 1 << 52
    /// Output address / next-level table address, bits 47:12.
    public static let addressMask: UInt64 = 0x0000_FFFF_FFFF_F000
}

/// Shareability (SH) of a block or page.
public enum ArmShareability: UInt8, Hashable, Sendable {
    /// 0b00.
    case nonShareable = 0
    /// 0b10.
    case outerShareable = 2
    /// 0b11.
    case innerShareable = 3
}

/// Descriptor decoding that Arm stage 1 and stage 2 share.
@usableFromInline
enum ArmVMSA {
    /// The Arm level for engine level `level`.
    @inlinable @inline(__always)
    static func armLevel(_ level: Int) -> Int { 4 - level }

    /// Software view: invalid, table or block/page.
    @inlinable @inline(__always)
    static func kind(_ entry: UInt64, level: Int) -> PageTableEntryKind {
        guard entry & ArmDescriptor.valid != 0 else { return .invalid }
        let bit1 = entry & ArmDescriptor.tableOrPage != 0
        switch level {
        case 1: return bit1 ? .leaf : .invalid          // level 3: page, or reserved
        case 4: return bit1 ? .table : .invalid         // level 0: no blocks with 4 KiB granules
        default: return bit1 ? .table : .leaf           // levels 1–2: table or block
        }
    }

    /// The hardware walker's decoding: invalid or reserved descriptor types are translation
    /// faults; an output (or table) address above `outputBits` is an address-size fault.
    @inlinable @inline(__always)
    static func step(_ entry: UInt64, level: Int, outputBits: Int) -> PageTableWalkStep {
        let kind = kind(entry, level: level)
        guard kind != .invalid else { return .fault(.translation) }
        let address = entry & ArmDescriptor.addressMask
        if address & ~Radix.mask(bits: outputBits) != 0 { return .fault(.addressSize) }
        if kind == .table { return .table(address) }
        return .leaf(address & ~(Radix.span(level) - 1))
    }

    /// The bits shared by the children when the block `entry` at `level` is split: the same
    /// attributes, as blocks (bit 1 = 0) or, one level above the pages, as pages (bit 1 = 1).
    @inlinable
    static func splitChildBits(_ entry: UInt64, level: Int) -> UInt64 {
        var bits = entry & ~ArmDescriptor.addressMask & ~ArmDescriptor.contiguous
        if level - 1 == 1 { bits |= ArmDescriptor.tableOrPage } else { bits &= ~ArmDescriptor.tableOrPage }
        return bits
    }

    /// Levels of a block or page: engine 1 (page), 2 and 3 (2 MiB and 1 GiB blocks).
    @inlinable
    static func mayMapLeaf(atLevel level: Int, topLevel: Int) -> Bool { level <= 3 && level <= topLevel }
}
