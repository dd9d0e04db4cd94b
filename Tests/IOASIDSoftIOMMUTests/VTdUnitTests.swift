import IOASIDStructures
import Testing
@testable import IOASIDSoftIOMMU

/// A device endpoint that records what the IOMMU sends it (for tests of the unit alone).
final class VTdRecordingEndpoint: DeviceEndpoint, @unchecked Sendable {
    let requesterID: RequesterID
    private let log = Locked<(invalidations: [ATCInvalidation], responses: [PageResponse])>(([], []))
    init(_ rid: RequesterID) { requesterID = rid }
    func invalidate(_ request: ATCInvalidation) -> ATCInvalidationCompletion {
        log.withLock { $0.invalidations.append(request) }
        return ATCInvalidationCompletion(requesterID: requesterID, tag: request.tag)
    }
    func receive(_ response: PageResponse) { log.withLock { $0.responses.append(response) } }
    var invalidations: [ATCInvalidation] { log.withLock { $0.invalidations } }
    var responses: [PageResponse] { log.withLock { $0.responses } }
}

private let dev = RequesterID(bus: 1, device: 0, function: 0)     // 0x0100
private let dev2 = RequesterID(bus: 1, device: 1, function: 0)    // 0x0108

@Suite struct VTdTranslationTests {
    @Test func secondStageForRequestsWithoutPASID() throws {
        let m = try VTdMachine()
        try m.tables.addDevice(dev, pasids: 0, deviceTLB: false, pageRequests: false)
        let ss = try m.secondStageTable()
        try ss.map(iova: 0x1000_0000, physical: 0x2_0000_0000, size: 0x2000, permissions: .readWrite)
        try ss.map(iova: 0x3000_0000, physical: 0x2_1000_0000, size: 0x1000, permissions: .read)
        try ss.map(iova: 0x4000_0000, physical: 0x2_4000_0000, size: 0x20_0000, permissions: .readWrite)
        try m.tables.setPASIDEntry(dev, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))

        #expect(m.output(dev, 0x1000_0123) == 0x2_0000_0123)
        #expect(m.output(dev, 0x1000_1FF8, .write) == 0x2_0000_1FF8)
        // The walker set A on its way and D only in the written leaf (SSADE).
        let leaf0 = ss.entries(for: 0x1000_0000).last!.value
        let leaf1 = ss.entries(for: 0x1000_1000).last!.value
        #expect(leaf0 & VTdSSPTE.accessed != 0 && leaf0 & VTdSSPTE.dirty == 0)
        #expect(leaf1 & VTdSSPTE.accessed != 0 && leaf1 & VTdSSPTE.dirty != 0)
        // A 2 MiB superpage translates as one page.
        guard case .success(let big) = m.dma(dev, 0x4012_3456) else { Issue.record("2 MiB page"); return }
        #expect(big.pageShift == 21 && big.output(for: 0x4012_3456) == 0x2_4012_3456)

        // Not present: 0x79; read-only written: 0x85. Both recorded with the requester's SID.
        #expect(m.faultReason(dev, 0x1000_2000) == .translation(stage: .second, level: 1))
        #expect(m.output(dev, 0x3000_0000) == 0x2_1000_0000)
        #expect(m.faultReason(dev, 0x3000_0000, .write) == .permission(stage: .second, level: 1))
        let faults = m.unit.takeFaults()
        #expect(faults.map(\.reason) == [.secondStageEntryNotPresent, .writeDenied])
        #expect(faults.allSatisfy { $0.sourceID == 0x100 && $0.pasid == nil })
        #expect(faults[0].faultInfo == 0x1000_2000 && faults[0].requestType == .read)
        #expect(faults[1].faultInfo == 0x3000_0000 && faults[1].requestType == .write)
        // Beyond the 48-bit width.
        #expect(m.faultReason(dev, 1 << 48) == .addressSize(stage: .second, level: 4))
        #expect(m.unit.takeFaults().map(\.reason) == [.addressBeyondWidth])
    }

    @Test func firstStageForRequestsWithPASID() throws {
        let m = try VTdMachine()
        try m.tables.addDevice(dev, pasids: 1 << 20, deviceTLB: false, pageRequests: false)
        let fs = try m.firstStageTable()
        try fs.map(iova: 0x7000_0000, physical: 0x3_0000_0000, size: 0x1000, permissions: [.write, .user])
        try fs.map(iova: 0x7000_1000, physical: 0x3_0000_1000, size: 0x1000, permissions: [.write])
        try m.tables.setPASIDEntry(dev, pasid: 0xABCDE, VTdMachine.firstStage(fs.root, domain: 3))
        try m.tables.setPASIDEntry(dev, pasid: 6, VTdMachine.firstStage(fs.root, domain: 3, supervisor: true))

        #expect(m.output(dev, pasid: 0xABCDE, 0x7000_0010, .write) == 0x3_0000_0010)
        let leaf = fs.entries(for: 0x7000_0000).last!.value
        #expect(leaf & X86PTE.accessed != 0 && leaf & X86PTE.dirty != 0)
        // A user (unprivileged) request to a supervisor page: 0x81.
        #expect(m.faultReason(dev, pasid: 0xABCDE, 0x7000_1000) == .permission(stage: .first, level: 1))
        // A privileged request to a PASID without SRE: 0x5D; with SRE it may use the page.
        #expect(m.faultReason(dev, pasid: 0xABCDE, 0x7000_1000, privileged: true) == .blocked)
        #expect(m.output(dev, pasid: 6, 0x7000_1008, .write, privileged: true) == 0x3_0000_1008)
        // Not canonical for 4-level paging: 0x80; not present: 0x71.
        #expect(m.faultReason(dev, pasid: 0xABCDE, 0x8000_0000_0000) == .addressSize(stage: .first, level: 4))
        #expect(m.faultReason(dev, pasid: 0xABCDE, 0x7000_2000) == .translation(stage: .first, level: 1))
        let faults = m.unit.takeFaults()
        #expect(faults.map(\.reason) == [.userAccessToSupervisorPage, .supervisorNotEnabled, .nonCanonicalAddress,
                                         .firstStageEntryNotPresent])
        #expect(faults.allSatisfy { $0.pasid == 0xABCDE })
        #expect(faults[1].privileged)
        // Requests without PASID use RID_PASID (0), which has no entry.
        #expect(m.faultReason(dev, 0x7000_0000) == .pasidNotAttached)
    }

    @Test func passThroughAndTranslationDisabled() throws {
        let m = try VTdMachine()
        try m.tables.addDevice(dev, pasids: 64, deviceTLB: false, pageRequests: false)
        try m.tables.setPASIDEntry(dev, pasid: 0, VTdMachine.passThrough(domain: 1))
        #expect(m.output(dev, 0x1234_5678, .write) == 0x1234_5678)
        #expect(m.faultReason(dev, 1 << 52) == .addressSize(stage: .second, level: 0))
        #expect(m.unit.takeFaults().map(\.reason) == [.addressBeyondWidth])
        // With TE clear, requests are not remapped at all, even for unknown requesters.
        m.unit.setTranslationEnabled(false)
        #expect(!m.unit.translationEnabled)
        #expect(m.output(dev2, pasid: 9, 0xDEAD_0000, .write) == 0xDEAD_0000)
        m.unit.setTranslationEnabled(true)
        #expect(m.faultReason(dev2, 0xDEAD_0000) == .invalidContext)
        #expect(m.unit.takeFaults().map(\.reason) == [.contextEntryNotPresent])
    }

    @Test func dmaWithAPASIDThatHasNoEntryIsBlockedAndRecorded() throws {
        let m = try VTdMachine()
        try m.tables.addDevice(dev, pasids: 64, deviceTLB: false, pageRequests: false)
        try m.tables.addDevice(dev2, pasids: 0, deviceTLB: false, pageRequests: false)
        let ss = try m.secondStageTable()
        try ss.map(iova: 0x1000, physical: 0x5000_0000, size: 0x1000, permissions: .readWrite)
        try m.tables.setPASIDEntry(dev, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
        try m.tables.setPASIDEntry(dev, pasid: 1, VTdMachine.secondStage(ss.root, domain: 2))
        try m.tables.setPASIDEntry(dev2, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
        #expect(m.output(dev, pasid: 1, 0x1000, .write) == 0x5000_0000)

        // PASID 7: its PASID table exists (that of 0–63) but the entry is not present: 0x59.
        #expect(m.faultReason(dev, pasid: 7, 0x1000, .write) == .pasidNotAttached)
        // PASID 100: no PASID table at all (directory entry not present): 0x51.
        #expect(m.faultReason(dev, pasid: 100, 0x1000) == .pasidNotAttached)
        // PASID 9000: beyond the directory (128 entries · 64): 0x46.
        #expect(m.faultReason(dev, pasid: 9000, 0x1000) == .pasidNotSupported)
        // A device whose context does not enable PASIDs: 0x45.
        #expect(m.faultReason(dev2, pasid: 1, 0x1000) == .pasidNotSupported)
        let faults = m.unit.takeFaults()
        #expect(faults.map(\.reason) == [.pasidEntryNotPresent, .pasidDirectoryEntryNotPresent, .pasidTooLarge, .pasidNotEnabled])
        #expect(faults.map(\.pasid) == [7, 100, 9000, 1])
        #expect(faults[0].requestType == .write && faults[0].sourceID == 0x100 && faults[3].sourceID == 0x108)

        // Tearing PASID 1 down blocks it at once; with FPD left in the entry (as the Linux driver
        // does when it ignores faults) the blocked requests are not recorded.
        try m.tables.clearPASIDEntry(dev, pasid: 1)
        #expect(m.faultReason(dev, pasid: 1, 0x1000) == .pasidNotAttached)
        #expect(m.unit.takeFaults().map(\.reason) == [.pasidEntryNotPresent])
        var fpd = VTdPASIDEntry()
        fpd.faultProcessingDisable = true
        let table = try #require(m.tables.pasidEntry(dev, pasid: 1))
        #expect(!table.present)
        // Write "cleared with FPD" directly into PASID 2's slot.
        try m.tables.setPASIDEntry(dev, pasid: 2, VTdMachine.secondStage(ss.root, domain: 2))
        try m.tables.updatePASIDEntry(dev, pasid: 2) { $0 = fpd }
        #expect(m.faultReason(dev, pasid: 2, 0x1000) == .pasidNotAttached)
        #expect(m.unit.takeFaults().isEmpty)
    }

    @Test func faultRecordingRegistersAndOverflow() throws {
        var c = VTdConfiguration()
        c.faultRecordingRegisters = 2
        let m = try VTdMachine(c)
        let fired = VTdSharedCounters()
        m.unit.setFaultInterrupt { fired.count.add(1, ordering: .relaxed) }
        try m.tables.addDevice(dev, pasids: 0, deviceTLB: false, pageRequests: false)
        for a in [0x1000, 0x2000, 0x3000] as [UInt64] { _ = m.dma(dev, a) }  // no PASID table for RID_PASID: 0x51
        #expect(fired.count.load(ordering: .relaxed) == 2)
        let fsts = UInt32(m.unit.readRegister(VTdRegister.faultStatus))
        #expect(fsts & VTdFaultStatus.primaryPendingFault != 0)
        #expect(fsts & VTdFaultStatus.primaryFaultOverflow != 0)
        #expect(VTdFaultStatus.faultRecordIndex(fsts) == 0)
        let r0 = VTdFaultRecord(low: m.unit.readRegister(0x400), high: m.unit.readRegister(0x408))
        #expect(r0.isFault && r0.reason == .pasidDirectoryEntryNotPresent && r0.faultInfo == 0x1000)
        #expect(m.unit.readRegister(0x40C) == r0.high >> 32)
        // Software clears record 0 (64-bit write of F), then record 1 (32-bit write at +12).
        m.unit.writeRegister(0x408, 1 << 63)
        #expect(VTdFaultStatus.faultRecordIndex(UInt32(m.unit.readRegister(VTdRegister.faultStatus))) == 1)
        m.unit.writeRegister(0x41C, 1 << 31)
        m.unit.writeRegister(VTdRegister.faultStatus, UInt64(VTdFaultStatus.primaryFaultOverflow))
        #expect(m.unit.readRegister(VTdRegister.faultStatus) & 3 == 0)
        // Recording continues where it left off.
        _ = m.dma(dev, 0x4000)
        #expect(m.unit.pendingFaults.map(\.faultInfo) == [0x4000])
        #expect(m.unit.statistics.faultsRecorded == 3 && m.unit.statistics.faultsOverflowed == 1)
    }

    @Test func registersReportCapabilitiesAndCommands() throws {
        let m = try VTdMachine()
        #expect(m.unit.readRegister(VTdRegister.capability) == VTdConfiguration().capability.rawValue)
        #expect(m.unit.readRegister(VTdRegister.extendedCapability) == VTdConfiguration().extendedCapability.rawValue)
        let gsts = UInt32(m.unit.readRegister(VTdRegister.globalStatus))
        #expect(gsts & VTdGlobalCommand.translationEnable != 0)
        #expect(gsts & VTdGlobalCommand.setRootTablePointer != 0)
        #expect(gsts & VTdGlobalCommand.queuedInvalidationEnable != 0)
        #expect(m.unit.readRegister(VTdRegister.rootTableAddress) == m.tables.rootTable | 1 << 10)
    }
}

@Suite struct VTdQueueTests {
    @Test func waitDescriptorWritesStatusAndInvalidDescriptorsStopTheQueue() throws {
        let memory = PhysicalMemory(allocatorBase: 0x1_0000_0000, allocatorLimit: 0x1_0100_0000)
        let unit = VTdUnit(memory: memory)
        let q = try #require(memory.allocateFrame())
        let status = try #require(memory.allocateFrame())
        unit.writeRegister(VTdRegister.invalidationQueueAddress, q | 1 << 11)
        unit.writeRegister(VTdRegister.globalCommand, UInt64(VTdGlobalCommand.queuedInvalidationEnable))
        VTdInvalidation.wait(statusWrite: true, statusData: 0xABCD_1234, statusAddress: status + 4, interrupt: true).descriptor
            .write(memory, at: q)
        unit.writeRegister(VTdRegister.invalidationQueueTail, 32)
        #expect(memory.read64(status) >> 32 == 0xABCD_1234)
        #expect(unit.readRegister(VTdRegister.invalidationQueueHead) == 32)
        #expect(unit.readRegister(VTdRegister.invalidationCompletionStatus) == 1)
        unit.writeRegister(VTdRegister.invalidationCompletionStatus, 1)
        #expect(unit.readRegister(VTdRegister.invalidationCompletionStatus) == 0)

        // An interrupt-entry-cache descriptor (not modelled) and a wait behind it.
        VTdDescriptor(0x4).write(memory, at: q + 32)
        VTdInvalidation.wait(statusWrite: true, statusData: 7, statusAddress: status).descriptor.write(memory, at: q + 64)
        unit.writeRegister(VTdRegister.invalidationQueueTail, 96)
        #expect(unit.readRegister(VTdRegister.faultStatus) & UInt64(VTdFaultStatus.invalidationQueueError) != 0)
        #expect(unit.readRegister(VTdRegister.invalidationQueueErrorRecord) & 0xF == 1)
        #expect(unit.readRegister(VTdRegister.invalidationQueueHead) == 32)
        #expect(UInt32(truncatingIfNeeded: memory.read64(status)) == 0)
        // Software replaces the bad descriptor and clears IQE: the queue resumes.
        VTdInvalidation.wait(statusWrite: false, statusData: 0, statusAddress: 0).descriptor.write(memory, at: q + 32)
        unit.writeRegister(VTdRegister.faultStatus, UInt64(VTdFaultStatus.invalidationQueueError))
        #expect(unit.readRegister(VTdRegister.invalidationQueueHead) == 96)
        #expect(UInt32(truncatingIfNeeded: memory.read64(status)) == 7)
    }

    @Test func pageRequestQueueAndHardwareResponses() throws {
        let m = try VTdMachine()
        let ep = VTdRecordingEndpoint(dev)
        let ep2 = VTdRecordingEndpoint(dev2)
        m.unit.connect(ep)
        m.unit.connect(ep2)
        let fired = VTdSharedCounters()
        m.unit.setPageRequestInterrupt { fired.count.add(1, ordering: .relaxed) }
        try m.tables.addDevice(dev, pasids: 64, deviceTLB: true, pageRequests: true)
        try m.tables.addDevice(dev2, pasids: 64, deviceTLB: true, pageRequests: false)

        m.unit.pageRequest(PageRequest(requesterID: dev, pasid: PASID(5), address: 0x7000_1234, access: .readWrite,
                                       groupIndex: 3, lastInGroup: false))
        m.unit.pageRequest(PageRequest(requesterID: dev, pasid: PASID(5), address: 0x7000_2000, access: .read,
                                       groupIndex: 3, lastInGroup: true))
        #expect(fired.count.load(ordering: .relaxed) == 2)
        #expect(m.unit.readRegister(VTdRegister.pageRequestStatus) & 1 == 1)
        let reqs = m.prq.drain()
        #expect(reqs.count == 2)
        #expect(reqs[0].requesterID == 0x100 && reqs[0].pasid == 5 && reqs[0].address == 0x7000_1000)
        #expect(reqs[0].read && reqs[0].write && !reqs[0].lastInGroup && reqs[0].groupIndex == 3)
        #expect(reqs[1].lastInGroup && !reqs[1].write)
        #expect(m.unit.readRegister(VTdRegister.pageRequestStatus) & 1 == 0)
        #expect(m.prq.drain().isEmpty)
        // Software answers the group through the invalidation queue.
        try m.queue.submit([.pageGroupResponse(requesterID: 0x100, pasid: 5, code: 0, groupIndex: 3)])
        #expect(ep.responses == [PageResponse(requesterID: dev, pasid: PASID(5), groupIndex: 3, code: .success)])

        // Without PRE in its context, a device's last request is answered with Response Failure
        // by hardware and recorded (0x47).
        m.unit.pageRequest(PageRequest(requesterID: dev2, address: 0x1000, access: .read, groupIndex: 1, lastInGroup: true))
        #expect(ep2.responses.map(\.code) == [.responseFailure])
        #expect(m.unit.takeFaults().map(\.reason) == [.pageRequestNotEnabled])
        #expect(m.unit.takeFaults().isEmpty)

        // A full queue (127 requests) drops the next and sets PRO; a last request is answered
        // with Success so the device retries.
        for i in 0..<127 {
            m.unit.pageRequest(PageRequest(requesterID: dev, address: UInt64(i) << 12, access: .read, groupIndex: 9, lastInGroup: false))
        }
        m.unit.pageRequest(PageRequest(requesterID: dev, address: 0xF_F000, access: .read, groupIndex: 10, lastInGroup: true))
        #expect(m.unit.readRegister(VTdRegister.pageRequestStatus) & 2 == 2)
        #expect(ep.responses.last == PageResponse(requesterID: dev, groupIndex: 10, code: .success))
        #expect(m.prq.drain().count == 127)
        #expect(m.unit.readRegister(VTdRegister.pageRequestStatus) & 2 == 0)
        #expect(m.unit.statistics.pageRequestOverflows == 1)
    }

    @Test func atsTranslationRequests() throws {
        let m = try VTdMachine()
        try m.tables.addDevice(dev, pasids: 64, deviceTLB: true, pageRequests: true)
        try m.tables.addDevice(dev2, pasids: 64, deviceTLB: false, pageRequests: false)
        let ss = try m.secondStageTable()
        try ss.map(iova: 0x1000, physical: 0x6000_0000, size: 0x1000, permissions: .readWrite)
        try ss.map(iova: 0x2000, physical: 0x6000_1000, size: 0x1000, permissions: .read)
        try ss.map(iova: 0x4000, physical: 0x6000_4000, size: 0x1000, permissions: .readWrite)
        try m.tables.setPASIDEntry(dev, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
        try m.tables.setPASIDEntry(dev2, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
        func ats(_ rid: RequesterID, pasid: UInt32? = nil, _ a: UInt64, _ access: AccessPermissions = .readWrite) -> ATSCompletion {
            m.unit.translate(ATSTranslationRequest(requesterID: rid, pasid: pasid.map { PASID($0) }, address: a, access: access))
        }
        guard case .translated(let rw) = ats(dev, 0x1000) else { Issue.record("rw"); return }
        #expect(rw.permissions == .readWrite && rw.outputBase == 0x6000_0000)
        #expect(ss.entries(for: 0x1000).last!.value & VTdSSPTE.dirty != 0)      // write asked: D set
        guard case .translated(let ro) = ats(dev, 0x2000) else { Issue.record("ro"); return }
        #expect(ro.permissions == .read)
        guard case .translated(let none) = ats(dev, 0x3000) else { Issue.record("none"); return }
        #expect(none.permissions.isEmpty)                                       // no fault: PRI may follow
        // A No-Write request on a writable clean page gets no write right (D stays clear); on a
        // page already dirty (cached with write) it may.
        guard case .translated(let nw) = ats(dev, 0x4000, .read) else { Issue.record("nw"); return }
        #expect(nw.permissions == .read)
        #expect(ss.entries(for: 0x4000).last!.value & VTdSSPTE.dirty == 0)
        guard case .translated(let dirty) = ats(dev, 0x1000, .read) else { Issue.record("dirty"); return }
        #expect(dirty.permissions == .readWrite)
        #expect(m.unit.takeFaults().isEmpty)
        // DTE clear: Unsupported Request, recorded (0x44); so are translated requests.
        #expect(ats(dev2, 0x1000) == .unsupportedRequest)
        #expect(m.unit.translate(DMARequest(requesterID: dev2, address: 0x6000_0000, access: .write, addressType: .translated))
            .map { _ in 0 } == .failure(FaultRecord(DMARequest(requesterID: dev2, address: 0x6000_0000, access: .write,
                                                               addressType: .translated), reason: .translatedRequestBlocked)))
        #expect(m.unit.takeFaults().map(\.reason) == [.deviceTLBNotEnabled, .deviceTLBNotEnabled])
        // With DTE, a translated request passes as is.
        guard case .success(let t) = m.unit.translate(DMARequest(requesterID: dev, address: 0x6000_0010, access: .write,
                                                                  addressType: .translated)) else { Issue.record("translated"); return }
        #expect(t.output(for: 0x6000_0010) == 0x6000_0010)
        // A PASID without an entry: Unsupported Request and a 0x59 record.
        #expect(ats(dev, pasid: 3, 0x1000) == .unsupportedRequest)
        #expect(m.unit.takeFaults().map(\.reason) == [.pasidEntryNotPresent])
    }
}
