// Helpers shared by the core suites: page-aligned user memory, errno expectations, a fresh
// context on the real process memory, and the process-wide pin lock.

import IOASIDProcessMemory
import Foundation
import IOASIDCore
import IOASIDLinuxABI
import IOASIDTestDriver
import Testing

/// Page-aligned memory owned by a test, touched so every page is mapped.
final class UserBuffer: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let length: Int

    init(pages: Int, pageSize: Int = 4096) {
        length = pages * pageSize
        base = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: pageSize)
        base.initializeMemory(as: UInt8.self, repeating: 0xA5, count: length)
    }

    deinit { base.deallocate() }

    var address: UInt64 { UInt64(UInt(bitPattern: base)) }
    func address(page: Int) -> UInt64 { address + UInt64(page * 4096) }
}

/// Runs `body`, which must fail with `errno`.
func expectErrno<R>(_ errno: Int32, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                    _ body: () throws -> R) {
    do {
        let r = try body()
        Issue.record("expected errno \(errno), got success \(r). \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    } catch {
        #expect((error as? IOMMUError)?.errno == errno, "expected errno \(errno), got \(error) \(comment.map { "\($0)" } ?? "")",
                sourceLocation: sourceLocation)
    }
}

/// Runs `body`, which must succeed; records the error and returns nil otherwise.
@discardableResult
func expectOK<R>(_ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                 _ body: () throws -> R) -> R? {
    do { return try body() } catch {
        Issue.record("unexpected \(error) \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
        return nil
    }
}

/// A context on the process's real memory plus its test driver.
func makeContext(mayChangeAccounting: Bool = true) -> (Context, TestDriver) {
    let c = Context(memory: ProcessMemory.shared, options: ContextOptions(mayChangeAccounting: mayChangeAccounting))
    return (c, TestDriver(context: c))
}

/// How many `Pages` hold the page at `address` (the kernel's page refcount, as `checkRefs` sees it).
func pinCount(_ address: UInt64) -> Int {
    let id = (try? ProcessMemory.shared.identity(of: address)) ?? .address(address & ~4095)
    return PinRegistry.shared.pinCount(address: address, identity: id)
}

/// `PinRegistry.liveCount` is process-wide and every test target runs in one process, in
/// parallel. Tests that create `Pages` hold this lock shared; tests that compare `liveCount`
/// before and after hold it exclusively. It is an `flock` on a per-process file so that the
/// suites of both test targets (separate modules) see the same lock.
enum PinLock {
    private static let path = NSTemporaryDirectory() + "ioasid-pinlock-\(getpid())"

    static func shared<R>(_ body: () throws -> R) rethrows -> R { try with(LOCK_SH, body) }
    static func exclusive<R>(_ body: () throws -> R) rethrows -> R { try with(LOCK_EX, body) }

    private static func with<R>(_ op: Int32, _ body: () throws -> R) rethrows -> R {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        precondition(fd >= 0, "cannot open the pin lock file")
        while flock(fd, op) != 0 { precondition(errno == EINTR) }
        defer { flock(fd, LOCK_UN); close(fd) }
        return try body()
    }
}

/// A context with one IOAS, a user buffer mapped at a fixed IOVA and a mock device attached
/// (through an auto domain) to the IOAS.
struct Fixture: @unchecked Sendable {
    let context: Context
    let driver: TestDriver
    let ioas: IOAS.ID
    let buffer: UserBuffer
    /// The IOVA the first four pages of `buffer` are mapped at.
    let iova: UInt64
    let handle: ObjectID
    let hwpt: ObjectID
    let device: Device.ID

    static let mappedIOVA: UInt64 = 1 << 24

    init(deviceFlags: UInt32 = 0) throws {
        (context, driver) = makeContext()
        ioas = try context.allocateIOAS()
        buffer = UserBuffer(pages: 16)
        (handle, hwpt, device) = try driver.mockDomain(ioas.object, flags: deviceFlags)
        iova = try context.map(ioas, source: .user(address: buffer.address), length: 4 * 4096,
                               iova: Fixture.mappedIOVA, access: .readWrite)
    }

    /// The mock device behind `handle`.
    func mock(_ handle: ObjectID? = nil) -> MockDevice {
        try! context.withState { s throws(IOMMUError) in
            (try s.object(handle ?? self.handle) as! MockDeviceHandle).mock
        }
    }

    func kinds() -> [ObjectKind] { context.objects.map(\.kind) }
}
