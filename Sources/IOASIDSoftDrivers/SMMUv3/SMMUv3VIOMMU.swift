// The SMMUv3 vIOMMU (the kernel's `arm_vsmmu`): a guest's SMMU on a stage-2 nesting parent.
// The guest owns its stream table entries and CD tables; the host keeps only, per nested
// domain, the guest's STE words 0–1 (validated: only the fields a guest may set, Config abort,
// bypass or stage-1 translate) and installs them over the parent's stage 2. The guest's CD table
// is its own memory, addressed by GPA: the host allocates nothing per PASID. vDevices map the
// guest's virtual StreamIDs to physical ones; the guest's invalidation commands come as SMMUv3
// command arrays, with VMID and StreamIDs substituted before they reach the SMMU.

import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

/// The SMMUv3 vIOMMU model.
public final class SMMUv3VIOMMU: VIOMMUModel, @unchecked Sendable {
    /// The driver.
    public let driver: SMMUv3Driver
    /// The stage-2 nesting parent.
    public let parent: SMMUv3PagingDomain
    /// The VMID every command of the guest uses (the parent's).
    public var vmid: UInt16 { parent.tag }

    struct VDeviceEntry {
        weak var vdevice: VDevice?
        let master: SMMUv3Master
    }
    /// vDevices by virtual StreamID.
    private let vdevices = Locked<[UInt64: VDeviceEntry]>([:])

    init(driver: SMMUv3Driver, parent: SMMUv3PagingDomain) {
        self.driver = driver
        self.parent = parent
    }

    /// The virtual StreamID of `master`, if it has a vDevice here.
    func virtualSID(of master: SMMUv3Master) -> UInt32? {
        vdevices.withLock { m in m.first { $0.value.master === master }.map { UInt32(truncatingIfNeeded: $0.key) } }
    }

    /// The vDevice of `master`.
    func vdevice(of master: SMMUv3Master) -> VDevice? {
        vdevices.withLock { m in m.first { $0.value.master === master }?.value.vdevice }
    }

    /// The StreamID of virtual StreamID `vsid` (`arm_vsmmu_vsid_to_sid`).
    func streamID(virtual vsid: UInt32) -> UInt32? {
        vdevices.withLock { $0[UInt64(vsid)]?.master.streamID }
    }

    // MARK: VIOMMUModel

    /// Nothing is returned to user space for this type.
    public func allocationOutput(memory: any UserMemory, data: DriverData?) throws(IOMMUError) {}

    /// A nested domain from `struct iommu_hwpt_arm_smmuv3` (`arm_vsmmu_alloc_domain_nested`).
    ///
    /// - Throws: `EOPNOTSUPP` for flags; `EINVAL` for another data type or a bad length; `E2BIG`
    ///   for non-zero bytes past the struct; `EIO` for a guest STE with fields the guest may not
    ///   set, a Config other than abort, bypass or stage-1 translate, or an EATS other than
    ///   none or full ATS.
    public func allocateNestedDomain(flags: HWPTFlags, data: DriverData, memory: any UserMemory) throws(IOMMUError) -> any IOMMUDomain {
        guard flags.isEmpty else { throw .notSupported("flags") }
        guard data.type == SMMUv3UAPI.hwptDataType else { throw .invalid("data type") }
        let arg = try data.load(SMMUv3HWPTData.self, minimumLength: MemoryLayout<SMMUv3HWPTData>.size, memory: memory)
        return try SMMUv3NestedDomain(viommu: self, ste0: UInt64(littleEndian: arg.ste.0), ste1: UInt64(littleEndian: arg.ste.1))
    }

    /// Runs the guest's SMMUv3 commands (`arm_vsmmu_cache_invalidate`): TLBI_NH_* with the
    /// vIOMMU's VMID, TLBI_NSNH_ALL as TLBI_NH_ALL of that VMID, CFGI_CD, CFGI_CD_ALL and
    /// ATC_INV with the StreamID of their virtual StreamID; batches of 63 commands, each with a
    /// CMD_SYNC. `handled` counts the entries converted before the first one refused. A command
    /// the SMMU finds malformed is skipped, as the kernel's driver skips it.
    ///
    /// - Throws: `EINVAL` for another data type or an empty array; `E2BIG` for non-zero bytes
    ///   past an entry; `EIO` for any other opcode or an unknown virtual StreamID.
    public func invalidate(_ entries: DriverArray, vdevices: [UInt32: VDevice], memory: any UserMemory,
                           handled: inout UInt32) throws(IOMMUError) {
        guard entries.type == SMMUv3UAPI.invalidateDataType else { throw .invalid("invalidation data type") }
        let commands = try entries.loadAll(SMMUv3InvalidateEntry.self, memory: memory)
        var batch: [(UInt64, UInt64)] = []
        batch.reserveCapacity(64)
        var converted: UInt32 = 0
        var failure: IOMMUError? = nil
        for entry in commands {
            var w0 = UInt64(littleEndian: entry.cmd.0), w1 = UInt64(littleEndian: entry.cmd.1)
            switch UInt8(truncatingIfNeeded: w0) {
            case SMMUv3Opcode.tlbiNSNHAll.rawValue:
                w0 = UInt64(SMMUv3Opcode.tlbiNHAll.rawValue) | (UInt64(vmid) << 32)
                w1 = 0
            case SMMUv3Opcode.tlbiNHVA.rawValue, SMMUv3Opcode.tlbiNHVAA.rawValue, SMMUv3Opcode.tlbiNHAll.rawValue,
                 SMMUv3Opcode.tlbiNHASID.rawValue:
                w0 = (w0 & ~(UInt64(0xFFFF) << 32)) | (UInt64(vmid) << 32)
            case SMMUv3Opcode.atcInv.rawValue, SMMUv3Opcode.cfgiCD.rawValue, SMMUv3Opcode.cfgiCDAll.rawValue:
                guard let sid = streamID(virtual: UInt32(truncatingIfNeeded: w0 >> 32)) else {
                    failure = .ioError("unknown virtual StreamID")
                    break
                }
                w0 = (w0 & 0xFFFF_FFFF) | (UInt64(sid) << 32)
            default:
                failure = .ioError("command not allowed")
            }
            if failure != nil { break }
            batch.append((w0, w1))
            converted += 1
            if batch.count == 63 {
                batch.append(SMMUv3Command.syncNone.words)
                driver.issueRaw(batch)
                batch.removeAll(keepingCapacity: true)
            }
        }
        // Unlike the kernel, which drops the converted commands of an unfinished batch when a
        // later one is refused, those commands are issued: `handled` says they were.
        if !batch.isEmpty {
            batch.append(SMMUv3Command.syncNone.words)
            driver.issueRaw(batch)
        }
        handled = converted
        if let failure { throw failure }
    }

    /// Accepts a vDevice (one StreamID per device, as `arm_vsmmu_vdevice_init` requires).
    ///
    /// - Throws: `EINVAL` for a device of another SMMU.
    public func vdeviceAllocated(_ vdevice: VDevice) throws(IOMMUError) {
        guard let master = vdevice.device.model.iommuDevice as? SMMUv3Master, master.smmuDriver === driver else {
            throw .invalid("device is not behind this SMMU")
        }
        vdevices.withLock { $0[vdevice.virtualID] = VDeviceEntry(vdevice: vdevice, master: master) }
    }

    /// Forgets a vDevice (and stops routing its device's events here).
    public func vdeviceDestroyed(_ vdevice: VDevice) {
        let master: SMMUv3Master? = vdevices.withLock { m in
            guard let e = m[vdevice.virtualID], e.vdevice === vdevice || e.vdevice == nil else { return nil }
            m.removeValue(forKey: vdevice.virtualID)
            return e.master
        }
        if let master {
            var keep: [AnyObject] = []
            driver.state.withLock { _ in
                keep = master.references
                if master.vmaster?.viommu === self { master.vmaster = nil }
            }
            withExtendedLifetime(keep) {}
        }
    }

    /// No HW queues for this type.
    public func checkHWQueue(type: UInt32, index: UInt32, base: UInt64, length: UInt64) throws(IOMMUError) {
        throw .notSupported("SMMUv3 vIOMMUs have no HW queues")
    }

    /// Never called (``checkHWQueue(type:index:base:length:)`` refuses).
    public func hwQueueAllocated(_ queue: HWQueue) throws(IOMMUError) { throw .notSupported("no HW queues") }

    /// Never called.
    public func hwQueueDestroyed(_ queue: HWQueue) {}

    /// No mmap region.
    public func mmapRegion(offset: UInt64, length: UInt64) -> (offset: UInt64, length: UInt64)? { nil }
}

/// A nested domain: the guest's STE words over the vIOMMU's stage-2 parent
/// (the kernel's `arm_smmu_nested_domain`).
public final class SMMUv3NestedDomain: IOMMUDomain, @unchecked Sendable {
    /// What the guest STE asks for.
    public enum Config: Sendable {
        /// `V == 0` or Config abort.
        case abort
        /// Config bypass: the parent's stage 2 only.
        case bypass
        /// Config stage-1 translate: the guest's CD table over stage 2.
        case stage1
    }

    /// The vIOMMU.
    public let viommu: SMMUv3VIOMMU
    /// The guest STE's words 0 and 1 as validated (EATS cleared).
    public let guestSTE: (UInt64, UInt64)
    /// Whether the guest enabled full ATS (EATS = 0b01) on a translating STE.
    public let enableATS: Bool
    /// The configuration.
    public let config: Config

    /// Bits a guest may set in word 0: V, Config, S1Fmt, S1ContextPtr, S1CDMax.
    static let allowed0: UInt64 = 0b1 | 0b1110 | 0b11_0000 | (((1 << 46) - 1) << 6) | (0x1F << 59)
    /// Bits a guest may set in word 1: S1DSS, S1CIR, S1COR, S1CSH, S1STALLD, EATS.
    static let allowed1: UInt64 = 0xFF | (1 << 27) | (0b11 << 28)

    /// Validates the guest STE (`arm_smmu_validate_vste`).
    init(viommu: SMMUv3VIOMMU, ste0: UInt64, ste1: UInt64) throws(IOMMUError) {
        self.viommu = viommu
        guard ste0 & 1 != 0 else {
            guestSTE = (0, 0)
            enableATS = false
            config = .abort
            return
        }
        guard ste0 & ~Self.allowed0 == 0, ste1 & ~Self.allowed1 == 0 else { throw .ioError("guest STE sets fields it may not") }
        let cfg = (ste0 >> 1) & 7
        let eats = (ste1 >> 28) & 3
        switch cfg {
        case SMMUv3StreamTableEntry.Config.abort.rawValue: config = .abort
        case SMMUv3StreamTableEntry.Config.bypass.rawValue: config = .bypass
        case SMMUv3StreamTableEntry.Config.stage1.rawValue: config = .stage1
        default: throw .ioError("guest STE Config")
        }
        guard eats == 0 || eats == 1 else { throw .ioError("guest STE EATS") }
        enableATS = config == .stage1 && eats == 1
        guestSTE = (ste0, ste1 & ~(0b11 << 28))
    }

    /// Guest invalidations go through the vIOMMU.
    public func invalidate(_ entries: DriverArray, memory: any UserMemory, handled: inout UInt32) throws(IOMMUError) {
        throw .notSupported("invalidate through the vIOMMU")
    }
}
