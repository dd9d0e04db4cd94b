import Foundation
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Testing

/// The VT-d driver under the core, through the core's Swift API (`Context`).
@Suite struct VTdDriverTests {
    // MARK: Hardware info and ABI mirrors

    @Test func hardwareInfoReportsVTdCapabilities() throws {
        try pinsShared {
            let x = try VTdSetup()
            let (_, id) = try x.device(privileged: true)
            let info = try x.context.hardwareInfo(id)
            #expect(info.type == 1)                                   // IOMMU_HW_INFO_TYPE_INTEL_VTD
            #expect(info.data.count == 24)
            let vtd = try #require(VTdHWInfo(bytes: info.data))
            #expect(vtd.flags == 1)                                   // IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17
            #expect(vtd.capabilityRegister == x.driver.unit.capability.rawValue)
            #expect(vtd.extendedCapabilityRegister == x.driver.unit.extendedCapability.rawValue)
            #expect(vtd.capabilityRegister == 0x11D2_078C_402F_0406 && vtd.extendedCapabilityRegister == 0x0003_ED9A_A400_50C7)
            #expect(info.maxPASIDLog2 == 20)
            #expect(info.capabilities == 1 | 1 << 2)                 // DIRTY_TRACKING | PCI_PASID_PRIV
            #expect(try x.context.hardwareInfo(id, type: 1).type == 1)
            expectVTdErrno(95) { try x.context.hardwareInfo(id, type: 2) }   // ARM SMMUv3: EOPNOTSUPP
            // A device without ATS and PASID: ATS_NOT_SUPPORTED, no PASIDs.
            let (_, plain) = try x.device(RequesterID(bus: 0x10, device: 1, function: 0), pasid: false, ats: false)
            let p = try x.context.hardwareInfo(plain)
            #expect(p.maxPASIDLog2 == 0 && p.capabilities == 1 | 1 << 3)
            // Without SSADS there is no dirty tracking.
            var c = VTdConfiguration()
            c.secondStageAccessedDirty = false
            let y = try VTdSetup(configuration: c)
            let (_, yid) = try y.device()
            #expect(try y.context.hardwareInfo(yid).capabilities & 1 == 0)
        }
    }

    @Test func uapiMirrorsMatchTheCheckedLayouts() {
        func offsets<T: UAPIStruct>(_ t: T.Type) -> [String: Int] {
            Dictionary(uniqueKeysWithValues: T.layoutFields.map { ($0.name, $0.offset) })
        }
        #expect(MemoryLayout<VTdHWInfo>.size == iommu_hw_info_vtd.byteSize)
        #expect(offsets(iommu_hw_info_vtd.self) == ["flags": MemoryLayout<VTdHWInfo>.offset(of: \.flags)!,
                                                    "__reserved": MemoryLayout<VTdHWInfo>.offset(of: \.reserved)!,
                                                    "cap_reg": MemoryLayout<VTdHWInfo>.offset(of: \.capabilityRegister)!,
                                                    "ecap_reg": MemoryLayout<VTdHWInfo>.offset(of: \.extendedCapabilityRegister)!])
        #expect(MemoryLayout<VTdStage1Data>.size == iommu_hwpt_vtd_s1.byteSize)
        #expect(offsets(iommu_hwpt_vtd_s1.self) == ["flags": MemoryLayout<VTdStage1Data>.offset(of: \.flags)!,
                                                    "pgtbl_addr": MemoryLayout<VTdStage1Data>.offset(of: \.pageTableAddress)!,
                                                    "addr_width": MemoryLayout<VTdStage1Data>.offset(of: \.addressWidth)!,
                                                    "__reserved": MemoryLayout<VTdStage1Data>.offset(of: \.reserved)!])
        #expect(VTdStage1Data.minimumLength == iommu_hwpt_vtd_s1.layoutField(named: "__reserved")!.end)
        #expect(MemoryLayout<VTdStage1Invalidation>.size == iommu_hwpt_vtd_s1_invalidate.byteSize)
        #expect(offsets(iommu_hwpt_vtd_s1_invalidate.self) == [
            "addr": MemoryLayout<VTdStage1Invalidation>.offset(of: \.address)!,
            "npages": MemoryLayout<VTdStage1Invalidation>.offset(of: \.pageCount)!,
            "flags": MemoryLayout<VTdStage1Invalidation>.offset(of: \.flags)!,
            "__reserved": MemoryLayout<VTdStage1Invalidation>.offset(of: \.reserved)!])
        #expect(VTdStage1Invalidation.minimumLength == iommu_hwpt_vtd_s1_invalidate.layoutField(named: "__reserved")!.end)
        #expect(VTdUAPI.hwInfoTypeVTd == UAPI.IOMMU_HW_INFO_TYPE_INTEL_VTD)
        #expect(VTdUAPI.hwptDataVTdS1 == UAPI.IOMMU_HWPT_DATA_VTD_S1)
        #expect(VTdUAPI.invalidateDataVTdS1 == UAPI.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1)
        #expect(VTdUAPI.invalidateLeaf == UAPI.IOMMU_VTD_INV_FLAGS_LEAF)
        #expect(VTdUAPI.hwInfoErrata772415 == UAPI.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17)
        #expect([VTdUAPI.s1SupervisorRequests, VTdUAPI.s1ExtendedAccessedFlag, VTdUAPI.s1WriteProtect]
            == [UAPI.IOMMU_VTD_S1_SRE, UAPI.IOMMU_VTD_S1_EAFE, UAPI.IOMMU_VTD_S1_WPE])
    }

    // MARK: DMA through paging domains

    @Test func dmaLandsInTheUserBuffer() throws {
        try pinsShared {
            let x = try VTdSetup()
            let (d, id) = try x.device()
            let buffer = VTdUserBuffer(pages: 4)
            let ioas = try x.context.allocateIOAS()
            _ = try x.context.map(ioas, source: .user(address: buffer.address), length: 0x3000, iova: 0x10_0000, access: .readWrite)
            let hwpt = try x.context.attach(id, to: ioas.object)
            #expect(d.attachedDomain() is VTdPagingDomain)
            #expect(dmaWrite(d, 0x10_1FFE, [1, 2, 3, 4]))             // crosses a page: two translations
            #expect(buffer[0x1FFE] == 1 && buffer[0x2001] == 4)
            buffer[0x10] = 0x5A
            #expect(dmaRead(d, 0x10_0010, count: 1) == [0x5A])
            // Unmapped IOVA: the ATS completion grants nothing; no PRI domain, so the DMA fails.
            #expect(!dmaWrite(d, 0x20_0000, [1]))
            // Unmapping through the core flushes the IOTLB and the device's ATC: DMA stops at once.
            _ = try x.context.unmap(ioas, iova: 0x10_0000, length: 0x3000)
            #expect(!dmaWrite(d, 0x10_0000, [9]))
            #expect(buffer[0] == 0)
            // Detach tears down the RID_PASID entry: requests are blocked and recorded (0x59).
            _ = try x.context.map(ioas, source: .user(address: buffer.address), length: 0x1000, iova: 0x10_0000, access: .readWrite)
            #expect(dmaWrite(d, 0x10_0000, [7]) && buffer[0] == 7)
            try x.context.detach(id)
            #expect(try x.context.attachedHWPT(id) == nil && hwpt.rawValue != 0)
            d.function.control.ats = false
            #expect(!dmaWrite(d, 0x10_0000, [8]))
            #expect(buffer[0] == 7)
            #expect(x.driver.unit.takeFaults().map(\.reason).contains(.pasidEntryNotPresent))
        }
    }

    @Test func pasidAttachIsPerPASIDAndUnattachedPASIDsAreBlocked() throws {
        try pinsShared {
            let x = try VTdSetup()
            let (d, id) = try x.device()
            let a = VTdUserBuffer(pages: 1), b = VTdUserBuffer(pages: 1)
            let ioasA = try x.context.allocateIOAS(), ioasB = try x.context.allocateIOAS()
            _ = try x.context.map(ioasA, source: .user(address: a.address), length: 0x1000, iova: 0x4000, access: .readWrite)
            _ = try x.context.map(ioasB, source: .user(address: b.address), length: 0x1000, iova: 0x4000, access: .readWrite)
            let hA = try x.context.allocateHWPT(device: id, parent: ioasA.object, flags: [.pasid], data: nil)
            let hB = try x.context.allocateHWPT(device: id, parent: ioasB.object, flags: [.pasid], data: nil)
            _ = try x.context.attach(id, pasid: 5, to: hA.object)
            _ = try x.context.attach(id, pasid: 6, to: hB.object)
            #expect(dmaWrite(d, pasid: 5, 0x4000, [0xA5]))
            #expect(dmaWrite(d, pasid: 6, 0x4000, [0xB6]))
            #expect(a[0] == 0xA5 && b[0] == 0xB6)
            // The host programmed exactly these PASID entries (PGTT second stage, distinct DIDs).
            let e5 = try #require(x.driver.tables.pasidEntry(d.requesterID, pasid: 5))
            let e6 = try #require(x.driver.tables.pasidEntry(d.requesterID, pasid: 6))
            #expect(e5.present && e5.pgtt == .secondStage && e6.pgtt == .secondStage && e5.domainID != e6.domainID)
            // PASID 7 was never attached: blocked, never translated, recorded.
            #expect(!dmaWrite(d, pasid: 7, 0x4000, [0xFF]))
            #expect(x.driver.unit.takeFaults().map(\.pasid) == [7])
            // Replace PASID 5 with B: the ATC entry of the old translation is gone with the teardown.
            _ = try x.context.replace(id, pasid: 5, with: hB.object)
            #expect(dmaWrite(d, pasid: 5, 0x4000, [0x55]))
            #expect(b[0] == 0x55 && a[0] == 0xA5)
            try x.context.detach(id, pasid: 5)
            #expect(!dmaWrite(d, pasid: 5, 0x4000, [0x66]))
            #expect(b[0] == 0x55)
            #expect(x.driver.tables.pasidEntry(d.requesterID, pasid: 5)?.present == false)
        }
    }

    // MARK: Dirty tracking

    /// Untranslated DMA: the second-stage walker sets D on writes only. (With ATS, a translation
    /// request that asks for write — as the PCI function model always does — dirties the page
    /// when the IOMMU grants write, as hardware does; see the ATS variant below.)
    @Test(arguments: [false, true])
    func dirtyTrackingThroughTheSecondStageDBit(ats: Bool) throws {
        try pinsShared {
            let x = try VTdSetup()
            let (d, id) = try x.device(ats: ats)
            let buffer = VTdUserBuffer(pages: 4)
            let ioas = try x.context.allocateIOAS()
            _ = try x.context.map(ioas, source: .user(address: buffer.address), length: 0x4000, iova: 0x40_0000, access: .readWrite)
            let hwpt = try x.context.allocateHWPT(device: id, parent: ioas.object, flags: [.dirtyTracking], data: nil)
            _ = try x.context.attach(id, to: hwpt.object)
            func dirtyPages(keep: Bool = false) throws -> [UInt64] {
                var out: [UInt64] = []
                try x.context.readDirty(hwpt, iova: 0x40_0000, length: 0x4000, pageSize: 0x1000, keep: keep) { out.append($0) }
                return out
            }
            try x.context.setDirtyTracking(hwpt, enabled: true)
            #expect(x.driver.tables.pasidEntry(d.requesterID, pasid: 0)?.secondStageAccessedDirtyEnable == true)
            #expect(dmaWrite(d, 0x40_1000, [1]))
            #expect(dmaRead(d, 0x40_2000, count: 1) != nil)
            #expect(try dirtyPages(keep: true) == (ats ? [1, 2] : [1]))
            #expect(try dirtyPages() == (ats ? [1, 2] : [1]))
            #expect(try dirtyPages() == [])
            // The clear flushed the IOTLB and ATC: the next write sets D again.
            #expect(dmaWrite(d, 0x40_1008, [2]))
            #expect(dmaWrite(d, 0x40_3000, [3]))
            #expect(try dirtyPages() == [1, 3])
            try x.context.setDirtyTracking(hwpt, enabled: false)
            #expect(x.driver.tables.pasidEntry(d.requesterID, pasid: 0)?.secondStageAccessedDirtyEnable == false)
            // A domain allocated without dirty tracking refuses it.
            let plain = try x.context.allocateHWPT(device: id, parent: ioas.object, flags: [], data: nil)
            expectVTdErrno(95) { try x.context.setDirtyTracking(plain, enabled: true) }
            withExtendedLifetime(buffer) {}
        }
    }

    /// The test knob `dropsAccessedDirtyUpdates`: tracking is offered, accepted and switched on
    /// (SSADE set), the device's writes land, and none is ever reported dirty — untranslated or
    /// through ATS.
    @Test(arguments: [false, true])
    func noDirtyBitsKnobLosesEveryDeviceWrite(ats: Bool) throws {
        try pinsShared {
            var c = VTdConfiguration()
            c.dropsAccessedDirtyUpdates = true
            let x = try VTdSetup(configuration: c)
            let (d, id) = try x.device(ats: ats)
            #expect(try x.context.hardwareInfo(id).capabilities & 1 == 1, "dirty tracking is still offered")
            let buffer = VTdUserBuffer(pages: 4)
            let ioas = try x.context.allocateIOAS()
            _ = try x.context.map(ioas, source: .user(address: buffer.address), length: 0x4000, iova: 0x40_0000, access: .readWrite)
            let hwpt = try x.context.allocateHWPT(device: id, parent: ioas.object, flags: [.dirtyTracking], data: nil)
            _ = try x.context.attach(id, to: hwpt.object)
            try x.context.setDirtyTracking(hwpt, enabled: true)
            #expect(x.driver.tables.pasidEntry(d.requesterID, pasid: 0)?.secondStageAccessedDirtyEnable == true)
            #expect(dmaWrite(d, 0x40_1000, [0x5A]))
            #expect(dmaWrite(d, 0x40_3000, [0xA5]))
            #expect(buffer[0x1000] == 0x5A && buffer[0x3000] == 0xA5)
            var dirty: [UInt64] = []
            try x.context.readDirty(hwpt, iova: 0x40_0000, length: 0x4000, pageSize: 0x1000, keep: false) { dirty.append($0) }
            #expect(dirty == [])
            withExtendedLifetime(buffer) {}
        }
    }

    // MARK: Nested

    /// Guest memory: 16 pages at GPA 0x1000000; a 4-level first-stage table in its first pages
    /// mapping IOVA 0x40000000 → GPA page 4 and 0x40001000 → GPA page 6.
    struct Guest {
        static let gpa: UInt64 = 0x100_0000
        let buffer = VTdUserBuffer(pages: 16)
        func g(_ page: Int) -> UInt64 { Self.gpa + UInt64(page) * 0x1000 }
        init() {
            buffer.setWord(g(1) | 7, at: 0)                      // PML4[0] → PDPT
            buffer.setWord(g(2) | 7, at: 0x1000 + 1 * 8)         // PDPT[1] → PD
            buffer.setWord(g(3) | 7, at: 0x2000)                 // PD[0] → PT
            buffer.setWord(g(4) | 7, at: 0x3000)                 // PT[0] → page 4, P|RW|US
            buffer.setWord(g(6) | 7, at: 0x3000 + 8)             // PT[1] → page 6
        }
    }

    @Test func nestedHWPTTranslatesThroughTheGuestTableAndInvalidatesExactly() throws {
        try pinsShared {
            let x = try VTdSetup()
            let (d, id) = try x.device()
            let guest = Guest()
            let ioas = try x.context.allocateIOAS()
            _ = try x.context.map(ioas, source: .user(address: guest.buffer.address), length: 0x10000, iova: Guest.gpa, access: .readWrite)
            let parent = try x.context.allocateHWPT(device: id, parent: ioas.object, flags: [.nestParent], data: nil)
            let cfg = VTdUserValue([VTdStage1Data(pageTableAddress: guest.g(0), addressWidth: 48)])
            let nested = try x.context.allocateHWPT(device: id, parent: parent.object, flags: [],
                                                    data: DriverData(type: 1, address: cfg.address, length: 24))
            _ = try x.context.attach(id, to: nested.object)
            let e = try #require(x.driver.tables.pasidEntry(d.requesterID, pasid: 0))
            #expect(e.pgtt == .nested && e.firstStageTable == guest.g(0) && e.firstStagePagingMode == 0)

            #expect(dmaWrite(d, 0x4000_0010, [0xC4]))
            #expect(guest.buffer[4 * 0x1000 + 0x10] == 0xC4)
            #expect(guest.buffer.word(at: 0x3000) & 0x60 == 0x60)   // the walker set A and D in the guest's PTE

            // The guest moves IOVA 0x40000000 to GPA page 5 and invalidates the wrong page first.
            guest.buffer.setWord(guest.g(5) | 7, at: 0x3000)
            func invalidate(_ entries: [VTdStage1Invalidation], entryLength: UInt32 = 24) throws -> UInt32 {
                let array = VTdUserValue(entries)
                var handled: UInt32 = 0
                try x.context.invalidate(nested.object, entries: DriverArray(type: 0, address: array.address, entryLength: entryLength,
                                                                             count: UInt32(entries.count)), handled: &handled)
                withExtendedLifetime(array) {}
                return handled
            }
            #expect(try invalidate([VTdStage1Invalidation(address: 0x4000_1000, pageCount: 1)]) == 1)
            #expect(dmaWrite(d, 0x4000_0020, [0xC5]))
            #expect(guest.buffer[4 * 0x1000 + 0x20] == 0xC5)          // still cached (IOTLB and ATC)
            #expect(try invalidate([VTdStage1Invalidation(address: 0x4000_0000, pageCount: 1, flags: 1)]) == 1)
            #expect(dmaWrite(d, 0x4000_0030, [0xC6]))
            #expect(guest.buffer[5 * 0x1000 + 0x30] == 0xC6)
            #expect(dmaWrite(d, 0x4000_1000, [0xC7]) && guest.buffer[6 * 0x1000] == 0xC7)
            // Everything: addr 0, npages U64_MAX.
            guest.buffer.setWord(guest.g(7) | 7, at: 0x3000 + 8)
            #expect(try invalidate([VTdStage1Invalidation(address: 0, pageCount: .max)]) == 1)
            #expect(dmaWrite(d, 0x4000_1000, [0xC8]) && guest.buffer[7 * 0x1000] == 0xC8)
            withExtendedLifetime(cfg) {}
        }
    }

    /// A nested HWPT at a PASID; the host unmapping guest memory under it (stage 2) drops the
    /// combined translations and the device's ATC entries at once.
    @Test func nestedHWPTAtAPASIDAndHostUnmapUnderIt() throws {
        try pinsShared {
            let x = try VTdSetup()
            let (d, id) = try x.device()
            let guest = Guest()
            let ioas = try x.context.allocateIOAS()
            _ = try x.context.map(ioas, source: .user(address: guest.buffer.address), length: 0x10000, iova: Guest.gpa, access: .readWrite)
            let parent = try x.context.allocateHWPT(device: id, parent: ioas.object, flags: [.nestParent, .pasid], data: nil)
            let cfg = VTdUserValue([VTdStage1Data(pageTableAddress: guest.g(0), addressWidth: 48)])
            let nested = try x.context.allocateHWPT(device: id, parent: parent.object, flags: [.pasid],
                                                    data: DriverData(type: 1, address: cfg.address, length: 24))
            _ = try x.context.attach(id, pasid: 12, to: nested.object)
            let e = try #require(x.driver.tables.pasidEntry(d.requesterID, pasid: 12))
            #expect(e.pgtt == .nested && e.secondStageTable == (d.attachedDomain(pasid: 12) as? VTdNestedDomain)?.parent.table.root)
            #expect(dmaWrite(d, pasid: 12, 0x4000_0008, [0x12]) && guest.buffer[4 * 0x1000 + 8] == 0x12)
            #expect(!dmaWrite(d, 0x4000_0008, [0x13]))                  // the RID has nothing attached
            // The host takes GPA page 4 away: the next DMA through the guest's table must fault.
            _ = try x.context.unmap(ioas, iova: Guest.gpa, length: 0x10000)
            _ = try x.context.map(ioas, source: .user(address: guest.buffer.address), length: 0x4000, iova: Guest.gpa, access: .readWrite)
            #expect(!dmaWrite(d, pasid: 12, 0x4000_0010, [0x14]))
            #expect(guest.buffer[4 * 0x1000 + 0x10] == 0)
            // Detach at the PASID: blocked.
            try x.context.detach(id, pasid: 12)
            #expect(x.driver.tables.pasidEntry(d.requesterID, pasid: 12)?.present == false)
            withExtendedLifetime(cfg) {}
        }
    }

    @Test func nestedAllocationAndInvalidationErrors() throws {
        try pinsShared {
            let x = try VTdSetup()
            let (_, id) = try x.device()
            let guest = Guest()
            let ioas = try x.context.allocateIOAS()
            _ = try x.context.map(ioas, source: .user(address: guest.buffer.address), length: 0x10000, iova: Guest.gpa, access: .readWrite)
            let parent = try x.context.allocateHWPT(device: id, parent: ioas.object, flags: [.nestParent], data: nil)
            let plain = try x.context.allocateHWPT(device: id, parent: ioas.object, flags: [], data: nil)
            let cfg = VTdUserValue([VTdStage1Data(pageTableAddress: guest.g(0), addressWidth: 48)])
            let data = DriverData(type: 1, address: cfg.address, length: 24)
            expectVTdErrno(22) { try x.context.allocateHWPT(device: id, parent: plain.object, flags: [], data: data) }
            expectVTdErrno(95) { try x.context.allocateHWPT(device: id, parent: parent.object, flags: [],
                                                         data: DriverData(type: 2, address: cfg.address, length: 24)) }
            expectVTdErrno(22) { try x.context.allocateHWPT(device: id, parent: parent.object, flags: [],
                                                         data: DriverData(type: 1, address: cfg.address, length: 16)) }
            // A stage-1 address width the unit cannot run is refused when attached, as the kernel does.
            let bad = VTdUserValue([VTdStage1Data(pageTableAddress: guest.g(0), addressWidth: 39)])
            let badNested = try x.context.allocateHWPT(device: id, parent: parent.object, flags: [],
                                                       data: DriverData(type: 1, address: bad.address, length: 24))
            expectVTdErrno(22) { try x.context.attach(id, to: badNested.object) }
            let eafe = VTdUserValue([VTdStage1Data(flags: 2, pageTableAddress: guest.g(0), addressWidth: 48)])  // EAFE without EAFS
            let eafeNested = try x.context.allocateHWPT(device: id, parent: parent.object, flags: [],
                                                        data: DriverData(type: 1, address: eafe.address, length: 24))
            expectVTdErrno(22) { try x.context.attach(id, to: eafeNested.object) }

            let nested = try x.context.allocateHWPT(device: id, parent: parent.object, flags: [], data: data)
            _ = try x.context.attach(id, to: nested.object)
            func run(_ entries: [VTdStage1Invalidation], type: UInt32 = 0, entryLength: UInt32 = 24) -> (Int32?, UInt32) {
                let array = VTdUserValue(entries)
                var handled: UInt32 = 0
                do {
                    try x.context.invalidate(nested.object, entries: DriverArray(type: type, address: array.address,
                                                                                 entryLength: entryLength, count: UInt32(entries.count)),
                                             handled: &handled)
                    withExtendedLifetime(array) {}
                    return (nil, handled)
                } catch {
                    withExtendedLifetime(array) {}
                    return (error.errno, handled)
                }
            }
            let ok = VTdStage1Invalidation(address: 0x4000_0000, pageCount: 1)
            #expect(run([ok, ok]) == (nil, 2))
            #expect(run([ok], type: 1) == (22, 0))                                                 // wrong data type
            #expect(run([ok, VTdStage1Invalidation(address: 0x1000, pageCount: 1, flags: 2)]) == (95, 1))  // unknown flag
            var reserved = ok
            reserved.reserved = 1
            #expect(run([ok, ok, reserved]) == (95, 2))
            #expect(run([VTdStage1Invalidation(address: 0x1234, pageCount: 1)]) == (22, 0))        // not 4 KiB aligned
            #expect(run([VTdStage1Invalidation(address: 0x1000, pageCount: .max)]) == (22, 0))     // U64_MAX needs addr 0
            #expect(run([ok], entryLength: 16) == (22, 0))                                         // shorter than the struct
            // Entries longer than the struct are EINVAL too (iommu_copy_struct_from_user_array).
            let longer = VTdUserValue<(VTdStage1Invalidation, UInt64)>([(ok, 0), (ok, 0)])
            var handled: UInt32 = 0
            expectVTdErrno(22) {
                try x.context.invalidate(nested.object, entries: DriverArray(type: 0, address: longer.address, entryLength: 32, count: 2),
                                         handled: &handled)
            }
            #expect(handled == 0)
            // Paging HWPTs take no invalidation.
            expectVTdErrno(22) {
                try x.context.invalidate(parent.object, entries: DriverArray(type: 0, address: longer.address, entryLength: 24, count: 1),
                                         handled: &handled)
            }
            withExtendedLifetime((cfg, bad, eafe, longer, guest.buffer)) {}
        }
    }

    // MARK: I/O page faults

    @Test func pageRequestReachesTheFaultQueueAndTheResponseLetsTheDeviceRetry() throws {
        try pinsShared {
            let x = try VTdSetup()
            let (d, id) = try x.device()
            let buffer = VTdUserBuffer(pages: 2)
            let ioas = try x.context.allocateIOAS()
            let queue = try x.context.allocateFaultQueue()
            let hwpt = try x.context.allocateHWPT(device: id, parent: ioas.object, flags: [.faultIDValid, .pasid], data: nil,
                                                  faultQueue: queue.objectID)
            _ = try x.context.attach(id, pasid: 9, to: hwpt.object)
            // Nothing is mapped at 0x70000: the device sends a page request and waits.
            guard case .waitingForPageResponse(let pending) = d.function.write(pasid: IOASIDSoftIOMMU.PASID(9), address: 0x7_0004,
                                                                                bytes: [1, 2, 3]) else {
                Issue.record("expected a page request"); return
            }
            #expect(try x.context.readFaults(queue, maxRecords: 8).isEmpty)   // not serviced yet
            x.driver.servicePageRequests()
            let faults = try x.context.readFaults(queue, maxRecords: 8)
            #expect(faults.count == 1)
            let f = try #require(faults.first)
            #expect(f.deviceID == id.rawValue && f.pasid == 9 && f.address == 0x7_0000 && f.permissions == VTdUAPI.faultPermWrite)
            #expect(f.flags == PageFaultRecord.pasidValid | PageFaultRecord.lastPage)
            #expect(f.groupID == UInt32(pending.groupIndex))
            // The owner maps the page and answers: the response travels back, the retry lands.
            _ = try x.context.map(ioas, source: .user(address: buffer.address), length: 0x1000, iova: 0x7_0000, access: .readWrite)
            #expect(!d.function.isAnswered(pending))
            try x.context.respond(queue, cookie: f.cookie, code: 0)
            #expect(d.function.isAnswered(pending))
            guard case .completed = d.function.resume(pending) else { Issue.record("retry failed"); return }
            #expect(buffer[4] == 1 && buffer[6] == 3)
            // A page request where no fault-capable domain is attached is answered Invalid by the driver.
            let other = try x.context.allocateHWPT(device: id, parent: ioas.object, flags: [.pasid], data: nil)
            _ = try x.context.attach(id, pasid: 10, to: other.object)
            guard case .waitingForPageResponse(let p2) = d.function.write(pasid: IOASIDSoftIOMMU.PASID(10), address: 0x9_0000,
                                                                           bytes: [1]) else {
                Issue.record("expected a page request"); return
            }
            x.driver.servicePageRequests()
            guard case .failed(.pageRequestFailed(.invalidRequest)) = d.function.resume(p2) else { Issue.record("expected Invalid"); return }
        }
    }

    @Test func pageRequestsAreServicedByTheInterruptThread() throws {
        try pinsShared {
            let x = try VTdSetup(delivery: .interruptThread)
            let (d, id) = try x.device()
            let buffer = VTdUserBuffer(pages: 1)
            let ioas = try x.context.allocateIOAS()
            let queue = try x.context.allocateFaultQueue()
            let hwpt = try x.context.allocateHWPT(device: id, parent: ioas.object, flags: [.faultIDValid], data: nil,
                                                  faultQueue: queue.objectID)
            _ = try x.context.attach(id, to: hwpt.object)
            // The device parks the write and sends a page request; the driver's interrupt thread (not
            // this one) puts it on the fault queue. Waiting is synchronous: this test holds the pin lock.
            guard case .waitingForPageResponse(let pending) = d.function.write(address: 0x3_0000, bytes: [0xEE]) else {
                Issue.record("expected a page request"); return
            }
            var faults: [PageFaultRecord] = []
            for _ in 0..<2000 where faults.isEmpty {
                faults = try x.context.readFaults(queue, maxRecords: 4)
                if faults.isEmpty { usleep(1000) }
            }
            let f = try #require(faults.first)
            #expect(f.address == 0x3_0000 && f.flags == PageFaultRecord.lastPage)
            _ = try x.context.map(ioas, source: .user(address: buffer.address), length: 0x1000, iova: 0x3_0000, access: .readWrite)
            try x.context.respond(queue, cookie: f.cookie, code: 0)
            for _ in 0..<2000 where !d.function.isAnswered(pending) { usleep(1000) }
            guard case .completed = d.function.resume(pending) else { Issue.record("the retry did not complete"); return }
            #expect(buffer[0] == 0xEE)
        }
    }
}

/// Concurrency through the core (run under ThreadSanitizer by scripts/tsan.sh, which selects
/// "Stress"): DMA threads write while the owner moves a mapping between buffers.
@Suite struct VTdDriverStressTests {
    /// The owner maps IOVA 0x100000 to buffer k, unmaps it, maps buffer k+1, … and publishes k
    /// after each unmap returned. Two DMA threads (one with ATS, one without) write the
    /// generation they read before each DMA. A write that started after generation k+1 was
    /// published must never land in buffer k: every byte in buffer k is at most k.
    @Test func noDMAAfterUnmapReturned() throws {
        try pinsShared {
            let x = try VTdSetup()
            let (ats, atsID) = try x.device(RequesterID(bus: 0x20, device: 0, function: 0), pri: false)
            let (plain, plainID) = try x.device(RequesterID(bus: 0x20, device: 1, function: 0), pasid: false, ats: false)
            let ioas = try x.context.allocateIOAS()
            _ = try x.context.attach(atsID, to: ioas.object)
            _ = try x.context.attach(plainID, to: ioas.object)
            let rounds = 60
            let buffers = (0...rounds).map { _ in VTdUserBuffer(pages: 1) }
            let generation = VTdGeneration()
            let finished = DispatchSemaphore(value: 0)
            for d in [ats, plain] {
                Thread {
                    while !generation.done {
                        let g = generation.value
                        _ = dmaWrite(d, 0x10_0000 + UInt64(g % 64) * 8, [UInt8(g)])
                    }
                    finished.signal()
                }.start()
            }
            for k in 0..<rounds {
                _ = try x.context.map(ioas, source: .user(address: buffers[k].address), length: 0x1000, iova: 0x10_0000, access: .readWrite)
                Thread.sleep(forTimeInterval: 0.0005)
                _ = try x.context.unmap(ioas, iova: 0x10_0000, length: 0x1000)
                generation.publish(k + 1)
            }
            generation.finish()
            finished.wait()
            finished.wait()
            var violations = 0, landed = 0
            for (k, b) in buffers.enumerated() {
                for i in 0..<512 where b[i * 8] != 0 {
                    landed += 1
                    if Int(b[i * 8]) > k { violations += 1 }
                }
            }
            #expect(violations == 0)
            #expect(landed > 0)
            #expect(x.driver.unit.takeFaults().allSatisfy { $0.reason == .secondStageEntryNotPresent })
            withExtendedLifetime(buffers) {}
        }
    }
}

/// A generation counter shared with DMA threads.
final class VTdGeneration: @unchecked Sendable {
    private let lock = NSLock()
    private var current = 0
    private var stopped = false
    var value: Int { lock.lock(); defer { lock.unlock() }; return current }
    var done: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
    func publish(_ g: Int) { lock.lock(); current = g; lock.unlock() }
    func finish() { lock.lock(); stopped = true; lock.unlock() }
}
