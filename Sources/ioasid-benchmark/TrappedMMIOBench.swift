// Section 10 of ioasid-benchmark: trapped MMIO. A C program (scripts/bench-mmio.sh) maps a
// 4 KiB region with ioasid_trap_map under libioasid-preload.so and times a volatile 4-byte
// load and a 4-byte store there (each: page fault, SIGSEGV delivery, decode, the device
// handler, sigreturn), and glibc's memcpy of 64 bytes into it (the vector stores it makes),
// against one real system call in the same process and repetition (`syscall(SYS_getppid)`,
// and a 4-byte `pread` from a memfd), and against the floor of any signal-based trap: a system
// call that sends this thread a signal with an empty handler. Run in several processes; the
// table shows the median over processes of each process's median, the spread of those, and the
// median of the per-process ratios to getppid. A run with libmalloccount.so preloaded as well
// counts allocations per trapped access.

import Glibc

func trappedMMIOSection(root: String?, malloccount: String?) {
    print("== 10. trapped MMIO: one 4-byte load or store vs one system call (C program under LD_PRELOAD) ==")
    let preload = dirname(selfPath()) + "/libioasid-preload.so"
    guard let root else {
        print("(package root not found: skipped)\n")
        return
    }
    guard exists(preload) else {
        print("no \(preload): build it first (swift build -c release)\n")
        return
    }
    let build = run([root + "/scripts/bench-mmio.sh", "build", root + "/.build/bench"])
    guard build.status == 0, let program = build.output.split(separator: "\n").last.map(String.init) else {
        print("scripts/bench-mmio.sh build failed (\(build.status)):\n\(build.output)\n")
        return
    }
    let processes = quick ? 3 : 7
    let operations = ["trap_load4", "trap_store4", "trap_memcpy64", "getppid", "pread4", "signal_usr1"]
    var memcpyAccesses: Double?
    var medians: [String: [Double]] = [:]
    var ratios: [String: [Double]] = [:]
    for _ in 0..<processes {
        let result = run([program, quick ? "5000" : "20000"], environment: ["LD_PRELOAD": preload])
        let values = keyValues(result.output)
        guard result.status == 0, let baseline = values["getppid"]?.first else {
            print("mmiobench failed (\(result.status)):\n\(result.output)")
            return
        }
        memcpyAccesses = values["memcpy64_accesses"]?.first ?? memcpyAccesses
        for operation in operations {
            guard let median = values[operation]?.first else { continue }
            medians[operation, default: []].append(median)
            ratios[operation, default: []].append(median / baseline)
        }
    }
    var rows: [[String]] = []
    let labels = [
        "trap_load4": "trapped 4-byte load (volatile uint32_t read)",
        "trap_store4": "trapped 4-byte store",
        "trap_memcpy64": "memcpy of 64 bytes into the region (glibc's\(memcpyAccesses.map { ", \(Int($0)) trapped accesses" } ?? ""))",
        "getppid": "(baseline) syscall(SYS_getppid)",
        "pread4": "(baseline) pread of 4 bytes from a memfd",
        "signal_usr1": "(floor) tgkill(self, SIGUSR1) to an empty handler",
    ]
    for operation in operations {
        guard let samples = medians[operation], let ratio = ratios[operation] else { continue }
        let stats = Stats(samples)
        rows.append([labels[operation] ?? operation, fmt(stats.median), "\(fmt(stats.min))..\(fmt(stats.max))",
                     fmt(Stats(ratio).median, 2)])
    }
    printTable(["operation", "ns", "spread", "× getppid"], rows)
    print("(each process: median of 15 repetitions of \(quick ? 5000 : 20000) of each operation, order rotating; \(processes) processes)")
    if let malloccount {
        let counted = run([program, "2000"], environment: ["LD_PRELOAD": preload + ":" + malloccount])
        let values = keyValues(counted.output)
        let mallocs = values["mallocs_per_access"]?.first ?? .nan
        let frees = values["frees_per_access"]?.first ?? .nan
        print("allocations per trapped access (100 000 loads and stores under libmalloccount.so): mallocs \(fmt(mallocs, 4)), frees \(fmt(frees, 4))")
    }
    print("")
}
