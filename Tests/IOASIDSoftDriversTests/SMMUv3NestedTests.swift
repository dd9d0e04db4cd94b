// The nested path of the SMMUv3 driver through the core, as a VMM drives it: a stage-2 nesting
// parent on the IOAS holding guest RAM, a vIOMMU, a vDevice (virtual StreamID), a nested HWPT
// from the guest's STE whose S1ContextPtr is the guest's own CD table (a GPA), the guest's
// invalidation commands through the vIOMMU, and the guest's events on the vEVENT queue.

import IOASIDProcessMemory
import Testing
import IOASIDCore
import IOASIDLinuxABI
@testable import IOASIDSoftDrivers
@testable import IOASIDSoftIOMMU

/// A guest on an SMMUv3 vIOMMU with one device (virtual StreamID 0x42).
struct NestedRig {
    let rig: SMMURig
    let guest: GuestRAM
    let ioas: IOAS.ID
    let parent: HWPT.ID
    let viommu: VIOMMU.ID
    let s1: ArmStage1PageTable
    /// The guest's CD table (GPA of page 16 of guest RAM), 16 CDs.
    var cdTable: UInt64 { guest.page(16) }
    static let gpa: UInt64 = 0x8000_0000
    static let vsid: UInt64 = 0x42

    init(capabilities: PCIFunction.Capabilities = .init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 16)) throws {
        rig = try SMMURig(capabilities: capabilities)
        guest = GuestRAM(gpa: Self.gpa)
        ioas = try rig.context.allocateIOAS()
        _ = try rig.context.map(ioas, source: .user(address: guest.buffer.address), length: UInt64(guest.buffer.length),
                                iova: Self.gpa, access: .readWrite)
        parent = try rig.context.allocateHWPT(device: rig.device, parent: ioas.object, flags: [.nestParent], data: nil)
        viommu = try rig.context.allocateVIOMMU(device: rig.device, parent: parent, type: UAPI.IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
                                                data: nil)
        _ = try rig.context.allocateVDevice(viommu: viommu, device: rig.device, virtualID: Self.vsid)
        s1 = try guest.stage1Table()
        // Data pages 0 … 3 hold markers 0x10 … 0x13.
        for i in 0..<4 { guest.buffer[i * 4096] = UInt8(0x10 + i) }
    }

    /// Writes CD `index` of the guest's CD table (ASID `asid`, the stage-1 table at GPA `ttb0`).
    func writeCD(_ index: Int, asid: UInt16, ttb0: UInt64) {
        var cd = SMMUv3ContextDescriptor()
        cd.t0SZ = 16; cd.tg0 = 0; cd.ir0 = 1; cd.or0 = 1; cd.sh0 = 3; cd.epd1 = true; cd.valid = true
        cd.ips = 5; cd.aa64 = true; cd.record = true; cd.abort = true; cd.aset = true; cd.asid = asid; cd.ttb0 = ttb0
        let offset = Int(cdTable - Self.gpa) + index * 64
        for i in 0..<8 { guest.buffer.write64(at: offset + i * 8, cd.words[i]) }
    }

    /// The guest's STE words: stage-1 translate, its CD table with 16 CDs, S1DSS = SSID0, EATS.
    func guestSTE(config: UInt64 = 5, cdMax: UInt64 = 4, eats: UInt64 = 1) -> SMMUv3HWPTData {
        SMMUv3HWPTData(1 | (config << 1) | cdTable | (cdMax << 59), 2 | (eats << 28))
    }

    /// A nested HWPT from `data` (copied to user memory), with `flags` and an optional fault queue.
    func nested(_ data: SMMUv3HWPTData, length: UInt32 = 16, type: UInt32 = UAPI.IOMMU_HWPT_DATA_ARM_SMMUV3,
                flags: HWPTFlags = [], faultQueue: ObjectID? = nil) throws -> HWPT.ID {
        let record = UserRecord([data, SMMUv3HWPTData()])
        return try rig.context.allocateHWPT(device: rig.device, parent: viommu.object, flags: flags,
                                            data: DriverData(type: type, address: record.address, length: length),
                                            faultQueue: faultQueue)
    }

    /// Sends the guest's commands through the vIOMMU; returns how many were handled.
    @discardableResult
    func invalidate(_ commands: [SMMUv3Command], type: UInt32 = UAPI.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3) throws -> UInt32 {
        try invalidateRaw(commands.map { SMMUv3InvalidateEntry($0.words.0, $0.words.1) }, type: type)
    }

    func invalidateRaw(_ entries: [SMMUv3InvalidateEntry], type: UInt32 = UAPI.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
                       handled: UnsafeMutablePointer<UInt32>? = nil) throws -> UInt32 {
        let record = UserRecord(entries)
        var count: UInt32 = 0
        defer { handled?.pointee = count }
        try rig.context.invalidate(viommu.object, entries: DriverArray(type: type, address: record.address, entryLength: 16,
                                                                      count: UInt32(entries.count)), handled: &count)
        return count
    }

    /// What the device reads at `iova` (the marker of the page), nil on failure.
    func read(_ iova: UInt64, pasid: IOASIDSoftIOMMU.PASID? = nil) -> UInt8? {
        rig.master.function.read(pasid: pasid, address: iova, count: 1).completedValue?.first
    }

    /// Points guest IOVA `iova` at data page `page` (behind every cache's back).
    func remap(_ table: ArmStage1PageTable, _ iova: UInt64, to page: Int) throws {
        _ = try table.unmap(iova: iova, size: 4096)
        try table.map(iova: iova, physical: guest.page(page), size: 4096, permissions: guestRW, attributes: guestAttributes)
        guest.sync()
    }
}

@Suite struct SMMUv3NestedTests {
    /// A guest with CD 0 (ASID 0x21, IOVA 0x1000_0000 → page 0) and CD 3 (ASID 0x23, its own
    /// table, IOVA 0x1000_0000 → page 1), attached.
    static func attachedGuest(ats: Bool = true) throws -> (NestedRig, ArmStage1PageTable, HWPT.ID) {
        let n = try NestedRig(capabilities: ats ? .init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 16) : .init(pasidWidth: 20))
        try n.s1.map(iova: 0x1000_0000, physical: n.guest.page(0), size: 4096, permissions: guestRW, attributes: guestAttributes)
        let s1b = try n.guest.stage1Table()
        try s1b.map(iova: 0x1000_0000, physical: n.guest.page(1), size: 4096, permissions: guestRW, attributes: guestAttributes)
        n.guest.sync()
        n.writeCD(0, asid: 0x21, ttb0: n.s1.root)
        n.writeCD(3, asid: 0x23, ttb0: s1b.root)
        let hwpt = try n.nested(n.guestSTE())
        _ = try n.rig.context.attach(n.rig.device, to: hwpt.object)
        return (n, s1b, hwpt)
    }

    @Test func nestedDMATranslatesThroughTheGuestCDTableAndStage2() throws {
        try pinsShared {
            let (n, _, _) = try Self.attachedGuest()
            // The STE: the guest's fields over the parent's stage 2.
            let ste = n.rig.ste
            let parent = try #require(n.rig.master.rid.flatMap { a -> SMMUv3PagingDomain? in
                if case .nested(let d) = a { d.viommu.parent } else { nil } })
            #expect(ste.valid && ste.config == .nested && ste.s1ContextPtr == n.cdTable && ste.s1CDMax == 4 && ste.s1DSS == 2)
            #expect(ste.s2TTB == parent.root && ste.s2VMID == parent.tag && ste.mev && ste.eats == 1 && ste.s2AA64)
            // The host allocated no CD table: the guest's is used.
            #expect(n.rig.master.cdTable == nil)
            #expect(n.read(0x1000_0000) == 0x10)
            #expect(n.read(0x1000_0000, pasid: 3) == 0x11)
            #expect(n.rig.master.function.write(pasid: 3, address: 0x1000_0008, bytes: [0xAB]).completedValue != nil)
            #expect(n.guest.buffer[4096 + 8] == 0xAB)
            // A guest STE that bypasses: stage 2 only (IOVA = GPA); abort: nothing passes.
            let bypass = try n.nested(n.guestSTE(config: 4))
            _ = try n.rig.context.replace(n.rig.device, with: bypass.object)
            #expect(n.rig.ste.config == .stage2)
            #expect(n.read(NestedRig.gpa + 2 * 4096) == 0x12)
            let abort = try n.nested(SMMUv3HWPTData(0, 0))
            _ = try n.rig.context.replace(n.rig.device, with: abort.object)
            #expect(n.rig.ste == SMMUv3Driver.abortSTE)
            #expect(n.read(NestedRig.gpa) == nil)
        }
    }

    @Test func guestInvalidationsAreExactThroughTheVIOMMU() throws {
        try pinsShared {
            let (n, s1b, _) = try Self.attachedGuest()
            #expect(n.read(0x1000_0000) == 0x10 && n.read(0x1000_0000, pasid: 3) == 0x11)
            // The guest remaps both, then invalidates ASID 0x21's page (with a VMID the host replaces).
            try n.remap(n.s1, 0x1000_0000, to: 2)
            try n.remap(s1b, 0x1000_0000, to: 3)
            #expect(n.read(0x1000_0000) == 0x10 && n.read(0x1000_0000, pasid: 3) == 0x11)   // the ATC and TLB still hold them
            let tlbi = SMMUv3Command.tlbiNHVA(vmid: 0x77, asid: 0x21, address: 0x1000_0000, leaf: true, range: .single)
            #expect(try n.invalidate([tlbi]) == 1)
            #expect(n.read(0x1000_0000) == 0x10)                      // the device's ATC
            let vsid = UInt32(NestedRig.vsid)
            try n.invalidate([.atcInv(streamID: vsid, substreamID: nil, global: false, address: 0x1000_0000, size: 0)])
            #expect(n.read(0x1000_0000) == 0x12)
            #expect(n.read(0x1000_0000, pasid: 3) == 0x11)            // PASID 3 untouched
            try n.invalidate([.tlbiNHASID(vmid: 0, asid: 0x23),
                              .atcInv(streamID: vsid, substreamID: 3, global: false, address: 0x1000_0000, size: 0)])
            #expect(n.read(0x1000_0000, pasid: 3) == 0x13)
            // CFGI_CD by virtual StreamID: CD 3 now uses ASID 0x24 with the first table.
            n.writeCD(3, asid: 0x24, ttb0: n.s1.root)
            try n.invalidate([.atcInv(streamID: vsid, substreamID: 3, global: false, address: 0, size: 52)])
            #expect(n.read(0x1000_0000, pasid: 3) == 0x13)            // the cached CD (and its TLB entry)
            try n.invalidate([.cfgiCD(streamID: vsid, substreamID: 3, leaf: true),
                              .atcInv(streamID: vsid, substreamID: 3, global: false, address: 0, size: 52)])
            #expect(n.read(0x1000_0000, pasid: 3) == 0x12)
            // TLBI_NSNH_ALL becomes TLBI_NH_ALL of the vIOMMU's VMID.
            try n.remap(n.s1, 0x1000_0000, to: 0)
            try n.invalidate([.tlbiNSNHAll, .atcInv(streamID: vsid, substreamID: nil, global: false, address: 0, size: 52),
                              .atcInv(streamID: vsid, substreamID: 3, global: false, address: 0, size: 52)])
            #expect(n.read(0x1000_0000) == 0x10 && n.read(0x1000_0000, pasid: 3) == 0x10)
        }
    }

    @Test func invalidationArrayErrorsAndEntryCounts() throws {
        try pinsShared {
            let (n, _, _) = try Self.attachedGuest()
            let good = SMMUv3Command.tlbiNHASID(vmid: 0, asid: 0x21).words
            let entry = SMMUv3InvalidateEntry(good.0, good.1)
            var handled: UInt32 = 99
            // An unknown virtual StreamID at index 1: EIO, one handled.
            let badSID = SMMUv3Command.cfgiCDAll(streamID: 0x99).words
            expectErrno(5) { try n.invalidateRaw([entry, SMMUv3InvalidateEntry(badSID.0, badSID.1), entry], handled: &handled) }
            #expect(handled == 1)
            // Opcodes a guest may not send: EIO before anything.
            for op: SMMUv3Command in [.cfgiSTE(streamID: 0x42, leaf: true), .syncNone, .tlbiS12VMAll(vmid: 1), .cfgiAll,
                                      .priResp(streamID: 0x42, substreamID: nil, group: 0, response: .success)] {
                expectErrno(5) { try n.invalidateRaw([SMMUv3InvalidateEntry(op.words.0, op.words.1)], handled: &handled) }
                #expect(handled == 0)
            }
            expectErrno(22) { try n.invalidate([.tlbiNSNHAll], type: 0) }
            expectErrno(22) { try n.invalidateRaw([]) }
            // Entries longer than the struct: zero tails are fine, others E2BIG.
            struct Long { var cmd: (UInt64, UInt64); var tail: UInt64 }
            for (tail, errno) in [(UInt64(0), Int32(0)), (1, 7)] {
                let record = UserRecord([Long(cmd: good, tail: tail)])
                var count: UInt32 = 0
                do throws(IOMMUError) {
                    try n.rig.context.invalidate(n.viommu.object, entries: DriverArray(type: 1, address: record.address, entryLength: 24, count: 1),
                                                 handled: &count)
                    #expect(errno == 0 && count == 1)
                } catch {
                    #expect(error.errno == errno && count == 0)
                }
            }
            // More than one batch.
            #expect(try n.invalidateRaw(Array(repeating: entry, count: 200)) == 200)
            // A malformed command (a reserved bit) is skipped by the SMMU driver, as the kernel's does.
            let skipped = n.rig.driver.skippedCommands.count
            #expect(try n.invalidateRaw([SMMUv3InvalidateEntry(good.0 | (1 << 20), good.1), entry]) == 2)
            #expect(n.rig.driver.skippedCommands.count == skipped + 1)
        }
    }

    @Test func guestEventsArriveOnTheVEventQueueWithTheVirtualStreamID() throws {
        try pinsShared {
            // Without ATS, so that faults are transactions the SMMU records (ATS requests are not).
            let (n, _, _) = try Self.attachedGuest(ats: false)
            let q = try n.rig.context.allocateVEventQueue(viommu: n.viommu, type: UAPI.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, depth: 16)
            // A stage-1 translation fault in the guest's table.
            #expect(n.read(0x2000_0000) == nil)
            // A SubstreamID beyond the guest's S1CDMax.
            #expect(n.read(0x1000_0000, pasid: 100) == nil)
            // A stage-2 fault: the guest maps to a GPA outside its RAM. The host keeps it.
            try n.s1.map(iova: 0x3000_0000, physical: 0x1_0000_0000, size: 4096, permissions: guestRW, attributes: guestAttributes)
            n.guest.sync()
            try n.invalidate([.tlbiNHASID(vmid: 0, asid: 0x21)])
            #expect(n.read(0x3000_0000) == nil)
            n.rig.driver.processInterrupts()
            let events = try n.rig.context.readVEvents(q, capacity: 4096)
            #expect(events.count == 2)
            let records = events.compactMap { SMMUv3VEventData(bytes: $0.data) }.map {
                SMMUv3Event(words: [$0.evt.0, $0.evt.1, $0.evt.2, $0.evt.3])
            }
            #expect(records.map(\.id) == [.translation, .badSubstreamID])
            #expect(records.allSatisfy { $0.streamID == UInt32(NestedRig.vsid) })
            #expect(records.first?.inputAddress == 0x2000_0000 && records.last?.substreamID == 100)
            let host = n.rig.driver.takeUnhandledEvents()
            #expect(host.map(\.id) == [.translation] && host.first?.stage2 == true && host.first?.streamID == n.rig.master.streamID)
            #expect(host.first?.ipa == 0x1_0000_0000)
        }
    }

    @Test func guestSTEValidation() throws {
        try pinsShared {
            let n = try NestedRig()
            let good = n.guestSTE()
            _ = try n.nested(good)
            _ = try n.nested(SMMUv3HWPTData(0, 0xFFFF))                      // V = 0: abort, anything else ignored
            expectErrno(5) { try n.nested(SMMUv3HWPTData(good.ste.0 | (1 << 57), good.ste.1)) }   // RES0 bit of word 0
            expectErrno(5) { try n.nested(SMMUv3HWPTData(good.ste.0, good.ste.1 | (1 << 19))) }   // MEV
            expectErrno(5) { try n.nested(n.guestSTE(config: 7)) }                                 // nested
            expectErrno(5) { try n.nested(n.guestSTE(config: 6)) }                                 // stage 2
            expectErrno(5) { try n.nested(n.guestSTE(eats: 2)) }                                   // split-stage ATS
            expectErrno(95) { try n.nested(good, flags: [.pasid]) }
            expectErrno(22) { try n.nested(good, type: UAPI.IOMMU_HWPT_DATA_VTD_S1) }
            expectErrno(22) { try n.nested(good, length: 8) }
            expectErrno(22) { try n.nested(good, length: 24) }
            // A translating nested domain needs the device's vDevice; a bypassing one does not.
            let other = n.rig.driver.addDevice(requesterID: RequesterID(bus: 0, device: 5, function: 0), capabilities: .init(pasidWidth: 20))
            let otherID = try other.bind(to: n.rig.context)
            let hwpt = try n.nested(good)
            expectErrno(2) { try n.rig.context.attach(otherID, to: hwpt.object) }
            _ = try n.rig.context.attach(otherID, to: try n.nested(n.guestSTE(config: 4)).object)
            // vIOMMU types and parents.
            expectErrno(95) { try n.rig.context.allocateVIOMMU(device: n.rig.device, parent: n.parent, type: 2, data: nil) }
            let plain = try n.rig.context.allocateHWPT(device: n.rig.device, parent: n.ioas.object, flags: [], data: nil)
            expectErrno(22) { try n.rig.context.allocateVIOMMU(device: n.rig.device, parent: plain, type: 1, data: nil) }
            // Nested domains come from the vIOMMU only.
            let record = UserRecord([good])
            expectErrno(95) {
                try n.rig.context.allocateHWPT(device: n.rig.device, parent: n.parent.object, flags: [],
                                               data: DriverData(type: 2, address: record.address, length: 16))
            }
        }
    }

    @Test func guestPageFaultsGoToTheNestedDomainsFaultQueue() throws {
        try pinsShared {
            let n = try NestedRig()
            n.writeCD(3, asid: 0x23, ttb0: n.s1.root)
            n.guest.sync()
            let faults = try n.rig.context.allocateFaultQueue()
            let hwpt = try n.nested(n.guestSTE(), flags: [.faultIDValid], faultQueue: faults.objectID)
            _ = try n.rig.context.attach(n.rig.device, to: hwpt.object)
            let f = n.rig.master.function
            #expect(f.control.ats && f.control.pri)
            // The guest's table maps nothing yet: ATS grants nothing, the device asks for the page.
            let pending = try #require(f.write(pasid: 3, address: 0x1000_0000, bytes: [0xC3]).parked)
            n.rig.driver.processInterrupts()
            let record = try #require(try n.rig.context.readFaults(faults, maxRecords: 4).first)
            #expect(record.pasid == 3 && record.address == 0x1000_0000 && record.flags & PageFaultRecord.pasidValid != 0)
            // The guest maps the page, and the VMM answers.
            try n.s1.map(iova: 0x1000_0000, physical: n.guest.page(5), size: 4096, permissions: guestRW, attributes: guestAttributes)
            n.guest.sync()
            try n.rig.context.respond(faults, cookie: record.cookie, code: 0)
            #expect(f.resume(pending).completedValue != nil)
            #expect(n.guest.buffer[5 * 4096] == 0xC3)
        }
    }
}

@Suite struct SMMUv3TeardownTests {
    @Test func closingTheContextDetachesEverythingAndFreesTheStructures() throws {
        try pinsShared {
            let (n, _, _) = try SMMUv3NestedTests.attachedGuest()
            _ = try n.rig.context.allocateVEventQueue(viommu: n.viommu, type: 1, depth: 4)
            let driver = n.rig.driver
            let free = driver.state.withLock { $0.arena.free.map(\.count) }
            n.rig.context.close()
            #expect(n.rig.ste == SMMUv3Driver.abortSTE)
            #expect(n.rig.master.rid == nil && n.rig.master.vmaster == nil)
            #expect(driver.state.withLock { $0.user.regions.isEmpty && $0.user.counts.isEmpty })
            #expect(driver.memory.ramRegions.count == 1)   // the structure arena only
            #expect(driver.state.withLock { $0.arena.free.map(\.count) } == free)
            #expect(driver.state.withLock { $0.asids.used.isEmpty && $0.vmids.used.isEmpty })
            // The device can be attached again in a new context.
            let context = Context(memory: ProcessMemory.shared)
            let id = try n.rig.master.bind(to: context)
            let buffer = UserBuffer(pages: 1)
            let ioas = try context.allocateIOAS()
            _ = try context.map(ioas, source: .user(address: buffer.address), length: 4096, iova: 0x1000, access: .readWrite)
            _ = try context.attach(id, to: ioas.object)
            #expect(n.rig.master.function.write(address: 0x1000, bytes: [3]).completedValue != nil && buffer[0] == 3)
            context.close()
        }
    }
}

@Suite struct SMMUv3NestParentTests {
    /// Unmapping guest RAM from the nesting parent invalidates the combined (stage 1 + 2) TLB
    /// entries and the device's ATC (TLBI_S12_VMALL, ATC_INV): the guest's cached translation is
    /// not used once the unmap returned.
    @Test func unmappingGuestRAMInvalidatesCombinedEntries() throws {
        try pinsShared {
            let (n, _, _) = try SMMUv3NestedTests.attachedGuest()
            #expect(n.read(0x1000_0000) == 0x10)
            #expect(n.read(0x1000_0000) == 0x10)
            try n.rig.context.cutAreas(n.ioas, after: [NestedRig.gpa + 4095])
            _ = try n.rig.context.unmap(n.ioas, iova: NestedRig.gpa, length: 4096)
            // The guest still maps IOVA 0x1000_0000 to GPA page 0, which is gone at stage 2.
            #expect(n.read(0x1000_0000) == nil)
            #expect(n.read(0x1000_0000, pasid: 3) == 0x11)   // other guest pages stay
        }
    }
}
