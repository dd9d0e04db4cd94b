import IOASIDStructures
import Testing
@testable import IOASIDSoftIOMMU

private let rid = RequesterID(bus: 3, device: 0, function: 0)

/// Points the 4 KiB leaf of `iova` at `physical` behind the caches' back (keeping its flags).
private func retarget<F>(_ table: PageTable<F>, _ iova: UInt64, to physical: UInt64) {
    let leaf = table.entries(for: iova).last!
    table.memory.write64(leaf.address, (leaf.value & ~0x000F_FFFF_FFFF_F000) | physical)
}

/// The frames of the tables a walk of `iova` in `table` reads.
private func tableFrames<F>(_ table: PageTable<F>, _ iova: UInt64) -> [UInt64] {
    table.entries(for: iova).map { $0.address & ~0xFFF }
}

@Suite struct VTdNestedTests {
    /// A guest first-stage table whose frames sit at guest-physical = host-physical addresses,
    /// mapped by the host's second stage; data at guest-physical 0x1000_0000.. mapped elsewhere.
    struct Setup {
        let m: VTdMachine
        let s1: PageTable<X86FirstStageFormat>
        let s2: PageTable<VTdSecondStageFormat>
        let data: UInt64   // host frame behind GPA 0x1000_0000
    }

    func setup(tableWritable: Bool = true) throws -> Setup {
        let m = try VTdMachine()
        try m.tables.addDevice(rid, pasids: 64, deviceTLB: false, pageRequests: false)
        let s1 = try m.firstStageTable()
        let s2 = try m.secondStageTable()
        try s1.map(iova: 0x40_0000, physical: 0x1000_0000, size: 0x2000, permissions: [.write, .user])
        try s1.map(iova: 0x80_0000, physical: 0x1100_0000, size: 0x1000, permissions: [.write, .user])
        for frame in Set(tableFrames(s1, 0x40_0000) + tableFrames(s1, 0x80_0000)) {
            try s2.map(iova: frame, physical: frame, size: 0x1000, permissions: tableWritable ? .readWrite : .read)
        }
        let data = try #require(m.memory.allocateFrame())
        let data2 = try #require(m.memory.allocateFrame())
        try s2.map(iova: 0x1000_0000, physical: data, size: 0x1000, permissions: .readWrite)
        try s2.map(iova: 0x1000_1000, physical: data2, size: 0x1000, permissions: .read)
        try m.tables.setPASIDEntry(rid, pasid: 3, VTdMachine.nested(firstStage: s1.root, secondStage: s2.root, domain: 5))
        return Setup(m: m, s1: s1, s2: s2, data: data)
    }

    @Test func nestedTranslationWalksBothStages() throws {
        let x = try setup()
        #expect(x.m.output(rid, pasid: 3, 0x40_0123, .write) == x.data + 0x123)
        // Both stages' leaves were used: A/D in the first-stage leaf, A/D in the second-stage leaf.
        let l1 = x.s1.entries(for: 0x40_0000).last!.value
        let l2 = x.s2.entries(for: 0x1000_0000).last!.value
        #expect(l1 & X86PTE.dirty != 0 && l2 & VTdSSPTE.dirty != 0)
        // Second stage read-only for GPA 0x10001000: a write faults at stage 2 (0x85), a read works.
        #expect(x.m.output(rid, pasid: 3, 0x40_1000) != nil)
        #expect(x.m.faultReason(rid, pasid: 3, 0x40_1000, .write) == .permission(stage: .second, level: 1))
        // GPA 0x11000000 is not mapped at stage 2: 0x79.
        #expect(x.m.faultReason(rid, pasid: 3, 0x80_0000) == .translation(stage: .second, level: 2))
        // Not mapped at stage 1: 0x71.
        #expect(x.m.faultReason(rid, pasid: 3, 0xC0_0000) == .translation(stage: .first, level: 2))
        #expect(x.m.unit.takeFaults().map(\.reason) == [.writeDenied, .secondStageEntryNotPresent, .firstStageEntryNotPresent])
    }

    @Test func stageTwoGuardsTheGuestsTableAccesses() throws {
        // Stage 2 maps the guest's tables read-only: the first-stage walker cannot set A/D (0x77).
        let ro = try setup(tableWritable: false)
        #expect(ro.m.faultReason(rid, pasid: 3, 0x40_0000) == .permission(stage: .second, level: 1))
        #expect(ro.m.unit.takeFaults().map(\.reason) == [.firstStageTableWriteDenied])
        // The guest's root table is not mapped at stage 2 at all: 0x79 on the table access.
        let x = try setup()
        try x.s2.unmap(iova: x.s1.root, size: 0x1000)
        try x.m.queue.submit([.iotlb(.domain(5))])
        #expect(x.m.faultReason(rid, pasid: 3, 0x40_0000) == .translation(stage: .second, level: 1))
        #expect(x.m.unit.takeFaults().map(\.reason) == [.secondStageEntryNotPresent])
    }

    @Test func nestedInvalidationIsExact() throws {
        let x = try setup()
        let m = x.m
        // A second PASID over the same tables, same nested domain.
        try m.tables.setPASIDEntry(rid, pasid: 4, VTdMachine.nested(firstStage: x.s1.root, secondStage: x.s2.root, domain: 5))
        #expect(m.output(rid, pasid: 3, 0x40_0000) == x.data)
        #expect(m.output(rid, pasid: 4, 0x40_0000) == x.data)
        #expect(m.output(rid, pasid: 3, 0x40_1000) != nil)
        let moved = try #require(m.memory.allocateFrame())
        try x.s2.map(iova: 0x1200_0000, physical: moved, size: 0x1000, permissions: .readWrite)
        // The guest changes its stage-1 leaf: both PASIDs still use the combined entries.
        retarget(x.s1, 0x40_0000, to: 0x1200_0000)
        #expect(m.output(rid, pasid: 3, 0x40_0000) == x.data)
        // A guest invalidation of another page, then of another PASID, keeps PASID 3's entry.
        try m.queue.submit([.pasidIOTLB(.page(5, 3, VTdPageRange(address: 0x40_1000, mask: 0)))])
        try m.queue.submit([.pasidIOTLB(.page(5, 4, VTdPageRange(address: 0x40_0000, mask: 0)))])
        #expect(m.output(rid, pasid: 3, 0x40_0000) == x.data)
        #expect(m.output(rid, pasid: 4, 0x40_0000) == moved)
        try m.queue.submit([.pasidIOTLB(.page(5, 3, VTdPageRange(address: 0x40_0000, mask: 0)))])
        #expect(m.output(rid, pasid: 3, 0x40_0000) == moved)
        // The host changes stage 2 under the guest: only a stage-2 invalidation of the nested
        // domain (which cannot know the stage-1 inputs, so drops all its combined entries) helps.
        let again = try #require(m.memory.allocateFrame())
        retarget(x.s2, 0x1200_0000, to: again)
        try m.queue.submit([.iotlb(.page(6, VTdPageRange(address: 0x1200_0000, mask: 0)))])
        #expect(m.output(rid, pasid: 3, 0x40_0000) == moved)
        try m.queue.submit([.iotlb(.page(5, VTdPageRange(address: 0x1200_0000, mask: 0)))])
        #expect(m.output(rid, pasid: 3, 0x40_0000) == again)
        #expect(m.output(rid, pasid: 4, 0x40_0000) == again)
    }
}

@Suite struct VTdDeviceTests {
    /// A unit with one ATS/PRI/PASID function whose RID_PASID entry is second stage (domain 2)
    /// and PASIDs 5 and 6 first stage (domain 3); data pages in the allocator window.
    struct Setup {
        let m: VTdMachine
        let device: PCIFunction
        let ss: PageTable<VTdSecondStageFormat>
        let fs5: PageTable<X86FirstStageFormat>
        let fs6: PageTable<X86FirstStageFormat>
        let frames: [UInt64]
    }

    func setup() throws -> Setup {
        let m = try VTdMachine()
        let device = PCIFunction(requesterID: rid, capabilities: .init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 32),
                                 iommu: m.unit)
        device.enableAll()
        try m.tables.addDevice(rid, pasids: 1 << 20, deviceTLB: true, pageRequests: true)
        var frames: [UInt64] = []
        for _ in 0..<8 { frames.append(try #require(m.memory.allocateFrame())) }
        let ss = try m.secondStageTable(), fs5 = try m.firstStageTable(), fs6 = try m.firstStageTable()
        try ss.map(iova: 0x1000, physical: frames[0], size: 0x1000, permissions: .readWrite)
        try fs5.map(iova: 0x1000, physical: frames[1], size: 0x1000, permissions: [.write, .user])
        try fs6.map(iova: 0x1000, physical: frames[2], size: 0x1000, permissions: [.write, .user])
        try m.tables.setPASIDEntry(rid, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
        try m.tables.setPASIDEntry(rid, pasid: 5, VTdMachine.firstStage(fs5.root, domain: 3))
        try m.tables.setPASIDEntry(rid, pasid: 6, VTdMachine.firstStage(fs6.root, domain: 3))
        return Setup(m: m, device: device, ss: ss, fs5: fs5, fs6: fs6, frames: frames)
    }

    func write(_ d: PCIFunction, pasid: UInt32? = nil, _ address: UInt64, _ value: UInt8) -> Bool {
        if case .completed = d.write(pasid: pasid.map { PASID($0) }, address: address, bytes: [value]) { return true }
        return false
    }

    @Test func dmaThroughATSLandsInMemoryAndTheATCIsInvalidatedExactly() throws {
        let x = try setup()
        let m = x.m, d = x.device
        #expect(write(d, 0x1010, 0xA1))
        #expect(write(d, pasid: 5, 0x1010, 0xB1))
        #expect(write(d, pasid: 6, 0x1010, 0xC1))
        #expect(m.memory.read8(x.frames[0] + 0x10) == 0xA1)
        #expect(m.memory.read8(x.frames[1] + 0x10) == 0xB1)
        #expect(m.memory.read8(x.frames[2] + 0x10) == 0xC1)
        #expect(d.atc?.count == 3)

        // Move all three pages and flush the IOMMU's IOTLBs: the device's ATC still has them.
        retarget(x.ss, 0x1000, to: x.frames[3])
        retarget(x.fs5, 0x1000, to: x.frames[4])
        retarget(x.fs6, 0x1000, to: x.frames[5])
        try m.queue.submit([.iotlb(.global)])
        #expect(write(d, 0x1020, 0xA2))
        #expect(write(d, pasid: 5, 0x1020, 0xB2))
        #expect(m.memory.read8(x.frames[0] + 0x20) == 0xA2)          // stale: the ATC translated it
        #expect(m.memory.read8(x.frames[1] + 0x20) == 0xB2)

        // PASID-based device-TLB invalidation of PASID 5: only PASID 5's translation goes.
        try m.queue.submit([.pasidDeviceTLB(sourceID: rid.rawValue, physicalFunction: rid.rawValue, pasid: 5, maxPending: 0,
                                            global: false, range: VTdDeviceTLBRange(address: 0x1000, order: 0))])
        #expect(write(d, pasid: 5, 0x1030, 0xB3))
        #expect(write(d, pasid: 6, 0x1030, 0xC3))
        #expect(write(d, 0x1030, 0xA3))
        #expect(m.memory.read8(x.frames[4] + 0x30) == 0xB3)          // new page
        #expect(m.memory.read8(x.frames[2] + 0x30) == 0xC3)          // PASID 6 still cached: old page
        #expect(m.memory.read8(x.frames[0] + 0x30) == 0xA3)          // RID entry still cached: old page
        // A range that misses the page leaves it.
        try m.queue.submit([.deviceTLB(sourceID: rid.rawValue, physicalFunction: rid.rawValue, maxPending: 0,
                                       range: VTdDeviceTLBRange(address: 0x10_0000, order: 4))])
        #expect(write(d, 0x1040, 0xA4))
        #expect(m.memory.read8(x.frames[0] + 0x40) == 0xA4)
        // Device-TLB invalidation without PASID covering the page: the rest goes.
        try m.queue.submit([.deviceTLB(sourceID: rid.rawValue, physicalFunction: rid.rawValue, maxPending: 0,
                                       range: VTdDeviceTLBRange(address: 0, order: 4))])
        #expect(write(d, 0x1050, 0xA5))
        #expect(write(d, pasid: 6, 0x1050, 0xC5))
        #expect(m.memory.read8(x.frames[3] + 0x50) == 0xA5)
        #expect(m.memory.read8(x.frames[5] + 0x50) == 0xC5)
        #expect(m.unit.takeFaults().isEmpty)
    }

    @Test func pageRequestResponseAndRetry() throws {
        let x = try setup()
        let m = x.m, d = x.device
        // PASID 5 has nothing at 0x9000: the ATS completion grants nothing, the device asks.
        guard case .waitingForPageResponse(let pending) = d.write(pasid: PASID(5), address: 0x9004, bytes: [1, 2, 3, 4]) else {
            Issue.record("expected a page request"); return
        }
        let requests = m.prq.drain()
        #expect(requests.count == 1)
        let r = try #require(requests.first)
        #expect(r.requesterID == rid.rawValue && r.pasid == 5 && r.address == 0x9000 && r.write && r.lastInGroup)
        #expect(r.groupIndex == pending.groupIndex)
        #expect(!d.isAnswered(pending))
        // The owner maps the page and answers; the device retries and succeeds.
        try x.fs5.map(iova: 0x9000, physical: x.frames[6], size: 0x1000, permissions: [.write, .user])
        try m.queue.submit([.pageGroupResponse(requesterID: rid.rawValue, pasid: 5, code: VTdInvalidation.ResponseCode.success,
                                               groupIndex: r.groupIndex)])
        #expect(d.isAnswered(pending))
        guard case .completed = d.resume(pending) else { Issue.record("retry failed"); return }
        #expect(try m.memory.read(count: 4, at: x.frames[6] + 4) == [1, 2, 3, 4])
        #expect(d.outstandingPageRequests == 0)
        // An Invalid Request answer fails the DMA.
        guard case .waitingForPageResponse(let p2) = d.write(pasid: PASID(5), address: 0xA000, bytes: [9]) else {
            Issue.record("expected a page request"); return
        }
        let r2 = try #require(m.prq.drain().first)
        try m.queue.submit([.pageGroupResponse(requesterID: rid.rawValue, pasid: 5, code: VTdInvalidation.ResponseCode.invalidRequest,
                                               groupIndex: r2.groupIndex)])
        guard case .failed(.pageRequestFailed(.invalidRequest)) = d.resume(p2) else { Issue.record("expected failure"); return }
        #expect(m.unit.takeFaults().isEmpty)
    }

    @Test func blockedPASIDFromADeviceIsNeverTranslated() throws {
        let x = try setup()
        let m = x.m, d = x.device
        guard case .failed(.translationRequestFailed(.unsupportedRequest)) = d.write(pasid: PASID(7), address: 0x1000, bytes: [1]) else {
            Issue.record("expected a blocked PASID"); return
        }
        #expect(m.unit.takeFaults().map(\.reason) == [.pasidEntryNotPresent])
        #expect(m.unit.takeFaults().isEmpty)
        // Without ATS the untranslated write is blocked the same way.
        d.control.ats = false
        guard case .failed(.fault(let f)) = d.write(pasid: PASID(7), address: 0x1000, bytes: [1]) else {
            Issue.record("expected a fault"); return
        }
        #expect(f.reason == .pasidNotAttached && !f.recoverable)
        #expect(m.unit.takeFaults().map(\.pasid) == [7])
    }
}
