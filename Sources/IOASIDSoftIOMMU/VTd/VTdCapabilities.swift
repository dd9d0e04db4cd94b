// The Capability and Extended Capability registers of a VT-d remapping unit (VT-d spec §11.4.2,
// §11.4.3), bit-exact, and the configuration the model derives them from.
//
// The model implements scalable mode only: ECAP.SMTS is always set, and the translation types,
// tables and invalidation descriptors are the scalable-mode ones. Legacy-mode root and context
// entries are not modelled.

/// The Capability Register (`CAP_REG`, offset 0x08) of a VT-d remapping unit.
///
/// Each property reads one field at its architectural bit position; ``init(rawValue:)`` takes
/// any 64-bit value, ``VTdConfiguration/capability`` builds the one the model reports.
public struct VTdCapability: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The register value.
    public var rawValue: UInt64
    /// Wraps a register value.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    @inline(__always) private func field(_ low: Int, _ width: Int) -> UInt64 {
        (rawValue >> UInt64(low)) & ((1 << UInt64(width)) - 1)
    }
    @inline(__always) private func bit(_ n: Int) -> Bool { rawValue >> UInt64(n) & 1 != 0 }

    /// ND (bits 2:0): the encoded number of domain IDs.
    public var numberOfDomainsField: UInt8 { UInt8(field(0, 3)) }
    /// The number of domain IDs the unit supports, 2^(4 + 2·ND).
    public var numberOfDomains: Int { 1 << (4 + 2 * Int(numberOfDomainsField)) }
    /// AFL (bit 3): advanced fault logging.
    public var advancedFaultLogging: Bool { bit(3) }
    /// RWBF (bit 4): software must flush the write buffer after changing tables.
    public var requiredWriteBufferFlushing: Bool { bit(4) }
    /// CM (bit 7): caching mode — not-present and erroneous entries may be cached.
    public var cachingMode: Bool { bit(7) }
    /// SAGAW (bits 12:8): bit 1 = 39-bit (3-level), bit 2 = 48-bit (4-level), bit 3 = 57-bit
    /// (5-level) second-stage tables supported.
    public var sagaw: UInt8 { UInt8(field(8, 5)) }
    /// MGAW (bits 21:16, value + 1): the maximum guest address width in bits.
    public var mgaw: Int { Int(field(16, 6)) + 1 }
    /// ZLR (bit 22): zero-length reads are supported.
    public var zeroLengthRead: Bool { bit(22) }
    /// FRO (bits 33:24): the offset of the first fault recording register, in bytes.
    public var faultRecordingOffset: Int { Int(field(24, 10)) * 16 }
    /// SSLPS (bits 37:34): second-stage large pages; bit 0 = 2 MiB, bit 1 = 1 GiB.
    public var secondStageLargePageSupport: UInt8 { UInt8(field(34, 4)) }
    /// PSI (bit 39): page-selective IOTLB invalidation is supported.
    public var pageSelectiveInvalidation: Bool { bit(39) }
    /// NFR (bits 47:40, value + 1): the number of fault recording registers.
    public var numberOfFaultRecordingRegisters: Int { Int(field(40, 8)) + 1 }
    /// MAMV (bits 53:48): the largest address mask of a page-selective IOTLB invalidation.
    public var maximumAddressMaskValue: Int { Int(field(48, 6)) }
    /// DWD (bit 54): write draining.
    public var writeDraining: Bool { bit(54) }
    /// DRD (bit 55): read draining.
    public var readDraining: Bool { bit(55) }
    /// FS1GP (bit 56): first-stage 1 GiB pages.
    public var firstStage1GiBPages: Bool { bit(56) }
    /// PI (bit 59): posted interrupts.
    public var postedInterrupts: Bool { bit(59) }
    /// FS5LP (bit 60): first-stage 5-level paging.
    public var firstStage5LevelPaging: Bool { bit(60) }

    /// Whether second-stage tables with `levels` levels (3, 4 or 5) are supported (SAGAW).
    public func supportsSecondStage(levels: Int) -> Bool {
        (3...5).contains(levels) && sagaw >> UInt8(levels - 2) & 1 != 0
    }

    /// `CAP_REG=0x…` in hexadecimal.
    public var description: String { "CAP_REG=0x" + String(rawValue, radix: 16) }
}

/// The Extended Capability Register (`ECAP_REG`, offset 0x10) of a VT-d remapping unit.
public struct VTdExtendedCapability: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The register value.
    public var rawValue: UInt64
    /// Wraps a register value.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    @inline(__always) private func field(_ low: Int, _ width: Int) -> UInt64 {
        (rawValue >> UInt64(low)) & ((1 << UInt64(width)) - 1)
    }
    @inline(__always) private func bit(_ n: Int) -> Bool { rawValue >> UInt64(n) & 1 != 0 }

    /// C (bit 0): page-walk coherency.
    public var pageWalkCoherency: Bool { bit(0) }
    /// QI (bit 1): queued invalidation.
    public var queuedInvalidation: Bool { bit(1) }
    /// DT (bit 2): device-TLB (ATS) support.
    public var deviceTLB: Bool { bit(2) }
    /// IR (bit 3): interrupt remapping.
    public var interruptRemapping: Bool { bit(3) }
    /// PT (bit 6): pass-through translation.
    public var passThrough: Bool { bit(6) }
    /// SC (bit 7): snoop control.
    public var snoopControl: Bool { bit(7) }
    /// IRO (bits 17:8): the offset of the IOTLB registers, in bytes.
    public var iotlbRegisterOffset: Int { Int(field(8, 10)) * 16 }
    /// MHMV (bits 23:20): maximum handle mask value (interrupt entry cache invalidation).
    public var maximumHandleMaskValue: Int { Int(field(20, 4)) }
    /// NEST (bit 26): nested translation.
    public var nestedTranslation: Bool { bit(26) }
    /// PRS (bit 29): page requests.
    public var pageRequests: Bool { bit(29) }
    /// ERS (bit 30): execute requests.
    public var executeRequests: Bool { bit(30) }
    /// SRS (bit 31): supervisor requests.
    public var supervisorRequests: Bool { bit(31) }
    /// NWFS (bit 33): no-write flag in ATS translation requests.
    public var noWriteFlag: Bool { bit(33) }
    /// EAFS (bit 34): extended accessed flag.
    public var extendedAccessedFlag: Bool { bit(34) }
    /// PSS (bits 39:35, value + 1): the number of PASID bits supported.
    public var pasidSizeSupported: Int { Int(field(35, 5)) + 1 }
    /// PASID (bit 40): process address space IDs.
    public var pasid: Bool { bit(40) }
    /// DIT (bit 41): device-TLB invalidation throttling.
    public var deviceTLBInvalidationThrottling: Bool { bit(41) }
    /// PDS (bit 42): page-request drain.
    public var pageRequestDrain: Bool { bit(42) }
    /// SMTS (bit 43): scalable-mode translation.
    public var scalableMode: Bool { bit(43) }
    /// SSADS (bit 45): second-stage accessed/dirty bits.
    public var secondStageAccessedDirty: Bool { bit(45) }
    /// SSTS (bit 46): second-stage translation.
    public var secondStageTranslation: Bool { bit(46) }
    /// FSTS (bit 47): first-stage translation.
    public var firstStageTranslation: Bool { bit(47) }
    /// SMPWCS (bit 48): scalable-mode page-walk coherency.
    public var scalableModePageWalkCoherency: Bool { bit(48) }
    /// RPS (bit 49): RID_PASID field of the context entry supported.
    public var ridPASID: Bool { bit(49) }

    /// `ECAP_REG=0x…` in hexadecimal.
    public var description: String { "ECAP_REG=0x" + String(rawValue, radix: 16) }
}

/// What a modelled VT-d remapping unit supports; the source of its CAP and ECAP values.
///
/// The defaults describe a current server-class unit in scalable mode: 48-bit 4-level second
/// stage (SAGAW 4-level), MGAW 48, 2 MiB and 1 GiB pages in both stages, 20-bit PASIDs, nested
/// translation, first- and second-stage translation, pass-through, device TLBs, page requests,
/// supervisor requests, second-stage accessed/dirty bits, 65 536 domain IDs and 8 fault
/// recording registers.
public struct VTdConfiguration: Hashable, Sendable {
    /// The second-stage table depths supported (3, 4, 5): SAGAW.
    public var secondStageLevels: Set<Int> = [4]
    /// The maximum guest address width (MGAW), 39 … 57.
    public var maximumGuestAddressWidth: Int = 48
    /// The host address width: output addresses and table pointers must fit (the ACPI DMAR HAW).
    public var hostAddressWidth: Int = 52
    /// Second-stage 2 MiB pages (SSLPS bit 0).
    public var secondStage2MiBPages = true
    /// Second-stage 1 GiB pages (SSLPS bit 1).
    public var secondStage1GiBPages = true
    /// First-stage 1 GiB pages (FS1GP).
    public var firstStage1GiBPages = true
    /// First-stage 5-level paging (FS5LP).
    public var firstStage5LevelPaging = true
    /// The number of PASID bits (PSS + 1); 0 disables PASID support (ECAP.PASID = 0).
    public var pasidBits: Int = 20
    /// Nested translation (ECAP.NEST).
    public var nestedTranslation = true
    /// First-stage translation (ECAP.FSTS).
    public var firstStageTranslation = true
    /// Second-stage translation (ECAP.SSTS).
    public var secondStageTranslation = true
    /// Pass-through translation (ECAP.PT).
    public var passThrough = true
    /// Device TLBs / ATS (ECAP.DT).
    public var deviceTLB = true
    /// Page requests (ECAP.PRS).
    public var pageRequests = true
    /// Supervisor requests (ECAP.SRS).
    public var supervisorRequests = true
    /// Execute requests (ECAP.ERS).
    public var executeRequests = false
    /// The extended accessed flag of first-stage entries (ECAP.EAFS).
    public var extendedAccessedFlag = false
    /// Second-stage accessed and dirty bits (ECAP.SSADS), used for dirty tracking.
    public var secondStageAccessedDirty = true
    /// Log2 of the number of domain IDs: 4, 6, … 16 (CAP.ND = (value − 4) / 2).
    public var domainIDBits: Int = 16
    /// The number of fault recording registers (CAP.NFR + 1), 1 … 256.
    public var faultRecordingRegisters: Int = 8
    /// The largest address mask of a page-selective invalidation (CAP.MAMV).
    public var maximumAddressMask: Int = 18
    /// **Test knob, not a behaviour of real hardware; off by default.** When on, the
    /// second-stage walker makes no accessed/dirty updates even where a PASID entry sets SSADE:
    /// the unit still reports SSADS and dirty tracking can be switched on, but no device write
    /// is ever recorded as dirty. It exists to show that a test of dirty tracking (a live
    /// migration with an assigned device) notices lost dirty pages; `ioasid run` turns it on
    /// with the environment variable `IOASID_TEST_NO_DIRTY_BITS=1`.
    public var dropsAccessedDirtyUpdates = false

    /// The default configuration (see the type's documentation).
    public init() {}

    /// The offset of the fault recording registers in the register file (CAP.FRO · 16).
    public static let faultRecordingOffset = 0x400
    /// The offset of the IOTLB registers in the register file (ECAP.IRO · 16).
    public static let iotlbRegisterOffset = 0x500

    /// The Capability Register the unit reports.
    public var capability: VTdCapability {
        var v: UInt64 = 0
        v |= UInt64((domainIDBits - 4) / 2) & 7                           // ND
        var sagaw: UInt64 = 0
        for l in secondStageLevels where (3...5).contains(l) { sagaw |= 1 << UInt64(l - 2) }
        v |= sagaw << 8                                                    // SAGAW
        v |= UInt64(maximumGuestAddressWidth - 1) << 16                    // MGAW
        v |= UInt64(Self.faultRecordingOffset / 16) << 24                  // FRO
        var sslps: UInt64 = 0
        if secondStage2MiBPages { sslps |= 1 }
        if secondStage1GiBPages { sslps |= 2 }
        v |= sslps << 34                                                   // SSLPS
        v |= 1 << 39                                                       // PSI
        v |= UInt64(faultRecordingRegisters - 1) << 40                     // NFR
        v |= UInt64(maximumAddressMask) << 48                              // MAMV
        v |= 1 << 54 | 1 << 55                                             // DWD, DRD
        if firstStage1GiBPages { v |= 1 << 56 }                            // FS1GP
        if firstStage5LevelPaging { v |= 1 << 60 }                         // FS5LP
        return VTdCapability(rawValue: v)
    }

    /// The Extended Capability Register the unit reports.
    public var extendedCapability: VTdExtendedCapability {
        var v: UInt64 = 0
        v |= 1 << 0                                                        // C: coherent walks
        v |= 1 << 1                                                        // QI
        if deviceTLB { v |= 1 << 2 }                                       // DT
        if passThrough { v |= 1 << 6 }                                     // PT
        v |= 1 << 7                                                        // SC
        v |= UInt64(Self.iotlbRegisterOffset / 16) << 8                    // IRO
        if nestedTranslation { v |= 1 << 26 }                              // NEST
        if pageRequests { v |= 1 << 29 }                                   // PRS
        if executeRequests { v |= 1 << 30 }                                // ERS
        if supervisorRequests { v |= 1 << 31 }                             // SRS
        v |= 1 << 33                                                       // NWFS
        if extendedAccessedFlag { v |= 1 << 34 }                           // EAFS
        if pasidBits > 0 {
            v |= UInt64(pasidBits - 1) << 35                               // PSS
            v |= 1 << 40                                                   // PASID
        }
        v |= 1 << 42                                                       // PDS
        v |= 1 << 43                                                       // SMTS
        if secondStageAccessedDirty { v |= 1 << 45 }                       // SSADS
        if secondStageTranslation { v |= 1 << 46 }                         // SSTS
        if firstStageTranslation { v |= 1 << 47 }                          // FSTS
        v |= 1 << 48                                                       // SMPWCS
        v |= 1 << 49                                                       // RPS
        return VTdExtendedCapability(rawValue: v)
    }
}
