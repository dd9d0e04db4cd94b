import Testing
@testable import IOASIDSoftIOMMU

@Suite struct PhysicalMemoryTests {
    @Test func unwrittenMemoryReadsZeroAndWritesStick() {
        let memory = PhysicalMemory()
        #expect(memory.read64(0x1234_5000) == 0)
        memory.write64(0x1234_5008, 0xDEAD_BEEF_0000_0001)
        #expect(memory.read64(0x1234_5008) == 0xDEAD_BEEF_0000_0001)
        #expect(memory.read64(0x1234_5000) == 0)
        #expect(memory.read8(0x1234_5008) == 0x01)
        memory.write8(0x1234_500F, 0xAB)
        #expect(memory.read64(0x1234_5008) == 0xABAD_BEEF_0000_0001)
        #expect(memory.allocatedFrameCount == 0)
        #expect(memory.residentFrameCount == 1)
    }

    @Test func allocatorHandsOutZeroedDistinctFramesAndReusesFreedOnes() throws {
        let memory = PhysicalMemory(allocatorBase: 0x10_0000, allocatorLimit: 0x10_3000)
        let a = try #require(memory.allocateFrame())
        let b = try #require(memory.allocateFrame())
        let c = try #require(memory.allocateFrame())
        #expect(Set([a, b, c]).count == 3)
        #expect([a, b, c].allSatisfy { $0 % 4096 == 0 && $0 >= 0x10_0000 && $0 < 0x10_3000 })
        #expect(memory.allocateFrame() == nil)
        memory.write64(b + 0xFF8, 42)
        memory.freeFrame(b)
        #expect(!memory.isAllocated(b))
        #expect(memory.read64(b + 0xFF8) == 0)
        let again = try #require(memory.allocateFrame())
        #expect(again == b)
        for offset in stride(from: UInt64(0), to: 4096, by: 8) { #expect(memory.read64(again + offset) == 0) }
        #expect(memory.allocatedFrameCount == 3)
    }
}
