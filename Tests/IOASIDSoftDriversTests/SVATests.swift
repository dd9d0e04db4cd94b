// SVA bind on the VT-d driver: a modelled process shared with devices through the IOASID layer.
import Foundation
import IOASIDCore
import IOASIDSets
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Synchronization
import Testing

/// A VT-d driver, a context enrolled in an IOASID set, and the SVA binds of that layer.
struct SVASetup {
    let x: VTdSetup
    let layer: IOASIDLayer
    let sva: SVABindings
    let set: IOASIDSetID
    let notes = SVANotes()

    init(quota: UInt32 = 8) throws {
        x = try VTdSetup()
        layer = IOASIDLayer(allocator: try PASIDAllocator())
        set = try layer.allocator.allocSet(owner: .none, quota: .limited(quota))
        try layer.enroll(x.context, in: set)
        sva = SVABindings(layer: layer)
        _ = try layer.allocator.registerNotifier(notes.handler)
    }

    var context: Context { x.context }
    var driver: VTdDriver { x.driver }

    func process(_ pid: Int32 = 4242, levels: Int = 4) throws -> ModelledProcess {
        try ModelledProcess(pid: pid, memory: x.driver.unit.memory, levels: levels)
    }

    /// A PASID-capable device with ATS (and PRI unless told otherwise).
    func device(_ n: UInt8 = 0, pri: Bool = true) throws -> (VTdDevice, Device.ID) {
        try x.device(RequesterID(bus: 0x30, device: n, function: 0), pri: pri)
    }
}

/// Notifications as "event:pasid:device".
final class SVANotes: Sendable {
    private let items = Mutex<[String]>([])
    var all: [String] { items.withLock { $0 } }
    var handler: @Sendable (PASIDNotification) -> Void {
        { n in self.items.withLock { $0.append("\(n.event):\(n.pasid)" + (n.device.map { ":\($0)" } ?? "")) } }
    }
    func clear() { items.withLock { $0.removeAll() } }
}

func svaWrite(_ d: VTdDevice, _ pasid: IOASIDCore.PASID, _ address: UInt64, _ bytes: [UInt8]) -> DMAResult<Void> {
    d.function.write(pasid: IOASIDSoftIOMMU.PASID(pasid), address: address, bytes: bytes)
}

func svaRead(_ d: VTdDevice, _ pasid: IOASIDCore.PASID, _ address: UInt64, count: Int) -> DMAResult<[UInt8]> {
    d.function.read(pasid: IOASIDSoftIOMMU.PASID(pasid), address: address, count: count)
}

extension DMAResult {
    var completed: Bool { completedValue != nil }
}

// These suites pin no user memory (process pages are frames of the modelled memory), so they
// need not hold the pin lock of TestMemory.swift.
@Suite struct SVATests {
    static let va: UInt64 = 0x7F00_0000_0000

    @Test func dmaFollowsTheProcessMappings() throws {
        let s = try SVASetup()
        let (d, id) = try s.device(pri: false)
        let p = try s.process()
        try p.map(Self.va, length: 0x2000)
        let pasid = try s.sva.bind(p, device: id, in: s.context)
        #expect(pasid == 1 && s.sva.pasid(of: p) == 1)
        // The PASID entry is first-stage only, pointing at the process's page table.
        let e = try #require(s.driver.tables.pasidEntry(d.requesterID, pasid: pasid))
        #expect(e.present && e.pgtt == .firstStage && e.firstStageTable == p.pageTableRoot && e.firstStageLevels == 4)
        #expect(try s.context.sharedAddressSpace(id, pasid: pasid) === p)
        #expect(s.context.objects.contains { $0.kind == .hwptSVA })

        // Device writes land where the process reads; the process's writes are what the device reads.
        #expect(svaWrite(d, pasid, Self.va + 0xFFE, [1, 2, 3, 4]).completed)   // crosses into the second page
        #expect(try p.read(Self.va + 0xFFE, count: 4) == [1, 2, 3, 4])
        try p.write([9, 8, 7], at: Self.va + 0x1100)
        guard case .completed(let got) = svaRead(d, pasid, Self.va + 0x1100, count: 3) else { Issue.record("read failed"); return }
        #expect(got == [9, 8, 7])
        // The translation is cached (ATC and IOTLB): a second DMA does not walk.
        let walks = s.driver.unit.statistics.walks
        #expect(svaWrite(d, pasid, Self.va + 0x10, [5]).completed)
        #expect(s.driver.unit.statistics.walks == walks)

        // mprotect(PROT_READ): writes are refused from the moment it returns, reads still work.
        try p.protect(Self.va, length: 0x1000, protection: .read)
        #expect(svaWrite(d, pasid, Self.va + 0x10, [6]).failed)
        #expect(svaRead(d, pasid, Self.va + 0x10, count: 1).completed)
        #expect(try p.read(Self.va + 0x10, count: 1) == [5])
        // PROT_NONE: nothing; back to read-write: writes again.
        try p.protect(Self.va, length: 0x1000, protection: .none)
        #expect(svaRead(d, pasid, Self.va + 0x10, count: 1).failed)
        try p.protect(Self.va, length: 0x1000, protection: .readWrite)
        #expect(svaWrite(d, pasid, Self.va + 0x10, [7]).completed)
        #expect(try p.read(Self.va + 0x10, count: 1) == [7])

        // munmap: the device cannot reach the page once it returned; a new mmap is a new zeroed page.
        try p.unmap(Self.va, length: 0x1000)
        #expect(svaWrite(d, pasid, Self.va + 0x10, [8]).failed)
        #expect(svaWrite(d, pasid, Self.va + 0x1010, [8]).completed)     // the other page stays
        try p.map(Self.va, length: 0x1000)
        guard case .completed(let fresh) = svaRead(d, pasid, Self.va + 0x10, count: 1) else { Issue.record("read failed"); return }
        #expect(fresh == [0])
        // mprotect over a hole is ENOMEM, as mprotect.
        expectVTdErrno(12) { try p.protect(Self.va, length: 0x3000, protection: .read) }
        expectVTdErrno(17) { try p.map(Self.va, length: 0x1000) }
        p.exit()
    }

    /// A freed page is reused at once by the next mmap: a DMA through the old translation after
    /// munmap returned would land in the new owner's page. It never does, for either of two
    /// devices sharing the process (each with the translation in its ATC and the IOTLB).
    @Test func noDMAThroughAMappingAfterItsUnmapReturned() throws {
        let s = try SVASetup()
        let (a, aid) = try s.device(0, pri: false)
        let (b, bid) = try s.device(1, pri: false)
        let p = try s.process()
        try p.map(Self.va, length: 0x1000)
        try p.map(Self.va + 0x10_0000, length: 0x1000)   // keeps the page-table pages alive
        let pasid = try s.sva.bind(p, device: aid, in: s.context)
        #expect(try s.sva.bind(p, device: bid, in: s.context) == pasid)   // one PASID per process
        #expect(svaWrite(a, pasid, Self.va, [1]).completed)
        #expect(svaWrite(b, pasid, Self.va + 8, [1]).completed)
        let old = try #require(p.frame(of: Self.va))
        try p.unmap(Self.va, length: 0x1000)
        try p.map(Self.va + 0x2000, length: 0x1000)
        #expect(p.frame(of: Self.va + 0x2000) == old, "the frame was reused")
        #expect(svaWrite(a, pasid, Self.va, [0xAA]).failed)
        #expect(svaWrite(b, pasid, Self.va + 8, [0xBB]).failed)
        #expect(try p.read(Self.va + 0x2000, count: 16) == [UInt8](repeating: 0, count: 16))
        // The unit recorded the faults of the device without PRI... none are recoverable here.
        #expect(s.driver.unit.takeFaults().allSatisfy { $0.reason == .firstStageEntryNotPresent })
        p.exit()
    }

    @Test func pageFaultGoesToTheQueueAndTheRetrySucceeds() throws {
        let s = try SVASetup()
        let (d, id) = try s.device()
        let p = try s.process()
        let queue = try s.context.allocateFaultQueue()
        let pasid = try s.sva.bind(p, device: id, in: s.context, faultQueue: queue.objectID)
        // Nothing mapped: the device asks with a page request and waits.
        guard case .waitingForPageResponse(let pending) = svaWrite(d, pasid, Self.va + 0x24, [1, 2, 3]) else {
            Issue.record("expected a page request"); return
        }
        s.driver.servicePageRequests()
        let f = try #require(s.context.readFaults(queue, maxRecords: 4).first)
        #expect(f.deviceID == id.rawValue && f.pasid == pasid && f.address == Self.va)
        #expect(f.flags == PageFaultRecord.pasidValid | PageFaultRecord.lastPage && f.permissions == VTdUAPI.faultPermWrite)
        // The owner maps the page (handle_mm_fault's job here) and answers; the retry lands.
        try p.map(Self.va, length: 0x1000)
        try s.context.respond(queue, cookie: f.cookie, code: 0)
        guard case .completed = d.function.resume(pending) else { Issue.record("retry failed"); return }
        #expect(try p.read(Self.va + 0x24, count: 3) == [1, 2, 3])
        // A write to a read-only page asks too; after mprotect the retry succeeds.
        try p.protect(Self.va, length: 0x1000, protection: .read)
        guard case .waitingForPageResponse(let p2) = svaWrite(d, pasid, Self.va, [4]) else { Issue.record("expected a page request"); return }
        s.driver.servicePageRequests()
        let f2 = try #require(s.context.readFaults(queue, maxRecords: 4).first)
        try p.protect(Self.va, length: 0x1000, protection: .readWrite)
        try s.context.respond(queue, cookie: f2.cookie, code: 0)
        guard case .completed = d.function.resume(p2) else { Issue.record("retry failed"); return }
        #expect(try p.read(Self.va, count: 1) == [4])
        // An Invalid response fails the DMA.
        guard case .waitingForPageResponse(let p3) = svaRead(d, pasid, Self.va + 0x5000, count: 1) else { Issue.record("expected a page request"); return }
        s.driver.servicePageRequests()
        let f3 = try #require(s.context.readFaults(queue, maxRecords: 4).first)
        try s.context.respond(queue, cookie: f3.cookie, code: 1)
        guard case .failed(.pageRequestFailed(.invalidRequest)) = d.function.resume(p3) else { Issue.record("expected Invalid"); return }
        // Without a fault queue the driver answers Invalid itself.
        let (e, eid) = try s.device(1)
        _ = try s.sva.bind(p, device: eid, in: s.context)
        guard case .waitingForPageResponse(let p4) = svaWrite(e, pasid, Self.va + 0x9000, [1]) else { Issue.record("expected a page request"); return }
        s.driver.servicePageRequests()
        guard case .failed(.pageRequestFailed(.invalidRequest)) = e.function.resume(p4) else { Issue.record("expected Invalid"); return }
        p.exit()
    }

    @Test func exitEndsEveryBind() throws {
        let s = try SVASetup()
        let (d, id) = try s.device()
        let (e, eid) = try s.device(1, pri: false)
        let p = try s.process()
        try p.map(Self.va, length: 0x1000)
        let queue = try s.context.allocateFaultQueue()
        let pasid = try s.sva.bind(p, device: id, in: s.context, faultQueue: queue.objectID)
        _ = try s.sva.bind(p, device: eid, in: s.context)
        #expect(s.notes.all == ["alloc:\(pasid)", "bind:\(pasid):\(id.rawValue)", "bind:\(pasid):\(eid.rawValue)"])
        #expect(svaWrite(e, pasid, Self.va, [1]).completed)
        // One page request read by the owner and waiting for its answer, one not yet serviced.
        guard case .waitingForPageResponse(let read) = svaWrite(d, pasid, Self.va + 0x1000, [1]) else { Issue.record("expected a page request"); return }
        s.driver.servicePageRequests()
        #expect(try s.context.readFaults(queue, maxRecords: 4).count == 1)
        guard case .waitingForPageResponse(let queued) = svaWrite(d, pasid, Self.va + 0x2000, [1]) else { Issue.record("expected a page request"); return }
        _ = s.driver.unit.takeFaults()
        s.notes.clear()

        p.exit()
        // The binds are gone: entries cleared, DMA blocked and recorded, no SVA HWPT left.
        #expect(s.driver.tables.pasidEntry(d.requesterID, pasid: pasid)?.present != true)
        #expect(s.driver.tables.pasidEntry(e.requesterID, pasid: pasid)?.present != true)
        #expect(svaWrite(e, pasid, Self.va, [2]).failed)
        let faults = s.driver.unit.takeFaults()
        #expect(faults.contains { $0.sourceID == e.requesterID.rawValue && $0.pasid == pasid && $0.reason == .pasidEntryNotPresent })
        #expect(!s.context.objects.contains { $0.kind == .hwptSVA })
        #expect(try s.context.attachedPASIDs(id).isEmpty && s.context.attachedPASIDs(eid).isEmpty)
        // The page request the owner had read was answered Invalid; the queued one is answered when serviced.
        guard case .failed(.pageRequestFailed(.invalidRequest)) = d.function.resume(read) else { Issue.record("expected Invalid"); return }
        s.driver.servicePageRequests()
        guard case .failed(.pageRequestFailed(.invalidRequest)) = d.function.resume(queued) else { Issue.record("expected Invalid"); return }
        #expect(try s.context.readFaults(queue, maxRecords: 4).isEmpty)
        // Notifications: unbind for each device, then the PASID is freed.
        #expect(Set(s.notes.all.prefix(2)) == ["unbind:\(pasid):\(id.rawValue)", "unbind:\(pasid):\(eid.rawValue)"])
        #expect(s.notes.all.last == "free:\(pasid)" && s.notes.all.count == 3)
        #expect(s.sva.pasid(of: p) == nil && s.sva.bonds(of: p).isEmpty)
        #expect(try s.layer.allocator.setInfo(s.set).count == 0)
        // The process is gone.
        expectVTdErrno(3) { try s.sva.bind(p, device: id, in: s.context) }
        expectVTdErrno(3) { try p.map(Self.va, length: 0x1000) }
        expectVTdErrno(3) { try p.read(Self.va, count: 1) }
    }

    @Test func unbindKeepsThePASIDUntilExit() throws {
        let s = try SVASetup()
        let (d, id) = try s.device(pri: false)
        let p = try s.process()
        try p.map(Self.va, length: 0x1000)
        let pasid = try s.sva.bind(p, device: id, in: s.context)
        try s.sva.unbind(device: id, pasid: pasid, in: s.context)
        #expect(svaWrite(d, pasid, Self.va, [1]).failed)
        #expect(s.sva.pasid(of: p) == pasid)
        #expect(s.notes.all == ["alloc:\(pasid)", "bind:\(pasid):\(id.rawValue)", "unbind:\(pasid):\(id.rawValue)"])
        expectVTdErrno(2) { try s.sva.unbind(device: id, pasid: pasid, in: s.context) }
        #expect(try s.sva.bind(p, device: id, in: s.context) == pasid)
        #expect(svaWrite(d, pasid, Self.va, [1]).completed)
        // The set frees the process's PASID: the bind ends with it, the next bind gets a new one.
        try s.layer.freePASID(pasid, for: s.context)
        #expect(svaWrite(d, pasid, Self.va, [1]).failed)
        #expect(s.sva.pasid(of: p) == nil)
        let again = try s.sva.bind(p, device: id, in: s.context)
        #expect(svaWrite(d, again, Self.va, [1]).completed)
        p.exit()
        #expect(try s.layer.allocator.setInfo(s.set).count == 0)
    }

    @Test func errors() throws {
        let s = try SVASetup(quota: 2)
        let (d, id) = try s.device()
        let p = try s.process()
        // A context that acts for no set cannot bind through the layer.
        let other = Context(memory: s.context.memory)
        let od = try s.driver.addDevice(requesterID: RequesterID(bus: 0x31, device: 0, function: 0),
                                        capabilities: .init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 8))
        let oid = try od.bind(to: other)
        expectVTdErrno(2) { try s.sva.bind(p, device: oid, in: other) }
        // A named PASID must be the set's: not allocated ENOENT, another set's EPERM.
        expectVTdErrno(2) { try s.sva.bind(p, device: id, in: s.context, pasid: 77) }
        let set2 = try s.layer.allocator.allocSet(owner: .none, quota: .limited(2))
        try s.layer.enroll(other, in: set2)
        let theirs = try s.layer.allocPASID(for: other)
        expectVTdErrno(1) { try s.sva.bind(p, device: id, in: s.context, pasid: theirs) }
        // Bind twice: EBUSY; another PASID than the process's: EINVAL.
        let pasid = try s.sva.bind(p, device: id, in: s.context)
        expectVTdErrno(16) { try s.sva.bind(p, device: id, in: s.context) }
        let mine = try s.layer.allocPASID(for: s.context)
        expectVTdErrno(22) { try s.sva.bind(p, device: id, in: s.context, pasid: mine) }
        // The process's PASID belongs to the first set: a context of another set is refused.
        expectVTdErrno(1) { try s.sva.bind(p, device: oid, in: other) }
        // Quota 2 used up (the process's PASID and `mine`): a second process cannot get one.
        let q = try s.process(4243)
        let (d2, id2) = try s.device(2)
        expectVTdErrno(28) { try s.sva.bind(q, device: id2, in: s.context) }
        // ... but it may take a PASID of the set the caller names; that PASID is now q's.
        #expect(try s.sva.bind(q, device: id2, in: s.context, pasid: mine) == mine)
        expectVTdErrno(17) { try s.sva.bind(try s.process(4244), device: id, in: s.context, pasid: mine) }
        // Devices: without a PASID capability, without ATS: EINVAL.
        let (_, plain) = try s.x.device(RequesterID(bus: 0x32, device: 0, function: 0), pasid: false, ats: false)
        expectVTdErrno(22) { try s.sva.bind(q, device: plain, in: s.context) }
        let (_, noATS) = try s.x.device(RequesterID(bus: 0x32, device: 1, function: 0), ats: false)
        expectVTdErrno(22) { try s.sva.bind(q, device: noATS, in: s.context) }
        // A missing fault queue: ENOENT.
        let (_, id3) = try s.device(3)
        expectVTdErrno(2) { try s.sva.bind(q, device: id3, in: s.context, faultQueue: ObjectID(999)) }
        // The SVA HWPT is the bind's own: no attach elsewhere, no destroy, no replace over it.
        let hwpt = try #require(try s.context.attachedHWPT(id, pasid: pasid))
        expectVTdErrno(22) { try s.context.attach(id3, pasid: 5, to: hwpt.object) }
        expectVTdErrno(16) { try s.context.destroy(hwpt.object) }
        let ioas = try s.context.allocateIOAS()
        let paging = try s.context.allocateHWPT(device: id, parent: ioas.object, flags: [.pasid], data: nil)
        expectVTdErrno(16) { try s.context.replace(id, pasid: pasid, with: paging.object) }
        // Core: PASID 0, and a PASID the device cannot carry.
        let context = Context(memory: s.context.memory)
        let cd = try s.driver.addDevice(requesterID: RequesterID(bus: 0x33, device: 0, function: 0),
                                        capabilities: .init(pasidWidth: 4, ats: .deviceTLB))
        let cid = try cd.bind(to: context)
        expectVTdErrno(22) { try context.bindSVA(cid, pasid: 0, addressSpace: p) }
        expectVTdErrno(22) { try context.bindSVA(cid, pasid: 16, addressSpace: p) }
        // Without the layer the core binds any PASID within the width (the kernel's rule).
        _ = try context.bindSVA(cid, pasid: 3, addressSpace: p)
        // An exited process: ESRCH.
        let r = try s.process(4245)
        r.exit()
        expectVTdErrno(3) { try context.bindSVA(cid, pasid: 4, addressSpace: r) }
        expectVTdErrno(3) { try s.sva.bind(r, device: id3, in: s.context) }
        withExtendedLifetime((d, d2)) {}
        p.exit(); q.exit()
        // Without the layer nobody unbinds at exit (as in the kernel, the driver's handle stays until
        // it unbinds), but the driver tore the PASID entry down: DMA there is blocked.
        #expect(try context.attachedPASIDs(cid) == [3])
        #expect(s.driver.tables.pasidEntry(cd.requesterID, pasid: 3)?.present != true)
        try context.unbindSVA(cid, pasid: 3)
        context.close()
    }

    @Test func fiveLevelProcess() throws {
        let s = try SVASetup()
        let (d, id) = try s.device(pri: false)
        let p = try s.process(levels: 5)
        let high: UInt64 = 0x00FF_0000_0000_0000 >> 1     // above 2^48: needs 5-level paging
        try p.map(high, length: 0x1000)
        let pasid = try s.sva.bind(p, device: id, in: s.context)
        #expect(s.driver.tables.pasidEntry(d.requesterID, pasid: pasid)?.firstStageLevels == 5)
        #expect(svaWrite(d, pasid, high + 4, [3]).completed)
        #expect(try p.read(high + 4, count: 1) == [3])
        p.exit()
    }
}

/// Concurrency (selected by scripts/tsan.sh through "Stress"): devices write while the process
/// unmaps. The owner maps the page, unmaps it, maps a victim page that receives the freed frame,
/// and checks the victim stays untouched while the DMA threads keep writing to the old address.
@Suite struct SVAStressTests {
    @Test func noDMAAfterMunmapStress() throws {
        let s = try SVASetup()
        let (a, aid) = try s.device(0, pri: false)
        let (b, bid) = try s.device(1, pri: false)
        let p = try s.process()
        let va = SVATests.va, victim = SVATests.va + 0x1000
        try p.map(va + 0x10_0000, length: 0x1000)    // keeps the page-table pages alive
        let pasid = try s.sva.bind(p, device: aid, in: s.context)
        _ = try s.sva.bind(p, device: bid, in: s.context)
        let stop = Atomic<Bool>(false)
        let landed = Atomic<Int>(0)
        let finished = DispatchSemaphore(value: 0)
        for d in [a, b] {
            Thread {
                var i: UInt64 = 0
                while !stop.load(ordering: .relaxed) {
                    if svaWrite(d, pasid, va + (i % 512) * 8, [0xEE]).completed { landed.add(1, ordering: .relaxed) }
                    i += 1
                }
                finished.signal()
            }.start()
        }
        var violations = 0
        for _ in 0..<60 {
            try p.map(va, length: 0x1000)
            Thread.sleep(forTimeInterval: 0.0005)
            try p.unmap(va, length: 0x1000)
            try p.map(victim, length: 0x1000)       // the freed frame, reused at once
            Thread.sleep(forTimeInterval: 0.0003)
            if try p.read(victim, count: 4096).contains(where: { $0 != 0 }) { violations += 1 }
            try p.unmap(victim, length: 0x1000)
        }
        stop.store(true, ordering: .relaxed)
        finished.wait()
        finished.wait()
        #expect(violations == 0)
        #expect(landed.load(ordering: .relaxed) > 0)
        p.exit()
    }
}
