// The SMMUv3 programming interface this model implements (architecture specification, §6):
// which features it has, the ID registers that report them, and the register offsets of the
// Non-secure page 0 / page 1 interface that software programs.

/// What a modelled SMMUv3 implements. The ID registers (``SMMUv3IDRegisters``) are computed
/// from it, bit-exactly.
public struct SMMUv3Features: Hashable, Sendable {
    /// Stage 1 translation (`IDR0.S1P`).
    public var stage1 = true
    /// Stage 2 translation (`IDR0.S2P`).
    public var stage2 = true
    /// StreamID width in bits (`IDR1.SIDSIZE`, at most 32).
    public var streamIDBits = 16
    /// SubstreamID (PASID) width in bits (`IDR1.SSIDSIZE`, at most 20; 0: no substreams).
    public var substreamIDBits = 20
    /// 2-level stream tables (`IDR0.ST_LEVEL == 0b01`).
    public var twoLevelStreamTable = true
    /// 2-level CD tables (`IDR0.CD2L`).
    public var twoLevelCDTable = true
    /// PCIe ATS (`IDR0.ATS`).
    public var ats = true
    /// PCIe PRI (`IDR0.PRI`).
    public var pri = true
    /// Hardware update of the access flag (`IDR0.HTTU >= 0b01`).
    public var hardwareAccessFlag = true
    /// Hardware update of the dirty state (`IDR0.HTTU == 0b10`); needs ``hardwareAccessFlag``.
    public var hardwareDirtyState = true
    /// Coherent structure and table accesses (`IDR0.COHACC`).
    public var coherent = true
    /// Broadcast TLB maintenance from the PEs (`IDR0.BTM`). The model has no PEs: off.
    public var broadcastTLBMaintenance = false
    /// MSIs, used by `CMD_SYNC` completion signalling (`IDR0.MSI`).
    public var msi = true
    /// Range invalidation and level hints (`IDR3.RIL`).
    public var rangeInvalidation = true
    /// Stage 2 forced write-back (`IDR3.FWB`): lets the kernel's driver offer nesting without a
    /// cache-coherent root complex.
    public var forcedWriteBack = true
    /// Output (physical) address size in bits (`IDR5.OAS`): 32, 36, 40, 42, 44, 48 or 52.
    public var outputAddressBits = 48
    /// Log2 of the largest command queue (`IDR1.CMDQS`, at most 19).
    public var commandQueueMaxLog2 = 19
    /// Log2 of the largest event queue (`IDR1.EVTQS`, at most 19).
    public var eventQueueMaxLog2 = 19
    /// Log2 of the largest PRI queue (`IDR1.PRIQS`, at most 19).
    public var priQueueMaxLog2 = 19
    /// Entries of the TLB (a set of tagged translations; the least recently inserted goes first
    /// when it is full).
    public var tlbCapacity = 4096
    /// `SMMU_IIDR`: the implementation identification (ProductID [31:20], Variant [19:16],
    /// Revision [15:12], Implementer [11:0]). The model's own value: implementer 0 (none
    /// registered with JEP106), product 0x5F1 ("soft"), so no errata workaround keyed on a real
    /// part applies.
    public var iidr: UInt32 = 0x5F10_0000
    /// `SMMU_AIDR`: the architecture revision, SMMUv3.2 (`ArchMajorRev` 0, `ArchMinorRev` 2).
    public var aidr: UInt32 = 0x02

    /// The default model: both stages, 16-bit StreamIDs, 20-bit SubstreamIDs, ATS, PRI, HTTU
    /// with dirty state, range invalidation, FWB, 48-bit output addresses.
    public init() {}

    /// The flags command decoding depends on.
    public var commandFeatures: SMMUv3CommandFeatures {
        SMMUv3CommandFeatures(stage1: stage1, stage2: stage2, rangeInvalidation: rangeInvalidation, hyp: false)
    }

    /// The ID registers for these features.
    public var idRegisters: SMMUv3IDRegisters { SMMUv3IDRegisters(self) }
}

/// `SMMU_IDR0` … `SMMU_IDR5`, `SMMU_IIDR` and `SMMU_AIDR` (§6.3.1 – §6.3.6).
public struct SMMUv3IDRegisters: Hashable, Sendable {
    /// `SMMU_IDR0` … `SMMU_IDR5`, in order.
    public var idr: [UInt32]
    /// `SMMU_IIDR`.
    public var iidr: UInt32
    /// `SMMU_AIDR`.
    public var aidr: UInt32

    /// The register values of an SMMU with `features`.
    public init(_ features: SMMUv3Features) {
        var idr0: UInt32 = 0
        if features.stage2 { idr0 |= 1 << 0 }                       // S2P
        if features.stage1 { idr0 |= 1 << 1 }                       // S1P
        idr0 |= 2 << 2                                              // TTF: AArch64 only
        if features.coherent { idr0 |= 1 << 4 }                     // COHACC
        if features.broadcastTLBMaintenance { idr0 |= 1 << 5 }      // BTM
        let httu: UInt32 = features.hardwareDirtyState ? 2 : features.hardwareAccessFlag ? 1 : 0
        idr0 |= httu << 6                                           // HTTU
        if features.ats { idr0 |= 1 << 10 }                         // ATS
        idr0 |= 1 << 12                                             // ASID16
        if features.msi { idr0 |= 1 << 13 }                         // MSI
        if features.pri { idr0 |= 1 << 16 }                         // PRI
        idr0 |= 1 << 18                                             // VMID16
        if features.twoLevelCDTable { idr0 |= 1 << 19 }             // CD2L
        idr0 |= 2 << 21                                             // TTENDIAN: little-endian
        idr0 |= 1 << 24                                             // STALL_MODEL: stalls not supported
        idr0 |= 1 << 26                                             // TERM_MODEL: terminate with abort
        if features.twoLevelStreamTable { idr0 |= 1 << 27 }         // ST_LEVEL: 2-level
        var idr1: UInt32 = UInt32(features.streamIDBits) & 0x3F     // SIDSIZE
        idr1 |= (UInt32(features.substreamIDBits) & 0x1F) << 6      // SSIDSIZE
        idr1 |= (UInt32(features.priQueueMaxLog2) & 0x1F) << 11     // PRIQS
        idr1 |= (UInt32(features.eventQueueMaxLog2) & 0x1F) << 16   // EVTQS
        idr1 |= (UInt32(features.commandQueueMaxLog2) & 0x1F) << 21 // CMDQS
        var idr3: UInt32 = 0
        if features.forcedWriteBack { idr3 |= 1 << 8 }              // FWB
        if features.rangeInvalidation { idr3 |= 1 << 10 }           // RIL
        var idr5: UInt32 = UInt32(SMMUv3AddressSize.encoding(forBits: features.outputAddressBits) ?? 5) // OAS
        idr5 |= 1 << 4                                              // GRAN4K
        idr = [idr0, idr1, 0, idr3, 0, idr5]
        iidr = features.iidr
        aidr = features.aidr
    }
}

/// Register offsets of the Non-secure programming interface (§6.2). Page 1 registers (event and
/// PRI queue indexes) are at `0x10000 +` their page 0 alias.
public enum SMMUv3Register: UInt32, Sendable, CaseIterable {
    /// `SMMU_IDR0`.
    case idr0 = 0x00
    /// `SMMU_IDR1`.
    case idr1 = 0x04
    /// `SMMU_IDR2`.
    case idr2 = 0x08
    /// `SMMU_IDR3`.
    case idr3 = 0x0C
    /// `SMMU_IDR4`.
    case idr4 = 0x10
    /// `SMMU_IDR5`.
    case idr5 = 0x14
    /// `SMMU_IIDR`.
    case iidr = 0x18
    /// `SMMU_AIDR`.
    case aidr = 0x1C
    /// `SMMU_CR0`: `SMMUEN` [0], `PRIQEN` [1], `EVTQEN` [2], `CMDQEN` [3], `ATSCHK` [4].
    case cr0 = 0x20
    /// `SMMU_CR0ACK`.
    case cr0ack = 0x24
    /// `SMMU_CR1`: table and queue cacheability.
    case cr1 = 0x28
    /// `SMMU_CR2`: `E2H` [0], `RECINVSID` [1], `PTM` [2].
    case cr2 = 0x2C
    /// `SMMU_GBPA`: global bypass attribute (`ABORT` [20]).
    case gbpa = 0x44
    /// `SMMU_IRQ_CTRL`.
    case irqCtrl = 0x50
    /// `SMMU_IRQ_CTRLACK`.
    case irqCtrlAck = 0x54
    /// `SMMU_GERROR`: active global errors (`CMDQ_ERR` [0], `EVTQ_ABT_ERR` [2], `PRIQ_ABT_ERR` [3]).
    case gerror = 0x60
    /// `SMMU_GERRORN`: software toggles bits to acknowledge global errors.
    case gerrorn = 0x64
    /// `SMMU_STRTAB_BASE` (64-bit): `ADDR` [51:6], `RA` [62].
    case strtabBase = 0x80
    /// `SMMU_STRTAB_BASE_CFG`: `LOG2SIZE` [5:0], `SPLIT` [10:6], `FMT` [17:16].
    case strtabBaseCfg = 0x88
    /// `SMMU_CMDQ_BASE` (64-bit): `LOG2SIZE` [4:0], `ADDR` [51:5], `RA` [62].
    case cmdqBase = 0x90
    /// `SMMU_CMDQ_PROD`: `WR` index and wrap bit.
    case cmdqProd = 0x98
    /// `SMMU_CMDQ_CONS`: `RD` index and wrap bit, `ERR` [30:24].
    case cmdqCons = 0x9C
    /// `SMMU_EVENTQ_BASE` (64-bit).
    case eventqBase = 0xA0
    /// `SMMU_EVENTQ_PROD` (page 1): `WR`, wrap, `OVFLG` [31].
    case eventqProd = 0x100A8
    /// `SMMU_EVENTQ_CONS` (page 1): `RD`, wrap, `OVACKFLG` [31].
    case eventqCons = 0x100AC
    /// `SMMU_PRIQ_BASE` (64-bit).
    case priqBase = 0xC0
    /// `SMMU_PRIQ_PROD` (page 1).
    case priqProd = 0x100C8
    /// `SMMU_PRIQ_CONS` (page 1).
    case priqCons = 0x100CC
}

/// Bits of `SMMU_CR0` and `SMMU_CR0ACK`.
public enum SMMUv3CR0 {
    /// `SMMUEN`: translation is enabled (otherwise `GBPA` applies).
    public static let smmuEnable: UInt32 = 1 << 0
    /// `PRIQEN`.
    public static let priQueueEnable: UInt32 = 1 << 1
    /// `EVTQEN`.
    public static let eventQueueEnable: UInt32 = 1 << 2
    /// `CMDQEN`.
    public static let commandQueueEnable: UInt32 = 1 << 3
    /// `ATSCHK`: ATS-translated transactions are checked against the STE.
    public static let atsCheck: UInt32 = 1 << 4
}

/// Bits of `SMMU_GERROR` / `SMMU_GERRORN`.
public enum SMMUv3GError {
    /// `CMDQ_ERR`: the command queue stopped on an error (see `CMDQ_CONS.ERR`).
    public static let commandQueueError: UInt32 = 1 << 0
    /// `EVTQ_ABT_ERR`: an event queue write aborted.
    public static let eventQueueAbort: UInt32 = 1 << 2
    /// `PRIQ_ABT_ERR`: a PRI queue write aborted.
    public static let priQueueAbort: UInt32 = 1 << 3
}

/// Command queue error codes (`SMMU_CMDQ_CONS.ERR`, §7.1).
public enum SMMUv3CommandError: UInt8, Sendable {
    /// `CERROR_NONE`.
    case none = 0
    /// `CERROR_ILL`: a malformed command.
    case illegal = 1
    /// `CERROR_ABT`: fetching the command aborted.
    case abort = 2
    /// `CERROR_ATC_INV_SYNC`: an ATC invalidation did not complete by the `CMD_SYNC`.
    case atcInvalidationSync = 3
}
