// DMA and invalidation at once: a device's DMA threads write through the IOMMU while another
// thread moves the page and invalidates. Once the invalidation's wait (VT-d wait descriptor,
// SMMUv3 CMD_SYNC) has returned, no write may land on the old page any more — the drain — and
// every write reaches the page the tables named when it was translated (the lock-free hit path
// is exact under concurrency).

#if canImport(Glibc)
import Glibc
#endif
import IOASIDStructures
import Synchronization
import Testing
@testable import IOASIDSoftIOMMU

/// Points the 4 KiB leaf of `iova` at `physical` behind the caches' back (keeping its flags).
private func pointLeaf<F>(_ table: PageTable<F>, _ iova: UInt64, at physical: UInt64) {
    let leaf = table.entries(for: iova).last!
    table.memory.write64(leaf.address, (leaf.value & ~0x000F_FFFF_FFFF_F000) | physical)
}

/// What a stress run saw.
private struct DrainOutcome {
    /// Writes found on the old page after the invalidation's wait had returned.
    var lateWrites = 0
    /// DMA writes that completed (so the test knows the threads really ran).
    var writes = 0
}

/// Runs `rounds` rounds: DMA threads write their own 8-byte word of `iova`'s page through
/// `device` without pause; the main thread moves the page between `frames.0` and `frames.1`
/// with `move(to:)` (which returns once the invalidation's wait has completed), then clears
/// the old page's words, waits until every DMA thread has finished two more writes (so any
/// write it had in flight has landed), and counts the old page's words written again.
private func stress(device: PCIFunction, memory: PhysicalMemory, iova: UInt64, frames: (UInt64, UInt64), threads: Int = 3,
                    rounds: Int, move: @escaping (UInt64) -> Void) -> DrainOutcome {
    let done = Atomic<Bool>(false)
    let late = Atomic<Int>(0)
    let progress = UnsafeSendable(UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: threads))
    for t in 0..<threads { (progress.value + t).initialize(to: Atomic<Int>(0)) }
    defer { progress.value.deallocate() }
    let memoryBox = UnsafeSendable(memory), deviceBox = UnsafeSendable(device)
    let moveBox = UnsafeSendable(move)
    onThreads(threads + 1) { t in
        if t < threads {
            var n: UInt64 = 0
            while !done.load(ordering: .acquiring) {
                n &+= 1
                var value = UInt64(t + 1) << 48 | n
                let ok = withUnsafeBytes(of: &value) { b in
                    if case .success = deviceBox.value.write(address: iova + UInt64(t) * 8, from: b) { return true }
                    return false
                }
                if ok { progress.value[t].wrappingAdd(1, ordering: .releasing) }
            }
            return
        }
        var current = frames.0
        for _ in 0..<rounds {
            let next = current == frames.0 ? frames.1 : frames.0
            moveBox.value(next)
            for w in 0..<threads { memoryBox.value.write64(current + UInt64(w) * 8, 0) }
            // Every DMA thread finishes two more writes (bounded: about 2 s).
            for w in 0..<threads {
                let start = progress.value[w].load(ordering: .acquiring)
                var spins = 0
                while progress.value[w].load(ordering: .acquiring) < start + 2 && spins < 200_000 {
                    sched_yield()
                    spins += 1
                }
            }
            for w in 0..<threads where memoryBox.value.read64(current + UInt64(w) * 8) != 0 { late.wrappingAdd(1, ordering: .relaxed) }
            current = next
        }
        done.store(true, ordering: .releasing)
    }
    var writes = 0
    for t in 0..<threads { writes += progress.value[t].load(ordering: .acquiring) }
    return DrainOutcome(lateWrites: late.load(ordering: .acquiring), writes: writes)
}

/// A value the test hands to its threads as it is (they only use it as the API allows).
private struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

@Suite(.serialized) struct DMADrainTests {
    private let rid = RequesterID(bus: 4, device: 0, function: 0)

    /// Two free frames of `m`: where the page is, and where it moves.
    private func frames(_ m: VTdMachine) throws -> (UInt64, UInt64) {
        (try #require(m.memory.allocateFrame()), try #require(m.memory.allocateFrame()))
    }

    /// One second-stage table mapping IOVA 0x1000 to `a`, in domain 2 for PASID 0 of `rid`.
    private func oneTable(_ m: VTdMachine, to a: UInt64) throws -> PageTable<VTdSecondStageFormat> {
        let ss = try m.secondStageTable()
        try ss.map(iova: 0x1000, physical: a, size: 0x1000, permissions: .readWrite)
        try m.tables.setPASIDEntry(rid, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
        return ss
    }

    /// Two second-stage tables mapping IOVA 0x1000 to `a` and to `b`; PASID 0 of `rid` uses the
    /// first, in domain 2.
    private func twoTables(_ m: VTdMachine, to a: UInt64, _ b: UInt64) throws
        -> (PageTable<VTdSecondStageFormat>, PageTable<VTdSecondStageFormat>) {
        let ta = try m.secondStageTable(), tb = try m.secondStageTable()
        try ta.map(iova: 0x1000, physical: a, size: 0x1000, permissions: .readWrite)
        try tb.map(iova: 0x1000, physical: b, size: 0x1000, permissions: .readWrite)
        try m.tables.setPASIDEntry(rid, pasid: 0, VTdMachine.secondStage(ta.root, domain: 2))
        return (ta, tb)
    }

    @Test func vtdIOTLBInvalidationWaitDrainsDMA() throws {
        let m = try VTdMachine()
        let device = PCIFunction(requesterID: rid, iommu: m.unit)
        try m.tables.addDevice(rid, pasids: 0, deviceTLB: false, pageRequests: false)
        let (a, b) = try frames(m)
        let ss = try oneTable(m, to: a)
        let outcome = stress(device: device, memory: m.memory, iova: 0x1000, frames: (a, b), rounds: 100) { to in
            pointLeaf(ss, 0x1000, at: to)
            try! m.queue.submit([.iotlb(.page(2, VTdPageRange(address: 0x1000, mask: 0)))])
        }
        #expect(outcome.writes > 200)
        #expect(outcome.lateWrites == 0)
        #expect(m.unit.takeFaults().isEmpty)
    }

    @Test func vtdPASIDEntryChangeWaitDrainsDMA() throws {
        // The page stays; the requester's PASID entry moves to another domain and table: the
        // PASID-cache invalidation retires the lock-free resolution.
        let m = try VTdMachine()
        let device = PCIFunction(requesterID: rid, iommu: m.unit)
        try m.tables.addDevice(rid, pasids: 0, deviceTLB: false, pageRequests: false)
        let (a, b) = try frames(m)
        let (ta, tb) = try twoTables(m, to: a, b)
        let outcome = stress(device: device, memory: m.memory, iova: 0x1000, frames: (a, b), rounds: 100) { to in
            let (table, domain): (PageTable<VTdSecondStageFormat>, UInt16) = to == a ? (ta, 2) : (tb, 3)
            try! m.tables.updatePASIDEntry(rid, pasid: 0) { $0 = VTdMachine.secondStage(table.root, domain: domain) }
        }
        #expect(outcome.writes > 200)
        #expect(outcome.lateWrites == 0)
    }

    @Test func vtdDeviceTLBInvalidationWaitDrainsATSDMA() throws {
        let m = try VTdMachine()
        let device = PCIFunction(requesterID: rid, capabilities: .init(ats: .deviceTLB), iommu: m.unit)
        device.enableAll()
        try m.tables.addDevice(rid, pasids: 0, deviceTLB: true, pageRequests: false)
        let (a, b) = try frames(m)
        let ss = try oneTable(m, to: a)
        let outcome = stress(device: device, memory: m.memory, iova: 0x1000, frames: (a, b), rounds: 100) { to in
            pointLeaf(ss, 0x1000, at: to)
            try! m.queue.submit([.iotlb(.page(2, VTdPageRange(address: 0x1000, mask: 0))),
                                 .deviceTLB(sourceID: rid.rawValue, physicalFunction: rid.rawValue, maxPending: 0,
                                            range: VTdDeviceTLBRange(address: 0x1000, order: 0))])
        }
        #expect(outcome.writes > 200)
        #expect(outcome.lateWrites == 0)
    }

    @Test func smmuv3CMDSYNCDrainsDMA() throws {
        let tb = SMMUv3Testbed()
        let a = tb.page(), b = tb.page()
        let t = tb.stage2Table()
        try t.map(iova: 0x8000_0000, physical: a, size: 4096, permissions: .readWrite)
        tb.setSTE(0x30, SMMUv3Testbed.stage2STE(root: t.root, vmid: 9))
        let device = makeFunction(0x30, on: tb.smmu)
        let outcome = stress(device: device, memory: tb.memory, iova: 0x8000_0000, frames: (a, b), rounds: 100) { to in
            pointLeaf(t, 0x8000_0000, at: to)
            tb.submit([.tlbiS2IPA(vmid: 9, address: 0x8000_0000, leaf: true, range: .single)])
        }
        #expect(outcome.writes > 200)
        #expect(outcome.lateWrites == 0)
    }

    @Test func lockFreeHitsFollowEveryInvalidation() throws {
        // Single-threaded exactness of the lock-free path: each kind of invalidation that can
        // change a resolution retires it.
        let m = try VTdMachine()
        let device = PCIFunction(requesterID: rid, iommu: m.unit)
        try m.tables.addDevice(rid, pasids: 0, deviceTLB: false, pageRequests: false)
        let (a, b) = try frames(m)
        let (_, tb) = try twoTables(m, to: a, b)
        func target() -> UInt64? {
            var value: UInt64 = 0x77
            _ = withUnsafeBytes(of: &value) { device.write(address: 0x1008, from: $0) }
            if m.memory.read64(a + 8) == 0x77 { m.memory.write64(a + 8, 0); return a }
            if m.memory.read64(b + 8) == 0x77 { m.memory.write64(b + 8, 0); return b }
            return nil
        }
        #expect(target() == a)
        #expect(target() == a)   // now a hit on the lock-free path
        // Translation disabled: addresses pass as they are (0x1008 is no RAM: nothing lands).
        m.unit.setTranslationEnabled(false)
        #expect(target() == nil)
        m.unit.setTranslationEnabled(true)
        #expect(target() == a)
        // The PASID entry changes (the update invalidates the PASID cache and the IOTLB).
        try m.tables.updatePASIDEntry(rid, pasid: 0) { $0 = VTdMachine.secondStage(tb.root, domain: 3) }
        #expect(target() == b)
        #expect(target() == b)
    }
}
