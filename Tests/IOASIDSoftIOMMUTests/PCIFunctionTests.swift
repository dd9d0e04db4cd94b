import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import IOASIDStructures
import Synchronization
import Testing
@testable import IOASIDSoftIOMMU

private let rid = RequesterID(bus: 3, device: 0, function: 1)
private let ram: UInt64 = 0x8000_0000  // a RAM region outside the allocator window

private func pattern(_ count: Int, seed: UInt8 = 7) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) } }

/// A memory with 64 KiB of RAM at `ram`, a test IOMMU and a function on it.
private func rig(_ capabilities: PCIFunction.Capabilities, enable: Bool = true, atsAllowed: Bool = true)
    throws -> (PhysicalMemory, TestIOMMU, PCIFunction) {
    let memory = PhysicalMemory()
    _ = try memory.attachRAM(at: ram, length: 0x1_0000)
    let iommu = TestIOMMU(memory: memory, atsAllowed: atsAllowed)
    let device = PCIFunction(requesterID: rid, capabilities: capabilities, iommu: iommu)
    if enable { device.enableAll() }
    return (memory, iommu, device)
}

private extension DMAResult {
    var value: Value? { if case .completed(let v) = self { v } else { nil } }
    var pending: PendingDMA<Value>? { if case .waitingForPageResponse(let p) = self { p } else { nil } }
    var error: DMAError? { if case .failed(let e) = self { e } else { nil } }
}

@Suite struct PCIFunctionTests {
    @Test func requesterIDAndPASIDValues() {
        #expect(rid.rawValue == 0x0301 && rid.bus == 3 && rid.device == 0 && rid.function == 1)
        #expect(RequesterID(bus: 0xAB, device: 31, function: 7).description == "ab:1f.7")
        #expect(PASID(rawValue: 1 << 20) == nil && PASID(rawValue: 0xF_FFFF) == .max)
        #expect(PASID(255).fits(width: 8) && !PASID(256).fits(width: 8) && PASID(256).fits(width: 20))
    }

    @Test func dmaCrossingPagesLandsInScatteredPhysicalPages() throws {
        let (memory, iommu, device) = try rig(.init(pasidWidth: 20))
        // Three IOVA pages mapped to physical pages in reverse order.
        let iova: UInt64 = 0x4000_0000
        for i: UInt64 in 0..<3 { iommu.map(rid, pasid: 5, iova: iova + i * 4096, physical: ram + (2 - i) * 4096) }
        let data = pattern(10_000)
        #expect(device.write(pasid: 5, address: iova + 0x200, bytes: data).value != nil)
        #expect(try memory.read(count: 4096 - 0x200, at: ram + 2 * 4096 + 0x200) == Array(data[0..<(4096 - 0x200)]))
        #expect(try memory.read(count: 4096, at: ram + 4096) == Array(data[(4096 - 0x200)..<(8192 - 0x200)]))
        #expect(try memory.read(count: 10_000 - 8192 + 0x200, at: ram) == Array(data[(8192 - 0x200)...]))
        #expect(device.read(pasid: 5, address: iova + 0x200, count: 10_000).value == data)
        // No ATS: every 4 KiB piece went out untranslated.
        #expect(iommu.counts.untranslated == 6 && iommu.counts.ats == 0)
        // Another PASID, or none, does not see the mapping.
        #expect(device.read(pasid: 6, address: iova, count: 1).error == .fault(iommu.faults.last!))
        #expect(iommu.faults.last?.reason == .translation(stage: .first, level: 1) && iommu.faults.last?.pasid == 6)
        #expect(device.read(address: iova, count: 1).error != nil)
    }

    @Test func pasidsOutsideTheCapabilityWidthNeverLeaveTheDevice() throws {
        let (_, iommu, device) = try rig(.init(pasidWidth: 8))
        iommu.map(rid, pasid: 300, iova: 0, physical: ram)
        #expect(device.read(pasid: 300, address: 0, count: 4).error == .pasidOutOfRange(300))
        #expect(device.write(pasid: 256, address: 0, bytes: [1]).error == .pasidOutOfRange(256))
        #expect(device.read(pasid: 255, address: 0, count: 4).error != .pasidOutOfRange(255))
        #expect(device.read(pasid: 1, address: 0, count: 1, privileged: true).error == .unsupportedAccess)
        let plain = PCIFunction(requesterID: RequesterID(rawValue: 9), iommu: iommu)
        #expect(plain.read(pasid: 1, address: 0, count: 1).error == .pasidNotEnabled)
        #expect(iommu.counts.untranslated == 1)  // only the PASID-255 read reached the IOMMU
        let disabled = PCIFunction(requesterID: RequesterID(rawValue: 10), capabilities: .init(pasidWidth: 20), iommu: iommu)
        #expect(disabled.read(pasid: 1, address: 0, count: 1).error == .pasidNotEnabled)
    }

    @Test func atsCachesTranslationsAndInvalidationRemovesThem() throws {
        let (memory, iommu, device) = try rig(.init(pasidWidth: 20, ats: .deviceTLB))
        let atc = try #require(device.atc)
        iommu.map(rid, pasid: 1, iova: 0x10_0000, physical: ram + 0x3000, pages: 2)
        #expect(device.write(pasid: 1, address: 0x10_0FF0, bytes: pattern(32)).value != nil)
        #expect(iommu.counts.ats == 2 && iommu.counts.translated == 2 && iommu.counts.untranslated == 0)
        #expect(atc.count == 2)
        #expect(device.read(pasid: 1, address: 0x10_0FF0, count: 32).value == pattern(32))
        #expect(iommu.counts.ats == 2)  // served from the ATC
        #expect(atc.statistics.hits == 2)
        #expect(try memory.read(count: 32, at: ram + 0x3FF0) == pattern(32))

        // Unmapping one page sends an ATC invalidation; the device completes it with the tag.
        let completion = iommu.unmap(rid, pasid: 1, iova: 0x10_1000)
        #expect(completion == ATCInvalidationCompletion(requesterID: rid, tag: 3))
        #expect(atc.count == 1)
        #expect(device.read(pasid: 1, address: 0x10_0FF0, count: 32).error == .noTranslation(address: 0x10_1000))  // PRI is absent
        #expect(iommu.counts.ats == 3)

        // Explicit translation requests, and ATS disable flushing the ATC.
        #expect(device.requestTranslation(pasid: 1, address: 0x10_0000) ==
                .translated(Translation(inputBase: 0x10_0000, outputBase: ram + 0x3000, permissions: .readWrite)))
        var control = device.control
        control.ats = false
        device.control = control
        #expect(atc.count == 0)
        #expect(device.requestTranslation(pasid: 1, address: 0x10_0000) == .unsupportedRequest)
        #expect(device.read(pasid: 1, address: 0x10_0000, count: 4).value != nil)  // untranslated again
    }

    @Test func atsRefusedByTheIOMMUFailsTheDMA() throws {
        let (_, iommu, device) = try rig(.init(ats: .deviceTLB), atsAllowed: false)
        iommu.map(rid, pasid: nil, iova: 0, physical: ram)
        #expect(device.read(address: 0, count: 8).error == .translationRequestFailed(.unsupportedRequest))
    }

    @Test func pageRequestThenResponseThenRetry() throws {
        let (memory, iommu, device) = try rig(.init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 4))
        try memory.write(pattern(64, seed: 1), at: ram + 0x5000)
        let result = device.read(pasid: 7, address: 0x7000_0010, count: 64)
        let pending = try #require(result.pending)
        #expect(pending.address == 0x7000_0000)
        let request = try #require(iommu.pageRequests.last)
        #expect(request == PageRequest(requesterID: rid, pasid: 7, address: 0x7000_0000, access: .read,
                                       groupIndex: pending.groupIndex, lastInGroup: true))
        #expect(device.outstandingPageRequests == 1)
        // Before the response, resuming still waits.
        #expect(!device.isAnswered(pending))
        #expect(device.resume(pending).pending == pending)
        // The owner makes the page present and answers the group.
        iommu.map(rid, pasid: 7, iova: 0x7000_0000, physical: ram + 0x5000)
        iommu.respond(PageResponse(answering: request, code: .success))
        #expect(device.outstandingPageRequests == 0 && device.isAnswered(pending))
        #expect(device.resume(pending).value == Array(pattern(64, seed: 1)[16...] + [UInt8](repeating: 0, count: 16)))
    }

    @Test func writesResumeWhereTheyStopped() throws {
        let (memory, iommu, device) = try rig(.init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 4))
        iommu.map(rid, pasid: 2, iova: 0x1000, physical: ram)
        let data = pattern(6000)
        let first = try #require(device.write(pasid: 2, address: 0x1000, bytes: data).pending)
        #expect(first.address == 0x2000)
        #expect(try memory.read(count: 4096, at: ram) == Array(data[0..<4096]))  // the first page already moved
        iommu.map(rid, pasid: 2, iova: 0x2000, physical: ram + 0x8000)
        iommu.respond(PageResponse(requesterID: rid, pasid: 2, groupIndex: first.groupIndex, code: .success))
        #expect(device.resume(first).value != nil)
        #expect(try memory.read(count: 6000 - 4096, at: ram + 0x8000) == Array(data[4096...]))
        #expect(iommu.pageRequests.count == 1)
    }

    @Test func invalidRequestAndResponseFailure() throws {
        let (_, iommu, device) = try rig(.init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 4))
        let a = try #require(device.read(pasid: 1, address: 0x1000, count: 1).pending)
        iommu.respond(PageResponse(requesterID: rid, pasid: 1, groupIndex: a.groupIndex, code: .invalidRequest))
        #expect(device.resume(a).error == .pageRequestFailed(.invalidRequest))
        #expect(!device.priStatus.responseFailure)

        let b = try #require(device.write(pasid: 1, address: 0x1000, bytes: [1]).pending)
        iommu.respond(PageResponse(requesterID: rid, pasid: 1, groupIndex: b.groupIndex, code: .responseFailure))
        #expect(device.resume(b).error == .pageRequestFailed(.responseFailure))
        #expect(device.priStatus.responseFailure)
        #expect(device.read(pasid: 1, address: 0x1000, count: 1).error == .pageRequestsStopped)
        // Re-enabling PRI clears the stop; an unknown group sets Unexpected PRG Index.
        device.control.pri = false
        device.control.pri = true
        #expect(device.read(pasid: 1, address: 0x1000, count: 1).pending != nil)
        iommu.respond(PageResponse(requesterID: rid, groupIndex: 300, code: .success))
        #expect(device.priStatus.unexpectedResponse)
    }

    @Test func pageRequestGroupsAndTheOutstandingLimit() throws {
        let (_, iommu, device) = try rig(.init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 8), enable: false)
        device.control = .init(pasid: true, ats: true, pri: true, pageRequestAllocation: 3)
        let pages: [(address: UInt64, access: AccessPermissions)] = [(0x1000, .read), (0x2000, .write), (0x3000, [.read, .write])]
        let group = try device.requestPages(pasid: 4, pages).get()
        let sent = iommu.pageRequests
        #expect(sent.map(\.lastInGroup) == [false, false, true])
        #expect(sent.allSatisfy { $0.groupIndex == group && $0.pasid == 4 })
        #expect(sent.map(\.address) == [0x1000, 0x2000, 0x3000])
        #expect(device.outstandingPageRequests == 3)
        #expect(device.requestPages(pasid: 4, [(0x4000, .read)]) == .failure(.pageRequestLimit))
        #expect(device.read(pasid: 4, address: 0x9000, count: 1).error == .pageRequestLimit)
        iommu.respond(PageResponse(requesterID: rid, pasid: 4, groupIndex: group, code: .success))
        #expect(device.outstandingPageRequests == 0)
        let g2 = try device.requestPages(pasid: 4, [(0x4000, .read)]).get()
        #expect(g2 != group)
        #expect(device.requestPages(pasid: PASID(1 << 19), [(0, .read)]) == .success(g2 + 1))
    }

    @Test func asyncDMAWaitsForTheFaultOwnerAndRetries() async throws {
        let (memory, iommu, device) = try rig(.init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 2))
        let nextPhysical = Atomic<UInt64>(ram)
        // The fault owner runs elsewhere: it maps the page and answers the group.
        iommu.onPageRequest = { [unowned iommu] request in
            DispatchQueue.global().async {
                let physical = nextPhysical.wrappingAdd(0x1000, ordering: .relaxed).oldValue
                iommu.map(request.requesterID, pasid: request.pasid, iova: request.address, physical: physical)
                iommu.respond(PageResponse(answering: request, code: .success))
            }
        }
        let data = pattern(3 * 4096 + 100)
        try await device.writeWaitingForPages(pasid: 9, address: 0x5_0000_0F00, bytes: data)
        #expect(iommu.pageRequests.count == 4)  // the write touches four pages
        #expect(try await device.readWaitingForPages(pasid: 9, address: 0x5_0000_0F00, count: data.count) == data)
        #expect(try memory.read(count: 0x100, at: ram + 0xF00) == Array(data[0..<0x100]))
        // A refused page ends the async DMA with the error.
        iommu.onPageRequest = { [unowned iommu] request in
            DispatchQueue.global().async { iommu.respond(PageResponse(answering: request, code: .invalidRequest)) }
        }
        await #expect(throws: DMAError.pageRequestFailed(.invalidRequest)) {
            try await device.readWaitingForPages(pasid: 9, address: 0x9_0000_0000, count: 1)
        }
    }

    /// Devices DMA through their ATCs on several threads while the IOMMU remaps a page to a
    /// new physical page and invalidates. Once an invalidation has completed, no write may land
    /// in the old physical page any more.
    @Test func atcInvalidationWaitsForDMAInFlightUnderStress() throws {
        let (memory, iommu, device) = try rig(.init(pasidWidth: 20, ats: .deviceTLB))
        let iova: UInt64 = 0x6000_0000
        iommu.map(rid, pasid: 1, iova: iova, physical: ram)
        let stop = Atomic<Bool>(false)
        let late = Atomic<Int>(0)
        let writes = Atomic<Int>(0)
        onThreads(3) { worker in
            if worker == 0 {
                for round in 1...300 {
                    // Let the devices write a few times in every round.
                    let before = writes.load(ordering: .acquiring)
                    while writes.load(ordering: .acquiring) < before + 4 { sched_yield() }
                    let old = ram + UInt64((round - 1) % 16) * 0x1000
                    let new = ram + UInt64(round % 16) * 0x1000
                    try! memory.write([UInt8](repeating: 0, count: 4096), at: new)
                    iommu.unmap(rid, pasid: 1, iova: iova)  // completes after in-flight DMA drained
                    try! memory.write([UInt8](repeating: 0xEE, count: 8), at: old)  // poison the old page
                    iommu.map(rid, pasid: 1, iova: iova, physical: new)
                    // Writes started after the invalidation must not touch the old page.
                    for _ in 0..<20 { if try! memory.read(count: 8, at: old) != [UInt8](repeating: 0xEE, count: 8) { late.wrappingAdd(1, ordering: .relaxed) } }
                }
                stop.store(true, ordering: .releasing)
            } else {
                var i: UInt8 = 0
                while !stop.load(ordering: .acquiring) {
                    i &+= 1
                    _ = device.write(pasid: 1, address: iova, bytes: [UInt8](repeating: i | 1, count: 8))
                    writes.wrappingAdd(1, ordering: .releasing)
                }
            }
        }
        #expect(late.load(ordering: .relaxed) == 0)
        #expect(iommu.counts.ats > 0)
    }
}
