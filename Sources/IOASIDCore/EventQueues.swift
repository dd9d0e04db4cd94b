/// One I/O page fault as the owner reads it (the layout of `struct iommu_hwpt_pgfault`).
public struct PageFaultRecord: Sendable, Equatable {
    public var flags: UInt32
    public var deviceID: UInt32
    public var pasid: UInt32
    public var groupID: UInt32
    public var permissions: UInt32
    public var address: UInt64
    public var length: UInt32
    public var cookie: UInt32
    public init(flags: UInt32, deviceID: UInt32, pasid: UInt32, groupID: UInt32, permissions: UInt32, address: UInt64, length: UInt32 = 0, cookie: UInt32 = 0) {
        self.flags = flags; self.deviceID = deviceID; self.pasid = pasid; self.groupID = groupID
        self.permissions = permissions; self.address = address; self.length = length; self.cookie = cookie
    }
    /// `IOMMU_PGFAULT_FLAGS_PASID_VALID`.
    public static let pasidValid: UInt32 = 1 << 0
    /// `IOMMU_PGFAULT_FLAGS_LAST_PAGE`.
    public static let lastPage: UInt32 = 1 << 1
}

/// A queue of I/O page faults for its owner (the kernel's `iommufd_fault`): faults of a page
/// request group are delivered together; the owner answers each group by its cookie.
public final class FaultQueue: IOMMUObject, @unchecked Sendable {
    struct Group {
        var faults: [PageFaultRecord]
        let device: Device
        let pasid: PASID?
        var cookie: UInt32 = 0
    }
    /// Groups not yet read.
    var deliver: [Group] = []
    /// Groups read and waiting for a response, by cookie.
    var awaiting: [UInt32: Group] = [:]
    var nextCookie: UInt32 = 1
    /// Partial groups still collecting faults, by (device, pasid, group).
    var partial: [PartialKey: [PageFaultRecord]] = [:]
    struct PartialKey: Hashable { let device: ObjectIdentifier; let pasid: PASID?; let group: UInt32 }
    /// Called (after unlock) whenever the queue turns readable or empty.
    public var readinessChanged: (@Sendable (Bool) -> Void)?

    init() { super.init(kind: .fault) }

    /// Whether records wait to be read.
    public var isReadable: Bool { !deliver.isEmpty }

    func signal(_ state: ContextState) {
        if let r = readinessChanged { let readable = isReadable; state.afterUnlock { r(readable) } }
    }

    /// Answers every outstanding group of `device` at `pasid` with "invalid" (detach, replace).
    func autoRespond(device: Device, pasid: PASID?, state: ContextState) {
        var kept: [Group] = []
        for g in deliver {
            if g.device === device && g.pasid == pasid { device.model.pageResponse(pasid: pasid, group: g.faults[0].groupID, code: 1) } else { kept.append(g) }
        }
        deliver = kept
        for (cookie, g) in awaiting where g.device === device && g.pasid == pasid {
            device.model.pageResponse(pasid: pasid, group: g.faults[0].groupID, code: 1)
            awaiting.removeValue(forKey: cookie)
        }
        signal(state)
    }

    override public func destroyed(in state: ContextState) {
        for g in deliver { g.device.model.pageResponse(pasid: g.pasid, group: g.faults[0].groupID, code: 1) }
        for g in awaiting.values { g.device.model.pageResponse(pasid: g.pasid, group: g.faults[0].groupID, code: 1) }
        deliver.removeAll()
        awaiting.removeAll()
    }
}

/// A virtual event queue of a vIOMMU (the kernel's `iommufd_veventq`).
public final class VEventQueue: IOMMUObject, @unchecked Sendable {
    public let viommu: VIOMMU
    public let type: UInt32
    public let depth: UInt32
    struct Event { var sequence: UInt32; var data: [UInt8]; var lostEvents: Bool }
    var deliver: [Event] = []
    var eventCount: UInt32 = 0
    var nextSequence: UInt32 = 0
    var lostPending = false
    public var readinessChanged: (@Sendable (Bool) -> Void)?

    init(viommu: VIOMMU, type: UInt32, depth: UInt32) {
        self.viommu = viommu
        self.type = type
        self.depth = depth
        super.init(kind: .veventq)
    }

    public var isReadable: Bool { !deliver.isEmpty }

    func signal(_ state: ContextState) {
        if let r = readinessChanged { let readable = isReadable; state.afterUnlock { r(readable) } }
    }

    override public func destroyed(in state: ContextState) {
        viommu.users -= 1
        viommu.eventQueues.removeAll { $0 === self }
    }

    /// Adds an event; past the depth, one "lost events" header stands in for the rest.
    func report(_ data: [UInt8], state: ContextState) {
        let seq = nextSequence
        nextSequence = nextSequence &+ 1 & 0x7fff_ffff
        if eventCount >= depth {
            if !lostPending { deliver.append(Event(sequence: seq, data: [], lostEvents: true)); lostPending = true }
            else if let i = deliver.lastIndex(where: { $0.lostEvents }) { deliver[i].sequence = seq }
        } else {
            deliver.append(Event(sequence: seq, data: data, lostEvents: false))
            eventCount += 1
        }
        signal(state)
    }
}

extension Context {
    /// Creates a fault queue. The corresponding ioctl is `IOMMU_FAULT_QUEUE_ALLOC`.
    public func allocateFaultQueue(readinessChanged: (@Sendable (Bool) -> Void)? = nil) throws(IOMMUError) -> FaultQueue {
        try locked { s throws(IOMMUError) in
            try FaultInjection.check(.allocation(.fault))
            let f = FaultQueue()
            f.readinessChanged = readinessChanged
            s.insert(f)
            return f
        }
    }

    /// Takes or drops a reference the queue's file holds (destroy is `EBUSY` while it is open).
    public func retainQueue(_ object: IOMMUObject, _ retain: Bool) {
        try? locked { _ throws(IOMMUError) in object.users += retain ? 1 : -1 }
    }

    /// Reports an I/O page fault of `device` at `pasid` to the domain attached there. Faults
    /// gather into a group until one carries `last`. The kernel's `iommu_report_device_fault`.
    ///
    /// - Throws: `EINVAL` when no fault-capable domain is attached there.
    public func reportPageFault(device: Device.ID, pasid: PASID?, group: UInt32, permissions: UInt32, address: UInt64, last: Bool) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            let d = try s.object(device.object, as: Device.self)
            var target = d.attachments[pasid]
            if target == nil, pasid != nil, d.model.driver.userPASIDTable, let rid = d.attachments[nil], rid is HWPTNested {
                target = rid // the guest's PASID table lives in the nested domain at the RID
            }
            guard let hwpt = target, let q = hwpt.fault else {
                throw .invalid("no fault-capable domain attached there")
            }
            var flags: UInt32 = 0
            if pasid != nil { flags |= PageFaultRecord.pasidValid }
            if last { flags |= PageFaultRecord.lastPage }
            let rec = PageFaultRecord(flags: flags, deviceID: d.objectID.rawValue, pasid: pasid ?? 0, groupID: group,
                                      permissions: permissions, address: address)
            let key = FaultQueue.PartialKey(device: ObjectIdentifier(d), pasid: pasid, group: group)
            var faults = q.partial.removeValue(forKey: key) ?? []
            faults.append(rec)
            if !last { q.partial[key] = faults; return }
            q.deliver.append(FaultQueue.Group(faults: faults, device: d, pasid: d.attachments[pasid] === hwpt ? pasid : nil))
            q.signal(s)
        }
    }

    /// Reads whole fault groups, at most `maxRecords` records, assigning each group a cookie.
    /// Returns `EINVAL` when the first group does not fit; an empty array when nothing waits.
    public func readFaults(_ queue: FaultQueue, maxRecords: Int) throws(IOMMUError) -> [PageFaultRecord] {
        try locked { s throws(IOMMUError) in
            var out: [PageFaultRecord] = []
            while let g = queue.deliver.first {
                if g.faults.count > maxRecords - out.count {
                    if out.isEmpty { throw .invalid("buffer too small for a fault group") }
                    break
                }
                queue.deliver.removeFirst()
                var group = g
                group.cookie = queue.nextCookie
                queue.nextCookie = queue.nextCookie == UInt32.max ? 1 : queue.nextCookie + 1
                queue.awaiting[group.cookie] = group
                for var r in group.faults { r.cookie = group.cookie; out.append(r) }
            }
            queue.signal(s)
            return out
        }
    }

    /// Puts groups that `readFaults` handed out back at the head of the queue, in order, as if
    /// they had not been read (the reader could not copy them out).
    public func unreadFaults(_ queue: FaultQueue, cookies: [UInt32]) {
        try? locked { s in
            var seen = Set<UInt32>()
            var restored: [FaultQueue.Group] = []
            for c in cookies where seen.insert(c).inserted {
                if let g = queue.awaiting.removeValue(forKey: c) { restored.append(g) }
            }
            queue.deliver.insert(contentsOf: restored, at: 0)
            queue.signal(s)
        }
    }

    /// Answers the group with `cookie`: `code` 0 success, 1 invalid.
    ///
    /// - Throws: `EINVAL` for an unknown code or cookie.
    public func respond(_ queue: FaultQueue, cookie: UInt32, code: UInt32) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            guard code <= 1 else { throw .invalid("unknown response code") }
            guard let g = queue.awaiting.removeValue(forKey: cookie) else { throw .invalid("no fault group with that cookie") }
            g.device.model.pageResponse(pasid: g.pasid, group: g.faults[0].groupID, code: code)
        }
    }

    /// Reads vEVENTs into `(header flags, sequence, data)` triples while they fit in `capacity`
    /// bytes (an 8-byte header each, plus data). `EINVAL` if the first does not fit.
    public func readVEvents(_ queue: VEventQueue, capacity: Int) throws(IOMMUError) -> [(flags: UInt32, sequence: UInt32, data: [UInt8])] {
        try locked { s throws(IOMMUError) in
            guard capacity >= 8 else { throw .invalid("buffer smaller than an event header") }
            var out: [(UInt32, UInt32, [UInt8])] = []
            var used = 0
            while let e = queue.deliver.first {
                let size = 8 + (e.lostEvents ? 0 : e.data.count)
                if size > capacity - used {
                    if out.isEmpty && !e.lostEvents { throw .invalid("buffer too small for the event") }
                    break
                }
                queue.deliver.removeFirst()
                if e.lostEvents { queue.lostPending = false } else { queue.eventCount -= 1 }
                out.append((e.lostEvents ? 1 : 0, e.sequence, e.data))
                used += size
            }
            queue.signal(s)
            return out
        }
    }

    /// Puts events that `readVEvents` handed out back at the head of the queue, in order (the
    /// reader could not copy them out).
    public func unreadVEvents(_ queue: VEventQueue, _ events: [(flags: UInt32, sequence: UInt32, data: [UInt8])]) {
        try? locked { s in
            let restored = events.map { VEventQueue.Event(sequence: $0.sequence, data: $0.data, lostEvents: $0.flags & 1 != 0) }
            for e in restored { if e.lostEvents { queue.lostPending = true } else { queue.eventCount += 1 } }
            queue.deliver.insert(contentsOf: restored, at: 0)
            queue.signal(s)
        }
    }
}
