// Section 3: map + unmap of 1 GiB with one mock domain: time per 4 KiB page, and what the mock
// domain's page table holds per GiB next to the floors of a radix page table.
import CIOASIDSys
import Glibc
import IOASIDCore

/// Section 3: 1 GiB of anonymous memory mapped and unmapped, against one syscall.
func gibMapSection() {
    print("== 3. map + unmap of 1 GiB (anonymous, 4 KiB pages) with one mock domain ==")
    print("first MAP: the span is not remembered (the kernel's pin check, madvise(MADV_POPULATE_WRITE), walks it);")
    print("MAP again: the span passed the check since the last change of the mappings (a probe touches each page)")
    do {
        let big = FastPath()
        let mem = anonymous(Int(oneGiB), populate: false)
        let pages = Double(oneGiB / pageSize)
        var mapT: [Double] = [], againT: [Double] = [], unmapT: [Double] = [], checkT: [Double] = [], base: [Double] = []
        for rep in -1..<reps {
            ioasid_sys_pinnable_forget_all()
            let t0 = nowNS()
            big.abi.map(big.ioas, address: mem, length: oneGiB)
            let t1 = nowNS()
            big.abi.unmap(big.ioas, length: oneGiB)
            let t2 = nowNS()
            big.abi.map(big.ioas, address: mem, length: oneGiB)
            let t3 = nowNS()
            big.abi.unmap(big.ioas, length: oneGiB)
            ioasid_sys_pinnable_forget_all()
            let t4 = nowNS()
            _ = ioasid_sys_check_range(UInt64(UInt(bitPattern: mem)), oneGiB, 1)
            let t5 = nowNS()
            for _ in 0..<1000 { oneSyscall() }
            let t6 = nowNS()
            guard rep >= 0 else { continue }
            mapT.append(Double(t1 - t0)); unmapT.append(Double(t2 - t1)); againT.append(Double(t3 - t2))
            checkT.append(Double(t5 - t4)); base.append(Double(t6 - t5) / 1000)
        }
        let m = Stats(mapT), a = Stats(againT), u = Stats(unmapT), c = Stats(checkT), b = Stats(base)
        let both = Stats(zip(mapT, unmapT).map { $0 + $1 })
        func row(_ name: String, _ s: Stats) -> [String] {
            [name, fmt(s.median / 1000), "\(fmt(s.min / 1000))..\(fmt(s.max / 1000))", fmt(s.median / pages, 3), fmt(s.median / b.median, 2)]
        }
        printTable(["1 GiB = 262144 pages", "µs total", "spread µs", "ns/page", "x syscall"], [
            row("IOAS_MAP, first", m),
            row("IOAS_UNMAP", u),
            row("MAP + UNMAP", both),
            row("IOAS_MAP again (span remembered)", a),
            row("(in the first MAP) pin check: madvise(MADV_POPULATE_WRITE) over 1 GiB", c),
            ["(baseline) one syscall", fmt(b.median / 1000, 3), "\(fmt(b.min / 1000, 3))..\(fmt(b.max / 1000, 3))", "", "1.00"],
        ])
        reportedMunmap(mem, Int(oneGiB))
    }
    // The mock domain's entry: IntervalMap<MockPagingDomain.Extent>.Entry, mirrored with the same fields.
    struct MirrorExtent { var source: MappedPages; var readable: Bool; var writable: Bool }
    // (IOVARange is two UInt64s, start and last; IOASIDStructures is not a dependency of this target.)
    let extentEntry = MemoryLayout<(UInt64, UInt64)>.stride + MemoryLayout<MirrorExtent>.stride
    print("mock-domain page table: one extent per area (the core calls PagingDomain.map once per area);")
    print("  an extent entry is \(extentEntry) bytes (IOVARange + MappedPages + 2 flags), so 1 GiB in one area = 1 extent = \(extentEntry) B")
    print("  floors of a radix page table per GiB: 2 MiB leaves 512 x 8 B = 4096 B; 4 KiB leaves 262144 x 8 B + 512 x 8 B = 2101248 B")
    print("")
}
