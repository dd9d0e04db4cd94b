import IOASIDCore
@testable import IOASIDSets
import Synchronization

/// The errno a throwing call fails with, or nil if it succeeds.
/// An error of another type reports -1.
func errnoOf<T>(_ body: () throws -> T) -> Int32? {
    do { _ = try body(); return nil } catch { return (error as? IOMMUError)?.errno ?? -1 }
}

let EPERM: Int32 = 1, ENOENT: Int32 = 2, EAGAIN: Int32 = 11, EBUSY: Int32 = 16, EEXIST: Int32 = 17
let EINVAL: Int32 = 22, ENOSPC: Int32 = 28

/// A thread-safe list of notifications.
final class NoteLog: Sendable {
    private let items = Mutex<[String]>([])
    func append(_ s: String) { items.withLock { $0.append(s) } }
    var all: [String] { items.withLock { $0 } }
    func handler(_ tag: String) -> @Sendable (PASIDNotification) -> Void {
        { n in self.append("\(tag):\(n.event):\(n.pasid)") }
    }
}

/// SplitMix64, so property tests replay from a seed.
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
