import Foundation
import IOASIDStructures
import Synchronization
import Testing
@testable import IOASIDSoftIOMMU

/// The first failure message of a stress test (a pthread mutex: ThreadSanitizer models it).
final class FirstViolation: @unchecked Sendable {
    private let lock = Lock()
    private var first: String?
    func record(_ message: String) { lock.withLock { if first == nil { first = message } } }
    var text: String? { lock.withLock { first } }
}

/// Walks on several threads while one thread maps, unmaps, splits and cleans dirty state, with
/// table frames reclaimed through retirement epochs as an IOMMU model would.
/// (scripts/tsan.sh runs the Stress tests under ThreadSanitizer.)
@Suite struct PageTableConcurrencyTests {
    static let operations = Int(ProcessInfo.processInfo.environment["IOASID_STRESS_OPS"] ?? "") ?? 3000
    static let timeLimit: Double = 4  // seconds of writer work at most (TSan may not reach the count)

    /// Slots: each a 2 MiB range in its own 1 GiB region, so mapping one allocates table frames
    /// at two levels and unmapping it retires them.
    static let slots: UInt64 = 12
    static func slotBase(_ k: UInt64) -> UInt64 { 0x40_0000_0000 + k * gib1 }

    /// What generation `g` of slot `k` maps, by `g % 3`: 0 — one 4 KiB page at the slot's base;
    /// 1 — a 2 MiB block, then split by unmapping one 4 KiB page of it; 2 — 2 MiB in 4 KiB pages.
    /// The output encodes generation and slot: `g << 30 | k << 24`, plus 4 KiB for shape 2 (so
    /// that no block can map it).
    static func output(_ k: UInt64, _ g: UInt64) -> UInt64 { g << 30 | k << 24 | (g % 3 == 2 ? kib4 : 0) }
    /// The 4 KiB page shape 1 unmaps from its block.
    static func hole(_ g: UInt64) -> UInt64 { (g % 511 + 1) * kib4 }

    /// Walkers on three threads translate random addresses of random slots (reads and writes,
    /// A/D updates on) as readers of an in-flight lock; one writer thread cycles each slot
    /// through generations. Before a generation is mapped its number is published; after its
    /// unmap, the writer closes the retirement epoch, waits for walks in flight (the write side
    /// of the in-flight lock: an invalidation's completion) and reclaims the epoch's table
    /// frames. Every translation a walker gets must be one that was mapped at some point during
    /// its walk: generation `g` of the walked slot with `b <= g <= a` (the published generation
    /// read before and after the walk), with the output exactly that generation's, and the
    /// address inside what that generation maps at some moment — never a garbage entry from a
    /// reused frame.
    /// At the end, unmapping everything unlinks every table (no walker left bits in an emptied
    /// entry) and reclaiming frees them all.
    func walkersRacingWriters<F: PageTableFormat>(_ format: F, _ permissions: F.Permissions) throws {
        let memory = PhysicalMemory()
        let table = try PageTable(memory: memory, format: format)
        let generations = try #require(memory.allocateFrame())  // word k: slot k's published generation
        let inFlight = ReadMostlyLock()
        let stop = Atomic<Bool>(false)
        let violations = Atomic<Int>(0)
        let translated = Atomic<Int>(0)
        let reclaimed = Atomic<Int>(0)
        let steps = Atomic<Int>(0)
        let firstViolation = FirstViolation()

        onThreads(4) { worker in
            if worker == 0 {
                let deadline = Date().addingTimeInterval(Self.timeLimit)
                for step in 0..<Self.operations {
                    if step % 64 == 0, Date() > deadline { break }
                    let k = UInt64(step) % Self.slots
                    let base = Self.slotBase(k)
                    let old = memory.read64(generations + k * 8)
                    if old > 0 {
                        try! table.unmap(iova: base, size: mib2)
                        let epoch = table.closeRetirementEpoch()
                        inFlight.withWriteLock {}  // every walk that may hold an unlinked table has ended
                        reclaimed.wrappingAdd(table.reclaimFreedTables(through: epoch), ordering: .relaxed)
                    }
                    let g = old + 1
                    memory.write64(generations + k * 8, g)
                    switch g % 3 {
                    case 0: try! table.map(iova: base, physical: Self.output(k, g), size: kib4, permissions: permissions)
                    case 1:
                        try! table.map(iova: base, physical: Self.output(k, g), size: mib2, permissions: permissions)
                        try! table.unmap(iova: base + Self.hole(g), size: kib4)
                    default: try! table.map(iova: base, physical: Self.output(k, g), size: mib2, permissions: permissions)
                    }
                    if step % 5 == 0 { _ = try! table.readAndClearDirty(iova: base, size: mib2) }
                    steps.store(step + 1, ordering: .relaxed)
                }
                stop.store(true, ordering: .releasing)
            } else {
                var rng = SplitMix64(seed: UInt64(worker) * 7919)
                var local = 0
                while !stop.load(ordering: .acquiring) {
                    let k = UInt64.random(in: 0..<Self.slots, using: &rng)
                    let offset = UInt64.random(in: 0..<(mib2 / 8), using: &rng) * 8
                    // Half the walks stay on the first page, which every shape maps.
                    let o = Bool.random(using: &rng) ? offset % kib4 : offset
                    let access: PageAccess = Bool.random(using: &rng) ? .write : .read
                    let (before, result, after) = inFlight.withReadLock {
                        let b = memory.read64(generations + k * 8)
                        let r = table.translate(Self.slotBase(k) + o, access: access)
                        return (b, r, memory.read64(generations + k * 8))
                    }
                    guard case .success(let t) = result else { continue }
                    local += 1
                    let g = t.output >> 30
                    let expected = Self.output(k, g) + o
                    // (Shape 1's hole is mapped too until the block is split.)
                    let mapped = g % 3 != 0 || o < kib4
                    if g < before || g > after || g == 0 || t.output != expected || !mapped {
                        violations.wrappingAdd(1, ordering: .relaxed)
                        firstViolation.record("slot \(k) offset 0x\(String(o, radix: 16)): output 0x\(String(t.output, radix: 16)) "
                                              + "(generation \(g)); published \(before) before the walk, \(after) after")
                    }
                }
                translated.wrappingAdd(local, ordering: .relaxed)
            }
        }
        #expect(violations.load(ordering: .relaxed) == 0, "first: \(firstViolation.text ?? "-")")
        #expect(translated.load(ordering: .relaxed) > 0)
        #expect(steps.load(ordering: .relaxed) >= 2 * Int(Self.slots), "every slot went through generations")
        #expect(reclaimed.load(ordering: .relaxed) > 0)
        for k in 0..<Self.slots { try table.unmap(iova: Self.slotBase(k), size: mib2) }
        #expect(table.tableFrameCount == 1)
        table.reclaimFreedTables()
        #expect(table.retiredTableFrameCount == 0)
        #expect(memory.allocatedFrameCount == 2)  // the root and the generation words
    }

    @Test func x86WalkersRacingMapUnmapSeeOnlyMappedTranslationsUnderStress() throws {
        try walkersRacingWriters(X86FirstStageFormat(), [.write, .user])
    }

    @Test func armStage1WalkersRacingMapUnmapAndDirtyClearUnderStress() throws {
        try walkersRacingWriters(ArmStage1Format(hardwareAccessFlag: true, hardwareDirtyState: true), [.write])
    }

    @Test func vtdSecondStageWalkersRacingMapUnmapUnderStress() throws {
        try walkersRacingWriters(VTdSecondStageFormat(accessedDirtyEnabled: true), .readWrite)
    }

    // MARK: Deterministic checks of the pieces

    /// A walker's update is a compare-exchange from the value it read: it re-applies itself over
    /// another walker's flags, and writes nothing into an entry software changed.
    @Test func hardwareUpdateIsConditionalOnTheEntryItRead() throws {
        let memory = PhysicalMemory()
        let slot = try #require(memory.allocateFrame())
        let leaf: UInt64 = 0x1234_5000 | X86PTE.present | X86PTE.writable
        memory.write64(slot, leaf | X86PTE.accessed)  // another walker set A meanwhile
        #expect(hardwareUpdate(memory, slot, expected: leaf, desired: leaf | X86PTE.accessed | X86PTE.dirty))
        #expect(memory.read64(slot) == leaf | X86PTE.accessed | X86PTE.dirty)
        memory.write64(slot, 0)  // software unmapped it
        #expect(!hardwareUpdate(memory, slot, expected: leaf, desired: leaf | X86PTE.accessed))
        #expect(memory.read64(slot) == 0)
        // Arm dirty state: clearing AP[2] is atomic too, and lands only on the same descriptor.
        let page: UInt64 = 0x5000 | ArmDescriptor.valid | ArmDescriptor.tableOrPage | ArmDescriptor.accessFlag
            | ArmDescriptor.dirtyBitModifier | ArmStage1Descriptor.ap2ReadOnly
        memory.write64(slot, page)
        #expect(hardwareUpdate(memory, slot, expected: page, desired: page & ~ArmStage1Descriptor.ap2ReadOnly))
        #expect(memory.read64(slot) == page & ~ArmStage1Descriptor.ap2ReadOnly)
        memory.write64(slot, page ^ 0x1000)  // remapped elsewhere
        #expect(!hardwareUpdate(memory, slot, expected: page, desired: page & ~ArmStage1Descriptor.ap2ReadOnly))
    }

    /// Unmap retires emptied tables; epochs separate what a later unmap retired.
    @Test func unmappedTablesAreRetiredUntilTheirEpochIsReclaimed() throws {
        let memory = PhysicalMemory()
        let table = try PageTable(memory: memory, format: X86FirstStageFormat())
        try table.map(iova: gib1, physical: 0x10_0000, size: kib4, permissions: [.write])
        try table.map(iova: 2 * gib1, physical: 0x20_0000, size: kib4, permissions: [.write])
        #expect(table.tableFrameCount == 6)  // PML4, PDPT, 2 × (PD, PT)
        let pt = try #require(table.entries(for: gib1).last).address & ~(kib4 - 1)
        try table.unmap(iova: gib1, size: kib4)
        #expect(table.translate(gib1) == .failure(PageTableFault(.translation, level: 3)))
        let first = table.closeRetirementEpoch()
        try table.unmap(iova: 2 * gib1, size: kib4)  // after the epoch closed: a later epoch
        #expect(table.tableFrameCount == 1 && table.retiredTableFrameCount == 5)
        #expect(memory.allocatedFrameCount == 6)
        // A walker still holding the retired page table reads the empty table it was.
        #expect(memory.isAllocated(pt) && memory.read64(pt) == 0)
        #expect(table.reclaimFreedTables(through: first) == 2)
        #expect(!memory.isAllocated(pt))
        #expect(table.retiredTableFrameCount == 3 && memory.allocatedFrameCount == 4)
        #expect(table.reclaimFreedTables() == 3)
        #expect(memory.allocatedFrameCount == 1)
    }

    /// A split keeps accessed/dirty state a walker set in the leaf, and dirty read-and-clear
    /// keeps the access flag a walker set meanwhile.
    @Test func splitAndDirtyClearKeepWalkerUpdates() throws {
        let memory = PhysicalMemory()
        let table = try PageTable(memory: memory, format: X86FirstStageFormat())
        try table.map(iova: gib1, physical: 0x4000_0000, size: mib2, permissions: [.write])
        _ = try table.translate(gib1 + 0x5000, access: .write).get()  // A and D in the 2 MiB leaf
        try table.unmap(iova: gib1, size: kib4)  // split
        let child = try #require(table.entries(for: gib1 + 0x5000).last)
        #expect(child.value & (X86PTE.accessed | X86PTE.dirty) == X86PTE.accessed | X86PTE.dirty)
        #expect(try table.readAndClearDirty(iova: gib1 + 0x5000, size: kib4) == [DirtyRange(iova: gib1 + 0x5000, length: kib4)])
        let cleaned = try #require(table.entries(for: gib1 + 0x5000).last)
        #expect(cleaned.value & X86PTE.dirty == 0 && cleaned.value & X86PTE.accessed != 0)
    }
}
