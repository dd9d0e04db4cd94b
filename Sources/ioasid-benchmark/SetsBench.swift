// Section 6: the IOASID layer — PASID alloc+free with many PASIDs outstanding, and a PASID's
// way to a device end to end (alloc, attach, detach, free) against the same attach without the layer.
import IOASIDProcessMemory
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSets
import IOASIDTestDriver

func setsBenchmark() {
    print("== 6. IOASID sets: PASID alloc+free with N outstanding; a PASID to a device end to end ==")
    let allocator = try! PASIDAllocator()
    let set = try! allocator.allocSet(owner: .none, quota: .unlimited)
    var rows: [[String]] = []
    var first: Double = .nan
    var outstanding = 0
    for target in [1, 10_000, 1_000_000] {
        while outstanding < target { _ = try! allocator.alloc(in: set); outstanding += 1 }
        // Each pair allocates the lowest free PASID (just above the outstanding block) and frees it.
        let iterations = quick ? 100_000 : 300_000
        var samples: [Double] = []
        for rep in -2..<reps {
            let t0 = nowNS()
            for _ in 0..<iterations {
                let p = try! allocator.alloc(in: set)
                try! allocator.free(p, in: set)
            }
            if rep >= 0 { samples.append(Double(nowNS() - t0) / Double(iterations)) }
        }
        let s = Stats(samples)
        if first.isNaN { first = s.median }
        rows.append([String(target), fmt(s.median), "\(fmt(s.min))..\(fmt(s.max))", fmt(1e9 / s.median / 1e6, 2),
                     fmt(s.median / first, 2)])
    }
    printTable(["PASIDs outstanding", "ns per alloc+free", "spread", "M pairs/s", "x (1 outstanding)"], rows)
    print("(20-bit PASIDs, one unlimited set; lowest-free search in a bitmap of bitmaps: 4 levels of 64)")

    // End to end on a mock PASID-capable device: the same attach and detach with and without the layer.
    /// A context with a PASID-capable mock device whose RID holds a PASID-compatible HWPT.
    func pasidReadyDevice() -> (Context, Device.ID, HWPT.ID) {
        let context = Context(memory: ProcessMemory.shared)
        let driver = TestDriver(context: context)
        let ioas = try! context.allocateIOAS()
        let (handle, _, device) = try! driver.mockDomain(ioas.object, flags: Mock.devicePASID)
        let hwpt = try! context.allocateHWPT(device: device, parent: ioas.object, flags: [.pasid], data: nil)
        _ = try! driver.mockDomainReplace(handle, with: hwpt.object)
        return (context, device, hwpt)
    }
    let (context, device, hwpt) = pasidReadyDevice()
    let (plain, plainDevice, plainHWPT) = pasidReadyDevice()

    let layer = IOASIDLayer(allocator: try! PASIDAllocator())
    let vm = try! layer.allocator.allocSet(owner: .vm(id: 1), quota: .limited(64))
    try! layer.enroll(context, in: vm)
    let e2e = paired(iterations: quick ? 20_000 : 50_000, op: {
        let p = try! layer.allocPASID(for: context)
        _ = try! context.attach(device, pasid: p, to: hwpt.object)
        try! context.detach(device, pasid: p)
        try! layer.freePASID(p, for: context)
    }, baseline: {
        _ = try! plain.attach(plainDevice, pasid: 1, to: plainHWPT.object)
        try! plain.detach(plainDevice, pasid: 1)
    })
    printTable(["end to end (mock device)", "ns", "spread", "x baseline"], [
        ["layer: alloc + attach + detach + free", fmt(e2e.op.median), "\(fmt(e2e.op.min))..\(fmt(e2e.op.max))", fmt(e2e.ratio.median, 2)],
        ["(baseline) kernel rules: attach + detach", fmt(e2e.base.median), "\(fmt(e2e.base.min))..\(fmt(e2e.base.max))", "1.00"],
    ])
    context.close()
    plain.close()
    print("")
}
