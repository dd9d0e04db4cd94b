import IOASIDStructures
import Testing
@testable import IOASIDSoftIOMMU

/// The project's seeded generator (IOASIDStructures).
typealias SeededGenerator = SplitMix64

private let K4: UInt64 = 0x1000, M2: UInt64 = 0x20_0000, G1: UInt64 = 0x4000_0000

/// The reference model: one entry per mapped 4 KiB page.
struct ReferenceModel {
    struct Page: Equatable { var physical: UInt64; var permissions: X86Permissions }
    var pages: [UInt64: Page] = [:]

    func anyMapped(_ iova: UInt64, _ size: UInt64) -> Bool {
        stride(from: iova, to: iova + size, by: Int(K4)).contains { pages[$0 / K4] != nil }
    }
    mutating func map(_ iova: UInt64, _ physical: UInt64, _ size: UInt64, _ perms: X86Permissions) {
        for off in stride(from: UInt64(0), to: size, by: Int(K4)) {
            pages[(iova + off) / K4] = Page(physical: physical + off, permissions: perms)
        }
    }
    mutating func unmap(_ iova: UInt64, _ size: UInt64) -> UInt64 {
        var removed: UInt64 = 0
        for va in stride(from: iova, to: iova + size, by: Int(K4)) where pages.removeValue(forKey: va / K4) != nil {
            removed += K4
        }
        return removed
    }
    func translate(_ iova: UInt64) -> (UInt64, X86Permissions)? {
        pages[iova / K4].map { ($0.physical + iova % K4, $0.permissions) }
    }
}

@Suite struct X86PageTableTests {
    // MARK: Property test against the reference model

    static let seeds: [UInt64] = [1, 2, 3, 0xC0FFEE]

    @Test(arguments: seeds, [4, 5])
    func randomMapUnmapMatchesReferenceModel(seed: UInt64, levels: Int) throws {
        var rng = SeededGenerator(seed: seed &* 31 &+ UInt64(levels))
        let memory = PhysicalMemory()
        let table = try X86PageTable(memory: memory, levels: levels)
        var model = ReferenceModel()
        // IOVAs in a 4 GiB window (above 2^48 for 5-level, to exercise the PML5 index).
        let windowBase: UInt64 = levels == 5 ? 0x3_0000_0000_0000 + 0x1_0000_0000 : 0
        let window: UInt64 = 4 * G1
        var recent: [UInt64] = []
        var maps = 0, unmaps = 0, superpages = 0, splits = 0
        let allPerms: [X86Permissions] = [[], .write, .user, .execute, [.write, .user], [.write, .execute], .all]

        for _ in 0..<250 {
            let roll = Int.random(in: 0..<100, using: &rng)
            if roll < 60 {
                // map with a size class chosen to mix 4 KiB, 2 MiB and (rarely) 1 GiB pages
                let cls: UInt64 = roll < 2 ? G1 : roll < 25 ? M2 : K4
                let count = cls == G1 ? 1 : UInt64.random(in: 1...(cls == M2 ? 3 : 24), using: &rng)
                let size = cls == M2 && Bool.random(using: &rng) ? count * cls + K4 * UInt64.random(in: 1...8, using: &rng) : count * cls
                let iova = windowBase + UInt64.random(in: 0..<(window - size) / cls, using: &rng) * cls
                // physical: usually as aligned as the IOVA (superpages), sometimes only 4 KiB aligned
                let physAlign = Int.random(in: 0..<4, using: &rng) == 0 ? K4 : cls
                let physical = 0x40_0000_0000 + UInt64.random(in: 0..<(1 << 20), using: &rng) * physAlign
                let perms = allPerms.randomElement(using: &rng)!
                if model.anyMapped(iova, size) {
                    #expect(throws: X86PageTableError.alreadyMapped) {
                        try table.map(iova: iova, physical: physical, size: size, permissions: perms)
                    }
                } else {
                    try table.map(iova: iova, physical: physical, size: size, permissions: perms)
                    model.map(iova, physical, size, perms)
                    maps += 1
                    if try table.translate(iova, setAccessedDirty: false).get().pageSize != .size4K { superpages += 1 }
                }
                recent.append(iova); recent.append(iova + size - K4)
            } else {
                // unmap: small ranges, ranges cutting into superpages, or whole gigabytes
                let size: UInt64
                switch Int.random(in: 0..<10, using: &rng) {
                case 0: size = G1
                case 1...4: size = K4 * UInt64.random(in: 1...1024, using: &rng)
                default: size = K4 * UInt64.random(in: 1...32, using: &rng)
                }
                let start: UInt64
                if let r = recent.randomElement(using: &rng), Bool.random(using: &rng), r >= windowBase + 64 * K4 {
                    start = min(r - K4 * UInt64.random(in: 0..<64, using: &rng), windowBase + window - size)
                } else {
                    start = windowBase + UInt64.random(in: 0..<(window - size) / K4, using: &rng) * K4
                }
                let before = table.tableFrameCount
                let removed = try table.unmap(iova: start, size: size)
                if table.tableFrameCount > before { splits += 1 }
                #expect(removed == model.unmap(start, size))
                unmaps += 1
            }
            // translations of random and recently touched addresses equal the model
            for _ in 0..<24 {
                let va: UInt64
                if let r = recent.randomElement(using: &rng), Bool.random(using: &rng) {
                    va = r + UInt64.random(in: 0..<K4, using: &rng)
                } else {
                    va = windowBase + UInt64.random(in: 0..<window, using: &rng)
                }
                let got = table.translate(va, access: .read, setAccessedDirty: false)
                if let (pa, perms) = model.translate(va) {
                    let t = try got.get()
                    #expect(t.physical == pa && t.permissions == perms, "iova \(String(va, radix: 16))")
                } else {
                    guard case .failure(.notPresent) = got else {
                        Issue.record("iova \(String(va, radix: 16)) should not be mapped: \(got)"); continue
                    }
                }
            }
        }
        // Whole-table comparison: every leaf matches the model, page for page, and nothing is missing.
        var leafPages = 0
        var bad = 0
        table.forEachMapping { m in
            for off in stride(from: UInt64(0), to: m.pageSize.bytes, by: Int(K4)) {
                leafPages += 1
                if model.pages[(m.iova + off) / K4] != .init(physical: m.physical + off, permissions: m.permissions) { bad += 1 }
            }
        }
        #expect(bad == 0)
        #expect(leafPages == model.pages.count)
        // Tables unmap emptied are retired, not freed, until the owner reclaims them.
        #expect(table.tableFrameCount + table.retiredTableFrameCount == memory.allocatedFrameCount)
        #expect(maps > 0 && unmaps > 0 && superpages > 0)
        #expect(splits > 0, "the sequence should split at least one large page")
        // Unmapping everything unlinks every table but the root; reclaiming frees them.
        try table.unmap(iova: windowBase, size: window)
        #expect(table.tableFrameCount == 1)
        let retired = table.retiredTableFrameCount
        #expect(memory.allocatedFrameCount == 1 + retired)
        #expect(table.reclaimFreedTables() == retired)
        #expect(table.retiredTableFrameCount == 0)
        #expect(memory.allocatedFrameCount == 1)
    }

    // MARK: Superpages, splitting and table memory

    @Test func superpagesAreUsedWhenAlignedAndTableMemoryIsCounted() throws {
        let memory = PhysicalMemory()
        let t1 = try X86PageTable(memory: memory)
        try t1.map(iova: G1, physical: 2 * G1, size: G1, permissions: .write)
        #expect(t1.tableFrameCount == 2)  // PML4 + PDPT
        #expect(try t1.translate(G1 + 0x1234).get().pageSize == .size1G)

        let t2 = try X86PageTable(memory: memory, supports1GiB: false)
        try t2.map(iova: G1, physical: 2 * G1, size: G1, permissions: .write)
        #expect(t2.tableFrameCount == 3)  // + one PD of 512 2 MiB leaves
        #expect(try t2.translate(G1 + 0x1234).get().pageSize == .size2M)

        let t3 = try X86PageTable(memory: memory)
        try t3.map(iova: G1, physical: 2 * G1 + K4, size: G1, permissions: .write)
        #expect(t3.tableFrameCount == 3 + 512)  // 4 KiB pages: 512 PTs per GiB
        #expect(try t3.translate(G1 + 0x1234).get().physical == 2 * G1 + K4 + 0x1234)
        #expect(memory.allocatedFrameCount == 2 + 3 + 515)
    }

    @Test func unmappingPartOfAGigabytePageSplitsIt() throws {
        let memory = PhysicalMemory()
        let table = try X86PageTable(memory: memory)
        try table.map(iova: G1, physical: 4 * G1, size: G1, permissions: [.write, .user], attributes: [.global])
        let hole = G1 + 5 * M2 + 7 * K4
        #expect(try table.unmap(iova: hole, size: K4) == K4)
        #expect(table.translate(hole) == .failure(.notPresent(level: 1)))
        var sizes: [X86PageSize: Int] = [:]
        table.forEachMapping { m in
            sizes[m.pageSize, default: 0] += 1
            #expect(m.physical == m.iova - G1 + 4 * G1)
            #expect(m.permissions == [.write, .user])
            #expect(m.entry & X86PTE.global != 0)
        }
        #expect(sizes == [.size2M: 511, .size4K: 511])
        #expect(table.tableFrameCount == 4)  // PML4, PDPT, PD, PT
        let t = try table.translate(hole + K4 + 3).get()
        #expect(t.physical == hole + K4 + 3 + 3 * G1 && t.pageSize == .size4K)
        // Unmapping the rest frees the split tables again.
        #expect(try table.unmap(iova: G1, size: G1) == G1 - K4)
        #expect(table.tableFrameCount == 1)
    }

    @Test func mapRejectsBadArgumentsAndOverlapsWithoutSideEffects() throws {
        let table = try X86PageTable(memory: PhysicalMemory())
        try table.map(iova: 0x20_0000, physical: 0x80_0000, size: 2 * K4, permissions: .write)
        let frames = table.tableFrameCount
        #expect(throws: X86PageTableError.alreadyMapped) {
            try table.map(iova: 0x1F_F000, physical: 0, size: 3 * K4, permissions: .write)
        }
        #expect(throws: X86PageTableError.misaligned) { try table.map(iova: 0x100, physical: 0, size: K4, permissions: []) }
        #expect(throws: X86PageTableError.misaligned) { try table.map(iova: 0, physical: 0x10, size: K4, permissions: []) }
        #expect(throws: X86PageTableError.misaligned) { try table.map(iova: 0, physical: 0, size: 0, permissions: []) }
        #expect(throws: X86PageTableError.outOfRange) { try table.map(iova: 1 << 47, physical: 0, size: K4, permissions: []) }
        #expect(throws: X86PageTableError.physicalAddressTooLarge) {
            try table.map(iova: 0, physical: 1 << 52, size: K4, permissions: [])
        }
        #expect(table.tableFrameCount == frames)
        #expect(table.translate(0x1F_F000) == .failure(.notPresent(level: 2)))  // no PT was left behind
    }

    // MARK: Faults

    @Test func permissionFaults() throws {
        let table = try X86PageTable(memory: PhysicalMemory())
        try table.map(iova: 0x1000, physical: 0x5000, size: K4, permissions: .readOnly)
        try table.map(iova: 0x2000, physical: 0x6000, size: K4, permissions: .all)
        #expect(try table.translate(0x1008).get().physical == 0x5008)
        #expect(table.translate(0x1008, access: .write) == .failure(.writeToReadOnly))
        #expect(table.translate(0x1008, access: .execute) == .failure(.executeNoExecute))
        #expect(table.translate(0x1008, access: X86Access(.read, user: true)) == .failure(.userAccessToSupervisor))
        #expect(try table.translate(0x2008, access: X86Access(.write, user: true)).get().physical == 0x6008)
        #expect(try table.translate(0x2008, access: .execute).get().permissions == .all)
        #expect(table.translate(0x3000) == .failure(.notPresent(level: 1)))
        #expect(table.translate(1 << 40) == .failure(.notPresent(level: 4)))
        #expect(table.translate(0x0000_8000_0000_0000) == .failure(.nonCanonical))
    }

    @Test func permissionsCombineAcrossLevelsAsHardwareDoes() throws {
        let memory = PhysicalMemory()
        let table = try X86PageTable(memory: memory)
        try table.map(iova: 0x4000, physical: 0x9000, size: K4, permissions: .all)
        // A guest could clear R/W or U/S, or set NX, in an upper-level entry.
        let pdpte = table.entries(for: 0x4000)[1]
        memory.write64(pdpte.address, pdpte.value & ~X86PTE.writable | X86PTE.noExecute)
        #expect(table.translate(0x4000, access: .write) == .failure(.writeToReadOnly))
        #expect(table.translate(0x4000, access: .execute) == .failure(.executeNoExecute))
        #expect(try table.translate(0x4000).get().permissions == .user)
        // PS in a PML4E is reserved.
        let pml4e = table.entries(for: 0x4000)[0]
        memory.write64(pml4e.address, pml4e.value | X86PTE.pageSize)
        #expect(table.translate(0x4000) == .failure(.reservedBit(level: 4)))
    }

    // MARK: Accessed and dirty

    @Test func walksSetAccessedEverywhereAndDirtyOnlyOnWriteLeaves() throws {
        let table = try X86PageTable(memory: PhysicalMemory())
        try table.map(iova: 0x40_0000, physical: 0x80_0000, size: M2 + K4, permissions: .write)
        #expect(table.entries(for: 0x40_0000).allSatisfy { $0.value & (X86PTE.accessed | X86PTE.dirty) == 0 })

        _ = table.translate(0x40_1000, access: .read, setAccessedDirty: false)
        #expect(table.entries(for: 0x40_1000).allSatisfy { $0.value & X86PTE.accessed == 0 })

        _ = try table.translate(0x40_1000, access: .read).get()
        let afterRead = table.entries(for: 0x40_1000)
        #expect(afterRead.count == 3)  // PML4E, PDPTE, 2 MiB PDE
        #expect(afterRead.allSatisfy { $0.value & X86PTE.accessed != 0 })
        #expect(afterRead.allSatisfy { $0.value & X86PTE.dirty == 0 })

        _ = try table.translate(0x60_0010, access: .write).get()
        let afterWrite = table.entries(for: 0x60_0010)
        #expect(afterWrite.count == 4)
        #expect(afterWrite.allSatisfy { $0.value & X86PTE.accessed != 0 })
        #expect(afterWrite.last!.value & X86PTE.dirty != 0)
        #expect(afterWrite.dropLast().allSatisfy { $0.value & X86PTE.dirty == 0 })

        // A faulting walk sets nothing.
        let other = try X86PageTable(memory: PhysicalMemory())
        try other.map(iova: 0x1000, physical: 0x1000, size: K4, permissions: .readOnly)
        #expect(other.translate(0x1000, access: .write) == .failure(.writeToReadOnly))
        #expect(other.entries(for: 0x1000).allSatisfy { $0.value & (X86PTE.accessed | X86PTE.dirty) == 0 })
    }

    @Test func dirtyReadAndClear() throws {
        let table = try X86PageTable(memory: PhysicalMemory())
        try table.map(iova: 0, physical: 0x100_0000, size: 16 * K4, permissions: .write)
        try table.map(iova: M2, physical: 0x200_0000, size: M2, permissions: .write)
        for page: UInt64 in [1, 3, 3, 9] { _ = try table.translate(page * K4 + 8, access: .write).get() }
        _ = try table.translate(5 * K4, access: .read).get()  // read: not dirty
        _ = try table.translate(M2 + 0x12345, access: .write).get()

        // Restricted to a range; a large leaf is reported whole.
        #expect(try table.readAndClearDirty(iova: 0, size: 4 * K4, clear: false) == [
            X86DirtyRange(iova: K4, length: K4), X86DirtyRange(iova: 3 * K4, length: K4)])
        #expect(try table.readAndClearDirty(iova: M2 + M2 / 2, size: K4) == [X86DirtyRange(iova: M2, length: M2)])
        #expect(try table.readAndClearDirty(iova: 0, size: 2 * M2) == [
            X86DirtyRange(iova: K4, length: K4), X86DirtyRange(iova: 3 * K4, length: K4),
            X86DirtyRange(iova: 9 * K4, length: K4)])
        #expect(try table.readAndClearDirty(iova: 0, size: 2 * M2).isEmpty)
        // Accessed stays set; a new write dirties again.
        #expect(table.entries(for: 3 * K4).last!.value & X86PTE.accessed != 0)
        _ = try table.translate(3 * K4, access: .write).get()
        #expect(try table.readAndClearDirty(iova: 0, size: 2 * M2) == [X86DirtyRange(iova: 3 * K4, length: K4)])
    }

    @Test func randomWritesAreReportedDirtyExactlyOnce() throws {
        var rng = SeededGenerator(seed: 77)
        let table = try X86PageTable(memory: PhysicalMemory())
        try table.map(iova: 0, physical: 0x1_0000_0000, size: 256 * K4, permissions: .write)
        for _ in 0..<5 {
            var written = Set<UInt64>()
            for _ in 0..<40 {
                let page = UInt64.random(in: 0..<256, using: &rng)
                let write = Bool.random(using: &rng)
                _ = try table.translate(page * K4, access: write ? .write : .read).get()
                if write { written.insert(page * K4) }
            }
            let dirty = try table.readAndClearDirty(iova: 0, size: 256 * K4)
            #expect(Set(dirty.map(\.iova)) == written && dirty.count == written.count)
        }
    }

    // MARK: 5-level paging

    @Test func fiveLevelPagingAddressesAbove2To48() throws {
        let memory = PhysicalMemory()
        let table = try X86PageTable(memory: memory, levels: 5)
        #expect(table.addressBits == 57)
        let high: UInt64 = 0x00AB_CDE0_0000_0000  // bit 55 set, well above 2^48
        try table.map(iova: high, physical: 0x7000_0000, size: M2, permissions: .write)
        let t = try table.translate(high + 0x1_2345).get()
        #expect(t.physical == 0x7001_2345 && t.pageSize == .size2M)
        let walk = table.entries(for: high)
        #expect(walk.count == 4)  // PML5E, PML4E, PDPTE, PDE
        #expect(walk[0].address == table.root + ((high >> 48) & 511) * 8)
        #expect((high >> 48) & 511 == 0xAB)
        // The same low 48 bits in another PML5 slot are unmapped.
        #expect(table.translate(high & ((1 << 48) - 1)) == .failure(.notPresent(level: 5)))
        // Canonical upper half of the 57-bit space.
        let kernelHalf: UInt64 = 0xFF00_0000_0000_0000
        try table.map(iova: kernelHalf, physical: 0x9000, size: K4, permissions: .readOnly)
        #expect(try table.translate(kernelHalf + 0x10).get().physical == 0x9010)
        #expect(table.translate(0x0100_0000_0000_0000) == .failure(.nonCanonical))
        var iovas: [UInt64] = []
        table.forEachMapping { iovas.append($0.iova) }
        #expect(iovas == [high, kernelHalf])

        let fourLevel = try X86PageTable(memory: memory, levels: 4)
        #expect(throws: X86PageTableError.outOfRange) {
            try fourLevel.map(iova: high, physical: 0, size: K4, permissions: [])
        }
        #expect(fourLevel.translate(high) == .failure(.nonCanonical))
    }

    // MARK: Exact bit layout

    @Test func entriesAreBitExact() throws {
        let memory = PhysicalMemory()
        let table = try X86PageTable(memory: memory)
        // 4 KiB, writable, user, NX, PCD.
        try table.map(iova: 0x7FFF_FFFF_F000, physical: 0x000F_FFFF_FFFF_F000, size: K4,
                      permissions: [.write, .user], attributes: [.cacheDisable])
        let walk = table.entries(for: 0x7FFF_FFFF_F000)
        #expect(walk.map(\.level) == [4, 3, 2, 1])
        #expect(walk[0].address == table.root + 255 * 8)  // PML4 index = bits 47:39
        for (entry, next) in zip(walk.dropLast(), walk.dropFirst()) {
            #expect(entry.value == (next.address & ~0xFFF) | 0x7)  // table pointer, P|R/W|U/S
            #expect(next.address & 0xFFF == 511 * 8)
        }
        #expect(walk[3].value == 0x800F_FFFF_FFFF_F017)  // NX | addr | PCD | U/S | R/W | P

        // 2 MiB, read-only supervisor, executable: P | PS.
        try table.map(iova: 0x4000_0000, physical: 0x1_2340_0000, size: M2, permissions: .execute)
        #expect(table.entries(for: 0x4000_0000).last!.value == 0x0000_0001_2340_0081)

        // 1 GiB, writable, global, write-through, NX.
        try table.map(iova: 0x80_0000_0000, physical: 0x3_C000_0000, size: G1, permissions: .write,
                      attributes: [.global, .writeThrough])
        let giga = table.entries(for: 0x80_0000_0000)
        #expect(giga.count == 2)
        #expect(giga[1].value == 0x8000_0003_C000_018B)  // NX | addr | G | PS | PWT | R/W | P

        // After a write the walker adds A (bit 5) everywhere and D (bit 6) to the leaf.
        _ = try table.translate(0x80_0000_0010, access: .write).get()
        #expect(table.entries(for: 0x80_0000_0000)[1].value == 0x8000_0003_C000_01EB)
        #expect(table.entries(for: 0x80_0000_0000)[0].value & 0xFFF == 0x27)

        // Splitting the 1 GiB page keeps the leaf bits (PS stays in the 2 MiB children).
        try table.unmap(iova: 0x80_0000_0000, size: K4)
        let split = table.entries(for: 0x80_0020_0000)
        #expect(split[1].value & 0xFFF == 0x27)  // table pointer P|R/W|U/S + A
        #expect(split[2].value == 0x8000_0003_C020_01EB)
        let pte = table.entries(for: 0x80_0000_1000)
        #expect(pte.count == 4)
        #expect(pte[3].value == 0x8000_0003_C000_116B)  // PS cleared in the PTE; G, D, A, PWT, R/W, P
    }
}
