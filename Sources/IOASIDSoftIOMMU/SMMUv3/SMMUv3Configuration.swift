// How the SMMUv3 model finds a transaction's configuration (§3.3, §5): the STE of its StreamID
// in the stream table (linear or 2-level), then, when stage 1 translates, the CD of its
// SubstreamID in the CD table (linear or 2-level; its addresses are IPAs translated by stage 2
// when stage 2 translates too). ILLEGAL structures are reported as C_BAD_STE / C_BAD_CD, other
// problems as C_BAD_STREAMID, C_BAD_SUBSTREAMID, F_STREAM_DISABLED, F_STE_FETCH, F_CD_FETCH, or a
// stage-2 fault with CLASS = CD. Valid configurations are cached (decoded) until a CFGI_*
// command covering them completes.

/// Where a CD was found: the StreamID that located its table and its index in the table.
struct ContextKey: Hashable {
    var streamID: UInt32
    var index: UInt32
}

/// A decoded, valid STE.
struct StreamConfig {
    enum Kind {
        /// `Config == 0b0xx`: every transaction aborts, no event.
        case abort
        /// `Config == 0b100`.
        case bypass
        /// Stage 1 and/or stage 2 translate.
        case translate
    }
    var kind: Kind
    var stage1 = false
    var stage2 = false
    /// `S2VMID` (tags TLB entries even when stage 2 bypasses).
    var vmid: UInt16 = 0
    /// The stage-2 table format from `S2T0SZ`, `S2SL0`, `S2PS`, `S2HA`, `S2HD`.
    var s2 = ArmStage2Format.placeholder
    /// `S2TTB`.
    var s2Root: UInt64 = 0
    /// `S2R`: stage-2 faults are recorded.
    var s2Record = false
    /// `S1ContextPtr` (an IPA when stage 2 translates).
    var contextPtr: UInt64 = 0
    /// `S1CDMax` (0 when substreams are unsupported).
    var cdMax = 0
    /// `S1Fmt` (0 linear, 1 and 2 two-level), as it behaves.
    var s1Fmt: UInt64 = 0
    /// `S1DSS`.
    var s1dss: UInt64 = 0
    /// `EATS`.
    var eats: UInt64 = 0
    /// `PPAR`.
    var ppar = false
}

/// A decoded, valid CD.
struct ContextConfig {
    /// `ASID`.
    var asid: UInt16
    /// The stage-1 table format from `T0SZ`, `IPS`, `HA`, `HD`.
    var s1: ArmStage1Format
    /// `TTB0`.
    var root: UInt64
    /// `R`: stage-1 faults are recorded.
    var record: Bool
    /// `EPD0`: TTB0 walks are disabled (a TLB miss is a translation fault).
    var walksDisabled: Bool
}

/// The configuration a transaction uses: its stream, and its context unless stage 1 bypasses.
struct ResolvedConfig {
    var streamID: UInt32
    var stream: StreamConfig
    var context: ContextConfig?
    /// The CD index the context came from.
    var contextIndex: UInt32 = 0
}

/// Why a transaction found no usable configuration.
struct ConfigurationFault: Error {
    /// What kind of problem, which decides the ATS completion.
    enum Level {
        /// Before a valid STE was found (C_BAD_STREAMID, F_STE_FETCH, C_BAD_STE).
        case stream
        /// The STE aborts (Config 0b0xx or GBPA abort).
        case abort
        /// The substream or CD (C_BAD_SUBSTREAMID, F_STREAM_DISABLED, F_CD_FETCH, C_BAD_CD,
        /// stage-2 faults on the CD).
        case context
    }
    var level: Level
    /// The event to record, if any.
    var event: SMMUv3Event?
    /// The fault, as the fabric names it.
    var reason: FaultReason
}

extension ArmStage2Format {
    /// A format value for streams without stage 2 (never walked).
    static let placeholder = try! ArmStage2Format(inputAddressBits: 48, outputAddressBits: 48)
}

extension SMMUv3 {
    /// The output address size in bits (`IDR5.OAS`, at most 48 for the table formats).
    var oasBits: Int { min(features.outputAddressBits, 48) }

    /// Finds the configuration of a transaction from `sid` with `ssid`. Called with `state`
    /// held; records the events it finds (unless `quiet`, for ATS translation requests).
    func resolve(_ s: inout State, sid: UInt32, ssid: UInt32?, quiet: Bool,
                 interrupts: inout SMMUv3Interrupts) -> Result<ResolvedConfig, ConfigurationFault> {
        func fail(_ level: ConfigurationFault.Level, _ event: SMMUv3Event?, _ reason: FaultReason) -> Result<ResolvedConfig, ConfigurationFault> {
            if let event, !quiet { recordEvent(&s, event, &interrupts) }
            return .failure(ConfigurationFault(level: level, event: event, reason: reason))
        }
        // SMMUEN == 0: GBPA decides.
        if s.cr0 & SMMUv3CR0.smmuEnable == 0 {
            if s.gbpa & (1 << 20) != 0 { return fail(.abort, nil, .blocked) }
            return .success(ResolvedConfig(streamID: sid, stream: StreamConfig(kind: .bypass)))
        }
        let stream: StreamConfig
        if let cached = s.streams[sid] {
            stream = cached
        } else {
            switch fetchStream(&s, sid: sid, ssid: ssid) {
            case .success(let c):
                stream = c
                s.streams[sid] = c
            case .failure(let f):
                return fail(f.level, f.event, f.reason)
            }
        }
        var resolved = ResolvedConfig(streamID: sid, stream: stream)
        switch stream.kind {
        case .abort:
            return fail(.abort, nil, .blocked)
        case .bypass:
            if let ssid { return fail(.context, SMMUv3Event(id: .badSubstreamID, streamID: sid, substreamID: ssid), .pasidNotSupported) }
            return .success(resolved)
        case .translate:
            break
        }
        guard stream.stage1 else {
            // Stage 1 bypasses: a SubstreamID cannot be used.
            if let ssid { return fail(.context, SMMUv3Event(id: .badSubstreamID, streamID: sid, substreamID: ssid), .pasidNotSupported) }
            return .success(resolved)
        }
        // Which CD (§5.2 S1CDMax, S1DSS).
        let index: UInt32
        if stream.cdMax == 0 {
            if let ssid { return fail(.context, SMMUv3Event(id: .badSubstreamID, streamID: sid, substreamID: ssid), .pasidNotSupported) }
            index = 0
        } else if let ssid {
            guard UInt64(ssid) < UInt64(1) << UInt64(stream.cdMax) else {
                return fail(.context, SMMUv3Event(id: .badSubstreamID, streamID: sid, substreamID: ssid), .pasidNotSupported)
            }
            if ssid == 0 && stream.s1dss == 2 {
                return fail(.context, SMMUv3Event(id: .streamDisabled, streamID: sid, substreamID: ssid), .blocked)
            }
            index = ssid
        } else {
            switch stream.s1dss {
            case 1: return .success(resolved)                       // bypass stage 1
            case 2: index = 0                                        // CD 0
            default: return fail(.context, SMMUv3Event(id: .streamDisabled, streamID: sid), .blocked)
            }
        }
        let key = ContextKey(streamID: sid, index: index)
        if let cached = s.contexts[key] {
            resolved.context = cached
        } else {
            switch fetchContext(&s, stream: stream, sid: sid, ssid: ssid, index: index) {
            case .success(let c):
                resolved.context = c
                s.contexts[key] = c
            case .failure(let f):
                return fail(f.level, f.event, f.reason)
            }
        }
        resolved.contextIndex = index
        return .success(resolved)
    }

    // MARK: STE

    /// Locates and decodes the STE of `sid` (§3.3.2, §5.2).
    func fetchStream(_ s: inout State, sid: UInt32, ssid: UInt32?) -> Result<StreamConfig, ConfigurationFault> {
        let badStreamID = ConfigurationFault(level: .stream,
                                             event: s.cr2 & 2 != 0 ? SMMUv3Event(id: .badStreamID, streamID: sid, substreamID: ssid) : nil,
                                             reason: .invalidContext)
        let cfg = s.strtabBaseCfg
        let log2Size = min(Int(cfg & 0x3F), features.streamIDBits)
        let format = (cfg >> 16) & 3
        guard UInt64(sid) < UInt64(1) << UInt64(log2Size) else { return .failure(badStreamID) }
        let base = s.strtabBase & SMMUv3Field.mask(51, 6)
        let address: UInt64
        if format == 1 && features.twoLevelStreamTable {
            var split = Int((cfg >> 6) & 0x1F)
            if ![6, 8, 10].contains(split) { split = 6 }
            split = min(split, log2Size)
            let l1Entries = UInt64(1) << UInt64(log2Size - split)
            let l1Base = base & ~(max(l1Entries * 8, 64) - 1)
            let l1Address = l1Base + UInt64(sid >> UInt32(split)) * 8
            guard l1Address >> UInt64(oasBits) == 0 else {
                var e = SMMUv3Event(id: .steFetch, streamID: sid, substreamID: ssid)
                e.fetchAddress = l1Address
                return .failure(ConfigurationFault(level: .stream, event: e, reason: .invalidContext))
            }
            let l1 = SMMUv3L1StreamTableDescriptor(word: memory.read64(l1Address))
            let low = UInt64(sid) & ((UInt64(1) << UInt64(split)) - 1)
            guard l1.span != 0, l1.span <= UInt64(split + 1), low < UInt64(1) << (l1.span - 1) else { return .failure(badStreamID) }
            address = l1.l2Ptr + low * SMMUv3StreamTableEntry.size
        } else {
            // Linear (a reserved FMT behaves as linear).
            let tableBase = base & ~((UInt64(64) << UInt64(log2Size)) - 1)
            address = tableBase + UInt64(sid) * SMMUv3StreamTableEntry.size
        }
        guard (address + 63) >> UInt64(oasBits) == 0 else {
            var e = SMMUv3Event(id: .steFetch, streamID: sid, substreamID: ssid)
            e.fetchAddress = address
            return .failure(ConfigurationFault(level: .stream, event: e, reason: .invalidContext))
        }
        s.statistics.steFetches += 1
        let ste = SMMUv3StreamTableEntry(memory: memory, at: address)
        guard let config = decode(ste) else {
            return .failure(ConfigurationFault(level: .stream, event: SMMUv3Event(id: .badSTE, streamID: sid, substreamID: ssid),
                                               reason: .invalidContext))
        }
        return .success(config)
    }

    /// Decodes a fetched STE; nil when it is invalid or ILLEGAL (C_BAD_STE).
    func decode(_ ste: SMMUv3StreamTableEntry) -> StreamConfig? {
        guard ste.valid else { return nil }
        switch ste.configBits {
        case 0...3: return StreamConfig(kind: .abort)
        case 4: return StreamConfig(kind: .bypass, vmid: ste.s2VMID)
        default: break
        }
        var c = StreamConfig(kind: .translate)
        c.stage1 = ste.configBits & 1 != 0
        c.stage2 = ste.configBits & 2 != 0
        c.vmid = ste.s2VMID
        c.eats = ste.eats
        c.ppar = ste.ppar
        if c.stage1 && !features.stage1 { return nil }
        if c.stage2 && !features.stage2 { return nil }
        // EATS: full ATS only (split-stage ATS is not implemented); nothing without IDR0.ATS.
        if c.eats != 0 && (!features.ats || c.eats != 1) { return nil }
        // StreamWorld: NS-EL1 only (IDR0.HYP == 0).
        if ste.strw != 0 { return nil }
        if c.stage1 {
            let cdMax = Int(ste.s1CDMax)
            if cdMax > features.substreamIDBits { return nil }
            c.cdMax = features.substreamIDBits == 0 ? 0 : cdMax
            if c.cdMax != 0 {
                c.s1Fmt = ste.s1Fmt == 3 ? 0 : ste.s1Fmt
                if c.s1Fmt != 0 && !features.twoLevelCDTable { return nil }
                c.s1dss = ste.s1DSS == 3 ? 0 : ste.s1DSS
            }
            c.contextPtr = ste.s1ContextPtr
        }
        if c.stage2 {
            // AArch64 tables, little-endian, 4 KiB granule, no stalls (STALL_MODEL == 0b01).
            guard ste.s2AA64, !ste.s2ENDI, ste.s2TG == SMMUv3Granule.size4K.rawValue, !ste.s2S else { return nil }
            guard let ps = SMMUv3AddressSize.bits(forEncoding: ste.s2PS) else { return nil }
            let outputBits = min(ps, oasBits)
            guard let format = try? ArmStage2Format(t0sz: Int(ste.s2T0SZ), sl0: Int(ste.s2SL0), outputAddressBits: outputBits,
                                                    hardwareAccessFlag: ste.s2HA && features.hardwareAccessFlag,
                                                    hardwareDirtyState: ste.s2HD && features.hardwareDirtyState) else { return nil }
            guard ste.s2TTB >> UInt64(outputBits) == 0 else { return nil }
            c.s2 = format
            c.s2Root = ste.s2TTB & ~0xFFF
            c.s2Record = ste.s2R
        }
        return c
    }

    // MARK: CD

    /// Reads the 64-bit word at `address` of a CD table: through stage 2 when the stream
    /// translates at stage 2 (the address is an IPA), else directly (a PA).
    func readContextWord(_ s: inout State, stream: StreamConfig, sid: UInt32, ssid: UInt32?, address: UInt64) -> Result<UInt64, ConfigurationFault> {
        var pa = address
        if stream.stage2 {
            var port = DirectWalkPort(memory: memory)
            switch stream.s2.walk(root: stream.s2Root, input: address, access: .read, update: true, port: &port) {
            case .translated(let t, _, _, _):
                pa = t.output
            case .fault(let f):
                s.statistics.tableReads += port.reads
                var e = SMMUv3Event(id: Self.eventID(f.reason), streamID: sid, substreamID: ssid)
                e.stage2 = true
                e.faultClass = .cd
                e.read = true
                e.ipa = address
                return .failure(ConfigurationFault(level: .context, event: stream.s2Record ? e : nil,
                                                   reason: Self.faultReason(f, stage: .second)))
            case .portFault:
                return .failure(ConfigurationFault(level: .context, event: nil, reason: .invalidPASIDEntry))
            }
            s.statistics.tableReads += port.reads
        }
        guard pa >> UInt64(oasBits) == 0 else {
            var e = SMMUv3Event(id: .cdFetch, streamID: sid, substreamID: ssid)
            e.fetchAddress = address
            return .failure(ConfigurationFault(level: .context, event: e, reason: .invalidPASIDEntry))
        }
        return .success(memory.read64(pa))
    }

    /// Locates and decodes CD `index` of `stream`'s CD table (§3.3.3, §5.4).
    func fetchContext(_ s: inout State, stream: StreamConfig, sid: UInt32, ssid: UInt32?, index: UInt32) -> Result<ContextConfig, ConfigurationFault> {
        var address: UInt64
        if stream.cdMax == 0 {
            address = stream.contextPtr
        } else if stream.s1Fmt == 0 {
            let tableBase = stream.contextPtr & ~((UInt64(64) << UInt64(stream.cdMax)) - 1)
            address = tableBase + UInt64(index) * SMMUv3ContextDescriptor.size
        } else {
            let split: UInt64 = stream.s1Fmt == 1 ? 6 : 10
            let l1Entries = stream.cdMax > Int(split) ? UInt64(1) << (UInt64(stream.cdMax) - split) : 1
            let l1Base = stream.contextPtr & ~(max(l1Entries * 8, 64) - 1)
            let l1Address = l1Base + (UInt64(index) >> split) * 8
            let l1Word: UInt64
            switch readContextWord(&s, stream: stream, sid: sid, ssid: ssid, address: l1Address) {
            case .success(let w): l1Word = w
            case .failure(let f): return .failure(f)
            }
            let l1 = SMMUv3L1ContextDescriptor(word: l1Word)
            guard l1.valid else {
                return .failure(ConfigurationFault(level: .context, event: SMMUv3Event(id: .badSubstreamID, streamID: sid, substreamID: ssid),
                                                   reason: .pasidNotAttached))
            }
            let l2Base = stream.s1Fmt == 2 ? l1.l2Ptr & ~0xFFFF : l1.l2Ptr
            address = l2Base + (UInt64(index) & ((1 << split) - 1)) * SMMUv3ContextDescriptor.size
        }
        s.statistics.cdFetches += 1
        var cd = SMMUv3ContextDescriptor()
        for i in 0..<8 {
            switch readContextWord(&s, stream: stream, sid: sid, ssid: ssid, address: address + UInt64(i) * 8) {
            case .success(let w): cd.words[i] = w
            case .failure(let f): return .failure(f)
            }
            if i == 0 && !cd.valid {
                return .failure(ConfigurationFault(level: .context, event: SMMUv3Event(id: .badCD, streamID: sid, substreamID: ssid),
                                                   reason: .pasidNotAttached))
            }
        }
        guard let config = decode(cd) else {
            return .failure(ConfigurationFault(level: .context, event: SMMUv3Event(id: .badCD, streamID: sid, substreamID: ssid),
                                               reason: .invalidPASIDEntry))
        }
        return .success(config)
    }

    /// Decodes a valid CD; nil when it is ILLEGAL (C_BAD_CD).
    func decode(_ cd: SMMUv3ContextDescriptor) -> ContextConfig? {
        // AArch64 tables, little-endian, no stalls (STALL_MODEL == 0b01).
        guard cd.aa64, !cd.endi, !cd.stall else { return nil }
        guard let ips = SMMUv3AddressSize.bits(forEncoding: cd.ips) else { return nil }
        let outputBits = min(ips, oasBits)
        var t0sz = Int(cd.t0SZ)
        if cd.epd0 {
            t0sz = min(max(t0sz, 16), 39)
        } else {
            // TTB0 walks: 4 KiB granule, T0SZ 16 … 39 (IDR3.STT == 0).
            guard cd.tg0 == SMMUv3Granule.size4K.rawValue, (16...39).contains(t0sz) else { return nil }
        }
        let format = ArmStage1Format(t0sz: t0sz, outputAddressBits: outputBits,
                                     hardwareAccessFlag: cd.ha && features.hardwareAccessFlag,
                                     hardwareDirtyState: cd.hd && features.hardwareDirtyState)
        return ContextConfig(asid: cd.asid, s1: format, root: cd.ttb0 & ~0xF, record: cd.record, walksDisabled: cd.epd0)
    }
}
