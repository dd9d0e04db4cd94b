import IOASIDStructures
import Testing
@testable import IOASIDSoftIOMMU

@Suite struct ArmStage2Tests {
    // MARK: Property test against the reference model

    enum Config: String, CaseIterable, CustomStringConvertible, Sendable {
        case ipa48HardwareDirty, ipa40StartLevel0, ipa39StartLevel1, ipa30StartLevel2
        var description: String { rawValue }

        var subject: FormatUnderTest<ArmStage2Format> {
            let format: ArmStage2Format
            let base: UInt64
            switch self {
            case .ipa48HardwareDirty:
                format = try! ArmStage2Format(inputAddressBits: 48, hardwareAccessFlag: true, hardwareDirtyState: true)
                base = 0x8000_0000_0000
            case .ipa40StartLevel0:
                format = try! ArmStage2Format(t0sz: 24, sl0: 2)
                base = 0xF0_0000_0000
            case .ipa39StartLevel1:
                format = try! ArmStage2Format(t0sz: 25, sl0: 1, hardwareAccessFlag: true, hardwareDirtyState: true)
                base = 0x10_0000_0000
            case .ipa30StartLevel2:
                format = try! ArmStage2Format(t0sz: 34, sl0: 0, outputAddressBits: 42)
                base = 0
            }
            let all: [ArmStage2Permissions] = (0..<16).map { ArmStage2Permissions(rawValue: UInt8($0)) }
            return FormatUnderTest(format: format, permissions: all, rights: Self.expectedRights,
                                   windowBase: base, tracksDirty: format.dirtyStateEnabled)
        }

        static func expectedRights(_ p: ArmStage2Permissions) -> AccessRights {
            var r: AccessRights = []
            if p.contains(.read) { r.formUnion([.read, .userRead]) }
            if p.contains(.write) { r.formUnion([.write, .userWrite]) }
            if p.contains(.privilegedExecute) { r.insert(.execute) }
            if p.contains(.userExecute) { r.insert(.userExecute) }
            return r
        }
    }

    @Test(arguments: [1, 2, 3, 0xC0FFEE] as [UInt64], Config.allCases)
    func randomSequencesMatchTheReferenceModel(seed: UInt64, config: Config) throws {
        try checkAgainstReferenceModel(config.subject, seed: seed &* 13 &+ UInt64(config.rawValue.count))
    }

    // MARK: Exact bit layout

    @Test func descriptorsAreBitExact() throws {
        let memory = PhysicalMemory()
        let table = try ArmStage2PageTable(memory: memory, format: ArmStage2Format())
        #expect(table.format.startLevel == 0 && table.format.sl0 == 2 && table.format.t0sz == 16)
        // Page: S2AP = 11, Normal WB (MemAttr 1111), inner shareable, AF, XN = 10.
        try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: .readWrite)
        let walk = table.entries(for: 0x1000)
        #expect(walk.map(\.level) == [0, 1, 2, 3])
        for entry in walk.dropLast() { #expect(entry.value & 0xFFF == 0x3) }
        #expect(walk[3].value == 0x0040_0000_0000_A7FF)
        // Read-only, executable at EL1 and EL0 (XN = 00), Device-nGnRnE, non-shareable.
        try table.map(iova: 0x2000, physical: 0xB000, size: kib4, permissions: [.read, .privilegedExecute, .userExecute],
                      attributes: ArmStage2Attributes(memoryAttributes: 0, shareability: .nonShareable))
        #expect(table.entries(for: 0x2000)[3].value == 0x0000_0000_0000_B443)
        // 2 MiB block, read-only, executable at EL1 only (XN = 11), outer shareable.
        try table.map(iova: 0x4000_0000, physical: 0x1_2340_0000, size: mib2, permissions: [.read, .privilegedExecute],
                      attributes: ArmStage2Attributes(shareability: .outerShareable))
        #expect(table.entries(for: 0x4000_0000).last!.value == 0x0060_0001_2340_067D)
        let mapped = table.entries(for: 0x4000_0000).last!
        #expect(table.format.permissions(ofLeaf: mapped.value, level: 2) == [.read, .privilegedExecute])
        #expect(table.format.attributes(ofLeaf: mapped.value, level: 2) == ArmStage2Attributes(shareability: .outerShareable))
    }

    @Test func startLevelFromT0SZAndSL0() throws {
        let memory = PhysicalMemory()
        let l0 = try ArmStage2PageTable(memory: memory, format: ArmStage2Format(t0sz: 24, sl0: 2))
        #expect(l0.format.startLevel == 0 && l0.format.inputAddressBits == 40)
        try l0.map(iova: 0xFF_FFFF_F000, physical: 0x5000, size: kib4, permissions: .read)
        #expect(l0.entries(for: 0xFF_FFFF_F000)[0].address == l0.root + 8)  // two-entry level-0 table
        #expect(l0.translate(1 << 40) == .failure(PageTableFault(.translation, level: 0)))

        let l1 = try ArmStage2PageTable(memory: memory, format: ArmStage2Format(t0sz: 25, sl0: 1))
        try l1.map(iova: 0x40_0000_0000 - gib1, physical: gib1, size: gib1, permissions: .read)
        #expect(l1.entries(for: 0x3F_C000_0000).map(\.level) == [1])
        #expect(try l1.translate(0x3F_C000_0008).get().output == gib1 + 8)

        let l2 = try ArmStage2PageTable(memory: memory, format: ArmStage2Format(t0sz: 34, sl0: 0))
        #expect(l2.format.startLevel == 2)
        try l2.map(iova: 0x3FE0_0000, physical: mib2, size: mib2, permissions: .read)
        #expect(l2.entries(for: 0x3FE0_0000).map(\.level) == [2])
        #expect(try ArmStage2Format(inputAddressBits: 40).startLevel == 0)

        // Start levels that would need concatenated tables, resolve nothing, or do not exist.
        #expect(throws: PageTableError.unsupportedConfiguration) { try ArmStage2Format(t0sz: 24, sl0: 1) }
        #expect(throws: PageTableError.unsupportedConfiguration) { try ArmStage2Format(t0sz: 16, sl0: 1) }
        #expect(throws: PageTableError.unsupportedConfiguration) { try ArmStage2Format(t0sz: 34, sl0: 1) }
        #expect(throws: PageTableError.unsupportedConfiguration) { try ArmStage2Format(t0sz: 24, sl0: 3) }
        #expect(throws: PageTableError.unsupportedConfiguration) { try ArmStage2Format(t0sz: 40, sl0: 0) }
    }

    // MARK: Permissions

    @Test func s2apAndExecuteNever() throws {
        let memory = PhysicalMemory()
        let table = try ArmStage2PageTable(memory: memory, format: ArmStage2Format())
        let s2ap: [(ArmStage2Permissions, UInt64, read: Bool, write: Bool)] = [
            ([], 0b00, false, false), (.read, 0b01, true, false), (.write, 0b10, false, true), (.readWrite, 0b11, true, true),
        ]
        for (i, c) in s2ap.enumerated() {
            let iova = UInt64(i + 1) * kib4
            try table.map(iova: iova, physical: 0x10_0000 + iova, size: kib4, permissions: c.0)
            #expect((table.entries(for: iova)[3].value >> 6) & 0b11 == c.1)
            for user in [false, true] {
                let read = table.translate(iova, access: PageAccess(.read, user: user))
                #expect(c.read ? read.isSuccess : read == .failure(PageTableFault(.permission(.read), level: 3)))
                let write = table.translate(iova, access: PageAccess(.write, user: user))
                #expect(c.write ? write.isSuccess : write == .failure(PageTableFault(.permission(.write), level: 3)))
            }
        }
        // XN[1:0] (FEAT_XNX): 00 both, 01 EL0 only, 10 neither, 11 EL1 only.
        let xn: [(ArmStage2Permissions, UInt64, el1: Bool, el0: Bool)] = [
            ([.privilegedExecute, .userExecute], 0b00, true, true), (.userExecute, 0b01, false, true),
            ([], 0b10, false, false), (.privilegedExecute, 0b11, true, false),
        ]
        for (i, c) in xn.enumerated() {
            let iova = UInt64(i + 16) * kib4
            try table.map(iova: iova, physical: 0x10_0000 + iova, size: kib4, permissions: c.0)
            #expect(table.entries(for: iova)[3].value >> 53 & 0b11 == c.1)
            let el1 = table.translate(iova, access: .execute), el0 = table.translate(iova, access: PageAccess(.execute, user: true))
            #expect(c.el1 ? el1.isSuccess : el1 == .failure(PageTableFault(.permission(.execute), level: 3)))
            #expect(c.el0 ? el0.isSuccess : el0 == .failure(PageTableFault(.permission(.execute), level: 3)))
        }
        // Stage-2 table descriptors carry no limits: bits 63:59 are ignored.
        let l1 = table.entries(for: kib4)[1]
        memory.write64(l1.address, l1.value | 0x1F << 59)
        #expect(table.translate(4 * kib4, access: .write).isSuccess)
    }

    // MARK: Access flag and dirty state

    @Test func accessFlagAndHardwareDirtyState() throws {
        let memory = PhysicalMemory()
        let table = try ArmStage2PageTable(memory: memory, format: ArmStage2Format())
        try table.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: .readWrite,
                      attributes: ArmStage2Attributes(accessFlag: false))
        #expect(table.translate(0x1000, access: .execute) == .failure(PageTableFault(.accessFlag, level: 3)))

        let format = try ArmStage2Format(hardwareAccessFlag: true, hardwareDirtyState: true)
        let dirty = try ArmStage2PageTable(memory: memory, format: format)
        try dirty.map(iova: 0x1000, physical: 0xA000, size: kib4, permissions: .readWrite,
                      attributes: ArmStage2Attributes(accessFlag: false))
        try dirty.map(iova: 0x2000, physical: 0xB000, size: kib4, permissions: .write)
        // Writable-clean: DBM = 1, S2AP[1] = 0.
        #expect(dirty.entries(for: 0x1000)[3].value == 0x0048_0000_0000_A37F)
        _ = try dirty.translate(0x1000).get()
        #expect(dirty.entries(for: 0x1000)[3].value == 0x0048_0000_0000_A77F)  // AF set by the walker
        _ = try dirty.translate(0x1000, access: .write).get()
        #expect(dirty.entries(for: 0x1000)[3].value == 0x0048_0000_0000_A7FF)  // S2AP[1] set: dirty
        // A write-only page: the write is allowed through DBM, reads are not.
        #expect(dirty.translate(0x2000) == .failure(PageTableFault(.permission(.read), level: 3)))
        _ = try dirty.translate(0x2000, access: .write).get()
        #expect(try dirty.readAndClearDirty(iova: 0, size: mib2) == [
            DirtyRange(iova: 0x1000, length: kib4), DirtyRange(iova: 0x2000, length: kib4)])
        #expect(dirty.entries(for: 0x1000)[3].value == 0x0048_0000_0000_A77F)
        #expect(try dirty.readAndClearDirty(iova: 0, size: mib2).isEmpty)
        var permissions: [ArmStage2Permissions] = []
        dirty.forEachMapping { permissions.append($0.permissions) }
        #expect(permissions == [.readWrite, .write], "writable-clean pages are still writable")
    }

    @Test func outputAddressSize() throws {
        let memory = PhysicalMemory()
        let table = try ArmStage2PageTable(memory: memory, format: ArmStage2Format(inputAddressBits: 40, outputAddressBits: 40))
        #expect(throws: PageTableError.physicalAddressTooLarge) {
            try table.map(iova: 0, physical: (1 << 40) - kib4, size: 2 * kib4, permissions: .read)
        }
        try table.map(iova: mib2, physical: 2 * mib2, size: mib2, permissions: .read)
        let block = table.entries(for: mib2)[2]
        memory.write64(block.address, block.value | 1 << 47)
        #expect(table.translate(mib2) == .failure(PageTableFault(.addressSize, level: 2)))
    }
}
