import IOASIDStructures

/// A device bound to a context (the kernel's `iommufd_device`), attached by RID and by PASID.
public final class Device: IOMMUObject, @unchecked Sendable {
    /// The typed ID of this kind of object.
    public typealias ID = TypedID<Device>

    public let model: any DeviceModel
    /// Whether the device was bound by a driver that owns its lifetime (the user cannot destroy it).
    public let boundByDriver: Bool
    /// What is attached: `nil` key for the RID (no PASID).
    var attachments: [PASID?: HWPT] = [:]
    /// The vDevice representing this device in a vIOMMU, if any.
    var vdevice: VDevice?

    init(model: any DeviceModel, boundByDriver: Bool) {
        self.model = model
        self.boundByDriver = boundByDriver
        super.init(kind: .device)
    }

    public var id: ID { ID(objectID) }

    override public func destroyed(in state: ContextState) {
        for pasid in Array(attachments.keys) { _ = state.detachHWPT(device: self, pasid: pasid) }
        // However the device goes (unbind, IOMMU_DESTROY, the context's close), its driver hears
        // of it once the lock is released.
        if let context = state.context {
            let model = self.model, id = self.id
            state.afterUnlock { model.unbound(from: context, as: id) }
        }
    }
}

extension ContextState {
    /// The kernel's RID/PASID compatibility rule.
    func checkPASIDCompatibility(_ hwpt: HWPT, device: Device, pasid: PASID?) throws(IOMMUError) {
        if pasid == nil {
            // SVA binds do not depend on the RID's domain (the kernel's SVA path has no such rule).
            if !hwpt.pasidCompatible, device.attachments.contains(where: { $0.key != nil && !($0.value is HWPTSVA) }) {
                throw .invalid("PASIDs are attached; the RID HWPT must be PASID compatible")
            }
        } else {
            guard hwpt.pasidCompatible else { throw .invalid("HWPT was not allocated for PASID use") }
            if hwpt is HWPTSVA { return }
            if let rid = device.attachments[nil], !rid.pasidCompatible {
                throw .invalid("the RID HWPT is not PASID compatible")
            }
        }
    }

    /// Attaches `hwpt` to `device` at `pasid`; `EBUSY` if something is attached there already.
    func attachHWPT(_ hwpt: HWPT, device: Device, pasid: PASID?) throws(IOMMUError) {
        // Attach never overwrites: a second attach of the same device at the same PASID is
        // EBUSY whatever the HWPT (replace is the way to change it).
        if device.attachments[pasid] != nil { throw .busy("already attached; use replace") }
        try checkAttachable(hwpt, device: device, pasid: pasid)
        let reservedIn = pasid == nil ? hwpt.pagingBase?.ioas : nil
        if let ioas = reservedIn { try reserveRegions(of: device, in: ioas) }
        let gate = pasid == nil ? nil : pasidGate
        if let gate, let p = pasid {
            do throws(IOMMUError) { try gate.authorize(pasid: p, device: device) } catch {
                reservedIn?.table.removeReserved(owner: .device(device.objectID))
                throw error
            }
        }
        do throws(IOMMUError) { try device.model.attach(hwpt.baseDomain, pasid: pasid, replacing: nil) } catch {
            if let gate, let p = pasid { gate.refused(pasid: p, device: device) }
            reservedIn?.table.removeReserved(owner: .device(device.objectID))
            throw error
        }
        device.attachments[pasid] = hwpt
        hwpt.users += 1
        if let gate, let p = pasid { gate.attached(pasid: p, device: device) }
    }

    /// Reserves the device's regions in `ioas`, all or none; `EADDRINUSE` if a mapping or an
    /// allowed span is there.
    func reserveRegions(of device: Device, in ioas: IOAS) throws(IOMMUError) {
        for range in device.model.reservedRegions {
            do throws(IOMMUError) { try ioas.table.reserve(range, owner: .device(device.objectID)) } catch {
                ioas.table.removeReserved(owner: .device(device.objectID))
                throw error
            }
        }
    }

    private func checkAttachable(_ hwpt: HWPT, device: Device, pasid: PASID?) throws(IOMMUError) {
        if hwpt.fault != nil, device.model.refusesFaultDomains { throw .invalid("device cannot take faults") }
        try checkPASIDCompatibility(hwpt, device: device, pasid: pasid)
        if let p = pasid, p >= device.model.maxPASIDs { throw .invalid("PASID beyond the device's width") }
    }

    /// Detaches whatever is attached to `device` at `pasid`; answers its pending faults and
    /// destroys an auto domain left without devices. Returns the HWPT that was attached.
    @discardableResult
    func detachHWPT(device: Device, pasid: PASID?) -> HWPT? {
        guard let hwpt = device.attachments.removeValue(forKey: pasid) else { return nil }
        device.model.detach(pasid: pasid)
        if pasid == nil { hwpt.pagingBase?.ioas.table.removeReserved(owner: .device(device.objectID)) }
        hwpt.fault?.autoRespond(device: device, pasid: pasid, state: self)
        releaseAttachment(hwpt)
        if let p = pasid { pasidGate?.detached(pasid: p, device: device) }
        return hwpt
    }

    func releaseAttachment(_ hwpt: HWPT) {
        hwpt.users -= 1
        if let p = hwpt as? HWPTPaging, p.isAutoDomain, p.users == 0 { remove(p) }
        if hwpt is HWPTSVA, hwpt.users == 0 { remove(hwpt) }  // an SVA bind ends with its attachment
    }

    /// Replaces what `device` has at `pasid` with `hwpt`; `EINVAL` if nothing is attached.
    func replaceHWPT(_ hwpt: HWPT, device: Device, pasid: PASID?) throws(IOMMUError) {
        guard let old = device.attachments[pasid] else { throw .invalid("nothing attached to replace") }
        if old === hwpt { return }
        if old is HWPTSVA { throw .busy("the PASID is SVA-bound; unbind it first") }
        try checkAttachable(hwpt, device: device, pasid: pasid)
        // The device's regions move with its RID when the IOAS changes (none to a nested-only
        // or SVA table); within one IOAS they stay as they are.
        let oldIOAS = pasid == nil ? old.pagingBase?.ioas : nil
        let newIOAS = pasid == nil ? hwpt.pagingBase?.ioas : nil
        let moves = newIOAS != nil && newIOAS !== oldIOAS
        if moves, let ioas = newIOAS { try reserveRegions(of: device, in: ioas) }
        do throws(IOMMUError) { try device.model.attach(hwpt.baseDomain, pasid: pasid, replacing: old.baseDomain) } catch {
            if moves { newIOAS?.table.removeReserved(owner: .device(device.objectID)) }
            throw error
        }
        if let o = oldIOAS, o !== newIOAS { o.table.removeReserved(owner: .device(device.objectID)) }
        device.attachments[pasid] = hwpt
        hwpt.users += 1
        old.fault?.autoRespond(device: device, pasid: pasid, state: self)
        releaseAttachment(old)
    }

    /// Resolves `pt` to a HWPT for `device`, creating or reusing an auto domain for an IOAS,
    /// and attaches (or replaces) with it. Returns the HWPT's ID.
    func changePageTable(device: Device, pasid: PASID?, to pt: ObjectID, replace: Bool) throws(IOMMUError) -> ObjectID {
        let o = try object(pt)
        try FaultInjection.check(.allocation(nil))  // the attachment's handle
        switch o {
        case is HWPTSVA:
            throw .invalid("an SVA HWPT is attached only by its SVA bind")
        case let hwpt as HWPT:
            if replace { try replaceHWPT(hwpt, device: device, pasid: pasid) } else { try attachHWPT(hwpt, device: device, pasid: pasid) }
            return hwpt.objectID
        case let ioas as IOAS:
            for hwpt in ioas.hwpts where hwpt.isAutoDomain && hwpt.isLive {
                do throws(IOMMUError) {
                    if replace { try replaceHWPT(hwpt, device: device, pasid: pasid) } else { try attachHWPT(hwpt, device: device, pasid: pasid) }
                    return hwpt.objectID
                } catch {
                    if case .invalid = error { continue }
                    throw error
                }
            }
            // A replace finds out that nothing is attached only after the new auto domain was
            // added to the IOAS (which can fail first with EADDRINUSE), as in the kernel.
            // Auto domains are allocated without IOMMU_HWPT_ALLOC_PASID, so an IOAS cannot be
            // attached to a PASID directly (EINVAL), as in the kernel.
            try FaultInjection.check(.allocation(.hwptPaging))  // the automatic domain
            let hwpt = try allocatePaging(ioas: ioas, device: device, pasid: pasid, flags: [], data: nil, attachImmediately: !replace)
            if replace {
                do throws(IOMMUError) { try replaceHWPT(hwpt, device: device, pasid: pasid) } catch {
                    abortHWPT(hwpt)
                    throw error
                }
            }
            hwpt.isAutoDomain = true
            publish(hwpt)
            return hwpt.objectID
        default:
            throw .invalid("target must be an IOAS or a HWPT")
        }
    }
}

extension Context {
    /// Binds a device model to this context (the kernel's `iommufd_device_bind`).
    ///
    /// - Parameters:
    ///   - model: the driver's model of the device.
    ///   - ownedByDriver: when true the user cannot destroy the device object; the
    ///     driver that bound it unbinds it with `unbind`.
    public func bind(_ model: any DeviceModel, ownedByDriver: Bool = false) throws(IOMMUError) -> Device.ID {
        let id = try locked { s throws(IOMMUError) in
            try FaultInjection.check(.allocation(.device))
            let d = Device(model: model, boundByDriver: ownedByDriver)
            s.insert(d)
            return d.id
        }
        model.bound(to: self, as: id)
        return id
    }

    /// Unbinds a device: detaches everything and removes it.
    public func unbind(_ device: Device.ID) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            let d = try s.object(device.object, as: Device.self)
            if let v = d.vdevice, v.isLive { s.remove(v) }
            for pasid in Array(d.attachments.keys) { s.detachHWPT(device: d, pasid: pasid) }
            d.users = 0
            s.remove(d)
        }
    }

    /// Attaches `device` (at `pasid`, or its RID when nil) to `pt`: a HWPT, or an IOAS, for which
    /// an automatic paging HWPT is found or made. Returns the HWPT attached.
    ///
    /// - Throws: `EBUSY` if something is attached there already; `EINVAL` if the HWPT is not PASID
    ///   compatible (or the RID's HWPT is not, for a PASID), or the PASID is beyond the device's
    ///   width; `ENOENT` for missing objects.
    public func attach(_ device: Device.ID, pasid: PASID? = nil, to pt: ObjectID) throws(IOMMUError) -> HWPT.ID {
        try locked { s throws(IOMMUError) in
            let d = try s.object(device.object, as: Device.self)
            return HWPT.ID(try s.changePageTable(device: d, pasid: pasid, to: pt, replace: false))
        }
    }

    /// Replaces what `device` has attached at `pasid` with `pt`, without a blocked window.
    public func replace(_ device: Device.ID, pasid: PASID? = nil, with pt: ObjectID) throws(IOMMUError) -> HWPT.ID {
        try locked { s throws(IOMMUError) in
            let d = try s.object(device.object, as: Device.self)
            return HWPT.ID(try s.changePageTable(device: d, pasid: pasid, to: pt, replace: true))
        }
    }

    /// Detaches `device` at `pasid`; does nothing when nothing is attached.
    public func detach(_ device: Device.ID, pasid: PASID? = nil) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            let d = try s.object(device.object, as: Device.self)
            s.detachHWPT(device: d, pasid: pasid)
        }
    }

    /// The HWPT attached to `device` at `pasid`, if any.
    public func attachedHWPT(_ device: Device.ID, pasid: PASID? = nil) throws(IOMMUError) -> HWPT.ID? {
        try locked { s throws(IOMMUError) in
            try s.object(device.object, as: Device.self).attachments[pasid].map { $0.id }
        }
    }

    /// Reports the IOMMU behind `device`. The corresponding ioctl is `IOMMU_GET_HW_INFO`.
    public func hardwareInfo(_ device: Device.ID, type: UInt32? = nil) throws(IOMMUError) -> HardwareInfo {
        try locked { s throws(IOMMUError) in
            let d = try s.object(device.object, as: Device.self)
            var info = try d.model.driver.hardwareInfo(device: d.model.iommuDevice, type: type)
            if d.model.maxPASIDs > 0 { info.maxPASIDLog2 = UInt8(31 - UInt32(d.model.maxPASIDs).leadingZeroBitCount) }
            if d.model.driver.supportsDirtyTracking(device: d.model.iommuDevice) { info.capabilities |= 1 }
            return info
        }
    }
}
