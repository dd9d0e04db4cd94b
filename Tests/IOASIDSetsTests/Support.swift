import IOASIDStructures
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

/// The project's seeded generator (IOASIDStructures).
typealias SeededRNG = SplitMix64
