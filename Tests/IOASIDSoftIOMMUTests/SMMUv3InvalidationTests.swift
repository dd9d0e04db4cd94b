// Invalidation exactness of the SMMUv3 model: a cached translation (or configuration, or ATC
// entry) is used until a command covering it completes — at the CMD_SYNC after it — and never
// after; an invalidation of one ASID, VMID, SubstreamID or range leaves the others cached. The
// tables are changed behind the caches' back, so what a DMA sees tells which copy it used.
// Also: CERROR_ILL, the PRI round trip, and queue overflows.

import Testing
import IOASIDStructures
@testable import IOASIDSoftIOMMU

/// Two streams with stage-1 tables: 0x10 (ASID 1, CD table 0) and 0x11 (ASID 2, CD table 1),
/// both with VMID 0. Each IOVA in `iovas` maps to an "old" page holding 0x01 and can be switched
/// to a "new" page holding 0x02.
final class TwoStreams: @unchecked Sendable {
    let tb: SMMUv3Testbed
    let tables: [ArmStage1PageTable]
    let devices: [PCIFunction]
    let newPage: UInt64
    static let iovas: [UInt64] = [0x40_0000, 0x40_1000, 0x40_2000, 0x40_3000, 0x50_0000]

    init(ats: Bool = false, global: Bool = false) throws {
        tb = SMMUv3Testbed()
        let old = tb.page()
        newPage = tb.page()
        try tb.memory.write([1], at: old)
        try tb.memory.write([2], at: newPage)
        var tables: [ArmStage1PageTable] = []
        var devices: [PCIFunction] = []
        for i in 0..<2 {
            let t = tb.stage1Table()
            for iova in Self.iovas {
                try t.map(iova: iova, physical: old, size: 4096, permissions: [.write, .user],
                          attributes: ArmStage1Attributes(notGlobal: !global))
            }
            let cdTable = SMMUv3Testbed.cdTable(i)
            tb.setCD(table: cdTable, index: 0, SMMUv3Testbed.cd(ttb0: t.root, asid: UInt16(i + 1)))
            tb.setCD(table: cdTable, index: 1, SMMUv3Testbed.cd(ttb0: t.root, asid: UInt16(i + 1)))
            tb.setSTE(UInt32(0x10 + i), SMMUv3Testbed.stage1STE(cdTable: cdTable, cdMax: 1, s1dss: 2, eats: ats ? 1 : 0))
            tables.append(t)
            devices.append(makeFunction(UInt16(0x10 + i), on: tb.smmu, ats: ats))
        }
        self.tables = tables
        self.devices = devices
    }

    /// What stream `i` reads at `iova` (1: old page, 2: new page, nil: fault).
    func value(_ i: Int, _ iova: UInt64, pasid: PASID? = nil) -> UInt8? {
        devices[i].read(pasid: pasid, address: iova, count: 1).completedValue?.first
    }

    /// Switches `iova` of stream `i` to the new page, behind the TLB's back.
    func remap(_ i: Int, _ iova: UInt64) throws {
        _ = try tables[i].unmap(iova: iova, size: 4096)
        try tables[i].map(iova: iova, physical: newPage, size: 4096, permissions: [.write, .user], attributes: ArmStage1Attributes(notGlobal: true))
    }

    /// Fills the TLB with every IOVA of both streams.
    func warm() { for i in 0..<2 { for iova in Self.iovas { _ = value(i, iova) } } }
}

@Suite struct SMMUv3InvalidationTests {
    @Test func tlbiNHVAInvalidatesOneAddressOfOneASIDAtTheSync() throws {
        let s = try TwoStreams()
        s.warm()
        for i in 0..<2 { for iova in TwoStreams.iovas { try s.remap(i, iova) } }
        // Everything is still cached.
        #expect(TwoStreams.iovas.allSatisfy { s.value(0, $0) == 1 && s.value(1, $0) == 1 })
        // Consumed but not synchronized: still cached.
        s.tb.submit([.tlbiNHVA(vmid: 0, asid: 1, address: 0x40_1000, leaf: true, range: .single)], sync: false)
        #expect(s.value(0, 0x40_1000) == 1)
        // After the CMD_SYNC: that one entry, and nothing else.
        s.tb.submit([])
        #expect(s.value(0, 0x40_1000) == 2)
        #expect(s.value(0, 0x40_0000) == 1 && s.value(0, 0x40_2000) == 1 && s.value(1, 0x40_1000) == 1)
    }

    @Test func tlbiNHVARangeCoversExactlyItsPages() throws {
        let s = try TwoStreams()
        s.warm()
        for iova in TwoStreams.iovas { try s.remap(0, iova) }
        // Three pages from 0x40_1000: NUM = 2, SCALE = 0, TG = 4 KiB.
        let range = SMMUv3TLBIRange(num: 2, scale: 0, tg: 1, ttl: 3)
        s.tb.submit([.tlbiNHVA(vmid: 0, asid: 1, address: 0x40_1000, leaf: true, range: range)])
        #expect(s.value(0, 0x40_0000) == 1)
        #expect(s.value(0, 0x40_1000) == 2 && s.value(0, 0x40_2000) == 2 && s.value(0, 0x40_3000) == 2)
        #expect(s.value(0, 0x50_0000) == 1)
        // A 16 KiB-granule range matches nothing here (every entry has the 4 KiB granule).
        s.tb.submit([.tlbiNHVA(vmid: 0, asid: 1, address: 0x50_0000, leaf: true, range: SMMUv3TLBIRange(num: 0, scale: 0, tg: 2, ttl: 3))])
        #expect(s.value(0, 0x50_0000) == 1)
    }

    @Test func tlbiNHASIDInvalidatesOneASIDButNotGlobalEntries() throws {
        let s = try TwoStreams()
        s.warm()
        for i in 0..<2 { for iova in TwoStreams.iovas { try s.remap(i, iova) } }
        s.tb.submit([.tlbiNHASID(vmid: 0, asid: 2)], sync: false)
        #expect(s.value(1, 0x40_0000) == 1)
        s.tb.submit([])
        #expect(TwoStreams.iovas.allSatisfy { s.value(1, $0) == 2 })
        #expect(TwoStreams.iovas.allSatisfy { s.value(0, $0) == 1 })
        // Global entries (nG = 0) ignore CMD_TLBI_NH_ASID but not CMD_TLBI_NH_VA.
        let g = try TwoStreams(global: true)
        g.warm()
        try g.remap(0, 0x40_0000)
        g.tb.submit([.tlbiNHASID(vmid: 0, asid: 1)])
        #expect(g.value(0, 0x40_0000) == 1)
        g.tb.submit([.tlbiNHVA(vmid: 0, asid: 1, address: 0x40_0000, leaf: false, range: .single)])
        #expect(g.value(0, 0x40_0000) == 2)
    }

    @Test func tlbiS12VMAllInvalidatesOneVMID() throws {
        let tb = SMMUv3Testbed()
        let old = tb.page(), new = tb.page()
        try tb.memory.write([1], at: old)
        try tb.memory.write([2], at: new)
        var tables: [PageTable<ArmStage2Format>] = []
        var devices: [PCIFunction] = []
        for (i, vmid) in [UInt16(5), 6].enumerated() {
            let t = tb.stage2Table()
            try t.map(iova: 0x8000_0000, physical: old, size: 4096, permissions: .readWrite)
            tb.setSTE(UInt32(0x20 + i), SMMUv3Testbed.stage2STE(root: t.root, vmid: vmid))
            tables.append(t)
            devices.append(makeFunction(UInt16(0x20 + i), on: tb.smmu))
        }
        func value(_ i: Int) -> UInt8? { devices[i].read(address: 0x8000_0000, count: 1).completedValue?.first }
        #expect(value(0) == 1 && value(1) == 1)
        for t in tables {
            _ = try t.unmap(iova: 0x8000_0000, size: 4096)
            try t.map(iova: 0x8000_0000, physical: new, size: 4096, permissions: .readWrite)
        }
        // Stage-1 invalidations do not touch stage-2-only entries.
        tb.submit([.tlbiNHAll(vmid: 5), .tlbiNHASID(vmid: 5, asid: 0)])
        #expect(value(0) == 1)
        tb.submit([.tlbiS12VMAll(vmid: 5)], sync: false)
        #expect(value(0) == 1)
        tb.submit([])
        #expect(value(0) == 2 && value(1) == 1)
        // CMD_TLBI_S2_IPA by IPA for VMID 6.
        tb.submit([.tlbiS2IPA(vmid: 6, address: 0x8000_0000, leaf: true, range: .single)])
        #expect(value(1) == 2)
    }

    @Test func cfgiSTEMakesANewStreamConfigurationVisibleAtTheSync() throws {
        let s = try TwoStreams()
        s.warm()
        // Point stream 0x10 at stream 0x11's CD table (ASID 2, whose table we remap).
        try s.remap(1, 0x40_0000)
        s.tb.setSTE(0x10, SMMUv3Testbed.stage1STE(cdTable: SMMUv3Testbed.cdTable(1), cdMax: 1, s1dss: 2))
        #expect(s.value(0, 0x40_0000) == 1)
        s.tb.submit([.cfgiSTE(streamID: 0x10, leaf: true)], sync: false)
        #expect(s.value(0, 0x40_0000) == 1)
        s.tb.submit([])
        // ASID 2's translation is still cached from stream 0x11 (same VMID): the new config finds it.
        #expect(s.value(0, 0x40_0000) == 1)
        s.tb.submit([.tlbiNHASID(vmid: 0, asid: 2)])
        #expect(s.value(0, 0x40_0000) == 2 && s.value(1, 0x40_0000) == 2)
        // Invalidating one STE leaves the other cached: make 0x11 invalid behind its back.
        s.tb.setSTE(0x11, SMMUv3StreamTableEntry())
        s.tb.submit([.cfgiSTE(streamID: 0x10, leaf: true)])
        #expect(s.value(1, 0x40_0000) == 2)
        s.tb.submit([.cfgiSTERange(streamID: 0x10, range: 0)])   // 0x10 and 0x11
        #expect(s.value(1, 0x40_0000) == nil)
        #expect(s.tb.events().map(\.id) == [.badSTE])
    }

    @Test func cfgiCDInvalidatesOneSubstream() throws {
        let s = try TwoStreams()
        // SSID 1 and traffic without SSID (CD 0) of stream 0x10 both use ASID 1.
        #expect(s.value(0, 0x40_0000, pasid: 1) == 1 && s.value(0, 0x40_0000) == 1)
        // Both CDs change to ASID 7 with a table mapping the new page.
        let t = s.tb.stage1Table()
        try t.map(iova: 0x40_0000, physical: s.newPage, size: 4096, permissions: [.write, .user], attributes: nonGlobal)
        for index in UInt32(0)...1 { s.tb.setCD(table: SMMUv3Testbed.cdTable(0), index: index, SMMUv3Testbed.cd(ttb0: t.root, asid: 7)) }
        s.tb.submit([.cfgiCD(streamID: 0x10, substreamID: 1, leaf: true)], sync: false)
        #expect(s.value(0, 0x40_0000, pasid: 1) == 1)
        s.tb.submit([])
        #expect(s.value(0, 0x40_0000, pasid: 1) == 2)
        #expect(s.value(0, 0x40_0000) == 1)       // CD 0 is still the cached old one
        s.tb.submit([.cfgiCDAll(streamID: 0x10)])
        #expect(s.value(0, 0x40_0000) == 2)
    }

    @Test func atcInvalidationReachesTheDeviceAtTheSync() throws {
        let s = try TwoStreams(ats: true)
        let f = s.devices[0]
        // PASID 1 and no PASID both go through the ATC.
        #expect(s.value(0, 0x40_0000, pasid: 1) == 1 && s.value(0, 0x40_0000) == 1)
        #expect(f.atc!.count == 2)
        try s.remap(0, 0x40_0000)
        s.tb.submit([.tlbiNHASID(vmid: 0, asid: 1)])
        // The SMMU's TLB is clean but the device still uses its ATC.
        #expect(s.value(0, 0x40_0000, pasid: 1) == 1 && s.value(0, 0x40_0000) == 1)
        s.tb.submit([.atcInv(streamID: 0x10, substreamID: 1, global: false, address: 0x40_0000, size: 0)], sync: false)
        #expect(s.value(0, 0x40_0000, pasid: 1) == 1)
        s.tb.submit([])
        #expect(s.value(0, 0x40_0000, pasid: 1) == 2)
        #expect(s.value(0, 0x40_0000) == 1)        // the entry without PASID stays
        s.tb.submit([.atcInv(streamID: 0x10, substreamID: nil, global: false, address: 0, size: 52)])
        #expect(s.value(0, 0x40_0000) == 2)
    }

    @Test func malformedCommandStopsTheQueueUntilAcknowledged() throws {
        let s = try TwoStreams()
        s.warm()
        try s.remap(0, 0x40_0000)
        final class Seen: @unchecked Sendable { var irqs: [SMMUv3Interrupts] = [] }
        let seen = Seen()
        s.tb.smmu.interruptHandler = { seen.irqs.append($0) }
        let tlbi = SMMUv3Command.tlbiNHVA(vmid: 0, asid: 1, address: 0x40_0000, leaf: true, range: .single)
        let cons = s.tb.smmu.read32(.cmdqCons)
        // A TLBI with a reserved bit set, then a good TLBI and a CMD_SYNC.
        s.tb.submitRaw([(tlbi.words.0 | (1 << 10), tlbi.words.1), tlbi.words, SMMUv3Command.syncNone.words])
        #expect(s.tb.smmu.read32(.cmdqCons) & 0xFF == cons & 0xFF)
        #expect((s.tb.smmu.read32(.cmdqCons) >> 24) & 0x7F == UInt32(SMMUv3CommandError.illegal.rawValue))
        #expect((s.tb.smmu.read32(.gerror) ^ s.tb.smmu.read32(.gerrorn)) & SMMUv3GError.commandQueueError != 0)
        #expect(seen.irqs == [.globalError])
        #expect(s.value(0, 0x40_0000) == 1)
        // Software replaces the bad command with a CMD_SYNC and acknowledges: the queue runs on.
        let slot = SMMUv3Testbed.commandQueue + UInt64(cons & 0x3F) * 16
        s.tb.memory.write64(slot, SMMUv3Command.syncNone.words.0)
        s.tb.memory.write64(slot + 8, 0)
        s.tb.smmu.write32(.gerrorn, s.tb.smmu.read32(.gerror))
        #expect(s.tb.smmu.read32(.cmdqCons) & 0x7F == (cons + 3) & 0x7F)
        #expect(s.value(0, 0x40_0000) == 2)
    }

    @Test func priRoundTripAnswersTheDeviceWhichRetries() throws {
        let tb = SMMUv3Testbed()
        let table = tb.stage1Table()
        let cdTable = SMMUv3Testbed.cdTable(0)
        tb.setCD(table: cdTable, index: 3, SMMUv3Testbed.cd(ttb0: table.root, asid: 3))
        tb.setSTE(0x80, SMMUv3Testbed.stage1STE(cdTable: cdTable, cdMax: 4, eats: 1))
        final class Seen: @unchecked Sendable { var irqs: SMMUv3Interrupts = [] }
        let seen = Seen()
        tb.smmu.interruptHandler = { seen.irqs.formUnion($0) }
        let f = makeFunction(0x80, on: tb.smmu, ats: true, pri: true)
        // The page is not mapped: ATS grants nothing, the device sends a page request and parks.
        let pending = try #require(f.write(pasid: 3, address: 0x7000_0000, bytes: [0xEE]).parked)
        #expect(seen.irqs.contains(.priQueue))
        #expect(tb.events().isEmpty)
        let requests = tb.pageRequests()
        #expect(requests.count == 1)
        let r = try #require(requests.first)
        #expect(r.streamID == 0x80 && r.substreamID == 3 && r.address == 0x7000_0000 && r.write && r.last && r.group == pending.groupIndex)
        // Software makes the page present and answers with CMD_PRI_RESP; the device retries.
        let data = tb.page()
        try table.map(iova: 0x7000_0000, physical: data, size: 4096, permissions: [.write, .user], attributes: nonGlobal)
        #expect(!f.isAnswered(pending))
        tb.submit([.priResp(streamID: 0x80, substreamID: 3, group: r.group, response: .success)], sync: false)
        #expect(f.isAnswered(pending))
        #expect(f.resume(pending).completedValue != nil)
        #expect(try tb.memory.read(count: 1, at: data) == [0xEE])
        // A denied group fails the DMA.
        let second = try #require(f.write(pasid: 3, address: 0x7100_0000, bytes: [1]).parked)
        let r2 = try #require(tb.pageRequests().first)
        tb.submit([.priResp(streamID: 0x80, substreamID: 3, group: r2.group, response: .denied)], sync: false)
        guard case .failed(.pageRequestFailed(.invalidRequest)) = f.resume(second) else { Issue.record("expected a denial"); return }
    }

    @Test func priQueueOverflowAndDisabledQueueAnswerAutomatically() throws {
        let tb = SMMUv3Testbed(queueLog2: 1)   // two entries
        var ste = SMMUv3Testbed.stage1STE(cdTable: SMMUv3Testbed.cdTable(0), cdMax: 4, eats: 1)
        ste.ppar = true
        tb.setSTE(0x81, ste)
        let f = makeFunction(0x81, on: tb.smmu, ats: true, pri: true)
        for address: UInt64 in [0x1000, 0x2000] {
            _ = f.requestPages(pasid: 1, [(address, .read)])
        }
        #expect(f.outstandingPageRequests == 2)
        // The queue is full: the third group overflows and is answered Success (with its PASID).
        _ = f.requestPages(pasid: 1, [(0x3000, .read)])
        #expect(f.outstandingPageRequests == 2)
        #expect(tb.smmu.read32(.priqProd) & (1 << 31) != 0)
        #expect(tb.pageRequests().count == 2)          // consuming acknowledges the overflow
        #expect(tb.smmu.read32(.priqCons) & (1 << 31) != 0)
        // PRIQEN = 0: Response Failure, which stops the device's PRI.
        tb.smmu.write32(.cr0, SMMUv3CR0.smmuEnable | SMMUv3CR0.commandQueueEnable | SMMUv3CR0.eventQueueEnable)
        _ = f.requestPages(pasid: 1, [(0x4000, .read)])
        #expect(f.priStatus.responseFailure)
        #expect(tb.smmu.statistics.pageRequestsAutoResponded == 2)
    }

    @Test func eventQueueOverflowLosesEventsAndSaysSo() throws {
        let tb = SMMUv3Testbed(queueLog2: 2)   // four entries
        let f = makeFunction(0x90, on: tb.smmu)   // invalid STE: every DMA records C_BAD_STE
        for _ in 0..<6 { _ = f.read(address: 0, count: 1) }
        #expect(tb.smmu.read32(.eventqProd) & (1 << 31) != 0)
        #expect(tb.events().count == 4)
        #expect(tb.smmu.statistics.eventsLost == 2)
        _ = f.read(address: 0, count: 1)
        #expect(tb.events().count == 1)
    }
}

import Synchronization

@Suite struct SMMUv3ConcurrencyTests {
    /// DMA from four threads while the mapping changes and is invalidated: a DMA that starts
    /// after a CMD_SYNC completed never uses a translation that CMD_SYNC invalidated.
    @Test func noTranslationIsUsedAfterItsInvalidationCompleted() throws {
        let tb = SMMUv3Testbed()
        let table = tb.stage1Table()
        let rounds = 150
        var pages: [UInt64] = []
        for r in 0...rounds {
            let p = tb.page()
            try tb.memory.write([UInt8(truncatingIfNeeded: r), UInt8(r >> 8)], at: p)
            pages.append(p)
        }
        try table.map(iova: 0x40_0000, physical: pages[0], size: 4096, permissions: [.write, .user], attributes: nonGlobal)
        tb.setCD(table: SMMUv3Testbed.cdTable(0), index: 0, SMMUv3Testbed.cd(ttb0: table.root, asid: 1))
        tb.setSTE(0x10, SMMUv3Testbed.stage1STE(cdTable: SMMUv3Testbed.cdTable(0)))
        let devices = (0..<4).map { _ in makeFunction(0x10, on: tb.smmu) }
        struct Shared: @unchecked Sendable { let table: ArmStage1PageTable; let pages: [UInt64] }
        let shared = Shared(table: table, pages: pages)
        let completed = Atomic<Int>(0)
        let violations = Atomic<Int>(0)
        let reads = Atomic<Int>(0)
        onThreads(5) { t in
            if t == 4 {
                for r in 1...rounds {
                    _ = try? shared.table.unmap(iova: 0x40_0000, size: 4096)
                    try? shared.table.map(iova: 0x40_0000, physical: shared.pages[r], size: 4096, permissions: [.write, .user],
                                          attributes: nonGlobal)
                    tb.submit([.tlbiNHVA(vmid: 0, asid: 1, address: 0x40_0000, leaf: true, range: .single)])
                    completed.store(r, ordering: .sequentiallyConsistent)
                }
                return
            }
            while completed.load(ordering: .sequentiallyConsistent) < rounds {
                let before = completed.load(ordering: .sequentiallyConsistent)
                if let v = devices[t].read(address: 0x40_0000, count: 2).completedValue {
                    reads.add(1, ordering: .relaxed)
                    if Int(v[0]) | Int(v[1]) << 8 < before { violations.add(1, ordering: .relaxed) }
                }
            }
        }
        #expect(violations.load(ordering: .relaxed) == 0)
        #expect(reads.load(ordering: .relaxed) > 0)
    }
}

@Suite struct SMMUv3FetchFaultTests {
    @Test func structuresBeyondTheOutputAddressSizeAbortTheirFetch() throws {
        let tb = SMMUv3Testbed()
        let f = makeFunction(0x10, on: tb.smmu)
        // A CD table pointer beyond 2^48: F_CD_FETCH with the fetch address.
        tb.setSTE(0x10, SMMUv3Testbed.stage1STE(cdTable: 0x1_0000_0000_0000))
        #expect(f.read(address: 0, count: 1).failed)
        let e = try #require(tb.events().first)
        #expect(e.id == .cdFetch && e.fetchAddress == 0x1_0000_0000_0000)
        // A stream table beyond it: F_STE_FETCH.
        tb.smmu.write64(.strtabBase, 0x2_0000_0000_0000)
        tb.submit([.cfgiAll])
        #expect(f.read(address: 0, count: 1).failed)
        let s = try #require(tb.events().first)
        #expect(s.id == .steFetch && s.fetchAddress == 0x2_0000_0000_0000 + 0x10 * 64)
    }
}
