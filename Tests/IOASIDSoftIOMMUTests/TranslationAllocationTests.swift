#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import IOASIDStructures
import Testing
@testable import IOASIDSoftIOMMU

/// The DMA translation path allocates nothing.
///
/// The check needs the project's malloc counter: run
/// `scripts/bench-preload.sh build /tmp/mc` once, then
/// `LD_PRELOAD=/tmp/mc/libmalloccount.so swift test --skip-build --filter TranslationAllocationTests`.
/// Without the counter loaded the test only exercises the paths.
@Suite struct TranslationAllocationTests {
    @Test func translateAndNestedTranslateAllocateNothing() throws {
        // Single-stage tables of every format, with hits, faults and hardware updates.
        let memory = PhysicalMemory()
        let x86 = try X86PageTable(memory: memory)
        try x86.map(iova: 0x1000, physical: 0x10_0000, size: 16 * kib4, permissions: .write)
        let vtd = try VTdSecondStagePageTable(memory: memory, format: VTdSecondStageFormat(accessedDirtyEnabled: true))
        try vtd.map(iova: 0x1000, physical: 0x10_0000, size: 16 * kib4, permissions: .readWrite)
        let s1 = try ArmStage1PageTable(memory: memory, format: ArmStage1Format(hardwareAccessFlag: true, hardwareDirtyState: true))
        try s1.map(iova: 0x1000, physical: 0x10_0000, size: 16 * kib4, permissions: [.write, .user])
        let s2 = try ArmStage2PageTable(memory: memory, format: ArmStage2Format(hardwareAccessFlag: true, hardwareDirtyState: true))
        try s2.map(iova: 0x1000, physical: 0x10_0000, size: 16 * kib4, permissions: .readWrite)
        // Nested: x86 over VT-d and Arm over Arm.
        let g = try X86OverVTd()
        try g.stage1.map(iova: NestedWalkTests.iova, physical: NestedWalkTests.gpa, size: 16 * kib4, permissions: .write)
        g.ram.sync()
        let arm = try NestedWalkTests.ArmGuest(stage1: ArmStage1Format(hardwareAccessFlag: true),
                                               stage2: try ArmStage2Format(hardwareAccessFlag: true, hardwareDirtyState: true))
        try arm.stage1.map(iova: NestedWalkTests.iova, physical: NestedWalkTests.gpa, size: 16 * kib4, permissions: .write)
        arm.ram.sync()
        let nestedX86 = g.nested, nestedArm = arm.nested

        var checksum: UInt64 = 0
        func round(_ n: Int) {
            for i in 0..<n {
                let page = UInt64(i % 20) * kib4
                let access: PageAccess = i % 3 == 0 ? .write : .read
                if case .success(let t) = x86.translate(0x1000 + page, access: access) { checksum &+= t.physical }
                if case .success(let t) = vtd.translate(0x1000 + page, access: access) { checksum &+= t.output }
                if case .success(let t) = s1.translate(0x1000 + page, access: access) { checksum &+= t.output }
                if case .failure(let f) = s2.translate(0x1000 + page, access: .execute) { checksum &+= UInt64(f.level) }
                if case .success(let t) = nestedX86.translate(NestedWalkTests.iova + page, access: access) {
                    checksum &+= t.output &+ UInt64(t.tableReads)
                }
                if case .failure(let f) = nestedArm.translate(NestedWalkTests.iova + page, access: access) {
                    checksum &+= UInt64(f.tableReads)
                }
            }
        }
        round(40)  // warm up, make the first hardware updates

        guard let fewest = fewestMallocs(of: { round(1000) }) else {
            round(200)
            #expect(checksum != 0)
            return
        }
        #expect(fewest == 0, "allocations in 6000 translations")
        #expect(checksum != 0)
    }
}
