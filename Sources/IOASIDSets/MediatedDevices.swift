// Mediated and vDPA devices on PASIDs handed out by the IOASID layer.
// Upstream Linux never let them use a PASID; here each is a `DeviceModel` like a physical
// function, so it binds and attaches through the same core API.
import IOASIDCore
import IOASIDStructures

/// A PCI function that hosts mediated devices. Each mediated device gets its own PASID from the
/// host allocator (in `set`, the parent driver's set) and its DMA carries the parent's RID plus
/// that PASID, so it reaches only the address space attached to the mediated device.
public final class MediatedParent: Sendable {
    /// The parent function as its IOMMU driver sees it; mediated devices attach through it.
    public let function: any DeviceModel
    /// The allocator the mediated devices' PASIDs come from.
    public let allocator: PASIDAllocator
    /// The parent driver's set.
    public let set: IOASIDSetID
    private let children = Locked<[PASID: MediatedDevice]>([:])

    /// Hosts mediated devices on `function`. - Throws: `EINVAL` if the function has no PASID capability.
    public init(function: any DeviceModel, allocator: PASIDAllocator, set: IOASIDSetID) throws(IOMMUError) {
        guard function.maxPASIDs > 1 else { throw .invalid("the parent function has no PASID capability") }
        self.function = function
        self.allocator = allocator
        self.set = set
    }

    /// Creates a mediated device on the lowest free PASID the function can carry.
    /// - Throws: `ENOSPC` when the set's quota or the function's PASID space is used up.
    public func createDevice() throws(IOMMUError) -> MediatedDevice {
        let pasid = try allocator.alloc(in: set, min: 1, max: min(function.maxPASIDs - 1, allocator.maxPASID))
        _ = try allocator.get(pasid, in: set)
        let device = MediatedDevice(parent: self, pasid: pasid)
        children.withLock { $0[pasid] = device }
        try? allocator.notifyBind(pasid, in: set, device: nil)
        return device
    }

    /// Removes a mediated device and frees its PASID.
    /// - Throws: `EBUSY` while it is attached (unbind it from its context first); `ENOENT` if not ours.
    public func removeDevice(_ device: MediatedDevice) throws(IOMMUError) {
        guard device.parent === self, children.withLock({ $0[device.pasid] }) === device else {
            throw .noEntry("not a mediated device of this parent")
        }
        guard !device.isAttached else { throw .busy("the mediated device is attached") }
        children.withLock { $0[device.pasid] = nil }
        try? allocator.notifyUnbind(device.pasid, in: set, device: nil)
        try allocator.free(device.pasid, in: set)
        _ = try allocator.put(device.pasid, in: set)
    }

    /// The mediated devices, by PASID.
    public var devices: [MediatedDevice] { children.withLock { c in c.keys.sorted().map { c[$0]! } } }

    /// The mediated device a page request or fault for `pasid` of the parent belongs to.
    public func device(for pasid: PASID) -> MediatedDevice? { children.withLock { $0[pasid] } }
}

/// A mediated device: to the core a device without PASIDs of its own, attached by "RID"; to the
/// IOMMU a PASID of its parent function. Attaching it programs the parent's PASID entry.
public final class MediatedDevice: DeviceModel, Sendable {
    /// The parent it lives on.
    public let parent: MediatedParent
    /// The PASID the IOASID layer gave it; its DMA is tagged with it.
    public let pasid: PASID
    private let attached = Locked(false)

    init(parent: MediatedParent, pasid: PASID) {
        self.parent = parent
        self.pasid = pasid
    }

    /// Whether an address space is attached.
    public var isAttached: Bool { attached.withLock { $0 } }
    public var driver: any IOMMUDriver { parent.function.driver }
    /// A mediated device exposes no PASID capability of its own.
    public var maxPASIDs: UInt32 { 0 }
    public var refusesFaultDomains: Bool { parent.function.refusesFaultDomains }
    /// Domains are allocated for the parent function.
    public var iommuDevice: any DeviceModel { parent.function.iommuDevice }

    public func attach(_ domain: any IOMMUDomain, pasid: PASID?, replacing: (any IOMMUDomain)?) throws(IOMMUError) {
        guard pasid == nil else { throw .invalid("a mediated device has no PASIDs of its own") }
        try parent.function.attach(domain, pasid: self.pasid, replacing: replacing)
        attached.withLock { $0 = true }
    }

    public func detach(pasid: PASID?) {
        guard pasid == nil else { return }
        parent.function.detach(pasid: self.pasid)
        attached.withLock { $0 = false }
    }

    public func pageResponse(pasid: PASID?, group: UInt32, code: UInt32) {
        parent.function.pageResponse(pasid: self.pasid, group: group, code: code)
    }

    /// Page requests the parent's IOMMU reports for this device's PASID come here (when the
    /// parent's driver can route them: `PASIDHostingDevice`).
    public func bound(to context: Context, as device: Device.ID) {
        (parent.function as? any PASIDHostingDevice)?.route(pasid: pasid, to: context, as: device)
    }

    public func unbound(from context: Context, as device: Device.ID) {
        (parent.function as? any PASIDHostingDevice)?.unroute(pasid: pasid)
    }
}

/// A vDPA device: virtqueues in groups, each group's DMA tagged with a PASID of the parent
/// function that the owner took from its IOASID set and assigned with ``assign(pasid:to:)``.
///
/// To the core it is a PASID-capable device: the owner attaches an address space at each group's
/// PASID (authorized by its set). As vhost-vdpa does for a group's address space, changing the
/// assignment or the address space of an assigned PASID while the device runs (`DRIVER_OK`) is
/// refused with `EBUSY`. (A detach cannot be refused by the core's protocol: detaching while
/// running leaves the group's DMA blocked until an address space is attached again.)
public final class VDPADevice: DeviceModel, Sendable {
    /// The function whose DMA the device issues.
    public let function: any DeviceModel
    /// The number of virtqueue groups.
    public let groupCount: Int
    /// Virtqueue index → group.
    public let virtqueueGroups: [Int]
    private struct State { var pasids: [PASID?]; var running = false; var attached: Set<PASID> = [] }
    private let state: Locked<State>

    /// A vDPA device on `function` with `virtqueueGroups[i]` the group of virtqueue `i`.
    /// - Throws: `EINVAL` without a PASID-capable function, or with a group index out of range.
    public init(function: any DeviceModel, groupCount: Int, virtqueueGroups: [Int]) throws(IOMMUError) {
        guard function.maxPASIDs > 1 else { throw .invalid("the function has no PASID capability") }
        guard groupCount > 0, virtqueueGroups.allSatisfy({ (0..<groupCount).contains($0) }) else {
            throw .invalid("virtqueue group out of range")
        }
        self.function = function
        self.groupCount = groupCount
        self.virtqueueGroups = virtqueueGroups
        state = Locked(State(pasids: Array(repeating: nil, count: groupCount)))
    }

    /// Tags group `group`'s DMA with `pasid` (nil: none, its DMA is blocked).
    /// - Throws: `EINVAL` bad group or a PASID used by another group; `EBUSY` while running.
    public func assign(pasid: PASID?, to group: Int) throws(IOMMUError) {
        try state.withLock { (s) throws(IOMMUError) in
            guard (0..<groupCount).contains(group) else { throw .invalid("no such virtqueue group") }
            guard !s.running else { throw .busy("the device is running (DRIVER_OK)") }
            if let pasid, s.pasids.enumerated().contains(where: { $0.offset != group && $0.element == pasid }) {
                throw .invalid("the PASID belongs to another group")
            }
            s.pasids[group] = pasid
        }
    }

    /// The PASID group `group`'s DMA carries, if assigned.
    public func pasid(ofGroup group: Int) -> PASID? { state.withLock { s in s.pasids.indices.contains(group) ? s.pasids[group] : nil } }
    /// The PASID virtqueue `index`'s DMA carries.
    public func pasid(ofVirtqueue index: Int) -> PASID? { pasid(ofGroup: virtqueueGroups[index]) }

    /// Sets `DRIVER_OK`: address spaces of the groups are frozen.
    public func start() { state.withLock { $0.running = true } }
    /// Resets the device: address spaces may change again.
    public func reset() { state.withLock { $0.running = false } }
    /// Whether the device is running.
    public var isRunning: Bool { state.withLock { $0.running } }

    public var driver: any IOMMUDriver { function.driver }
    public var maxPASIDs: UInt32 { function.maxPASIDs }
    public var refusesFaultDomains: Bool { function.refusesFaultDomains }
    /// Domains are allocated for the function.
    public var iommuDevice: any DeviceModel { function.iommuDevice }

    public func attach(_ domain: any IOMMUDomain, pasid: PASID?, replacing: (any IOMMUDomain)?) throws(IOMMUError) {
        try state.withLock { (s) throws(IOMMUError) in
            if let pasid, s.running, s.pasids.contains(pasid) {
                throw .busy("a running vDPA device cannot change a group's address space")
            }
        }
        try function.attach(domain, pasid: pasid, replacing: replacing)
        if let pasid { state.withLock { _ = $0.attached.insert(pasid) } }
    }

    public func detach(pasid: PASID?) {
        function.detach(pasid: pasid)
        if let pasid { state.withLock { _ = $0.attached.remove(pasid) } }
    }

    public func pageResponse(pasid: PASID?, group: UInt32, code: UInt32) {
        function.pageResponse(pasid: pasid, group: group, code: code)
    }
}
