// Translation of requests by a VT-d unit: resolving the context and PASID entries (through
// their caches), the IOTLB lookup, the walk selected by PGTT, ATS translation requests, and
// fault recording.

/// A translation fault inside the unit: the VT-d fault reason, and where a walk faulted.
struct VTdFault: Error {
    var code: VTdFaultReasonCode
    var stage: TranslationStage?
    var level: Int?
    /// FPD was set in an entry on the way: the fault is not recorded.
    var faultsDisabled = false

    init(_ code: VTdFaultReasonCode, stage: TranslationStage? = nil, level: Int? = nil, faultsDisabled: Bool = false) {
        self.code = code
        self.stage = stage
        self.level = level
        self.faultsDisabled = faultsDisabled
    }

    /// The fabric's reason for this fault.
    var reason: FaultReason {
        let lvl = level ?? 0
        switch code {
        case .invalidRootTableAddress, .legacyModeRequestWithPASID, .rootEntryAccess, .rootEntryNotPresent,
             .rootEntryReserved, .contextEntryAccess, .contextEntryNotPresent, .contextEntryReserved,
             .contextEntryInvalid, .ridPASIDInvalid:
            return .invalidContext
        case .deviceTLBNotEnabled: return .translatedRequestBlocked
        case .pasidNotEnabled, .pasidTooLarge: return .pasidNotSupported
        case .pageRequestNotEnabled, .executeNotEnabled, .supervisorNotEnabled: return .blocked
        case .pasidDirectoryEntryNotPresent, .pasidEntryNotPresent: return .pasidNotAttached
        case .pasidDirectoryEntryAccess, .pasidDirectoryEntryReserved, .pasidEntryAccess, .pasidEntryReserved,
             .pasidEntryInvalid, .secondStageTablePointerInvalid:
            return .invalidPASIDEntry
        case .firstStageEntryNotPresent, .firstStageEntryAccess, .firstStageRootAccess:
            return .translation(stage: .first, level: lvl)
        case .firstStageEntryReserved: return .reservedBit(stage: .first, level: lvl)
        case .nonCanonicalAddress: return .addressSize(stage: .first, level: lvl)
        case .firstStageTableBeyondSecondStage: return .addressSize(stage: .second, level: lvl)
        case .firstStageRootReadDenied, .firstStageTableReadDenied, .firstStageTableWriteDenied:
            return .permission(stage: .second, level: lvl)
        case .secondStageEntryAccess, .secondStageEntryNotPresent: return .translation(stage: .second, level: lvl)
        case .secondStageEntryReserved: return .reservedBit(stage: .second, level: lvl)
        case .addressBeyondWidth: return .addressSize(stage: stage ?? .second, level: lvl)
        case .secondStageOutputBeyondWidth: return .addressSize(stage: .second, level: lvl)
        case .userAccessToSupervisorPage, .executeDenied, .writeDenied, .readDenied:
            return .permission(stage: stage ?? .second, level: lvl)
        }
    }

    /// Whether a device with page requests enabled may resolve this fault with PRI: a walk found
    /// no usable translation (not present or not permitted).
    var resolvableByPageRequest: Bool {
        switch code {
        case .firstStageEntryNotPresent, .secondStageEntryNotPresent, .userAccessToSupervisorPage, .executeDenied,
             .writeDenied, .readDenied, .firstStageRootReadDenied, .firstStageTableReadDenied, .firstStageTableWriteDenied:
            return true
        default:
            return false
        }
    }
}

/// What resolving a requester and PASID produced.
struct VTdResolution {
    /// The context entry of the requester.
    var context: VTdContextEntry
    /// The PASID entry used.
    var entry: VTdPASIDEntry
    /// The PASID the request was translated for (RID_PASID for requests without PASID).
    var pasid: UInt32
    /// Whether the request is privileged (PM, or RID_PRIV without PASID).
    var privileged: Bool
    /// FPD anywhere on the way.
    var faultsDisabled: Bool
    /// The first-stage format the entry selects (meaningful for PGTT first stage and nested).
    var firstStage: X86FirstStageFormat
    /// The second-stage format the entry selects (meaningful for PGTT second stage and nested).
    var secondStage: VTdSecondStageFormat
}

/// How a request reaches the unit.
enum VTdRequestKind {
    case untranslated, translated, translationRequest
}

extension VTdUnit {
    // MARK: Resolution

    /// Finds the context and PASID entries for a request (through the context and PASID caches).
    /// A successful resolution of an untranslated or translated request also fills the
    /// lock-free ``ResolutionCache`` that ``translate(_:)-(DMARequest)`` reads first.
    func resolve(rid: UInt16, pasid: UInt32?, privileged: Bool, execute: Bool,
                 kind: VTdRequestKind) -> Result<VTdResolution?, VTdFault> {
        state.withLock { s -> Result<VTdResolution?, VTdFault> in
            let result = resolveLocked(&s, rid: rid, pasid: pasid, privileged: privileged, execute: execute, kind: kind)
            let fastKind: VTdFastResolution.Kind
            switch kind {
            case .untranslated: fastKind = .untranslated
            case .translated: fastKind = .translated
            case .translationRequest: return result
            }
            let value: UInt64
            switch result {
            case .failure: return result
            case .success(nil): value = VTdFastResolution.value(.identity)
            case .success(let r?):
                if kind == .translated {
                    value = VTdFastResolution.value(.identity)
                } else {
                    let mode: VTdFastResolution.Mode
                    switch r.entry.pgtt {
                    case .firstStage?: mode = .firstStage
                    case .secondStage?: mode = .secondStage
                    case .nested?: mode = .nested
                    case .passThrough?: mode = .passThrough
                    case nil: return result
                    }
                    value = VTdFastResolution.value(mode, domain: r.entry.domainID, pasid: r.pasid, privileged: r.privileged)
                }
            }
            resolutions.store(VTdFastResolution.key(rid: rid, pasid: pasid, privileged: privileged, execute: execute, kind: fastKind),
                              value: value, generation: resolutions.generation.load(ordering: .relaxed))
            return result
        }
    }

    /// ``resolve(rid:pasid:privileged:execute:kind:)`` with `state` locked.
    private func resolveLocked(_ s: inout State, rid: UInt16, pasid: UInt32?, privileged: Bool, execute: Bool,
                               kind: VTdRequestKind) -> Result<VTdResolution?, VTdFault> {
        guard s.globalStatus & VTdGlobalCommand.translationEnable != 0 else { return .success(nil) }
        guard s.scalableMode, s.rootTable != 0 else {
            return .failure(VTdFault(pasid != nil ? .legacyModeRequestWithPASID : .invalidRootTableAddress))
        }
        // Context entry.
        let context: VTdContextEntry
        switch lookupContext(&s, rid: rid) {
        case .success(let c): context = c
        case .failure(let f): return .failure(f)
        }
        var faultsDisabled = context.faultProcessingDisable
        if kind != .untranslated, !context.deviceTLBEnable {
            return .failure(VTdFault(.deviceTLBNotEnabled, faultsDisabled: faultsDisabled))
        }
        if kind == .translated {
            return .success(VTdResolution(context: context, entry: VTdPASIDEntry(), pasid: pasid ?? 0, privileged: privileged,
                                          faultsDisabled: faultsDisabled, firstStage: defaultFirstStage,
                                          secondStage: defaultSecondStage))
        }
        // PASID.
        let effective: UInt32
        var priv = privileged
        if let pasid {
            guard context.pasidEnable, extendedCapability.pasid else {
                return .failure(VTdFault(.pasidNotEnabled, faultsDisabled: faultsDisabled))
            }
            guard pasid < context.pasidLimit, pasid >> UInt32(extendedCapability.pasidSizeSupported) == 0 else {
                return .failure(VTdFault(.pasidTooLarge, faultsDisabled: faultsDisabled))
            }
            effective = pasid
        } else {
            guard context.ridPASID < context.pasidLimit else {
                return .failure(VTdFault(.ridPASIDInvalid, faultsDisabled: faultsDisabled))
            }
            effective = context.ridPASID
            priv = context.ridPrivileged
        }
        // PASID entry.
        let key = UInt64(rid) << 20 | UInt64(effective)
        let cached: CachedPASID
        if let c = s.pasidCache[key] {
            s.statistics.pasidHits += 1
            cached = c
        } else {
            s.statistics.pasidMisses += 1
            let dir = VTdPASIDDirectoryEntry(rawValue: memory.read64(VTdPASIDDirectoryEntry.address(directory: context.pasidDirectory,
                                                                                                 pasid: effective)))
            guard dir.present else {
                return .failure(VTdFault(.pasidDirectoryEntryNotPresent, faultsDisabled: faultsDisabled || dir.faultProcessingDisable))
            }
            faultsDisabled = faultsDisabled || dir.faultProcessingDisable
            if dir.rawValue & VTdPASIDDirectoryEntry.reservedMask != 0 {
                return .failure(VTdFault(.pasidDirectoryEntryReserved, faultsDisabled: faultsDisabled))
            }
            let e = VTdPASIDEntry.read(memory, at: VTdPASIDEntry.address(table: dir.pasidTable, pasid: effective))
            guard e.present else {
                return .failure(VTdFault(.pasidEntryNotPresent, faultsDisabled: faultsDisabled || e.faultProcessingDisable))
            }
            if e.hasReservedBits {
                return .failure(VTdFault(.pasidEntryReserved, faultsDisabled: faultsDisabled || e.faultProcessingDisable))
            }
            if !isSupported(e) {
                return .failure(VTdFault(.pasidEntryInvalid, faultsDisabled: faultsDisabled || e.faultProcessingDisable))
            }
            cached = CachedPASID(entry: e, directoryFaultsDisabled: dir.faultProcessingDisable, firstStage: firstStageFormat(e),
                                 secondStage: e.secondStageLevels != nil ? secondStageFormat(e) : defaultSecondStage)
            s.pasidCache[key] = cached
        }
        faultsDisabled = faultsDisabled || cached.directoryFaultsDisabled || cached.entry.faultProcessingDisable
        if priv && !cached.entry.supervisorRequestEnable {
            return .failure(VTdFault(.supervisorNotEnabled, faultsDisabled: faultsDisabled))
        }
        if execute && !(extendedCapability.executeRequests && cached.entry.executeRequestEnable) {
            return .failure(VTdFault(.executeNotEnabled, faultsDisabled: faultsDisabled))
        }
        return .success(VTdResolution(context: context, entry: cached.entry, pasid: effective, privileged: priv,
                                      faultsDisabled: faultsDisabled, firstStage: cached.firstStage,
                                      secondStage: cached.secondStage))
    }

    /// Whether the unit supports what a present PASID entry asks for (else the entry is invalid).
    func isSupported(_ e: VTdPASIDEntry) -> Bool {
        guard let pgtt = e.pgtt else { return false }
        let needsSecondStage = pgtt == .secondStage || pgtt == .nested
        let needsFirstStage = pgtt == .firstStage || pgtt == .nested
        switch pgtt {
        case .firstStage: guard extendedCapability.firstStageTranslation else { return false }
        case .secondStage: guard extendedCapability.secondStageTranslation else { return false }
        case .nested: guard extendedCapability.nestedTranslation else { return false }
        case .passThrough: guard extendedCapability.passThrough else { return false }
        }
        if needsSecondStage {
            guard let levels = e.secondStageLevels, capability.supportsSecondStage(levels: levels) else { return false }
            if e.secondStageAccessedDirtyEnable && !extendedCapability.secondStageAccessedDirty { return false }
            if e.secondStageTable >> UInt64(configuration.hostAddressWidth) != 0 { return false }
        }
        if needsFirstStage {
            guard let levels = e.firstStageLevels else { return false }
            if levels == 5 && !capability.firstStage5LevelPaging { return false }
            if e.supervisorRequestEnable && !extendedCapability.supervisorRequests { return false }
            if e.extendedAccessedFlagEnable && !extendedCapability.extendedAccessedFlag { return false }
        }
        return true
    }

    // MARK: Walks

    /// The second-stage format a PASID entry selects (no A/D updates, whatever SSADE says, under
    /// the test knob ``VTdConfiguration/dropsAccessedDirtyUpdates``).
    func secondStageFormat(_ e: VTdPASIDEntry) -> VTdSecondStageFormat {
        VTdSecondStageFormat(addressWidth: 30 + 9 * Int(e.addressWidth), hostAddressWidth: configuration.hostAddressWidth,
                             accessedDirtyEnabled: e.secondStageAccessedDirtyEnable && !configuration.dropsAccessedDirtyUpdates,
                             executeEnabled: e.secondStageExecuteEnable && extendedCapability.executeRequests,
                             supports2MiB: configuration.secondStage2MiBPages, supports1GiB: configuration.secondStage1GiBPages)
    }

    /// The first-stage format a PASID entry selects.
    func firstStageFormat(_ e: VTdPASIDEntry) -> X86FirstStageFormat {
        X86FirstStageFormat(levels: e.firstStageLevels ?? 4, supports1GiB: configuration.firstStage1GiBPages,
                            physicalAddressBits: configuration.hostAddressWidth)
    }

    /// The VT-d fault for a walk fault of `stage`.
    static func fault(_ f: PageTableFault, stage: TranslationStage) -> VTdFault {
        let code: VTdFaultReasonCode
        switch (stage, f.reason) {
        case (.first, .translation): code = .firstStageEntryNotPresent
        case (.first, .reservedBit): code = .firstStageEntryReserved
        case (.first, .addressSize): code = .nonCanonicalAddress
        case (.second, .translation): code = .secondStageEntryNotPresent
        case (.second, .reservedBit): code = .secondStageEntryReserved
        case (.second, .addressSize): code = .addressBeyondWidth
        case (_, .accessFlag): code = stage == .first ? .firstStageEntryNotPresent : .secondStageEntryNotPresent
        case (_, .permission(.read)): code = .readDenied
        case (_, .permission(.write)): code = .writeDenied
        case (_, .permission(.execute)): code = .executeDenied
        case (_, .permission(.privilege)): code = .userAccessToSupervisorPage
        }
        return VTdFault(code, stage: stage, level: f.level)
    }

    /// The rights a walk granted, for a request of privilege `privileged` (execute only where
    /// the unit supports execute requests).
    func permissions(_ rights: AccessRights, privileged: Bool) -> AccessPermissions {
        var p = Self.permissions(rights, privileged: privileged)
        if !extendedCapability.executeRequests { p.remove(.execute) }
        return p
    }

    /// The rights a walk granted, for a request of privilege `privileged`.
    static func permissions(_ rights: AccessRights, privileged: Bool) -> AccessPermissions {
        var p: AccessPermissions = []
        if privileged {
            if rights.contains(.read) { p.insert(.read) }
            if rights.contains(.write) { p.insert(.write) }
            if rights.contains(.execute) { p.insert(.execute) }
        } else {
            if rights.contains(.userRead) { p.insert(.read) }
            if rights.contains(.userWrite) { p.insert(.write) }
            if rights.contains(.userExecute) { p.insert(.execute) }
        }
        return p
    }

    /// The translation of `address` by the PASID entry of `r` for `access`, from the IOTLB or
    /// by walking the tables (and then cached).
    /// With `lookedUp`, the caller has just missed in the IOTLB the entry selects (the lock-free
    /// path), so the walk starts at once (one lookup counted per request).
    func translate(_ r: VTdResolution, address: UInt64, access: PageAccess, lookedUp: Bool = false) -> Result<Translation, VTdFault> {
        let e = r.entry
        guard let pgtt = e.pgtt else { return .failure(VTdFault(.pasidEntryInvalid)) }
        let did = e.domainID
        let needed = Self.needed(access)
        switch pgtt {
        case .passThrough:
            guard address >> UInt64(configuration.hostAddressWidth) == 0 else {
                return .failure(VTdFault(.addressBeyondWidth, stage: .second))
            }
            return .success(Translation(inputBase: address, outputBase: address, pageShift: 12,
                                        permissions: extendedCapability.executeRequests ? .all : .readWrite))
        case .secondStage:
            let tag = TranslationTag(domain: did, space: nil)
            if !lookedUp, let t = iotlb.lookup(tag, address: address), t.permissions.isSuperset(of: needed) { return .success(t) }
            let ticket = iotlb.fillTicket()
            countWalk()
            var port = DirectWalkPort(memory: memory)
            switch r.secondStage.walk(root: e.secondStageTable, input: address, access: access, update: true, port: &port) {
            case .translated(let pt, _, _, _):
                var t = Translation(inputBase: address, outputBase: pt.output, pageShift: UInt8(pt.pageSize.trailingZeroBitCount),
                                    permissions: permissions(pt.rights, privileged: true))
                guard t.permissions.isSuperset(of: needed) else { return .failure(Self.missing(needed, t, .second, pt.level)) }
                // A write must reach the leaf to set D: a translation made by another access does not grant it.
                if access.kind != .write && e.secondStageAccessedDirtyEnable { t.permissions.remove(.write) }
                iotlb.insert(t, tag: tag, stages: .second, covering: address, ifUnchangedSince: ticket)
                return .success(t)
            case .fault(let f): return .failure(Self.fault(f, stage: .second))
            case .portFault: return .failure(VTdFault(.secondStageEntryAccess, stage: .second))
            }
        case .firstStage:
            let tag = TranslationTag(domain: did, space: r.pasid, privileged: r.privileged)
            if !lookedUp, let t = iotlb.lookup(tag, address: address), t.permissions.isSuperset(of: needed) { return .success(t) }
            let ticket = iotlb.fillTicket()
            countWalk()
            var port = DirectWalkPort(memory: memory)
            switch r.firstStage.walk(root: e.firstStageTable, input: address, access: access, update: true, port: &port) {
            case .translated(let pt, _, _, _):
                var t = Translation(inputBase: address, outputBase: pt.output, pageShift: UInt8(pt.pageSize.trailingZeroBitCount),
                                    permissions: permissions(pt.rights, privileged: r.privileged))
                guard t.permissions.isSuperset(of: needed) else { return .failure(Self.missing(needed, t, .first, pt.level)) }
                // First-stage leaves always track D: only a write walk grants write.
                if access.kind != .write { t.permissions.remove(.write) }
                iotlb.insert(t, tag: tag, stages: .first, covering: address, ifUnchangedSince: ticket)
                return .success(t)
            case .fault(let f): return .failure(Self.fault(f, stage: .first))
            case .portFault: return .failure(VTdFault(.firstStageEntryAccess, stage: .first))
            }
        case .nested:
            let tag = TranslationTag(domain: did, space: r.pasid, privileged: r.privileged)
            if !lookedUp, let t = nestedIOTLB.lookup(tag, address: address), t.permissions.isSuperset(of: needed) { return .success(t) }
            let ticket = nestedIOTLB.fillTicket()
            countWalk()
            switch walkNested(r, address: address, access: access) {
            case .success(var t):
                guard t.permissions.isSuperset(of: needed) else { return .failure(Self.missing(needed, t, .first, 1)) }
                if access.kind != .write { t.permissions.remove(.write) }
                nestedIOTLB.insert(t, tag: tag, stages: .all, covering: address, ifUnchangedSince: ticket)
                return .success(t)
            case .failure(let f): return .failure(f)
            }
        }
    }

    /// The permissions a request of `access` needs.
    static func needed(_ access: PageAccess) -> AccessPermissions {
        switch access.kind {
        case .read: .read
        case .write: .write
        case .execute: [.read, .execute]
        }
    }

    /// The fault for a translation that lacks some of `needed`.
    static func missing(_ needed: AccessPermissions, _ t: Translation, _ stage: TranslationStage, _ level: Int) -> VTdFault {
        let code: VTdFaultReasonCode = needed.contains(.write) && !t.permissions.contains(.write) ? .writeDenied
            : needed.contains(.execute) && !t.permissions.contains(.execute) ? .executeDenied : .readDenied
        return VTdFault(code, stage: stage, level: level)
    }

    func countWalk() { state.withLock { $0.statistics.walks += 1 } }

    // MARK: TranslationAgent

    /// The access kind of a request's permissions: a write (or atomic), an execute, or a read.
    static func pageAccess(_ access: AccessPermissions, privileged: Bool) -> PageAccess {
        let kind: PageAccess.Kind = access.contains(.write) ? .write : access.contains(.execute) ? .execute : .read
        return PageAccess(kind, user: !privileged)
    }

    /// Translates a DMA request (see ``TranslationAgent/translate(_:)-(DMARequest)``): an
    /// untranslated request is remapped through the tables its PASID entry (or RID_PASID entry)
    /// selects; a translated request is allowed as is if its context has DTE set. A request
    /// tagged with a PASID whose entry is not present is blocked and recorded (reason 0x59).
    ///
    /// The hot path takes no lock: the requester's resolution from the lock-free
    /// ``ResolutionCache``, then the IOTLB (per-set seqlocks). Anything else — a resolution
    /// not cached, an IOTLB miss, a fault — goes the locked way.
    public func translate(_ request: DMARequest) -> Result<Translation, FaultRecord> {
        switch fastTranslate(request) {
        case .hit(let t): return .success(t)
        case .notResolved: return translateLocked(request, lookedUp: false)
        case .missed: return translateLocked(request, lookedUp: true)
        }
    }

    /// What the lock-free path found.
    enum FastOutcome {
        /// The translation (an IOTLB hit with the rights the request needs, or the identity).
        case hit(Translation)
        /// The resolution is not cached.
        case notResolved
        /// Resolved, but the IOTLB had no entry with the rights needed (it was looked up).
        case missed
    }

    /// The lock-free path of ``translate(_:)-(DMARequest)``.
    @inline(__always)
    func fastTranslate(_ request: DMARequest) -> FastOutcome {
        let kind: VTdFastResolution.Kind = request.addressType == .translated ? .translated : .untranslated
        let execute = request.access.contains(.execute)
        guard let v = resolutions.lookup(VTdFastResolution.key(rid: request.requesterID.rawValue, pasid: request.pasid?.rawValue,
                                                                privileged: request.privileged, execute: execute, kind: kind))
        else { return .notResolved }
        let did = UInt16(truncatingIfNeeded: v >> 16)
        let pasid = UInt32(truncatingIfNeeded: v >> 32) & 0xF_FFFF
        let privileged = v & 8 != 0
        let cached: Translation?
        switch v & 7 {
        case VTdFastResolution.Mode.identity.rawValue:
            return .hit(Translation(inputBase: request.address, outputBase: request.address, permissions: .all))
        case VTdFastResolution.Mode.passThrough.rawValue:
            guard request.address >> UInt64(configuration.hostAddressWidth) == 0 else { return .notResolved }
            return .hit(Translation(inputBase: request.address, outputBase: request.address, pageShift: 12,
                                    permissions: extendedCapability.executeRequests ? .all : .readWrite))
        case VTdFastResolution.Mode.secondStage.rawValue:
            cached = iotlb.lookup(TranslationTag(domain: did, space: nil), address: request.address)
        case VTdFastResolution.Mode.firstStage.rawValue:
            cached = iotlb.lookup(TranslationTag(domain: did, space: pasid, privileged: privileged), address: request.address)
        default:
            cached = nestedIOTLB.lookup(TranslationTag(domain: did, space: pasid, privileged: privileged), address: request.address)
        }
        guard let t = cached else { return .missed }
        let needed: AccessPermissions = request.access.contains(.write) ? .write : execute ? [.read, .execute] : .read
        guard t.permissions.isSuperset(of: needed) else { return .missed }
        // An atomic (read + write) needs read too; the locked path records the fault.
        if request.access.contains(.read) && request.access.contains(.write) && !t.permissions.contains(.read) { return .notResolved }
        return .hit(t)
    }

    /// ``translate(_:)-(DMARequest)`` through the locked resolution.
    func translateLocked(_ request: DMARequest, lookedUp: Bool) -> Result<Translation, FaultRecord> {
        let rid = request.requesterID.rawValue
        let kind: VTdRequestKind = request.addressType == .translated ? .translated : .untranslated
        let resolution: VTdResolution
        switch resolve(rid: rid, pasid: request.pasid?.rawValue, privileged: request.privileged,
                       execute: request.access.contains(.execute), kind: kind) {
        case .success(nil):
            return .success(Translation(inputBase: request.address, outputBase: request.address, permissions: .all))
        case .success(let r?): resolution = r
        case .failure(let f): return .failure(report(f, request: request, pageRequestsEnabled: false))
        }
        if kind == .translated {
            return .success(Translation(inputBase: request.address, outputBase: request.address, permissions: .all))
        }
        let access = Self.pageAccess(request.access, privileged: resolution.privileged)
        switch translate(resolution, address: request.address, access: access, lookedUp: lookedUp) {
        case .success(let t):
            if request.access.contains(.read) && request.access.contains(.write) && !t.permissions.contains(.read) {
                return .failure(report(VTdFault(.readDenied, faultsDisabled: resolution.faultsDisabled), request: request,
                                       pageRequestsEnabled: resolution.context.pageRequestEnable))
            }
            return .success(t)
        case .failure(var f):
            f.faultsDisabled = f.faultsDisabled || resolution.faultsDisabled
            return .failure(report(f, request: request, pageRequestsEnabled: resolution.context.pageRequestEnable))
        }
    }

    /// Translates a burst (see ``TranslationAgent/translateBurst(_:count:into:)``): the context
    /// and PASID entries are resolved once, as for the burst's first request; each page is then
    /// looked up in the IOTLB (walked on a miss) as ``translate(_:)-(DMARequest)`` does.
    ///
    /// Lock-free while the requester's resolution is cached and the pages hit in the IOTLB (see
    /// ``translate(_:)-(DMARequest)``); a translation of a larger page serves every page of the
    /// burst it covers. The first page that misses and the rest go the locked way.
    public func translateBurst(_ first: DMARequest, count: Int, into translations: UnsafeMutablePointer<Translation>)
        -> (translated: Int, fault: FaultRecord?) {
        guard count > 0 else { return (0, nil) }
        var request = first
        var i = 0
        while i < count {
            if i > 0 { request.address = (first.address & ~0xFFF) &+ UInt64(i) << 12 }
            guard case .hit(let t) = fastTranslate(request) else { break }
            translations[i] = t
            i += 1
            while i < count, t.contains((first.address & ~0xFFF) &+ UInt64(i) << 12) {
                translations[i] = t
                i += 1
            }
        }
        if i == count { return (count, nil) }
        let rest = translateBurstLocked(request, count: count - i, into: translations + i)
        return (i + rest.translated, rest.fault)
    }

    /// ``translateBurst(_:count:into:)`` through the locked resolution.
    func translateBurstLocked(_ first: DMARequest, count: Int, into translations: UnsafeMutablePointer<Translation>)
        -> (translated: Int, fault: FaultRecord?) {
        guard first.addressType == .untranslated else {
            var request = first
            for i in 0..<count {
                if i > 0 { request.address = (first.address & ~0xFFF) &+ UInt64(i) << 12 }
                switch translate(request) {
                case .success(let t): translations[i] = t
                case .failure(let f): return (i, f)
                }
            }
            return (count, nil)
        }
        let resolution: VTdResolution
        switch resolve(rid: first.requesterID.rawValue, pasid: first.pasid?.rawValue, privileged: first.privileged,
                       execute: first.access.contains(.execute), kind: .untranslated) {
        case .success(nil):
            for i in 0..<count {
                let a = i == 0 ? first.address : (first.address & ~0xFFF) &+ UInt64(i) << 12
                translations[i] = Translation(inputBase: a, outputBase: a, permissions: .all)
            }
            return (count, nil)
        case .success(let r?): resolution = r
        case .failure(let f): return (0, report(f, request: first, pageRequestsEnabled: false))
        }
        let access = Self.pageAccess(first.access, privileged: resolution.privileged)
        var request = first
        for i in 0..<count {
            if i > 0 { request.address = (first.address & ~0xFFF) &+ UInt64(i) << 12 }
            switch translate(resolution, address: request.address, access: access) {
            case .success(let t):
                if request.access.contains(.read) && request.access.contains(.write) && !t.permissions.contains(.read) {
                    return (i, report(VTdFault(.readDenied, faultsDisabled: resolution.faultsDisabled), request: request,
                                      pageRequestsEnabled: resolution.context.pageRequestEnable))
                }
                translations[i] = t
            case .failure(var f):
                f.faultsDisabled = f.faultsDisabled || resolution.faultsDisabled
                return (i, report(f, request: request, pageRequestsEnabled: resolution.context.pageRequestEnable))
            }
        }
        return (count, nil)
    }

    /// Records `fault` (unless FPD, or the device may resolve it with a page request) and
    /// returns the fabric's record of it.
    func report(_ fault: VTdFault, request: DMARequest, pageRequestsEnabled: Bool) -> FaultRecord {
        let recoverable = pageRequestsEnabled && fault.resolvableByPageRequest
        if !fault.faultsDisabled && !recoverable {
            let type: VTdFaultRequestType = request.access.contains(.write)
                ? (request.access.contains(.read) ? .atomic : .write) : .read
            let at: UInt8 = request.addressType == .translated ? 2 : 0
            let r = VTdFaultRecord(reason: fault.code, sourceID: request.requesterID.rawValue, address: request.address, type: type,
                                   addressType: at, pasid: request.pasid?.rawValue, execute: request.access.contains(.execute),
                                   privileged: request.privileged)
            record(r)?()
        }
        return FaultRecord(request, reason: fault.reason, recoverable: recoverable)
    }

    /// Answers an ATS translation request. Faults in the root, context or PASID structures are
    /// recorded and answered with Unsupported Request (not present) or Completer Abort
    /// (malformed); a page the tables do not map or permit is a successful completion granting
    /// no rights, which a device with PRI may then ask for with a page request.
    public func translate(_ request: ATSTranslationRequest) -> ATSCompletion {
        let rid = request.requesterID.rawValue
        let resolution: VTdResolution
        switch resolve(rid: rid, pasid: request.pasid?.rawValue, privileged: request.privileged,
                       execute: request.access.contains(.execute), kind: .translationRequest) {
        case .success(nil):
            return .unsupportedRequest
        case .success(let r?): resolution = r
        case .failure(let f):
            if !f.faultsDisabled {
                let r = VTdFaultRecord(reason: f.code, sourceID: rid, address: request.address, type: .read, addressType: 1,
                                       pasid: request.pasid?.rawValue, execute: request.access.contains(.execute),
                                       privileged: request.privileged)
                record(r)?()
            }
            switch f.code {
            case .contextEntryReserved, .contextEntryInvalid, .rootEntryReserved, .pasidDirectoryEntryReserved,
                 .pasidEntryReserved, .pasidEntryInvalid, .ridPASIDInvalid:
                return .completerAbort
            default:
                return .unsupportedRequest
            }
        }
        // Write rights are asked for unless No Write; a refused write still yields read rights.
        let wantsWrite = request.access.contains(.write)
        let first = Self.pageAccess(wantsWrite ? .write : .read, privileged: resolution.privileged)
        if case .success(let t) = translate(resolution, address: request.address, access: first) {
            return .translated(t)
        }
        if wantsWrite, case .success(let t) = translate(resolution, address: request.address,
                                                         access: Self.pageAccess(.read, privileged: resolution.privileged)) {
            return .translated(t)
        }
        return .translated(Translation(inputBase: request.address, outputBase: 0, permissions: []))
    }
}
