// Records the SMMU writes for software: event records (§7.3, 32 bytes) on the event queue and
// PRI page requests (§8, 16 bytes) on the PRI queue. Little-endian 64-bit words.

/// Event numbers (§7.3).
public enum SMMUv3EventID: UInt8, Sendable, CaseIterable {
    /// `F_UUT`: unsupported upstream transaction.
    case unsupportedTransaction = 0x01
    /// `C_BAD_STREAMID`: the StreamID is beyond the stream table.
    case badStreamID = 0x02
    /// `F_STE_FETCH`: fetching the STE aborted.
    case steFetch = 0x03
    /// `C_BAD_STE`: the STE is invalid or ILLEGAL.
    case badSTE = 0x04
    /// `F_BAD_ATS_TREQ`: an ATS translation request the STE does not allow.
    case badATSTranslationRequest = 0x05
    /// `F_STREAM_DISABLED`: a transaction without SubstreamID where `S1DSS` terminates it.
    case streamDisabled = 0x06
    /// `F_TRANSL_FORBIDDEN`: an ATS-translated transaction the STE does not allow.
    case translationForbidden = 0x07
    /// `C_BAD_SUBSTREAMID`: the SubstreamID is out of range or substreams are disabled.
    case badSubstreamID = 0x08
    /// `F_CD_FETCH`: fetching the CD aborted.
    case cdFetch = 0x09
    /// `C_BAD_CD`: the CD is invalid or ILLEGAL.
    case badCD = 0x0A
    /// `F_WALK_EABT`: a translation table walk aborted.
    case walkExternalAbort = 0x0B
    /// `F_TRANSLATION`: no valid translation.
    case translation = 0x10
    /// `F_ADDR_SIZE`: an address is beyond the input or output size.
    case addressSize = 0x11
    /// `F_ACCESS`: the access flag is clear (and hardware does not set it).
    case access = 0x12
    /// `F_PERMISSION`: the access is not permitted.
    case permission = 0x13
    /// `F_TLB_CONFLICT`.
    case tlbConflict = 0x20
    /// `F_CFG_CONFLICT`.
    case configConflict = 0x21
    /// `E_PAGE_REQUEST`: a speculative page request the SMMU did not forward.
    case pageRequest = 0x24
    /// `F_VMS_FETCH`.
    case vmsFetch = 0x25
}

/// What a faulting access was for (`CLASS`, bits [105:104]).
public enum SMMUv3FaultClass: UInt8, Sendable {
    /// `CD`: fetching a CD (a stage 2 fault on the CD's IPA).
    case cd = 0
    /// `TTD`: fetching a stage 1 translation table descriptor (a stage 2 fault on its IPA).
    case tableDescriptor = 1
    /// `IN`: the input address of the transaction.
    case input = 2
}

/// One event record of the event queue (§7.3): 32 bytes.
///
/// Word 0 holds the event number [7:0], `SSV` [11], `SubstreamID` [31:12] and `StreamID`
/// [63:32]; word 1 `STAG` [79:64], `Stall` [95], `PnU` [97], `InD` [98], `RnW` [99], `S2`
/// [103], `CLASS` [105:104] and, for F_PERMISSION, `TTRnW` [108]; word 2 `InputAddr`
/// [191:128]; word 3 the IPA [243:204] of stage 2 faults or `FetchAddr` [247:195].
public struct SMMUv3Event: Hashable, Sendable, CustomStringConvertible {
    /// The size of a record in bytes.
    public static let size: UInt64 = 32

    /// The four words, word 0 first.
    public var words: InlineArray<4, UInt64>

    /// A record from its words.
    public init(words list: [UInt64]) {
        precondition(list.count <= 4)
        words = InlineArray(repeating: 0)
        for (i, w) in list.enumerated() { words[i] = w }
    }

    /// A record of `id` for `streamID` (and `substreamID`, which sets `SSV`).
    public init(id: SMMUv3EventID, streamID: UInt32, substreamID: UInt32? = nil) {
        words = InlineArray(repeating: 0)
        words[0] = UInt64(id.rawValue) | (UInt64(streamID) << 32)
        if let s = substreamID { words[0] |= (1 << 11) | ((UInt64(s) & 0xF_FFFF) << 12) }
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.words[0] == b.words[0] && a.words[1] == b.words[1] && a.words[2] == b.words[2] && a.words[3] == b.words[3]
    }

    public func hash(into hasher: inout Hasher) { for i in 0..<4 { hasher.combine(words[i]) } }

    public var description: String {
        let name = id.map { "\($0)" } ?? "0x" + String(rawID, radix: 16)
        return "\(name) sid 0x\(String(streamID, radix: 16))" + (substreamID.map { " ssid 0x\(String($0, radix: 16))" } ?? "")
            + " addr 0x\(String(inputAddress, radix: 16))"
    }

    /// The raw event number, bits [7:0].
    public var rawID: UInt8 { UInt8(truncatingIfNeeded: words[0]) }
    /// The event number, if architected.
    public var id: SMMUv3EventID? { SMMUv3EventID(rawValue: rawID) }
    /// `StreamID`, bits [63:32].
    public var streamID: UInt32 {
        get { UInt32(SMMUv3Field.get(words[0], 63, 32)) }
        set { words[0] = SMMUv3Field.set(words[0], 63, 32, UInt64(newValue)) }
    }
    /// `SubstreamID` [31:12] when `SSV` [11] is set.
    public var substreamID: UInt32? { SMMUv3Field.flag(words[0], 11) ? UInt32(SMMUv3Field.get(words[0], 31, 12)) : nil }
    /// `STAG`, bits [79:64]: the stall tag.
    public var stag: UInt16 {
        get { UInt16(SMMUv3Field.get(words[1], 15, 0)) }
        set { words[1] = SMMUv3Field.set(words[1], 15, 0, UInt64(newValue)) }
    }
    /// `Stall`, bit [95]: the transaction is stalled awaiting `CMD_RESUME`.
    public var stall: Bool {
        get { SMMUv3Field.flag(words[1], 31) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 31, newValue) }
    }
    /// `PnU`, bit [97]: privileged.
    public var privileged: Bool {
        get { SMMUv3Field.flag(words[1], 33) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 33, newValue) }
    }
    /// `InD`, bit [98]: instruction fetch.
    public var instruction: Bool {
        get { SMMUv3Field.flag(words[1], 34) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 34, newValue) }
    }
    /// `RnW`, bit [99]: a read (a write when clear).
    public var read: Bool {
        get { SMMUv3Field.flag(words[1], 35) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 35, newValue) }
    }
    /// `S2`, bit [103]: the fault is a stage 2 fault.
    public var stage2: Bool {
        get { SMMUv3Field.flag(words[1], 39) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 39, newValue) }
    }
    /// `CLASS`, bits [105:104].
    public var faultClass: SMMUv3FaultClass? {
        get { SMMUv3FaultClass(rawValue: UInt8(SMMUv3Field.get(words[1], 41, 40))) }
        set { words[1] = SMMUv3Field.set(words[1], 41, 40, UInt64(newValue?.rawValue ?? 0)) }
    }
    /// `TTRnW`, bit [108] (F_PERMISSION with CLASS TTD): the table access was a read.
    public var tableRead: Bool {
        get { SMMUv3Field.flag(words[1], 44) }
        set { words[1] = SMMUv3Field.setFlag(words[1], 44, newValue) }
    }
    /// `InputAddr`, bits [191:128].
    public var inputAddress: UInt64 {
        get { words[2] }
        set { words[2] = newValue }
    }
    /// The IPA of a stage 2 fault, bits [243:204] (word 3 bits [51:12]).
    public var ipa: UInt64 {
        get { words[3] & SMMUv3Field.mask(51, 12) }
        set { words[3] = (words[3] & ~SMMUv3Field.mask(51, 12)) | (newValue & SMMUv3Field.mask(51, 12)) }
    }
    /// `FetchAddr` of F_STE_FETCH, F_CD_FETCH and F_WALK_EABT, bits [247:195] (word 3 [55:3]).
    public var fetchAddress: UInt64 {
        get { words[3] & SMMUv3Field.mask(55, 3) }
        set { words[3] = (words[3] & ~SMMUv3Field.mask(55, 3)) | (newValue & SMMUv3Field.mask(55, 3)) }
    }
}

/// One PRI queue entry (§8.1): a PCIe page request the SMMU forwards to software, 16 bytes.
///
/// Word 0: `StreamID` [31:0], `SubstreamID` [51:32], `Priv` [58], `Exec` [59], `Read` [60],
/// `Write` [61], `L` (last in group) [62], `SSV` [63]; word 1: `PRG Index` [72:64] and the page
/// address [127:76].
public struct SMMUv3PageRequestRecord: Hashable, Sendable {
    /// The size of an entry in bytes.
    public static let size: UInt64 = 16
    /// Word 0.
    public var word0: UInt64
    /// Word 1.
    public var word1: UInt64

    /// An entry from its words.
    public init(word0: UInt64, word1: UInt64) { self.word0 = word0; self.word1 = word1 }

    /// An entry for a page request.
    public init(streamID: UInt32, substreamID: UInt32?, group: UInt16, last: Bool, address: UInt64,
                read: Bool, write: Bool, execute: Bool = false, privileged: Bool = false) {
        var w0 = UInt64(streamID)
        if let s = substreamID { w0 |= ((UInt64(s) & 0xF_FFFF) << 32) | (1 << 63) }
        if privileged { w0 |= 1 << 58 }
        if execute { w0 |= 1 << 59 }
        if read { w0 |= 1 << 60 }
        if write { w0 |= 1 << 61 }
        if last { w0 |= 1 << 62 }
        word0 = w0
        word1 = UInt64(group & 0x1FF) | (address & SMMUv3Field.mask(63, 12))
    }

    /// `StreamID`.
    public var streamID: UInt32 { UInt32(truncatingIfNeeded: word0) }
    /// `SubstreamID`, when `SSV`.
    public var substreamID: UInt32? { SMMUv3Field.flag(word0, 63) ? UInt32(SMMUv3Field.get(word0, 51, 32)) : nil }
    /// `Priv`.
    public var privileged: Bool { SMMUv3Field.flag(word0, 58) }
    /// `Exec`.
    public var execute: Bool { SMMUv3Field.flag(word0, 59) }
    /// `Read`.
    public var read: Bool { SMMUv3Field.flag(word0, 60) }
    /// `Write`.
    public var write: Bool { SMMUv3Field.flag(word0, 61) }
    /// `L`: the last request of its group.
    public var last: Bool { SMMUv3Field.flag(word0, 62) }
    /// `PRG Index`: the page request group.
    public var group: UInt16 { UInt16(word1 & 0x1FF) }
    /// The page address.
    public var address: UInt64 { word1 & SMMUv3Field.mask(63, 12) }
}
