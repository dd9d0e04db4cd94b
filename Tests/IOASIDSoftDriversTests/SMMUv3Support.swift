// Helpers of the SMMUv3 driver suites: real user memory, a context on it, a device behind a new
// SMMUv3 driver, and guest RAM in which a guest builds its stage-1 tables and CD table.

import IOASIDProcessMemory
import IOASIDCore
import IOASIDLinuxABI
@testable import IOASIDSoftDrivers
import IOASIDStructures
@testable import IOASIDSoftIOMMU

/// Page-aligned memory owned by a test.
final class UserBuffer: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let length: Int

    init(pages: Int) {
        length = pages * 4096
        base = TestArena.allocate(length)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: length)
    }

    deinit { TestArena.release(base, length) }

    var address: UInt64 { UInt64(UInt(bitPattern: base)) }
    subscript(offset: Int) -> UInt8 {
        get { base.load(fromByteOffset: offset, as: UInt8.self) }
        set { base.storeBytes(of: newValue, toByteOffset: offset, as: UInt8.self) }
    }
    func write64(at offset: Int, _ value: UInt64) { base.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
    func read64(at offset: Int) -> UInt64 { base.load(fromByteOffset: offset, as: UInt64.self) }
}

/// A record in user memory, for driver data and invalidation arrays.
final class UserRecord<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    let count: Int
    init(_ values: [T]) {
        count = values.count
        pointer = .allocate(capacity: max(1, values.count))
        pointer.initialize(from: values, count: values.count)
    }
    deinit { pointer.deallocate() }
    var address: UInt64 { UInt64(UInt(bitPattern: pointer)) }
}

/// A context on this process's memory, a driver, and one device behind it.
struct SMMURig {
    let context: Context
    let driver: SMMUv3Driver
    let master: SMMUv3Master
    let device: Device.ID

    init(features: SMMUv3Features = SMMUv3Features(), capabilities: PCIFunction.Capabilities = .init(pasidWidth: 20),
         requesterID: RequesterID = RequesterID(bus: 0, device: 4, function: 0)) throws {
        context = Context(memory: ProcessMemory.shared)
        driver = SMMUv3Driver(features: features)
        master = driver.addDevice(requesterID: requesterID, capabilities: capabilities)
        device = try master.bind(to: context)
    }

    /// The STE of the device, read from the stream table.
    var ste: SMMUv3StreamTableEntry {
        let s = driver.state.withLock { s in driver.steAddress(&s, sid: master.streamID) }
        return SMMUv3StreamTableEntry(memory: driver.memory, at: s)
    }
}

/// Guest RAM: a user buffer the host maps in the IOAS at guest-physical `gpa`. The guest builds
/// its tables in a scratch memory laid out at the same GPAs (pages from `tablePage` on) and
/// ``sync()`` copies them into the buffer.
final class GuestRAM: @unchecked Sendable {
    let buffer: UserBuffer
    let gpa: UInt64
    let scratch: PhysicalMemory
    let tablePage: Int

    init(gpa: UInt64, pages: Int = 64, tablePage: Int = 32) {
        buffer = UserBuffer(pages: pages)
        self.gpa = gpa
        self.tablePage = tablePage
        scratch = PhysicalMemory(allocatorBase: gpa + UInt64(tablePage) * 4096, allocatorLimit: gpa + UInt64(pages) * 4096)
    }

    /// The GPA of data page `i`.
    func page(_ i: Int) -> UInt64 { gpa + UInt64(i) * 4096 }

    /// A guest stage-1 table (48-bit, the guest's view).
    func stage1Table() throws -> ArmStage1PageTable { try ArmStage1PageTable(memory: scratch, format: ArmStage1Format()) }

    /// Writes the 64-bit word at `address` (a GPA) of the scratch memory.
    func write64(_ address: UInt64, _ value: UInt64) { scratch.write64(address, value) }

    /// Copies the guest's table pages into the buffer.
    func sync() {
        var frame = scratch.allocatorBase
        while frame < scratch.allocatorLimit {
            let offset = Int(frame - gpa)
            for w in stride(from: 0, to: 4096, by: 8) { buffer.write64(at: offset + w, scratch.read64(frame + UInt64(w))) }
            frame += 4096
        }
    }
}

/// Non-global, unprivileged-accessible stage-1 mapping attributes and permissions (as Linux).
let guestAttributes = ArmStage1Attributes(notGlobal: true)
let guestRW: ArmStage1Permissions = [.write, .user]

/// Runs `body`, which must fail with `errno`.
func expectErrno<R>(_ errno: Int32, _ body: () throws -> R, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        let r = try body()
        Issue.record("expected errno \(errno), got \(r)", sourceLocation: sourceLocation)
    } catch {
        #expect((error as? IOMMUError)?.errno == errno, "expected errno \(errno), got \(error)", sourceLocation: sourceLocation)
    }
}

extension DMAResult {
    var completedValue: Value? { if case .completed(let v) = self { v } else { nil } }
    var failed: Bool { if case .failed = self { true } else { false } }
    var parked: PendingDMA<Value>? { if case .waitingForPageResponse(let p) = self { p } else { nil } }
}

import Testing
