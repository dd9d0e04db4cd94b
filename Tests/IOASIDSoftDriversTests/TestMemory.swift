// User memory for the driver suites, and their share of the process-wide pin lock.
//
// The core suites (another test target in the same process) count pins per address and in
// total (`PinRegistry`). Two rules keep these suites out of their way:
// - buffers come from an arena whose addresses are never handed out again, so a pin these suites
//   still hold on a freed buffer can never be mistaken for a pin on a new buffer elsewhere;
// - every test here holds the shared side of the pin lock (`pinsShared`), the same `flock` the
//   core suites take, so tests that compare the total number of pins run alone.
import Foundation
import Synchronization

/// A 64 GiB reservation from which test buffers are carved and never reused.
enum TestArena {
    static let size = 1 << 36
    nonisolated(unsafe) static let base: UnsafeMutableRawPointer = {
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        precondition(p != MAP_FAILED, "cannot reserve the test arena")
        return p!
    }()
    static let used = Atomic<Int>(0)

    /// `bytes` (rounded up to pages) of zeroed, page-aligned memory at a fresh address.
    static func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        let length = (bytes + 4095) & ~4095
        let offset = used.add(length, ordering: .relaxed).oldValue
        precondition(offset + length <= size, "test arena exhausted")
        return base + offset
    }

    /// Gives the pages back to the system; the addresses stay reserved.
    static func release(_ pointer: UnsafeMutableRawPointer, _ bytes: Int) {
        _ = madvise(pointer, (bytes + 4095) & ~4095, MADV_DONTNEED)
    }
}

/// Runs `body` holding the shared side of the process-wide pin lock (see the file comment). The
/// lock is taken synchronously, as the core suites do: a lock held across an `await` could wait
/// for a pool thread that a blocked exclusive waiter occupies.
func pinsShared<R>(_ body: () throws -> R) rethrows -> R {
    let fd = open(NSTemporaryDirectory() + "ioasid-pinlock-\(getpid())", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    precondition(fd >= 0, "cannot open the pin lock file")
    while flock(fd, LOCK_SH) != 0 { precondition(errno == EINTR) }
    defer { flock(fd, LOCK_UN); close(fd) }
    return try body()
}
