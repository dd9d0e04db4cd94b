// Section 5: wall time of the kernel's iommufd selftest under `ioasid run`.

/// Section 5: runs scripts/conformance.sh (no build, quiet) and reports its wall time.
func conformanceSection(root: String) {
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
