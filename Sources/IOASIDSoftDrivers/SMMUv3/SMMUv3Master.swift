// A device behind the SMMUv3 as the core sees it (the kernel's `arm_smmu_master`): its StreamID,
// its STE, its CD table (allocated by the host for stage-1 domains at the RID and at PASIDs; a
// nested domain uses the guest's CD table instead), and what is attached where.
//
// STE programming follows the kernel's driver: an S1 paging domain at the RID installs the CD
// table with CD 0 for it (S1DSS = SSID0); an S2 domain installs a stage-2 STE; a nested domain
// installs the guest's STE fields over the stage-2 parent (Config = nested, S1ContextPtr = the
// guest's CD table, a GPA) or, for a guest STE that bypasses, the parent alone; nothing attached
// at the RID aborts (or, with PASIDs attached, keeps the CD table with S1DSS = terminate).

import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

/// A device behind an ``SMMUv3Driver``: the core's `DeviceModel`, with the PCI function that
/// issues its DMA.
public final class SMMUv3Master: DeviceModel, @unchecked Sendable {
    /// The PCI function: issue DMA with ``PCIFunction/read(pasid:address:count:privileged:execute:)``
    /// and ``PCIFunction/write(pasid:address:bytes:privileged:)``.
    public let function: PCIFunction
    /// The StreamID (the requester ID).
    public let streamID: UInt32
    /// The SubstreamID bits in use: the smaller of the SMMU's and the device's PASID width.
    public let ssidBits: Int
    unowned let smmuDriver: SMMUv3Driver

    /// The context and device object the master is bound to (see ``bind(to:)``).
    struct Binding {
        weak var context: Context?
        let device: Device.ID
    }

    /// What a vIOMMU knows the device as (the kernel's `arm_smmu_vmaster`).
    struct VMaster {
        let viommu: SMMUv3VIOMMU
        weak var vdevice: VDevice?
        let virtualSID: UInt32
    }

    /// The host-allocated CD table.
    struct CDTable {
        /// `S1Fmt`: 0 linear, 2 two-level with 64 KiB leaves.
        var fmt: UInt64
        /// `S1CDMax`.
        var cdMax: UInt64
        /// The linear table or the level-1 table.
        var base: UInt64
        var bytes: UInt64
        /// Level-2 tables by level-1 index.
        var leaves: [UInt32: UInt64] = [:]
    }

    enum Attached {
        case paging(SMMUv3PagingDomain)
        case nested(SMMUv3NestedDomain)
    }

    // Guarded by the driver's `state` lock.
    var rid: Attached?
    var pasids: [UInt32: SMMUv3PagingDomain] = [:]
    var cdTable: CDTable?
    var vmaster: VMaster?
    var atsEnabled = false
    // Guarded by `bindingLock`.
    private let bindingLock = Locked<(binding: Binding?, groups: [UInt32: UInt32?])>((nil, [:]))
    /// SubstreamIDs other bound devices live on (mediated devices), with where their requests go.
    private let routes = Locked<[UInt32: Binding]>([:])

    /// Where a page request for `ssid` goes: the device bound on that SubstreamID (reported
    /// without a PASID), else this master's own binding (with it).
    func pageRequestTarget(ssid: UInt32?) -> (context: Context, device: Device.ID, pasid: UInt32?)? {
        if let ssid, let r = routes.withLock({ $0[ssid] }) {
            guard let c = r.context else { return nil }
            return (c, r.device, nil)
        }
        guard let b = binding, let c = b.context else { return nil }
        return (c, b.device, ssid)
    }

    init(driver: SMMUv3Driver, function: PCIFunction, streamID: UInt32, ssidBits: Int) {
        smmuDriver = driver
        self.function = function
        self.streamID = streamID
        self.ssidBits = ssidBits
    }

    // MARK: Binding

    /// Binds the device to `context` and remembers it, so that I/O page faults reach the
    /// context's fault queue and events its vEVENT queues. Returns the core's device ID. (A
    /// device bound with `Context.bind` directly takes no faults: its page requests are denied.)
    public func bind(to context: Context, ownedByDriver: Bool = false) throws(IOMMUError) -> Device.ID {
        try context.bind(self, ownedByDriver: ownedByDriver)
    }

    /// Records where events and page requests go (the core calls this after any bind of the device).
    public func bound(to context: Context, as device: Device.ID) {
        bindingLock.withLock { $0.binding = Binding(context: context, device: device) }
    }

    /// Forgets the binding (the core calls this after an unbind or the context's close).
    public func unbound(from context: Context, as device: Device.ID) {
        bindingLock.withLock { s in
            if let b = s.binding, b.context === context, b.device == device { s.binding = nil }
        }
    }

    /// Unbinds the device from the context it was bound to with ``bind(to:ownedByDriver:)``.
    public func unbind() throws(IOMMUError) {
        guard let b = bindingLock.withLock({ s -> Binding? in defer { s.binding = nil }; return s.binding }),
              let context = b.context else { return }
        try context.unbind(b.device)
    }

    var binding: Binding? { bindingLock.withLock { $0.binding } }

    /// The domains and vIOMMU the master refers to (with the driver's `state` held). Callers
    /// keep them past the lock, so that no domain is deinitialized — which takes that lock —
    /// while it is held.
    var references: [AnyObject] {
        var r: [AnyObject] = Array(pasids.values)
        switch rid {
        case .paging(let d)?: r.append(d)
        case .nested(let n)?: r.append(n)
        case nil: break
        }
        if let v = vmaster { r.append(v.viommu) }
        return r
    }

    /// Remembers the PASID of an outstanding page request group (for its response).
    func noteGroup(_ group: UInt32, pasid: UInt32?) { bindingLock.withLock { $0.groups[group] = .some(pasid) } }
    func forgetGroup(_ group: UInt32) { _ = bindingLock.withLock { $0.groups.removeValue(forKey: group) } }

    // MARK: DeviceModel

    /// The driver.
    public var driver: any IOMMUDriver { smmuDriver }

    /// `2^ssidBits` PASIDs, or 0 without a PASID capability.
    public var maxPASIDs: UInt32 { function.capabilities.pasidWidth == nil ? 0 : UInt32(1) << UInt32(ssidBits) }

    /// A physical function takes fault domains.
    public var refusesFaultDomains: Bool { false }

    /// The software MSI window the SMMUv3 driver reserves for every master (1 MiB at
    /// 0x08000000): the IOVA where the host maps the interrupt doorbell, never user memory.
    public static let softwareMSIWindow = IOVARange(start: 0x0800_0000, last: 0x080f_ffff)

    /// The software MSI window (``softwareMSIWindow``), as the kernel's SMMUv3 driver reports it.
    public var reservedRegions: [IOVARange] { [Self.softwareMSIWindow] }

    /// Whether ATS can be used: the SMMU and the function both have it.
    var atsSupported: Bool { smmuDriver.features.ats && function.capabilities.ats != nil }

    /// Attaches `domain` at `pasid` (nil: the RID), programming the STE and CD table.
    ///
    /// - Throws: `EINVAL` for a domain of another SMMU or of the wrong kind (a PASID takes only
    ///   stage-1 paging domains, and only while the RID has no domain or a stage-1 one); `EBUSY`
    ///   for a stage-2 or nested domain at the RID while PASIDs are attached; `ENOENT` for a
    ///   translating nested domain when the device has no vDevice in its vIOMMU; `ENOMEM` when the
    ///   CD table cannot be allocated.
    public func attach(_ domain: any IOMMUDomain, pasid: IOASIDCore.PASID?, replacing: (any IOMMUDomain)?) throws(IOMMUError) {
        var keep: [AnyObject] = []
        defer { withExtendedLifetime(keep) {} }
        try smmuDriver.state.withLock { (s: inout SMMUv3Driver.State) throws(IOMMUError) in
            keep = references
            if let pasid {
                try attachPASID(&s, domain, pasid: pasid)
            } else {
                try attachRID(&s, domain)
            }
        }
    }

    /// Detaches whatever is at `pasid` (nil: the RID).
    public func detach(pasid: IOASIDCore.PASID?) {
        var keep: [AnyObject] = []
        defer { withExtendedLifetime(keep) {} }
        smmuDriver.state.withLock { s in
            keep = references
            if let pasid { detachPASID(&s, pasid: pasid) } else { detachRID(&s) }
        }
    }

    /// Answers a page request group: `CMD_PRI_RESP` with Success for code 0, Invalid Request
    /// otherwise (with the PASID the group's requests carried).
    public func pageResponse(pasid: IOASIDCore.PASID?, group: UInt32, code: UInt32) {
        let recorded = bindingLock.withLock { $0.groups.removeValue(forKey: group) }
        let ssid: UInt32? = recorded ?? pasid
        smmuDriver.issue([.priResp(streamID: streamID, substreamID: ssid, group: UInt16(group & 0x1FF),
                                   response: code == SMMUv3UAPI.pageResponseSuccess ? .success : .denied)], sync: false)
    }

    // MARK: STEs

    /// The CD-table STE (`arm_smmu_make_cdtable_ste`).
    func cdTableSTE(_ table: CDTable, ats: Bool, s1dss: UInt64) -> SMMUv3StreamTableEntry {
        var ste = SMMUv3StreamTableEntry()
        ste.valid = true
        ste.config = .stage1
        ste.s1Fmt = table.fmt
        ste.s1ContextPtr = table.base
        ste.s1CDMax = table.cdMax
        ste.s1DSS = s1dss
        ste.s1CIR = 1   // write-back, read-allocate
        ste.s1COR = 1
        ste.s1CSH = 3   // inner shareable
        ste.eats = ats ? 1 : 0
        ste.strw = 0    // NS-EL1
        ste.s2VMID = 0  // VMID 0: stage-2 bypass streams
        return ste
    }

    /// The stage-2 STE of `domain` (`arm_smmu_make_s2_domain_ste`).
    func stage2STE(_ domain: SMMUv3PagingDomain, ats: Bool) -> SMMUv3StreamTableEntry {
        var ste = SMMUv3StreamTableEntry()
        ste.valid = true
        ste.config = .stage2
        ste.eats = ats ? 1 : 0
        if domain.nestParent && smmuDriver.features.forcedWriteBack { ste.s2FWB = true }
        ste.s2VMID = domain.tag
        ste.s2T0SZ = UInt64(64 - domain.inputBits)
        ste.s2SL0 = 2          // level 0
        ste.s2IR0 = 1
        ste.s2OR0 = 1
        ste.s2SH0 = 3
        ste.s2TG = SMMUv3Granule.size4K.rawValue
        ste.s2PS = SMMUv3AddressSize.encoding(forBits: min(smmuDriver.features.outputAddressBits, 48)) ?? 5
        ste.s2AA64 = true
        ste.s2PTW = true
        ste.s2R = true
        ste.s2TTB = domain.root
        return ste
    }

    /// The STE of a nested domain (`arm_smmu_make_nested_domain_ste`): the guest's fields over
    /// the stage-2 parent for a translating guest STE, the parent alone for a bypassing one,
    /// abort otherwise.
    func nestedSTE(_ nested: SMMUv3NestedDomain, ats: Bool) -> SMMUv3StreamTableEntry {
        switch nested.config {
        case .stage1:
            var ste = stage2STE(nested.viommu.parent, ats: ats)
            ste.words[0] = 1 | (SMMUv3StreamTableEntry.Config.nested.rawValue << 1)
                | (nested.guestSTE.0 & ~SMMUv3Master.steConfigMask)
            ste.words[1] |= nested.guestSTE.1
            ste.mev = true
            return ste
        case .bypass:
            return stage2STE(nested.viommu.parent, ats: ats)
        case .abort:
            return SMMUv3Driver.abortSTE
        }
    }

    // MARK: CD table

    /// Allocates the host CD table (`arm_smmu_alloc_cd_tables`): linear up to 1024 CDs, else
    /// two-level with 64 KiB leaves.
    func ensureCDTable(_ s: inout SMMUv3Driver.State) throws(IOMMUError) -> CDTable {
        if let t = cdTable { return t }
        let contexts = UInt64(1) << UInt64(ssidBits)
        let table: CDTable
        if !smmuDriver.features.twoLevelCDTable || contexts <= UInt64(SMMUv3Driver.cdLeafEntries) {
            let bytes = max(64, contexts * 64)
            guard let base = s.arena.allocate(bytes) else { throw .noMemory("no room for the CD table") }
            smmuDriver.zero(base, bytes)
            table = CDTable(fmt: 0, cdMax: UInt64(ssidBits), base: base, bytes: max(bytes, 4096))
        } else {
            let bytes = contexts / UInt64(SMMUv3Driver.cdLeafEntries) * 8
            guard let base = s.arena.allocate(bytes) else { throw .noMemory("no room for the CD table") }
            smmuDriver.zero(base, bytes)
            table = CDTable(fmt: 2, cdMax: UInt64(ssidBits), base: base, bytes: max(bytes, 4096))
        }
        cdTable = table
        return table
    }

    /// The address of CD `ssid`, allocating its level-2 table if `allocate`.
    func cdAddress(_ s: inout SMMUv3Driver.State, ssid: UInt32, allocate: Bool) throws(IOMMUError) -> UInt64? {
        guard var table = cdTable else { return nil }
        if table.fmt == 0 { return table.base + UInt64(ssid) * 64 }
        let index = ssid / SMMUv3Driver.cdLeafEntries
        if table.leaves[index] == nil {
            guard allocate else { return nil }
            let bytes = UInt64(SMMUv3Driver.cdLeafEntries) * 64
            guard let leaf = s.arena.allocate(bytes) else { throw .noMemory("no room for a CD leaf table") }
            smmuDriver.zero(leaf, bytes)
            smmuDriver.memory.write64(table.base + UInt64(index) * 8, SMMUv3L1ContextDescriptor(l2Ptr: leaf).word)
            table.leaves[index] = leaf
            cdTable = table
            // An invalid L1CD may be cached.
            smmuDriver.issue([.cfgiCD(streamID: streamID, substreamID: ssid, leaf: false)])
        }
        return table.leaves[index]! + UInt64(ssid % SMMUv3Driver.cdLeafEntries) * 64
    }

    /// Writes CD `ssid` (a valid CD is made invalid first) and synchronizes it.
    func writeCD(_ s: inout SMMUv3Driver.State, ssid: UInt32, _ cd: SMMUv3ContextDescriptor) throws(IOMMUError) {
        guard let address = try cdAddress(&s, ssid: ssid, allocate: true) else { return }
        let memory = smmuDriver.memory
        let old = SMMUv3ContextDescriptor(memory: memory, at: address)
        if old == cd { return }
        if old.valid {
            memory.write64(address, old.words[0] & ~(1 << 31))
            smmuDriver.issue([.cfgiCD(streamID: streamID, substreamID: ssid, leaf: true)])
        }
        cd.write(to: memory, at: address)
        smmuDriver.issue([.cfgiCD(streamID: streamID, substreamID: ssid, leaf: true)])
    }

    /// Clears CD `ssid` and synchronizes it.
    func clearCD(_ s: inout SMMUv3Driver.State, ssid: UInt32) {
        guard let address = (try? cdAddress(&s, ssid: ssid, allocate: false)) ?? nil else { return }
        let old = SMMUv3ContextDescriptor(memory: smmuDriver.memory, at: address)
        guard old != SMMUv3ContextDescriptor() else { return }
        SMMUv3ContextDescriptor().write(to: smmuDriver.memory, at: address)
        smmuDriver.issue([.cfgiCD(streamID: streamID, substreamID: ssid, leaf: true)])
    }

    /// Frees the CD table once nothing uses it.
    func releaseCDTable(_ s: inout SMMUv3Driver.State) {
        guard let table = cdTable, pasids.isEmpty else { return }
        if case .paging(let d) = rid, d.stage == .stage1 { return }
        for leaf in table.leaves.values { s.arena.release(leaf, UInt64(SMMUv3Driver.cdLeafEntries) * 64) }
        s.arena.release(table.base, table.bytes)
        cdTable = nil
    }

    // MARK: Attach

    /// Sets the function's ATS (and PRI) enable bits, invalidating its ATC when they change.
    func setATS(_ enabled: Bool) {
        let on = enabled && atsSupported
        guard on != atsEnabled else { return }
        atsEnabled = on
        var control = function.control
        control.ats = on
        if function.capabilities.pageRequestCapacity != nil { control.pri = on }
        function.control = control
    }

    /// Flushes the device's ATC for `ssid` (nil: everything).
    func flushATC(ssid: UInt32?) {
        guard atsEnabled else { return }
        smmuDriver.issue([SMMUv3Driver.atcInvalidation(sid: streamID, ssid: ssid, iova: 0, length: 0)])
    }

    func attachRID(_ s: inout SMMUv3Driver.State, _ domain: any IOMMUDomain) throws(IOMMUError) {
        let old = rid
        switch domain {
        case let paging as SMMUv3PagingDomain:
            guard paging.driver === smmuDriver else { throw .invalid("domain of another SMMU") }
            switch paging.stage {
            case .stage1:
                let table = try ensureCDTable(&s)
                try writeCD(&s, ssid: 0, paging.contextDescriptor())
                let ats = atsSupported
                smmuDriver.installSTE(&s, sid: streamID, cdTableSTE(table, ats: ats, s1dss: 2))
                setATS(ats)
            case .stage2:
                guard pasids.isEmpty else { throw .busy("PASIDs are attached") }
                let ats = atsSupported
                smmuDriver.installSTE(&s, sid: streamID, stage2STE(paging, ats: ats))
                clearCD(&s, ssid: 0)
                setATS(ats)
            }
            vmaster = nil
            rid = .paging(paging)
            paging.add(self, ssid: nil)
        case let nested as SMMUv3NestedDomain:
            guard nested.viommu.driver === smmuDriver else { throw .invalid("domain of another SMMU") }
            guard pasids.isEmpty else { throw .busy("PASIDs are attached") }
            let vsid = nested.viommu.virtualSID(of: self)
            if vsid == nil && nested.config == .stage1 { throw .noEntry("the device has no vDevice in the vIOMMU") }
            let ats: Bool
            switch nested.config {
            case .stage1: ats = nested.enableATS && atsSupported
            case .bypass: ats = atsSupported
            case .abort: ats = false
            }
            smmuDriver.installSTE(&s, sid: streamID, nestedSTE(nested, ats: ats))
            clearCD(&s, ssid: 0)
            setATS(ats)
            vmaster = vsid.map { VMaster(viommu: nested.viommu, vdevice: nested.viommu.vdevice(of: self), virtualSID: $0) }
            rid = .nested(nested)
            nested.viommu.parent.add(self, ssid: nil)
        default:
            throw .invalid("not an SMMUv3 domain")
        }
        leave(old, ssid: nil)
        flushATC(ssid: nil)
        releaseCDTable(&s)
    }

    func attachPASID(_ s: inout SMMUv3Driver.State, _ domain: any IOMMUDomain, pasid: IOASIDCore.PASID) throws(IOMMUError) {
        guard let paging = domain as? SMMUv3PagingDomain, paging.driver === smmuDriver, paging.stage == .stage1 else {
            throw .invalid("a PASID takes stage-1 paging domains only")
        }
        switch rid {
        case nil: break
        case .paging(let d) where d.stage == .stage1: break
        default: throw .invalid("the RID's domain does not use the CD table")
        }
        guard UInt64(pasid) < UInt64(1) << UInt64(ssidBits), pasid != 0 else { throw .invalid("PASID beyond the CD table") }
        let table = try ensureCDTable(&s)
        let old = pasids[pasid]
        try writeCD(&s, ssid: pasid, paging.contextDescriptor())
        if rid == nil {
            // Blocked RID: the CD table with S1DSS = terminate.
            let ats = atsSupported
            smmuDriver.installSTE(&s, sid: streamID, cdTableSTE(table, ats: ats, s1dss: 0))
            setATS(ats)
        }
        pasids[pasid] = paging
        paging.add(self, ssid: pasid)
        if let old, old !== paging { old.remove(self, ssid: pasid) }
        flushATC(ssid: pasid)
    }

    func detachRID(_ s: inout SMMUv3Driver.State) {
        guard let old = rid else { return }
        rid = nil
        vmaster = nil
        if !pasids.isEmpty, let table = cdTable {
            clearCD(&s, ssid: 0)
            smmuDriver.installSTE(&s, sid: streamID, cdTableSTE(table, ats: atsEnabled, s1dss: 0))
        } else {
            smmuDriver.installSTE(&s, sid: streamID, SMMUv3Driver.abortSTE)
            clearCD(&s, ssid: 0)
        }
        leave(old, ssid: nil)
        flushATC(ssid: nil)
        if pasids.isEmpty { setATS(false) }
        releaseCDTable(&s)
    }

    func detachPASID(_ s: inout SMMUv3Driver.State, pasid: IOASIDCore.PASID) {
        guard let old = pasids.removeValue(forKey: pasid) else { return }
        clearCD(&s, ssid: pasid)
        old.remove(self, ssid: pasid)
        flushATC(ssid: pasid)
        if rid == nil && pasids.isEmpty {
            smmuDriver.installSTE(&s, sid: streamID, SMMUv3Driver.abortSTE)
            setATS(false)
        }
        releaseCDTable(&s)
    }

    /// Detaches everything (device removal).
    func detachAll(_ s: inout SMMUv3Driver.State) {
        for pasid in Array(pasids.keys) { detachPASID(&s, pasid: pasid) }
        detachRID(&s)
    }

    /// Removes the master from the domain it leaves.
    func leave(_ old: Attached?, ssid: UInt32?) {
        switch old {
        case .paging(let d)?:
            if case .paging(let now)? = rid, now === d { return }
            d.remove(self, ssid: ssid)
        case .nested(let n)?:
            if case .nested(let now)? = rid, now.viommu.parent === n.viommu.parent { return }
            n.viommu.parent.remove(self, ssid: ssid)
        case nil:
            break
        }
    }
}

extension SMMUv3Master {
    /// `STE.Config`, bits [3:1].
    static var steConfigMask: UInt64 { 0b1110 }
}

extension SMMUv3Driver {
    /// Zeroes `bytes` of the arena at `address`.
    func zero(_ address: UInt64, _ bytes: UInt64) {
        var a = address
        while a < address + bytes {
            memory.write64(a, 0)
            a += 8
        }
    }
}

extension SMMUv3Master: PASIDHostingDevice {
    /// Page requests for SubstreamID `pasid` go to `device` of `context` (a mediated device bound there).
    public func route(pasid: UInt32, to context: Context, as device: Device.ID) {
        routes.withLock { $0[pasid] = Binding(context: context, device: device) }
    }

    /// Page requests for SubstreamID `pasid` are this master's own again.
    public func unroute(pasid: UInt32) {
        routes.withLock { _ = $0.removeValue(forKey: pasid) }
    }
}
