// Translation of device transactions by the SMMUv3 model (§3.2, §3.4, §13): the TLB first, then a
// walk of the stage-1 tables (CD.TTB0), the stage-2 tables (STE.S2TTB), or both nested — a
// two-dimensional walk where every stage-1 descriptor address is an IPA translated by stage 2
// before it is read, and the final IPA is translated by stage 2 as well. Permissions are checked
// at both stages; hardware access-flag and dirty-state updates of stage-1 descriptors are writes
// through stage 2. Faults become event records (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS,
// F_PERMISSION with S2 and CLASS) when the stage records them (CD.R, STE.S2R).

import IOASIDStructures

/// A successful walk.
struct SMMUv3WalkResult {
    /// The output (physical) address of the input address.
    var output: UInt64
    /// The size of the page both stages map the address with (the smaller leaf).
    var pageSize: UInt64
    /// The rights both stages grant.
    var rights: AccessRights
    /// The stage-1 leaf is global (nG = 0).
    var global: Bool
    /// Descriptors read.
    var reads: Int
}

/// A failed walk: the fault and where it happened.
struct SMMUv3WalkFault: Error {
    var fault: PageTableFault
    var stage: TranslationStage
    /// IN (the input address or final IPA), TTD (a stage-1 descriptor's IPA at stage 2).
    var faultClass: SMMUv3FaultClass
    /// The IPA stage 2 faulted on.
    var ipa: UInt64
    /// For CLASS TTD: whether the stage-2 access was the write of a hardware update.
    var tableWrite: Bool
    var reads: Int
}

extension SMMUv3 {
    /// The event number of a table fault.
    static func eventID(_ reason: PageTableFault.Reason) -> SMMUv3EventID {
        switch reason {
        case .translation, .reservedBit: .translation
        case .addressSize: .addressSize
        case .accessFlag: .access
        case .permission: .permission
        }
    }

    /// The fabric's name for a table fault at `stage`.
    static func faultReason(_ f: PageTableFault, stage: TranslationStage) -> FaultReason {
        switch f.reason {
        case .translation: .translation(stage: stage, level: f.level)
        case .addressSize: .addressSize(stage: stage, level: f.level)
        case .reservedBit: .reservedBit(stage: stage, level: f.level)
        case .accessFlag: .accessFlag(stage: stage, level: f.level)
        case .permission: .permission(stage: stage, level: f.level)
        }
    }

    /// The access a request makes, as the table formats check it.
    @inline(__always)
    static func pageAccess(_ access: AccessPermissions, privileged: Bool) -> PageAccess {
        let kind: PageAccess.Kind = access.contains(.write) ? .write : access.contains(.execute) ? .execute : .read
        return PageAccess(kind, user: !privileged)
    }

    /// The rights for a request of `privileged` privilege.
    @inline(__always)
    static func permissions(_ rights: AccessRights, privileged: Bool) -> AccessPermissions {
        var p: AccessPermissions = []
        if rights.contains(privileged ? .read : .userRead) { p.insert(.read) }
        if rights.contains(privileged ? .write : .userWrite) { p.insert(.write) }
        if rights.contains(privileged ? .execute : .userExecute) { p.insert(.execute) }
        return p
    }

    /// Walks the tables of `config` for `address`. Stage 1 bypassed and stage 2 bypassed give
    /// the identity.
    func walk(_ config: ResolvedConfig, address: UInt64, access: PageAccess) -> Result<SMMUv3WalkResult, SMMUv3WalkFault> {
        let stream = config.stream
        var reads = 0
        var input = address
        var size: UInt64 = 1 << 63
        var rights = AccessRights.all
        var global = false
        if let ctx = config.context {
            if ctx.walksDisabled {
                return .failure(SMMUv3WalkFault(fault: PageTableFault(.translation, level: 0), stage: .first, faultClass: .input,
                                                ipa: 0, tableWrite: false, reads: 0))
            }
            if stream.stage2 {
                // The 2D walk: each stage-1 descriptor address (an IPA) through stage 2 first.
                var port = NestedWalkPort(stage2: stream.s2, root: stream.s2Root, memory: memory, update: true)
                let outcome = ctx.s1.walk(root: ctx.root, input: address, access: access, update: true, port: &port)
                reads += port.reads
                switch outcome {
                case .translated(let t, _, let leafLevel, _):
                    input = t.output
                    size = t.pageSize
                    rights = t.rights
                    global = memory.read64(port.access(at: leafLevel).host) & ArmStage1Descriptor.notGlobal == 0
                case .fault(let f):
                    return .failure(SMMUv3WalkFault(fault: f, stage: .first, faultClass: .input, ipa: 0, tableWrite: false, reads: reads))
                case .portFault:
                    // Stage 2 refused a stage-1 descriptor access: a read, or the write of a
                    // hardware update (which only a missing write permission refuses).
                    return .failure(SMMUv3WalkFault(fault: port.fault, stage: .second, faultClass: .tableDescriptor,
                                                    ipa: port.faultAddress, tableWrite: port.fault.reason == .permission(.write),
                                                    reads: reads))
                }
            } else {
                var port = DirectWalkPort(memory: memory)
                let outcome = ctx.s1.walk(root: ctx.root, input: address, access: access, update: true, port: &port)
                reads += port.reads
                switch outcome {
                case .translated(let t, let leafSlot, _, _):
                    return .success(SMMUv3WalkResult(output: t.output, pageSize: t.pageSize, rights: t.rights,
                                                     global: memory.read64(leafSlot) & ArmStage1Descriptor.notGlobal == 0, reads: reads))
                case .fault(let f):
                    return .failure(SMMUv3WalkFault(fault: f, stage: .first, faultClass: .input, ipa: 0, tableWrite: false, reads: reads))
                case .portFault:
                    preconditionFailure("the direct port never faults")
                }
            }
        }
        guard stream.stage2 else {
            // Both stages bypass: the identity, within the output address size.
            guard input >> UInt64(oasBits) == 0 else {
                return .failure(SMMUv3WalkFault(fault: PageTableFault(.addressSize, level: 0), stage: .first, faultClass: .input,
                                                ipa: 0, tableWrite: false, reads: reads))
            }
            return .success(SMMUv3WalkResult(output: input, pageSize: min(size, 4096), rights: rights, global: global, reads: reads))
        }
        var port = DirectWalkPort(memory: memory)
        let outcome = stream.s2.walk(root: stream.s2Root, input: input, access: access, update: true, port: &port)
        reads += port.reads
        switch outcome {
        case .translated(let t, _, _, _):
            return .success(SMMUv3WalkResult(output: t.output, pageSize: min(size, t.pageSize),
                                             rights: rights.intersection(t.rights), global: global, reads: reads))
        case .fault(let f):
            return .failure(SMMUv3WalkFault(fault: f, stage: .second, faultClass: .input, ipa: input, tableWrite: false, reads: reads))
        case .portFault:
            return .failure(SMMUv3WalkFault(fault: PageTableFault(.translation, level: 0), stage: .second, faultClass: .input,
                                            ipa: input, tableWrite: false, reads: reads))
        }
    }

    /// The TLB tag of a translation made with `config` for a request of `privileged` privilege.
    static func tag(_ config: ResolvedConfig, privileged: Bool) -> TranslationTag {
        TranslationTag(domain: config.stream.vmid, space: config.context.map { UInt32($0.asid) }, privileged: privileged)
    }

    /// The stages a translation made with `config` comes from.
    static func stages(_ config: ResolvedConfig) -> TranslationStages {
        switch (config.context != nil, config.stream.stage2) {
        case (true, true): .all
        case (true, false): .first
        default: .second
        }
    }

    /// Translates `address` for a transaction of `config`: a TLB hit that grants `access`, or a
    /// walk whose result is cached. Walk statistics are added to `statistics`.
    func translate(_ config: ResolvedConfig, address: UInt64, access: AccessPermissions, privileged: Bool, lookedUp: Bool = false,
                   statistics: inout (walks: Int, reads: Int)) -> Result<Translation, SMMUv3WalkFault> {
        let stream = config.stream
        if config.context == nil && !stream.stage2 {
            // Bypass: nothing to cache.
            switch walk(config, address: address, access: Self.pageAccess(access, privileged: privileged)) {
            case .success(let w): return .success(Translation(inputBase: address, outputBase: w.output, permissions: .all))
            case .failure(let f): return .failure(f)
            }
        }
        let tag = Self.tag(config, privileged: privileged)
        if !lookedUp, let t = tlb.lookup(tag, address: address), t.permissions.isSuperset(of: access) { return .success(t) }
        let ticket = tlb.fillTicket()
        let pageAccess = Self.pageAccess(access, privileged: privileged)
        let result = walk(config, address: address, access: pageAccess)
        statistics.walks += 1
        switch result {
        case .failure(let f):
            statistics.reads += f.reads
            return .failure(f)
        case .success(let w):
            statistics.reads += w.reads
            var permissions = Self.permissions(w.rights, privileged: privileged)
            // A writable-clean page (hardware dirty state) is cached without write: a later write
            // must walk again so that the walker marks it dirty.
            if pageAccess.kind != .write
                && ((config.context?.s1.dirtyStateEnabled ?? false) || (stream.stage2 && stream.s2.dirtyStateEnabled)) {
                permissions.remove(.write)
            }
            let shift = UInt8(w.pageSize.trailingZeroBitCount)
            let t = Translation(inputBase: address, outputBase: w.output, pageShift: shift, permissions: permissions,
                                global: w.global && config.context != nil)
            tlb.insert(t, tag: tag, stages: Self.stages(config), covering: address, ifUnchangedSince: ticket)
            return .success(t)
        }
    }

    /// The event record of a walk fault of a transaction.
    static func event(_ f: SMMUv3WalkFault, streamID: UInt32, substreamID: UInt32?, address: UInt64,
                      access: AccessPermissions, privileged: Bool) -> SMMUv3Event {
        var e = SMMUv3Event(id: eventID(f.fault.reason), streamID: streamID, substreamID: substreamID)
        e.read = !access.contains(.write)
        e.instruction = access.contains(.execute)
        e.privileged = privileged
        e.stage2 = f.stage == .second
        e.faultClass = f.faultClass
        e.inputAddress = address
        if f.stage == .second { e.ipa = f.ipa }
        if f.faultClass == .tableDescriptor, case .permission = f.fault.reason { e.tableRead = !f.tableWrite }
        return e
    }

    /// Whether the stage that faulted records its faults (CD.R, STE.S2R).
    static func records(_ f: SMMUv3WalkFault, _ config: ResolvedConfig) -> Bool {
        f.stage == .second ? config.stream.s2Record : (config.context?.record ?? true)
    }

    // MARK: TranslationAgent

    /// Translates an untranslated request (or checks a translated one): configuration from the
    /// STE and CD, the TLB, then a walk. A refused request records its event and returns the
    /// fault; faults are never recoverable here (this SMMU does not stall; devices resolve page
    /// faults with ATS and PRI).
    ///
    /// The hot path takes no lock: the stream's VMID and ASID from the lock-free
    /// ``ResolutionCache``, then the TLB (per-set seqlocks). A configuration not cached, a TLB
    /// miss or a fault goes the locked way.
    public func translate(_ request: DMARequest) -> Result<Translation, FaultRecord> {
        if request.addressType == .untranslated {
            let key = Self.fastKey(sid: Self.streamID(request.requesterID), ssid: request.pasid?.rawValue)
            if let v = resolutions.lookup(key) {
                let tag = TranslationTag(domain: UInt16(truncatingIfNeeded: v), space: v & (1 << 32) != 0 ? UInt32(truncatingIfNeeded: v >> 16) & 0xFFFF : nil,
                                         privileged: request.privileged)
                if let t = tlb.lookup(tag, address: request.address), t.permissions.isSuperset(of: request.access) { return .success(t) }
                return translateLocked(request, lookedUp: true)
            }
        }
        return translateLocked(request, lookedUp: false)
    }

    /// The key of a stream and substream in ``resolutions`` (never zero).
    @inline(__always)
    static func fastKey(sid: UInt32, ssid: UInt32?) -> UInt64 {
        1 << 63 | UInt64(sid) | (ssid.map { 1 << 52 | UInt64($0 & 0xF_FFFF) << 32 } ?? 0)
    }

    /// The value of a configuration in ``resolutions``: bits 15:0 VMID, 31:16 ASID, 32 whether
    /// there is a context (stage 1). Nil for a configuration the hot path does not take (bypass).
    static func fastValue(_ config: ResolvedConfig) -> UInt64? {
        if config.context == nil && !config.stream.stage2 { return nil }
        var v = UInt64(config.stream.vmid)
        if let c = config.context { v |= UInt64(c.asid) << 16 | 1 << 32 }
        return v
    }

    /// ``translate(_:)-(DMARequest)`` through the locked configuration; `lookedUp`: the TLB
    /// was just looked up for this request (one lookup counted per request).
    func translateLocked(_ request: DMARequest, lookedUp: Bool) -> Result<Translation, FaultRecord> {
        var interrupts: SMMUv3Interrupts = []
        defer { raise(interrupts) }
        let sid = Self.streamID(request.requesterID)
        let ssid = request.pasid?.rawValue
        if request.addressType == .translated {
            return checkTranslated(request, sid: sid, interrupts: &interrupts)
        }
        let resolved = state.withLock { s in
            let r = resolve(&s, sid: sid, ssid: ssid, quiet: false, interrupts: &interrupts)
            if case .success(let c) = r, let v = Self.fastValue(c) {
                resolutions.store(Self.fastKey(sid: sid, ssid: ssid), value: v, generation: resolutions.generation.load(ordering: .relaxed))
            }
            return r
        }
        let config: ResolvedConfig
        switch resolved {
        case .success(let c): config = c
        case .failure(let f): return .failure(FaultRecord(request, reason: f.reason))
        }
        var statistics = (walks: 0, reads: 0)
        let result = translate(config, address: request.address, access: request.access, privileged: request.privileged,
                               lookedUp: lookedUp, statistics: &statistics)
        switch result {
        case .success(let t):
            if statistics.walks > 0 {
                state.withLock { s in
                    s.statistics.walks += statistics.walks
                    s.statistics.tableReads += statistics.reads
                }
            }
            return .success(t)
        case .failure(let f):
            state.withLock { s in
                s.statistics.walks += statistics.walks
                s.statistics.tableReads += statistics.reads
                if Self.records(f, config) {
                    recordEvent(&s, Self.event(f, streamID: sid, substreamID: ssid, address: request.address, access: request.access,
                                               privileged: request.privileged), &interrupts)
                }
            }
            return .failure(FaultRecord(request, reason: Self.faultReason(f.fault, stage: f.stage)))
        }
    }

    /// A translated (ATS) request: with `CR0.ATSCHK`, allowed only for a stream whose STE
    /// translates with `EATS` set (otherwise F_TRANSL_FORBIDDEN, or a silent abort for an invalid
    /// STE); it then translates to itself.
    func checkTranslated(_ request: DMARequest, sid: UInt32, interrupts: inout SMMUv3Interrupts) -> Result<Translation, FaultRecord> {
        let identity = Translation(inputBase: request.address, outputBase: request.address, permissions: .all)
        let refused: FaultReason? = state.withLock { s in
            guard s.cr0 & SMMUv3CR0.atsCheck != 0 else { return nil }
            var ignored: SMMUv3Interrupts = []
            switch resolve(&s, sid: sid, ssid: nil, quiet: true, interrupts: &ignored) {
            case .failure(let f) where f.level == .stream || f.level == .abort:
                return .translatedRequestBlocked
            default:
                break
            }
            let stream = s.streams[sid]
            if stream?.kind == .translate && stream?.eats != 0 { return nil }
            var e = SMMUv3Event(id: .translationForbidden, streamID: sid)
            e.inputAddress = request.address
            e.read = !request.access.contains(.write)
            recordEvent(&s, e, &interrupts)
            return .translatedRequestBlocked
        }
        if let refused { return .failure(FaultRecord(request, reason: refused)) }
        return .success(identity)
    }

    /// Answers an ATS translation request (§3.9.1, §13.6): Completer Abort for a bad
    /// configuration, Unsupported Request (and F_BAD_ATS_TREQ) when the STE does not allow ATS,
    /// otherwise the translation — with no rights when the walk faults (no event is recorded),
    /// so that a device with PRI asks for the page.
    public func translate(_ request: ATSTranslationRequest) -> ATSCompletion {
        var interrupts: SMMUv3Interrupts = []
        defer { raise(interrupts) }
        let sid = Self.streamID(request.requesterID)
        let ssid = request.pasid?.rawValue
        enum Resolution { case config(ResolvedConfig), done(ATSCompletion) }
        let resolved: Resolution = state.withLock { s in
            guard s.cr0 & SMMUv3CR0.smmuEnable != 0 else { return .done(.unsupportedRequest) }
            switch resolve(&s, sid: sid, ssid: ssid, quiet: true, interrupts: &interrupts) {
            case .success(let c):
                if c.stream.kind == .translate && c.stream.eats != 0 { return .config(c) }
                var e = SMMUv3Event(id: .badATSTranslationRequest, streamID: sid, substreamID: ssid)
                e.inputAddress = request.address
                e.read = !request.access.contains(.write)
                recordEvent(&s, e, &interrupts)
                return .done(.unsupportedRequest)
            case .failure(let f):
                return .done(f.level == .abort ? .unsupportedRequest : .completerAbort)
            }
        }
        let config: ResolvedConfig
        switch resolved {
        case .config(let c): config = c
        case .done(let completion): return completion
        }
        var statistics = (walks: 0, reads: 0)
        // Ask for what the device wants; without write permission, grant what reads allow.
        var result = translate(config, address: request.address, access: request.access, privileged: request.privileged,
                               statistics: &statistics)
        if case .failure(let f) = result, case .permission(.write) = f.fault.reason, request.access.contains(.read) {
            result = translate(config, address: request.address, access: request.access.subtracting(.write),
                               privileged: request.privileged, statistics: &statistics)
        }
        state.withLock { s in
            s.statistics.walks += statistics.walks
            s.statistics.tableReads += statistics.reads
        }
        switch result {
        case .success(let t):
            var granted = t
            granted.permissions = t.permissions.intersection(request.access.union(.read))
            return .translated(granted)
        case .failure:
            return .translated(Translation(inputBase: request.address, outputBase: 0, permissions: []))
        }
    }
}
