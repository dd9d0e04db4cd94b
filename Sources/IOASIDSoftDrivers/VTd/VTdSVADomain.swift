// The VT-d SVA domain: a device PASID translating through a process's CPU page table, as the
// Linux intel driver's SVA domain (drivers/iommu/intel/svm.c) does it.
//
// Attached, it is a PASID entry with PGTT first-stage only, FSPTPTR the process's page table root
// (FSPM 1 for 5-level paging), page-walk snoop. It observes the process:
//   invalidate(first, last)  PASID-based IOTLB invalidation (page-selective, or PASID-selective
//                            beyond MAMV) for its domain ID and each attached PASID, and a
//                            PASID-based device-TLB invalidation for devices with ATS — the
//                            driver's arch_invalidate_secondary_tlbs;
//   released()               every PASID entry torn down (clear P, PASID cache, IOTLB, device
//                            TLB) — the driver's mm release; DMA with the PASID is blocked and
//                            recorded from then on.
//
// Difference from Linux: each SVA domain has its own domain ID (Linux tags every SVA PASID
// entry with FLPT_DEFAULT_DID), because here a context that is not enrolled in an IOASID set may
// bind two processes at the same PASID number on two devices, and the IOTLB tags first-stage
// entries by (domain ID, PASID).
//
// Locks: `state` is held while a PASID entry is programmed or torn down for this domain, so an
// attach and the process's exit cannot interleave (an attach after release fails with ESRCH). It
// nests outside the host tables' lock and the invalidation queue.

import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

/// A VT-d SVA domain: attached PASIDs translate through ``process``'s page table.
public final class VTdSVADomain: IOMMUDomain, AddressSpaceObserver, VTdDomainAttachments, @unchecked Sendable {
    /// The driver.
    public let driver: VTdDriver
    /// The process whose page table the device shares.
    public let process: ModelledProcess
    /// The domain ID that tags its IOTLB entries.
    public let domainID: UInt16

    struct State {
        var attachments: [VTdAttachment] = []
        var released = false
    }
    let state = Locked(State())

    init(driver: VTdDriver, process: ModelledProcess) throws(IOMMUError) {
        self.driver = driver
        self.process = process
        domainID = try driver.allocateDomainID()
        do throws(IOMMUError) { try process.addObserver(self) } catch {
            driver.releaseDomainID(domainID)
            throw error
        }
    }

    deinit {
        process.removeObserver(self)
        driver.releaseDomainID(domainID)
    }

    /// Where the domain is attached (device, PASID).
    var attachments: [VTdAttachment] { state.withLock { $0.attachments } }

    /// Whether the process has exited (the domain is attached nowhere and takes no attachment).
    public var isReleased: Bool { state.withLock { $0.released } }

    /// The PASID entry: first-stage only, FSPTPTR = the process's page table root.
    func pasidEntry() -> VTdPASIDEntry {
        var e = VTdPASIDEntry()
        e.firstStageTable = process.pageTableRoot
        if process.pagingLevels == 5 { e.firstStagePagingMode = 1 }
        e.domainID = domainID
        e.addressWidth = 2
        e.pageWalkSnoop = true
        e.pgtt = .firstStage
        e.present = true
        return e
    }

    /// Programs `device`'s PASID entry for `pasid` and records the attachment, unless the
    /// process has exited.
    ///
    /// - Throws: `ESRCH` after the process exited; `EBUSY` when the entry is present;
    ///   `ENOMEM` without frames for the PASID table.
    func attach(_ device: VTdDevice, pasid: UInt32) throws(IOMMUError) {
        try state.withLock { (s) throws(IOMMUError) in
            guard !s.released else { throw .noProcess("the process has exited") }
            do throws(VTdTableError) {
                try driver.tables.setPASIDEntry(device.requesterID, pasid: pasid, pasidEntry())
            } catch {
                switch error {
                case .busy: throw .busy("PASID entry is present")
                case .outOfMemory: throw .noMemory("no frames for the PASID table")
                default: throw .invalid("cannot program the PASID entry")
                }
            }
            s.attachments.append(VTdAttachment(device: device, pasid: pasid))
        }
    }

    /// Attachments are recorded by ``attach(_:pasid:)``.
    func added(_ device: VTdDevice, pasid: UInt32?) {}

    /// Forgets the attachment at (`device`, `pasid`) (the entry was torn down by the device).
    func removed(_ device: VTdDevice, pasid: UInt32?) {
        state.withLock { $0.attachments.removeAll { $0.device === device && $0.pasid == pasid } }
    }

    // MARK: AddressSpaceObserver

    /// Drops `[first, last]` of every attached PASID from the IOTLB and the device TLBs; returns
    /// when the invalidations completed (the device TLB's after the device drained its DMA).
    public func invalidate(first: UInt64, last: UInt64) {
        let list = attachments
        guard !list.isEmpty else { return }
        let range = VTdPageRange.covering(first: first, last: last)
        let cap = driver.unit.capability
        let wide = Int(range.mask) > cap.maximumAddressMaskValue
        var invs: [VTdInvalidation] = []
        for a in list {
            let pasid = a.pasid ?? 0
            invs.append(wide ? .pasidIOTLB(.pasid(domainID, pasid)) : .pasidIOTLB(.page(domainID, pasid, range)))
            if a.device.usesDeviceTLB {
                invs.append(a.device.deviceTLBInvalidation(pasid: a.pasid,
                                                           range: VTdDeviceTLBRange(address: range.first, order: Int(range.mask))))
            }
        }
        driver.flush(invs)
    }

    /// Tears down every PASID entry of this domain (with the PASID-cache, IOTLB and device-TLB
    /// invalidations); later attaches fail with `ESRCH`.
    public func released() {
        state.withLock { s in
            s.released = true
            for a in s.attachments {
                _ = try? driver.tables.clearPASIDEntry(a.device.requesterID, pasid: a.device.tableSlot(a.pasid))
            }
        }
    }
}

extension VTdDriver {
    /// Allocates an SVA domain for `addressSpace` (a ``ModelledProcess`` in this unit's memory),
    /// after the checks of the Linux driver's `intel_iommu_sva_supported`.
    ///
    /// - Throws: `ENODEV` when the unit has no PASIDs or first-stage translation, or the process
    ///   uses 5-level paging without FS5LP; `EINVAL` for a device without an enabled PASID
    ///   capability or ATS, one with PRI that is not enabled, or an address space that is not a
    ///   modelled process in this unit's memory; `ESRCH` when the process exited.
    public func allocateSVADomain(device: any DeviceModel, addressSpace: any SharedAddressSpace) throws(IOMMUError) -> any IOMMUDomain {
        let ecap = unit.extendedCapability
        guard ecap.pasid, ecap.firstStageTranslation else { throw .noDevice("the VT-d unit cannot do SVA") }
        guard let d = device as? VTdDevice, d.vtd === self else { throw .invalid("not a device of this VT-d unit") }
        let control = d.function.control
        guard d.maxPASIDs > 0, control.pasid else { throw .invalid("PASID is not enabled") }
        guard d.usesDeviceTLB, control.ats else { throw .invalid("SVA needs ATS") }
        if d.function.capabilities.pageRequestCapacity != nil && ecap.pageRequests && !control.pri {
            throw .invalid("the device has PRI but it is not enabled")
        }
        guard let process = addressSpace as? ModelledProcess, process.memory === unit.memory else {
            throw .invalid("the address space is not a modelled process in this IOMMU's memory")
        }
        if process.pagingLevels == 5 && !unit.capability.firstStage5LevelPaging { throw .noDevice("no 5-level first-stage paging") }
        return try VTdSVADomain(driver: self, process: process)
    }
}
