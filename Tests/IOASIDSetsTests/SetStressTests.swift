// Allocation, free and attach of PASIDs from several threads through the IOASID layer
// (scripts/tsan.sh runs this suite under ThreadSanitizer: its filter is "Stress").
import Foundation
import IOASIDCore
import IOASIDStructures
@testable import IOASIDSets
import IOASIDTestDriver
import Testing

@Suite struct SetStressTests {
    @Test func fourThreadsAllocateAttachAndFreeWithoutDuplicatesOrOverrun() throws {
        let allocator = try PASIDAllocator(pasidWidth: 8)  // 255 PASIDs: contention on purpose
        let layer = IOASIDLayer(allocator: allocator)
        let quota: UInt32 = 20
        let sets = [try allocator.allocSet(owner: .vm(id: 1), quota: .limited(quota)),
                    try allocator.allocSet(owner: .vm(id: 2), quota: .limited(quota))]
        let fixtures = try (0..<4).map { _ in try PASIDFixture() }
        for (i, f) in fixtures.enumerated() { try layer.enroll(f.context, in: sets[i % 2]) }
        // Who holds each PASID now, as seen by the threads themselves.
        let holders = Locked<[PASID: Int]>([:])
        let problems = Locked<[String]>([])
        let operations = Int(ProcessInfo.processInfo.environment["IOASID_STRESS_OPS"] ?? "") ?? 3000

        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            let f = fixtures[thread]
            let set = sets[thread % 2]
            var rng = SplitMix64(seed: UInt64(thread) &+ 0x5E75)
            var mine: [PASID] = []
            for _ in 0..<operations {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0..<4:
                    guard let p = try? layer.allocPASID(for: f.context) else { continue }
                    holders.withLock { h in
                        if let other = h[p] { problems.withLock { $0.append("PASID \(p) handed to thread \(thread) while thread \(other) holds it") } }
                        h[p] = thread
                    }
                    mine.append(p)
                    if let n = try? allocator.setInfo(set).count, n > Int(quota) {
                        problems.withLock { $0.append("set \(set) holds \(n) > quota \(quota)") }
                    }
                case 4..<7:
                    guard let p = mine.randomElement(using: &rng) else { continue }
                    // Threads free only their own PASIDs: the one failure allowed is EBUSY (attached already).
                    if let e = errnoOf({ try f.attach(p) }), e != EBUSY { problems.withLock { $0.append("attach \(p): errno \(e)") } }
                default:
                    guard !mine.isEmpty else { continue }
                    let p = mine.remove(at: Int.random(in: 0..<mine.count, using: &rng))
                    holders.withLock { $0[p] = nil }
                    do { try layer.freePASID(p, for: f.context) } catch { problems.withLock { $0.append("free \(p): \(error)") } }
                    if f.hardwareHWPT(p) { problems.withLock { $0.append("PASID \(p) still on the device after free") } }
                }
            }
            for p in mine {
                holders.withLock { $0[p] = nil }
                _ = try? layer.freePASID(p, for: f.context)
            }
        }
        #expect(problems.withLock { $0 }.isEmpty, "\(problems.withLock { $0.prefix(10) })")
        for (i, f) in fixtures.enumerated() {
            #expect(try f.context.attachedPASIDs(f.device).isEmpty)
            #expect(try allocator.setInfo(sets[i % 2]).count == 0)
            f.context.close()
        }
    }
}
