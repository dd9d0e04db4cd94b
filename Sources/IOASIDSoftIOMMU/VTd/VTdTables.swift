// The scalable-mode translation structures of VT-d (spec §9.1, §9.4, §9.5, §9.6), bit-exact:
//
//   RTADDR_REG ─► root table (256 × 128-bit root entries, indexed by bus)
//                   └─► lower / upper scalable-mode context table (128 × 256-bit entries each,
//                       devfn 0–127 / 128–255)
//                         └─► PASID directory (64-bit entries, indexed by PASID[19:6])
//                               └─► PASID table (64 × 512-bit entries, indexed by PASID[5:0])
//                                     └─► first-stage / second-stage tables by PGTT
//
// Each entry type is a value with its raw words, named accessors for every field the model
// uses, the reserved-bit masks the hardware checks, and `read`/`write` against PhysicalMemory.
// Software (the driver, tests) builds entries with the mutating setters and writes them; the
// hardware model reads them.

/// A scalable-mode root entry (128 bits; VT-d spec §9.2): pointers to the lower (devfn 0–127)
/// and upper (devfn 128–255) scalable-mode context tables of one bus.
public struct VTdRootEntry: Hashable, Sendable {
    /// Bits 63:0: LP (bit 0) and LCTP (bits 63:12).
    public var low: UInt64
    /// Bits 127:64: UP (bit 64) and UCTP (bits 127:76).
    public var high: UInt64

    /// Creates an entry from its two words.
    public init(low: UInt64 = 0, high: UInt64 = 0) { self.low = low; self.high = high }

    /// The size of an entry in bytes.
    public static let size: UInt64 = 16
    /// Bits 11:1 of each half are reserved.
    public static let reservedMask: UInt64 = 0xFFE

    /// LP: the lower context table is present.
    public var lowerPresent: Bool {
        get { low & 1 != 0 }
        set { low = newValue ? low | 1 : low & ~1 }
    }
    /// LCTP: the physical address of the lower context table (devfn 0–127).
    public var lowerContextTable: UInt64 {
        get { low & VTdAddress.pageMask }
        set { low = (low & ~VTdAddress.pageMask) | (newValue & VTdAddress.pageMask) }
    }
    /// UP: the upper context table is present.
    public var upperPresent: Bool {
        get { high & 1 != 0 }
        set { high = newValue ? high | 1 : high & ~1 }
    }
    /// UCTP: the physical address of the upper context table (devfn 128–255).
    public var upperContextTable: UInt64 {
        get { high & VTdAddress.pageMask }
        set { high = (high & ~VTdAddress.pageMask) | (newValue & VTdAddress.pageMask) }
    }

    /// The address of the root entry for `bus` in the root table at `rootTable`.
    public static func address(rootTable: UInt64, bus: UInt8) -> UInt64 { rootTable + UInt64(bus) * size }

    /// Reads the entry at `address`.
    public static func read(_ memory: PhysicalMemory, at address: UInt64) -> VTdRootEntry {
        VTdRootEntry(low: memory.read64(address), high: memory.read64(address + 8))
    }
    /// Writes the entry at `address` (high word first, so a present low half never points to a
    /// half-written entry).
    public func write(_ memory: PhysicalMemory, at address: UInt64) {
        memory.write64(address + 8, high)
        memory.write64(address, low)
    }
}

/// A scalable-mode context entry (256 bits; VT-d spec §9.4): where the PASID directory of one
/// function is, and how its requests are handled.
public struct VTdContextEntry: Hashable, Sendable {
    /// The four 64-bit words, bits 63:0 first.
    public var words: (UInt64, UInt64, UInt64, UInt64)

    /// Creates an entry from its words.
    public init(_ w0: UInt64 = 0, _ w1: UInt64 = 0, _ w2: UInt64 = 0, _ w3: UInt64 = 0) { words = (w0, w1, w2, w3) }

    /// The size of an entry in bytes.
    public static let size: UInt64 = 32
    /// Reserved bits of word 0: bits 8:5.
    public static let reservedMask0: UInt64 = 0x1E0
    /// Reserved bits of word 1: bits 127:85 (RID_PASID is 83:64, RID_PRIV bit 84).
    public static let reservedMask1: UInt64 = ~UInt64(0x1F_FFFF)

    /// P (bit 0): present.
    public var present: Bool { get { bit0(0) } set { set0(0, newValue) } }
    /// FPD (bit 1): fault processing disable — faults of this function are not recorded.
    public var faultProcessingDisable: Bool { get { bit0(1) } set { set0(1, newValue) } }
    /// DTE (bit 2): device-TLB enable — ATS translation requests and translated requests allowed.
    public var deviceTLBEnable: Bool { get { bit0(2) } set { set0(2, newValue) } }
    /// PASIDE (bit 3): requests with a PASID are allowed.
    public var pasidEnable: Bool { get { bit0(3) } set { set0(3, newValue) } }
    /// PRE (bit 4): page requests are allowed.
    public var pageRequestEnable: Bool { get { bit0(4) } set { set0(4, newValue) } }
    /// PDTS (bits 11:9): the PASID directory holds 2^(PDTS + 7) entries.
    public var pasidDirectorySizeField: UInt8 {
        get { UInt8(words.0 >> 9 & 7) }
        set { words.0 = (words.0 & ~(7 << 9)) | (UInt64(newValue & 7) << 9) }
    }
    /// The number of PASID directory entries, 2^(PDTS + 7).
    public var pasidDirectoryEntries: Int { 1 << (Int(pasidDirectorySizeField) + 7) }
    /// The number of PASIDs the directory covers (64 per directory entry).
    public var pasidLimit: UInt32 { UInt32(pasidDirectoryEntries) * 64 }
    /// PASIDDIRPTR (bits 63:12): the physical address of the PASID directory.
    public var pasidDirectory: UInt64 {
        get { words.0 & VTdAddress.pageMask }
        set { words.0 = (words.0 & ~VTdAddress.pageMask) | (newValue & VTdAddress.pageMask) }
    }
    /// RID_PASID (bits 83:64): the PASID that requests without a PASID use.
    public var ridPASID: UInt32 {
        get { UInt32(words.1 & 0xF_FFFF) }
        set { words.1 = (words.1 & ~0xF_FFFF) | UInt64(newValue & 0xF_FFFF) }
    }
    /// RID_PRIV (bit 84): requests without a PASID are treated as privileged.
    public var ridPrivileged: Bool {
        get { words.1 >> 20 & 1 != 0 }
        set { words.1 = newValue ? words.1 | 1 << 20 : words.1 & ~(1 << 20) }
    }

    /// Whether a reserved bit is set.
    public var hasReservedBits: Bool {
        words.0 & Self.reservedMask0 != 0 || words.1 & Self.reservedMask1 != 0 || words.2 != 0 || words.3 != 0
    }

    @inline(__always) private func bit0(_ n: UInt64) -> Bool { words.0 >> n & 1 != 0 }
    @inline(__always) private mutating func set0(_ n: UInt64, _ v: Bool) {
        words.0 = v ? words.0 | 1 << n : words.0 & ~(1 << n)
    }

    /// PDTS for a directory covering at least `pasids` PASIDs (clamped to 0 … 7).
    public static func directorySizeField(covering pasids: UInt32) -> UInt8 {
        var field: UInt8 = 0
        while field < 7 && (UInt32(1) << (UInt32(field) + 7)) * 64 < pasids { field += 1 }
        return field
    }

    /// The address of the context entry of `devfn` given the root entry of its bus, or nil when
    /// the half of the root entry that covers it is not present.
    public static func address(root: VTdRootEntry, devfn: UInt8) -> UInt64? {
        if devfn < 128 {
            guard root.lowerPresent else { return nil }
            return root.lowerContextTable + UInt64(devfn) * size
        }
        guard root.upperPresent else { return nil }
        return root.upperContextTable + UInt64(devfn - 128) * size
    }

    /// Reads the entry at `address`.
    public static func read(_ memory: PhysicalMemory, at address: UInt64) -> VTdContextEntry {
        VTdContextEntry(memory.read64(address), memory.read64(address + 8), memory.read64(address + 16),
                        memory.read64(address + 24))
    }
    /// Writes the entry at `address`, word 0 (with P) last.
    public func write(_ memory: PhysicalMemory, at address: UInt64) {
        memory.write64(address + 24, words.3)
        memory.write64(address + 16, words.2)
        memory.write64(address + 8, words.1)
        memory.write64(address, words.0)
    }

    /// Whether two entries have the same bits.
    public static func == (a: Self, b: Self) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3
    }
    /// Hashes the entry's bits.
    public func hash(into h: inout Hasher) {
        h.combine(words.0); h.combine(words.1); h.combine(words.2); h.combine(words.3)
    }
}

/// A scalable-mode PASID directory entry (64 bits; VT-d spec §9.5): the PASID table of 64
/// consecutive PASIDs.
public struct VTdPASIDDirectoryEntry: RawRepresentable, Hashable, Sendable {
    /// The entry value.
    public var rawValue: UInt64
    /// Wraps an entry value.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The size of an entry in bytes.
    public static let size: UInt64 = 8
    /// Bits 11:2 are reserved.
    public static let reservedMask: UInt64 = 0xFFC

    /// P (bit 0): present.
    public var present: Bool {
        get { rawValue & 1 != 0 }
        set { rawValue = newValue ? rawValue | 1 : rawValue & ~1 }
    }
    /// FPD (bit 1): fault processing disable for the PASIDs of this entry.
    public var faultProcessingDisable: Bool {
        get { rawValue & 2 != 0 }
        set { rawValue = newValue ? rawValue | 2 : rawValue & ~2 }
    }
    /// SMPTBLPTR (bits 63:12): the physical address of the PASID table.
    public var pasidTable: UInt64 {
        get { rawValue & VTdAddress.pageMask }
        set { rawValue = (rawValue & ~VTdAddress.pageMask) | (newValue & VTdAddress.pageMask) }
    }

    /// The address of the directory entry for `pasid` in the directory at `directory`.
    public static func address(directory: UInt64, pasid: UInt32) -> UInt64 { directory + UInt64(pasid >> 6) * size }
}

/// The PASID-granular translation type (PGTT, bits 8:6 of a scalable-mode PASID entry).
public enum VTdPGTT: UInt8, Hashable, Sendable, CaseIterable {
    /// 001b: first-stage translation only (IOVA → HPA through an x86-64 table).
    case firstStage = 1
    /// 010b: second-stage translation only (IOVA → HPA through a VT-d second-stage table).
    case secondStage = 2
    /// 011b: nested — first stage (IOVA → GPA) with every table access and the output
    /// translated through the second stage (GPA → HPA).
    case nested = 3
    /// 100b: pass-through (the address is used untranslated).
    case passThrough = 4
}

/// A scalable-mode PASID table entry (512 bits; VT-d spec §9.6): how requests of one PASID are
/// translated.
public struct VTdPASIDEntry: Hashable, Sendable {
    /// The eight 64-bit words, bits 63:0 first.
    public var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    /// An all-zero (not present) entry.
    public init() { words = (0, 0, 0, 0, 0, 0, 0, 0) }
    /// An entry from its first four words (the upper 256 bits are reserved and zero).
    public init(_ w0: UInt64, _ w1: UInt64, _ w2: UInt64, _ w3: UInt64 = 0) { words = (w0, w1, w2, w3, 0, 0, 0, 0) }

    /// The size of an entry in bytes.
    public static let size: UInt64 = 64
    /// Reserved bits of word 0: bits 11:10.
    public static let reservedMask0: UInt64 = 0xC00
    /// Reserved bits of word 1: bits 86:80.
    public static let reservedMask1: UInt64 = 0x7F_0000
    /// Reserved bits of word 2: bits 139:136.
    public static let reservedMask2: UInt64 = 0xF00

    // MARK: Word 0

    /// P (bit 0): present.
    public var present: Bool { get { bit(0, 0) } set { set(0, 0, newValue) } }
    /// FPD (bit 1): fault processing disable.
    public var faultProcessingDisable: Bool { get { bit(0, 1) } set { set(0, 1, newValue) } }
    /// AW (bits 4:2): the second-stage address width: 1 = 39-bit (3-level), 2 = 48-bit
    /// (4-level), 3 = 57-bit (5-level).
    public var addressWidth: UInt8 {
        get { UInt8(words.0 >> 2 & 7) }
        set { words.0 = (words.0 & ~(7 << 2)) | (UInt64(newValue & 7) << 2) }
    }
    /// The number of second-stage levels AW selects (AW + 2), or nil for a reserved encoding.
    public var secondStageLevels: Int? { (1...3).contains(addressWidth) ? Int(addressWidth) + 2 : nil }
    /// SSEE (bit 5): second-stage execute enable (the X bit of second-stage entries is used).
    public var secondStageExecuteEnable: Bool { get { bit(0, 5) } set { set(0, 5, newValue) } }
    /// The raw PGTT field (bits 8:6).
    public var pgttField: UInt8 {
        get { UInt8(words.0 >> 6 & 7) }
        set { words.0 = (words.0 & ~(7 << 6)) | (UInt64(newValue & 7) << 6) }
    }
    /// PGTT as a translation type, or nil for a reserved encoding.
    public var pgtt: VTdPGTT? {
        get { VTdPGTT(rawValue: pgttField) }
        set { pgttField = newValue?.rawValue ?? 0 }
    }
    /// SSADE (bit 9): second-stage accessed/dirty flags are set by the walker.
    public var secondStageAccessedDirtyEnable: Bool { get { bit(0, 9) } set { set(0, 9, newValue) } }
    /// SSPTPTR (bits 63:12): the second-stage table's physical address.
    public var secondStageTable: UInt64 {
        get { words.0 & VTdAddress.pageMask }
        set { words.0 = (words.0 & ~VTdAddress.pageMask) | (newValue & VTdAddress.pageMask) }
    }

    // MARK: Word 1

    /// DID (bits 79:64): the domain ID that tags this PASID's cached translations.
    public var domainID: UInt16 {
        get { UInt16(truncatingIfNeeded: words.1) }
        set { words.1 = (words.1 & ~0xFFFF) | UInt64(newValue) }
    }
    /// PWSNP (bit 87): page-walk snoop.
    public var pageWalkSnoop: Bool { get { bit(1, 23) } set { set(1, 23, newValue) } }
    /// PGSNP (bit 88): page snoop.
    public var pageSnoop: Bool { get { bit(1, 24) } set { set(1, 24, newValue) } }

    // MARK: Word 2

    /// SRE (bit 128): supervisor (privileged) requests are allowed.
    public var supervisorRequestEnable: Bool { get { bit(2, 0) } set { set(2, 0, newValue) } }
    /// ERE (bit 129): execute requests are allowed.
    public var executeRequestEnable: Bool { get { bit(2, 1) } set { set(2, 1, newValue) } }
    /// FSPM (bits 131:130): first-stage paging mode, 0 = 4-level, 1 = 5-level.
    public var firstStagePagingMode: UInt8 {
        get { UInt8(words.2 >> 2 & 3) }
        set { words.2 = (words.2 & ~(3 << 2)) | (UInt64(newValue & 3) << 2) }
    }
    /// The number of first-stage levels FSPM selects (4 or 5), or nil for a reserved encoding.
    public var firstStageLevels: Int? {
        switch firstStagePagingMode { case 0: 4; case 1: 5; default: nil }
    }
    /// WPE (bit 132): write-protect enable — supervisor writes honour read-only pages.
    public var writeProtectEnable: Bool { get { bit(2, 4) } set { set(2, 4, newValue) } }
    /// NXE (bit 133): execute-disable (XD) bits of first-stage entries are honoured.
    public var noExecuteEnable: Bool { get { bit(2, 5) } set { set(2, 5, newValue) } }
    /// SMEP (bit 134): supervisor-mode execute prevention.
    public var supervisorModeExecutePrevention: Bool { get { bit(2, 6) } set { set(2, 6, newValue) } }
    /// EAFE (bit 135): the extended accessed flag (bit 10) of first-stage entries is set too.
    public var extendedAccessedFlagEnable: Bool { get { bit(2, 7) } set { set(2, 7, newValue) } }
    /// FSPTPTR (bits 191:140): the first-stage table's address (guest-physical under nesting).
    public var firstStageTable: UInt64 {
        get { words.2 & VTdAddress.pageMask }
        set { words.2 = (words.2 & ~VTdAddress.pageMask) | (newValue & VTdAddress.pageMask) }
    }

    /// Whether a reserved bit is set.
    public var hasReservedBits: Bool {
        words.0 & Self.reservedMask0 != 0 || words.1 & Self.reservedMask1 != 0 || words.2 & Self.reservedMask2 != 0
            || words.3 != 0 || words.4 != 0 || words.5 != 0 || words.6 != 0 || words.7 != 0
    }

    @inline(__always) private func word(_ i: Int) -> UInt64 {
        switch i { case 0: words.0; case 1: words.1; case 2: words.2; case 3: words.3
        case 4: words.4; case 5: words.5; case 6: words.6; default: words.7 }
    }
    @inline(__always) private mutating func setWord(_ i: Int, _ v: UInt64) {
        switch i { case 0: words.0 = v; case 1: words.1 = v; case 2: words.2 = v; case 3: words.3 = v
        case 4: words.4 = v; case 5: words.5 = v; case 6: words.6 = v; default: words.7 = v }
    }
    @inline(__always) private func bit(_ w: Int, _ n: UInt64) -> Bool { word(w) >> n & 1 != 0 }
    @inline(__always) private mutating func set(_ w: Int, _ n: UInt64, _ v: Bool) {
        let old = word(w)
        setWord(w, v ? old | 1 << n : old & ~(1 << n))
    }

    /// The address of the entry for `pasid` in the PASID table at `table`.
    public static func address(table: UInt64, pasid: UInt32) -> UInt64 { table + UInt64(pasid & 63) * size }

    /// Reads the entry at `address`.
    public static func read(_ memory: PhysicalMemory, at address: UInt64) -> VTdPASIDEntry {
        var e = VTdPASIDEntry()
        for i in 0..<8 { e.setWord(i, memory.read64(address + UInt64(i) * 8)) }
        return e
    }
    /// Writes the entry at `address`, word 0 (with P) last.
    public func write(_ memory: PhysicalMemory, at address: UInt64) {
        for i in (0..<8).reversed() { memory.write64(address + UInt64(i) * 8, word(i)) }
    }

    /// Whether two entries have the same bits.
    public static func == (a: Self, b: Self) -> Bool { (0..<8).allSatisfy { a.word($0) == b.word($0) } }
    /// Hashes the entry's bits.
    public func hash(into h: inout Hasher) { for i in 0..<8 { h.combine(word(i)) } }
}

/// Address helpers shared by the VT-d structures.
public enum VTdAddress {
    /// Bits 63:12: the page-frame part of a pointer field.
    public static let pageMask: UInt64 = ~0xFFF
}
