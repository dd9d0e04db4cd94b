// Page requests (PRI) at a VT-d unit (spec §7.5): checks of the requester's context, the page
// request queue in memory, and the responses hardware sends on its own.

extension VTdUnit {
    /// What became of a page request.
    enum PageRequestOutcome {
        /// Written into the queue; raise the page request interrupt.
        case queued((@Sendable () -> Void)?)
        /// Answered by hardware with `code` (when the request closes its group), after recording
        /// `fault` if there was one.
        case answered(UInt8, fault: VTdFaultRecord?)
    }

    /// Accepts a page request message (see ``TranslationAgent/pageRequest(_:)``).
    ///
    /// A request from a function whose context entry is not present, lacks PRE, or (with a
    /// PASID) lacks PASIDE or names a PASID beyond its directory is recorded as a fault and, if it
    /// closes its group, answered by hardware (Response Failure without PRE, Invalid Request
    /// otherwise). Otherwise the unit writes a page request descriptor at PQT and raises the page
    /// request interrupt. When the queue is full (or PRS.PRO is set) the request is dropped,
    /// PRS.PRO is set, and a request that closes its group is answered with Success so the
    /// device retries.
    public func pageRequest(_ request: PageRequest) {
        let rid = request.requesterID.rawValue
        let descriptor = VTdPageRequestDescriptor(requesterID: rid, pasid: request.pasid?.rawValue, address: request.address,
                                                  read: request.access.contains(.read), write: request.access.contains(.write),
                                                  execute: request.access.contains(.execute), privileged: request.privileged,
                                                  lastInGroup: request.lastInGroup, groupIndex: request.groupIndex)
        func fault(_ code: VTdFaultReasonCode) -> VTdFaultRecord {
            VTdFaultRecord(reason: code, sourceID: rid, address: request.address, type: .pageRequest,
                           pasid: request.pasid?.rawValue, execute: request.access.contains(.execute), privileged: request.privileged)
        }
        let outcome: PageRequestOutcome = state.withLock { s in
            guard extendedCapability.pageRequests else { return .answered(VTdInvalidation.ResponseCode.responseFailure, fault: nil) }
            let context: VTdContextEntry
            switch lookupContext(&s, rid: rid) {
            case .success(let c): context = c
            case .failure(let f):
                return .answered(VTdInvalidation.ResponseCode.invalidRequest, fault: f.faultsDisabled ? nil : fault(f.code))
            }
            let fpd = context.faultProcessingDisable
            guard context.pageRequestEnable else {
                return .answered(VTdInvalidation.ResponseCode.responseFailure, fault: fpd ? nil : fault(.pageRequestNotEnabled))
            }
            if let pasid = request.pasid?.rawValue {
                guard context.pasidEnable else {
                    return .answered(VTdInvalidation.ResponseCode.invalidRequest, fault: fpd ? nil : fault(.pasidNotEnabled))
                }
                guard pasid < context.pasidLimit else {
                    return .answered(VTdInvalidation.ResponseCode.invalidRequest, fault: fpd ? nil : fault(.pasidTooLarge))
                }
            }
            let base = s.pageRequestQueueAddress & VTdAddress.pageMask
            let size = UInt64(4096) << (s.pageRequestQueueAddress & 7)
            let next = (s.pageRequestQueueTail + VTdDescriptor.size) % size
            guard base != 0, s.pageRequestStatus & 2 == 0, next != s.pageRequestQueueHead else {
                s.pageRequestStatus |= 2  // PRO
                s.statistics.pageRequestOverflows += 1
                return .answered(VTdInvalidation.ResponseCode.success, fault: nil)
            }
            descriptor.descriptor.write(memory, at: base + s.pageRequestQueueTail)
            s.pageRequestQueueTail = next
            s.pageRequestStatus |= 1  // PPR
            s.statistics.pageRequests += 1
            return .queued(s.pageRequestInterrupt)
        }
        switch outcome {
        case .queued(let interrupt):
            interrupt?()
        case .answered(let code, let f):
            if let f { record(f)?() }
            if request.lastInGroup {
                endpoint(rid)?.receive(PageResponse(answering: request, code: Self.responseCode(code)))
            }
        }
    }

    /// The context entry of `rid`, from the context cache or the tables (cached when present
    /// and valid). Call with `state` locked.
    func lookupContext(_ s: inout State, rid: UInt16) -> Result<VTdContextEntry, VTdFault> {
        if let c = s.contextCache[rid] {
            s.statistics.contextHits += 1
            return .success(c)
        }
        s.statistics.contextMisses += 1
        guard s.scalableMode, s.rootTable != 0 else { return .failure(VTdFault(.invalidRootTableAddress)) }
        let root = VTdRootEntry.read(memory, at: VTdRootEntry.address(rootTable: s.rootTable, bus: UInt8(rid >> 8)))
        let devfn = UInt8(truncatingIfNeeded: rid)
        let half = devfn < 128 ? root.low : root.high
        if half & VTdRootEntry.reservedMask != 0 { return .failure(VTdFault(.rootEntryReserved)) }
        guard let address = VTdContextEntry.address(root: root, devfn: devfn) else { return .failure(VTdFault(.rootEntryNotPresent)) }
        let c = VTdContextEntry.read(memory, at: address)
        let fpd = c.faultProcessingDisable
        guard c.present else { return .failure(VTdFault(.contextEntryNotPresent, faultsDisabled: fpd)) }
        if c.hasReservedBits { return .failure(VTdFault(.contextEntryReserved, faultsDisabled: fpd)) }
        if c.pasidDirectory >> UInt64(configuration.hostAddressWidth) != 0
            || (c.deviceTLBEnable && !extendedCapability.deviceTLB)
            || (c.pageRequestEnable && !extendedCapability.pageRequests) {
            return .failure(VTdFault(.contextEntryInvalid, faultsDisabled: fpd))
        }
        s.contextCache[rid] = c
        return .success(c)
    }
}
