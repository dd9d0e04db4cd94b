// The queues the SMMUv3 model produces into: the event queue (§7.2, §7.4) and the PRI queue
// (§8). Records are written at PROD and PROD moves on; software consumes at CONS. A full event
// queue loses new events (PROD.OVFLG toggles to report it); a full PRI queue enters an overflow
// condition that discards page requests — answering the last of each group automatically —
// until software acknowledges it (CONS.OVACKFLG = PROD.OVFLG).

extension SMMUv3 {
    /// The overflow flag of PROD / CONS of the output queues.
    static var overflowFlag: UInt32 { 1 << 31 }

    /// Writes `event` to the event queue (called with `state` held).
    func recordEvent(_ s: inout State, _ event: SMMUv3Event, _ interrupts: inout SMMUv3Interrupts) {
        guard s.cr0 & SMMUv3CR0.eventQueueEnable != 0 else {
            s.statistics.eventsLost += 1
            return
        }
        if s.eventq.isFull {
            s.statistics.eventsLost += 1
            if (s.eventq.prod ^ s.eventq.cons) & Self.overflowFlag == 0 { s.eventq.prod ^= Self.overflowFlag }
            interrupts.insert(.eventQueue)
            return
        }
        let slot = s.eventq.slot(s.eventq.prod)
        for i in 0..<4 { memory.write64(slot + UInt64(i) * 8, event.words[i]) }
        s.eventq.prod = s.eventq.advanced(s.eventq.prod) | (s.eventq.prod & Self.overflowFlag)
        s.statistics.events += 1
        interrupts.insert(.eventQueue)
    }

    /// Accepts a page request (PCIe PRI): queues it on the PRI queue for software, or answers it
    /// automatically when the queue is disabled (Response Failure) or overflowing (Success for
    /// the last request of a group, so that the device tries again later).
    public func pageRequest(_ request: PageRequest) {
        var interrupts: SMMUv3Interrupts = []
        let sid = Self.streamID(request.requesterID)
        let automatic: PageResponse? = state.withLock { s in
            let enabled = s.cr0 & SMMUv3CR0.smmuEnable != 0 && s.cr0 & SMMUv3CR0.priQueueEnable != 0
            guard features.pri, enabled else {
                s.statistics.pageRequestsAutoResponded += 1
                return PageResponse(requesterID: request.requesterID, pasid: nil, groupIndex: request.groupIndex, code: .responseFailure)
            }
            let overflowing = (s.priq.prod ^ s.priq.cons) & Self.overflowFlag != 0
            if overflowing || s.priq.isFull {
                if !overflowing {
                    s.priq.prod ^= Self.overflowFlag
                    interrupts.insert(.priQueue)
                }
                guard request.lastInGroup else { return nil }
                s.statistics.pageRequestsAutoResponded += 1
                // Success, with the PASID if the STE asks for it (STE.PPAR; IDR3.PPS == 0).
                guard request.pasid != nil else {
                    return PageResponse(requesterID: request.requesterID, pasid: nil, groupIndex: request.groupIndex, code: .success)
                }
                switch fetchStream(&s, sid: sid, ssid: nil) {
                case .success(let stream):
                    return PageResponse(requesterID: request.requesterID, pasid: stream.ppar ? request.pasid : nil,
                                        groupIndex: request.groupIndex, code: .success)
                case .failure:
                    return PageResponse(requesterID: request.requesterID, pasid: nil, groupIndex: request.groupIndex,
                                        code: .responseFailure)
                }
            }
            let record = SMMUv3PageRequestRecord(streamID: sid, substreamID: request.pasid?.rawValue, group: request.groupIndex,
                                                 last: request.lastInGroup, address: request.address,
                                                 read: request.access.contains(.read), write: request.access.contains(.write),
                                                 execute: request.access.contains(.execute), privileged: request.privileged)
            let slot = s.priq.slot(s.priq.prod)
            memory.write64(slot, record.word0)
            memory.write64(slot + 8, record.word1)
            s.priq.prod = s.priq.advanced(s.priq.prod) | (s.priq.prod & Self.overflowFlag)
            s.statistics.pageRequests += 1
            interrupts.insert(.priQueue)
            return nil
        }
        if let automatic { endpoint(sid)?.receive(automatic) }
        raise(interrupts)
    }
}
