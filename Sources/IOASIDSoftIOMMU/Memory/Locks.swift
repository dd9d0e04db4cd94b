// The read-mostly lock of the software IOMMU's machine fabric (plain mutexes are
// IOASIDStructures' `Lock` and `Locked`).
//
// Built from primitives ThreadSanitizer models on Linux (a pthread mutex and compiler atomics);
// it does not model `Synchronization.Mutex` there (a futex inside an uninstrumented standard
// library), see scripts/tsan.sh.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CIOASIDSys
import IOASIDStructures
import Synchronization

/// A reader–writer lock for data that is read on every access and changed rarely (the RAM
/// region table of ``PhysicalMemory``): a "big-reader" lock.
///
/// A reader increments one of 16 counters, chosen by its thread pointer and each on its own cache line,
/// and then checks the writer flag; so readers on different threads share no written cache line
/// and a read section costs two uncontended atomic operations. A writer takes a mutex (writers are
/// serialized), raises the flag, and waits until every counter is zero; readers that arrive while
/// the flag is up step back and wait for it to drop. Both sides use sequentially consistent
/// operations on the flag and their counter, so a reader either sees the flag or is seen by the
/// writer (Dekker). Writers can starve only under a never-ending stream of readers on one stripe,
/// which the readers' short sections make impossible in practice.
///
/// Read sections must not nest on one thread while a writer may be waiting (they do not here).
@usableFromInline
final class ReadMostlyLock: @unchecked Sendable {
    private static let stripes = 16
    /// Counters are 128 bytes apart (two cache lines, against adjacent-line prefetch).
    private static let stride = 128 / MemoryLayout<Atomic<Int>>.stride
    private let readers: UnsafeMutablePointer<Atomic<Int>>
    private let writer = Atomic<Int>(0)
    private let writers = Lock()

    init() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: Self.stripes * 128, alignment: 128)
        readers = raw.bindMemory(to: Atomic<Int>.self, capacity: Self.stripes * Self.stride)
        for i in 0..<Self.stripes { (readers + i * Self.stride).initialize(to: Atomic<Int>(0)) }
    }

    deinit {
        UnsafeMutableRawPointer(readers).deallocate()
    }

    @inline(__always)
    private var myStripe: UnsafeMutablePointer<Atomic<Int>> {
        let t = UInt64(UInt(ioasid_sys_thread_pointer()))
        let h = Int(truncatingIfNeeded: (t &* 0x9E37_79B9_7F4A_7C15) >> 60)
        return readers + h * Self.stride
    }

    /// Runs `body` as a reader: writers wait until it returns.
    @inline(__always)
    func withReadLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let stripe = myStripe
        while true {
            stripe.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if writer.load(ordering: .sequentiallyConsistent) == 0 { break }
            stripe.pointee.wrappingSubtract(1, ordering: .releasing)
            while writer.load(ordering: .acquiring) != 0 { sched_yield() }
        }
        defer { stripe.pointee.wrappingSubtract(1, ordering: .releasing) }
        return try body()
    }

    /// Runs `body` with every reader excluded.
    func withWriteLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        try writers.withLock { () throws(E) -> R in
            writer.store(1, ordering: .sequentiallyConsistent)
            for i in 0..<Self.stripes {
                while (readers + i * Self.stride).pointee.load(ordering: .sequentiallyConsistent) != 0 { sched_yield() }
            }
            defer { writer.store(0, ordering: .releasing) }
            return try body()
        }
    }
}
