// Paging domains of the SMMUv3 driver (the kernel's `arm_smmu_domain` with an io-pgtable):
// Arm VMSAv8-64 stage-1 tables tagged by an ASID, or stage-2 tables tagged by a VMID (nesting
// parents are stage 2), filled by the core from an IOAS. Output addresses are host-physical
// addresses = the user addresses of the core's pinned pages, which the driver attaches as RAM
// while they are mapped. Unmapping invalidates the TLB (by range, or the whole VMID for a
// nesting parent, whose entries may be combined with guest stage-1 entries) and the ATCs of the
// devices attached, then waits for the CMD_SYNC.

import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

/// A stage-1 or stage-2 paging domain of an ``SMMUv3Driver``.
public final class SMMUv3PagingDomain: PagingDomain, @unchecked Sendable {
    /// Which translation stage the domain's tables are.
    public enum Stage: Sendable {
        /// Stage 1: the CD's TTB0, tagged by an ASID.
        case stage1
        /// Stage 2: the STE's S2TTB, tagged by a VMID.
        case stage2
    }

    /// The driver.
    public let driver: SMMUv3Driver
    /// The stage.
    public let stage: Stage
    /// Allocated with `IOMMU_HWPT_ALLOC_NEST_PARENT`.
    public let nestParent: Bool
    /// Allocated with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING` (stage 1 with HA and HD: DBM).
    public let dirtyCapable: Bool
    /// The ASID (stage 1) or VMID (stage 2).
    public let tag: UInt16
    /// The input address size: 48 bits.
    let inputBits = 48

    /// Exactly one is set.
    let stage1: ArmStage1PageTable?
    let stage2: PageTable<ArmStage2Format>?

    struct Extent: Sendable {
        var source: MappedPages
        var readable: Bool
        var writable: Bool
    }
    /// What is mapped, for `translate` (the core's view); guarded by `lock`.
    private let extents = Locked(IntervalMap<Extent>())
    /// Where the domain is attached: (device, SubstreamID); guarded by the driver's `state`.
    var attachments: [(master: SMMUv3Master, ssid: UInt32?)] = []

    /// MAIR as the kernel's io-pgtable sets it: attribute 0 non-cacheable, 1 write-back
    /// (IOMMU_CACHE), 2 device, 3 inner non-cacheable outer write-back.
    static let mair: UInt64 = 0xF404_FF44

    init(driver: SMMUv3Driver, stage: Stage, nestParent: Bool, dirtyTracking: Bool) throws(IOMMUError) {
        self.driver = driver
        self.stage = stage
        self.nestParent = nestParent
        dirtyCapable = dirtyTracking && stage == .stage1
        let id: UInt32? = driver.state.withLock { s in stage == .stage1 ? s.asids.allocate() : s.vmids.allocate() }
        guard let id else { throw .noSpace("no free ASID or VMID") }
        tag = UInt16(id)
        let oas = min(driver.features.outputAddressBits, 48)
        do {
            switch stage {
            case .stage1:
                let format = ArmStage1Format(inputAddressBits: 48, outputAddressBits: oas,
                                             hardwareAccessFlag: dirtyCapable, hardwareDirtyState: dirtyCapable)
                stage1 = try ArmStage1PageTable(memory: driver.memory, format: format)
                stage2 = nil
            case .stage2:
                stage2 = try PageTable(memory: driver.memory, format: try ArmStage2Format(inputAddressBits: 48, startLevel: 0,
                                                                                          outputAddressBits: oas))
                stage1 = nil
            }
        } catch {
            driver.state.withLock { s in stage == .stage1 ? s.asids.release(id) : s.vmids.release(id) }
            throw .noMemory("cannot allocate the page table")
        }
    }

    deinit {
        // Nothing may use the tag's TLB entries once it is reused.
        driver.issue([stage == .stage1 ? .tlbiNHASID(vmid: 0, asid: tag) : .tlbiS12VMAll(vmid: tag)])
        let all = IOVARange(start: 0, last: (1 << 48) - 1)
        let mapped = extents.withLock { $0.all }
        _ = try? stage1?.unmap(iova: 0, size: 1 << 48)
        _ = try? stage2?.unmap(iova: 0, size: 1 << 48)
        // The tag's TLB entries were invalidated above and the domain is attached nowhere.
        _ = stage1?.reclaimFreedTables()
        _ = stage2?.reclaimFreedTables()
        if let root = stage1?.root ?? stage2?.root { driver.memory.freeFrame(root) }
        driver.state.withLock { s in
            for e in mapped where e.range.overlaps(all) {
                s.user.release(e.value.source.pages.hostAddress(e.value.source.offset), e.range.last - e.range.start + 1)
            }
            if stage == .stage1 { s.asids.release(UInt32(tag)) } else { s.vmids.release(UInt32(tag)) }
        }
    }

    /// The root table's physical address.
    public var root: UInt64 { stage1?.root ?? stage2!.root }

    /// The CD of a stage-1 domain (`arm_smmu_make_s1_cd`).
    func contextDescriptor() -> SMMUv3ContextDescriptor {
        var cd = SMMUv3ContextDescriptor()
        cd.t0SZ = UInt64(64 - inputBits)
        cd.tg0 = SMMUv3Granule.size4K.rawValue
        cd.ir0 = 1      // write-back, write-allocate
        cd.or0 = 1
        cd.sh0 = 3      // inner shareable
        cd.epd1 = true
        cd.valid = true
        cd.ips = SMMUv3AddressSize.encoding(forBits: min(driver.features.outputAddressBits, 48)) ?? 5
        cd.aa64 = true
        cd.record = true
        cd.abort = true
        cd.aset = true
        cd.asid = tag
        if dirtyCapable {
            cd.ha = true
            cd.hd = true
        }
        cd.ttb0 = root
        cd.mair = Self.mair
        return cd
    }

    /// Records an attachment (with the driver's `state` held).
    func add(_ master: SMMUv3Master, ssid: UInt32?) {
        if !attachments.contains(where: { $0.master === master && $0.ssid == ssid }) { attachments.append((master, ssid)) }
    }

    /// Forgets an attachment (with the driver's `state` held).
    func remove(_ master: SMMUv3Master, ssid: UInt32?) {
        attachments.removeAll { $0.master === master && $0.ssid == ssid }
    }

    // MARK: PagingDomain

    /// 4 KiB, 2 MiB and 1 GiB (`IDR5.GRAN4K`).
    public var pageSizes: UInt64 { (1 << 12) | (1 << 21) | (1 << 30) }

    /// `[0, 2^48)`.
    public var aperture: IOVARange { IOVARange(start: 0, last: (1 << 48) - 1) }

    /// Maps `length` bytes at `iova` to the pinned pages of `source` (their user addresses).
    public func map(iova: UInt64, length: UInt64, source: MappedPages, readable: Bool, writable: Bool) throws(IOMMUError) {
        guard let range = IOVARange(start: iova, length: length), aperture.contains(range) else { throw .invalid("outside the aperture") }
        let host = source.pages.hostAddress(source.offset)
        guard host & 0xFFF == 0, iova & 0xFFF == 0, length & 0xFFF == 0 else { throw .invalid("not page aligned") }
        guard host + length <= SMMUv3Driver.windowBase else { throw .range("host address beyond the user range") }
        guard extents.withLock({ $0.insert(range, Extent(source: source, readable: readable, writable: writable)) }) else {
            throw .exists("already mapped")
        }
        driver.state.withLock { $0.user.retain(host, length) }
        do {
            if let stage1 {
                var p: ArmStage1Permissions = [.user, .privilegedExecute, .userExecute]
                if writable { p.insert(.write) }
                try stage1.map(iova: iova, physical: host, size: length, permissions: p,
                               attributes: ArmStage1Attributes(memoryAttributeIndex: 1, notGlobal: true))
            } else if let stage2 {
                var p: ArmStage2Permissions = [.privilegedExecute, .userExecute]
                if readable || writable { p.insert(.read) }
                if writable { p.insert(.write) }
                try stage2.map(iova: iova, physical: host, size: length, permissions: p)
            }
        } catch {
            driver.state.withLock { $0.user.release(host, length) }
            _ = extents.withLock { m in m.firstIndex(overlapping: range).map { m.remove(at: $0) } }
            switch error {
            case .outOfMemory: throw .noMemory("out of page-table frames")
            case .alreadyMapped: throw .exists("already mapped")
            default: throw .invalid("cannot map")
            }
        }
    }

    /// Unmaps `length` bytes at `iova`, invalidates the TLB and ATCs, then releases the pages.
    public func unmap(iova: UInt64, length: UInt64) {
        guard let range = IOVARange(start: iova, length: length) else { return }
        var released: [(UInt64, UInt64)] = []
        extents.withLock { m in
            while let i = m.firstIndex(overlapping: range) {
                let e = m.remove(at: i)
                let s = max(e.range.start, range.start), l = min(e.range.last, range.last)
                released.append((e.value.source.pages.hostAddress(e.value.source.offset + (s - e.range.start)), l - s + 1))
                if e.range.start < range.start { _ = m.insert(IOVARange(start: e.range.start, last: range.start - 1), e.value) }
                if e.range.last > range.last {
                    var v = e.value
                    v.source = MappedPages(pages: v.source.pages, offset: v.source.offset + (range.last + 1 - e.range.start))
                    _ = m.insert(IOVARange(start: range.last + 1, last: e.range.last), v)
                }
            }
        }
        guard !released.isEmpty else { return }
        _ = try? stage1?.unmap(iova: iova, size: length)
        _ = try? stage2?.unmap(iova: iova, size: length)
        // Emptied tables are retired until the synchronized invalidation below has completed.
        let epochs = (stage1?.closeRetirementEpoch(), stage2?.closeRetirementEpoch())
        invalidate(iova: iova, length: length)
        if let e = epochs.0 { _ = stage1?.reclaimFreedTables(through: e) }
        if let e = epochs.1 { _ = stage2?.reclaimFreedTables(through: e) }
        driver.state.withLock { s in for (host, n) in released { s.user.release(host, n) } }
    }

    /// The TLB and ATC invalidations for `[iova, iova + length)` of this domain, synchronized
    /// (`arm_smmu_domain_inv_range`).
    func invalidate(iova: UInt64, length: UInt64) {
        var commands: [SMMUv3Command]
        switch (stage, nestParent) {
        case (.stage1, _):
            commands = SMMUv3Driver.rangeInvalidations(iova, length) { a, r in
                .tlbiNHVA(vmid: 0, asid: tag, address: a, leaf: true, range: r)
            }
        case (.stage2, false):
            commands = SMMUv3Driver.rangeInvalidations(iova, length) { a, r in
                .tlbiS2IPA(vmid: tag, address: a, leaf: true, range: r)
            }
        case (.stage2, true):
            // Guest stage-1 entries may be combined with these: the whole VMID.
            commands = [.tlbiS12VMAll(vmid: tag)]
        }
        let atc: [SMMUv3Command] = driver.state.withLock { _ in
            attachments.compactMap { a in
                guard a.master.atsEnabled else { return nil }
                // A nested device's ATC holds guest IOVAs: everything goes.
                if nestParent, case .nested? = a.master.rid {
                    return SMMUv3Driver.atcInvalidation(sid: a.master.streamID, ssid: nil, iova: 0, length: 0)
                }
                return SMMUv3Driver.atcInvalidation(sid: a.master.streamID, ssid: a.ssid, iova: iova, length: length)
            }
        }
        // TLB invalidations complete before the ATC ones are issued (a CMD_SYNC between).
        if atc.isEmpty {
            driver.issue(commands)
        } else {
            driver.issue(commands + [.syncNone] + atc)
        }
    }

    /// Where `iova` points, if mapped.
    public func translate(_ iova: UInt64) -> (source: MappedPages, readable: Bool, writable: Bool)? {
        extents.withLock { m in
            guard let e = m.entry(containing: iova) else { return nil }
            return (MappedPages(pages: e.value.source.pages, offset: e.value.source.offset + (iova - e.range.start)),
                    e.value.readable, e.value.writable)
        }
    }

    /// Stage-1 domains allocated for dirty tracking.
    public var supportsDirtyTracking: Bool { dirtyCapable }

    /// Dirty state is always updated by hardware in a dirty-capable domain (as the kernel's
    /// driver, which only checks the request).
    public func setDirtyTracking(_ enabled: Bool) throws(IOMMUError) {
        guard dirtyCapable else { throw .invalid("domain cannot track dirty pages") }
    }

    /// Reports the dirty leaves (DBM set, AP[2] clear) of `[iova, iova + length)`; unless
    /// `keep`, makes them writable-clean again and invalidates their TLB entries.
    public func readAndClearDirty(iova: UInt64, length: UInt64, keep: Bool, mark: (UInt64, UInt64) -> Void) throws(IOMMUError) {
        guard dirtyCapable, let stage1 else { throw .invalid("domain cannot track dirty pages") }
        var cleaned: [DirtyRange] = []
        do {
            try stage1.forEachDirty(iova: iova, size: length, clear: !keep) { r in
                mark(r.iova, r.length)
                cleaned.append(r)
            }
        } catch {
            throw .invalid("dirty range")
        }
        if !keep, !cleaned.isEmpty {
            var commands: [SMMUv3Command] = []
            for r in cleaned {
                commands += SMMUv3Driver.rangeInvalidations(r.iova, r.length) { a, range in
                    .tlbiNHVA(vmid: 0, asid: tag, address: a, leaf: true, range: range)
                }
            }
            driver.issue(commands)
        }
    }
}
