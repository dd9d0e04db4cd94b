// The invalidation queue of a VT-d unit (spec §6.5.2): hardware reads 256-bit descriptors from
// IQH up to IQT and executes each; an invalid descriptor stops the queue with FSTS.IQE until
// software clears it. What each descriptor removes:
//
//   context-cache  global / domain: every context entry (scalable-mode entries hold no DID);
//                  device: the entries of SID under the function mask.
//   PASID-cache    global; domain: every entry with that DID; PASID: DID and PASID.
//   IOTLB          global: everything; domain: second-stage entries of the DID and every
//                  combined (nested) entry of it; page: second-stage entries of the DID in the
//                  range, and every combined entry of the DID (their second-stage inputs are not
//                  known). First-stage and pass-through entries are untouched.
//   PASID-IOTLB    PASID: first-stage, pass-through and combined entries of (DID, PASID), not
//                  global ones; page: those in the range, global ones included.
//   device-TLB     an ATS invalidation to the device's ATC (without PASID: every translation in
//                  the range; with PASID: that PASID's, and the global ones when G is set).
//   wait           status write of the 32-bit data, ICS.IWC when IF is set. If a cache
//                  invalidation ran since the previous wait, the wait first drains every
//                  connected device's DMA (DeviceEndpoint.drainDMA): an access that used a
//                  removed translation (its lookup ran before the removal) lands before the
//                  status write, never after it. Hardware drains when DR/DW ask or a wait
//                  fences; the model always does, which is the stronger promise.
//   page group response  delivered to the device.

import IOASIDStructures

extension VTdUnit {
    /// Processes the invalidation queue from IQH to IQT (with queued invalidation enabled and no
    /// pending queue error), as hardware does when software moves the tail.
    func processInvalidationQueue() {
        queueLock.withLock { drainOwed in
            while true {
                let next: VTdDescriptor? = state.withLock { s in
                    guard s.globalStatus & VTdGlobalCommand.queuedInvalidationEnable != 0,
                          s.faultStatus & VTdFaultStatus.invalidationQueueError == 0,
                          s.invalidationQueueHead != s.invalidationQueueTail else { return nil }
                    let size = UInt64(4096) << (s.invalidationQueueAddress & 7)
                    guard s.invalidationQueueAddress & 0x800 != 0, s.invalidationQueueTail < size else {
                        // 128-bit descriptors are legacy mode; a tail beyond the queue is invalid.
                        s.faultStatus |= VTdFaultStatus.invalidationQueueError
                        s.invalidationQueueErrorRecord = 1
                        return nil
                    }
                    return VTdDescriptor.read(memory, at: (s.invalidationQueueAddress & VTdAddress.pageMask) + s.invalidationQueueHead)
                }
                guard let descriptor = next else { return }
                guard let invalidation = VTdInvalidation(descriptor) else {
                    state.withLock { s in
                        s.faultStatus |= VTdFaultStatus.invalidationQueueError
                        s.invalidationQueueErrorRecord = 1  // IQEI 1: invalid descriptor (type or reserved field)
                    }
                    return
                }
                switch invalidation {
                case .wait:
                    if drainOwed {
                        drainConnectedDevices()
                        drainOwed = false
                    }
                case .contextCache, .pasidCache, .iotlb, .pasidIOTLB, .deviceTLB, .pasidDeviceTLB:
                    drainOwed = true
                case .pageGroupResponse:
                    break
                }
                execute(invalidation)
                state.withLock { s in
                    let size = UInt64(4096) << (s.invalidationQueueAddress & 7)
                    s.invalidationQueueHead = (s.invalidationQueueHead + VTdDescriptor.size) % size
                }
            }
        }
    }

    /// Executes one invalidation descriptor (called with `queueLock` held, `state` not held).
    func execute(_ invalidation: VTdInvalidation) {
        switch invalidation {
        case .contextCache(let g):
            state.withLock { s in
                resolutions.invalidateAll()
                switch g {
                case .global, .domain:
                    s.contextCache.removeAll(keepingCapacity: true)
                case .device(_, let sid, let fm):
                    // FM masks the 1, 2 or 3 most significant bits of the function number.
                    let f = UInt16(fm & 3)
                    let mask: UInt16 = ~(((1 << f) - 1) << (3 - f))
                    for rid in s.contextCache.keys where rid & mask == sid & mask { s.contextCache.removeValue(forKey: rid) }
                }
            }
        case .pasidCache(let g):
            state.withLock { s in
                resolutions.invalidateAll()
                switch g {
                case .global:
                    s.pasidCache.removeAll(keepingCapacity: true)
                case .domain(let did):
                    s.pasidCache = s.pasidCache.filter { $0.value.entry.domainID != did }
                case .pasid(let did, let pasid):
                    s.pasidCache = s.pasidCache.filter { $0.value.entry.domainID != did || UInt32($0.key & 0xF_FFFF) != pasid }
                }
            }
        case .iotlb(let g, _, _):
            switch g {
            case .global:
                iotlb.invalidate(.all)
                nestedIOTLB.invalidate(.all)
            case .domain(let did):
                iotlb.invalidate(TranslationCacheInvalidation(domain: did, spaces: .none, stages: .second))
                nestedIOTLB.invalidate(.domain(did))
            case .page(let did, let r):
                iotlb.invalidate(TranslationCacheInvalidation(domain: did, spaces: .none, range: IOVARange(start: r.first, last: r.last),
                                                              leafOnly: r.invalidationHint, stages: .second))
                nestedIOTLB.invalidate(.domain(did))
            }
        case .pasidIOTLB(let g):
            switch g {
            case .pasid(let did, let pasid):
                let inv = TranslationCacheInvalidation.space(pasid, domain: did)
                iotlb.invalidate(inv)
                nestedIOTLB.invalidate(inv)
            case .page(let did, let pasid, let r):
                let inv = TranslationCacheInvalidation(domain: did, spaces: .only(pasid, includingGlobal: true),
                                                       range: IOVARange(start: r.first, last: r.last), leafOnly: r.invalidationHint)
                iotlb.invalidate(inv)
                nestedIOTLB.invalidate(inv)
            }
        case .deviceTLB(let sid, _, _, let range):
            invalidateDeviceTLB(sid: sid, ATCInvalidation(range: IOVARange(start: range.span.first, last: range.span.last)))
        case .pasidDeviceTLB(let sid, _, let pasid, _, let global, let range):
            invalidateDeviceTLB(sid: sid, ATCInvalidation(range: IOVARange(start: range.span.first, last: range.span.last),
                                                          pasid: PASID(pasid & 0xF_FFFF), global: global))
        case .wait(let statusWrite, let data, let address, let interrupt, _, _):
            if statusWrite {
                for i in 0..<4 { memory.write8(address + UInt64(i), UInt8(truncatingIfNeeded: data >> (8 * UInt32(i)))) }
            }
            if interrupt { state.withLock { $0.invalidationCompletionStatus |= 1 } }
        case .pageGroupResponse(let rid, let pasid, let code, let index):
            let response = PageResponse(requesterID: RequesterID(rawValue: rid), pasid: pasid.map { PASID($0 & 0xF_FFFF) },
                                        groupIndex: index, code: Self.responseCode(code))
            endpoint(rid)?.receive(response)
        }
    }

    /// The fabric's response code for a PRG response code (reserved codes are failures).
    static func responseCode(_ code: UInt8) -> PageResponseCode {
        switch code {
        case VTdInvalidation.ResponseCode.success: .success
        case VTdInvalidation.ResponseCode.invalidRequest: .invalidRequest
        default: .responseFailure
        }
    }

    /// Sends an ATS invalidation to the device `sid` and waits for its completion. A wrong
    /// completion tag sets FSTS.ICE; a device that is not connected completes nothing (ITE).
    func invalidateDeviceTLB(sid: UInt16, _ request: ATCInvalidation) {
        guard let device = endpoint(sid) else {
            state.withLock { s in
                s.faultStatus |= VTdFaultStatus.invalidationTimeoutError
                s.invalidationQueueErrorRecord = (s.invalidationQueueErrorRecord & ~(0xFFFF << 32)) | UInt64(sid) << 32
            }
            return
        }
        let completion = device.invalidate(request)
        if completion.tag != request.tag || completion.requesterID.rawValue != sid {
            state.withLock { s in
                s.faultStatus |= VTdFaultStatus.invalidationCompletionError
                s.invalidationQueueErrorRecord = (s.invalidationQueueErrorRecord & ~(0xFFFF << 48)) | UInt64(sid) << 48
            }
        }
    }
}
