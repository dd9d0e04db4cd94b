// The Context Descriptor (SMMUv3 architecture specification, §5.4): 64 bytes, eight
// little-endian 64-bit words, one per SubstreamID in a CD table.

/// A Context Descriptor: the stage 1 translation regime of one substream (one PASID).
///
/// Fields are bit-exact to the architecture (IHI 0070 §5.4); property names follow the
/// specification's field names. The CD table is indexed by SubstreamID; in a nested
/// configuration the guest owns it and its address is a guest-physical address.
public struct SMMUv3ContextDescriptor: SMMUv3Structure512 {
    /// The eight 64-bit words of the descriptor, word 0 first.
    public var words: InlineArray<8, UInt64>

    /// An all-zero (invalid) descriptor.
    public init() { words = InlineArray(repeating: 0) }

    // MARK: Word 0

    /// `T0SZ`, bits [5:0]: the TTB0 region covers `64 - T0SZ` bits of VA.
    public var t0SZ: UInt64 {
        get { SMMUv3Field.get(words[0], 5, 0) }
        set { words[0] = SMMUv3Field.set(words[0], 5, 0, newValue) }
    }

    /// `TG0`, bits [7:6]: the TTB0 granule (see ``SMMUv3Granule``).
    public var tg0: UInt64 {
        get { SMMUv3Field.get(words[0], 7, 6) }
        set { words[0] = SMMUv3Field.set(words[0], 7, 6, newValue) }
    }

    /// `IR0`, bits [9:8]: inner cacheability of TTB0 walks.
    public var ir0: UInt64 {
        get { SMMUv3Field.get(words[0], 9, 8) }
        set { words[0] = SMMUv3Field.set(words[0], 9, 8, newValue) }
    }

    /// `OR0`, bits [11:10]: outer cacheability of TTB0 walks.
    public var or0: UInt64 {
        get { SMMUv3Field.get(words[0], 11, 10) }
        set { words[0] = SMMUv3Field.set(words[0], 11, 10, newValue) }
    }

    /// `SH0`, bits [13:12]: shareability of TTB0 walks.
    public var sh0: UInt64 {
        get { SMMUv3Field.get(words[0], 13, 12) }
        set { words[0] = SMMUv3Field.set(words[0], 13, 12, newValue) }
    }

    /// `EPD0`, bit [14]: TTB0 walks are disabled (a miss is a translation fault).
    public var epd0: Bool {
        get { SMMUv3Field.flag(words[0], 14) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 14, newValue) }
    }

    /// `ENDI`, bit [15]: stage 1 tables are big-endian.
    public var endi: Bool {
        get { SMMUv3Field.flag(words[0], 15) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 15, newValue) }
    }

    /// `T1SZ`, bits [21:16]: the TTB1 region size.
    public var t1SZ: UInt64 {
        get { SMMUv3Field.get(words[0], 21, 16) }
        set { words[0] = SMMUv3Field.set(words[0], 21, 16, newValue) }
    }

    /// `TG1`, bits [23:22]: the TTB1 granule (`TCR_ELx.TG1` encoding).
    public var tg1: UInt64 {
        get { SMMUv3Field.get(words[0], 23, 22) }
        set { words[0] = SMMUv3Field.set(words[0], 23, 22, newValue) }
    }

    /// `EPD1`, bit [30]: TTB1 walks are disabled.
    public var epd1: Bool {
        get { SMMUv3Field.flag(words[0], 30) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 30, newValue) }
    }

    /// `V`, bit [31]: the descriptor is valid.
    public var valid: Bool {
        get { SMMUv3Field.flag(words[0], 31) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 31, newValue) }
    }

    /// `IPS`, bits [34:32]: the stage 1 output size (see ``SMMUv3AddressSize``).
    public var ips: UInt64 {
        get { SMMUv3Field.get(words[0], 34, 32) }
        set { words[0] = SMMUv3Field.set(words[0], 34, 32, newValue) }
    }

    /// `AFFD`, bit [35]: access-flag faults are disabled.
    public var affd: Bool {
        get { SMMUv3Field.flag(words[0], 35) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 35, newValue) }
    }

    /// `WXN`, bit [36]: writable implies execute-never.
    public var wxn: Bool {
        get { SMMUv3Field.flag(words[0], 36) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 36, newValue) }
    }

    /// `TBI0`, bit [38]: top-byte ignore for TTB0 addresses.
    public var tbi0: Bool {
        get { SMMUv3Field.flag(words[0], 38) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 38, newValue) }
    }

    /// `AA64`, bit [41]: stage 1 tables are VMSAv8-64.
    public var aa64: Bool {
        get { SMMUv3Field.flag(words[0], 41) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 41, newValue) }
    }

    /// `HD`, bit [42]: hardware update of the dirty state (DBM).
    public var hd: Bool {
        get { SMMUv3Field.flag(words[0], 42) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 42, newValue) }
    }

    /// `HA`, bit [43]: hardware update of the access flag.
    public var ha: Bool {
        get { SMMUv3Field.flag(words[0], 43) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 43, newValue) }
    }

    /// `S`, bit [44]: stage 1 faults stall.
    public var stall: Bool {
        get { SMMUv3Field.flag(words[0], 44) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 44, newValue) }
    }

    /// `R`, bit [45]: stage 1 faults are recorded.
    public var record: Bool {
        get { SMMUv3Field.flag(words[0], 45) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 45, newValue) }
    }

    /// `A`, bit [46]: faults abort (rather than reading as zero / ignoring writes).
    public var abort: Bool {
        get { SMMUv3Field.flag(words[0], 46) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 46, newValue) }
    }

    /// `ASET`, bit [47]: the ASID does not take part in broadcast TLB maintenance.
    public var aset: Bool {
        get { SMMUv3Field.flag(words[0], 47) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 47, newValue) }
    }

    /// `ASID`, bits [63:48]: the ASID that tags this substream's TLB entries.
    public var asid: UInt16 {
        get { UInt16(SMMUv3Field.get(words[0], 63, 48)) }
        set { words[0] = SMMUv3Field.set(words[0], 63, 48, UInt64(newValue)) }
    }

    // MARK: Words 1–3

    /// `HAFT`, bit [67]: hardware update of the table access flag.
    public var haft: Bool {
        get { SMMUv3Field.flag(words[1], 3) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 3, newValue) }
    }

    /// `TTB0`, bits [119:68]: the TTB0 translation table base (the address itself, 16-byte
    /// aligned). An IPA when stage 2 translates.
    public var ttb0: UInt64 {
        get { words[1] & SMMUv3Field.mask(55, 4) }
        set { words[1] = (words[1] & ~SMMUv3Field.mask(55, 4)) | (newValue & SMMUv3Field.mask(55, 4)) }
    }

    /// `TTB1`, bits [183:132]: the TTB1 translation table base.
    public var ttb1: UInt64 {
        get { words[2] & SMMUv3Field.mask(55, 4) }
        set { words[2] = (words[2] & ~SMMUv3Field.mask(55, 4)) | (newValue & SMMUv3Field.mask(55, 4)) }
    }

    /// `MAIR0` and `MAIR1`, bits [255:192]: the memory attribute indirection register.
    public var mair: UInt64 {
        get { words[3] }
        set { words[3] = newValue }
    }
}

extension SMMUv3ContextDescriptor {
    /// Reads the CD at `address`.
    public init(memory: PhysicalMemory, at address: UInt64) {
        self.init()
        for i in 0..<8 { words[i] = memory.read64(address + UInt64(i) * 8) }
    }

    /// Writes the descriptor at `address`, word 0 (with `V`) last.
    public func write(to memory: PhysicalMemory, at address: UInt64) {
        for i in (0..<8).reversed() { memory.write64(address + UInt64(i) * 8, words[i]) }
    }
}

/// A level-1 CD table descriptor (`L1CD`, §5.3): `V` bit [0], `L2Ptr` bits [55:12].
public struct SMMUv3L1ContextDescriptor: Hashable, Sendable {
    /// The raw word.
    public var word: UInt64
    /// Creates a descriptor from its raw word.
    public init(word: UInt64) { self.word = word }
    /// Creates a valid descriptor pointing at the level-2 table at `l2Ptr` (4 KiB aligned).
    public init(l2Ptr: UInt64) { word = (l2Ptr & SMMUv3Field.mask(55, 12)) | 1 }
    /// `V`, bit [0].
    public var valid: Bool { word & 1 != 0 }
    /// `L2Ptr`, bits [55:12]: the level-2 CD table address.
    public var l2Ptr: UInt64 { word & SMMUv3Field.mask(55, 12) }
}

/// A level-1 stream table descriptor (`L1STD`, §5.1): `Span` bits [4:0], `L2Ptr` bits [55:6].
public struct SMMUv3L1StreamTableDescriptor: Hashable, Sendable {
    /// The raw word.
    public var word: UInt64
    /// Creates a descriptor from its raw word.
    public init(word: UInt64) { self.word = word }
    /// Creates a descriptor for a level-2 table of `2^(span-1)` STEs at `l2Ptr` (`span` 0
    /// marks the descriptor invalid).
    public init(span: UInt64, l2Ptr: UInt64) { word = (l2Ptr & SMMUv3Field.mask(55, 6)) | (span & 0x1F) }
    /// `Span`, bits [4:0]: the level-2 table holds `2^(Span-1)` STEs; 0 is invalid.
    public var span: UInt64 { word & 0x1F }
    /// `L2Ptr`, bits [55:6]: the level-2 table address.
    public var l2Ptr: UInt64 { word & SMMUv3Field.mask(55, 6) }
}
