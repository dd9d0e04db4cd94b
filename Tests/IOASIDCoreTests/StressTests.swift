import IOASIDStructures
import Dispatch
import Foundation
import IOASIDCore
import IOASIDLinuxABI
import IOASIDTestDriver
import Synchronization
import Testing


@Suite("Stress: one context, many threads")
struct StressTests {
    static let threads = 4
    static let operationsPerThread = Int(ProcessInfo.processInfo.environment["IOASID_STRESS_OPS"] ?? "") ?? 5000
    static let timeLimit: Double = 8 // seconds of work at most (under TSan the op count may not be reached)

    @Test func concurrentMapUnmapCopyAttachDetach() throws {
        try PinLock.exclusive {
            let liveBefore = PinRegistry.shared.liveCount
            let (c, d) = makeContext()
            let buffer = UserBuffer(pages: 64)
            let shared = try (0..<3).map { _ in try c.allocateIOAS() }
            let unexpected = Mutex<[String]>([])
            let completed = Atomic<Int>(0)
            let deadline = Date().addingTimeInterval(Self.timeLimit)

            DispatchQueue.concurrentPerform(iterations: Self.threads) { worker in
                var rng = SplitMix64(seed: 0x5EED_0000 + UInt64(worker))
                var handles: [ObjectID] = []
                var own: [IOAS.ID] = []
                var accesses: [MockAccess] = []
                func note(_ what: String, _ e: Error) {
                    // Only errnos are acceptable outcomes; anything else would be a bug in the test.
                    if !(e is IOMMUError) { unexpected.withLock { $0.append("\(what): \(e)") } }
                }
                for i in 0..<Self.operationsPerThread {
                    if i % 64 == 0, Date() > deadline { break }
                    let ioas = (own + shared).randomElement(using: &rng)!
                    let page = Int.random(in: 0..<60, using: &rng)
                    let pages = UInt64.random(in: 1...4, using: &rng)
                    do {
                        switch Int.random(in: 0..<14, using: &rng) {
                        case 0, 1, 2:
                            let fixed: UInt64? = Bool.random(using: &rng) ? (1 << 24) + UInt64.random(in: 0..<256, using: &rng) * 4096 : nil
                            _ = try c.map(ioas, source: .user(address: buffer.address(page: page)), length: pages * 4096, iova: fixed,
                                          access: Bool.random(using: &rng) ? .read : .readWrite)
                        case 3, 4:
                            if let a = try c.areas(ioas).randomElement(using: &rng) {
                                _ = try c.unmap(ioas, iova: a.range.start, length: a.range.length ?? 4096)
                            }
                        case 5:
                            _ = try c.unmap(ioas, iova: (1 << 24) + UInt64.random(in: 0..<256, using: &rng) * 4096, length: pages * 4096)
                        case 6:
                            if let a = try c.areas(ioas).randomElement(using: &rng) {
                                let to = shared.randomElement(using: &rng)!
                                _ = try c.copy(from: ioas, sourceIOVA: a.range.start, to: to, destinationIOVA: nil,
                                               length: a.range.length ?? 4096, access: .read)
                            }
                        case 7:
                            handles.append(try d.mockDomain(ioas.object, flags: Bool.random(using: &rng) ? 0 : Mock.devicePASID).handle)
                        case 8:
                            if let h = handles.popLast() { try c.destroy(h) }
                        case 9:
                            if let h = handles.randomElement(using: &rng) { _ = try d.mockDomainReplace(h, with: ioas.object) }
                        case 10:
                            if own.count < 3 { own.append(try c.allocateIOAS()) } else {
                                let victim = own.removeFirst()
                                do { try c.destroy(victim.object) } catch { own.append(victim); throw error }
                            }
                        case 11:
                            if accesses.count < 2 {
                                accesses.append(try d.createAccess(ioas, flags: 1))
                            } else if let a = accesses.randomElement(using: &rng), let area = try c.areas(ioas).first {
                                _ = try d.accessPages(a, iova: area.range.start, length: 4096, address: 0, flags: 0)
                            }
                        case 12:
                            if !accesses.isEmpty { d.closeAccess(accesses.removeFirst()) }
                        default:
                            _ = try c.unmapAll(ioas)
                        }
                    } catch {
                        note("op", error)
                    }
                    completed.add(1, ordering: .relaxed)
                }
                for a in accesses { d.closeAccess(a) }
                for h in handles { do { try c.destroy(h) } catch { note("destroy handle", error) } }
            }

            #expect(unexpected.withLock { $0 }.isEmpty)
            let done = completed.load(ordering: .relaxed)
            print("stress: \(done) operations on \(Self.threads) threads")
            #expect(done >= Self.threads * 64)
            // Every device is gone: no domain mirrors any IOAS, so nothing may stay pinned.
            #expect(!c.objects.contains { $0.kind == .device || $0.kind == .hwptPaging || $0.kind == .access })
            for p in 0..<64 { #expect(pinCount(buffer.address(page: p)) == 0, "page \(p) still pinned") }
            #expect(c.chargedPages(.perUser) == 0)
            c.close()
            #expect(c.objects.isEmpty)
            #expect(PinRegistry.shared.liveCount == liveBefore, "no Pages object outlives its context")
        }
    }
}
