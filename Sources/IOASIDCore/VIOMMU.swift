/// The host's representation of a guest's IOMMU (the kernel's `iommufd_viommu`): it owns the
/// nesting parent, the guest's device IDs (vDevices), event queues and HW queues.
public final class VIOMMU: IOMMUObject, @unchecked Sendable {
    /// The typed ID of this kind of object.
    public typealias ID = TypedID<VIOMMU>
    public let type: UInt32
    public let parent: HWPTPaging
    public let model: any VIOMMUModel
    public let driver: any IOMMUDriver
    var vdevices: [UInt64: VDevice] = [:]
    var eventQueues: [VEventQueue] = []

    init(type: UInt32, parent: HWPTPaging, model: any VIOMMUModel, driver: any IOMMUDriver) {
        self.type = type
        self.parent = parent
        self.model = model
        self.driver = driver
        super.init(kind: .viommu)
    }

    public var id: ID { ID(objectID) }

    func vdevicesByVirtualID() -> [UInt32: VDevice] {
        var m: [UInt32: VDevice] = [:]
        for v in vdevices.values { m[v.objectID.rawValue] = v }
        return m
    }

    override public func destroyed(in state: ContextState) { parent.users -= 1 }
}

/// A device as the guest sees it: its virtual ID in a vIOMMU (the kernel's `iommufd_vdevice`).
public final class VDevice: IOMMUObject, @unchecked Sendable {
    public let viommu: VIOMMU
    public let device: Device
    public let virtualID: UInt64
    /// Driver data (the test driver keeps the mock device's cache here).
    public var driverData: AnyObject?

    init(viommu: VIOMMU, device: Device, virtualID: UInt64) {
        self.viommu = viommu
        self.device = device
        self.virtualID = virtualID
        super.init(kind: .vdevice)
    }

    override public func destroyed(in state: ContextState) {
        viommu.model.vdeviceDestroyed(self)
        viommu.vdevices.removeValue(forKey: virtualID)
        viommu.users -= 1
        device.users -= 1
        device.vdevice = nil
    }
}

/// A queue of the guest that the hardware reads directly (the kernel's `iommufd_hw_queue`).
public final class HWQueue: IOMMUObject, @unchecked Sendable {
    public let viommu: VIOMMU
    public let type: UInt32
    public let index: UInt32
    public let base: UInt64
    public let length: UInt64
    /// The host address the queue's first byte lives at.
    public internal(set) var hostAddress: UInt64 = 0
    var lockedAreaStarts: [UInt64] = []
    var pinned: (iova: UInt64, length: UInt64)?

    init(viommu: VIOMMU, type: UInt32, index: UInt32, base: UInt64, length: UInt64) {
        self.viommu = viommu
        self.type = type
        self.index = index
        self.base = base
        self.length = length
        super.init(kind: .hwQueue)
    }

    override public func destroyed(in state: ContextState) {
        viommu.model.hwQueueDestroyed(self)
        let ioas = viommu.parent.ioas
        for start in lockedAreaStarts {
            if let i = ioas.table.areas.index(containing: start) {
                ioas.table.areas[i].value.locks -= 1
                if let p = pinned {
                    let e = ioas.table.areas[i]
                    let s = max(p.iova, e.range.start), l = min(p.iova + (p.length - 1), e.range.last)
                    if s <= l { e.value.pages.unpin(offset: e.value.pagesOffset + (s - e.range.start), length: l - s + 1, state: state) }
                }
            }
        }
        viommu.users -= 1
    }
}

extension Context {
    /// Creates a vIOMMU of `type` for the IOMMU behind `device`, over the nesting parent `parent`.
    /// The corresponding ioctl is `IOMMU_VIOMMU_ALLOC`.
    ///
    /// - Throws: `EOPNOTSUPP` for the default or an unknown type; `EINVAL` if `parent` is not a
    ///   nesting parent; `ENOENT` for missing objects.
    public func allocateVIOMMU(device: Device.ID, parent: HWPT.ID, type: UInt32, data: DriverData?) throws(IOMMUError) -> VIOMMU.ID {
        guard type != 0 else { throw .notSupported("default vIOMMU type") }
        return try locked { s throws(IOMMUError) in
            try FaultInjection.check(.allocation(.viommu))
            let d = try s.object(device.object, as: Device.self)
            guard d.model.driver.supportsVIOMMU(type: type, device: d.model.iommuDevice) else { throw .notSupported("vIOMMU type") }
            let p = try s.object(parent.object, as: HWPTPaging.self)
            guard p.isNestParent else { throw .invalid("HWPT is not a nesting parent") }
            let model = try d.model.driver.allocateVIOMMU(device: d.model.iommuDevice, parent: p.domain, type: type,
                                                          data: (data?.length ?? 0) == 0 ? nil : data, memory: s.memory)
            let v = VIOMMU(type: type, parent: p, model: model, driver: d.model.driver)
            s.reserve(v)
            p.users += 1
            do throws(IOMMUError) { try model.allocationOutput(memory: s.memory, data: data) } catch {
                p.users -= 1
                s.abort(v)
                throw error
            }
            s.publish(v)
            return v.id
        }
    }

    /// Creates the vDevice of `device` with the guest's `virtualID` in `viommu`.
    /// The corresponding ioctl is `IOMMU_VDEVICE_ALLOC`.
    ///
    /// - Throws: `EEXIST` if the device already has a vDevice or the virtual ID is taken;
    ///   `EINVAL` if the device is behind another IOMMU.
    public func allocateVDevice(viommu: VIOMMU.ID, device: Device.ID, virtualID: UInt64) throws(IOMMUError) -> ObjectID {
        try locked { s throws(IOMMUError) in
            try FaultInjection.check(.allocation(.vdevice))
            let v = try s.object(viommu.object, as: VIOMMU.self)
            let d = try s.object(device.object, as: Device.self)
            guard d.model.driver === v.driver else { throw .invalid("device is behind another IOMMU") }
            if d.vdevice != nil { throw .exists("device already has a vDevice") }
            if v.vdevices[virtualID] != nil { throw .exists("virtual ID is taken") }
            let vd = VDevice(viommu: v, device: d, virtualID: virtualID)
            s.reserve(vd)
            do throws(IOMMUError) { try v.model.vdeviceAllocated(vd) } catch { s.abort(vd); throw error }
            v.vdevices[virtualID] = vd
            v.users += 1
            d.users += 1
            d.vdevice = vd
            s.publish(vd)
            return vd.objectID
        }
    }

    /// Creates a vEVENT queue of `type` with room for `depth` events.
    /// The corresponding ioctl is `IOMMU_VEVENTQ_ALLOC`.
    ///
    /// - Throws: `EEXIST` if the vIOMMU has a queue of that type; `EINVAL` for a zero or huge depth.
    public func allocateVEventQueue(viommu: VIOMMU.ID, type: UInt32, depth: UInt32,
                                    readinessChanged: (@Sendable (Bool) -> Void)? = nil) throws(IOMMUError) -> VEventQueue {
        guard type != 0 else { throw .notSupported("default vEVENTQ type") }
        guard depth != 0, depth <= 1 << 19 else { throw .invalid("queue depth out of range") }
        return try locked { s throws(IOMMUError) in
            try FaultInjection.check(.allocation(.veventq))
            let v = try s.object(viommu.object, as: VIOMMU.self)
            if v.eventQueues.contains(where: { $0.type == type }) { throw .exists("vIOMMU has a queue of that type") }
            let q = VEventQueue(viommu: v, type: type, depth: depth)
            q.readinessChanged = readinessChanged
            s.insert(q)
            v.eventQueues.append(q)
            v.users += 1
            return q
        }
    }

    /// Reports a virtual event of `type` with `data` to the vIOMMU's queue of that type, if any.
    public func reportVEvent(viommu: VIOMMU, type: UInt32, data: [UInt8]) {
        try? locked { s throws(IOMMUError) in
            viommu.eventQueues.first { $0.type == type }?.report(data, state: s)
        }
    }

    /// Creates a HW queue in guest memory at `base` (IOVA of the nesting parent), pinning and
    /// locking its pages. The corresponding ioctl is `IOMMU_HW_QUEUE_ALLOC`.
    public func allocateHWQueue(viommu: VIOMMU.ID, type: UInt32, index: UInt32, base: UInt64, length: UInt64) throws(IOMMUError) -> ObjectID {
        guard type != 0 else { throw .notSupported("default HW queue type") }
        guard length != 0 else { throw .invalid("zero length") }
        guard base.addingReportingOverflow(length - 1).overflow == false else { throw .overflow("base + length overflows") }
        return try locked { s throws(IOMMUError) in
            try FaultInjection.check(.allocation(.hwQueue))
            let v = try s.object(viommu.object, as: VIOMMU.self)
            try v.model.checkHWQueue(type: type, index: index, base: base, length: length)
            let q = HWQueue(viommu: v, type: type, index: index, base: base, length: length)
            s.reserve(q)
            let ioas = v.parent.ioas
            let pageSize = s.options.pageSize
            let alignedBase = base & ~(pageSize - 1)
            let (padded, o1) = (base - alignedBase).addingReportingOverflow(length)
            let (rounded, o2) = padded.addingReportingOverflow(pageSize - 1)
            guard !o1, !o2 else { s.abort(q); throw .range("queue length overflows") }
            // The kernel allocates an array of one page pointer per page before it pins, and its
            // allocator refuses more than INT_MAX bytes: a queue that long is ENOMEM, not ENOENT.
            guard rounded / pageSize <= UInt64(Int32.max) / 8 else {
                s.abort(q)
                throw .noMemory("the queue's page array is more than the kernel allocates")
            }
            let pinLength = rounded & ~(pageSize - 1)
            // Pin the span; it must be contiguous in host memory.
            var cursor = alignedBase
            let last = alignedBase + (pinLength - 1) // the span may end at 2^64 - 1
            var pinnedParts: [(Int, UInt64, UInt64)] = []
            var hostStart: UInt64 = 0
            var expected: UInt64? = nil
            do throws(IOMMUError) {
                while true {
                    guard let i = ioas.table.areas.index(containing: cursor) else { throw .noEntry("queue memory is not mapped") }
                    let e = ioas.table.areas[i]
                    let l = min(last, e.range.last)
                    let off = e.value.pagesOffset + (cursor - e.range.start)
                    let host = e.value.pages.hostAddress(off)
                    if let x = expected, x != host { throw .fault("queue memory is not contiguous") }
                    if expected == nil { hostStart = host }
                    expected = host + (l - cursor + 1)
                    try e.value.pages.pin(offset: off, length: l - cursor + 1, state: s)
                    pinnedParts.append((i, off, l - cursor + 1))
                    if l == last { break }
                    cursor = l + 1
                }
            } catch {
                for (i, off, len) in pinnedParts { ioas.table.areas[i].value.pages.unpin(offset: off, length: len, state: s) }
                s.abort(q)
                throw error
            }
            q.hostAddress = hostStart + (base - alignedBase)
            q.pinned = (alignedBase, pinLength)
            do throws(IOMMUError) { try v.model.hwQueueAllocated(q) } catch {
                for (i, off, len) in pinnedParts { ioas.table.areas[i].value.pages.unpin(offset: off, length: len, state: s) }
                s.abort(q)
                throw error
            }
            for (i, _, _) in pinnedParts {
                ioas.table.areas[i].value.locks += 1
                q.lockedAreaStarts.append(ioas.table.areas[i].range.start)
            }
            v.users += 1
            s.publish(q)
            return q.objectID
        }
    }
}

extension IOMMUDriver {
    /// No vIOMMU types unless the driver says otherwise.
    public func supportsVIOMMU(type: UInt32, device: any DeviceModel) -> Bool { false }
}
