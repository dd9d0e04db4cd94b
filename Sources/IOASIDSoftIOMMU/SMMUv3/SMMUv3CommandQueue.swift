// Command consumption by the SMMUv3 model (chapter 4). Software writes 16-byte commands at
// CMDQ_PROD and moves it on; the SMMU consumes them in order, moving CMDQ_CONS. A malformed
// command stops the queue with CERROR_ILL in CMDQ_CONS.ERR and GERROR.CMDQ_ERR active; CONS
// points at it until software acknowledges the error in GERRORN (after fixing or replacing the
// command). Invalidations (CFGI_*, TLBI_*, ATC_INV) take effect at the next CMD_SYNC;
// PRI_RESP is sent at once.

import IOASIDStructures

/// Invalidations consumed and waiting for a CMD_SYNC.
struct PendingInvalidations {
    enum Config {
        /// Every STE and CD.
        case all
        /// The STEs (and the CDs found through them) of `count` StreamIDs from `first`.
        case streams(first: UInt32, count: UInt64)
        /// One CD of a stream, by CD table index.
        case context(ContextKey)
        /// Every CD of a stream.
        case contexts(UInt32)
    }
    var configs: [Config] = []
    var tlb: [TranslationCacheInvalidation] = []
    var atc: [(streamID: UInt32, invalidation: ATCInvalidation)] = []
}

extension SMMUv3 {
    /// The bits of `CMDQ_CONS.ERR`.
    static var consErrorMask: UInt32 { 0x7F << 24 }

    /// Consumes commands until the queue is empty, disabled, or stopped by an error.
    func consumeCommands() {
        var interrupts: SMMUv3Interrupts = []
        commandLock.withLock { pending in
            while true {
                let next: UInt64? = state.withLock { s in
                    guard s.cr0 & SMMUv3CR0.commandQueueEnable != 0,
                          (s.gerror ^ s.gerrorn) & SMMUv3GError.commandQueueError == 0,
                          !s.cmdq.isEmpty else { return nil }
                    return s.cmdq.slot(s.cmdq.cons)
                }
                guard let slot = next else { break }
                let w0 = memory.read64(slot), w1 = memory.read64(slot + 8)
                let command: SMMUv3Command
                do {
                    command = try SMMUv3Command(words: w0, w1, features: features.commandFeatures)
                } catch {
                    state.withLock { s in
                        s.cmdq.cons = s.cmdq.position(s.cmdq.cons) | UInt32(SMMUv3CommandError.illegal.rawValue) << 24
                        s.gerror ^= SMMUv3GError.commandQueueError
                    }
                    interrupts.insert(.globalError)
                    break
                }
                execute(command, &pending)
                state.withLock { s in
                    s.cmdq.cons = s.cmdq.advanced(s.cmdq.cons)
                    s.statistics.commands += 1
                }
            }
        }
        raise(interrupts)
    }

    /// The input range a TLBI by address covers, or nil when it can match no entry (a granule
    /// other than 4 KiB, the only one this SMMU inserts).
    static func invalidationRange(_ address: UInt64, _ range: SMMUv3TLBIRange) -> IOVARange? {
        guard range.tg != 0 else {
            let page = address & ~0xFFF
            return IOVARange(start: page, last: page | 0xFFF)
        }
        guard range.tg == 1, let bytes = range.byteCount else { return nil }
        let (last, overflow) = address.addingReportingOverflow(bytes - 1)
        return IOVARange(start: address, last: overflow ? .max : last)
    }

    /// Executes one command (with `commandLock` held, `state` not held).
    func execute(_ command: SMMUv3Command, _ pending: inout PendingInvalidations) {
        switch command {
        case .prefetchConfig, .resume, .stallTerm:
            break  // hints; no stalls to resume
        case let .cfgiSTE(sid, _):
            pending.configs.append(.streams(first: sid, count: 1))
        case let .cfgiSTERange(sid, range):
            if range >= 31 {
                pending.configs.append(.all)
            } else {
                let count = UInt64(1) << UInt64(range + 1)
                pending.configs.append(.streams(first: UInt32(UInt64(sid) & ~(count - 1)), count: count))
            }
        case let .cfgiCD(sid, ssid, _):
            pending.configs.append(.context(ContextKey(streamID: sid, index: ssid)))
        case let .cfgiCDAll(sid):
            pending.configs.append(.contexts(sid))
        case let .tlbiNHAll(vmid):
            pending.tlb.append(TranslationCacheInvalidation(domain: vmid, stages: .first))
        case let .tlbiNHASID(vmid, asid):
            pending.tlb.append(TranslationCacheInvalidation(domain: vmid, spaces: .only(UInt32(asid), includingGlobal: false), stages: .first))
        case let .tlbiNHVA(vmid, asid, address, leaf, range):
            if let r = Self.invalidationRange(address, range) {
                pending.tlb.append(TranslationCacheInvalidation(domain: vmid, spaces: .only(UInt32(asid), includingGlobal: true),
                                                                range: r, leafOnly: leaf, stages: .first))
            }
        case let .tlbiNHVAA(vmid, address, leaf, range):
            if let r = Self.invalidationRange(address, range) {
                pending.tlb.append(TranslationCacheInvalidation(domain: vmid, spaces: .all, range: r, leafOnly: leaf, stages: .first))
            }
        case let .tlbiS2IPA(vmid, address, leaf, range):
            if let r = Self.invalidationRange(address, range) {
                pending.tlb.append(TranslationCacheInvalidation(domain: vmid, spaces: .none, range: r, leafOnly: leaf, stages: .second))
            }
        case let .tlbiS12VMAll(vmid):
            pending.tlb.append(.domain(vmid))
        case .tlbiNSNHAll:
            pending.tlb.append(.all)
        case let .atcInv(sid, ssid, global, address, size):
            let range: IOVARange
            if size >= 52 {
                range = .all
            } else {
                let span = UInt64(1) << UInt64(12 + Int(size))
                let start = address & ~(span - 1)
                range = IOVARange(start: start, last: start + (span - 1))
            }
            let pasid = ssid.flatMap { PASID(rawValue: $0) }
            pending.atc.append((sid, ATCInvalidation(range: range, pasid: pasid, global: global)))
        case let .priResp(sid, ssid, group, response):
            guard sid <= UInt32(UInt16.max) else { break }
            let code: PageResponseCode = switch response {
            case .success: .success
            case .denied: .invalidRequest
            case .failure: .responseFailure
            }
            let r = PageResponse(requesterID: RequesterID(rawValue: UInt16(sid)), pasid: ssid.flatMap { PASID(rawValue: $0) },
                                 groupIndex: group, code: code)
            endpoint(sid)?.receive(r)
        case let .sync(completion, msiAddress, msiData, _, _):
            completeSync(&pending)
            if completion == .irq {
                let word = msiAddress & ~7
                let shift = (msiAddress & 4) * 8
                let old = memory.read64(word)
                memory.write64(word, (old & ~(0xFFFF_FFFF << shift)) | (UInt64(msiData) << shift))
            }
        }
    }

    /// Applies every pending invalidation: configuration caches, the TLB, then the devices' ATCs
    /// (each invalidation waits for the device's completion); then, if anything was invalidated,
    /// waits until every connected device has finished the DMA it began before (so no access
    /// that used a removed translation lands after the CMD_SYNC completes).
    func completeSync(_ pending: inout PendingInvalidations) {
        let drain = !pending.configs.isEmpty || !pending.tlb.isEmpty || !pending.atc.isEmpty
        if !pending.configs.isEmpty {
            state.withLock { s in
                resolutions.invalidateAll()
                for c in pending.configs {
                    switch c {
                    case .all:
                        s.streams.removeAll()
                        s.contexts.removeAll()
                    case let .streams(first, count):
                        let last = UInt64(first) + count - 1
                        s.streams = s.streams.filter { UInt64($0.key) < UInt64(first) || UInt64($0.key) > last }
                        s.contexts = s.contexts.filter { UInt64($0.key.streamID) < UInt64(first) || UInt64($0.key.streamID) > last }
                    case let .context(key):
                        s.contexts.removeValue(forKey: key)
                    case let .contexts(sid):
                        s.contexts = s.contexts.filter { $0.key.streamID != sid }
                    }
                }
            }
        }
        for inv in pending.tlb { tlb.invalidate(inv) }
        for (sid, inv) in pending.atc { _ = endpoint(sid)?.invalidate(inv) }
        if drain {
            let devices: [any DeviceEndpoint] = endpointTable.withLock { t in t.values.compactMap { $0.endpoint } }
            for d in devices { d.drainDMA() }
        }
        pending = PendingInvalidations()
        state.withLock { $0.statistics.syncs += 1 }
    }
}
