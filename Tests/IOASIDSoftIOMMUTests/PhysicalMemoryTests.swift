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

#if canImport(Glibc)
import Glibc
#endif
import IOASIDStructures
import Synchronization

@Suite struct RAMRegionTests {
    private func bytes(_ n: Int, _ seed: Int = 0) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 * 7 + seed) } }

    @Test func anonymousRegionsReadZeroAndHoldBulkAndWordAccesses() throws {
        let memory = PhysicalMemory()
        let region = try memory.attachRAM(at: 0x4000_0000, length: 0x4000)
        #expect(region.backing == .anonymous && region.last == 0x4000_3FFF)
        #expect(memory.ramRegions == [region])
        #expect(try memory.read(count: 0x4000, at: 0x4000_0000) == [UInt8](repeating: 0, count: 0x4000))
        // Unaligned, crossing 4 KiB boundaries.
        let data = bytes(9000, 3)
        try memory.write(data, at: 0x4000_0FFD)
        #expect(try memory.read(count: 9000, at: 0x4000_0FFD) == data)
        #expect(try memory.read(count: 3, at: 0x4000_0FFA) == [0, 0, 0])
        // Words see the same bytes, little-endian.
        let word = memory.read64(0x4000_1000)
        #expect(word == (0..<8).reduce(UInt64(0)) { $0 | UInt64(data[3 + $1]) << (8 * UInt64($1)) })
        memory.write64(0x4000_0000, 0x0807_0605_0403_0201)
        #expect(try memory.read(count: 8, at: 0x4000_0000) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(memory.read8(0x4000_0003) == 4)
        #expect(memory.residentFrameCount == 0)  // regions are not counted
        try memory.detachRAM(region)
        #expect(memory.ramRegions.isEmpty)
        #expect(throws: PhysicalMemoryError.unbacked(address: 0x4000_0000)) { try memory.read(count: 1, at: 0x4000_0000) }
        #expect(throws: PhysicalMemoryError.noSuchRegion) { try memory.detachRAM(region) }
    }

    @Test func memfdRegionsShareTheirBytesThroughTheDescriptor() throws {
        let memory = PhysicalMemory()
        let region = try memory.attachRAM(at: 0x2_0000_0000_0000, length: 0x2000, backing: .memfd)
        guard case .memfd(let fd) = region.backing else { Issue.record("not a memfd"); return }
        try memory.write(bytes(100), at: 0x2_0000_0000_1000)
        let view = try #require(mmap(nil, 0x2000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
        #expect(view != MAP_FAILED)
        #expect(Array(UnsafeRawBufferPointer(start: view + 0x1000, count: 100)) == bytes(100))
        view.storeBytes(of: 0xAB, toByteOffset: 5, as: UInt8.self)
        #expect(memory.read8(0x2_0000_0000_0005) == 0xAB)
        munmap(view, 0x2000)
        try memory.detachRAM(region)
        #expect(fcntl(fd, F_GETFD) == -1)  // closed by detach
    }

    @Test func callerMemoryIsUsedInPlace() throws {
        let memory = PhysicalMemory()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 0x3000, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0x11)
        let region = try memory.attachRAM(at: 0x9000_0000, external: buffer)
        #expect(region.backing == .external)
        #expect(try memory.read(count: 2, at: 0x9000_2FFE) == [0x11, 0x11])
        try memory.write(bytes(16), at: 0x9000_1000)
        #expect(Array(buffer[0x1000..<0x1010]) == bytes(16))
        buffer[0x2000] = 0x5A
        #expect(memory.read8(0x9000_2000) == 0x5A)
        #expect(memory.compareExchange64(0x9000_2000, expected: 0x1111_1111_1111_115A, desired: 7) == (true, 0x1111_1111_1111_115A))
        #expect(buffer.load(fromByteOffset: 0x2000, as: UInt64.self) == 7)
        try memory.detachRAM(region)
        #expect(!memory.isBacked(0x9000_0000, count: 1))
    }

    @Test func bulkAccessesSpanAdjacentRAMAndFailWholeOnHoles() throws {
        let memory = PhysicalMemory(allocatorBase: 0x10_0000, allocatorLimit: 0x10_4000)
        // A region right after the allocator window, and another one after a one-page hole.
        _ = try memory.attachRAM(at: 0x10_4000, length: 0x1000)
        _ = try memory.attachRAM(at: 0x10_6000, length: 0x1000)
        let data = bytes(0x2000, 9)
        try memory.write(data, at: 0x10_3000)  // window + first region
        #expect(try memory.read(count: 0x2000, at: 0x10_3000) == data)
        #expect(memory.residentFrameCount == 1)  // the window frame written while not allocated
        #expect(memory.isBacked(0x10_0000, count: 0x5000) && !memory.isBacked(0x10_0000, count: 0x5001))
        // Into the hole: nothing is written, and the error names the first unbacked byte.
        #expect(throws: PhysicalMemoryError.unbacked(address: 0x10_5000)) { try memory.write(bytes(0x1800), at: 0x10_4800) }
        #expect(try memory.read(count: 0x800, at: 0x10_4800) == Array(data[0x1800...]))
        #expect(throws: PhysicalMemoryError.unbacked(address: 0x10_5000)) { try memory.read(count: 0x2000, at: 0x10_5000) }
        #expect(throws: PhysicalMemoryError.unbacked(address: UInt64.max)) { try memory.read(count: 2, at: UInt64.max) }
        // Loose words do not back bulk accesses.
        memory.write64(0x20_0000, 1)
        #expect(memory.read64(0x20_0000) == 1)
        #expect(throws: PhysicalMemoryError.unbacked(address: 0x20_0000)) { try memory.read(count: 8, at: 0x20_0000) }
    }

    @Test func placementErrors() throws {
        let memory = PhysicalMemory(allocatorBase: 0x10_0000, allocatorLimit: 0x20_0000)
        let r = try memory.attachRAM(at: 0x40_0000, length: 0x10_0000)
        #expect(throws: PhysicalMemoryError.misaligned) { try memory.attachRAM(at: 0x1800, length: 0x1000) }
        #expect(throws: PhysicalMemoryError.misaligned) { try memory.attachRAM(at: 0x1000, length: 0x1800) }
        #expect(throws: PhysicalMemoryError.invalidLength) { try memory.attachRAM(at: 0x1000, length: 0) }
        #expect(throws: PhysicalMemoryError.invalidLength) { try memory.attachRAM(at: UInt64.max - 0xFFF, length: 0x2000) }
        #expect(throws: PhysicalMemoryError.overlapsAllocatorWindow) { try memory.attachRAM(at: 0x1F_F000, length: 0x2000) }
        #expect(throws: PhysicalMemoryError.overlapsRegion(r)) { try memory.attachRAM(at: 0x4F_F000, length: 0x2000) }
        let unaligned = UnsafeMutableRawBufferPointer.allocate(byteCount: 0x1008, alignment: 8)
        defer { unaligned.deallocate() }
        #expect(throws: PhysicalMemoryError.misaligned) {
            try memory.attachRAM(at: 0x1000, external: UnsafeMutableRawBufferPointer(rebasing: unaligned[4..<0x1004]))
        }
        #expect(memory.ramRegions == [r])
    }

    @Test func atomicWordOperations() throws {
        let memory = PhysicalMemory()
        let frame = try #require(memory.allocateFrame())
        memory.write64(frame, 0b1010)
        #expect(memory.or64(frame, 0b0101) == 0b1010)
        #expect(memory.and64(frame, 0b0110) == 0b1111)
        #expect(memory.read64(frame) == 0b0110)
        #expect(memory.compareExchange64(frame, expected: 1, desired: 2) == (false, 0b0110))
        #expect(memory.compareExchange64(frame, expected: 0b0110, desired: 2) == (true, 0b0110))
        memory.write8(frame + 7, 0xFF)
        #expect(memory.read64(frame) == 0xFF00_0000_0000_0002)
        // Frames allocated, freed and written while free are counted as resident.
        #expect(memory.residentFrameCount == 1 && memory.allocatedFrameCount == 1)
        memory.write64(frame + 0x1000, 1)  // the next frame, not allocated
        #expect(memory.residentFrameCount == 2 && !memory.isAllocated(frame + 0x1000))
        let next = try #require(memory.allocateFrame())
        #expect(next == frame + 0x1000 && memory.read64(next) == 0)  // zeroed on allocation
        memory.freeFrame(frame)
        #expect(memory.residentFrameCount == 1 && memory.read64(frame) == 0)
    }

    /// DMA-like bulk copies on several threads while another thread changes page-table words
    /// and allocates and frees frames: every copy reads back what it wrote, every atomic update
    /// is kept. (scripts/tsan.sh runs the Stress tests under ThreadSanitizer.)
    @Test func bulkCopiesWhileTablesChangeUnderStress() throws {
        let memory = PhysicalMemory()
        _ = try memory.attachRAM(at: 0x8000_0000, length: 0x4_0000)
        let table = try #require(memory.allocateFrame())
        let failures = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let copies = Atomic<Int>(0)
        onThreads(4) { worker in
            switch worker {
            case 0:
                // A "walker" setting accessed bits concurrently with a "mapper" rewriting entries,
                // until the copiers have made 1000 copies.
                var i = 0
                while i < 20_000 || copies.load(ordering: .relaxed) < 1000 {
                    i += 1
                    let slot = table + UInt64(i % 511) * 8
                    memory.write64(slot, UInt64(i) << 12 | 1)
                    memory.or64(slot, 1 << 5)
                    if memory.read64(slot) != UInt64(i) << 12 | 1 | 1 << 5 { failures.wrappingAdd(1, ordering: .relaxed) }
                    if i % 64 == 0, let f = memory.allocateFrame() {
                        memory.write64(f, 42)
                        memory.freeFrame(f)
                    }
                }
                stop.store(true, ordering: .releasing)
            case 3:
                var bit: UInt64 = 0
                while !stop.load(ordering: .acquiring) {
                    memory.or64(table + 8 * 511, 1 << bit)
                    bit = (bit + 1) % 64
                }
            default:
                // Each copier owns half of the region; unaligned spans across page boundaries.
                var rng = SplitMix64(seed: UInt64(worker))
                let base: UInt64 = 0x8000_0000 + UInt64(worker - 1) * 0x2_0000
                while !stop.load(ordering: .acquiring) {
                    let n = Int.random(in: 1..<9000, using: &rng)
                    let at = base + UInt64.random(in: 0..<(0x2_0000 - 9000), using: &rng)
                    let data = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
                    try! memory.write(data, at: at)
                    if try! memory.read(count: n, at: at) != data { failures.wrappingAdd(1, ordering: .relaxed) }
                    copies.wrappingAdd(1, ordering: .relaxed)
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(memory.read64(table + 8 * 511) != 0)
        #expect(memory.allocatedFrameCount == 1)
    }
}
