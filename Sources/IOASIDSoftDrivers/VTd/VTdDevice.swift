// A PCI function behind a software VT-d unit, as the core sees it.

import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

/// A device behind a ``VTdDriver``: the core's ``DeviceModel`` for a ``PCIFunction``.
///
/// Attaching a domain programs the PASID entry of the function (RID_PASID for the whole
/// device, or the PASID): second-stage for a paging domain, nested for a nested one; detaching
/// tears it down with the invalidations it needs, after which DMA with that PASID is blocked
/// and recorded as a fault. Bind it with ``bind(to:)`` so its page requests reach the context.
public final class VTdDevice: DeviceModel, @unchecked Sendable {
    /// The driver of the unit the function sits behind.
    public let vtd: VTdDriver
    /// The PCI function (issue its DMA through ``PCIFunction/read(pasid:address:count:privileged:execute:)``
    /// and friends).
    public let function: PCIFunction

    struct State {
        /// What is attached, by PASID (nil: the requester ID).
        var attached: [UInt32?: any IOMMUDomain] = [:]
        weak var context: Context?
        var deviceID: Device.ID?
        /// PASIDs other bound devices live on (mediated devices), with where their requests go.
        var routes: [UInt32: Route] = [:]
    }
    struct Route {
        weak var context: Context?
        let device: Device.ID
    }
    let state = Locked(State())

    init(driver: VTdDriver, function: PCIFunction) {
        vtd = driver
        self.function = function
    }

    /// The requester ID.
    public var requesterID: RequesterID { function.requesterID }

    /// The driver (``vtd``).
    public var driver: any IOMMUDriver { vtd }

    /// The PASIDs the device can use: 2^(Max PASID Width), limited by the unit's PSS; 0 without
    /// a PASID capability or PASID support in the unit.
    public var maxPASIDs: UInt32 {
        guard let width = function.capabilities.pasidWidth, vtd.unit.extendedCapability.pasid else { return 0 }
        return UInt32(1) << UInt32(min(width, vtd.unit.extendedCapability.pasidSizeSupported))
    }

    /// Whether the device uses ATS (its capability and the unit's device-TLB support).
    public var usesDeviceTLB: Bool { function.capabilities.ats != nil && vtd.unit.extendedCapability.deviceTLB }

    /// Whether the device uses PRI (its capability and the unit's page request support).
    public var usesPageRequests: Bool {
        usesDeviceTLB && function.capabilities.pageRequestCapacity != nil && vtd.unit.extendedCapability.pageRequests
    }

    /// Domains with fault queues may be attached (PCI virtual functions are not modelled).
    public var refusesFaultDomains: Bool { false }

    /// The interrupt window every VT-d device reserves: DMA writes to 0xfee00000–0xfeefffff are
    /// interrupt requests, never memory accesses, so no IOAS may map there.
    public static let interruptWindow = IOVARange(start: 0xfee0_0000, last: 0xfeef_ffff)

    /// The interrupt window (``interruptWindow``), as the kernel's VT-d driver reports it.
    public var reservedRegions: [IOVARange] { [Self.interruptWindow] }

    /// Binds the device to `context` (``Context/bind(_:ownedByDriver:)``) and remembers the
    /// binding, so the driver can report the device's page requests there.
    public func bind(to context: Context, ownedByDriver: Bool = false) throws(IOMMUError) -> Device.ID {
        try context.bind(self, ownedByDriver: ownedByDriver)
    }

    /// Records where page requests go (the core calls this after any bind of the device).
    public func bound(to context: Context, as device: Device.ID) {
        state.withLock { s in
            s.context = context
            s.deviceID = device
        }
    }

    /// Forgets the binding (the core calls this after an unbind or the context's close).
    public func unbound(from context: Context, as device: Device.ID) {
        state.withLock { s in
            if s.context === context, s.deviceID == device { s.context = nil; s.deviceID = nil }
        }
    }

    /// Where a page request for `pasid` goes: the device bound on that PASID (reported without a
    /// PASID), else this device's own binding (with the PASID).
    func pageRequestTarget(pasid: UInt32?) -> (context: Context, device: Device.ID, pasid: UInt32?)? {
        state.withLock { s in
            if let p = pasid, let r = s.routes[p] {
                guard let c = r.context else { return nil }
                return (c, r.device, nil)
            }
            guard let c = s.context, let id = s.deviceID else { return nil }
            return (c, id, pasid)
        }
    }

    /// The context and device ID of the last ``bind(to:ownedByDriver:)``, while the context lives.
    public var binding: (Context, Device.ID)? {
        state.withLock { s in
            guard let c = s.context, let id = s.deviceID else { return nil }
            return (c, id)
        }
    }

    /// The slot of the PASID table used for `pasid` (RID_PASID, 0, for the requester ID).
    func tableSlot(_ pasid: UInt32?) -> UInt32 { pasid ?? 0 }

    // MARK: DeviceModel

    /// Programs the PASID entry for `pasid` (RID_PASID when nil) for `domain`, tearing down what
    /// was there first when replacing.
    ///
    /// - Throws: `EINVAL` for a domain of another unit or driver, a nested configuration the
    ///   unit cannot run (address width other than 48 or 57, 57 without FS5LP, SRE without SRS,
    ///   EAFE without EAFS); `EOPNOTSUPP` for a PASID when the unit has no PASIDs; `EBUSY` when
    ///   the PASID entry is already present (not replacing); `ENOMEM` without frames.
    public func attach(_ domain: any IOMMUDomain, pasid: UInt32?, replacing: (any IOMMUDomain)?) throws(IOMMUError) {
        if pasid != nil && !vtd.unit.extendedCapability.pasid { throw .notSupported("the unit has no PASIDs") }
        if let sva = domain as? VTdSVADomain {
            // An SVA bind: a new first-stage entry at a PASID (the core never replaces one).
            guard let pasid, sva.driver === vtd else { throw .invalid("an SVA domain attaches at a PASID of its own unit") }
            guard replacing == nil, state.withLock({ $0.attached[pasid] }) == nil else { throw .busy("the PASID is in use") }
            try sva.attach(self, pasid: pasid)
            state.withLock { $0.attached[pasid] = sva }
            return
        }
        let entry = try pasidEntry(for: domain)
        let slot = tableSlot(pasid)
        let old = state.withLock { $0.attached[pasid] }
        if old != nil {
            _ = try? vtd.tables.clearPASIDEntry(requesterID, pasid: slot)
            detachRecord(old!, pasid: pasid)
        }
        do throws(VTdTableError) {
            try vtd.tables.setPASIDEntry(requesterID, pasid: slot, entry)
        } catch {
            // Put the old entry back so a failed replace leaves the device as it was.
            if let old, let e = try? pasidEntry(for: old), (try? vtd.tables.setPASIDEntry(requesterID, pasid: slot, e)) != nil {
                attachRecord(old, pasid: pasid)
            } else if old != nil {
                _ = state.withLock { $0.attached.removeValue(forKey: pasid) }
            }
            switch error {
            case .busy: throw .busy("PASID entry is present")
            case .outOfMemory: throw .noMemory("no frames for the PASID table")
            default: throw .invalid("cannot program the PASID entry")
            }
        }
        attachRecord(domain, pasid: pasid)
    }

    /// Tears down the PASID entry for `pasid` (RID_PASID when nil): clear P, invalidate the
    /// PASID cache, IOTLB and device TLB; DMA there is blocked from now on.
    public func detach(pasid: UInt32?) {
        let old = state.withLock { $0.attached[pasid] }
        _ = try? vtd.tables.clearPASIDEntry(requesterID, pasid: tableSlot(pasid))
        if let old { detachRecord(old, pasid: pasid) }
    }

    /// Sends the owner's answer to page request group `group` back to the device as a page
    /// group response descriptor (code 0 success, 1 invalid request). The device retries or
    /// fails the accesses waiting for it.
    public func pageResponse(pasid: UInt32?, group: UInt32, code: UInt32) {
        vtd.flush([.pageGroupResponse(requesterID: requesterID.rawValue, pasid: pasid, code: UInt8(truncatingIfNeeded: code),
                                      groupIndex: UInt16(truncatingIfNeeded: group))])
    }

    // MARK: Entries

    /// The PASID entry that makes `domain` translate for this device.
    func pasidEntry(for domain: any IOMMUDomain) throws(IOMMUError) -> VTdPASIDEntry {
        switch domain {
        case let d as VTdPagingDomain:
            guard d.driver === vtd else { throw .invalid("domain of another VT-d unit") }
            return d.pasidEntry()
        case let n as VTdNestedDomain:
            guard n.parent.driver === vtd else { throw .invalid("domain of another VT-d unit") }
            return try n.pasidEntry()
        default:
            throw .invalid("not a VT-d domain")
        }
    }

    func attachRecord(_ domain: any IOMMUDomain, pasid: UInt32?) {
        state.withLock { $0.attached[pasid] = domain }
        (domain as? VTdDomainAttachments)?.added(self, pasid: pasid)
    }

    func detachRecord(_ domain: any IOMMUDomain, pasid: UInt32?) {
        state.withLock { s in
            if let d = s.attached[pasid], d === domain { s.attached.removeValue(forKey: pasid) }
        }
        (domain as? VTdDomainAttachments)?.removed(self, pasid: pasid)
    }

    /// The domain attached at `pasid` (nil: the requester ID).
    public func attachedDomain(pasid: UInt32? = nil) -> (any IOMMUDomain)? { state.withLock { $0.attached[pasid] } }
}

extension VTdDevice: PASIDHostingDevice {
    /// Page requests for `pasid` go to `device` of `context` (a mediated device bound there).
    public func route(pasid: UInt32, to context: Context, as device: Device.ID) {
        state.withLock { $0.routes[pasid] = Route(context: context, device: device) }
    }

    /// Page requests for `pasid` are this device's own again.
    public func unroute(pasid: UInt32) {
        state.withLock { _ = $0.routes.removeValue(forKey: pasid) }
    }
}
