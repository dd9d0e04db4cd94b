// Section 1: the interposer's cost on descriptors it does not serve, measured by a C program
// (scripts/bench-preload.sh) run plainly and under LD_PRELOAD=libioasid-preload.so.

/// Section 1: libc calls on foreign fds, plain against preloaded, in interleaved processes.
func foreignFDSection(built: (fdbench: String, malloccount: String)) {
    print("== 1. interposer cost on foreign fds (C program, \(quick ? 4 : 8) processes plain + as many with LD_PRELOAD, interleaved) ==")
    let preload = dirname(selfPath()) + "/libioasid-preload.so"
    if !exists(preload) {
        print("no \(preload): build it first (swift build -c release)")
    } else {
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
