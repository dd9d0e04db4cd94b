// Commands of the SMMUv3 command queue (architecture specification, chapter 4): 16 bytes, two
// little-endian 64-bit words, the opcode in bits [7:0].

/// Command opcodes (§4.1.1).
public enum SMMUv3Opcode: UInt8, Sendable, CaseIterable {
    /// `CMD_PREFETCH_CONFIG`.
    case prefetchConfig = 0x01
    /// `CMD_PREFETCH_ADDR`.
    case prefetchAddr = 0x02
    /// `CMD_CFGI_STE`.
    case cfgiSTE = 0x03
    /// `CMD_CFGI_STE_RANGE` (and `CMD_CFGI_ALL`, which is the range 31).
    case cfgiSTERange = 0x04
    /// `CMD_CFGI_CD`.
    case cfgiCD = 0x05
    /// `CMD_CFGI_CD_ALL`.
    case cfgiCDAll = 0x06
    /// `CMD_TLBI_NH_ALL`.
    case tlbiNHAll = 0x10
    /// `CMD_TLBI_NH_ASID`.
    case tlbiNHASID = 0x11
    /// `CMD_TLBI_NH_VA`.
    case tlbiNHVA = 0x12
    /// `CMD_TLBI_NH_VAA`.
    case tlbiNHVAA = 0x13
    /// `CMD_TLBI_EL2_ALL`.
    case tlbiEL2All = 0x20
    /// `CMD_TLBI_EL2_ASID`.
    case tlbiEL2ASID = 0x21
    /// `CMD_TLBI_EL2_VA`.
    case tlbiEL2VA = 0x22
    /// `CMD_TLBI_EL2_VAA`.
    case tlbiEL2VAA = 0x23
    /// `CMD_TLBI_S12_VMALL`.
    case tlbiS12VMAll = 0x28
    /// `CMD_TLBI_S2_IPA`.
    case tlbiS2IPA = 0x2A
    /// `CMD_TLBI_NSNH_ALL`.
    case tlbiNSNHAll = 0x30
    /// `CMD_ATC_INV`.
    case atcInv = 0x40
    /// `CMD_PRI_RESP`.
    case priResp = 0x41
    /// `CMD_RESUME`.
    case resume = 0x44
    /// `CMD_STALL_TERM`.
    case stallTerm = 0x45
    /// `CMD_SYNC`.
    case sync = 0x46
}

/// The address range of a TLB invalidation by address (§4.4.1.1): the range fields `NUM`,
/// `SCALE`, `TG` and the level hint `TTL`. `TG == 0` is a single-address invalidation.
public struct SMMUv3TLBIRange: Hashable, Sendable {
    /// `NUM`, bits [16:12]: the granule multiplier minus one.
    public var num: UInt8
    /// `SCALE`, bits [24:20]: the power-of-two scale.
    public var scale: UInt8
    /// `TG`, bits [75:74]: `0b00` no range, `0b01` 4 KiB, `0b10` 16 KiB, `0b11` 64 KiB.
    public var tg: UInt8
    /// `TTL`, bits [73:72]: the level of the leaf entries (0: any level).
    public var ttl: UInt8

    /// Creates range fields.
    public init(num: UInt8 = 0, scale: UInt8 = 0, tg: UInt8 = 0, ttl: UInt8 = 0) {
        self.num = num; self.scale = scale; self.tg = tg; self.ttl = ttl
    }

    /// No range: the one address, leaves at any level.
    public static let single = SMMUv3TLBIRange()

    /// A range of `pages` 4 KiB pages, which must be `(NUM+1) << SCALE` for some NUM < 32 and
    /// SCALE < 32; nil otherwise.
    public static func pages4K(_ pages: UInt64, ttl: UInt8 = 0) -> SMMUv3TLBIRange? {
        guard pages > 0 else { return nil }
        let scale = pages.trailingZeroBitCount
        let num = pages >> UInt64(scale)
        guard scale < 32, num >= 1, num <= 32 else { return nil }
        return SMMUv3TLBIRange(num: UInt8(num - 1), scale: UInt8(scale), tg: 1, ttl: ttl)
    }

    /// The granule size `TG` selects, or nil for `TG == 0`.
    public var granuleSize: UInt64? {
        switch tg { case 1: 4096; case 2: 16384; case 3: 65536; default: nil }
    }

    /// The number of bytes covered, `((NUM+1) << SCALE) * granule`, or nil for `TG == 0`.
    public var byteCount: UInt64? {
        guard let g = granuleSize else { return nil }
        return ((UInt64(num & 0x1F) + 1) << UInt64(scale & 0x1F)) * g
    }
}

/// What `CMD_SYNC` signals on completion (`CS`, bits [13:12]).
public enum SMMUv3SyncCompletion: UInt8, Sendable {
    /// `SIG_NONE`: completion is seen by polling `CMDQ_CONS`.
    case none = 0
    /// `SIG_IRQ`: an MSI write of `MSIData` to `MSIAddr` (the kernel's MSI polling).
    case irq = 1
    /// `SIG_SEV`: a WFE wake-up event.
    case sev = 2
}

/// The response of `CMD_PRI_RESP` (`Resp`, bits [77:76]), as PCIe's PRG response codes.
public enum SMMUv3PRIResponse: UInt8, Sendable {
    /// `Denied`: the device must not retry (response code Invalid Request).
    case denied = 0
    /// `Failure`: the device must stop issuing page requests (Response Failure).
    case failure = 1
    /// `Success`: the pages are resident; the device retries its translation.
    case success = 2
}

/// One command of the command queue, decoded.
///
/// ``init(words:_:features:)`` checks a raw command as the model's SMMU does: an unknown or
/// reserved opcode, a non-zero RES0 field, or an ILLEGAL parameter combination is malformed and
/// raises `CERROR_ILL` (§4.1.3, §4.1.5). ``words`` encodes a command bit-exactly.
public enum SMMUv3Command: Hashable, Sendable {
    /// `CMD_PREFETCH_CONFIG(SID, SSID)`: a hint, no architectural effect.
    case prefetchConfig(streamID: UInt32, substreamID: UInt32?)
    /// `CMD_CFGI_STE(SID, Leaf)`: invalidates cached configuration of one STE (and, without
    /// `leaf`, the level-1 stream table descriptor that locates it).
    case cfgiSTE(streamID: UInt32, leaf: Bool)
    /// `CMD_CFGI_STE_RANGE(SID, Range)`: invalidates the `2^(range+1)` STEs from `SID`
    /// aligned down; `range == 31` is `CMD_CFGI_ALL`.
    case cfgiSTERange(streamID: UInt32, range: UInt8)
    /// `CMD_CFGI_CD(SID, SSID, Leaf)`: invalidates cached configuration of one CD.
    case cfgiCD(streamID: UInt32, substreamID: UInt32, leaf: Bool)
    /// `CMD_CFGI_CD_ALL(SID)`: invalidates every cached CD of a stream.
    case cfgiCDAll(streamID: UInt32)
    /// `CMD_TLBI_NH_ALL(VMID)`: every stage 1 entry of a VMID.
    case tlbiNHAll(vmid: UInt16)
    /// `CMD_TLBI_NH_ASID(VMID, ASID)`: the non-global stage 1 entries of an ASID.
    case tlbiNHASID(vmid: UInt16, asid: UInt16)
    /// `CMD_TLBI_NH_VA(VMID, ASID, Addr, Leaf)`: stage 1 entries of an ASID (and global ones)
    /// by address or address range.
    case tlbiNHVA(vmid: UInt16, asid: UInt16, address: UInt64, leaf: Bool, range: SMMUv3TLBIRange)
    /// `CMD_TLBI_NH_VAA(VMID, Addr, Leaf)`: stage 1 entries of every ASID by address.
    case tlbiNHVAA(vmid: UInt16, address: UInt64, leaf: Bool, range: SMMUv3TLBIRange)
    /// `CMD_TLBI_S12_VMALL(VMID)`: every stage 1 and stage 2 entry of a VMID.
    case tlbiS12VMAll(vmid: UInt16)
    /// `CMD_TLBI_S2_IPA(VMID, Addr, Leaf)`: stage 2 entries by IPA.
    case tlbiS2IPA(vmid: UInt16, address: UInt64, leaf: Bool, range: SMMUv3TLBIRange)
    /// `CMD_TLBI_NSNH_ALL`: every non-secure, non-hypervisor entry.
    case tlbiNSNHAll
    /// `CMD_ATC_INV(SID, SSID, Addr, Size, Global)`: invalidates the device's ATC for the
    /// `2^size` pages around `address` (size 52: everything).
    case atcInv(streamID: UInt32, substreamID: UInt32?, global: Bool, address: UInt64, size: UInt8)
    /// `CMD_PRI_RESP(SID, SSID, PRGIndex, Resp)`: answers a page request group.
    case priResp(streamID: UInt32, substreamID: UInt32?, group: UInt16, response: SMMUv3PRIResponse)
    /// `CMD_RESUME(SID, STAG, Action)`: resumes a stalled transaction.
    case resume(streamID: UInt32, stag: UInt16, action: UInt8)
    /// `CMD_STALL_TERM(SID)`: terminates the stalled transactions of a stream.
    case stallTerm(streamID: UInt32)
    /// `CMD_SYNC(CS, MSIAddr, MSIData)`: completes when every earlier command has completed.
    case sync(completion: SMMUv3SyncCompletion, msiAddress: UInt64, msiData: UInt32, msh: UInt8, msiAttr: UInt8)

    /// `CMD_CFGI_ALL`: `CMD_CFGI_STE_RANGE` with the range 31.
    public static let cfgiAll = SMMUv3Command.cfgiSTERange(streamID: 0, range: 31)

    /// A `CMD_SYNC` that signals nothing (completion is polled).
    public static let syncNone = SMMUv3Command.sync(completion: .none, msiAddress: 0, msiData: 0, msh: 0, msiAttr: 0)

    /// The opcode.
    public var opcode: SMMUv3Opcode {
        switch self {
        case .prefetchConfig: .prefetchConfig
        case .cfgiSTE: .cfgiSTE
        case .cfgiSTERange: .cfgiSTERange
        case .cfgiCD: .cfgiCD
        case .cfgiCDAll: .cfgiCDAll
        case .tlbiNHAll: .tlbiNHAll
        case .tlbiNHASID: .tlbiNHASID
        case .tlbiNHVA: .tlbiNHVA
        case .tlbiNHVAA: .tlbiNHVAA
        case .tlbiS12VMAll: .tlbiS12VMAll
        case .tlbiS2IPA: .tlbiS2IPA
        case .tlbiNSNHAll: .tlbiNSNHAll
        case .atcInv: .atcInv
        case .priResp: .priResp
        case .resume: .resume
        case .stallTerm: .stallTerm
        case .sync: .sync
        }
    }

    /// The two words of the command, bit-exact.
    public var words: (UInt64, UInt64) {
        var w0 = UInt64(opcode.rawValue), w1: UInt64 = 0
        func sid(_ s: UInt32) { w0 = SMMUv3Field.set(w0, 63, 32, UInt64(s)) }
        func ssid(_ s: UInt32?) {
            if let s { w0 = SMMUv3Field.setFlag(w0, 11, true); w0 = SMMUv3Field.set(w0, 31, 12, UInt64(s)) }
        }
        func range(_ r: SMMUv3TLBIRange) {
            w0 = SMMUv3Field.set(w0, 16, 12, UInt64(r.num))
            w0 = SMMUv3Field.set(w0, 24, 20, UInt64(r.scale))
            w1 = SMMUv3Field.set(w1, 9, 8, UInt64(r.ttl))
            w1 = SMMUv3Field.set(w1, 11, 10, UInt64(r.tg))
        }
        switch self {
        case let .prefetchConfig(s, ss):
            sid(s); ssid(ss)
        case let .cfgiSTE(s, leaf):
            sid(s); w1 = leaf ? 1 : 0
        case let .cfgiSTERange(s, r):
            sid(s); w1 = UInt64(r & 0x1F)
        case let .cfgiCD(s, ss, leaf):
            sid(s); w0 = SMMUv3Field.set(w0, 31, 12, UInt64(ss)); w1 = leaf ? 1 : 0
        case let .cfgiCDAll(s):
            sid(s)
        case let .tlbiNHAll(vmid):
            w0 = SMMUv3Field.set(w0, 47, 32, UInt64(vmid))
        case let .tlbiNHASID(vmid, asid):
            w0 = SMMUv3Field.set(w0, 47, 32, UInt64(vmid))
            w0 = SMMUv3Field.set(w0, 63, 48, UInt64(asid))
        case let .tlbiNHVA(vmid, asid, address, leaf, r):
            w0 = SMMUv3Field.set(w0, 47, 32, UInt64(vmid))
            w0 = SMMUv3Field.set(w0, 63, 48, UInt64(asid))
            range(r)
            w1 |= (address & SMMUv3Field.mask(63, 12)) | (leaf ? 1 : 0)
        case let .tlbiNHVAA(vmid, address, leaf, r):
            w0 = SMMUv3Field.set(w0, 47, 32, UInt64(vmid))
            range(r)
            w1 |= (address & SMMUv3Field.mask(63, 12)) | (leaf ? 1 : 0)
        case let .tlbiS12VMAll(vmid):
            w0 = SMMUv3Field.set(w0, 47, 32, UInt64(vmid))
        case let .tlbiS2IPA(vmid, address, leaf, r):
            w0 = SMMUv3Field.set(w0, 47, 32, UInt64(vmid))
            range(r)
            w1 |= (address & SMMUv3Field.mask(55, 12)) | (leaf ? 1 : 0)
        case .tlbiNSNHAll:
            break
        case let .atcInv(s, ss, global, address, size):
            sid(s); ssid(ss)
            w0 = SMMUv3Field.setFlag(w0, 9, global)
            w1 = (address & SMMUv3Field.mask(63, 12)) | UInt64(size & 0x3F)
        case let .priResp(s, ss, group, response):
            sid(s); ssid(ss)
            w1 = UInt64(group & 0x1FF) | (UInt64(response.rawValue) << 12)
        case let .resume(s, stag, action):
            sid(s)
            w0 = SMMUv3Field.set(w0, 13, 12, UInt64(action & 3))
            w1 = UInt64(stag)
        case let .stallTerm(s):
            sid(s)
        case let .sync(cs, msiAddress, msiData, msh, msiAttr):
            w0 = SMMUv3Field.set(w0, 13, 12, UInt64(cs.rawValue))
            w0 = SMMUv3Field.set(w0, 23, 22, UInt64(msh & 3))
            w0 = SMMUv3Field.set(w0, 27, 24, UInt64(msiAttr & 0xF))
            w0 = SMMUv3Field.set(w0, 63, 32, UInt64(msiData))
            w1 = msiAddress & SMMUv3Field.mask(51, 2)
        }
        return (w0, w1)
    }
}

/// Why a command is malformed (it raises `CERROR_ILL`).
public enum SMMUv3IllegalCommand: Error, Hashable, Sendable {
    /// The opcode is reserved, or names a command this SMMU does not implement (a stage it lacks,
    /// EL2 or Secure commands).
    case unsupportedOpcode(UInt8)
    /// A RES0 bit is set (the model checks them all, as §4.1.5 permits).
    case reservedBits
    /// An ILLEGAL combination of parameters (for example `TG != 0` with `NUM`, `SCALE` and
    /// `TTL` all zero, or `SSec == 1` on the Non-secure queue).
    case illegalParameters
}

/// What an SMMU implements, as far as command decoding depends on it.
public struct SMMUv3CommandFeatures: Sendable, Hashable {
    /// Stage 1 is implemented (`SMMU_IDR0.S1P`).
    public var stage1: Bool
    /// Stage 2 is implemented (`SMMU_IDR0.S2P`).
    public var stage2: Bool
    /// Range invalidation and level hints are implemented (`SMMU_IDR3.RIL`).
    public var rangeInvalidation: Bool
    /// Hypervisor stage 1 contexts are implemented (`SMMU_IDR0.HYP`).
    public var hyp: Bool
    /// Creates a feature set.
    public init(stage1: Bool = true, stage2: Bool = true, rangeInvalidation: Bool = true, hyp: Bool = false) {
        self.stage1 = stage1; self.stage2 = stage2; self.rangeInvalidation = rangeInvalidation; self.hyp = hyp
    }
}

extension SMMUv3Command {
    /// Decodes a raw command, checking it as the SMMU does.
    ///
    /// - Throws: ``SMMUv3IllegalCommand`` for what raises `CERROR_ILL`.
    public init(words w0: UInt64, _ w1: UInt64, features: SMMUv3CommandFeatures = SMMUv3CommandFeatures()) throws(SMMUv3IllegalCommand) {
        let op = UInt8(truncatingIfNeeded: w0)
        guard let opcode = SMMUv3Opcode(rawValue: op) else { throw .unsupportedOpcode(op) }
        /// Every bit outside `defined0`/`defined1` must be zero.
        func check(_ defined0: UInt64, _ defined1: UInt64) throws(SMMUv3IllegalCommand) {
            if w0 & ~(defined0 | 0xFF) != 0 || w1 & ~defined1 != 0 { throw .reservedBits }
        }
        let sid = UInt32(SMMUv3Field.get(w0, 63, 32))
        let ssv = SMMUv3Field.flag(w0, 11)
        let ssid = UInt32(SMMUv3Field.get(w0, 31, 12))
        let vmid = UInt16(SMMUv3Field.get(w0, 47, 32))
        let asid = UInt16(SMMUv3Field.get(w0, 63, 48))
        let sidMask = SMMUv3Field.mask(63, 32), ssidMask = SMMUv3Field.mask(31, 12)
        let vmidMask = SMMUv3Field.mask(47, 32), asidMask = SMMUv3Field.mask(63, 48)
        let ssvBit: UInt64 = 1 << 11, ssecBit: UInt64 = 1 << 10
        let rangeMask0 = SMMUv3Field.mask(16, 12) | SMMUv3Field.mask(24, 20)
        let rangeMask1 = SMMUv3Field.mask(11, 8)
        // SSec must be zero on the Non-secure queue (the only queue modelled).
        if w0 & ssecBit != 0 {
            switch opcode {
            case .prefetchConfig, .prefetchAddr, .cfgiSTE, .cfgiSTERange, .cfgiCD, .cfgiCDAll, .resume, .stallTerm:
                throw .illegalParameters
            default:
                break
            }
        }
        func decodeRange() throws(SMMUv3IllegalCommand) -> SMMUv3TLBIRange {
            let r = SMMUv3TLBIRange(num: UInt8(SMMUv3Field.get(w0, 16, 12)), scale: UInt8(SMMUv3Field.get(w0, 24, 20)),
                                    tg: UInt8(SMMUv3Field.get(w1, 11, 10)), ttl: UInt8(SMMUv3Field.get(w1, 9, 8)))
            if !features.rangeInvalidation, r != .single { throw .reservedBits }
            if r.tg == 0, r.num != 0 || r.scale != 0 || r.ttl != 0 { throw .reservedBits }
            if r.tg != 0, r.num == 0, r.scale == 0, r.ttl == 0 { throw .illegalParameters }
            if r.tg == 2, r.ttl == 1 { throw .illegalParameters }
            return r
        }
        func needStage1() throws(SMMUv3IllegalCommand) { if !features.stage1 { throw .unsupportedOpcode(op) } }
        func needStage2() throws(SMMUv3IllegalCommand) { if !features.stage2 { throw .unsupportedOpcode(op) } }
        switch opcode {
        case .prefetchConfig:
            try check(sidMask | ssidMask | ssvBit, 0)
            self = .prefetchConfig(streamID: sid, substreamID: ssv ? ssid : nil)
        case .prefetchAddr:
            // A hint; decoded as a configuration prefetch of the stream (it has no effect).
            try check(sidMask | ssidMask | ssvBit, SMMUv3Field.mask(63, 12) | SMMUv3Field.mask(9, 0))
            self = .prefetchConfig(streamID: sid, substreamID: ssv ? ssid : nil)
        case .cfgiSTE:
            try check(sidMask, 1)
            self = .cfgiSTE(streamID: sid, leaf: w1 & 1 != 0)
        case .cfgiSTERange:
            try check(sidMask, 0x1F)
            self = .cfgiSTERange(streamID: sid, range: UInt8(w1 & 0x1F))
        case .cfgiCD:
            try needStage1()
            try check(sidMask | ssidMask, 1)
            self = .cfgiCD(streamID: sid, substreamID: ssid, leaf: w1 & 1 != 0)
        case .cfgiCDAll:
            try needStage1()
            try check(sidMask, 0)
            self = .cfgiCDAll(streamID: sid)
        case .tlbiNHAll:
            try needStage1()
            try check(vmidMask, 0)
            self = .tlbiNHAll(vmid: vmid)
        case .tlbiNHASID:
            try needStage1()
            try check(vmidMask | asidMask, 0)
            self = .tlbiNHASID(vmid: vmid, asid: asid)
        case .tlbiNHVA:
            try needStage1()
            try check(vmidMask | asidMask | rangeMask0, SMMUv3Field.mask(63, 12) | rangeMask1 | 1)
            self = .tlbiNHVA(vmid: vmid, asid: asid, address: w1 & SMMUv3Field.mask(63, 12), leaf: w1 & 1 != 0, range: try decodeRange())
        case .tlbiNHVAA:
            try needStage1()
            try check(vmidMask | rangeMask0, SMMUv3Field.mask(63, 12) | rangeMask1 | 1)
            self = .tlbiNHVAA(vmid: vmid, address: w1 & SMMUv3Field.mask(63, 12), leaf: w1 & 1 != 0, range: try decodeRange())
        case .tlbiEL2All, .tlbiEL2ASID, .tlbiEL2VA, .tlbiEL2VAA:
            // SMMU_IDR0.HYP == 0 in this model: the EL2 commands are CERROR_ILL.
            throw .unsupportedOpcode(op)
        case .tlbiS12VMAll:
            try needStage2()
            try check(vmidMask, 0)
            self = .tlbiS12VMAll(vmid: vmid)
        case .tlbiS2IPA:
            try needStage2()
            try check(vmidMask | rangeMask0, SMMUv3Field.mask(51, 12) | rangeMask1 | 1)
            self = .tlbiS2IPA(vmid: vmid, address: w1 & SMMUv3Field.mask(51, 12), leaf: w1 & 1 != 0, range: try decodeRange())
        case .tlbiNSNHAll:
            try check(0, 0)
            self = .tlbiNSNHAll
        case .atcInv:
            try check(sidMask | ssidMask | ssvBit | (1 << 9), SMMUv3Field.mask(63, 12) | 0x3F)
            self = .atcInv(streamID: sid, substreamID: ssv ? ssid : nil, global: SMMUv3Field.flag(w0, 9),
                           address: w1 & SMMUv3Field.mask(63, 12), size: UInt8(w1 & 0x3F))
        case .priResp:
            try check(sidMask | ssidMask | ssvBit, 0x1FF | SMMUv3Field.mask(13, 12))
            guard let resp = SMMUv3PRIResponse(rawValue: UInt8(SMMUv3Field.get(w1, 13, 12))) else { throw .illegalParameters }
            self = .priResp(streamID: sid, substreamID: ssv ? ssid : nil, group: UInt16(w1 & 0x1FF), response: resp)
        case .resume:
            try check(sidMask | SMMUv3Field.mask(13, 12), 0xFFFF)
            self = .resume(streamID: sid, stag: UInt16(w1 & 0xFFFF), action: UInt8(SMMUv3Field.get(w0, 13, 12)))
        case .stallTerm:
            try check(sidMask, 0)
            self = .stallTerm(streamID: sid)
        case .sync:
            try check(SMMUv3Field.mask(13, 12) | SMMUv3Field.mask(23, 22) | SMMUv3Field.mask(27, 24) | SMMUv3Field.mask(63, 32),
                      SMMUv3Field.mask(51, 2))
            guard let cs = SMMUv3SyncCompletion(rawValue: UInt8(SMMUv3Field.get(w0, 13, 12))) else { throw .illegalParameters }
            self = .sync(completion: cs, msiAddress: w1 & SMMUv3Field.mask(51, 2), msiData: UInt32(SMMUv3Field.get(w0, 63, 32)),
                         msh: UInt8(SMMUv3Field.get(w0, 23, 22)), msiAttr: UInt8(SMMUv3Field.get(w0, 27, 24)))
        }
    }
}
