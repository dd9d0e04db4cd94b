// DMA through the SMMUv3 model: stage 1, stage 2 and nested configurations, configuration
// errors that block a transaction and report it, hardware access/dirty updates, ATS.

import Testing
import IOASIDStructures
@testable import IOASIDSoftIOMMU

/// Non-global stage-1 attributes (as Linux maps them).
let nonGlobal = ArmStage1Attributes(notGlobal: true)

@Suite struct SMMUv3TranslationTests {
    @Test func stage1DMALandsInTheMappedPage() throws {
        let tb = SMMUv3Testbed()
        let table = tb.stage1Table()
        let data = tb.page()
        try table.map(iova: 0x40_0000, physical: data, size: 4096, permissions: [.write, .user], attributes: nonGlobal)
        tb.setCD(table: SMMUv3Testbed.cdTable(0), index: 0, SMMUv3Testbed.cd(ttb0: table.root, asid: 1))
        tb.setSTE(0x10, SMMUv3Testbed.stage1STE(cdTable: SMMUv3Testbed.cdTable(0)))
        let f = makeFunction(0x10, on: tb.smmu)
        #expect(f.write(address: 0x40_0010, bytes: [1, 2, 3]).completedValue != nil)
        #expect(try tb.memory.read(count: 3, at: data + 0x10) == [1, 2, 3])
        #expect(f.read(address: 0x40_0010, count: 3).completedValue == [1, 2, 3])
        // An unmapped IOVA faults: F_TRANSLATION at stage 1, class IN, with the input address.
        #expect(f.write(address: 0x80_0000, bytes: [9]).failed)
        let events = tb.events()
        #expect(events.count == 1)
        let e = try #require(events.first)
        #expect(e.id == .translation && e.streamID == 0x10 && !e.stage2 && e.faultClass == .input)
        #expect(e.inputAddress == 0x80_0000 && !e.read && e.substreamID == nil)
        #expect(tb.smmu.statistics.steFetches == 1 && tb.smmu.statistics.cdFetches == 1)
    }

    @Test func stage2DMAAndPermissionFault() throws {
        let tb = SMMUv3Testbed()
        let s2 = tb.stage2Table()
        let data = tb.page()
        try s2.map(iova: 0x8000_0000, physical: data, size: 4096, permissions: .read)
        tb.setSTE(0x20, SMMUv3Testbed.stage2STE(root: s2.root, vmid: 7))
        try tb.memory.write([0xAA, 0xBB], at: data)
        let f = makeFunction(0x20, on: tb.smmu)
        #expect(f.read(address: 0x8000_0000, count: 2).completedValue == [0xAA, 0xBB])
        #expect(f.write(address: 0x8000_0000, bytes: [1]).failed)
        let e = try #require(tb.events().first)
        #expect(e.id == .permission && e.stage2 && e.faultClass == .input && e.ipa == 0x8000_0000)
        // A SubstreamID with stage 1 bypassed is C_BAD_SUBSTREAMID.
        #expect(f.read(pasid: 3, address: 0x8000_0000, count: 1).failed)
        let bad = try #require(tb.events().first)
        #expect(bad.id == .badSubstreamID && bad.substreamID == 3)
    }

    /// Builds a guest: stage-1 tables and a guest-owned CD table in guest-physical memory, copied
    /// into host memory behind a stage-2 table, as a VMM's guest would have them.
    struct Guest {
        let s2: PageTable<ArmStage2Format>
        let s1: ArmStage1PageTable
        let guestMemory: PhysicalMemory
        /// GPA → HPA of every guest frame placed.
        var frames: [UInt64: UInt64] = [:]
        static let cdTableGPA: UInt64 = 0x6000_0000
        static let dataGPA: UInt64 = 0x5000_0000

        init(_ tb: SMMUv3Testbed, ha: Bool = false, hd: Bool = false) throws {
            guestMemory = PhysicalMemory(allocatorBase: 0x4000_0000, allocatorLimit: 0x4010_0000)
            s1 = try ArmStage1PageTable(memory: guestMemory, format: ArmStage1Format(hardwareAccessFlag: ha, hardwareDirtyState: hd))
            s2 = tb.stage2Table()
        }

        /// Copies every guest table frame into fresh host frames and maps them at stage 2.
        mutating func place(_ tb: SMMUv3Testbed, tablePermissions: ArmStage2Permissions = .readWrite) throws {
            var gpa = guestMemory.allocatorBase
            while guestMemory.isAllocated(gpa) {
                let hpa = frames[gpa] ?? tb.page()
                for w in stride(from: UInt64(0), to: 4096, by: 8) { tb.memory.write64(hpa + w, guestMemory.read64(gpa + w)) }
                if frames[gpa] == nil { try s2.map(iova: gpa, physical: hpa, size: 4096, permissions: tablePermissions) }
                frames[gpa] = hpa
                gpa += 4096
            }
        }

        /// The nested STE: the guest's CD table (a GPA) over the stage-2 table.
        func ste(vmid: UInt16, cdMax: UInt64 = 0) -> SMMUv3StreamTableEntry {
            var ste = SMMUv3Testbed.stage1STE(cdTable: Self.cdTableGPA, cdMax: cdMax)
            ste.config = .nested
            SMMUv3Testbed.setStage2(&ste, root: s2.root, vmid: vmid)
            return ste
        }
    }

    @Test func nestedDMAWalksGuestTablesThroughStage2() throws {
        let tb = SMMUv3Testbed()
        var guest = try Guest(tb)
        try guest.s1.map(iova: 0x1000_0000, physical: Guest.dataGPA, size: 2 * 4096, permissions: [.write, .user], attributes: nonGlobal)
        try guest.place(tb)
        let hostData = tb.page(), hostData2 = tb.page()
        try guest.s2.map(iova: Guest.dataGPA, physical: hostData, size: 4096, permissions: .readWrite)
        try guest.s2.map(iova: Guest.dataGPA + 4096, physical: hostData2, size: 4096, permissions: .readWrite)
        // The guest-owned CD table lives at a GPA; the host only maps it at stage 2.
        let hostCD = tb.page()
        try guest.s2.map(iova: Guest.cdTableGPA, physical: hostCD, size: 4096, permissions: .read)
        SMMUv3Testbed.cd(ttb0: guest.s1.root, asid: 9).write(to: tb.memory, at: hostCD)
        tb.setSTE(0x30, guest.ste(vmid: 3))
        let f = makeFunction(0x30, on: tb.smmu)
        #expect(f.write(address: 0x1000_0008, bytes: [5, 6]).completedValue != nil)
        #expect(try tb.memory.read(count: 2, at: hostData + 8) == [5, 6])
        // A walk on a TLB miss: 4 stage-1 descriptors, each behind a 4-read stage-2 walk, plus the
        // 4-read stage-2 walk of the final IPA: 24 reads.
        let before = tb.smmu.statistics.tableReads
        #expect(f.write(address: 0x1000_1000, bytes: [7]).completedValue != nil)
        #expect(tb.smmu.statistics.tableReads - before == 24)
        #expect(try tb.memory.read(count: 1, at: hostData2) == [7])
        // The TLB entry is combined (both stages), tagged with the VMID and the guest's ASID.
        let entry = try #require(tb.smmu.tlb.entries().first { $0.translation.inputBase == 0x1000_1000 })
        #expect(entry.tag.domain == 3 && entry.tag.space == 9 && entry.stages == .all)
        #expect(tb.events().isEmpty)
    }

    @Test func nestedFaultsReportTheStageAndClass() throws {
        let tb = SMMUv3Testbed()
        var guest = try Guest(tb)
        try guest.s1.map(iova: 0x1000_0000, physical: Guest.dataGPA, size: 4096, permissions: [.write, .user], attributes: nonGlobal)
        try guest.place(tb)
        let hostData = tb.page()
        try guest.s2.map(iova: Guest.dataGPA, physical: hostData, size: 4096, permissions: .read)   // read-only at stage 2
        let hostCD = tb.page()
        try guest.s2.map(iova: Guest.cdTableGPA, physical: hostCD, size: 4096, permissions: .read)
        SMMUv3Testbed.cd(ttb0: guest.s1.root, asid: 1).write(to: tb.memory, at: hostCD)
        tb.setSTE(0x31, guest.ste(vmid: 4))
        let f = makeFunction(0x31, on: tb.smmu)
        // Stage 1 allows the write, stage 2 does not: F_PERMISSION, S2, class IN, the IPA.
        #expect(f.read(address: 0x1000_0000, count: 1).completedValue != nil)
        #expect(f.write(address: 0x1000_0000, bytes: [1]).failed)
        var e = try #require(tb.events().first)
        #expect(e.id == .permission && e.stage2 && e.faultClass == .input && e.ipa == Guest.dataGPA && e.inputAddress == 0x1000_0000)
        // A stage-1 table frame not mapped at stage 2: F_TRANSLATION, S2, class TTD, the descriptor's IPA.
        let leafTableGPA = try #require(guest.s1.entries(for: 0x1000_0000).dropLast().last).value & ArmDescriptor.addressMask
        _ = try guest.s2.unmap(iova: leafTableGPA, size: 4096)
        tb.submit([.tlbiS12VMAll(vmid: 4)])
        #expect(f.read(address: 0x1000_0000, count: 1).failed)
        e = try #require(tb.events().first)
        #expect(e.id == .translation && e.stage2 && e.faultClass == .tableDescriptor && e.ipa == leafTableGPA)
        // The guest CD table not mapped at stage 2: a stage-2 fault with class CD.
        _ = try guest.s2.unmap(iova: Guest.cdTableGPA, size: 4096)
        tb.submit([.cfgiSTE(streamID: 0x31, leaf: true)])
        #expect(f.read(address: 0x1000_0000, count: 1).failed)
        e = try #require(tb.events().first)
        #expect(e.id == .translation && e.stage2 && e.faultClass == .cd && e.ipa == Guest.cdTableGPA)
    }

    @Test func stage1HardwareUpdatesThroughStage2NeedWritePermission() throws {
        let tb = SMMUv3Testbed()
        var guest = try Guest(tb, ha: true)
        try guest.s1.map(iova: 0x1000_0000, physical: Guest.dataGPA, size: 4096, permissions: [.write, .user],
                         attributes: ArmStage1Attributes(notGlobal: true, accessFlag: false))
        try guest.place(tb, tablePermissions: .read)   // the guest's tables are read-only at stage 2
        try guest.s2.map(iova: Guest.dataGPA, physical: tb.page(), size: 4096, permissions: .readWrite)
        let hostCD = tb.page()
        try guest.s2.map(iova: Guest.cdTableGPA, physical: hostCD, size: 4096, permissions: .read)
        SMMUv3Testbed.cd(ttb0: guest.s1.root, asid: 1, ha: true).write(to: tb.memory, at: hostCD)
        tb.setSTE(0x32, guest.ste(vmid: 5))
        let f = makeFunction(0x32, on: tb.smmu)
        // Setting AF in the stage-1 leaf is a write through stage 2, which refuses it.
        #expect(f.read(address: 0x1000_0000, count: 1).failed)
        let e = try #require(tb.events().first)
        #expect(e.id == .permission && e.stage2 && e.faultClass == .tableDescriptor && !e.tableRead)
    }

    @Test func substreamBeyondS1CDMaxOrInvalidCDIsBlockedAndReported() throws {
        let tb = SMMUv3Testbed()
        let table = tb.stage1Table()
        let data = tb.page()
        try table.map(iova: 0x40_0000, physical: data, size: 4096, permissions: [.write, .user], attributes: nonGlobal)
        let cdTable = SMMUv3Testbed.cdTable(1)
        tb.setCD(table: cdTable, index: 1, SMMUv3Testbed.cd(ttb0: table.root, asid: 11))
        tb.setSTE(0x40, SMMUv3Testbed.stage1STE(cdTable: cdTable, cdMax: 2))   // 4 CDs; CD 1 valid
        let f = makeFunction(0x40, on: tb.smmu)
        #expect(f.write(pasid: 1, address: 0x40_0000, bytes: [1]).completedValue != nil)
        let walks = tb.smmu.statistics.walks
        // SSID 4 ≥ 2^S1CDMax: C_BAD_SUBSTREAMID, never translated.
        guard case .failed(.fault(let fault)) = f.write(pasid: 4, address: 0x40_0000, bytes: [2]) else {
            Issue.record("expected a fault"); return
        }
        #expect(fault.reason == .pasidNotSupported)
        var e = try #require(tb.events().first)
        #expect(e.id == .badSubstreamID && e.streamID == 0x40 && e.substreamID == 4)
        // SSID 2: CD.V = 0: C_BAD_CD.
        #expect(f.write(pasid: 2, address: 0x40_0000, bytes: [2]).failed)
        e = try #require(tb.events().first)
        #expect(e.id == .badCD && e.substreamID == 2)
        #expect(tb.smmu.statistics.walks == walks)
        #expect(try tb.memory.read(count: 1, at: data) == [1])
        // No SSID with S1DSS = terminate: F_STREAM_DISABLED.
        #expect(f.write(address: 0x40_0000, bytes: [3]).failed)
        #expect(tb.events().first?.id == .streamDisabled)
        // An ILLEGAL CD (AA64 = 0): C_BAD_CD.
        var illegal = SMMUv3Testbed.cd(ttb0: table.root, asid: 12)
        illegal.aa64 = false
        tb.setCD(table: cdTable, index: 3, illegal)
        #expect(f.write(pasid: 3, address: 0x40_0000, bytes: [3]).failed)
        #expect(tb.events().first?.id == .badCD)
    }

    @Test func defaultSubstreamSettings() throws {
        let tb = SMMUv3Testbed()
        let table = tb.stage1Table()
        let data = tb.page()
        try table.map(iova: 0x40_0000, physical: data, size: 4096, permissions: [.write, .user], attributes: nonGlobal)
        let cdTable = SMMUv3Testbed.cdTable(2)
        tb.setCD(table: cdTable, index: 0, SMMUv3Testbed.cd(ttb0: table.root, asid: 1))
        tb.setCD(table: cdTable, index: 1, SMMUv3Testbed.cd(ttb0: table.root, asid: 2))
        // S1DSS = SSID0: traffic without SSID uses CD 0; SSID 0 itself is F_STREAM_DISABLED.
        tb.setSTE(0x41, SMMUv3Testbed.stage1STE(cdTable: cdTable, cdMax: 1, s1dss: 2))
        let f = makeFunction(0x41, on: tb.smmu)
        #expect(f.write(address: 0x40_0000, bytes: [1]).completedValue != nil)
        #expect(f.write(pasid: 0, address: 0x40_0000, bytes: [2]).failed)
        #expect(tb.events().first?.id == .streamDisabled)
        // S1DSS = bypass: traffic without SSID skips stage 1 (the IOVA is the PA).
        tb.setSTE(0x41, SMMUv3Testbed.stage1STE(cdTable: cdTable, cdMax: 1, s1dss: 1))
        tb.submit([.cfgiSTE(streamID: 0x41, leaf: true)])
        #expect(f.write(address: data + 4, bytes: [4]).completedValue != nil)
        #expect(try tb.memory.read(count: 1, at: data + 4) == [4])
    }

    @Test func badStreamConfigurations() throws {
        let tb = SMMUv3Testbed()
        let f = makeFunction(0x50, on: tb.smmu)
        // V = 0.
        #expect(f.read(address: 0x1000, count: 1).failed)
        #expect(tb.events().map(\.id) == [.badSTE])
        // Config = abort: blocked, no event.
        var abort = SMMUv3StreamTableEntry()
        abort.valid = true
        tb.setSTE(0x50, abort)
        tb.submit([.cfgiSTE(streamID: 0x50, leaf: true)])
        guard case .failed(.fault(let fault)) = f.read(address: 0x1000, count: 1) else { Issue.record("expected a fault"); return }
        #expect(fault.reason == .blocked)
        #expect(tb.events().isEmpty)
        // ILLEGAL stage 2 (S2AA64 = 0).
        var s2 = SMMUv3Testbed.stage2STE(root: tb.stage2Table().root, vmid: 1)
        s2.s2AA64 = false
        tb.setSTE(0x50, s2)
        tb.submit([.cfgiSTE(streamID: 0x50, leaf: true)])
        #expect(f.read(address: 0x1000, count: 1).failed)
        #expect(tb.events().map(\.id) == [.badSTE])
        // A StreamID beyond the stream table: C_BAD_STREAMID.
        let far = makeFunction(0x1FF, on: tb.smmu)
        #expect(far.read(address: 0x1000, count: 1).failed)
        #expect(tb.events().map(\.id) == [.badStreamID])
        // Bypass.
        let page = tb.page()
        var bypass = SMMUv3StreamTableEntry()
        bypass.valid = true
        bypass.config = .bypass
        tb.setSTE(0x50, bypass)
        tb.submit([.cfgiSTE(streamID: 0x50, leaf: true)])
        #expect(f.write(address: page, bytes: [8]).completedValue != nil)
        #expect(try tb.memory.read(count: 1, at: page) == [8])
    }

    @Test func twoLevelTablesAndGlobalBypass() throws {
        let tb = SMMUv3Testbed(enable: false)
        // SMMUEN = 0: GBPA bypass, then GBPA abort.
        let f = makeFunction(0x1234, on: tb.smmu)
        let page = tb.page()
        #expect(f.write(address: page, bytes: [1]).completedValue != nil)
        tb.smmu.write32(.gbpa, 1 << 20)
        #expect(f.write(address: page, bytes: [1]).failed)
        // A 2-level stream table (SPLIT 8) and a 2-level CD table (4 KiB leaves).
        let l1: UInt64 = 0x30_0000, l2: UInt64 = 0x31_0000
        tb.memory.write64(l1 + 0x12 * 8, SMMUv3L1StreamTableDescriptor(span: 9, l2Ptr: l2).word)
        tb.smmu.write64(.strtabBase, l1)
        tb.smmu.write32(.strtabBaseCfg, 16 | (8 << 6) | (1 << 16))
        let table = tb.stage1Table()
        let data = tb.page()
        try table.map(iova: 0x40_0000, physical: data, size: 4096, permissions: [.write, .user], attributes: nonGlobal)
        let cdL1: UInt64 = 0x40_0000, cdL2: UInt64 = 0x41_0000
        tb.memory.write64(cdL1 + 1 * 8, SMMUv3L1ContextDescriptor(l2Ptr: cdL2).word)   // SSIDs 64 … 127
        SMMUv3Testbed.cd(ttb0: table.root, asid: 5).write(to: tb.memory, at: cdL2 + 6 * 64)  // SSID 70
        var ste = SMMUv3Testbed.stage1STE(cdTable: cdL1, cdMax: 10)
        ste.s1Fmt = 1
        ste.write(to: tb.memory, at: l2 + 0x34 * 64)
        tb.smmu.write32(.cr0, SMMUv3CR0.smmuEnable | SMMUv3CR0.commandQueueEnable | SMMUv3CR0.eventQueueEnable)
        #expect(f.write(pasid: 70, address: 0x40_0000, bytes: [2]).completedValue != nil)
        #expect(try tb.memory.read(count: 1, at: data) == [2])
        // SSID 200: its L1CD is invalid: C_BAD_SUBSTREAMID.
        #expect(f.write(pasid: 200, address: 0x40_0000, bytes: [2]).failed)
        #expect(tb.events().map(\.id) == [.badSubstreamID])
        // StreamID 0x1300: L1STD span 0: C_BAD_STREAMID (CR2.RECINVSID is set).
        #expect(makeFunction(0x1300, on: tb.smmu).read(address: 0, count: 1).failed)
        #expect(tb.events().map(\.id) == [.badStreamID])
    }

    @Test func hardwareAccessAndDirtyStateWithDBM() throws {
        let tb = SMMUv3Testbed()
        let table = tb.stage1Table(ha: true, hd: true)
        let data = tb.page()
        try table.map(iova: 0x40_0000, physical: data, size: 4096, permissions: [.write, .user],
                      attributes: ArmStage1Attributes(notGlobal: true, accessFlag: false))
        tb.setCD(table: SMMUv3Testbed.cdTable(0), index: 0, SMMUv3Testbed.cd(ttb0: table.root, asid: 1, ha: true, hd: true))
        tb.setSTE(0x60, SMMUv3Testbed.stage1STE(cdTable: SMMUv3Testbed.cdTable(0)))
        let f = makeFunction(0x60, on: tb.smmu)
        #expect(try table.readAndClearDirty(iova: 0x40_0000, size: 4096, clear: false).isEmpty)
        // A read sets AF and leaves the page clean (and is cached without write).
        #expect(f.read(address: 0x40_0000, count: 1).completedValue != nil)
        let leaf = try #require(table.entries(for: 0x40_0000).last).value
        #expect(leaf & ArmDescriptor.accessFlag != 0 && leaf & ArmStage1Descriptor.ap2ReadOnly != 0)
        #expect(try table.readAndClearDirty(iova: 0x40_0000, size: 4096, clear: false).isEmpty)
        // A write after the cached read still marks the page dirty.
        #expect(f.write(address: 0x40_0000, bytes: [1]).completedValue != nil)
        #expect(try table.readAndClearDirty(iova: 0x40_0000, size: 4096) == [DirtyRange(iova: 0x40_0000, length: 4096)])
        // Cleaned and invalidated, the next write marks it again.
        tb.submit([.tlbiNHVA(vmid: 0, asid: 1, address: 0x40_0000, leaf: true, range: .single)])
        #expect(f.write(address: 0x40_0000, bytes: [2]).completedValue != nil)
        #expect(try table.readAndClearDirty(iova: 0x40_0000, size: 4096).count == 1)
    }

    @Test func atsTranslationRequestsAndTranslatedTraffic() throws {
        let tb = SMMUv3Testbed()
        let table = tb.stage1Table()
        let data = tb.page()
        try table.map(iova: 0x40_0000, physical: data, size: 4096, permissions: .user, attributes: nonGlobal)  // read-only
        tb.setCD(table: SMMUv3Testbed.cdTable(0), index: 0, SMMUv3Testbed.cd(ttb0: table.root, asid: 1))
        tb.setSTE(0x70, SMMUv3Testbed.stage1STE(cdTable: SMMUv3Testbed.cdTable(0), eats: 1))
        let f = makeFunction(0x70, on: tb.smmu, ats: true)
        // Read-write asked, read granted.
        guard case .translated(let t) = f.requestTranslation(address: 0x40_0000) else { Issue.record("no translation"); return }
        #expect(t.permissions == .read && t.outputBase == data)
        // A fault is a completion without rights, and no event.
        guard case .translated(let none) = f.requestTranslation(address: 0x90_0000) else { Issue.record("no completion"); return }
        #expect(none.permissions.isEmpty)
        #expect(tb.events().isEmpty)
        // DMA then uses the ATC and translated requests.
        try tb.memory.write([0x42], at: data)
        #expect(f.read(address: 0x40_0000, count: 1).completedValue == [0x42])
        // EATS = 0: Unsupported Request and F_BAD_ATS_TREQ; translated traffic is F_TRANSL_FORBIDDEN.
        tb.setSTE(0x70, SMMUv3Testbed.stage1STE(cdTable: SMMUv3Testbed.cdTable(0), eats: 0))
        tb.submit([.cfgiSTE(streamID: 0x70, leaf: true)])
        #expect(f.requestTranslation(address: 0x40_0000) == .unsupportedRequest)
        #expect(tb.events().map(\.id) == [.badATSTranslationRequest])
        let translated = DMARequest(requesterID: f.requesterID, address: data, access: .read, addressType: .translated)
        #expect(throws: FaultRecord.self) { try tb.smmu.translate(translated).get() }
        #expect(tb.events().map(\.id) == [.translationForbidden])
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The SMMUv3's DMA translation path allocates nothing: TLB hits, walks (stage 1, stage 2 and
/// nested), and faults that record events. Needs the malloc counter to check (see
/// TranslationAllocationTests); without it, it only exercises the paths.
@Suite struct SMMUv3AllocationTests {
    @Test func translationAllocatesNothing() throws {
        let tb = SMMUv3Testbed(queueLog2: 10)
        // Stage 1 (0x10), stage 2 (0x20), nested (0x30).
        let s1 = tb.stage1Table()
        let data = tb.page()
        try s1.map(iova: 0x40_0000, physical: data, size: 4096, permissions: [.write, .user], attributes: nonGlobal)
        tb.setCD(table: SMMUv3Testbed.cdTable(0), index: 0, SMMUv3Testbed.cd(ttb0: s1.root, asid: 1))
        tb.setSTE(0x10, SMMUv3Testbed.stage1STE(cdTable: SMMUv3Testbed.cdTable(0)))
        let s2 = tb.stage2Table()
        try s2.map(iova: 0x8000_0000, physical: data, size: 4096, permissions: .readWrite)
        tb.setSTE(0x20, SMMUv3Testbed.stage2STE(root: s2.root, vmid: 2))
        var guest = try SMMUv3TranslationTests.Guest(tb)
        try guest.s1.map(iova: 0x1000_0000, physical: SMMUv3TranslationTests.Guest.dataGPA, size: 4096, permissions: [.write, .user],
                         attributes: nonGlobal)
        try guest.place(tb)
        try guest.s2.map(iova: SMMUv3TranslationTests.Guest.dataGPA, physical: data, size: 4096, permissions: .readWrite)
        let hostCD = tb.page()
        try guest.s2.map(iova: SMMUv3TranslationTests.Guest.cdTableGPA, physical: hostCD, size: 4096, permissions: .read)
        SMMUv3Testbed.cd(ttb0: guest.s1.root, asid: 3).write(to: tb.memory, at: hostCD)
        tb.setSTE(0x30, guest.ste(vmid: 3))
        let requests = [
            DMARequest(requesterID: RequesterID(rawValue: 0x10), address: 0x40_0000, access: .write),
            DMARequest(requesterID: RequesterID(rawValue: 0x20), address: 0x8000_0000, access: .read),
            DMARequest(requesterID: RequesterID(rawValue: 0x30), address: 0x1000_0000, access: .write),
            DMARequest(requesterID: RequesterID(rawValue: 0x10), address: 0x90_0000, access: .read),       // F_TRANSLATION
            DMARequest(requesterID: RequesterID(rawValue: 0x10), pasid: 4, address: 0x40_0000, access: .read), // C_BAD_SUBSTREAMID
        ]
        let smmu = tb.smmu
        var checksum: UInt64 = 0
        func round(_ n: Int) {
            for i in 0..<n {
                switch smmu.translate(requests[i % requests.count]) {
                case .success(let t): checksum &+= t.outputBase
                case .failure(let f): checksum &+= f.address
                }
                // Every 50 requests: a TLB miss (the walks) for every stream.
                if i % 50 == 0 { smmu.tlb.invalidate(.all) }
            }
        }
        round(100)
        _ = tb.events()
        // The event queue (1024 entries) must not fill: drain it between rounds, uncounted.
        guard let fewest = fewestMallocs(of: { round(400) }, between: { _ = tb.events() }) else {
            round(500)
            #expect(checksum != 0)
            return
        }
        #expect(fewest == 0, "allocations in 2000 SMMU translations")
        #expect(checksum != 0)
    }
}
