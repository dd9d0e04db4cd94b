// ioasid-benchmark: the project's own benchmark harness.
//
//   swift run -c release ioasid-benchmark [--quick] [--skip-foreign] [--skip-conformance] [--only-vfio] [--only-ioat] [--only-round-trips] [--only-foreign]
//                                         [--profile-loop alloc-destroy|map-unmap COUNT]
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
//  11. VFIO device: pread of config space and of BAR 0 against one system call (VFIOBench.swift)
//  12. the I/OAT device model: memcpy descriptors through VT-d (IOTLB hits) vs memcpy (IOATBench.swift)
//
// `--malloc-child` is the internal mode of section 4 (prints "key value" lines).
// main.swift only orchestrates: each section is a file of its own (named in the list above),
// the shared harness is Statistics.swift, ABIHarness.swift and Subprocess.swift.

import CIOASIDSys
import Glibc

// The in-process sections copy the caller's memory as the preload's engine does: with the safe
// copy and its fault handler (ioasid_sys_uaccess.h), not a system call per copy.
_ = ioasid_sys_uaccess_install()
// And, as the preload does, they see every change of this program's mappings (the benchmark
// reports its own mmap and munmap calls: `reportedMmap`), so memory that passed the kernel's
// pin check once is remembered until then (ioasid_sys_pinnable.h).
ioasid_sys_pinnable_watch(1)

// Child modes: this program re-run by section 4.
if arguments.contains("--malloc-child") { mallocChild() }
if arguments.contains("--syscall-child") { syscallChild() }

// `--profile-loop NAME COUNT`: one round trip of section 2 in a loop, for `perf record`.
let commandLine = CommandLine.arguments
if let at = commandLine.firstIndex(of: "--profile-loop"), at + 2 < commandLine.count, let count = Int(commandLine[at + 2]) {
    let fast = FastPath()
    switch commandLine[at + 1] {
    case "alloc-destroy": for _ in 0..<count { fast.allocDestroy() }
    case "map-unmap": for _ in 0..<count { fast.mapUnmap(4096) }
    default: print("--profile-loop: alloc-destroy or map-unmap"); exit(2)
    }
    exit(0)
}

if arguments.contains("--only-foreign") {   // section 1 alone
    if let built = buildHelpers(root: packageRoot()) { foreignFDSection(built: built) }
    exit(0)
}

if arguments.contains("--only-round-trips") {   // section 2 alone
    roundTripSection()
    exit(0)
}

if arguments.contains("--only-vfio") {   // section 11 alone
    vfioSection()
    exit(0)
}
// `--only-ioat`: section 12 and its malloc count alone.
if arguments.contains("--only-ioat") {
    ioatSection()
    // Again with fault-safe DMA copies enabled (as under the preload, whose handler fixes up
    // their faults): DMA data then moves with ioasid_sys_safe_copy instead of memmove.
    if ioasid_sys_uaccess_install() == 0 {
        print("-- the same, with fault-safe copies enabled (ioasid_sys_uaccess_install) --")
        ioatSection()
    }
    if let root = packageRoot() {
        let b = run([root + "/scripts/bench-preload.sh", "build", root + "/.build/bench"])
        if b.status == 0, let lib = b.output.split(separator: "\n").last.map(String.init) {
            let kv = keyValues(run([selfPath(), "--malloc-child"], environment: ["LD_PRELOAD": lib]).output)
            print("mallocs per 64 KiB IOAT memcpy through VT-d: \(kv["ioat_memcpy_64k.mallocs"]?.first.map { fmt($0, 2) } ?? "n/a")"
                  + ", frees: \(kv["ioat_memcpy_64k.frees"]?.first.map { fmt($0, 2) } ?? "n/a")"
                  + " (control, one syscall: \(kv["baseline.mallocs"]?.first.map { fmt($0, 2) } ?? "n/a"))")
            print("mallocs per 8-byte DMA with a cached translation: \(kv["dma_8b_cached.mallocs"]?.first.map { fmt($0, 2) } ?? "n/a")"
                  + ", frees: \(kv["dma_8b_cached.frees"]?.first.map { fmt($0, 2) } ?? "n/a")")
        }
    }
    exit(0)
}

print("ioasid-benchmark (\(quick ? "quick" : "full"); \(reps) runs per figure; medians with min..max of the runs)")
print("machine: \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) online CPUs")
print("")

roundTripSection()   // 2
gibMapSection()      // 3
softIOMMUSection()   // 7
walkSection()        // 8
let root = packageRoot()
let built = buildHelpers(root: root)
mallocSection(built: built)  // 4
if let built, !arguments.contains("--skip-foreign") { foreignFDSection(built: built) }  // 1
setsBenchmark()      // 6
svaSection()         // 9
trappedMMIOSection(root: root, malloccount: built?.malloccount)  // 10
vfioSection()        // 11
ioatSection()        // 12
if let root, !arguments.contains("--skip-conformance") { conformanceSection(root: root) }  // 5
