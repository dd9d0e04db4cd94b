// The VT-d driver under the core: the host side of one software VT-d unit, as the Linux intel
// driver is the host side of a DMAR unit.
//
//   VTdDriver       IOMMUDriver: hardware info, paging (second-stage) and nested domain
//                   allocation, domain IDs, the invalidation queue, the page request queue and
//                   its service (page requests → the core's fault queues).
//   VTdDevice       DeviceModel: a PCI function behind the unit; attach/detach program its
//                   PASID entries (host-allocated PASIDs: the host writes each PASID entry),
//                   page responses go back as page group response descriptors.
//   VTdPagingDomain PagingDomain: a VT-d second-stage table; host-physical addresses are the
//                   user addresses of the core's pinned pages.
//   VTdNestedDomain a guest stage-1 table (IOMMU_HWPT_DATA_VTD_S1) over a paging parent,
//                   programmed as PGTT nested; IOMMU_HWPT_INVALIDATE becomes PASID-based IOTLB
//                   and device-TLB invalidations.
//
// Host memory. The unit's PhysicalMemory must hold the pinned user pages at their user
// addresses: ``VTdDriver/processMemory()`` makes one whose RAM is this process's own address
// space (identity), with the unit's tables in an allocator window above it.
//
// Locks: the core calls in with its context lock held. The driver's `state` (domain IDs, the
// device registry) and each domain's `state` are leaf locks; invalidations are submitted with
// none of them held (they may wait for a device's DMA in flight). Page requests are serviced on
// the driver's own queue (the "interrupt thread"), never inside a call from the core or from a
// device, because reporting them takes a context lock.

import Dispatch
import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

/// The software VT-d driver: one VT-d unit, its host tables and queues, and the devices behind it.
public final class VTdDriver: IOMMUDriver, @unchecked Sendable {
    /// How page requests reach the core's fault queues.
    public enum PageRequestDelivery: Sendable {
        /// The page request interrupt schedules ``servicePageRequests()`` on the driver's own
        /// serial queue (as the Linux driver's threaded interrupt handler).
        case interruptThread
        /// Nothing happens until someone calls ``servicePageRequests()`` (deterministic tests).
        case manual
    }

    /// The hardware.
    public let unit: VTdUnit
    /// The invalidation queue.
    public let queue: VTdInvalidationQueue
    /// The page request queue.
    public let pageRequestQueue: VTdPageRequestQueue
    /// The root, context and PASID tables.
    public let tables: VTdHostTables
    /// How page requests are delivered.
    public let delivery: PageRequestDelivery

    struct State {
        /// Domain IDs in use (0 and 1 are reserved, as in the Linux driver).
        var domainIDs: Set<UInt16> = []
        var nextDomainID: UInt16 = 2
        /// Devices by requester ID (weak: the device keeps the driver alive, not the reverse).
        var devices: [UInt16: WeakDevice] = [:]
        /// A page request service is scheduled.
        var serviceScheduled = false
    }
    let state = Locked(State())
    struct WeakDevice { weak var device: VTdDevice? }
    /// Serializes page request service.
    let serviceLock = Locked<Void>(())
    let serviceQueue = DispatchQueue(label: "ioasid.vtd.prq")

    /// Creates a driver over a new unit on `memory`: sets up the invalidation and page request
    /// queues and the root table, and enables translation.
    ///
    /// - Throws: `ENOMEM` when the unit's memory has no frames for its structures.
    public init(memory: PhysicalMemory, configuration: VTdConfiguration = VTdConfiguration(),
                delivery: PageRequestDelivery = .interruptThread) throws(IOMMUError) {
        unit = VTdUnit(memory: memory, configuration: configuration)
        guard let q = VTdInvalidationQueue(unit: unit), let p = VTdPageRequestQueue(unit: unit) else {
            throw .noMemory("no frames for the VT-d queues")
        }
        queue = q
        pageRequestQueue = p
        do { tables = try VTdHostTables(unit: unit, queue: q) } catch { throw .noMemory("no frames for the root table") }
        self.delivery = delivery
        unit.setTranslationEnabled(true)
        if delivery == .interruptThread {
            unit.setPageRequestInterrupt { [weak self] in self?.pageRequestInterrupt() }
        }
    }

    /// Host memory whose RAM is this process's address space: physical address = user address
    /// for `[4 KiB, 2^47)`, so the core's pinned pages are DMA targets where they are; the
    /// unit's own structures come from a 4 GiB allocator window at 2^48.
    public static func processMemory() -> PhysicalMemory {
        let window: UInt64 = 1 << 48
        let memory = PhysicalMemory(allocatorBase: window, allocatorLimit: window + (1 << 32))
        let base: UInt64 = 0x1000
        let user = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: UInt(base)),
                                                 count: Int((1 << 47) - base))
        _ = try? memory.attachRAM(at: base, external: user)
        return memory
    }

    // MARK: Devices

    /// Adds a PCI function behind the unit: programs its context entry (PASIDs, device TLB and
    /// page requests as the function and the unit support them), enables its PASID, ATS and PRI
    /// capabilities, and returns the device model to bind to a context. The driver holds it
    /// weakly: whoever uses it (a context it is bound to, the caller) keeps it alive.
    ///
    /// - Throws: `EEXIST` if the requester ID is taken, `ENOMEM` without frames.
    public func addDevice(_ function: PCIFunction) throws(IOMMUError) -> VTdDevice {
        let rid = function.requesterID
        let (exists, stale) = state.withLock { s -> (Bool, Bool) in
            guard let slot = s.devices[rid.rawValue] else { return (false, false) }
            return slot.device != nil ? (true, false) : (false, true)
        }
        if exists { throw .exists("requester ID in use") }
        if stale { try? tables.removeDevice(rid) }  // a device model that went away without removeDevice
        let device = VTdDevice(driver: self, function: function)
        do {
            try tables.addDevice(rid, pasids: device.maxPASIDs, deviceTLB: device.usesDeviceTLB,
                                 pageRequests: device.usesPageRequests)
        } catch {
            throw .noMemory("cannot program the context entry")
        }
        var control = PCIFunction.Control()
        control.pasid = device.maxPASIDs > 0
        control.ats = device.usesDeviceTLB
        control.pri = device.usesPageRequests
        control.pageRequestAllocation = device.usesPageRequests ? function.capabilities.pageRequestCapacity ?? 0 : 0
        function.control = control
        state.withLock { $0.devices[rid.rawValue] = WeakDevice(device: device) }
        return device
    }

    /// Creates a PCI function with `capabilities` behind the unit and adds it (see
    /// ``addDevice(_:)``).
    public func addDevice(requesterID: RequesterID, capabilities: PCIFunction.Capabilities = .init()) throws(IOMMUError) -> VTdDevice {
        try addDevice(PCIFunction(requesterID: requesterID, capabilities: capabilities, iommu: unit))
    }

    /// Removes a device: clears its context entry (with the invalidations that needs).
    public func removeDevice(_ device: VTdDevice) {
        _ = state.withLock { $0.devices.removeValue(forKey: device.requesterID.rawValue) }
        try? tables.removeDevice(device.requesterID)
    }

    /// The device with requester ID `rid`.
    public func device(_ rid: RequesterID) -> VTdDevice? { state.withLock { $0.devices[rid.rawValue]?.device } }

    // MARK: Domain IDs

    func allocateDomainID() throws(IOMMUError) -> UInt16 {
        let limit = unit.capability.numberOfDomains
        let id: UInt16? = state.withLock { s in
            for _ in 0..<limit {
                let candidate = s.nextDomainID
                s.nextDomainID = candidate >= UInt16(min(limit - 1, Int(UInt16.max))) ? 2 : candidate + 1
                if !s.domainIDs.contains(candidate) {
                    s.domainIDs.insert(candidate)
                    return candidate
                }
            }
            return nil
        }
        guard let id else { throw .noSpace("no free domain ID") }
        return id
    }

    /// Gives a domain ID back after dropping whatever the IOTLBs still hold for it.
    func releaseDomainID(_ did: UInt16) {
        try? queue.submit([.iotlb(.domain(did)), .pasidCache(.domain(did))])
        _ = state.withLock { $0.domainIDs.remove(did) }
    }

    /// Submits invalidations; failures are reported by the hardware's status and ignored here,
    /// as the Linux driver ignores them on its flush paths.
    func flush(_ invalidations: [VTdInvalidation]) {
        guard !invalidations.isEmpty else { return }
        try? queue.submit(invalidations)
    }

    // MARK: IOMMUDriver

    /// The Intel model: the host programs each PASID entry; page requests go to the domain
    /// attached at their PASID.
    public var userPASIDTable: Bool { false }

    /// `IOMMU_HW_INFO_TYPE_INTEL_VTD` with `struct iommu_hw_info_vtd` (the errata flag, CAP and
    /// ECAP), as the Linux intel driver reports it; `IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED` for a
    /// device without ATS, and the PASID execute/privileged bits of its PASID capability.
    ///
    /// - Throws: `EOPNOTSUPP` for another info type.
    public func hardwareInfo(device: any DeviceModel, type: UInt32?) throws(IOMMUError) -> HardwareInfo {
        if let t = type, t != VTdUAPI.hwInfoTypeDefault, t != VTdUAPI.hwInfoTypeVTd { throw .notSupported("unknown info type") }
        let info = VTdHWInfo(flags: VTdUAPI.hwInfoErrata772415, capabilityRegister: unit.capability.rawValue,
                             extendedCapabilityRegister: unit.extendedCapability.rawValue)
        var caps: UInt64 = 0
        if let d = device as? VTdDevice {
            if !d.usesDeviceTLB { caps |= VTdUAPI.capATSNotSupported }
            if d.maxPASIDs > 0 {
                if d.function.capabilities.executePermission { caps |= VTdUAPI.capPASIDExec }
                if d.function.capabilities.privilegedMode { caps |= VTdUAPI.capPASIDPriv }
            }
        } else {
            caps |= VTdUAPI.capATSNotSupported
        }
        return HardwareInfo(type: VTdUAPI.hwInfoTypeVTd, data: info.bytes, capabilities: caps)
    }

    /// Whether second-stage A/D bits are available (ECAP.SSADS and SMPWC).
    public func supportsDirtyTracking(device: any DeviceModel) -> Bool {
        unit.extendedCapability.secondStageAccessedDirty && unit.extendedCapability.scalableModePageWalkCoherency
    }

    /// Allocates a second-stage paging domain.
    ///
    /// - Throws: `EOPNOTSUPP` for driver data, flags other than NEST_PARENT, DIRTY_TRACKING and
    ///   PASID, a nesting parent without ECAP.NEST, dirty tracking without SSADS, or a unit
    ///   without second-stage translation (as the Linux driver).
    public func allocatePagingDomain(device: any DeviceModel, flags: HWPTFlags, data: DriverData?,
                                     memory: any UserMemory) throws(IOMMUError) -> any PagingDomain {
        if data != nil { throw .notSupported("VT-d paging domains take no data") }
        guard flags.isSubset(of: [.nestParent, .dirtyTracking, .pasid]) else { throw .notSupported("flags") }
        let ecap = unit.extendedCapability
        if flags.contains(.nestParent) && !ecap.nestedTranslation { throw .notSupported("no nested translation") }
        if flags.contains(.dirtyTracking) && !supportsDirtyTracking(device: device) { throw .notSupported("no dirty tracking") }
        guard ecap.secondStageTranslation else { throw .notSupported("no second-stage translation") }
        return try VTdPagingDomain(driver: self, nestParent: flags.contains(.nestParent),
                                   dirtyCapable: flags.contains(.dirtyTracking))
    }

    /// Allocates a nested domain from `struct iommu_hwpt_vtd_s1` over a nesting-parent paging
    /// domain. Its address width and flags are checked when it is attached (as the Linux driver).
    ///
    /// - Throws: `EOPNOTSUPP` without ECAP.NEST, for flags other than PASID or another data
    ///   type; `EINVAL` when the parent is not a nesting-parent VT-d domain of this unit, or the
    ///   data is shorter than 24 bytes or longer than the struct; `E2BIG` for non-zero bytes
    ///   past it; `EFAULT` when unreadable.
    public func allocateNestedDomain(device: any DeviceModel, parent: any PagingDomain, flags: HWPTFlags, data: DriverData,
                                     memory: any UserMemory) throws(IOMMUError) -> any IOMMUDomain {
        guard unit.extendedCapability.nestedTranslation, flags.isSubset(of: [.pasid]) else { throw .notSupported("flags") }
        guard data.type == VTdUAPI.hwptDataVTdS1 else { throw .notSupported("data type") }
        guard let p = parent as? VTdPagingDomain, p.driver === self, p.nestParent else {
            throw .invalid("parent is not a VT-d nesting parent")
        }
        let cfg = try data.load(VTdStage1Data.self, minimumLength: VTdStage1Data.minimumLength, memory: memory)
        return try VTdNestedDomain(parent: p, configuration: cfg)
    }

    /// The VT-d driver has no vIOMMU (as the Linux intel driver): `EOPNOTSUPP`.
    public func allocateVIOMMU(device: any DeviceModel, parent: any PagingDomain, type: UInt32, data: DriverData?,
                               memory: any UserMemory) throws(IOMMUError) -> any VIOMMUModel {
        throw .notSupported("VT-d has no vIOMMU")
    }

    // MARK: Page requests

    func pageRequestInterrupt() {
        let schedule: Bool = state.withLock { s in
            if s.serviceScheduled { return false }
            s.serviceScheduled = true
            return true
        }
        if schedule {
            serviceQueue.async { [self] in
                state.withLock { $0.serviceScheduled = false }
                servicePageRequests()
            }
        }
    }

    /// Drains the page request queue and reports each request to the core's fault queue of the
    /// domain attached at its PASID (through the context the device was bound to with
    /// ``VTdDevice/bind(to:ownedByDriver:)``), as the Linux driver's page request thread does. Requests that
    /// cannot be reported (no binding, no fault-capable domain there, a non-canonical address, a
    /// privileged request with read or write, an execute request with read) are answered with
    /// Invalid Request when they close their group; stop markers are dropped.
    ///
    /// Must not be called with a context lock held (it takes the context's lock).
    public func servicePageRequests() {
        serviceLock.withLock { _ in
            for r in pageRequestQueue.drain() { handle(r) }
        }
    }

    func handle(_ r: VTdPageRequestDescriptor) {
        if r.lastInGroup && !r.read && !r.write { return }  // stop marker
        let invalid = {
            if r.lastInGroup {
                self.flush([.pageGroupResponse(requesterID: r.requesterID, pasid: r.pasid,
                                               code: VTdInvalidation.ResponseCode.invalidRequest, groupIndex: r.groupIndex)])
            }
        }
        let canonical = Int64(bitPattern: r.address) >> 47 == 0 || Int64(bitPattern: r.address) >> 47 == -1
        guard canonical, !(r.privileged && (r.read || r.write)), !(r.execute && r.read) else { return invalid() }
        guard let device = device(RequesterID(rawValue: r.requesterID)),
              let (context, id, pasid) = device.pageRequestTarget(pasid: r.pasid) else { return invalid() }
        var perm: UInt32 = 0
        if r.read { perm |= VTdUAPI.faultPermRead }
        if r.write { perm |= VTdUAPI.faultPermWrite }
        if r.execute { perm |= VTdUAPI.faultPermExec }
        if r.privileged { perm |= VTdUAPI.faultPermPriv }
        do {
            try context.reportPageFault(device: id, pasid: pasid, group: UInt32(r.groupIndex), permissions: perm,
                                        address: r.address, last: r.lastInGroup)
        } catch {
            invalid()
        }
    }
}
