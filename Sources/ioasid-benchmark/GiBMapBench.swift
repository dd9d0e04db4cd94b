// Section 3: map + unmap of 1 GiB with one mock domain: time per 4 KiB page, and what the mock
// domain's page table holds per GiB next to the floors of a radix page table.
import CIOASIDSys
import Glibc
import IOASIDCore

/// Section 3: 1 GiB of anonymous memory mapped and unmapped, against one syscall.
func gibMapSection() {
    print("== 3. map + unmap of 1 GiB (anonymous, 4 KiB pages, not touched) with one mock domain ==")
    do {
        let big = FastPath()
        let mem = anonymous(Int(oneGiB), populate: false)
        let pages = Double(oneGiB / pageSize)
        var mapT: [Double] = [], unmapT: [Double] = [], checkT: [Double] = [], base: [Double] = []
        for rep in -1..<reps {
            let t0 = nowNS()
            big.abi.map(big.ioas, address: mem, length: oneGiB)
            let t1 = nowNS()
            big.abi.unmap(big.ioas, length: oneGiB)
            let t2 = nowNS()
            _ = ioasid_sys_check_range(UInt64(UInt(bitPattern: mem)), oneGiB, 1)
            let t3 = nowNS()
            for _ in 0..<1000 { oneSyscall() }
            let t4 = nowNS()
            guard rep >= 0 else { continue }
            mapT.append(Double(t1 - t0)); unmapT.append(Double(t2 - t1)); checkT.append(Double(t3 - t2)); base.append(Double(t4 - t3) / 1000)
        }
        let m = Stats(mapT), u = Stats(unmapT), c = Stats(checkT), b = Stats(base)
        let both = Stats(zip(mapT, unmapT).map { $0 + $1 })
        printTable(["1 GiB = 262144 pages", "µs total", "spread µs", "ns/page", "x syscall"], [
            ["IOAS_MAP", fmt(m.median / 1000), "\(fmt(m.min / 1000))..\(fmt(m.max / 1000))", fmt(m.median / pages, 3), fmt(m.median / b.median, 2)],
            ["IOAS_UNMAP", fmt(u.median / 1000), "\(fmt(u.min / 1000))..\(fmt(u.max / 1000))", fmt(u.median / pages, 3), fmt(u.median / b.median, 2)],
            ["MAP + UNMAP", fmt(both.median / 1000), "\(fmt(both.min / 1000))..\(fmt(both.max / 1000))", fmt(both.median / pages, 3), fmt(both.median / b.median, 2)],
            ["(in MAP) pin check: madvise(MADV_POPULATE_WRITE) over 1 GiB", fmt(c.median / 1000), "\(fmt(c.min / 1000))..\(fmt(c.max / 1000))", fmt(c.median / pages, 3), fmt(c.median / b.median, 2)],
            ["(baseline) one syscall", fmt(b.median / 1000, 3), "\(fmt(b.min / 1000, 3))..\(fmt(b.max / 1000, 3))", "", "1.00"],
        ])
        _ = munmap(mem, Int(oneGiB))
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
