/// Options of a context and of its IOAS (`IOMMU_OPTION`).
extension Context {
    /// The accounting mode of pinned pages (`IOMMU_OPTION_RLIMIT_MODE`, get).
    public var accountingMode: AccountingMode { lock.withLock { state.accountingMode } }

    /// Sets the accounting mode (`IOMMU_OPTION_RLIMIT_MODE`, set).
    ///
    /// - Throws: `EPERM` without `CAP_SYS_RESOURCE`; `EBUSY` once the context holds objects.
    public func setAccountingMode(_ mode: AccountingMode) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            guard s.options.mayChangeAccounting else { throw .notPermitted("needs CAP_SYS_RESOURCE") }
            guard s.isEmpty else { throw .busy("context already holds objects") }
            s.accountingMode = mode
        }
    }

    /// Whether `ioas` may use pages larger than PAGE_SIZE (`IOMMU_OPTION_HUGE_PAGES`, get).
    public func hugePages(_ ioas: IOAS.ID) throws(IOMMUError) -> Bool {
        try locked { s throws(IOMMUError) in !(try s.object(ioas.object, as: IOAS.self).table.disableLargePages) }
    }

    /// Allows or forbids pages larger than PAGE_SIZE in `ioas` (`IOMMU_OPTION_HUGE_PAGES`, set).
    ///
    /// - Throws: `EINVAL` when turning them off while domains already map areas.
    public func setHugePages(_ ioas: IOAS.ID, _ enabled: Bool) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            let t = try s.object(ioas.object, as: IOAS.self)
            let pageSize = s.options.pageSize
            if enabled {
                t.table.disableLargePages = false
                t.table.iovaAlignment = t.table.requiredAlignment(pageSize: pageSize)
                return
            }
            if t.table.disableLargePages { return }
            if !t.table.domains.isEmpty, !t.table.areas.isEmpty { throw .invalid("domains already map areas") }
            t.table.disableLargePages = true
            let a = t.table.requiredAlignment(pageSize: pageSize)
            if a > t.table.iovaAlignment, !t.table.areasConform(to: a, pageSize: pageSize) {
                t.table.disableLargePages = false
                throw .addressInUse("areas are not page aligned")
            }
            t.table.iovaAlignment = a
        }
    }

    /// Pages currently charged for pinning under `mode`.
    public func chargedPages(_ mode: AccountingMode) -> UInt64 {
        lock.withLock { state.chargedPages[mode, default: 0] }
    }
}

extension Context {
    /// Re-charges pinned pages to the calling process (`IOMMU_IOAS_CHANGE_PROCESS`). Only
    /// file-backed mappings can move between processes.
    ///
    /// - Throws: `EINVAL` if any area maps user (non-file) memory.
    public func changeProcess() throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            for ioas in s.all(IOAS.self) {
                for e in ioas.table.areas.all {
                    guard case .file = e.value.pages.source else { throw .invalid("only file mappings can change process") }
                }
            }
        }
    }

    /// The IOAS the VFIO compatibility ioctls use; with `create`, made on first use.
    ///
    /// - Throws: `ENODEV` when there is none and `create` is false.
    public func compatibilityIOAS(create: Bool) throws(IOMMUError) -> IOAS.ID {
        try locked { s throws(IOMMUError) in
            if let id = s.vfioCompatIOAS, (try? s.object(id, as: IOAS.self)) != nil { return IOAS.ID(id) }
            guard create else { throw .noDevice("no compatibility IOAS") }
            let ioas = IOAS()
            s.insert(ioas)
            s.vfioCompatIOAS = ioas.objectID
            return ioas.id
        }
    }

    /// Sets the IOAS the VFIO compatibility ioctls use (`IOMMU_VFIO_IOAS_SET`).
    public func setCompatibilityIOAS(_ ioas: IOAS.ID) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            _ = try s.object(ioas.object, as: IOAS.self)
            s.vfioCompatIOAS = ioas.object
        }
    }

    /// Forgets the compatibility IOAS (`IOMMU_VFIO_IOAS_CLEAR`).
    public func clearCompatibilityIOAS() {
        lock.withLock { state.vfioCompatIOAS = nil }
    }
}

extension Context {
    /// The page sizes every domain of `ioas` supports, at least PAGE_SIZE-granular, as the
    /// VFIO type1 `iova_pgsizes` reports them.
    public func supportedPageSizes(_ ioas: IOAS.ID) throws(IOMMUError) -> UInt64 {
        try locked { s throws(IOMMUError) in
            let t = try s.object(ioas.object, as: IOAS.self).table
            let pageSize = s.options.pageSize
            var bitmap = UInt64.max
            for d in t.domains { bitmap &= d.domain.pageSizes }
            if bitmap & (pageSize - 1) != 0 { bitmap &= ~(pageSize - 1); bitmap |= pageSize }
            return max(bitmap, t.iovaAlignment)
        }
    }
}
