import CIOASIDSys
import IOASIDLinuxABI

// Section 2: in-process round trips through the ABI dispatcher (IOMMUFile.ioctl) against one
// real system call, interleaved run by run.

/// Section 2: pairs of ioctls (alloc + destroy, map + unmap) against ioctl(FIONREAD) on an eventfd.
func roundTripSection() {
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
    // In-process use without the preload: nobody reports the program's mappings, so every pin
    // check asks the kernel (madvise(MADV_POPULATE_WRITE)).
    ioasid_sys_pinnable_watch(0)
    let unwatched = [roundTrip("MAP + UNMAP 4 KiB, not remembered") { fast.mapUnmap(4096) }]
    ioasid_sys_pinnable_watch(1)
    // The same dispatcher with a report being made (`ioasid run --report`): each call timed and
    // counted, and the context snapshotted after each successful call.
    let recorded = FastPath()
    recorded.abi.file.recorder = ContextRecorder(context: recorded.abi.file.context)
    let reportRows = [
        roundTrip("IOAS_ALLOC + DESTROY, report on") { recorded.allocDestroy() },
        roundTrip("MAP + UNMAP 4 KiB, report on") { recorded.mapUnmap(4096) },
    ]
    printTable(["pair of ioctls", "ns/pair", "spread", "syscall ns", "spread", "ratio", "< 1 syscall"], rows + unwatched + reportRows)
    print("(ratio: median over runs of (ns per pair) / (ns per syscall) in the same run)")
    print("")
}
