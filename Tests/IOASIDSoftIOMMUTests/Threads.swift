#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Runs `body(0)`, ..., `body(count - 1)` on `count` new threads at once and waits for all.
/// Real threads, and every body starts only when all threads are running, so a stress test's
/// writer and readers truly overlap even when the test runner's pool is busy.
func onThreads(_ count: Int, _ work: @escaping @Sendable (Int) -> Void) {
    let started = Atomic<Int>(0)
    let body: @Sendable (Int) -> Void = { i in
        started.wrappingAdd(1, ordering: .acquiringAndReleasing)
        while started.load(ordering: .acquiring) < count { sched_yield() }
        work(i)
    }
    final class Job {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }
    var threads: [pthread_t] = []
    for i in 0..<count {
        let job = Unmanaged.passRetained(Job { body(i) }).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            Unmanaged<Job>.fromOpaque(arg!).takeRetainedValue().run()
            return nil
        }, job)
        precondition(rc == 0, "pthread_create failed")
        threads.append(thread)
    }
    for t in threads { pthread_join(t, nil) }
}
