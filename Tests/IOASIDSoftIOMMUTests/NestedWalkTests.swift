import IOASIDStructures
import Testing
@testable import IOASIDSoftIOMMU

/// A guest with an x86 first-stage table in its own memory, over a host VT-d second-stage table
/// that maps guest RAM `[0, 64 MiB)` to `hostBase + gpa`.
struct X86OverVTd {
    let host = PhysicalMemory()
    let ram: GuestRAM
    let stage1: PageTable<X86FirstStageFormat>
    let stage2: VTdSecondStagePageTable
    var nested: NestedPageTable<X86FirstStageFormat, VTdSecondStageFormat> {
        NestedPageTable(stage1: stage1.format, stage1Root: stage1.root, stage2: stage2)
    }

    /// `hostBase` 4 KiB-aligned only makes stage 2 use 4 KiB pages (full-length walks).
    init(levels: Int = 4, addressWidth: Int = 48, hostBase: UInt64 = 0x20_0000_1000) throws {
        ram = GuestRAM(host: host, hostBase: hostBase)
        stage1 = try PageTable(memory: ram.guest, format: X86FirstStageFormat(levels: levels))
        stage2 = try VTdSecondStagePageTable(memory: host, format: VTdSecondStageFormat(addressWidth: addressWidth,
                                                                                        accessedDirtyEnabled: true))
        try stage2.map(iova: 0, physical: hostBase, size: ram.size, permissions: .readWrite)
    }

    /// The stage-1 entries for `iova` as the hardware sees them (in host memory).
    func hostStage1Entries(_ iova: UInt64) -> [UInt64] {
        stage1.entries(for: iova).map { host.read64(ram.host($0.address)) }
    }

    /// The stage-2 leaf mapping guest-physical `gpa`.
    func stage2Leaf(_ gpa: UInt64) -> UInt64 { stage2.entries(for: gpa).last!.value }
}

@Suite struct NestedWalkTests {
    static let iova: UInt64 = 0x7F12_3456_7000
    static let gpa: UInt64 = 0x200_0000

    // MARK: x86 first stage over VT-d second stage

    @Test func x86OverVTdTranslatesThroughBothStagesIn24Reads() throws {
        let g = try X86OverVTd()
        try g.stage1.map(iova: Self.iova, physical: Self.gpa, size: kib4, permissions: [.write, .user])
        g.ram.sync()
        let t = try g.nested.translate(Self.iova + 0x10, access: .write).get()
        #expect(t.output == g.ram.host(Self.gpa) + 0x10)
        #expect(t.guestPhysical == Self.gpa + 0x10)
        #expect(t.tableReads == 24)  // 4 × (4 stage-2 reads + 1 stage-1 read) + 4
        #expect(t.stage1.pageSize == kib4 && t.stage2.pageSize == kib4 && t.stage2.level == 1)
        #expect(t.rights == [.read, .write, .userRead, .userWrite])  // NX at stage 1; VT-d: execute = read

        // Stage-1 A/D were written through stage 2 into the guest's tables in host memory.
        let s1 = g.hostStage1Entries(Self.iova)
        #expect(s1.allSatisfy { $0 & X86PTE.accessed != 0 })
        #expect(s1.last! & X86PTE.dirty != 0 && s1.dropLast().allSatisfy { $0 & X86PTE.dirty == 0 })
        #expect(g.stage1.entries(for: Self.iova).allSatisfy { $0.value & X86PTE.accessed == 0 }, "the guest copy is untouched")
        // Those updates were stage-2 writes: the stage-2 leaves of the stage-1 table pages are dirty.
        for entry in g.stage1.entries(for: Self.iova) {
            #expect(g.stage2Leaf(entry.address) & (VTdSSPTE.accessed | VTdSSPTE.dirty) == VTdSSPTE.accessed | VTdSSPTE.dirty)
        }
        #expect(g.stage2Leaf(Self.gpa) & VTdSSPTE.dirty != 0)
        #expect(g.stage2.entries(for: Self.gpa).allSatisfy { $0.value & VTdSSPTE.accessed != 0 })
        let dirty = try g.stage2.readAndClearDirty(iova: 0, size: g.ram.size)
        #expect(dirty.count == 5)  // four stage-1 table pages and the data page

        // A read walks the same 24 entries; with nothing left to update it writes nothing.
        let before = g.hostStage1Entries(Self.iova)
        #expect(try g.nested.translate(Self.iova, access: .read).get().tableReads == 24)
        #expect(g.hostStage1Entries(Self.iova) == before)
        #expect(try g.stage2.readAndClearDirty(iova: 0, size: g.ram.size).isEmpty)
    }

    @Test(arguments: [(4, 48, 24), (4, 39, 19), (5, 57, 35), (5, 48, 29)])
    func tableReadsOfAFullMiss(levels: Int, addressWidth: Int, reads: Int) throws {
        let g = try X86OverVTd(levels: levels, addressWidth: addressWidth)
        try g.stage1.map(iova: Self.iova, physical: Self.gpa, size: kib4, permissions: .write)
        g.ram.sync()
        let t = try g.nested.translate(Self.iova, updateAccessedDirty: false).get()
        #expect(t.tableReads == reads)
        let stage2Levels = (addressWidth - 12) / 9
        #expect(t.tableReads == levels * (stage2Levels + 1) + stage2Levels)
    }

    @Test func stage2SuperpagesShortenTheWalk() throws {
        let g = try X86OverVTd(hostBase: 0x20_0000_0000)
        #expect(g.stage2.entries(for: 0).count == 3)  // 2 MiB stage-2 pages
        try g.stage1.map(iova: Self.iova, physical: Self.gpa, size: kib4, permissions: .write)
        g.ram.sync()
        let t = try g.nested.translate(Self.iova + 8).get()
        #expect(t.tableReads == 4 * (3 + 1) + 3)
        #expect(t.output == 0x20_0000_0000 + Self.gpa + 8 && t.stage2.pageSize == mib2)
    }

    @Test func stage2FaultOnAStage1TableAccess() throws {
        let g = try X86OverVTd()
        try g.stage1.map(iova: Self.iova, physical: Self.gpa, size: kib4, permissions: .write)
        g.ram.sync()
        // Take the page holding the stage-1 page directory (level 2) out of stage 2.
        let pde = g.stage1.entries(for: Self.iova)[2]
        #expect(pde.level == 2)
        try g.stage2.unmap(iova: pde.address & ~0xFFF, size: kib4)
        let result = g.nested.translate(Self.iova)
        #expect(result == .failure(NestedFault(stage: .stage2, fault: PageTableFault(.translation, level: 1),
                                                guestPhysical: pde.address, stage1TableLevel: 2,
                                                tableReads: 5 + 5 + 4)))
        guard case .failure(let f) = result else { return }
        #expect(f.isStage1TableAccess)
        #expect(g.hostStage1Entries(Self.iova).prefix(2).allSatisfy { $0 & X86PTE.accessed == 0 }, "nothing updated")
        // The root table pointer itself is translated too.
        try g.stage2.unmap(iova: g.stage1.root, size: kib4)
        #expect(g.nested.translate(Self.iova) == .failure(NestedFault(
            stage: .stage2, fault: PageTableFault(.translation, level: 1),
            guestPhysical: g.stage1.root + ((Self.iova >> 39) & 511) * 8, stage1TableLevel: 4, tableReads: 4)))
    }

    @Test func stage1AccessedDirtyUpdatesNeedStage2WritePermission() throws {
        let g = try X86OverVTd()
        try g.stage1.map(iova: Self.iova, physical: Self.gpa, size: kib4, permissions: .write)
        g.ram.sync()
        // The guest's page-table pages are read-only at stage 2.
        let tables = g.ram.guest.allocatorBase
        try g.stage2.unmap(iova: tables, size: mib2 / 2)
        try g.stage2.map(iova: tables, physical: g.ram.host(tables), size: mib2 / 2, permissions: .read)
        let root = g.stage1.entries(for: Self.iova)[0]
        #expect(g.nested.translate(Self.iova) == .failure(NestedFault(
            stage: .stage2, fault: PageTableFault(.permission(.write), level: 1),
            guestPhysical: root.address, stage1TableLevel: 4, tableReads: 24 - 4)))
        // Without updates the walk only reads, which stage 2 allows.
        #expect(g.nested.translate(Self.iova, updateAccessedDirty: false).isSuccess)
        // With A already set everywhere a read needs no write; a write still needs D in the leaf.
        for entry in g.stage1.entries(for: Self.iova) {
            g.host.write64(g.ram.host(entry.address), entry.value | X86PTE.accessed)
        }
        #expect(try g.nested.translate(Self.iova).get().output == g.ram.host(Self.gpa))
        let leaf = g.stage1.entries(for: Self.iova)[3]
        #expect(g.nested.translate(Self.iova, access: .write) == .failure(NestedFault(
            stage: .stage2, fault: PageTableFault(.permission(.write), level: 1),
            guestPhysical: leaf.address, stage1TableLevel: 1, tableReads: 20)))
    }

    @Test func stage1FaultsAndFinalStage2Faults() throws {
        let g = try X86OverVTd()
        try g.stage1.map(iova: Self.iova, physical: Self.gpa, size: kib4, permissions: [])
        try g.stage1.map(iova: Self.iova + kib4, physical: 0x500_0000, size: kib4, permissions: .write)   // beyond guest RAM
        try g.stage1.map(iova: Self.iova + 2 * kib4, physical: 0x300_0000, size: kib4, permissions: .write)
        g.ram.sync()
        try g.stage2.unmap(iova: 0x300_0000, size: kib4)
        try g.stage2.map(iova: 0x300_0000, physical: g.ram.host(0x300_0000), size: kib4, permissions: .read)

        // Stage 1: not present at the PML4 (5 reads), a permission fault at the leaf (20 reads).
        #expect(g.nested.translate(0x1000) == .failure(NestedFault(
            stage: .stage1, fault: PageTableFault(.translation, level: 4), guestPhysical: nil, stage1TableLevel: nil, tableReads: 5)))
        #expect(g.nested.translate(Self.iova, access: .write) == .failure(NestedFault(
            stage: .stage1, fault: PageTableFault(.permission(.write), level: 1), guestPhysical: nil, stage1TableLevel: nil, tableReads: 20)))
        // Stage 2 of the output: not mapped (stops at the SS-PDE), and read-only.
        #expect(g.nested.translate(Self.iova + kib4 + 8) == .failure(NestedFault(
            stage: .stage2, fault: PageTableFault(.translation, level: 2), guestPhysical: 0x500_0008, stage1TableLevel: nil, tableReads: 23)))
        #expect(g.nested.translate(Self.iova + 2 * kib4, access: .write) == .failure(NestedFault(
            stage: .stage2, fault: PageTableFault(.permission(.write), level: 1), guestPhysical: 0x300_0000, stage1TableLevel: nil, tableReads: 24)))
        // The stage-1 walk had succeeded, so its A/D updates were made before stage 2 faulted.
        #expect(g.hostStage1Entries(Self.iova + 2 * kib4).last! & X86PTE.dirty != 0)
        // Rights are what both stages allow: stage 1 r/w supervisor, NX; stage 2 read (and execute = read).
        #expect(try g.nested.translate(Self.iova + 2 * kib4).get().rights == [.read])
    }

    // MARK: Arm stage 1 over Arm stage 2

    struct ArmGuest {
        let host = PhysicalMemory()
        let ram: GuestRAM
        let stage1: ArmStage1PageTable
        let stage2: ArmStage2PageTable
        var nested: NestedPageTable<ArmStage1Format, ArmStage2Format> {
            NestedPageTable(stage1: stage1.format, stage1Root: stage1.root, stage2: stage2)
        }

        init(stage1 s1: ArmStage1Format, stage2 s2: ArmStage2Format, tablePages: ArmStage2Permissions = .readWrite,
             tableAttributes: ArmStage2Attributes = ArmStage2Attributes()) throws {
            ram = GuestRAM(host: host, hostBase: 0x20_0000_1000)
            stage1 = try ArmStage1PageTable(memory: ram.guest, format: s1)
            stage2 = try ArmStage2PageTable(memory: host, format: s2)
            let tables = ram.guest.allocatorBase, tablesSize = ram.guest.allocatorLimit - tables
            try stage2.map(iova: 0, physical: ram.hostBase, size: tables, permissions: .all)
            try stage2.map(iova: tables, physical: ram.host(tables), size: tablesSize, permissions: tablePages,
                           attributes: tableAttributes)
            try stage2.map(iova: tables + tablesSize, physical: ram.host(tables + tablesSize),
                           size: ram.size - tables - tablesSize, permissions: .all)
        }

        func hostStage1Leaf(_ iova: UInt64) -> UInt64 { host.read64(ram.host(stage1.entries(for: iova).last!.address)) }
    }

    @Test func armStage1OverStage2WithHardwareAccessFlagAndDirtyState() throws {
        let g = try ArmGuest(stage1: ArmStage1Format(hardwareAccessFlag: true, hardwareDirtyState: true),
                             stage2: try ArmStage2Format(hardwareAccessFlag: true, hardwareDirtyState: true))
        try g.stage1.map(iova: Self.iova, physical: Self.gpa, size: kib4, permissions: [.write, .user],
                         attributes: ArmStage1Attributes(accessFlag: false))
        g.ram.sync()
        #expect(g.hostStage1Leaf(Self.iova) & (ArmDescriptor.accessFlag | ArmStage1Descriptor.ap2ReadOnly) == ArmStage1Descriptor.ap2ReadOnly)
        let t = try g.nested.translate(Self.iova + 4, access: PageAccess(.write, user: true)).get()
        #expect(t.output == g.ram.host(Self.gpa) + 4 && t.tableReads == 24)
        #expect(t.rights == [.read, .write, .userRead, .userWrite])  // PXN, UXN at stage 1
        // Stage 1 set AF and cleared AP[2] (dirty) through stage 2 …
        #expect(g.hostStage1Leaf(Self.iova) & (ArmDescriptor.accessFlag | ArmStage1Descriptor.ap2ReadOnly) == ArmDescriptor.accessFlag)
        // … which made the stage-2 page holding the stage-1 level-3 table dirty, and the data page.
        let level3Table = g.stage1.entries(for: Self.iova)[3].address
        #expect(try g.stage2.readAndClearDirty(iova: 0, size: g.ram.size) == [
            DirtyRange(iova: level3Table & ~0xFFF, length: kib4), DirtyRange(iova: Self.gpa, length: kib4)])
        // Arm stage-1 table descriptors hold no hardware state: a second access writes nothing.
        #expect(try g.nested.translate(Self.iova, access: .write).get().tableReads == 24)
        #expect(try g.stage2.readAndClearDirty(iova: 0, size: g.ram.size) == [DirtyRange(iova: Self.gpa, length: kib4)])
    }

    @Test func armFaultsAtEitherStage() throws {
        // Stage 1 without hardware AF: an access-flag fault at stage-1 level 3.
        let plain = try ArmGuest(stage1: ArmStage1Format(), stage2: try ArmStage2Format())
        try plain.stage1.map(iova: Self.iova, physical: Self.gpa, size: kib4, permissions: .write,
                             attributes: ArmStage1Attributes(accessFlag: false))
        plain.ram.sync()
        #expect(plain.nested.translate(Self.iova) == .failure(NestedFault(
            stage: .stage1, fault: PageTableFault(.accessFlag, level: 3), guestPhysical: nil, stage1TableLevel: nil, tableReads: 20)))

        // Stage 2 without AF on the stage-1 table pages: an access-flag fault on the first table read.
        let noAF = try ArmGuest(stage1: ArmStage1Format(), stage2: try ArmStage2Format(),
                                tableAttributes: ArmStage2Attributes(accessFlag: false))
        try noAF.stage1.map(iova: Self.iova, physical: Self.gpa, size: kib4, permissions: .write)
        noAF.ram.sync()
        #expect(noAF.nested.translate(Self.iova) == .failure(NestedFault(
            stage: .stage2, fault: PageTableFault(.accessFlag, level: 3),
            guestPhysical: noAF.stage1.entries(for: Self.iova)[0].address, stage1TableLevel: 0, tableReads: 4)))

        // Stage-1 hardware AF update into a table page stage 2 maps read-only (no DBM): a stage-2
        // permission fault on the stage-1 level-3 table, the only descriptor the update writes.
        let readOnly = try ArmGuest(stage1: ArmStage1Format(hardwareAccessFlag: true), stage2: try ArmStage2Format(),
                                    tablePages: .read)
        try readOnly.stage1.map(iova: Self.iova, physical: Self.gpa, size: kib4, permissions: .write,
                                attributes: ArmStage1Attributes(accessFlag: false))
        readOnly.ram.sync()
        #expect(readOnly.nested.translate(Self.iova) == .failure(NestedFault(
            stage: .stage2, fault: PageTableFault(.permission(.write), level: 3),
            guestPhysical: readOnly.stage1.entries(for: Self.iova)[3].address, stage1TableLevel: 3, tableReads: 20)))
        #expect(readOnly.nested.translate(Self.iova, updateAccessedDirty: false).isSuccess)
        // Stage 2 of the output: an IPA beyond the stage-2 input size.
        let small = try ArmGuest(stage1: ArmStage1Format(), stage2: try ArmStage2Format(t0sz: 24, sl0: 2))
        try small.stage1.map(iova: Self.iova, physical: 1 << 40, size: kib4, permissions: .write)
        small.ram.sync()
        #expect(small.nested.translate(Self.iova) == .failure(NestedFault(
            stage: .stage2, fault: PageTableFault(.translation, level: 0), guestPhysical: 1 << 40, stage1TableLevel: nil, tableReads: 20)))
    }
}
