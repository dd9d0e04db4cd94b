// Shared virtual addressing (SVA): a device at one PASID uses a CPU process's page table, so its
// DMA addresses are the process's virtual addresses (the kernel's
// iommu_sva_bind_device in drivers/iommu/iommu-sva.c).
//
// Vocabulary:
//   address space  a process's CPU page table and its lifetime — the kernel's `mm_struct` as an
//                  IOMMU driver sees it (``SharedAddressSpace``);
//   observer       what the kernel calls an mmu notifier: told when translations change (unmap,
//                  protection change) and when the address space ends (exit) —
//                  ``AddressSpaceObserver``;
//   SVA domain     the driver's domain that points the IOMMU at the process's page table (VT-d:
//                  a first-stage-only PASID entry whose FSPTPTR is the page table root);
//   SVA HWPT       the core's object for one bind (``HWPTSVA``): it carries the fault queue the
//                  device's page requests go to, and leaves the table with its attachment.
//
// The core only binds and unbinds; which PASID a process gets (one per process, the kernel's mm
// PASID) and what happens at exit are the IOASID layer's (`IOASIDSets.SVABindings`).

/// A process address space a device can share: the kernel's `mm_struct` as an IOMMU driver
/// sees it. Implemented by the modelled process of the software drivers.
public protocol SharedAddressSpace: AnyObject, Sendable {
    /// The process ID.
    var pid: Int32 { get }
    /// The physical address of the root of the process's CPU page table (what CR3 holds).
    var pageTableRoot: UInt64 { get }
    /// The paging levels of that table (4 or 5).
    var pagingLevels: Int { get }
    /// Whether the process has exited (its page table is gone or going).
    var hasExited: Bool { get }
    /// Starts telling `observer` about changes; held weakly.
    /// - Throws: `ESRCH` when the process has exited.
    func addObserver(_ observer: any AddressSpaceObserver) throws(IOMMUError)
    /// Stops telling `observer`.
    func removeObserver(_ observer: any AddressSpaceObserver)
}

/// Told about changes of a ``SharedAddressSpace`` (the kernel's mmu notifier ops). Called
/// without any lock of the core held; an implementation must not call back into the address space.
public protocol AddressSpaceObserver: AnyObject, Sendable {
    /// Translations of `[first, last]` changed (unmapped, or their protection changed). Before
    /// returning, every cached copy of them must be gone (IOTLB, device TLB), so no DMA uses the
    /// old translation afterwards. The kernel's `arch_invalidate_secondary_tlbs`.
    func invalidate(first: UInt64, last: UInt64)
    /// The address space ends (the process exits). Before returning, the IOMMU must stop walking
    /// its page table; the tables are freed afterwards. The kernel's `release`.
    func released()
}

extension IOMMUDriver {
    /// Drivers without SVA refuse: `EOPNOTSUPP`.
    public func allocateSVADomain(device: any DeviceModel, addressSpace: any SharedAddressSpace) throws(IOMMUError) -> any IOMMUDomain {
        throw .notSupported("the IOMMU driver has no SVA")
    }
}

/// One SVA bind: a device at a PASID translating through a process's page table (the kernel's
/// `iommu_sva` handle with its SVA domain). Created by ``Context/bindSVA(_:pasid:addressSpace:faultQueue:)``,
/// it leaves the object table when its attachment ends (unbind, detach, device unbind, close).
/// It cannot be attached or replaced through the paging-HWPT paths (`EINVAL`).
public final class HWPTSVA: HWPT, @unchecked Sendable {
    /// The address space the device shares.
    public let addressSpace: any SharedAddressSpace

    init(domain: any IOMMUDomain, addressSpace: any SharedAddressSpace) {
        self.addressSpace = addressSpace
        super.init(kind: .hwptSVA, domain: domain, pasidCompatible: true)
    }
}

extension Context {
    /// Binds `device` at `pasid` to the process address space `addressSpace`: the driver's SVA
    /// domain makes the device's DMA with that PASID translate through the process's page table,
    /// and page requests there go to `faultQueue` (else the driver answers them Invalid).
    /// The kernel's `iommu_sva_bind_device` for one (device, PASID); the PASID is the caller's
    /// choice here (the IOASID layer hands out one per process).
    ///
    /// A PASID gate (the IOASID layer) authorizes `pasid` as for any PASID attachment. The RID's
    /// HWPT need not be PASID-compatible: an SVA domain does not depend on it.
    ///
    /// - Returns: the SVA HWPT of the bind.
    /// - Throws: `EINVAL` for PASID 0 or one beyond the device's width, a device without a PASID
    ///   capability, a fault queue on a device that refuses them, or what the driver refuses
    ///   (VT-d: no ATS, PRI supported but not enabled); `ENODEV`/`EOPNOTSUPP` when the IOMMU
    ///   has no SVA; `ESRCH` when the process has exited; `EBUSY` when something is attached at
    ///   `pasid` already; `ENOENT` for a missing device or fault queue; the gate's errors
    ///   (`ENOENT`, `EPERM`, `EBUSY`).
    public func bindSVA(_ device: Device.ID, pasid: PASID, addressSpace: any SharedAddressSpace,
                        faultQueue: ObjectID? = nil) throws(IOMMUError) -> HWPT.ID {
        try locked { s throws(IOMMUError) in
            try FaultInjection.check(.allocation(.hwptSVA))
            let d = try s.object(device.object, as: Device.self)
            guard d.model.maxPASIDs > 0 else { throw .invalid("the device has no PASID capability") }
            guard pasid != 0 else { throw .invalid("SVA needs a PASID other than 0") }
            if d.attachments[pasid] != nil { throw .busy("something is attached at that PASID") }
            guard !addressSpace.hasExited else { throw .noProcess("the process has exited") }
            let fault = try faultQueue.map { id throws(IOMMUError) in try s.object(id, as: FaultQueue.self) }
            let domain = try d.model.driver.allocateSVADomain(device: d.model.iommuDevice, addressSpace: addressSpace)
            let hwpt = HWPTSVA(domain: domain, addressSpace: addressSpace)
            if let fault {
                hwpt.fault = fault
                fault.users += 1
            }
            s.reserve(hwpt)
            do throws(IOMMUError) { try s.attachHWPT(hwpt, device: d, pasid: pasid) } catch {
                if let f = hwpt.fault { f.users -= 1; hwpt.fault = nil }
                s.abortHWPT(hwpt)
                throw error
            }
            s.publish(hwpt)
            return hwpt.id
        }
    }

    /// Ends the SVA bind of `device` at `pasid`: the PASID entry is torn down with its cache
    /// invalidations (DMA with the PASID is blocked from then on), outstanding page requests are
    /// answered Invalid, and the SVA HWPT leaves the table. The kernel's `iommu_sva_unbind_device`.
    ///
    /// - Throws: `ENOENT` for a missing device, or when no SVA bind is at `pasid`.
    public func unbindSVA(_ device: Device.ID, pasid: PASID) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            let d = try s.object(device.object, as: Device.self)
            guard d.attachments[pasid] is HWPTSVA else { throw .noEntry("no SVA bind at that PASID") }
            s.detachHWPT(device: d, pasid: pasid)
        }
    }

    /// The address space `device` shares at `pasid`, if it is SVA-bound there.
    public func sharedAddressSpace(_ device: Device.ID, pasid: PASID) throws(IOMMUError) -> (any SharedAddressSpace)? {
        try locked { s throws(IOMMUError) in
            (try s.object(device.object, as: Device.self).attachments[pasid] as? HWPTSVA)?.addressSpace
        }
    }
}
