// The SMMUv3 driver through the core's Swift API: hardware info, paging domains (DMA lands in
// the user buffer), PASIDs, dirty tracking, I/O page faults through the fault queue, and the
// uAPI mirrors against the ABI target's checked layouts.

import Testing
import IOASIDCore
import IOASIDLinuxABI
@testable import IOASIDSoftDrivers
@testable import IOASIDSoftIOMMU

@Suite struct SMMUv3DriverTests {
    @Test func uapiMirrorsAgreeWithTheCheckedLayouts() {
        func offsets<T>(_ type: T.Type, _ paths: [PartialKeyPath<T>]) -> [Int] { paths.map { MemoryLayout<T>.offset(of: $0)! } }
        #expect(MemoryLayout<SMMUv3HardwareInfoData>.size == iommu_hw_info_arm_smmuv3.byteSize)
        #expect(offsets(SMMUv3HardwareInfoData.self, [\.flags, \.reserved, \.idr, \.iidr, \.aidr])
                == iommu_hw_info_arm_smmuv3.layoutFields.map(\.offset))
        #expect(MemoryLayout<SMMUv3HWPTData>.size == iommu_hwpt_arm_smmuv3.byteSize)
        #expect(iommu_hwpt_arm_smmuv3.layoutField(named: "ste")?.size == MemoryLayout<(UInt64, UInt64)>.size)
        #expect(MemoryLayout<SMMUv3InvalidateEntry>.size == iommu_viommu_arm_smmuv3_invalidate.byteSize)
        #expect(MemoryLayout<SMMUv3VEventData>.size == iommu_vevent_arm_smmuv3.byteSize)
        #expect(SMMUv3UAPI.hwInfoType == UAPI.IOMMU_HW_INFO_TYPE_ARM_SMMUV3)
        #expect(SMMUv3UAPI.hwptDataType == UAPI.IOMMU_HWPT_DATA_ARM_SMMUV3)
        #expect(SMMUv3UAPI.viommuType == UAPI.IOMMU_VIOMMU_TYPE_ARM_SMMUV3)
        #expect(SMMUv3UAPI.invalidateDataType == UAPI.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3)
        #expect(SMMUv3UAPI.veventqType == UAPI.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3)
        #expect(SMMUv3UAPI.capabilityATSNotSupported == UAPI.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED)
        #expect(SMMUv3UAPI.capabilityPASIDExecute == UAPI.IOMMU_HW_CAP_PCI_PASID_EXEC)
        #expect(SMMUv3UAPI.capabilityPASIDPrivileged == UAPI.IOMMU_HW_CAP_PCI_PASID_PRIV)
        #expect(SMMUv3UAPI.faultWrite == UAPI.IOMMU_PGFAULT_PERM_WRITE && SMMUv3UAPI.faultPrivileged == UAPI.IOMMU_PGFAULT_PERM_PRIV)
    }

    @Test func hardwareInfoReportsTheIDRegisters() throws {
        try pinsShared {
            let rig = try SMMURig(capabilities: .init(pasidWidth: 20, executePermission: true, ats: .deviceTLB))
            let info = try rig.context.hardwareInfo(rig.device)
            #expect(info.type == UAPI.IOMMU_HW_INFO_TYPE_ARM_SMMUV3)
            #expect(info.data.count == 40)
            let words = stride(from: 0, to: 40, by: 4).map { i in info.data[i..<(i + 4)].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) } }
            let id = rig.driver.smmu.idRegisters
            #expect(words[0] == 0 && words[1] == 0)
            #expect(Array(words[2..<8]) == id.idr)
            #expect(words[8] == id.iidr && words[9] == id.aidr)
            #expect(info.maxPASIDLog2 == 20)
            #expect(info.capabilities == UAPI.IOMMU_HW_CAP_DIRTY_TRACKING | UAPI.IOMMU_HW_CAP_PCI_PASID_EXEC)
            #expect(try rig.context.hardwareInfo(rig.device, type: UAPI.IOMMU_HW_INFO_TYPE_ARM_SMMUV3).type == 2)
            expectErrno(95) { try rig.context.hardwareInfo(rig.device, type: UAPI.IOMMU_HW_INFO_TYPE_INTEL_VTD) }
            // A device without ATS, on an SMMU without dirty state.
            var features = SMMUv3Features()
            features.hardwareDirtyState = false
            let plain = try SMMURig(features: features, capabilities: .init())
            let p = try plain.context.hardwareInfo(plain.device)
            #expect(p.capabilities == UAPI.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED && p.maxPASIDLog2 == 0)
        }
    }

    @Test func stage1DomainDMALandsInTheUserBuffer() throws {
        try pinsShared {
            let rig = try SMMURig()
            let buffer = UserBuffer(pages: 4)
            let ioas = try rig.context.allocateIOAS()
            _ = try rig.context.map(ioas, source: .user(address: buffer.address), length: 4 * 4096, iova: 0x10_0000, access: .readWrite)
            let hwpt = try rig.context.attach(rig.device, to: ioas.object)
            // The STE holds the host CD table, CD 0 the domain.
            let ste = rig.ste
            #expect(ste.valid && ste.config == .stage1 && ste.s1DSS == 2 && ste.s1CDMax == 20 && ste.s1Fmt == 2)
            #expect(rig.master.function.write(address: 0x10_1004, bytes: [0xDE, 0xAD]).completedValue != nil)
            #expect(buffer[4096 + 4] == 0xDE && buffer[4096 + 5] == 0xAD)
            buffer[3 * 4096] = 0x77
            #expect(rig.master.function.read(address: 0x10_3000, count: 1).completedValue == [0x77])
            // Unmapping invalidates: the next DMA faults (F_TRANSLATION, recorded, no vIOMMU to take it).
            _ = try rig.context.unmap(ioas, iova: 0x10_0000, length: 4 * 4096)
            #expect(rig.master.function.read(address: 0x10_3000, count: 1).failed)
            rig.driver.processInterrupts()
            let events = rig.driver.takeUnhandledEvents()
            #expect(events.map(\.id) == [.translation])
            #expect(events.first?.inputAddress == 0x10_3000 && events.first?.streamID == rig.master.streamID)
            try rig.context.detach(rig.device)
            #expect(rig.ste == SMMUv3Driver.abortSTE)
            // The automatic domain went with its last device.
            expectErrno(2) { try rig.context.destroy(hwpt.object) }
        }
    }

    @Test func stage2DomainAndTheFlagsOfPagingDomains() throws {
        try pinsShared {
            let rig = try SMMURig()
            let buffer = UserBuffer(pages: 1)
            let ioas = try rig.context.allocateIOAS()
            _ = try rig.context.map(ioas, source: .user(address: buffer.address), length: 4096, iova: 0x4000_0000, access: .readWrite)
            let parent = try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [.nestParent], data: nil)
            _ = try rig.context.attach(rig.device, to: parent.object)
            let ste = rig.ste
            #expect(ste.config == .stage2 && ste.s2AA64 && ste.s2R && ste.s2PTW && ste.s2FWB && ste.s2T0SZ == 16 && ste.s2SL0 == 2)
            #expect(rig.master.function.write(address: 0x4000_0010, bytes: [9]).completedValue != nil)
            #expect(buffer[16] == 9)
            // Flags as the kernel's driver takes them.
            expectErrno(95) { try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [.nestParent, .dirtyTracking], data: nil) }
            expectErrno(95) { try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [.nestParent, .pasid], data: nil) }
            var data: UInt64 = 0
            withUnsafeMutablePointer(to: &data) { p in
                expectErrno(95) {
                    try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [],
                                                 data: DriverData(type: 2, address: UInt64(UInt(bitPattern: p)), length: 8))
                }
            }
            var s2Only = SMMUv3Features()
            s2Only.stage1 = false
            let rig2 = try SMMURig(features: s2Only)
            let ioas2 = try rig2.context.allocateIOAS()
            expectErrno(95) { try rig2.context.allocateHWPT(device: rig2.device, parent: ioas2.object, flags: [.pasid], data: nil) }
            expectErrno(95) { try rig2.context.allocateHWPT(device: rig2.device, parent: ioas2.object, flags: [.nestParent], data: nil) }
            _ = try rig2.context.attach(rig2.device, to: ioas2.object)
            #expect(rig2.ste.config == .stage2)
        }
    }

    @Test func pasidAttachmentsUseTheHostCDTable() throws {
        try pinsShared {
            let rig = try SMMURig()
            let buffer = UserBuffer(pages: 2)
            let ioas = try rig.context.allocateIOAS()
            _ = try rig.context.map(ioas, source: .user(address: buffer.address), length: 2 * 4096, iova: 0x20_0000, access: .readWrite)
            let hwpt = try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [.pasid], data: nil)
            _ = try rig.context.attach(rig.device, pasid: 5, to: hwpt.object)
            // RID blocked: CD table with S1DSS = terminate.
            #expect(rig.ste.config == .stage1 && rig.ste.s1DSS == 0)
            let f = rig.master.function
            #expect(f.write(pasid: 5, address: 0x20_0008, bytes: [5]).completedValue != nil)
            #expect(buffer[8] == 5)
            // Another PASID: its CD is invalid, the DMA is blocked and reported (C_BAD_CD).
            #expect(f.write(pasid: 6, address: 0x20_0008, bytes: [6]).failed)
            // Without PASID: S1DSS terminates (F_STREAM_DISABLED).
            #expect(f.write(address: 0x20_0008, bytes: [7]).failed)
            rig.driver.processInterrupts()
            #expect(rig.driver.takeUnhandledEvents().map(\.id) == [.badCD, .streamDisabled])
            #expect(buffer[8] == 5)
            // A stage-2 domain at the RID while a PASID is attached: the core refuses it (EINVAL: not
            // PASID-compatible; the driver has no PASID-compatible stage-2 domain to offer).
            let parent = try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [.nestParent], data: nil)
            expectErrno(22) { try rig.context.attach(rig.device, to: parent.object) }
            // A stage-1 domain at the RID shares the CD table (S1DSS = SSID0).
            let rid = try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [.pasid], data: nil)
            _ = try rig.context.attach(rig.device, to: rid.object)
            #expect(rig.ste.s1DSS == 2)
            #expect(f.write(address: 0x20_1000, bytes: [8]).completedValue != nil && buffer[4096] == 8)
            try rig.context.detach(rig.device, pasid: 5)
            #expect(f.write(pasid: 5, address: 0x20_0008, bytes: [9]).failed)
            try rig.context.detach(rig.device)
            #expect(rig.ste == SMMUv3Driver.abortSTE)
            #expect(rig.master.cdTable == nil)
        }
    }

    @Test func dirtyTrackingThroughDBM() throws {
        try pinsShared {
            let rig = try SMMURig()
            let buffer = UserBuffer(pages: 4)
            let ioas = try rig.context.allocateIOAS()
            _ = try rig.context.map(ioas, source: .user(address: buffer.address), length: 4 * 4096, iova: 0x30_0000, access: .readWrite)
            let hwpt = try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [.dirtyTracking], data: nil)
            _ = try rig.context.attach(rig.device, to: hwpt.object)
            try rig.context.setDirtyTracking(hwpt, enabled: true)
            let f = rig.master.function
            #expect(f.read(address: 0x30_0000, count: 4).completedValue != nil)
            #expect(f.write(address: 0x30_2000, bytes: [1]).completedValue != nil)
            func dirty(keep: Bool = false) throws -> [UInt64] {
                var units: [UInt64] = []
                try rig.context.readDirty(hwpt, iova: 0x30_0000, length: 4 * 4096, pageSize: 4096, keep: keep) { units.append($0) }
                return units
            }
            #expect(try dirty(keep: true) == [2])
            #expect(try dirty() == [2])
            #expect(try dirty() == [])
            // Cleared and invalidated: the next write dirties the page again, a read does not.
            #expect(f.write(address: 0x30_2000, bytes: [2]).completedValue != nil)
            #expect(f.read(address: 0x30_1000, count: 1).completedValue != nil)
            #expect(try dirty() == [2])
        }
    }

    @Test func pageFaultsReachTheFaultQueueAndTheResponseReachesTheDevice() throws {
        try pinsShared {
            let rig = try SMMURig(capabilities: .init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 16))
            let buffer = UserBuffer(pages: 2)
            let ioas = try rig.context.allocateIOAS()
            let faults = try rig.context.allocateFaultQueue()
            let hwpt = try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [.faultIDValid, .pasid], data: nil,
                                                   faultQueue: faults.objectID)
            _ = try rig.context.attach(rig.device, pasid: 9, to: hwpt.object)
            let f = rig.master.function
            #expect(f.control.ats && f.control.pri)
            // Nothing mapped: the device gets no rights from ATS and sends a page request.
            let pending = try #require(f.write(pasid: 9, address: 0x50_0000, bytes: [0x5A]).parked)
            rig.driver.processInterrupts()
            let records = try rig.context.readFaults(faults, maxRecords: 8)
            #expect(records.count == 1)
            let r = try #require(records.first)
            #expect(r.address == 0x50_0000 && r.pasid == 9 && r.flags & PageFaultRecord.pasidValid != 0 && r.flags & PageFaultRecord.lastPage != 0)
            #expect(r.permissions & UAPI.IOMMU_PGFAULT_PERM_WRITE != 0 && r.groupID == UInt32(pending.groupIndex))
            // The owner maps the page and answers: CMD_PRI_RESP reaches the device, which retries.
            _ = try rig.context.map(ioas, source: .user(address: buffer.address), length: 4096, iova: 0x50_0000, access: .readWrite)
            #expect(!f.isAnswered(pending))
            try rig.context.respond(faults, cookie: r.cookie, code: UAPI.IOMMUFD_PAGE_RESP_SUCCESS)
            #expect(f.isAnswered(pending))
            #expect(f.resume(pending).completedValue != nil)
            #expect(buffer[0] == 0x5A)
            // An answer of Invalid fails the DMA.
            let second = try #require(f.write(pasid: 9, address: 0x60_0000, bytes: [1]).parked)
            rig.driver.processInterrupts()
            let r2 = try #require(try rig.context.readFaults(faults, maxRecords: 8).first)
            try rig.context.respond(faults, cookie: r2.cookie, code: UAPI.IOMMUFD_PAGE_RESP_INVALID)
            guard case .failed(.pageRequestFailed(.invalidRequest)) = f.resume(second) else { Issue.record("expected a denial"); return }
            // A domain without a fault queue: the driver denies the request itself.
            let plain = try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [.pasid], data: nil)
            _ = try rig.context.attach(rig.device, pasid: 10, to: plain.object)
            let third = try #require(f.write(pasid: 10, address: 0x70_0000, bytes: [1]).parked)
            rig.driver.processInterrupts()
            #expect(f.isAnswered(third))
            #expect(f.resume(third).failed)
        }
    }
}
