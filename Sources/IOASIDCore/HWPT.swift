import IOASIDStructures

/// A hardware page table ("domain"): paging (filled from an IOAS) or nested (a guest stage-1
/// table over a paging parent). The kernel's `iommufd_hw_pagetable`.
public class HWPT: IOMMUObject, @unchecked Sendable {
    /// The typed ID of this kind of object.
    public typealias ID = TypedID<HWPT>
    /// The driver's domain.
    public let baseDomain: any IOMMUDomain
    /// Whether the HWPT may be attached to a PASID (`IOMMU_HWPT_ALLOC_PASID`).
    public let pasidCompatible: Bool
    /// The fault queue I/O page faults go to, if any.
    public internal(set) var fault: FaultQueue?

    init(kind: ObjectKind, domain: any IOMMUDomain, pasidCompatible: Bool) {
        self.baseDomain = domain
        self.pasidCompatible = pasidCompatible
        super.init(kind: kind)
    }

    public var id: ID { ID(objectID) }

    /// The paging HWPT whose IOAS this one translates through: itself, or a nested HWPT's
    /// parent (the kernel's `find_hwpt_paging`); nil for an SVA table.
    var pagingBase: HWPTPaging? {
        switch self {
        case let paging as HWPTPaging: paging
        case let nested as HWPTNested: nested.parent
        default: nil
        }
    }

    override public func destroyed(in state: ContextState) {
        if let f = fault { f.users -= 1; fault = nil }
    }
}

/// A paging HWPT, mirroring the areas of its IOAS.
public final class HWPTPaging: HWPT, @unchecked Sendable {
    public let domain: any PagingDomain
    public let ioas: IOAS
    /// Created by attaching a device to an IOAS (destroyed with its last device).
    public internal(set) var isAutoDomain = false
    /// May be the parent of nested HWPTs.
    public let isNestParent: Bool
    /// Whether dirty tracking was requested at allocation.
    public let dirtyTrackingRequested: Bool

    init(domain: any PagingDomain, ioas: IOAS, flags: HWPTFlags) {
        self.domain = domain
        self.ioas = ioas
        isNestParent = flags.contains(.nestParent)
        dirtyTrackingRequested = flags.contains(.dirtyTracking)
        super.init(kind: .hwptPaging, domain: domain, pasidCompatible: flags.contains(.pasid))
    }

    override public func destroyed(in state: ContextState) {
        state.removeDomain(self)
        ioas.hwpts.removeAll { $0 === self }
        ioas.users -= 1
        super.destroyed(in: state)
    }
}

/// A nested HWPT: a guest-owned stage-1 table over a paging parent (or a vIOMMU).
public final class HWPTNested: HWPT, @unchecked Sendable {
    public let parent: HWPTPaging
    public let viommu: VIOMMU?

    init(domain: any IOMMUDomain, parent: HWPTPaging, viommu: VIOMMU?, flags: HWPTFlags) {
        self.parent = parent
        self.viommu = viommu
        super.init(kind: .hwptNested, domain: domain, pasidCompatible: flags.contains(.pasid))
    }

    override public func destroyed(in state: ContextState) {
        if let v = viommu { v.users -= 1 } else { parent.users -= 1 }
        super.destroyed(in: state)
    }
}

extension PagingDomain {
    /// The smallest supported page size.
    public var minimumPageSize: UInt64 { UInt64(1) << UInt64(pageSizes.trailingZeroBitCount) }
}

extension ContextState {
    /// Adds a paging HWPT to its IOAS: raises the alignment, reserves what lies outside the
    /// aperture, pins and maps every area.
    func addDomain(_ hwpt: HWPTPaging) throws(IOMMUError) {
        let ioas = hwpt.ioas
        let pageSize = options.pageSize
        let newAlignment = max(hwpt.domain.minimumPageSize, ioas.table.iovaAlignment)
        guard newAlignment <= pageSize else { throw .invalid("domain page size is larger than PAGE_SIZE") }
        if newAlignment != ioas.table.iovaAlignment, !ioas.table.areasConform(to: newAlignment, pageSize: pageSize) {
            throw .addressInUse("existing areas are not aligned for the domain")
        }
        let owner = ReservedOwner.domain(ObjectIdentifier(hwpt))
        let aperture = hwpt.domain.aperture
        do throws(IOMMUError) {
            if aperture.start != 0 { try ioas.table.reserve(IOVARange(start: 0, last: aperture.start - 1), owner: owner) }
            if aperture.last != .max { try ioas.table.reserve(IOVARange(start: aperture.last + 1, last: .max), owner: owner) }
        } catch {
            ioas.table.removeReserved(owner: owner)
            throw error
        }
        // Fill: areas already pinned for other domains only need mapping.
        var filled: [UInt64] = []
        do throws(IOMMUError) {
            for i in 0..<ioas.table.areas.count {
                let e = ioas.table.areas[i]
                let length = e.range.last - e.range.start + 1
                if !e.value.pinnedForDomains {
                    try e.value.pages.pin(offset: e.value.pagesOffset, length: length, state: self)
                    ioas.table.areas[i].value.pinnedForDomains = true
                }
                do throws(IOMMUError) {
                    try hwpt.domain.map(iova: e.range.start, length: length,
                                        source: MappedPages(pages: e.value.pages, offset: e.value.pagesOffset),
                                        readable: e.value.readable, writable: e.value.writable)
                } catch {
                    if ioas.table.domains.isEmpty {
                        e.value.pages.unpin(offset: e.value.pagesOffset, length: length, state: self)
                        ioas.table.areas[i].value.pinnedForDomains = false
                    }
                    throw error
                }
                filled.append(e.range.start)
            }
        } catch {
            for iova in filled {
                guard let i = ioas.table.areas.index(containing: iova) else { continue }
                let e = ioas.table.areas[i]
                let length = e.range.last - e.range.start + 1
                hwpt.domain.unmap(iova: e.range.start, length: length)
                if ioas.table.domains.isEmpty {
                    e.value.pages.unpin(offset: e.value.pagesOffset, length: length, state: self)
                    ioas.table.areas[i].value.pinnedForDomains = false
                }
            }
            ioas.table.removeReserved(owner: owner)
            throw error
        }
        ioas.table.iovaAlignment = newAlignment
        ioas.table.domains.append(hwpt)
    }

    /// Removes a paging HWPT from its IOAS: unmaps it, unpins areas no domain needs, lowers the alignment.
    func removeDomain(_ hwpt: HWPTPaging) {
        let ioas = hwpt.ioas
        guard let index = ioas.table.domains.firstIndex(where: { $0 === hwpt }) else { return }
        ioas.table.domains.remove(at: index)
        for i in 0..<ioas.table.areas.count {
            let e = ioas.table.areas[i]
            let length = e.range.last - e.range.start + 1
            hwpt.domain.unmap(iova: e.range.start, length: length)
            if ioas.table.domains.isEmpty, e.value.pinnedForDomains {
                e.value.pages.unpin(offset: e.value.pagesOffset, length: length, state: self)
                ioas.table.areas[i].value.pinnedForDomains = false
            }
        }
        ioas.table.removeReserved(owner: .domain(ObjectIdentifier(hwpt)))
        let a = ioas.table.requiredAlignment(pageSize: options.pageSize)
        if a <= ioas.table.iovaAlignment || ioas.table.areasConform(to: a, pageSize: options.pageSize) {
            ioas.table.iovaAlignment = a
        }
    }

    /// Allocates a paging HWPT on `ioas` for `device`, optionally attaching it first
    /// (auto domains attach before they are filled, as the kernel does).
    func allocatePaging(ioas: IOAS, device: Device, pasid: PASID?, flags: HWPTFlags, data: DriverData?,
                        attachImmediately: Bool) throws(IOMMUError) -> HWPTPaging {
        guard flags.isSubset(of: .all) else { throw .notSupported("unknown HWPT flags") }
        if flags.contains(.dirtyTracking), !device.model.driver.supportsDirtyTracking(device: device.model.iommuDevice) {
            throw .notSupported("the IOMMU cannot track dirty pages")
        }
        if flags.contains(.faultIDValid), flags.contains(.nestParent) {
            throw .notSupported("a nesting parent cannot take faults")
        }
        let domain = try device.model.driver.allocatePagingDomain(device: device.model.iommuDevice, flags: flags.subtracting(.faultIDValid),
                                                                  data: data, memory: memory)
        let hwpt = HWPTPaging(domain: domain, ioas: ioas, flags: flags)
        reserve(hwpt)
        ioas.users += 1
        if attachImmediately {
            do throws(IOMMUError) { try attachHWPT(hwpt, device: device, pasid: pasid) } catch {
                ioas.users -= 1
                abort(hwpt)
                throw error
            }
        }
        do throws(IOMMUError) { try addDomain(hwpt) } catch {
            if attachImmediately { _ = detachHWPT(device: device, pasid: pasid) }
            ioas.users -= 1
            abort(hwpt)
            throw error
        }
        ioas.hwpts.append(hwpt)
        return hwpt
    }
}

extension Context {
    /// Allocates a HWPT for `device`: a paging HWPT when `parent` is an IOAS, a nested HWPT when
    /// it is a nesting-parent paging HWPT or a vIOMMU. The corresponding ioctl is `IOMMU_HWPT_ALLOC`.
    ///
    /// - Throws: `EINVAL` for a parent of another kind or a bad data/length pairing;
    ///   `EOPNOTSUPP` for unknown flags, an unsupported data type or dirty tracking the IOMMU lacks;
    ///   `ENOENT` for a missing device or fault queue.
    public func allocateHWPT(device: Device.ID, parent: ObjectID, flags: HWPTFlags, data: DriverData?,
                             faultQueue: ObjectID? = nil) throws(IOMMUError) -> HWPT.ID {
        if let d = data, (d.type == 0) != (d.length == 0) { throw .invalid("data type and length disagree") }
        return try locked { s throws(IOMMUError) in
            try FaultInjection.check(.allocation(.hwptPaging))
            let dev = try s.object(device.object, as: Device.self)
            let pt: IOMMUObject
            do throws(IOMMUError) { pt = try s.object(parent) } catch { throw .invalid("no such parent object") }
            let data = (data?.length ?? 0) == 0 ? nil : data
            let hwpt: HWPT
            switch pt {
            case let ioas as IOAS:
                hwpt = try s.allocatePaging(ioas: ioas, device: dev, pasid: nil, flags: flags, data: data, attachImmediately: false)
            case let paging as HWPTPaging:
                guard flags.isSubset(of: [.faultIDValid, .pasid]), let data else { throw .notSupported("flags or data not valid for nesting") }
                guard !paging.isAutoDomain, paging.isNestParent else { throw .invalid("parent is not a nesting parent") }
                let domain = try dev.model.driver.allocateNestedDomain(device: dev.model.iommuDevice, parent: paging.domain,
                                                                       flags: flags.subtracting(.faultIDValid), data: data, memory: s.memory)
                let nested = HWPTNested(domain: domain, parent: paging, viommu: nil, flags: flags)
                s.reserve(nested)
                paging.users += 1
                hwpt = nested
            case let viommu as VIOMMU:
                guard viommu.driver === dev.model.driver else { throw .invalid("vIOMMU is of another IOMMU") }
                guard flags.isSubset(of: [.faultIDValid, .pasid]) else { throw .notSupported("flags not valid for nesting") }
                guard let data else { throw .notSupported("nesting needs data") }
                let domain = try viommu.model.allocateNestedDomain(flags: flags.subtracting(.faultIDValid), data: data, memory: s.memory)
                let nested = HWPTNested(domain: domain, parent: viommu.parent, viommu: viommu, flags: flags)
                s.reserve(nested)
                viommu.users += 1
                hwpt = nested
            default:
                throw .invalid("parent must be an IOAS, a paging HWPT or a vIOMMU")
            }
            if flags.contains(.faultIDValid) {
                do throws(IOMMUError) {
                    let f = try s.object(faultQueue ?? ObjectID(0), as: FaultQueue.self)
                    hwpt.fault = f
                    f.users += 1
                } catch {
                    s.abortHWPT(hwpt)
                    throw error
                }
            }
            s.publish(hwpt)
            return hwpt.id
        }
    }

    /// Turns dirty tracking of a paging HWPT on or off. The corresponding ioctl is
    /// `IOMMU_HWPT_SET_DIRTY_TRACKING`.
    public func setDirtyTracking(_ hwpt: HWPT.ID, enabled: Bool) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            let h = try s.object(hwpt.object, as: HWPTPaging.self)
            guard h.domain.supportsDirtyTracking else { throw .notSupported("domain cannot track dirty pages") }
            if enabled {
                for e in h.ioas.table.areas.all {
                    try h.domain.readAndClearDirty(iova: e.range.start, length: e.range.last - e.range.start + 1, keep: false) { _, _ in }
                }
            }
            try h.domain.setDirtyTracking(enabled)
        }
    }

    /// Reports the dirty IOVA of `[iova, iova+length)` in units of `pageSize` through `mark`
    /// (called with the index of each dirty unit), clearing the dirty state unless `keep`.
    /// The corresponding ioctl is `IOMMU_HWPT_GET_DIRTY_BITMAP`.
    ///
    /// As the kernel: the span and `pageSize` are checked with bit masks (a page size that is
    /// not a power of two is used as its lowest set bit), and the walk covers the areas that
    /// follow each other from `iova` on, stopping quietly at the first hole; `mark` is best
    /// effort (a bitmap the kernel cannot write is skipped, not an error).
    public func readDirty(_ hwpt: HWPT.ID, iova: UInt64, length: UInt64, pageSize: UInt64, keep: Bool,
                          mark: (UInt64) -> Void) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            let h = try s.object(hwpt.object, as: HWPTPaging.self)
            let align = h.ioas.table.iovaAlignment
            let (last, overflow) = iova.addingReportingOverflow(length &- 1)
            guard !overflow else { throw .overflow("IOVA + length overflows") }
            guard iova & (align - 1) == 0, (last &+ 1) & (align - 1) == 0 else { throw .invalid("span is not aligned to the IOAS") }
            guard pageSize != 0 else { throw .invalid("zero page size") }
            guard iova & (pageSize - 1) == 0, (last &+ 1) & (pageSize - 1) == 0 else {
                throw .invalid("span is not aligned to the bitmap page size")
            }
            guard h.domain.supportsDirtyTracking else { throw .notSupported("domain cannot track dirty pages") }
            let shift = UInt64(pageSize.trailingZeroBitCount)
            var units: [UInt64] = []
            var cursor = iova
            while let i = h.ioas.table.areas.index(containing: cursor) {
                let e = h.ioas.table.areas[i]
                let end = min(last, e.range.last)
                try h.domain.readAndClearDirty(iova: cursor, length: end - cursor + 1, keep: keep) { s, l in
                    var u = (s - iova) >> shift
                    let lastUnit = (s + l - 1 - iova) >> shift
                    while u <= lastUnit { units.append(u); u += 1 }
                }
                if end == last { break }
                cursor = end + 1
            }
            for u in units { mark(u) }
        }
    }

    /// Sends a cache invalidation array to a nested HWPT or a vIOMMU; returns how many entries
    /// were handled (all on success; on error, those before the failing one).
    /// The corresponding ioctl is `IOMMU_HWPT_INVALIDATE`.
    public func invalidate(_ target: ObjectID, entries: DriverArray, handled: inout UInt32) throws(IOMMUError) {
        handled = 0
        var count: UInt32 = 0
        defer { handled = count }
        try locked { s throws(IOMMUError) in
            let o = try s.object(target)
            switch o {
            case let nested as HWPTNested:
                try nested.baseDomain.invalidate(entries, memory: s.memory, handled: &count)
            case let v as VIOMMU:
                try v.model.invalidate(entries, vdevices: v.vdevicesByVirtualID(), memory: s.memory, handled: &count)
            case is HWPTPaging:
                throw .invalid("paging HWPTs take no invalidation")
            default:
                throw .invalid("target is not a nested HWPT or a vIOMMU")
            }
        }
    }
}

extension ContextState {
    func abortHWPT(_ hwpt: HWPT) {
        switch hwpt {
        case let p as HWPTPaging:
            removeDomain(p)
            p.ioas.hwpts.removeAll { $0 === p }
            p.ioas.users -= 1
        case let n as HWPTNested:
            if let v = n.viommu { v.users -= 1 } else { n.parent.users -= 1 }
        default: break
        }
        abort(hwpt)
    }
}
