// The Stream Table Entry (SMMUv3 architecture specification, §5.2): 64 bytes, eight
// little-endian 64-bit words, one per StreamID in the stream table.

/// A Stream Table Entry: how the SMMU treats transactions of one StreamID.
///
/// Fields are bit-exact to the architecture (IHI 0070 §5.2); the property names follow the
/// specification's field names. Bit positions are given as `[hi:lo]` of the whole 512-bit
/// entry in each doc comment.
public struct SMMUv3StreamTableEntry: SMMUv3Structure512 {
    /// The eight 64-bit words of the entry, word 0 first.
    public var words: InlineArray<8, UInt64>

    /// An all-zero (invalid) entry.
    public init() { words = InlineArray(repeating: 0) }

    // MARK: Word 0

    /// The stream configuration (`Config`, bits [3:1]).
    public enum Config: UInt64, Sendable {
        /// `0b000`: abort, no event (values `0b001`–`0b011` are reserved and behave so too).
        case abort = 0
        /// `0b100`: both stages bypass.
        case bypass = 4
        /// `0b101`: stage 1 translates, stage 2 bypasses.
        case stage1 = 5
        /// `0b110`: stage 1 bypasses, stage 2 translates.
        case stage2 = 6
        /// `0b111`: stage 1 and stage 2 translate (nested).
        case nested = 7
    }

    /// `V`, bit [0]: the entry is valid.
    public var valid: Bool {
        get { SMMUv3Field.flag(words[0], 0) }
        set { words[0] = SMMUv3Field.setFlag(words[0], 0, newValue) }
    }

    /// `Config`, bits [3:1], raw.
    public var configBits: UInt64 {
        get { SMMUv3Field.get(words[0], 3, 1) }
        set { words[0] = SMMUv3Field.set(words[0], 3, 1, newValue) }
    }

    /// `Config`, bits [3:1]: reserved values read as ``Config/abort``, as they behave.
    public var config: Config {
        get { Config(rawValue: configBits) ?? .abort }
        set { configBits = newValue.rawValue }
    }

    /// `S1Fmt`, bits [5:4]: `0b00` linear CD table, `0b01` 2-level with 4 KiB leaf tables,
    /// `0b10` 2-level with 64 KiB leaf tables.
    public var s1Fmt: UInt64 {
        get { SMMUv3Field.get(words[0], 5, 4) }
        set { words[0] = SMMUv3Field.set(words[0], 5, 4, newValue) }
    }

    /// `S1ContextPtr`, bits [55:6]: the address of the CD or CD table (an IPA when stage 2
    /// translates). The value is the address itself, 64-byte aligned.
    public var s1ContextPtr: UInt64 {
        get { words[0] & SMMUv3Field.mask(55, 6) }
        set { words[0] = (words[0] & ~SMMUv3Field.mask(55, 6)) | (newValue & SMMUv3Field.mask(55, 6)) }
    }

    /// `S1CDMax`, bits [63:59]: log2 of the number of CDs; 0 disables substreams.
    public var s1CDMax: UInt64 {
        get { SMMUv3Field.get(words[0], 63, 59) }
        set { words[0] = SMMUv3Field.set(words[0], 63, 59, newValue) }
    }

    // MARK: Word 1

    /// `S1DSS`, bits [65:64]: what a transaction without a SubstreamID does when substreams are
    /// enabled: `0b00` terminate (F_STREAM_DISABLED), `0b01` bypass stage 1, `0b10` use CD 0.
    public var s1DSS: UInt64 {
        get { SMMUv3Field.get(words[1], 1, 0) }
        set { words[1] = SMMUv3Field.set(words[1], 1, 0, newValue) }
    }

    /// `S1CIR`, bits [67:66]: inner cacheability of CD fetches.
    public var s1CIR: UInt64 {
        get { SMMUv3Field.get(words[1], 3, 2) }
        set { words[1] = SMMUv3Field.set(words[1], 3, 2, newValue) }
    }

    /// `S1COR`, bits [69:68]: outer cacheability of CD fetches.
    public var s1COR: UInt64 {
        get { SMMUv3Field.get(words[1], 5, 4) }
        set { words[1] = SMMUv3Field.set(words[1], 5, 4, newValue) }
    }

    /// `S1CSH`, bits [71:70]: shareability of CD fetches.
    public var s1CSH: UInt64 {
        get { SMMUv3Field.get(words[1], 7, 6) }
        set { words[1] = SMMUv3Field.set(words[1], 7, 6, newValue) }
    }

    /// `PPAR`, bit [82]: automatic PRI responses (on PRI queue overflow) carry the PASID.
    public var ppar: Bool {
        get { SMMUv3Field.flag(words[1], 18) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 18, newValue) }
    }

    /// `MEV`, bit [83]: events of this stream may be merged.
    public var mev: Bool {
        get { SMMUv3Field.flag(words[1], 19) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 19, newValue) }
    }

    /// `S2FWB`, bit [89]: stage 2 forces write-back memory attributes.
    public var s2FWB: Bool {
        get { SMMUv3Field.flag(words[1], 25) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 25, newValue) }
    }

    /// `S1STALLD`, bit [91]: stage 1 stalls are disabled.
    public var s1StallD: Bool {
        get { SMMUv3Field.flag(words[1], 27) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 27, newValue) }
    }

    /// `EATS`, bits [93:92]: ATS: `0b00` not allowed, `0b01` full ATS, `0b10` split-stage.
    public var eats: UInt64 {
        get { SMMUv3Field.get(words[1], 29, 28) }
        set { words[1] = SMMUv3Field.set(words[1], 29, 28, newValue) }
    }

    /// `STRW`, bits [95:94]: StreamWorld, `0b00` NS-EL1, `0b10` EL2.
    public var strw: UInt64 {
        get { SMMUv3Field.get(words[1], 31, 30) }
        set { words[1] = SMMUv3Field.set(words[1], 31, 30, newValue) }
    }

    /// `SHCFG`, bits [109:108]: shareability override (`0b01` use incoming).
    public var shcfg: UInt64 {
        get { SMMUv3Field.get(words[1], 45, 44) }
        set { words[1] = SMMUv3Field.set(words[1], 45, 44, newValue) }
    }

    // MARK: Word 2

    /// `S2VMID`, bits [143:128]: the VMID that tags this stream's TLB entries.
    public var s2VMID: UInt16 {
        get { UInt16(SMMUv3Field.get(words[2], 15, 0)) }
        set { words[2] = SMMUv3Field.set(words[2], 15, 0, UInt64(newValue)) }
    }

    /// `S2T0SZ`, bits [165:160]: the stage 2 input size is `64 - S2T0SZ` bits.
    public var s2T0SZ: UInt64 {
        get { SMMUv3Field.get(words[2], 37, 32) }
        set { words[2] = SMMUv3Field.set(words[2], 37, 32, newValue) }
    }

    /// `S2SL0`, bits [167:166]: the stage 2 starting level (4 KiB granule: `0b00` level 2,
    /// `0b01` level 1, `0b10` level 0).
    public var s2SL0: UInt64 {
        get { SMMUv3Field.get(words[2], 39, 38) }
        set { words[2] = SMMUv3Field.set(words[2], 39, 38, newValue) }
    }

    /// `S2IR0`, bits [169:168]: inner cacheability of stage 2 walks.
    public var s2IR0: UInt64 {
        get { SMMUv3Field.get(words[2], 41, 40) }
        set { words[2] = SMMUv3Field.set(words[2], 41, 40, newValue) }
    }

    /// `S2OR0`, bits [171:170]: outer cacheability of stage 2 walks.
    public var s2OR0: UInt64 {
        get { SMMUv3Field.get(words[2], 43, 42) }
        set { words[2] = SMMUv3Field.set(words[2], 43, 42, newValue) }
    }

    /// `S2SH0`, bits [173:172]: shareability of stage 2 walks.
    public var s2SH0: UInt64 {
        get { SMMUv3Field.get(words[2], 45, 44) }
        set { words[2] = SMMUv3Field.set(words[2], 45, 44, newValue) }
    }

    /// `S2TG`, bits [175:174]: the stage 2 granule (see ``SMMUv3Granule``).
    public var s2TG: UInt64 {
        get { SMMUv3Field.get(words[2], 47, 46) }
        set { words[2] = SMMUv3Field.set(words[2], 47, 46, newValue) }
    }

    /// `S2PS`, bits [178:176]: the stage 2 output size (see ``SMMUv3AddressSize``).
    public var s2PS: UInt64 {
        get { SMMUv3Field.get(words[2], 50, 48) }
        set { words[2] = SMMUv3Field.set(words[2], 50, 48, newValue) }
    }

    /// `S2AA64`, bit [179]: stage 2 tables are VMSAv8-64.
    public var s2AA64: Bool {
        get { SMMUv3Field.flag(words[2], 51) }
        set { words[2] = SMMUv3Field.setFlag(words[2], 51, newValue) }
    }

    /// `S2ENDI`, bit [180]: stage 2 tables are big-endian.
    public var s2ENDI: Bool {
        get { SMMUv3Field.flag(words[2], 52) }
        set { words[2] = SMMUv3Field.setFlag(words[2], 52, newValue) }
    }

    /// `S2AFFD`, bit [181]: stage 2 access-flag faults are disabled.
    public var s2AFFD: Bool {
        get { SMMUv3Field.flag(words[2], 53) }
        set { words[2] = SMMUv3Field.setFlag(words[2], 53, newValue) }
    }

    /// `S2PTW`, bit [182]: protected table walk (stage 1 walks into device memory fault).
    public var s2PTW: Bool {
        get { SMMUv3Field.flag(words[2], 54) }
        set { words[2] = SMMUv3Field.setFlag(words[2], 54, newValue) }
    }

    /// `S2HD`, bit [183]: hardware update of the stage 2 dirty state.
    public var s2HD: Bool {
        get { SMMUv3Field.flag(words[2], 55) }
        set { words[2] = SMMUv3Field.setFlag(words[2], 55, newValue) }
    }

    /// `S2HA`, bit [184]: hardware update of the stage 2 access flag.
    public var s2HA: Bool {
        get { SMMUv3Field.flag(words[2], 56) }
        set { words[2] = SMMUv3Field.setFlag(words[2], 56, newValue) }
    }

    /// `S2S`, bit [185]: stage 2 faults stall.
    public var s2S: Bool {
        get { SMMUv3Field.flag(words[2], 57) }
        set { words[2] = SMMUv3Field.setFlag(words[2], 57, newValue) }
    }

    /// `S2R`, bit [186]: stage 2 faults are recorded.
    public var s2R: Bool {
        get { SMMUv3Field.flag(words[2], 58) }
        set { words[2] = SMMUv3Field.setFlag(words[2], 58, newValue) }
    }

    // MARK: Word 3

    /// `S2TTB`, bits [247:196]: the stage 2 translation table base (the address itself, 16-byte
    /// aligned; the architecture also requires the table alignment).
    public var s2TTB: UInt64 {
        get { words[3] & SMMUv3Field.mask(55, 4) }
        set { words[3] = (words[3] & ~SMMUv3Field.mask(55, 4)) | (newValue & SMMUv3Field.mask(55, 4)) }
    }
}

extension SMMUv3StreamTableEntry {
    /// Reads the STE at `address`.
    public init(memory: PhysicalMemory, at address: UInt64) {
        self.init()
        for i in 0..<8 { words[i] = memory.read64(address + UInt64(i) * 8) }
    }

    /// Writes the entry at `address`, word 0 last (the order hardware requires software to use
    /// when making an entry valid: the `V` bit becomes visible after everything else).
    public func write(to memory: PhysicalMemory, at address: UInt64) {
        for i in (0..<8).reversed() { memory.write64(address + UInt64(i) * 8, words[i]) }
    }
}
