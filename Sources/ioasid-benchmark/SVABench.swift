// Section 9 of ioasid-benchmark: SVA on the VT-d driver (a modelled process shared with a
// PASID + ATS + PRI device through the IOASID layer).
//
//   - the I/O page fault round trip in-process: the device writes to a page the process has not
//     mapped → page request → the driver's page request service reports it to the core's fault
//     queue → the owner reads it, maps the page, answers → the device retries and completes.
//     With `.manual` delivery the benchmark thread runs every step (deterministic), each step
//     timed; with the interrupt thread the service runs on the driver's queue and the owner
//     waits for the fault queue's readiness callback (two thread hand-offs). Baselines in the
//     same runs: the same DMA to a mapped page with its translation in the device's ATC, and
//     with the translation not cached (the retry's share);
//   - SVA bind + unbind end to end (through `SVABindings`, and the core's `bindSVA` without the
//     layer), and a process's whole SVA life (create, bind with PASID allocation, exit), against
//     an attach + detach of a paging HWPT at a PASID of the same kind of device.

import IOASIDProcessMemory
import Dispatch
import Glibc
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSets
import IOASIDSoftDrivers
import IOASIDSoftIOMMU

private let svaVA: UInt64 = 0x7F00_0000_0000

/// A VT-d unit, a context enrolled in a set, a PASID + ATS + PRI device SVA-bound to a process
/// with a fault queue.
private struct SVARig {
    let driver: VTdDriver
    let context: Context
    let layer: IOASIDLayer
    let sva: SVABindings
    let device: VTdDevice
    let id: Device.ID
    let process: ModelledProcess
    let queue: FaultQueue
    let pasid: IOASIDSoftIOMMU.PASID

    init(delivery: VTdDriver.PageRequestDelivery, readiness: (@Sendable (Bool) -> Void)? = nil) {
        driver = try! VTdDriver(memory: VTdDriver.processMemory(), delivery: delivery)
        context = Context(memory: ProcessMemory.shared)
        layer = IOASIDLayer(allocator: try! PASIDAllocator())
        let set = try! layer.allocator.allocSet(owner: .process(pid: 1), quota: .limited(16))
        try! layer.enroll(context, in: set)
        sva = SVABindings(layer: layer)
        device = try! driver.addDevice(requesterID: RequesterID(bus: 0x50, device: 0, function: 0),
                                       capabilities: .init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 32))
        id = try! device.bind(to: context)
        process = try! ModelledProcess(pid: 1, memory: driver.unit.memory)
        queue = try! context.allocateFaultQueue(readinessChanged: readiness)
        pasid = IOASIDSoftIOMMU.PASID(try! sva.bind(process, device: id, in: context, faultQueue: queue.objectID))
        // A mapped neighbour keeps the page-table pages of svaVA alive between iterations, and is
        // the baselines' target.
        try! process.map(svaVA + 0x1000, length: 0x1000)
    }

    func close() {
        process.exit()
        context.close()
    }
}

func svaSection() {
    print("== 9. SVA on VT-d: the I/O page fault round trip in-process; bind + unbind end to end ==")
    let payload: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
    let iterations = quick ? 300 : 1000

    // The fault round trip, every step on this thread (manual page request delivery).
    let rig = SVARig(delivery: .manual)
    let stages = ["DMA write → page request sent", "page request service → fault queue", "owner reads the fault",
                  "owner maps the page", "owner answers (page response)", "device retries, completes"]
    var stageSamples = [[Double]](repeating: [], count: stages.count)
    var totals: [Double] = [], cached: [Double] = [], cold: [Double] = [], ratios: [Double] = []
    for rep in -2..<reps {
        var sums = [UInt64](repeating: 0, count: stages.count)
        var total: UInt64 = 0
        for _ in 0..<iterations {
            let t0 = nowNS()
            guard case .waitingForPageResponse(let pending) = rig.device.function.write(pasid: rig.pasid, address: svaVA,
                                                                                       bytes: payload) else {
                fail("expected a page request")
            }
            let t1 = nowNS()
            rig.driver.servicePageRequests()
            let t2 = nowNS()
            let faults = try! rig.context.readFaults(rig.queue, maxRecords: 4)
            let t3 = nowNS()
            try! rig.process.map(svaVA, length: 0x1000)
            let t4 = nowNS()
            try! rig.context.respond(rig.queue, cookie: faults[0].cookie, code: 0)
            let t5 = nowNS()
            guard case .completed = rig.device.function.resume(pending) else { fail("retry failed") }
            let t6 = nowNS()
            for (i, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5].enumerated() { sums[i] += d }
            total += t6 - t0
            try! rig.process.unmap(svaVA, length: 0x1000)   // untimed: the next iteration faults again
        }
        // Baselines, right after: the same DMA to a mapped page, translation cached / not cached.
        let b0 = nowNS()
        for _ in 0..<iterations {
            guard case .completed = rig.device.function.write(pasid: rig.pasid, address: svaVA + 0x1000, bytes: payload) else {
                fail("baseline DMA failed")
            }
        }
        let b1 = nowNS()
        var coldSum: UInt64 = 0
        for _ in 0..<iterations {
            try! rig.process.protect(svaVA + 0x1000, length: 0x1000, protection: .readWrite)   // untimed: drops the caches
            let c0 = nowNS()
            guard case .completed = rig.device.function.write(pasid: rig.pasid, address: svaVA + 0x1000, bytes: payload) else {
                fail("baseline DMA failed")
            }
            coldSum += nowNS() - c0
        }
        guard rep >= 0 else { continue }
        let n = Double(iterations)
        for i in 0..<stages.count { stageSamples[i].append(Double(sums[i]) / n) }
        totals.append(Double(total) / n)
        cached.append(Double(b1 - b0) / n)
        cold.append(Double(coldSum) / n)
        ratios.append(Double(total) / Double(b1 - b0))
    }
    rig.close()
    let total = Stats(totals), hit = Stats(cached), miss = Stats(cold), ratio = Stats(ratios)
    var rows: [[String]] = stages.enumerated().map { i, name in
        let s = Stats(stageSamples[i])
        return ["  " + name, fmt(s.median), "\(fmt(s.min))..\(fmt(s.max))", fmt(s.median / hit.median, 2)]
    }
    rows.insert(["fault round trip (manual delivery), of which:", fmt(total.median), "\(fmt(total.min))..\(fmt(total.max))",
                 fmt(ratio.median, 2)], at: 0)
    rows.append(["(baseline) same DMA, page mapped, translation in the ATC", fmt(hit.median), "\(fmt(hit.min))..\(fmt(hit.max))", "1.00"])
    rows.append(["(baseline) same DMA, page mapped, caches invalidated", fmt(miss.median), "\(fmt(miss.min))..\(fmt(miss.max))",
                 fmt(miss.median / hit.median, 2)])

    // The same round trip with the driver's page request thread and a waiting owner.
    let ready = DispatchSemaphore(value: 0)
    let threaded = SVARig(delivery: .interruptThread, readiness: { readable in if readable { ready.signal() } })
    var tSamples: [Double] = [], handoffSamples: [Double] = []
    let handoffQueue = DispatchQueue(label: "ioasid.bench.handoff")
    for rep in -2..<reps {
        var sum: UInt64 = 0
        for _ in 0..<(iterations / 2) {
            let t0 = nowNS()
            guard case .waitingForPageResponse(let pending) = threaded.device.function.write(pasid: threaded.pasid, address: svaVA,
                                                                                            bytes: payload) else {
                fail("expected a page request")
            }
            ready.wait()
            let faults = try! threaded.context.readFaults(threaded.queue, maxRecords: 4)
            try! threaded.process.map(svaVA, length: 0x1000)
            try! threaded.context.respond(threaded.queue, cookie: faults[0].cookie, code: 0)
            guard case .completed = threaded.device.function.resume(pending) else { fail("retry failed") }
            sum += nowNS() - t0
            try! threaded.process.unmap(svaVA, length: 0x1000)
        }
        // Baseline: the two thread hand-offs alone (to a serial queue and back through a semaphore).
        let h0 = nowNS()
        for _ in 0..<(iterations / 2) {
            handoffQueue.async { ready.signal() }
            ready.wait()
        }
        let h1 = nowNS()
        if rep >= 0 {
            tSamples.append(Double(sum) / Double(iterations / 2))
            handoffSamples.append(Double(h1 - h0) / Double(iterations / 2))
        }
    }
    threaded.close()
    let t = Stats(tSamples)
    let h = Stats(handoffSamples)
    rows.append(["fault round trip, interrupt thread + waiting owner", fmt(t.median), "\(fmt(t.min))..\(fmt(t.max))",
                 fmt(t.median / hit.median, 2)])
    rows.append(["(baseline) the two thread hand-offs alone (queue.async + semaphore)", fmt(h.median), "\(fmt(h.min))..\(fmt(h.max))",
                 fmt(h.median / hit.median, 2)])
    printTable(["I/O page fault round trip (VT-d, PASID + ATS + PRI)", "ns", "spread", "x cached DMA"], rows)
    print("(8-byte DMA write; each stage timed inside the round trip; the unmap that re-arms the fault is untimed)")

    // Bind + unbind end to end.
    let b = SVARig(delivery: .manual)
    let plain = Context(memory: ProcessMemory.shared)
    let plainDevice = try! b.driver.addDevice(requesterID: RequesterID(bus: 0x51, device: 0, function: 0),
                                              capabilities: .init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 32))
    let plainID = try! plainDevice.bind(to: plain)
    let ioas = try! plain.allocateIOAS()
    let paging = try! plain.allocateHWPT(device: plainID, parent: ioas.object, flags: [.pasid], data: nil)
    let pasid = IOASIDCore.PASID(b.pasid.rawValue)
    try! b.sva.unbind(device: b.id, pasid: pasid, in: b.context)
    let bindIterations = quick ? 2000 : 5000
    let attach = { _ = try! plain.attach(plainID, pasid: 7, to: paging.object); try! plain.detach(plainID, pasid: 7) }
    let layerPair = paired(iterations: bindIterations, op: {
        _ = try! b.sva.bind(b.process, device: b.id, in: b.context)
        try! b.sva.unbind(device: b.id, pasid: pasid, in: b.context)
    }, baseline: attach)
    let corePair = paired(iterations: bindIterations, op: {
        _ = try! plain.bindSVA(plainID, pasid: 9, addressSpace: b.process)
        try! plain.unbindSVA(plainID, pasid: 9)
    }, baseline: attach)
    var pid: Int32 = 100
    let lifePair = paired(iterations: bindIterations / 4, op: {
        pid += 1
        let p = try! ModelledProcess(pid: pid, memory: b.driver.unit.memory)
        _ = try! b.sva.bind(p, device: b.id, in: b.context)
        p.exit()
    }, baseline: attach)
    b.close()
    plain.close()
    func row(_ name: String, _ r: (op: Stats, base: Stats, ratio: Stats)) -> [String] {
        [name, fmt(r.op.median), "\(fmt(r.op.min))..\(fmt(r.op.max))", fmt(r.base.median), fmt(r.ratio.median, 2)]
    }
    printTable(["SVA end to end (VT-d)", "ns", "spread", "baseline ns", "x baseline"], [
        row("SVABindings bind + unbind (process keeps its PASID)", layerPair),
        row("core bindSVA + unbindSVA (no layer)", corePair),
        row("process life: create + bind (PASID alloc) + exit", lifePair),
    ])
    print("(baseline, in the same runs: attach + detach of a paging HWPT at a PASID, kernel rules, same kind of device)")
    print("")
}
