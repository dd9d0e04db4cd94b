// The VT-d driver's domains: second-stage paging domains and nested (guest stage-1) domains.
//
// Each domain has its own domain ID. A domain knows where it is attached (device, PASID) and a
// paging domain knows the nested domains over it, so that a change flushes exactly the caches
// that may hold its translations — the Linux driver's cache tags:
//   paging domain, unmap / dirty clear of [first, last]:
//     IOTLB page-selective (domain-selective above MAMV) for its DID and for each nested
//     child's DID (which drops the child's combined entries), device-TLB for the range for each
//     directly attached device with ATS, the whole device TLB for each child's device with ATS;
//   nested domain, IOMMU_HWPT_INVALIDATE of [addr, addr + npages·4K):
//     PASID-based IOTLB (page-selective, or PASID-selective for everything) for its DID and each
//     attached PASID, PASID-based (or, at the RID, plain) device-TLB for the range.

import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

/// A domain that wants to know where it is attached.
protocol VTdDomainAttachments: AnyObject {
    func added(_ device: VTdDevice, pasid: UInt32?)
    func removed(_ device: VTdDevice, pasid: UInt32?)
}

/// One attachment of a domain.
struct VTdAttachment {
    let device: VTdDevice
    let pasid: UInt32?
}

/// A VT-d second-stage paging domain: IOVA → host-physical addresses, which are the user
/// addresses of the core's pinned pages.
public final class VTdPagingDomain: PagingDomain, VTdDomainAttachments, @unchecked Sendable {
    /// The driver.
    public let driver: VTdDriver
    /// The domain ID that tags its translations.
    public let domainID: UInt16
    /// Allocated with `IOMMU_HWPT_ALLOC_NEST_PARENT`: read-only mappings are made writeable
    /// (errata 772415, as the Linux driver does).
    public let nestParent: Bool
    /// Allocated with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`.
    public let dirtyCapable: Bool
    /// The second-stage table.
    public let table: PageTable<VTdSecondStageFormat>

    struct Extent { var source: MappedPages; var readable: Bool; var writable: Bool }
    struct Child { weak var domain: VTdNestedDomain? }
    struct State {
        var attachments: [VTdAttachment] = []
        var children: [Child] = []
        var extents = IntervalMap<Extent>()
        var dirtyTracking = false
    }
    let state = Locked(State())

    init(driver: VTdDriver, nestParent: Bool, dirtyCapable: Bool) throws(IOMMUError) {
        let c = driver.unit.configuration
        let format = VTdSecondStageFormat(addressWidth: 48, hostAddressWidth: c.hostAddressWidth, accessedDirtyEnabled: true,
                                          supports2MiB: c.secondStage2MiBPages, supports1GiB: c.secondStage1GiBPages)
        do { table = try PageTable(memory: driver.unit.memory, format: format) } catch { throw .noMemory("no frame for the table") }
        do { domainID = try driver.allocateDomainID() } catch {
            driver.unit.memory.freeFrame(table.root)
            throw error
        }
        self.driver = driver
        self.nestParent = nestParent
        self.dirtyCapable = dirtyCapable
    }

    deinit {
        driver.releaseDomainID(domainID)
        // Unattached and flushed (every unmap flushed before it returned): retired tables can go.
        _ = table.reclaimFreedTables()
        if !table.isAnyMapped(iova: 0, size: 1 << 48) { driver.unit.memory.freeFrame(table.root) }
    }

    /// Whether dirty tracking is on (SSADE in its PASID entries).
    public var dirtyTracking: Bool { state.withLock { $0.dirtyTracking } }

    /// The PASID entry that attaches this domain (PGTT second stage).
    func pasidEntry() -> VTdPASIDEntry {
        var e = VTdPASIDEntry()
        e.secondStageTable = table.root
        e.addressWidth = 2
        e.pgtt = .secondStage
        e.domainID = domainID
        e.pageWalkSnoop = true
        e.secondStageAccessedDirtyEnable = dirtyTracking
        e.present = true
        return e
    }

    // MARK: PagingDomain

    /// 4 KiB, and 2 MiB / 1 GiB as CAP.SSLPS allows.
    public var pageSizes: UInt64 {
        let c = driver.unit.capability.secondStageLargePageSupport
        return 0x1000 | (c & 1 != 0 ? 0x20_0000 : 0) | (c & 2 != 0 ? 0x4000_0000 : 0)
    }

    /// `[0, 2^48)`: a 4-level second stage (MGAW 48).
    public var aperture: IOVARange { IOVARange(start: 0, last: (1 << 48) - 1) }

    /// Maps `length` bytes at `iova` to the pinned pages of `source`.
    ///
    /// - Throws: `EEXIST` if part of it is mapped, `EINVAL` for a misaligned or out-of-range
    ///   span or no access at all, `ENOMEM` without table frames.
    public func map(iova: UInt64, length: UInt64, source: MappedPages, readable: Bool, writable: Bool) throws(IOMMUError) {
        var permissions: VTdSecondStagePermissions = []
        if readable { permissions.insert(.read) }
        if writable || (nestParent && readable) { permissions.insert(.write) }
        guard !permissions.isEmpty else { throw .invalid("a mapping needs read or write") }
        let host = source.pages.hostAddress(source.offset)
        do {
            try table.map(iova: iova, physical: host, size: length, permissions: permissions)
        } catch {
            switch error {
            case .alreadyMapped: throw .exists("IOVA already mapped")
            case .outOfMemory: throw .noMemory("no frames for the table")
            default: throw .invalid("cannot map the span")
            }
        }
        guard let r = IOVARange(start: iova, length: length) else { return }
        state.withLock { _ = $0.extents.insert(r, Extent(source: source, readable: readable, writable: writable)) }
        // A not-present → present change needs no invalidation (CAP.CM = 0).
    }

    /// Unmaps `length` bytes at `iova` and flushes every cache that may hold them.
    public func unmap(iova: UInt64, length: UInt64) {
        guard let r = IOVARange(start: iova, length: length) else { return }
        _ = try? table.unmap(iova: iova, size: length)
        // Tables the unmap emptied are retired; they go back to the allocator once the flush
        // below has completed (no walk can hold their address any more).
        let epoch = table.closeRetirementEpoch()
        defer { _ = table.reclaimFreedTables(through: epoch) }
        state.withLock { s in
            while let i = s.extents.firstIndex(overlapping: r) {
                let e = s.extents.remove(at: i)
                if e.range.start < r.start { s.extents.insert(IOVARange(start: e.range.start, last: r.start - 1), e.value) }
                if e.range.last > r.last {
                    var v = e.value
                    v.source = MappedPages(pages: v.source.pages, offset: v.source.offset + (r.last + 1 - e.range.start))
                    s.extents.insert(IOVARange(start: r.last + 1, last: e.range.last), v)
                }
            }
        }
        flush(first: r.start, last: r.last)
    }

    /// Where `iova` points, if mapped.
    public func translate(_ iova: UInt64) -> (source: MappedPages, readable: Bool, writable: Bool)? {
        state.withLock { s in
            guard let e = s.extents.entry(containing: iova) else { return nil }
            return (MappedPages(pages: e.value.source.pages, offset: e.value.source.offset + (iova - e.range.start)),
                    e.value.readable, e.value.writable)
        }
    }

    /// Whether the domain was allocated for dirty tracking.
    public var supportsDirtyTracking: Bool { dirtyCapable }

    /// Sets or clears SSADE in every PASID entry that uses this domain (directly or as the
    /// parent of a nested domain), with the invalidations that needs.
    ///
    /// - Throws: `EINVAL` for a domain not allocated for dirty tracking.
    public func setDirtyTracking(_ enabled: Bool) throws(IOMMUError) {
        if enabled && !dirtyCapable { throw .invalid("domain cannot track dirty pages") }
        let targets: [VTdAttachment]? = state.withLock { s in
            if s.dirtyTracking == enabled { return nil }
            s.dirtyTracking = enabled
            return s.attachments + s.children.compactMap(\.domain).flatMap(\.attachments)
        }
        for a in targets ?? [] {
            try? driver.tables.updatePASIDEntry(a.device.requesterID, pasid: a.device.tableSlot(a.pasid)) {
                $0.secondStageAccessedDirtyEnable = enabled
            }
        }
    }

    /// Reports the dirty leaves in `[iova, iova+length)` (D set by the second-stage walker) and
    /// clears D unless `keep`, then flushes the range so the next write sets D again.
    public func readAndClearDirty(iova: UInt64, length: UInt64, keep: Bool, mark: (UInt64, UInt64) -> Void) throws(IOMMUError) {
        guard let r = IOVARange(start: iova, length: length) else { throw .overflow("IOVA + length overflows") }
        let dirty: [DirtyRange]
        do { dirty = try table.readAndClearDirty(iova: iova, size: length, clear: !keep) } catch {
            throw .invalid("span is not page aligned")
        }
        for d in dirty {
            let s = max(d.iova, r.start), l = min(d.iova &+ d.length &- 1, r.last)
            if s <= l { mark(s, l - s + 1) }
        }
        if !keep && !dirty.isEmpty { flush(first: r.start, last: r.last) }
    }

    // MARK: Attachments and flushes

    func added(_ device: VTdDevice, pasid: UInt32?) {
        state.withLock { $0.attachments.append(VTdAttachment(device: device, pasid: pasid)) }
    }

    func removed(_ device: VTdDevice, pasid: UInt32?) {
        state.withLock { $0.attachments.removeAll { $0.device === device && $0.pasid == pasid } }
    }

    func addChild(_ nested: VTdNestedDomain) {
        state.withLock { s in
            s.children.removeAll { $0.domain == nil }
            s.children.append(Child(domain: nested))
        }
    }

    func removeChild(_ nested: VTdNestedDomain) {
        state.withLock { $0.children.removeAll { $0.domain == nil || $0.domain === nested } }
    }

    /// Flushes `[first, last]` from every cache that may hold this domain's translations.
    func flush(first: UInt64, last: UInt64) {
        let (attachments, children) = state.withLock { s in (s.attachments, s.children.compactMap(\.domain)) }
        let childAttachments = children.map { ($0.domainID, $0.attachments) }.filter { !$0.1.isEmpty }
        guard !attachments.isEmpty || !childAttachments.isEmpty else { return }
        let range = VTdPageRange.covering(first: first, last: last)
        let cap = driver.unit.capability
        func iotlb(_ did: UInt16) -> VTdInvalidation {
            Int(range.mask) > cap.maximumAddressMaskValue || !cap.pageSelectiveInvalidation
                ? .iotlb(.domain(did)) : .iotlb(.page(did, range))
        }
        var invs: [VTdInvalidation] = []
        if !attachments.isEmpty { invs.append(iotlb(domainID)) }
        for (did, _) in childAttachments { invs.append(iotlb(did)) }
        for a in attachments where a.device.usesDeviceTLB {
            invs.append(a.device.deviceTLBInvalidation(pasid: a.pasid, range: VTdDeviceTLBRange(address: range.first, order: Int(range.mask))))
        }
        for (_, list) in childAttachments {
            for a in list where a.device.usesDeviceTLB {
                invs.append(a.device.deviceTLBInvalidation(pasid: a.pasid, range: VTdDeviceTLBRange(address: 0, order: 52)))
            }
        }
        driver.flush(invs)
    }
}

extension VTdDevice {
    /// The device-TLB invalidation of `range` for `pasid` (nil: requests without PASID).
    func deviceTLBInvalidation(pasid: UInt32?, range: VTdDeviceTLBRange) -> VTdInvalidation {
        let sid = requesterID.rawValue
        if let pasid {
            return .pasidDeviceTLB(sourceID: sid, physicalFunction: sid, pasid: pasid, maxPending: 0, global: false, range: range)
        }
        return .deviceTLB(sourceID: sid, physicalFunction: sid, maxPending: 0, range: range)
    }
}

/// A nested domain: the guest's first-stage table (`struct iommu_hwpt_vtd_s1`) over a VT-d
/// nesting-parent paging domain, attached as PGTT nested.
public final class VTdNestedDomain: IOMMUDomain, VTdDomainAttachments, @unchecked Sendable {
    /// The stage-2 parent.
    public let parent: VTdPagingDomain
    /// The guest's stage-1 configuration.
    public let configuration: VTdStage1Data
    /// The domain ID that tags its combined translations.
    public let domainID: UInt16
    let state = Locked<[VTdAttachment]>([])

    init(parent: VTdPagingDomain, configuration: VTdStage1Data) throws(IOMMUError) {
        self.parent = parent
        self.configuration = configuration
        domainID = try parent.driver.allocateDomainID()
        parent.addChild(self)
    }

    deinit {
        parent.removeChild(self)
        parent.driver.releaseDomainID(domainID)
    }

    var attachments: [VTdAttachment] { state.withLock { $0 } }

    func added(_ device: VTdDevice, pasid: UInt32?) { state.withLock { $0.append(VTdAttachment(device: device, pasid: pasid)) } }
    func removed(_ device: VTdDevice, pasid: UInt32?) {
        state.withLock { $0.removeAll { $0.device === device && $0.pasid == pasid } }
    }

    /// The PASID entry that attaches this domain (PGTT nested), checked against the unit as the
    /// Linux driver checks it when it attaches.
    ///
    /// - Throws: `EINVAL` for an address width other than 48 or 57, 57 without FS5LP, SRE
    ///   without ECAP.SRS, EAFE without ECAP.EAFS.
    func pasidEntry() throws(IOMMUError) -> VTdPASIDEntry {
        let unit = parent.driver.unit
        let c = configuration
        switch c.addressWidth {
        case 48: break
        case 57: guard unit.capability.firstStage5LevelPaging else { throw .invalid("5-level paging not supported") }
        default: throw .invalid("invalid stage-1 address width")
        }
        if c.flags & VTdUAPI.s1SupervisorRequests != 0 && !unit.extendedCapability.supervisorRequests {
            throw .invalid("no supervisor request support")
        }
        if c.flags & VTdUAPI.s1ExtendedAccessedFlag != 0 && !unit.extendedCapability.extendedAccessedFlag {
            throw .invalid("no extended access flag support")
        }
        var e = VTdPASIDEntry()
        if c.addressWidth == 57 { e.firstStagePagingMode = 1 }
        e.firstStageTable = c.pageTableAddress
        if c.flags & VTdUAPI.s1SupervisorRequests != 0 {
            e.supervisorRequestEnable = true
            if c.flags & VTdUAPI.s1WriteProtect != 0 { e.writeProtectEnable = true }
        }
        if c.flags & VTdUAPI.s1ExtendedAccessedFlag != 0 { e.extendedAccessedFlagEnable = true }
        e.secondStageTable = parent.table.root
        e.domainID = domainID
        e.addressWidth = 2
        e.pageWalkSnoop = true
        e.secondStageAccessedDirtyEnable = parent.dirtyTracking
        e.pgtt = .nested
        e.present = true
        return e
    }

    /// Handles `IOMMU_HWPT_INVALIDATE` with `IOMMU_HWPT_INVALIDATE_DATA_VTD_S1` entries as the
    /// Linux driver does: each entry becomes PASID-based IOTLB invalidations for every PASID the
    /// domain is attached at, and device-TLB invalidations for devices with ATS; `handled`
    /// counts the entries done.
    ///
    /// - Throws: `EINVAL` for another data type, an entry length shorter than 24 bytes or
    ///   longer than the struct, an address not 4 KiB aligned, or `npages` = U64_MAX with a
    ///   non-zero address; `EOPNOTSUPP` for unknown flags or a non-zero reserved field; `EFAULT`
    ///   when an entry cannot be read. Processing stops at the first bad entry.
    public func invalidate(_ entries: DriverArray, memory: any UserMemory, handled: inout UInt32) throws(IOMMUError) {
        guard entries.type == VTdUAPI.invalidateDataVTdS1 else { throw .invalid("invalidation data type") }
        for i in 0..<entries.count {
            let e = try entries.load(VTdStage1Invalidation.self, at: i, minimumLength: VTdStage1Invalidation.minimumLength,
                                     memory: memory)
            guard e.flags & ~VTdUAPI.invalidateLeaf == 0, e.reserved == 0 else { throw .notSupported("invalidation flags") }
            guard e.address & 0xFFF == 0, !(e.pageCount == .max && e.address != 0) else { throw .invalid("invalidation address") }
            let last = e.address &+ (e.pageCount &<< 12) &- 1
            flush(VTdPageRange.covering(first: e.address, last: last, invalidationHint: e.flags & VTdUAPI.invalidateLeaf != 0))
            handled += 1
        }
    }

    /// Flushes `range` of this domain's first stage from the IOTLB and the device TLBs.
    func flush(_ range: VTdPageRange) {
        var invs: [VTdInvalidation] = []
        for a in attachments {
            let slot = a.device.tableSlot(a.pasid)
            invs.append(range.mask >= 52 ? .pasidIOTLB(.pasid(domainID, slot)) : .pasidIOTLB(.page(domainID, slot, range)))
            if a.device.usesDeviceTLB {
                invs.append(a.device.deviceTLBInvalidation(pasid: a.pasid,
                                                           range: VTdDeviceTLBRange(address: range.first, order: Int(range.mask))))
            }
        }
        parent.driver.flush(invs)
    }
}
