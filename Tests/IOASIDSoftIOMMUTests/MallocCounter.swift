// The allocation checks of the translation paths: the project's malloc counter
// (`scripts/bench-preload.sh build DIR` makes DIR/libmalloccount.so; run the tests with it in
// LD_PRELOAD). Without it loaded, the checks only exercise the paths.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The fewest heap allocations `body` made in any of `rounds` runs (other threads of the test
/// runner may allocate meanwhile, so the quietest run counts), or nil when the malloc counter
/// is not loaded. `between` runs after each round, uncounted.
func fewestMallocs(rounds: Int = 5, of body: () -> Void, between: () -> Void = {}) -> UInt? {
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "ioasid_bench_malloc_calls") else { return nil }
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
