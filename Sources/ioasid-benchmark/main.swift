// ioasid-benchmark: the project's own benchmark harness.
//
//   swift run -c release ioasid-benchmark [--quick] [--skip-foreign] [--skip-conformance]
//
// Every timed figure is the median of repeated runs, printed with its spread (min..max of the
// runs) next to a baseline measured in the same run, interleaved run by run with the figure, and
// the ratio of the two. Sections:
//   1. interposer cost on foreign fds (C program from scripts/bench-preload.sh, run plainly and
//      under LD_PRELOAD=libioasid-preload.so)
//   2. in-process round trips through the ABI dispatcher (IOMMUFile.ioctl) versus one syscall
//   3. map + unmap of 1 GiB with one mock domain: ns per 4 KiB page, and mapping memory per GiB
//   4. malloc calls per round trip (this program re-run under a malloc-counting LD_PRELOAD)
//   5. wall time of the kernel's iommufd selftest under `ioasid run` (scripts/conformance.sh)
//   6. IOASID sets: PASID alloc+free with 1 / 10 000 / 1 000 000 outstanding; a PASID end to end (SetsBench.swift)
//   7. the software IOMMU's translation cache: hit lookup vs an array load, streaming vs random DMA (SoftIOMMUBench.swift)
//   8. the software IOMMU's page-table walks on a miss vs pointer chasing; page-table memory per GiB (WalkBench.swift)
//   9. SVA on VT-d: the I/O page fault round trip in-process, bind + unbind end to end (SVABench.swift)
//  10. trapped MMIO: a 4-byte load and store to a trapped BAR vs one system call (TrappedMMIOBench.swift)
//
// `--malloc-child` is the internal mode of section 4 (prints "key value" lines).

import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDLinuxABI
import IOASIDTestDriver
import Synchronization

// MARK: - options

let arguments = Set(CommandLine.arguments.dropFirst())
let quick = arguments.contains("--quick")
let reps = quick ? 9 : 21

// MARK: - timing and statistics

@inline(__always) func nowNS() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

struct Stats {
    let samples: [Double]
    init(_ s: [Double]) { samples = s.sorted() }
    var median: Double {
        let n = samples.count
        return n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2
    }
    var min: Double { samples.first ?? .nan }
    var max: Double { samples.last ?? .nan }
}

func fmt(_ v: Double, _ digits: Int = 1) -> String {
    if v.isNaN { return "n/a" }
    var s = String(Int((abs(v) * pow(10, Double(digits))).rounded()))
    while s.count <= digits { s = "0" + s }
    if digits > 0 { s.insert(".", at: s.index(s.endIndex, offsetBy: -digits)) }
    return (v < 0 ? "-" : "") + s
}

func pad(_ s: String, _ w: Int, left: Bool = false) -> String {
    s.count >= w ? s : (left ? s + String(repeating: " ", count: w - s.count) : String(repeating: " ", count: w - s.count) + s)
}

func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = Swift.max(widths[i], c.count) } }
    func line(_ r: [String]) -> String {
        r.enumerated().map { i, c in pad(c, widths[i], left: i == 0) }.joined(separator: "  ")
    }
    print(line(header))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    for r in rows { print(line(r)) }
}

/// Picks an iteration count so that one run of `body` takes about `target` ns.
func calibrate(target: UInt64 = 20_000_000, _ body: () -> Void) -> Int {
    var n = 1
    while true {
        let t0 = nowNS()
        for _ in 0..<n { body() }
        let dt = nowNS() - t0
        if dt >= target / 4 || n >= 1 << 24 {
            return Swift.max(1, Int(Double(n) * Double(target) / Double(Swift.max(dt, 1))))
        }
        n *= 4
    }
}

/// `reps` runs of `iterations` calls of `op`, each immediately followed by `iterations` calls
/// of `baseline`: ns per call of both, and the ratio op/baseline of each run.
func paired(iterations: Int, op: () -> Void, baseline: () -> Void) -> (op: Stats, base: Stats, ratio: Stats) {
    var o: [Double] = [], b: [Double] = [], r: [Double] = []
    for rep in -2..<reps { // two warm-up runs
        let t0 = nowNS()
        for _ in 0..<iterations { op() }
        let t1 = nowNS()
        for _ in 0..<iterations { baseline() }
        let t2 = nowNS()
        guard rep >= 0 else { continue }
        let x = Double(t1 - t0) / Double(iterations), y = Double(t2 - t1) / Double(iterations)
        o.append(x); b.append(y); r.append(x / y)
    }
    return (Stats(o), Stats(b), Stats(r))
}

func fail(_ message: String) -> Never {
    let line = "ioasid-benchmark: " + message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(1)
}

// MARK: - a tiny descriptor host

final class BenchHost: DescriptorHost, @unchecked Sendable {
    private let files = Mutex<(next: Int32, table: [Int32: any LinuxFile])>((1000, [:]))
    func install(_ file: any LinuxFile) -> Int32 {
        files.withLock { s in
            let fd = s.next
            s.next += 1
            s.table[fd] = file
            return fd
        }
    }
    func setReadable(_ fd: Int32, _ readable: Bool) {}
    func file(for fd: Int32) -> (any LinuxFile)? { files.withLock { $0.table[fd] } }
}

// MARK: - the ABI calls

let mapFlags: UInt32 = 1 | 2 | 4 // FIXED_IOVA | WRITEABLE | READABLE
let fixedIOVA: UInt64 = 1 << 24  // the start of the mock aperture

struct ABI {
    let file: IOMMUFile

    init() {
        file = IOMMUFile(host: BenchHost(), configuration: EngineConfiguration(testDriver: true))
    }

    @inline(__always) func call<T: UAPIStruct>(_ request: UInt, _ value: inout T) -> Int {
        withUnsafeMutableBytes(of: &value) { file.ioctl(request: request, argument: $0.baseAddress) }
    }

    func check(_ rc: Int, _ what: String) {
        if rc != 0 {
            fail("\(what) failed: \(rc)")
            exit(1)
        }
    }

    func allocIOAS() -> UInt32 {
        var a = iommu_ioas_alloc()
        a.size = UInt32(MemoryLayout<iommu_ioas_alloc>.size)
        check(call(IOCTL.IOMMU_IOAS_ALLOC, &a), "IOMMU_IOAS_ALLOC")
        return a.out_ioas_id
    }

    func destroy(_ id: UInt32) {
        var d = iommu_destroy()
        d.size = UInt32(MemoryLayout<iommu_destroy>.size)
        d.id = id
        check(call(IOCTL.IOMMU_DESTROY, &d), "IOMMU_DESTROY")
    }

    /// IOMMU_TEST_CMD / IOMMU_TEST_OP_MOCK_DOMAIN on `ioas`: a mock device attached to a new mock domain.
    func mockDomain(_ ioas: UInt32) {
        var c = iommu_test_cmd()
        c.size = UInt32(MemoryLayout<iommu_test_cmd>.size)
        c.op = UAPI.IOMMU_TEST_OP_MOCK_DOMAIN
        c.id = ioas
        check(call(IOCTL.IOMMU_TEST_CMD, &c), "IOMMU_TEST_OP_MOCK_DOMAIN")
    }

    func map(_ ioas: UInt32, address: UnsafeMutableRawPointer, length: UInt64, iova: UInt64 = fixedIOVA) {
        var m = iommu_ioas_map()
        m.size = UInt32(MemoryLayout<iommu_ioas_map>.size)
        m.flags = mapFlags
        m.ioas_id = ioas
        m.user_va = UInt64(UInt(bitPattern: address))
        m.length = length
        m.iova = iova
        check(call(IOCTL.IOMMU_IOAS_MAP, &m), "IOMMU_IOAS_MAP")
    }

    func unmap(_ ioas: UInt32, length: UInt64, iova: UInt64 = fixedIOVA) {
        var u = iommu_ioas_unmap()
        u.size = UInt32(MemoryLayout<iommu_ioas_unmap>.size)
        u.ioas_id = ioas
        u.iova = iova
        u.length = length
        check(call(IOCTL.IOMMU_IOAS_UNMAP, &u), "IOMMU_IOAS_UNMAP")
        if u.length != length {
            fail("unmapped \(u.length) bytes, not \(length)")
        }
    }
}

/// Anonymous private memory of `length` bytes, aligned to 2 MiB, in 4 KiB pages.
func anonymous(_ length: Int, populate: Bool) -> UnsafeMutableRawPointer {
    let align = 2 << 20
    guard let raw = mmap(nil, length + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
          raw != MAP_FAILED else {
        fail("mmap of \(length) bytes failed")
    }
    let base = UnsafeMutableRawPointer(bitPattern: (UInt(bitPattern: raw) + UInt(align) - 1) & ~UInt(align - 1))!
    _ = madvise(base, length, 15) // MADV_NOHUGEPAGE: keep 4 KiB pages
    if populate { memset(base, 1, length) }
    return base
}

/// One real system call: ioctl(FIONREAD) on an eventfd.
let baselineFD = Int32(ioasid_sys_eventfd(0, IOASID_SYS_EFD_CLOEXEC | IOASID_SYS_EFD_NONBLOCK))
@inline(__always) func oneSyscall() {
    var v: Int32 = 0
    _ = ioasid_sys_fionread(baselineFD, &v)
}

/// The fast-path operations, each set up on its own file.
struct FastPath {
    let abi = ABI()
    let ioas: UInt32
    let buffer: UnsafeMutableRawPointer

    init() {
        ioas = abi.allocIOAS()
        abi.mockDomain(ioas)
        buffer = anonymous(2 << 20, populate: true)
    }

    func allocDestroy() { abi.destroy(abi.allocIOAS()) }
    func mapUnmap(_ length: UInt64) {
        abi.map(ioas, address: buffer, length: length)
        abi.unmap(ioas, length: length)
    }
}

// MARK: - subprocesses

/// Runs `argv` with `environment` added; returns the exit status and the merged stdout+stderr.
func run(_ argv: [String], environment extra: [String: String] = [:], echo: Bool = false) -> (status: Int32, output: String) {
    var env: [String] = []
    var e = environ
    while let p = e.pointee {
        let s = String(cString: p)
        if let k = s.split(separator: "=", maxSplits: 1).first, extra[String(k)] != nil {} else { env.append(s) }
        e += 1
    }
    for (k, v) in extra { env.append("\(k)=\(v)") }
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { return (-1, "pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addclose(&actions, fds[0])
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    posix_spawn_file_actions_addclose(&actions, fds[1])
    var cargv = argv.map { strdup($0) } + [nil]
    var cenv = env.map { strdup($0) } + [nil]
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, argv[0], &actions, nil, &cargv, &cenv)
    posix_spawn_file_actions_destroy(&actions)
    close(fds[1])
    for p in cargv { free(p) }
    for p in cenv { free(p) }
    guard rc == 0 else { close(fds[0]); return (-1, "cannot run \(argv[0]): \(String(cString: strerror(rc)))") }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes += chunk[0..<n]
        if echo { _ = chunk.withUnsafeBytes { write(2, $0.baseAddress, n) } }
    }
    close(fds[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (code, String(decoding: bytes, as: UTF8.self))
}

func selfPath() -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    return n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
}

func dirname(_ p: String) -> String {
    guard let i = p.lastIndex(of: "/") else { return "." }
    return i == p.startIndex ? "/" : String(p[..<i])
}

func exists(_ p: String) -> Bool { access(p, F_OK) == 0 }

/// The package root: the current directory if it holds Package.swift, else the nearest parent
/// of this executable that does.
func packageRoot() -> String? {
    var buf = [CChar](repeating: 0, count: 4096)
    if getcwd(&buf, buf.count) != nil {
        let cwd = String(cString: buf)
        if exists(cwd + "/Package.swift") && exists(cwd + "/scripts/bench-preload.sh") { return cwd }
    }
    var d = dirname(selfPath())
    while d != "/" && !d.isEmpty {
        if exists(d + "/Package.swift") && exists(d + "/scripts/bench-preload.sh") { return d }
        d = dirname(d)
    }
    return nil
}

func keyValues(_ s: String) -> [String: [Double]] {
    var r: [String: [Double]] = [:]
    for line in s.split(separator: "\n") {
        let f = line.split(separator: " ")
        guard f.count >= 2 else { continue }
        r[String(f[0])] = f.dropFirst().compactMap { Double($0) }
    }
    return r
}

// MARK: - section 4's child: malloc calls (run under libmalloccount.so)

let oneGiB: UInt64 = 1 << 30
let pageSize: UInt64 = 4096

if arguments.contains("--malloc-child") {
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

if arguments.contains("--syscall-child") {
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
            let f = String(cString: line).split(whereSeparator: { $0 == " " || $0 == "\n" })
            if f.last == "total", f.count >= 5 { calls = Double(f[3]) }
        }
        return calls
    }
    guard let a = total(1000), let b = total(0) else { return nil }
    return (a - b) / 1000
}

// MARK: - main

print("ioasid-benchmark (\(quick ? "quick" : "full"); \(reps) runs per figure; medians with min..max of the runs)")
print("machine: \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) online CPUs")
print("")

// Section 2: round trips through the dispatcher.
print("== 2. round trips through the ABI dispatcher (IOMMUFile.ioctl), one mock domain attached ==")
print("baseline: one real syscall, ioctl(FIONREAD) on an eventfd (ioasid_sys_fionread), interleaved run by run")
let fast = FastPath()
func roundTrip(_ name: String, _ body: () -> Void) -> [String] {
    let n = calibrate { body(); oneSyscall() }
    let r = paired(iterations: n, op: body, baseline: oneSyscall)
    return [name, fmt(r.op.median), "\(fmt(r.op.min))..\(fmt(r.op.max))", fmt(r.base.median),
            "\(fmt(r.base.min))..\(fmt(r.base.max))", fmt(r.ratio.median, 2), r.ratio.median < 1 ? "yes" : "NO"]
}
let rows = [
    roundTrip("IOAS_ALLOC + DESTROY") { fast.allocDestroy() },
    roundTrip("MAP + UNMAP 4 KiB") { fast.mapUnmap(4096) },
    roundTrip("MAP + UNMAP 2 MiB") { fast.mapUnmap(2 << 20) },
    roundTrip("(control) syscall vs syscall") { oneSyscall() },
]
printTable(["pair of ioctls", "ns/pair", "spread", "syscall ns", "spread", "ratio", "< 1 syscall"], rows)
print("(ratio: median over runs of (ns per pair) / (ns per syscall) in the same run)")
print("")

// Section 3: 1 GiB.
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
        ["(in MAP) pin check: msync over 1 GiB", fmt(c.median / 1000), "\(fmt(c.min / 1000))..\(fmt(c.max / 1000))", fmt(c.median / pages, 3), fmt(c.median / b.median, 2)],
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

softIOMMUSection()
walkSection()

// Section 4: malloc calls, in a child run under the counting preload.
var built: (fdbench: String, malloccount: String)? = nil
let root = packageRoot()
if let root {
    let r = run([root + "/scripts/bench-preload.sh", "build", root + "/.build/bench"])
    let lines = r.output.split(separator: "\n").map(String.init)
    if r.status == 0, lines.count >= 2 { built = (lines[lines.count - 2], lines[lines.count - 1]) }
    else { print("scripts/bench-preload.sh build failed (\(r.status)):\n\(r.output)") }
} else {
    print("(package root with scripts/bench-preload.sh not found: run from the package folder; sections 1, 4, 5 skipped)")
}

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

// Section 1: interposer cost on foreign fds.
if let root, let built, !arguments.contains("--skip-foreign") {
    print("== 1. interposer cost on foreign fds (C program, \(quick ? 4 : 8) processes plain + as many with LD_PRELOAD, interleaved) ==")
    let preload = dirname(selfPath()) + "/libioasid-preload.so"
    if !exists(preload) {
        print("no \(preload): build it first (swift build -c release)")
    } else {
        _ = root
        let rounds = quick ? 4 : 8
        let ops = ["ioctl_fionread", "read_eventfd", "close", "stat_foreign", "stat_dev_null", "open_close"]
        var plain: [String: [[Double]]] = [:], pre: [String: [[Double]]] = [:]
        for _ in 0..<rounds {
            let a = keyValues(run([built.fdbench, "50000"]).output)
            let b = keyValues(run([built.fdbench, "50000"], environment: ["LD_PRELOAD": preload]).output)
            for op in ops {
                if let x = a[op], x.count == 4 { plain[op, default: []].append(x) }
                if let x = b[op], x.count == 4 { pre[op, default: []].append(x) }
            }
        }
        var rows: [[String]] = []
        var rows2: [[String]] = []
        for op in ops {
            guard let p = plain[op], let q = pre[op], !p.isEmpty, !q.isEmpty else { continue }
            let pm = Stats(p.map { $0[0] }), qm = Stats(q.map { $0[0] })
            let pmin = Stats(p.map { $0[1] }).min, qmin = Stats(q.map { $0[1] }).min
            rows.append([op, fmt(pm.median), "\(fmt(pm.min))..\(fmt(pm.max))", fmt(qm.median), "\(fmt(qm.min))..\(fmt(qm.max))",
                         fmt((qm.median / pm.median - 1) * 100, 1) + "%", fmt((qmin / pmin - 1) * 100, 1) + "%"])
            // Paired in-process: the call through the PLT against glibc's own function in the same run.
            let pr = Stats(p.map { $0[0] / $0[2] }), qr = Stats(q.map { $0[0] / $0[2] })
            rows2.append([op, fmt(Stats(q.map { $0[2] }).median), fmt(qm.median), fmt((qr.median - 1) * 100, 1) + "%",
                          fmt((pr.median - 1) * 100, 1) + "%"])
        }
        printTable(["libc call", "plain ns", "spread", "preload ns", "spread", "slower (medians)", "slower (minima)"], rows)
        print("(each process: median of 15 runs of 50000 calls; the table: median and min..max over processes)")
        print("")
        print("same calls, paired inside each process: through the PLT vs glibc's function via dlsym(libc.so.6)")
        printTable(["libc call", "libc direct ns (preloaded)", "via preload ns", "slower (preloaded)", "control: slower (plain)"], rows2)
        print("")
    }
}

setsBenchmark()
svaSection()
trappedMMIOSection(root: root, malloccount: built?.malloccount)

// Section 5: the selftest's wall time.
if let root, !arguments.contains("--skip-conformance") {
    print("== 5. the kernel's iommufd selftest under ioasid run (scripts/conformance.sh --no-build --quiet) ==")
    let script = root + "/scripts/conformance.sh"
    if exists(script) {
        let t0 = nowNS()
        let r = run([script, "--no-build", "--quiet", "--out", root + "/.build/bench/conformance"])
        let wall = Double(nowNS() - t0) / 1e9
        for line in r.output.split(separator: "\n").suffix(12) { print("  " + line) }
        print("exit status \(r.status); measured around the script: \(fmt(wall, 1)) s")
    } else {
        print("no scripts/conformance.sh")
    }
}
