// Section 4: malloc calls per round trip (this program re-run under a malloc-counting
// LD_PRELOAD) and system calls per round trip (re-run under strace -c); the heap a 1 GiB
// mapping holds.
import Glibc

// MARK: - section 4's child: malloc calls (run under libmalloccount.so)

/// `--malloc-child`: counts malloc and free calls per round trip (run under libmalloccount.so)
/// and prints "key value" lines.
func mallocChild() -> Never {
    guard let callsSym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "ioasid_bench_malloc_calls"),
          let freesSym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "ioasid_bench_free_calls"),
          let liveSym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "ioasid_bench_live_bytes") else {
        print("error not-under-malloccount")
        exit(2)
    }
    let calls = callsSym.assumingMemoryBound(to: UInt.self)
    let frees = freesSym.assumingMemoryBound(to: UInt.self)
    let live = liveSym.assumingMemoryBound(to: Int.self)
    let f = FastPath()
    let n = 10_000
    func count(_ name: String, _ body: () -> Void) {
        for _ in 0..<100 { body() } // warm caches and lazily built tables
        let c0 = calls.pointee, f0 = frees.pointee
        for _ in 0..<n { body() }
        let c1 = calls.pointee, f1 = frees.pointee
        print("\(name).mallocs \(Double(c1 - c0) / Double(n))")
        print("\(name).frees \(Double(f1 - f0) / Double(n))")
    }
    count("baseline") { oneSyscall() }
    count("alloc_destroy") { f.allocDestroy() }
    count("map_unmap_4k") { f.mapUnmap(4096) }
    count("map_unmap_2m") { f.mapUnmap(2 << 20) }
    count("iotlb_hit", softIOMMUHitLookup())
    count("walk_x86", walkBenchSingleWalk())
    count("walk_nested", walkBenchNestedWalk())
    count("ioat_memcpy_64k", ioatBenchMemcpy())
    count("dma_8b_cached", ioatBenchCachedDMA())

    // The heap the 1 GiB mapping keeps while it is mapped (areas, pages, pins, domain extents).
    let big = FastPath()
    let mem = anonymous(Int(oneGiB), populate: false)
    big.abi.map(big.ioas, address: mem, length: oneGiB)
    big.abi.unmap(big.ioas, length: oneGiB)
    let l0 = live.pointee, c0 = calls.pointee
    big.abi.map(big.ioas, address: mem, length: oneGiB)
    let l1 = live.pointee, c1 = calls.pointee
    big.abi.unmap(big.ioas, length: oneGiB)
    print("gib_map.heap_bytes \(l1 - l0)")
    print("gib_map.mallocs \(c1 - c0)")
    // The same GiB as 512 separate 2 MiB maps: 512 areas and 512 domain extents.
    let l2 = live.pointee
    for i in 0..<512 { big.abi.map(big.ioas, address: mem + i * (2 << 20), length: 2 << 20, iova: fixedIOVA + UInt64(i) * (2 << 20)) }
    let l3 = live.pointee
    for i in 0..<512 { big.abi.unmap(big.ioas, length: 2 << 20, iova: fixedIOVA + UInt64(i) * (2 << 20)) }
    print("gib_as_2m_maps.heap_bytes \(l3 - l2)")
    exit(0)
}

// MARK: - section 4's second child: system calls per round trip (run under strace -c)

/// `--syscall-child OP N`: runs OP N times (after one warm-up call), for strace -c.
func syscallChild() -> Never {
    let a = CommandLine.arguments
    guard let i = a.firstIndex(of: "--syscall-child"), a.count > i + 2, let n = Int(a[i + 2]) else { exit(2) }
    let f = FastPath()
    let body: () -> Void
    switch a[i + 1] {
    case "alloc_destroy": body = { f.allocDestroy() }
    case "map_unmap_4k": body = { f.mapUnmap(4096) }
    case "map_unmap_2m": body = { f.mapUnmap(2 << 20) }
    default: body = { oneSyscall() }
    }
    body() // the first call builds lazy tables
    for _ in 0..<n { body() }
    exit(0)
}

/// System calls per call of `op`: strace -c totals of 1000 + 1 calls minus those of 0 + 1.
func syscallsPerCall(_ op: String) -> Double? {
    func total(_ n: Int) -> Double? {
        let out = "/tmp/ioasid-benchmark-strace.\(getpid())"
        defer { unlink(out) }
        let r = run(["strace", "-f", "-c", "-o", out, selfPath(), "--syscall-child", op, String(n)])
        guard r.status == 0, let fp = fopen(out, "r") else { return nil }
        defer { fclose(fp) }
        var line = [CChar](repeating: 0, count: 512)
        var calls: Double? = nil
        while fgets(&line, Int32(line.count), fp) != nil {
            let f = string(fromCString: line).split(whereSeparator: { $0 == " " || $0 == "\n" })
            if f.last == "total", f.count >= 5 { calls = Double(f[3]) }
        }
        return calls
    }
    guard let a = total(1000), let b = total(0) else { return nil }
    return (a - b) / 1000
}

/// Section 4: malloc calls (and system calls) per round trip, in children of this program.
func mallocSection(built: (fdbench: String, malloccount: String)?) {
    print("== 4. malloc calls per round trip (this program re-run under LD_PRELOAD=libmalloccount.so) ==")
    if let built {
        let r = run([selfPath(), "--malloc-child"], environment: ["LD_PRELOAD": built.malloccount])
        let kv = keyValues(r.output)
        if r.status == 0, kv["alloc_destroy.mallocs"] != nil {
            func v(_ k: String) -> String { kv[k].flatMap(\.first).map { fmt($0, 2) } ?? "n/a" }
            let strace = run(["strace", "-V"]).status == 0
            func sc(_ op: String) -> String { strace ? syscallsPerCall(op).map { fmt($0, 2) } ?? "n/a" : "no strace" }
            printTable(["round trip", "mallocs/call", "frees/call", "syscalls/call"], [
                ["IOAS_ALLOC + DESTROY", v("alloc_destroy.mallocs"), v("alloc_destroy.frees"), sc("alloc_destroy")],
                ["MAP + UNMAP 4 KiB", v("map_unmap_4k.mallocs"), v("map_unmap_4k.frees"), sc("map_unmap_4k")],
                ["MAP + UNMAP 2 MiB", v("map_unmap_2m.mallocs"), v("map_unmap_2m.frees"), sc("map_unmap_2m")],
                ["IOTLB hit lookup (section 7)", v("iotlb_hit.mallocs"), v("iotlb_hit.frees"), "-"],
                ["x86 4-level walk (section 8)", v("walk_x86.mallocs"), v("walk_x86.frees"), "-"],
                ["nested x86/VT-d 2D walk (section 8)", v("walk_nested.mallocs"), v("walk_nested.frees"), "-"],
                ["IOAT memcpy 64 KiB through VT-d (section 12)", v("ioat_memcpy_64k.mallocs"), v("ioat_memcpy_64k.frees"), "-"],
                ["8-byte DMA with a cached translation through VT-d (section 12)", v("dma_8b_cached.mallocs"), v("dma_8b_cached.frees"), "-"],
                ["(control) one syscall", v("baseline.mallocs"), v("baseline.frees"), sc("baseline")],
            ])
            print("(syscalls/call: strace -f -c of 1000 calls minus the same program with 0 calls)")
            let heap = kv["gib_map.heap_bytes"]?.first ?? .nan
            let heap2 = kv["gib_as_2m_maps.heap_bytes"]?.first ?? .nan
            print("heap held while 1 GiB is mapped in one IOAS_MAP (IOAS area + pages + pins + mock extent): \(Int(heap)) B"
                  + " (\(Int(kv["gib_map.mallocs"]?.first ?? .nan)) mallocs)")
            print("heap held while 1 GiB is mapped as 512 IOAS_MAPs of 2 MiB: \(Int(heap2)) B = \(fmt(heap2 / 512)) B per 2 MiB"
                  + " (2 MiB-leaf floor: 4096 B per GiB)")
        } else {
            print("malloc child failed (\(r.status)):\n\(r.output)")
        }
    }
    print("")
}
