// The allocation-free bulk DMA paths of PCIFunction: read into / write from the caller's
// buffers and the memory-to-memory copy of DMA engines.
#if canImport(Glibc)
import Glibc
#endif
import IOASIDStructures
import Synchronization
import Testing
@testable import IOASIDSoftIOMMU

private let rid = RequesterID(bus: 3, device: 1, function: 0)
private let ram: UInt64 = 0x8000_0000

private func pattern(_ count: Int, seed: Int = 7) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) } }

private func rig(_ capabilities: PCIFunction.Capabilities = .init(pasidWidth: 20)) throws -> (PhysicalMemory, TestIOMMU, PCIFunction) {
    let memory = PhysicalMemory()
    _ = try memory.attachRAM(at: ram, length: 0x4_0000)
    let iommu = TestIOMMU(memory: memory)
    let device = PCIFunction(requesterID: rid, capabilities: capabilities, iommu: iommu)
    device.enableAll()
    return (memory, iommu, device)
}

private extension Result where Success == Void {
    var error: Failure? { if case .failure(let e) = self { e } else { nil } }
    var succeeded: Bool { if case .success = self { true } else { false } }
}

@Suite struct PCIFunctionBulkTests {
    /// A copy between IOVA ranges whose pages are scattered (in reverse order) and whose offsets
    /// in the page differ: every byte lands, each page pair is translated once per stretch.
    @Test func copyMovesBetweenScatteredPagesWithDifferentOffsets() throws {
        let (memory, iommu, device) = try rig()
        let (src, dst): (UInt64, UInt64) = (0x10_0000, 0x20_0000)
        for i: UInt64 in 0..<4 {
            iommu.map(rid, pasid: 3, iova: src + i * 4096, physical: ram + (3 - i) * 4096)
            iommu.map(rid, pasid: 3, iova: dst + i * 4096, physical: ram + 0x1_0000 + (3 - i) * 4096)
        }
        let data = pattern(3 * 4096)
        for i in 0..<3 { try memory.write(Array(data[(i * 4096)..<((i + 1) * 4096)]), at: ram + UInt64(3 - i) * 4096) }
        // Source from offset 0x100, destination at offset 0x880: stretches end at either boundary.
        let count = 2 * 4096 + 0x300
        #expect(device.copy(pasid: 3, from: src + 0x100, to: dst + 0x880, count: count).succeeded)
        var back = [UInt8](repeating: 0, count: count)
        #expect(back.withUnsafeMutableBytes { device.read(pasid: 3, address: dst + 0x880, into: $0) }.succeeded)
        #expect(back == Array(data[0x100..<(0x100 + count)]))
        // One burst of 3 source pages and one of 3 destination pages (plus 3 for the read back).
        #expect(iommu.counts.untranslated == 3 + 3 + 3)
    }

    @Test func readAndWriteFaultsSayWhichSide() throws {
        let (memory, iommu, device) = try rig()
        iommu.map(rid, pasid: nil, iova: 0x1000, physical: ram, pages: 2)
        iommu.map(rid, pasid: nil, iova: 0x8000, physical: ram + 0x8000, pages: 1)
        iommu.map(rid, pasid: nil, iova: 0x1_0000, physical: ram + 0x1_0000, pages: 3)
        try memory.write(pattern(8192), at: ram)
        // The destination's second page is not mapped: the first page moved, then a write fault.
        let write = device.copy(from: 0x1000, to: 0x8000, count: 8192)
        #expect(write.error == (.write(.fault(iommu.faults.last!))))
        #expect(iommu.faults.last?.address == 0x9000 && iommu.faults.last?.access == .write)
        #expect(try memory.read(count: 4096, at: ram + 0x8000) == Array(pattern(8192)[0..<4096]))
        // The source's third page is not mapped.
        let read = device.copy(from: 0x1800, to: 0x1_0000, count: 8192)
        #expect(read.error == (.read(.fault(iommu.faults.last!))))
        #expect(iommu.faults.last?.address == 0x3000 && iommu.faults.last?.access == .read)
        // A PASID the capability cannot carry never leaves the device.
        let narrow = PCIFunction(requesterID: RequesterID(rawValue: 77), capabilities: .init(pasidWidth: 4), iommu: iommu)
        narrow.enableAll()
        #expect(narrow.copy(pasid: 16, from: 0, to: 0, count: 1).error == (.read(.pasidOutOfRange(16))))
        // Bulk read and write fail the same way.
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(buffer.withUnsafeMutableBytes { device.read(address: 0x4000, into: $0) }.error == (.fault(iommu.faults.last!)))
        #expect(buffer.withUnsafeBytes { device.write(address: 0x2FF8, from: $0) }.error == (.fault(iommu.faults.last!)))
        #expect(try memory.read(count: 8, at: ram + 0x1FF8) == buffer[0..<8].map { $0 }, "the mapped half landed")
    }

    /// With ATS the copy goes through the ATC; a page only a page request could make accessible
    /// fails the copy (the bulk paths send no page requests).
    @Test func atsTranslationsAreCachedAndNoPageRequestIsSent() throws {
        let (memory, iommu, device) = try rig(.init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 8))
        iommu.map(rid, pasid: 1, iova: 0x4_0000, physical: ram, pages: 2)
        try memory.write(pattern(64), at: ram)
        #expect(device.copy(pasid: 1, from: 0x4_0000, to: 0x4_1000, count: 64).succeeded)
        #expect(device.copy(pasid: 1, from: 0x4_0000, to: 0x4_1000, count: 64).succeeded)
        #expect(iommu.counts.ats == 2 && iommu.counts.translated == 4 && iommu.counts.untranslated == 0)
        #expect(try memory.read(count: 64, at: ram + 0x1000) == pattern(64))
        iommu.unmap(rid, pasid: 1, iova: 0x4_1000)
        #expect(device.copy(pasid: 1, from: 0x4_0000, to: 0x4_1000, count: 64).error == (.write(.noTranslation(address: 0x4_1000))))
        #expect(iommu.pageRequests.isEmpty && device.outstandingPageRequests == 0)
    }

    /// The bulk copy keeps ATC invalidation exact: once an invalidation has completed, no copy
    /// lands in the page the removed translation pointed to.
    @Test func atcInvalidationWaitsForCopiesInFlight() throws {
        let (memory, iommu, device) = try rig(.init(pasidWidth: 20, ats: .deviceTLB))
        let iova: UInt64 = 0x6000_0000, source: UInt64 = 0x7000_0000
        iommu.map(rid, pasid: 1, iova: iova, physical: ram)
        iommu.map(rid, pasid: 1, iova: source, physical: ram + 0x3_0000)
        try memory.write([UInt8](repeating: 0x5A, count: 4096), at: ram + 0x3_0000)
        let stop = Atomic<Bool>(false), late = Atomic<Int>(0), copies = Atomic<Int>(0)
        onThreads(3) { worker in
            if worker == 0 {
                for round in 1...300 {
                    let before = copies.load(ordering: .acquiring)
                    while copies.load(ordering: .acquiring) < before + 4 { sched_yield() }
                    let old = ram + UInt64((round - 1) % 16) * 0x1000
                    let new = ram + UInt64(round % 16) * 0x1000
                    iommu.unmap(rid, pasid: 1, iova: iova)
                    try! memory.write([UInt8](repeating: 0xEE, count: 4096), at: old)
                    iommu.map(rid, pasid: 1, iova: iova, physical: new)
                    for _ in 0..<20 where try! memory.read(count: 4096, at: old).contains(0x5A) { late.wrappingAdd(1, ordering: .relaxed) }
                }
                stop.store(true, ordering: .releasing)
            } else {
                while !stop.load(ordering: .acquiring) {
                    _ = device.copy(pasid: 1, from: source, to: iova, count: 4096)
                    copies.wrappingAdd(1, ordering: .releasing)
                }
            }
        }
        #expect(late.load(ordering: .relaxed) == 0)
    }

    @Test func bulkPathsAllocateNothing() throws {
        let (memory, iommu, device) = try rig(.init(pasidWidth: 20, ats: .deviceTLB))
        iommu.map(rid, pasid: nil, iova: 0, physical: ram, pages: 32)
        try memory.write(pattern(65536), at: ram)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        // Without ATS the copy goes in bursts; with it, page by page through the ATC.
        let plain = PCIFunction(requesterID: RequesterID(rawValue: 0x99), iommu: iommu)
        iommu.map(plain.requesterID, pasid: nil, iova: 0, physical: ram, pages: 32)
        var failures = 0
        func round() {
            for _ in 0..<20 {
                if case .failure = device.copy(from: 0, to: 0x1_0000, count: 65536) { failures += 1 }
                if case .failure = plain.copy(from: 0x10, to: 0x1_0000, count: 65536 - 0x10) { failures += 1 }
                if case .failure = device.read(address: 0x100, into: buffer) { failures += 1 }
                if case .failure = device.write(address: 0x1_0100, from: UnsafeRawBufferPointer(buffer)) { failures += 1 }
            }
        }
        round()
        if let fewest = fewestMallocs(of: round) { #expect(fewest == 0, "allocations in 80 bulk DMAs") }
        #expect(failures == 0)
        #expect(try memory.read(count: 65536 - 0x10, at: ram + 0x1_0000).suffix(0x1000) == pattern(65536).suffix(0x1000))
    }
}
