import Foundation
import IOASIDStructures
import Synchronization
import Testing
@testable import IOASIDSoftIOMMU

private let dev = RequesterID(bus: 2, device: 0, function: 0)     // 0x0200
private let dev1 = RequesterID(bus: 2, device: 0, function: 1)    // 0x0201
private let dev2 = RequesterID(bus: 2, device: 3, function: 0)    // 0x0218

/// Points the 4 KiB leaf of `iova` at `physical` behind the caches' back (keeping its flags).
private func retarget<F>(_ table: PageTable<F>, _ iova: UInt64, to physical: UInt64) {
    let leaf = table.entries(for: iova).last!
    table.memory.write64(leaf.address, (leaf.value & ~0x000F_FFFF_FFFF_F000) | physical)
}

/// Invalidation is exact: a cached translation (or context / PASID entry) is used after the
/// tables changed behind the caches' back until an invalidation covering it completes, and
/// never after; invalidations of other domains, PASIDs, ranges or devices leave it cached.
@Suite struct VTdInvalidationTests {
    @Test func iotlbDomainSelective() throws {
        let m = try VTdMachine()
        try m.tables.addDevice(dev, pasids: 0, deviceTLB: false, pageRequests: false)
        let ss = try m.secondStageTable()
        try ss.map(iova: 0x10_0000, physical: 0x1000_0000, size: 0x1000, permissions: .readWrite)
        try m.tables.setPASIDEntry(dev, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
        #expect(m.output(dev, 0x10_0000) == 0x1000_0000)
        let walks = m.unit.statistics.walks
        retarget(ss, 0x10_0000, to: 0x2000_0000)
        #expect(m.output(dev, 0x10_0008) == 0x1000_0008)                    // the IOTLB still holds it
        #expect(m.unit.statistics.walks == walks)
        try m.queue.submit([.iotlb(.domain(3))])                             // another domain
        #expect(m.output(dev, 0x10_0000) == 0x1000_0000)
        try m.queue.submit([.pasidIOTLB(.pasid(2, 0))])                      // PASID-based: not second stage
        #expect(m.output(dev, 0x10_0000) == 0x1000_0000)
        try m.queue.submit([.iotlb(.domain(2))])
        #expect(m.output(dev, 0x10_0000) == 0x2000_0000)
        #expect(m.unit.statistics.walks == walks + 1)
    }

    @Test func iotlbPageSelectiveHonoursTheAddressMask() throws {
        let m = try VTdMachine()
        try m.tables.addDevice(dev, pasids: 0, deviceTLB: false, pageRequests: false)
        let ss = try m.secondStageTable()
        try ss.map(iova: 0x1_0000, physical: 0x1000_0000, size: 0x1000, permissions: .readWrite)
        try ss.map(iova: 0x20_0000, physical: 0x1100_0000, size: 0x1000, permissions: .readWrite)
        try m.tables.setPASIDEntry(dev, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
        #expect(m.output(dev, 0x1_0000) == 0x1000_0000)
        #expect(m.output(dev, 0x20_0000) == 0x1100_0000)
        retarget(ss, 0x1_0000, to: 0x3000_0000)
        retarget(ss, 0x20_0000, to: 0x3100_0000)
        // One page at 0x10000: only it goes.
        try m.queue.submit([.iotlb(.page(2, VTdPageRange(address: 0x1_0000, mask: 0)))])
        #expect(m.output(dev, 0x1_0000) == 0x3000_0000)
        #expect(m.output(dev, 0x20_0000) == 0x1100_0000)
        // 2 MiB at 0 (mask 9) does not reach 0x200000 ...
        try m.queue.submit([.iotlb(.page(2, VTdPageRange(address: 0, mask: 9)))])
        #expect(m.output(dev, 0x20_0000) == 0x1100_0000)
        // ... another domain's range does not either ...
        try m.queue.submit([.iotlb(.page(5, VTdPageRange(address: 0, mask: 10)))])
        #expect(m.output(dev, 0x20_0000) == 0x1100_0000)
        // ... 4 MiB at 0 (mask 10) does.
        try m.queue.submit([.iotlb(.page(2, VTdPageRange.covering(first: 0x1F_F000, last: 0x20_0FFF)))])
        #expect(m.output(dev, 0x20_0000) == 0x3100_0000)
    }

    @Test func pasidBasedIOTLBInvalidationIsPerPASIDAndLeavesSecondStage() throws {
        let m = try VTdMachine()
        try m.tables.addDevice(dev, pasids: 64, deviceTLB: false, pageRequests: false)
        let fs5 = try m.firstStageTable(), fs6 = try m.firstStageTable()
        let ss = try m.secondStageTable()
        for (t, p) in [(fs5, UInt64(0x5000_0000)), (fs6, 0x6000_0000)] {
            try t.map(iova: 0x4000, physical: p, size: 0x1000, permissions: [.write, .user])
            try t.map(iova: 0x8000, physical: p + 0x10_0000, size: 0x1000, permissions: [.write, .user])
        }
        try ss.map(iova: 0x4000, physical: 0x7000_0000, size: 0x1000, permissions: .readWrite)
        // PASIDs 5 and 6 share domain 4 (first stage); RID_PASID uses domain 4's second stage too.
        try m.tables.setPASIDEntry(dev, pasid: 5, VTdMachine.firstStage(fs5.root, domain: 4))
        try m.tables.setPASIDEntry(dev, pasid: 6, VTdMachine.firstStage(fs6.root, domain: 4))
        try m.tables.setPASIDEntry(dev, pasid: 0, VTdMachine.secondStage(ss.root, domain: 4))
        for a in [0x4000, 0x8000] as [UInt64] {
            #expect(m.output(dev, pasid: 5, a) != nil && m.output(dev, pasid: 6, a) != nil)
        }
        #expect(m.output(dev, 0x4000) == 0x7000_0000)
        retarget(fs5, 0x4000, to: 0x5800_0000); retarget(fs5, 0x8000, to: 0x5900_0000)
        retarget(fs6, 0x4000, to: 0x6800_0000)
        retarget(ss, 0x4000, to: 0x7800_0000)

        // IOTLB (second-stage) invalidation of domain 4 leaves the first-stage entries.
        try m.queue.submit([.iotlb(.domain(4))])
        #expect(m.output(dev, 0x4000) == 0x7800_0000)
        #expect(m.output(dev, pasid: 5, 0x4000) == 0x5000_0000)
        retarget(ss, 0x4000, to: 0x7900_0000)
        // Page-selective within PASID 5: one page of PASID 5 only.
        try m.queue.submit([.pasidIOTLB(.page(4, 5, VTdPageRange(address: 0x4000, mask: 0, invalidationHint: true)))])
        #expect(m.output(dev, pasid: 5, 0x4000) == 0x5800_0000)
        #expect(m.output(dev, pasid: 5, 0x8000) == 0x5010_0000)
        #expect(m.output(dev, pasid: 6, 0x4000) == 0x6000_0000)
        // PASID-selective for PASID 5 (wrong domain first).
        try m.queue.submit([.pasidIOTLB(.pasid(9, 5))])
        #expect(m.output(dev, pasid: 5, 0x8000) == 0x5010_0000)
        try m.queue.submit([.pasidIOTLB(.pasid(4, 5))])
        #expect(m.output(dev, pasid: 5, 0x8000) == 0x5900_0000)
        #expect(m.output(dev, pasid: 6, 0x4000) == 0x6000_0000)                 // PASID 6 still cached
        #expect(m.output(dev, 0x4000) == 0x7800_0000)                           // second stage still cached
        try m.queue.submit([.iotlb(.global)])
        #expect(m.output(dev, pasid: 6, 0x4000) == 0x6800_0000)
        #expect(m.output(dev, 0x4000) == 0x7900_0000)
    }

    @Test func pasidCacheInvalidation() throws {
        let m = try VTdMachine()
        try m.tables.addDevice(dev, pasids: 64, deviceTLB: false, pageRequests: false)
        let a = try m.secondStageTable(), b = try m.secondStageTable()
        try a.map(iova: 0x1000, physical: 0x1000_0000, size: 0x2000, permissions: .readWrite)
        try b.map(iova: 0x1000, physical: 0x2000_0000, size: 0x2000, permissions: .readWrite)
        try m.tables.setPASIDEntry(dev, pasid: 3, VTdMachine.secondStage(a.root, domain: 7))
        try m.tables.setPASIDEntry(dev, pasid: 4, VTdMachine.secondStage(a.root, domain: 7))
        #expect(m.output(dev, pasid: 3, 0x1000) == 0x1000_0000)
        #expect(m.output(dev, pasid: 4, 0x1000) == 0x1000_0000)
        // Both PASID entries now point at table b with domain 8, behind the PASID cache's back.
        for p: UInt32 in [3, 4] {
            let address = VTdPASIDEntry.address(table: m.memory.read64(VTdPASIDDirectoryEntry.address(
                directory: m.tables.contextEntry(dev)!.pasidDirectory, pasid: p)) & ~0xFFF, pasid: p)
            VTdMachine.secondStage(b.root, domain: 8).write(m.memory, at: address)
        }
        // 0x2000 was never translated, so only the cached PASID entry can send it to table a.
        #expect(m.output(dev, pasid: 3, 0x2000) == 0x1000_1000)
        try m.queue.submit([.pasidCache(.pasid(7, 4))])                         // the other PASID
        #expect(m.output(dev, pasid: 3, 0x2000) == 0x1000_1000)
        #expect(m.output(dev, pasid: 4, 0x2000) == 0x2000_1000)
        try m.queue.submit([.pasidCache(.domain(8))])                           // a domain that was not cached
        #expect(m.output(dev, pasid: 3, 0x2000) == 0x1000_1000)
        try m.queue.submit([.pasidCache(.pasid(7, 3))])
        #expect(m.output(dev, pasid: 3, 0x2000) == 0x2000_1000)
        let s = m.unit.statistics
        #expect(s.pasidHits > 0 && s.pasidMisses >= 4)
    }

    @Test func contextCacheInvalidationWithFunctionMask() throws {
        let m = try VTdMachine()
        let ss = try m.secondStageTable()
        try ss.map(iova: 0x1000, physical: 0x1000_0000, size: 0x1000, permissions: .readWrite)
        for d in [dev, dev1, dev2] {
            try m.tables.addDevice(d, pasids: 0, deviceTLB: false, pageRequests: false)
            try m.tables.setPASIDEntry(d, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
            #expect(m.output(d, 0x1000) == 0x1000_0000)
        }
        // Clear the three context entries in memory: the context cache keeps them working.
        let root = VTdRootEntry.read(m.memory, at: VTdRootEntry.address(rootTable: m.tables.rootTable, bus: 2))
        for d in [dev, dev1, dev2] {
            VTdContextEntry().write(m.memory, at: VTdContextEntry.address(root: root, devfn: UInt8(d.rawValue & 0xFF))!)
        }
        #expect(m.output(dev1, 0x1000) == 0x1000_0000)
        // Device-selective for 02:00.0 without mask: 02:00.1 stays cached.
        try m.queue.submit([.contextCache(.device(domain: 0, sourceID: dev.rawValue, functionMask: 0))])
        #expect(m.faultReason(dev, 0x1000) == .invalidContext)
        #expect(m.output(dev1, 0x1000) == 0x1000_0000)
        // With FM = 3 (all function bits masked) 02:00.1 goes too, 02:03.0 does not.
        try m.queue.submit([.contextCache(.device(domain: 0, sourceID: dev.rawValue, functionMask: 3))])
        #expect(m.faultReason(dev1, 0x1000) == .invalidContext)
        #expect(m.output(dev2, 0x1000) == 0x1000_0000)
        try m.queue.submit([.contextCache(.global)])
        #expect(m.faultReason(dev2, 0x1000) == .invalidContext)
        #expect(m.unit.takeFaults().map(\.reason) == [.contextEntryNotPresent, .contextEntryNotPresent, .contextEntryNotPresent])
    }

}

/// Concurrency (run under ThreadSanitizer by scripts/tsan.sh, which selects "Stress").
@Suite struct VTdInvalidationStressTests {
    /// Several threads translate while one thread remaps a page and invalidates, publishing a
    /// generation after each invalidation completed: no translation that starts after a
    /// generation was published returns a page from before it.
    @Test func noStaleTranslationAfterInvalidationUnderConcurrency() throws {
        let m = try VTdMachine()
        try m.tables.addDevice(dev, pasids: 64, deviceTLB: false, pageRequests: false)
        let ss = try m.secondStageTable()
        try ss.map(iova: 0x10_0000, physical: 0x4000_0000, size: 0x2000, permissions: .readWrite)
        try m.tables.setPASIDEntry(dev, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
        let fs = try m.firstStageTable()
        try fs.map(iova: 0x10_0000, physical: 0x5000_0000, size: 0x2000, permissions: [.write, .user])
        try m.tables.setPASIDEntry(dev, pasid: 9, VTdMachine.firstStage(fs.root, domain: 3))
        let shared = VTdSharedCounters()
        let rounds = 150
        let finished = DispatchSemaphore(value: 0)
        for worker in 1...3 {
            Thread {
                while !shared.done.load(ordering: .sequentiallyConsistent) {
                    let g = shared.generation.load(ordering: .sequentiallyConsistent)
                    let pasid: UInt32? = worker == 1 ? 9 : nil
                    let base: UInt64 = worker == 1 ? 0x5000_0000 : 0x4000_0000
                    if let out = m.output(dev, pasid: pasid, 0x10_0000, worker == 3 ? .write : .read) {
                        if Int((out - base) >> 12) < g { shared.stale.add(1, ordering: .relaxed) }
                    }
                }
                finished.signal()
            }.start()
        }
        for k in 1...rounds {
            retarget(ss, 0x10_0000, to: 0x4000_0000 + UInt64(k) << 12)
            retarget(fs, 0x10_0000, to: 0x5000_0000 + UInt64(k) << 12)
            try m.queue.submit([.iotlb(.page(2, VTdPageRange(address: 0x10_0000, mask: 0))), .pasidIOTLB(.pasid(3, 9))])
            shared.generation.store(k, ordering: .sequentiallyConsistent)
        }
        shared.done.store(true, ordering: .sequentiallyConsistent)
        for _ in 1...3 { finished.wait() }
        #expect(shared.stale.load(ordering: .relaxed) == 0)
        #expect(m.output(dev, 0x10_0000) == 0x4000_0000 + UInt64(rounds) << 12)
        #expect(m.unit.takeFaults().isEmpty)
    }
}
