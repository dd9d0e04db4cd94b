import IOASIDStructures
import Testing
@testable import IOASIDSoftIOMMU

@Suite struct ArmStage1Tests {
    // MARK: Property test against the reference model

    enum Config: String, CaseIterable, CustomStringConvertible, Sendable {
        case va48HardwareDirty, va39StartLevel1, va30StartLevel2
        var description: String { rawValue }

        var subject: FormatUnderTest<ArmStage1Format> {
            let format: ArmStage1Format
            let base: UInt64
            switch self {
            case .va48HardwareDirty:
                format = ArmStage1Format(inputAddressBits: 48, hardwareAccessFlag: true, hardwareDirtyState: true)
                base = 0x7FF0_0000_0000
            case .va39StartLevel1:
                format = ArmStage1Format(t0sz: 25)
                base = 0x40_0000_0000
            case .va30StartLevel2:
                format = ArmStage1Format(inputAddressBits: 30, outputAddressBits: 42)
                base = 0
            }
            let all: [ArmStage1Permissions] = (0..<16).map { ArmStage1Permissions(rawValue: UInt8($0)) }
            return FormatUnderTest(format: format, permissions: all, rights: Self.expectedRights,
                                   windowBase: base, tracksDirty: format.dirtyStateEnabled)
        }

        /// The Arm ARM's AP[2:1] / PXN / UXN table, written out independently of the format.
        static func expectedRights(_ p: ArmStage1Permissions) -> AccessRights {
            var r: AccessRights = .read
            let el0Write = p.contains(.user) && p.contains(.write)
            if p.contains(.write) { r.insert(.write) }
            if p.contains(.user) { r.insert(.userRead) }
            if el0Write { r.insert(.userWrite) }
            if p.contains(.privilegedExecute) && !el0Write { r.insert(.execute) }
            if p.contains(.userExecute) { r.insert(.userExecute) }
            return r
        }
    }

    @Test(arguments: [1, 2, 3, 0xC0FFEE] as [UInt64], Config.allCases)
    func randomSequencesMatchTheReferenceModel(seed: UInt64, config: Config) throws {
        try checkAgainstReferenceModel(config.subject, seed: seed &* 11 &+ UInt64(config.rawValue.count))
    }

    // MARK: Exact bit layout

    @Test func descriptorsAreBitExact() throws {
        let memory = PhysicalMemory()
        let table = try ArmStage1PageTable(memory: memory, format: ArmStage1Format())
        #expect(table.format.startLevel == 0 && table.format.t0sz == 16)
        // Page: EL1 read/write only, PXN, UXN, AttrIndx 1, inner shareable, nG, AF.
        let iova: UInt64 = 0x0000_7FFF_FFFF_F000
        try table.map(iova: iova, physical: 0x0000_FFFF_FFFF_F000, size: kib4, permissions: .write,
                      attributes: ArmStage1Attributes(memoryAttributeIndex: 1, shareability: .innerShareable, notGlobal: true))
        let walk = table.entries(for: iova)
        #expect(walk.map(\.level) == [0, 1, 2, 3])
        for (i, entry) in walk.enumerated() {
            // Level 0 index = VA[47:39], level 1 [38:30], level 2 [29:21], level 3 [20:12].
            let index = (iova >> UInt64(39 - 9 * i)) & 0x1FF
            let tableBase = i == 0 ? table.root : walk[i - 1].value & 0x0000_FFFF_FFFF_F000
            #expect(entry.address == tableBase + index * 8)
        }
        for entry in walk.dropLast() { #expect(entry.value & 0xFFF == 0x3) }  // table descriptors, no limits
        #expect(walk[3].value == 0x0060_FFFF_FFFF_FF07)  // UXN|PXN | addr | nG|AF|SH=11|AP=00 | AttrIndx=1 | page

        // 2 MiB block: read-only at EL1 and EL0 (AP = 11), executable at both.
        try table.map(iova: 0x4000_0000, physical: 0x1_2340_0000, size: mib2,
                      permissions: [.user, .privilegedExecute, .userExecute])
        #expect(table.entries(for: 0x4000_0000).last!.value == 0x0000_0001_2340_07C1)
        // 1 GiB block: read/write at EL0 (AP = 01), PXN.
        try table.map(iova: 0x80_0000_0000, physical: 0x3_C000_0000, size: gib1, permissions: [.write, .user, .userExecute])
        let giga = table.entries(for: 0x80_0000_0000)
        #expect(giga.map(\.level) == [0, 1])
        #expect(giga[1].value == 0x0020_0003_C000_0741)
        let t = try table.translate(0x80_0000_0010, access: PageAccess(.write, user: true)).get()
        #expect(t.output == 0x3_C000_0010 && t.pageSize == gib1 && t.level == 1)
        #expect(t.rights == [.read, .write, .userRead, .userWrite, .userExecute])

        // Splitting keeps the attributes: 2 MiB blocks (bits 1:0 = 01), then pages (11).
        try table.unmap(iova: 0x80_0000_0000, size: kib4)
        #expect(table.entries(for: 0x80_0020_0000)[2].value == 0x0020_0003_C020_0741)
        #expect(table.entries(for: 0x80_0000_1000)[3].value == 0x0020_0003_C000_1743)
        #expect(table.translate(0x80_0000_0000) == .failure(PageTableFault(.translation, level: 3)))
    }

    @Test func startLevelFollowsT0SZ() throws {
        let memory = PhysicalMemory()
        let l1 = try ArmStage1PageTable(memory: memory, format: ArmStage1Format(t0sz: 25))
        #expect(l1.format.startLevel == 1)
        try l1.map(iova: 0x7F_C000_0000, physical: 0x8000_0000, size: gib1, permissions: .write)
        #expect(l1.entries(for: 0x7F_C000_0000).map(\.level) == [1])  // a 1 GiB block in the start table
        #expect(l1.entries(for: 0x7F_C000_0000)[0].address == l1.root + 511 * 8)
        #expect(try l1.translate(0x7F_C000_1234).get().output == 0x8000_1234)
        #expect(l1.translate(1 << 39) == .failure(PageTableFault(.translation, level: 0)))
        #expect(throws: PageTableError.outOfRange) { try l1.map(iova: 1 << 39, physical: 0, size: kib4, permissions: []) }

        let l2 = try ArmStage1PageTable(memory: memory, format: ArmStage1Format(t0sz: 34))
        #expect(l2.format.startLevel == 2 && !l2.format.mayMapLeaf(atLevel: 3))
        try l2.map(iova: 0, physical: 0x4000_0000, size: gib1, permissions: .write)  // 512 blocks of 2 MiB
        #expect(l2.entries(for: 0x3FE0_0000).map(\.level) == [2])
        #expect(l2.translate(1 << 30) == .failure(PageTableFault(.translation, level: 0)))

        // A 40-bit input starts at level 0 with a two-entry table.
        let l0 = try ArmStage1PageTable(memory: memory, format: ArmStage1Format(inputAddressBits: 40))
        try l0.map(iova: 0xFF_FFFF_F000, physical: 0x5000, size: kib4, permissions: [])
        #expect(l0.entries(for: 0xFF_FFFF_F000)[0].address == l0.root + 8)
        #expect(l0.entries(for: 0xFF_FFFF_F000).map(\.level) == [0, 1, 2, 3])
    }

    // MARK: Permissions

    @Test func accessPermissionsFollowTheAPTable() throws {
        let table = try ArmStage1PageTable(memory: PhysicalMemory(), format: ArmStage1Format())
        let cases: [(ArmStage1Permissions, ap: UInt64, [PageAccess: PageTableFault.Violation?])] = [
            ([.write], 0b00, [.read: nil, .write: nil, PageAccess(.read, user: true): .privilege, PageAccess(.write, user: true): .privilege]),
            ([.write, .user], 0b01, [.read: nil, .write: nil, PageAccess(.read, user: true): nil, PageAccess(.write, user: true): nil]),
            ([], 0b10, [.read: nil, .write: .write, PageAccess(.read, user: true): .privilege, PageAccess(.write, user: true): .privilege]),
            ([.user], 0b11, [.read: nil, .write: .write, PageAccess(.read, user: true): nil, PageAccess(.write, user: true): .write]),
        ]
        for (i, c) in cases.enumerated() {
            let iova = UInt64(i + 1) * kib4
            try table.map(iova: iova, physical: 0x10_0000 + iova, size: kib4, permissions: c.0)
            #expect((table.entries(for: iova)[3].value >> 6) & 0b11 == c.ap, "AP[2:1] of \(c.0)")
            for (access, violation) in c.2 {
                let got = table.translate(iova, access: access, updateAccessedDirty: false)
                if let violation {
                    #expect(got == .failure(PageTableFault(.permission(violation), level: 3)), "\(c.0) \(access)")
                } else {
                    #expect(got.isSuccess, "\(c.0) \(access)")
                }
            }
        }
        // Execute-only at EL0: AP = 00, UXN = 0.
        try table.map(iova: 0x10_0000, physical: 0x20_0000, size: kib4, permissions: .userExecute)
        #expect(table.translate(0x10_0000, access: PageAccess(.execute, user: true)).isSuccess)
        #expect(table.translate(0x10_0000, access: PageAccess(.read, user: true)) == .failure(PageTableFault(.permission(.privilege), level: 3)))
        #expect(table.translate(0x10_0000, access: .execute) == .failure(PageTableFault(.permission(.execute), level: 3)))
        // Writable at EL0 implies PXN, whatever the PXN bit says.
        try table.map(iova: 0x11_0000, physical: 0x21_0000, size: kib4, permissions: [.write, .user, .privilegedExecute])
        #expect(table.entries(for: 0x11_0000)[3].value & ArmStage1Descriptor.privilegedExecuteNever == 0)
        #expect(table.translate(0x11_0000, access: .execute) == .failure(PageTableFault(.permission(.execute), level: 3)))
        try table.map(iova: 0x12_0000, physical: 0x22_0000, size: kib4, permissions: [.user, .privilegedExecute])
        #expect(table.translate(0x12_0000, access: .execute).isSuccess)
    }

    @Test func tableAttributesLimitEveryLevelBelow() throws {
        let memory = PhysicalMemory()
        let table = try ArmStage1PageTable(memory: memory, format: ArmStage1Format())
        try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: [.write, .user, .userExecute, .privilegedExecute])
        try table.map(iova: 0x2000, physical: 0xB000, size: kib4, permissions: .privilegedExecute)
        let walk = table.entries(for: 0x1000)
        let userWrite = PageAccess(.write, user: true)
        #expect(try table.translate(0x1000, access: userWrite).get().rights == [.read, .write, .userRead, .userWrite, .userExecute])

        func with(_ slot: PageTableWalkEntry, _ bit: UInt64, _ body: () -> Void) {
            memory.write64(slot.address, slot.value | bit)
            body()
            memory.write64(slot.address, slot.value)
        }
        // APTable[1] at level 1: no writes below; the page is no longer EL0-writable, so EL1 may execute it.
        with(walk[1], ArmStage1Descriptor.apTableReadOnly) {
            #expect(table.translate(0x1000, access: .write) == .failure(PageTableFault(.permission(.write), level: 3)))
            #expect(table.translate(0x1000, access: userWrite) == .failure(PageTableFault(.permission(.write), level: 3)))
            #expect(table.translate(0x1000).map(\.rights) == .success([.read, .execute, .userRead, .userExecute]))
        }
        // APTable[0] at level 0: no EL0 access below.
        with(walk[0], ArmStage1Descriptor.apTableNoUser) {
            #expect(table.translate(0x1000, access: PageAccess(.read, user: true)) == .failure(PageTableFault(.permission(.privilege), level: 3)))
            #expect(table.translate(0x1000, access: .write).isSuccess)
        }
        // UXNTable at level 2, PXNTable at level 0.
        with(walk[2], ArmStage1Descriptor.uxnTable) {
            #expect(table.translate(0x1000, access: PageAccess(.execute, user: true)) == .failure(PageTableFault(.permission(.execute), level: 3)))
        }
        #expect(table.translate(0x2000, access: .execute).isSuccess)
        with(walk[0], ArmStage1Descriptor.pxnTable) {
            #expect(table.translate(0x2000, access: .execute) == .failure(PageTableFault(.permission(.execute), level: 3)))
        }
        #expect(table.translate(0x2000, access: .execute).isSuccess)
    }

    // MARK: Access flag and dirty state

    @Test func accessFlagFaultsUnlessHardwareUpdatesIt() throws {
        let memory = PhysicalMemory()
        let noAF = ArmStage1Attributes(accessFlag: false)
        let table = try ArmStage1PageTable(memory: memory, format: ArmStage1Format())
        try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: [], attributes: noAF)
        try table.map(iova: mib2, physical: 4 * mib2, size: mib2, permissions: .write, attributes: noAF)
        #expect(table.translate(0x1000) == .failure(PageTableFault(.accessFlag, level: 3)))
        // The access-flag fault takes priority over the permission fault.
        #expect(table.translate(0x1000, access: .write) == .failure(PageTableFault(.accessFlag, level: 3)))
        #expect(table.translate(mib2 + 8) == .failure(PageTableFault(.accessFlag, level: 2)))

        let ha = try ArmStage1PageTable(memory: memory, format: ArmStage1Format(hardwareAccessFlag: true))
        try ha.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: [], attributes: noAF)
        #expect(ha.translate(0x1000, access: .write) == .failure(PageTableFault(.permission(.write), level: 3)))
        #expect(ha.entries(for: 0x1000)[3].value & ArmDescriptor.accessFlag == 0, "a faulting access sets no AF")
        #expect(ha.translate(0x1000, updateAccessedDirty: false).isSuccess)
        #expect(ha.entries(for: 0x1000)[3].value & ArmDescriptor.accessFlag == 0)
        #expect(try ha.translate(0x1008).get().output == 0xA008)
        #expect(ha.entries(for: 0x1000)[3].value == 0x0060_0000_0000_A783)  // AF now set
    }

    @Test func hardwareDirtyStateClearsAP2OnWrite() throws {
        let memory = PhysicalMemory()
        let format = ArmStage1Format(hardwareAccessFlag: true, hardwareDirtyState: true)
        let table = try ArmStage1PageTable(memory: memory, format: format)
        try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: .write)
        try table.map(iova: mib2, physical: 4 * mib2, size: mib2, permissions: [.write, .user])
        // Writable-clean: DBM = 1, AP[2] = 1.
        let clean: UInt64 = 0x0068_0000_0000_A783
        #expect(table.entries(for: 0x1000)[3].value == clean)
        #expect(try table.translate(0x1000).get().rights.contains(.write))
        #expect(table.entries(for: 0x1000)[3].value == clean, "a read changes nothing")
        _ = try table.translate(0x1010, access: .write).get()
        #expect(table.entries(for: 0x1000)[3].value == clean & ~ArmStage1Descriptor.ap2ReadOnly)
        _ = try table.translate(mib2 + 0x1234, access: PageAccess(.write, user: true)).get()
        #expect(try table.readAndClearDirty(iova: 0, size: 2 * mib2) == [
            DirtyRange(iova: 0x1000, length: kib4), DirtyRange(iova: mib2, length: mib2)])
        #expect(table.entries(for: 0x1000)[3].value == clean)
        #expect(try table.readAndClearDirty(iova: 0, size: 2 * mib2).isEmpty)

        // APTable[1] above a DBM page still forbids the write; AP[2] stays set.
        let l2 = table.entries(for: 0x1000)[2]
        memory.write64(l2.address, l2.value | ArmStage1Descriptor.apTableReadOnly)
        #expect(table.translate(0x1000, access: .write) == .failure(PageTableFault(.permission(.write), level: 3)))
        #expect(table.entries(for: 0x1000)[3].value == clean)
        memory.write64(l2.address, l2.value)

        // HD without HA is not in effect: writable pages are plain AP[2] = 0, and DBM alone is read-only.
        let hdOnly = try ArmStage1PageTable(memory: memory, format: ArmStage1Format(hardwareDirtyState: true))
        try hdOnly.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: .write)
        #expect(hdOnly.entries(for: 0x1000)[3].value == 0x0060_0000_0000_A703)
        memory.write64(hdOnly.entries(for: 0x1000)[3].address, clean)
        #expect(hdOnly.translate(0x1000, access: .write) == .failure(PageTableFault(.permission(.write), level: 3)))
    }

    // MARK: Invalid descriptors and address size

    @Test func invalidDescriptorsAndOutputAddressSize() throws {
        let memory = PhysicalMemory()
        let table = try ArmStage1PageTable(memory: memory, format: ArmStage1Format(outputAddressBits: 40))
        #expect(throws: PageTableError.physicalAddressTooLarge) {
            try table.map(iova: 0, physical: 1 << 40, size: kib4, permissions: [])
        }
        try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: [])
        let walk = table.entries(for: 0x1000)
        // A level-3 descriptor with bits 1:0 = 01 is reserved: translation fault, not mapped.
        memory.write64(walk[3].address, walk[3].value & ~ArmDescriptor.tableOrPage)
        #expect(table.translate(0x1000) == .failure(PageTableFault(.translation, level: 3)))
        #expect(!table.isAnyMapped(iova: 0x1000, size: kib4))
        memory.write64(walk[3].address, walk[3].value)
        // An output address above the 40-bit OA size: address-size fault at that level.
        memory.write64(walk[3].address, walk[3].value | 1 << 45)
        #expect(table.translate(0x1000) == .failure(PageTableFault(.addressSize, level: 3)))
        memory.write64(walk[3].address, walk[3].value)
        memory.write64(walk[1].address, walk[1].value | 1 << 44)
        #expect(table.translate(0x1000) == .failure(PageTableFault(.addressSize, level: 1)))
        memory.write64(walk[1].address, walk[1].value)
        // No blocks at level 0 with 4 KiB granules.
        memory.write64(walk[0].address, walk[0].value & ~ArmDescriptor.tableOrPage)
        #expect(table.translate(0x1000) == .failure(PageTableFault(.translation, level: 0)))
        memory.write64(walk[0].address, walk[0].value)
        #expect(try table.translate(0x1000).get().output == 0xA000)
    }
}
