import IOASIDStructures
import Testing
@testable import IOASIDSoftIOMMU

@Suite struct VTdSecondStageTests {
    // MARK: Property test against the reference model

    enum Config: String, CaseIterable, CustomStringConvertible, Sendable {
        case agaw48AccessedDirty, agaw39ExecuteAccessedDirty, agaw57NoGigabytePages
        var description: String { rawValue }

        var subject: FormatUnderTest<VTdSecondStageFormat> {
            let format: VTdSecondStageFormat
            let base: UInt64
            switch self {
            case .agaw48AccessedDirty:
                format = VTdSecondStageFormat(addressWidth: 48, accessedDirtyEnabled: true)
                base = 0x1234_0000_0000
            case .agaw39ExecuteAccessedDirty:
                format = VTdSecondStageFormat(addressWidth: 39, accessedDirtyEnabled: true, executeEnabled: true)
                base = 0x70_0000_0000
            case .agaw57NoGigabytePages:
                format = VTdSecondStageFormat(addressWidth: 57, supports1GiB: false)
                base = 0x00AB_0000_0000_0000
            }
            let permissions: [VTdSecondStagePermissions] = format.executeEnabled
                ? [.read, .write, .readWrite, .execute, [.read, .execute], [.read, .write, .execute]]
                : [.read, .write, .readWrite, [.read, .execute]]
            return FormatUnderTest(format: format, permissions: permissions, rights: { p in
                .uniform(read: p.contains(.read), write: p.contains(.write),
                         execute: format.executeEnabled ? p.contains(.execute) : p.contains(.read))
            }, windowBase: base, tracksDirty: format.accessedDirtyEnabled)
        }
    }

    @Test(arguments: [1, 2, 3, 0xC0FFEE] as [UInt64], Config.allCases)
    func randomSequencesMatchTheReferenceModel(seed: UInt64, config: Config) throws {
        try checkAgainstReferenceModel(config.subject, seed: seed &* 7 &+ UInt64(config.rawValue.count))
    }

    // MARK: Exact bit layout

    @Test func entriesAreBitExact() throws {
        let memory = PhysicalMemory()
        let table = try VTdSecondStagePageTable(memory: memory, format: VTdSecondStageFormat(accessedDirtyEnabled: true))
        #expect(table.format.topLevel == 4)
        // 4 KiB, R|W, EMT = 6 (WB), IPAT, SNP, at the top of the 52-bit host address space.
        let iova: UInt64 = 0x1234_5678_9000
        try table.map(iova: iova, physical: 0x000F_FFFF_FFFF_F000, size: kib4, permissions: .readWrite,
                      attributes: VTdSecondStageAttributes(memoryType: 6, ignorePAT: true, snoop: true))
        let walk = table.entries(for: iova)
        #expect(walk.map(\.level) == [4, 3, 2, 1])
        for (i, entry) in walk.enumerated() {
            // SS-PML4E index = bits 47:39, SS-PDPTE 38:30, SS-PDE 29:21, SS-PTE 20:12.
            let index = (iova >> UInt64(39 - 9 * i)) & 0x1FF
            let tableBase = i == 0 ? table.root : walk[i - 1].value & 0x000F_FFFF_FFFF_F000
            #expect(entry.address == tableBase + index * 8)
        }
        for entry in walk.dropLast() { #expect(entry.value & 0xFFF == 0x3) }  // R|W table pointers
        #expect(walk[3].value == 0x000F_FFFF_FFFF_F873)  // addr | SNP | IPAT | EMT=110 | W | R

        // 2 MiB read-only: R | PS.
        try table.map(iova: 0x4000_0000, physical: 0x1_2340_0000, size: mib2, permissions: .read)
        #expect(table.entries(for: 0x4000_0000).last!.value == 0x0000_0001_2340_0081)
        // 1 GiB read/write: R | W | PS.
        try table.map(iova: 0x80_0000_0000, physical: 0x3_C000_0000, size: gib1, permissions: .readWrite)
        let giga = table.entries(for: 0x80_0000_0000)
        #expect(giga.count == 2 && giga[1].value == 0x0000_0003_C000_0083)

        // With second-stage A/D: a read sets A (bit 8) in every entry used; a write also D (bit 9) in the leaf.
        _ = try table.translate(0x4000_0010, access: .read).get()
        #expect(table.entries(for: 0x4000_0000).last!.value == 0x0000_0001_2340_0181)
        _ = try table.translate(0x80_0000_0010, access: .write).get()
        #expect(table.entries(for: 0x80_0000_0000)[1].value == 0x0000_0003_C000_0383)
        #expect(table.entries(for: 0x80_0000_0000)[0].value & 0xFFF == 0x103)

        // Splitting the 1 GiB page keeps the leaf bits; PS stays in the 2 MiB children, not in SS-PTEs.
        try table.unmap(iova: 0x80_0000_0000, size: kib4)
        let split = table.entries(for: 0x80_0020_0000)
        #expect(split[1].value & 0xFFF == 0x103)  // table pointer R|W + A
        #expect(split[2].value == 0x0000_0003_C020_0383)
        let pte = table.entries(for: 0x80_0000_1000)
        #expect(pte.count == 4 && pte[3].value == 0x0000_0003_C000_1303)
        #expect(table.translate(0x80_0000_0000) == .failure(PageTableFault(.translation, level: 1)))
    }

    @Test func threeAndFiveLevelTables() throws {
        let memory = PhysicalMemory()
        let three = try VTdSecondStagePageTable(memory: memory, format: VTdSecondStageFormat(addressWidth: 39))
        #expect(three.format.topLevel == 3)
        try three.map(iova: 0x7F_FFFF_F000, physical: 0x5000, size: kib4, permissions: .readWrite)
        #expect(three.entries(for: 0x7F_FFFF_F000).map(\.level) == [3, 2, 1])
        #expect(three.entries(for: 0x7F_FFFF_F000)[0].address == three.root + 511 * 8)
        #expect(try three.translate(0x7F_FFFF_F123).get().output == 0x5123)
        #expect(three.translate(1 << 39) == .failure(PageTableFault(.addressSize, level: 3)))
        #expect(throws: PageTableError.outOfRange) {
            try three.map(iova: 1 << 39, physical: 0, size: kib4, permissions: .read)
        }

        let five = try VTdSecondStagePageTable(memory: memory, format: VTdSecondStageFormat(addressWidth: 57))
        let high: UInt64 = 0x00AB_CDE0_0000_0000
        try five.map(iova: high, physical: 0x7000_0000, size: mib2, permissions: .read)
        let walk = five.entries(for: high)
        #expect(walk.map(\.level) == [5, 4, 3, 2])
        #expect(walk[0].address == five.root + 0xAB * 8)
        let t = try five.translate(high + 0x1_2345).get()
        #expect(t.output == 0x7001_2345 && t.pageSize == mib2 && t.level == 2)
        #expect(five.translate(high & ((1 << 48) - 1)) == .failure(PageTableFault(.translation, level: 5)))
        #expect(five.translate(1 << 57) == .failure(PageTableFault(.addressSize, level: 5)))
    }

    // MARK: Permissions and faults

    @Test func permissionsCombineOverLevelsAndExecuteFollowsSSEE() throws {
        let memory = PhysicalMemory()
        let table = try VTdSecondStagePageTable(memory: memory, format: VTdSecondStageFormat())
        try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: .read)
        try table.map(iova: 0x2000, physical: 0xB000, size: kib4, permissions: .write)
        try table.map(iova: 0x3000, physical: 0xC000, size: kib4, permissions: .readWrite)
        #expect(table.translate(0x1000, access: .write) == .failure(PageTableFault(.permission(.write), level: 1)))
        #expect(table.translate(0x2000, access: .read) == .failure(PageTableFault(.permission(.read), level: 1)))
        #expect(try table.translate(0x2000, access: .write).get().rights == .uniform(read: false, write: true, execute: false))
        // Without SSEE, X is ignored and an execute request needs read permission.
        #expect(try table.translate(0x1000, access: .execute).get().rights == .uniform(read: true, write: false, execute: true))
        #expect(table.translate(0x2000, access: .execute) == .failure(PageTableFault(.permission(.execute), level: 1)))
        // Clearing W in the SS-PDE forbids writes below it.
        let pde = table.entries(for: 0x3000)[2]
        #expect(pde.level == 2)
        memory.write64(pde.address, pde.value & ~VTdSSPTE.write)
        #expect(table.translate(0x3000, access: .write) == .failure(PageTableFault(.permission(.write), level: 1)))
        #expect(try table.translate(0x3000).get().rights == .uniform(read: true, write: false, execute: true))

        // With SSEE, X is honoured at every level; table pointers carry R|W|X.
        let x = try VTdSecondStagePageTable(memory: memory, format: VTdSecondStageFormat(executeEnabled: true))
        try x.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: .read)
        try x.map(iova: 0x2000, physical: 0xB000, size: kib4, permissions: .execute)
        #expect(x.entries(for: 0x1000)[0].value & 0xFFF == 0x7)
        #expect(x.translate(0x1000, access: .execute) == .failure(PageTableFault(.permission(.execute), level: 1)))
        #expect(try x.translate(0x2000, access: .execute).get().output == 0xB000)
        #expect(x.translate(0x2000, access: .read) == .failure(PageTableFault(.permission(.read), level: 1)))
    }

    @Test func notPresentMeansNeitherReadNorWrite() throws {
        let memory = PhysicalMemory()
        let table = try VTdSecondStagePageTable(memory: memory, format: VTdSecondStageFormat())
        #expect(throws: PageTableError.unsupportedPermissions) {
            try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: [])
        }
        #expect(throws: PageTableError.unsupportedPermissions) {
            try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: .execute)  // X ignored without SSEE
        }
        #expect(table.translate(0x1000) == .failure(PageTableFault(.translation, level: 4)))
        try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: .read)
        #expect(table.translate(0x2000) == .failure(PageTableFault(.translation, level: 1)))
        // An X-only entry is not present when X is ignored.
        let pte = table.entries(for: 0x1000)[3]
        memory.write64(pte.address, (pte.value & ~0x3) | VTdSSPTE.execute)
        #expect(table.translate(0x1000) == .failure(PageTableFault(.translation, level: 1)))
        #expect(!table.isAnyMapped(iova: 0x1000, size: kib4))
    }

    @Test func reservedFieldsFault() throws {
        let memory = PhysicalMemory()
        let format = VTdSecondStageFormat(hostAddressWidth: 46)
        let table = try VTdSecondStagePageTable(memory: memory, format: format)
        #expect(throws: PageTableError.physicalAddressTooLarge) {
            try table.map(iova: 0, physical: 1 << 46, size: kib4, permissions: .read)
        }
        try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: .readWrite)
        try table.map(iova: 0x4000_0000, physical: 0x8000_0000, size: mib2, permissions: .readWrite)
        let walk = table.entries(for: 0x1000)
        func expectFault(_ slot: PageTableWalkEntry, _ bits: UInt64, _ iova: UInt64, level: Int, clear: UInt64 = 0) {
            memory.write64(slot.address, (slot.value | bits) & ~clear)
            #expect(table.translate(iova) == .failure(PageTableFault(.reservedBit, level: level)), "bits \(String(bits, radix: 16))")
            memory.write64(slot.address, slot.value)
            #expect(table.translate(iova).isSuccess)
        }
        expectFault(walk[3], 1 << 47, 0x1000, level: 1)          // address bit above HAW
        expectFault(walk[1], 1 << 62, 0x1000, level: 3)          // bit 62
        expectFault(walk[0], VTdSSPTE.pageSize, 0x1000, level: 4)  // PS in an SS-PML4E
        expectFault(walk[0], VTdSSPTE.snoop, 0x1000, level: 4)     // bit 11 in an SS-PML4E
        expectFault(walk[2], VTdSSPTE.snoop, 0x1000, level: 2)     // bit 11 in a non-leaf SS-PDE
        let large = table.entries(for: 0x4000_0000)[2]
        expectFault(large, 1 << 12, 0x4000_0000, level: 2)        // bits 20:12 of a 2 MiB leaf
        // Bits 63 and 61:52 are ignored; SNP is allowed in a leaf.
        memory.write64(walk[3].address, walk[3].value | 1 << 63 | 0x3FF << 52 | VTdSSPTE.snoop)
        #expect(try table.translate(0x1000).get().output == 0xA000)

        // Without 1 GiB support, PS in an SS-PDPTE is reserved.
        let small = try VTdSecondStagePageTable(memory: memory, format: VTdSecondStageFormat(supports1GiB: false))
        try small.map(iova: 0x4000_0000, physical: 0x4000_0000, size: gib1, permissions: .read)
        #expect(small.entries(for: 0x4000_0000).count == 3)  // 512 2 MiB pages
        let pdpte = small.entries(for: 0x4000_0000)[1]
        memory.write64(pdpte.address, 0x4000_0000 | VTdSSPTE.pageSize | VTdSSPTE.read)
        #expect(small.translate(0x4000_0000) == .failure(PageTableFault(.reservedBit, level: 3)))
    }

    // MARK: Accessed and dirty

    @Test func accessedDirtyOnlyWithSSADE() throws {
        let memory = PhysicalMemory()
        let plain = try VTdSecondStagePageTable(memory: memory, format: VTdSecondStageFormat())
        try plain.map(iova: 0, physical: 0x10_0000, size: 4 * kib4, permissions: .readWrite)
        let before = plain.entries(for: kib4).map(\.value)
        _ = try plain.translate(kib4, access: .write).get()
        #expect(plain.entries(for: kib4).map(\.value) == before)
        // Bit 9 is ignored without A/D: never reported dirty.
        memory.write64(plain.entries(for: kib4)[3].address, before[3] | VTdSSPTE.dirty)
        #expect(try plain.readAndClearDirty(iova: 0, size: 4 * kib4).isEmpty)

        let ad = try VTdSecondStagePageTable(memory: memory, format: VTdSecondStageFormat(accessedDirtyEnabled: true))
        try ad.map(iova: 0, physical: 0x10_0000, size: 16 * kib4, permissions: .readWrite)
        try ad.map(iova: mib2, physical: 0x20_0000, size: mib2, permissions: .read)
        _ = try ad.translate(3 * kib4, access: .write).get()
        _ = try ad.translate(5 * kib4, access: .read).get()
        #expect(ad.translate(mib2, access: .write) == .failure(PageTableFault(.permission(.write), level: 2)))
        #expect(ad.entries(for: mib2).last!.value & VTdSSPTE.accessed == 0, "a faulting walk sets nothing")
        #expect(ad.entries(for: 5 * kib4).allSatisfy { $0.value & VTdSSPTE.accessed != 0 })
        #expect(ad.entries(for: 5 * kib4).allSatisfy { $0.value & VTdSSPTE.dirty == 0 })
        #expect(try ad.readAndClearDirty(iova: 0, size: 2 * mib2, clear: false) == [DirtyRange(iova: 3 * kib4, length: kib4)])
        #expect(try ad.readAndClearDirty(iova: 0, size: 2 * mib2) == [DirtyRange(iova: 3 * kib4, length: kib4)])
        #expect(try ad.readAndClearDirty(iova: 0, size: 2 * mib2).isEmpty)
        #expect(ad.entries(for: 3 * kib4)[3].value & VTdSSPTE.accessed != 0, "A stays set")
    }

    @Test func enumerationReportsPermissionsAndAttributes() throws {
        let table = try VTdSecondStagePageTable(memory: PhysicalMemory(), format: VTdSecondStageFormat())
        let attributes = VTdSecondStageAttributes(memoryType: 6, ignorePAT: true, snoop: false)
        try table.map(iova: mib2, physical: 0x4000_0000, size: mib2 + kib4, permissions: .read, attributes: attributes)
        var mappings: [PageMapping<VTdSecondStageFormat>] = []
        table.forEachMapping { mappings.append($0) }
        #expect(mappings.map(\.iova) == [mib2, 2 * mib2])
        #expect(mappings.map(\.size) == [mib2, kib4])
        #expect(mappings.map(\.level) == [2, 1])
        #expect(mappings.allSatisfy { $0.permissions == .read && $0.attributes == attributes })
        #expect(table.tableFrameCount == 4)
    }
}

extension Result {
    /// Whether the result is a success.
    var isSuccess: Bool { if case .success = self { true } else { false } }
}
