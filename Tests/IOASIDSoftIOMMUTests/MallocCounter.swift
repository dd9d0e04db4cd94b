// The allocation checks of the translation paths: the project's malloc counter
// (`scripts/bench-preload.sh build DIR` makes DIR/libmalloccount.so; run the tests with it in
// LD_PRELOAD, as `scripts/allocation-tests.sh` and `.ci/run` do). Without it loaded, the checks
// only exercise the paths, unless IOASID_MALLOC_COUNTER=required says the counter must be there.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing

/// The fewest heap allocations `body` made in any of `rounds` runs (other threads of the test
/// runner may allocate meanwhile, so the quietest run counts), or nil when the malloc counter
/// is not loaded. `between` runs after each round, uncounted.
func fewestMallocs(rounds: Int = 5, of body: () -> Void, between: () -> Void = {}) -> UInt? {
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "ioasid_bench_malloc_calls") else {
        if let wanted = getenv("IOASID_MALLOC_COUNTER"), String(cString: wanted) == "required" {
            Issue.record("IOASID_MALLOC_COUNTER=required, but libmalloccount.so is not in LD_PRELOAD")
        }
        return nil
    }
    let calls = symbol.assumingMemoryBound(to: UInt.self)
    var fewest = UInt.max
    for _ in 0..<rounds {
        let before = calls.pointee
        body()
        fewest = min(fewest, calls.pointee &- before)
        between()
    }
    return fewest
}
