import IOASIDProcessMemory
import Foundation
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Testing

/// Page-aligned memory owned by a test (user memory of this process, zero-filled).
final class VTdUserBuffer: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let length: Int

    init(pages: Int) {
        length = pages * 4096
        base = TestArena.allocate(length)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: length)
    }

    deinit { TestArena.release(base, length) }

    var address: UInt64 { UInt64(UInt(bitPattern: base)) }
    func address(page: Int) -> UInt64 { address + UInt64(page * 4096) }
    subscript(offset: Int) -> UInt8 {
        get { base.load(fromByteOffset: offset, as: UInt8.self) }
        set { base.storeBytes(of: newValue, toByteOffset: offset, as: UInt8.self) }
    }
    func word(at offset: Int) -> UInt64 { base.load(fromByteOffset: offset, as: UInt64.self) }
    func setWord(_ value: UInt64, at offset: Int) { base.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
}

/// A value placed in user memory (for driver data and invalidation arrays).
final class VTdUserValue<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    let count: Int
    init(_ values: [T]) {
        count = values.count
        pointer = .allocate(capacity: values.count)
        pointer.initialize(from: values, count: values.count)
    }
    deinit { pointer.deinitialize(count: count); pointer.deallocate() }
    var address: UInt64 { UInt64(UInt(bitPattern: pointer)) }
}

/// One VT-d driver on process memory, a context, and helpers.
struct VTdSetup {
    let driver: VTdDriver
    let context: Context

    init(delivery: VTdDriver.PageRequestDelivery = .manual, configuration: VTdConfiguration = VTdConfiguration()) throws {
        driver = try VTdDriver(memory: VTdDriver.processMemory(), configuration: configuration, delivery: delivery)
        context = Context(memory: ProcessMemory.shared)
    }

    /// A PCI function with PASID (20 bits), ATS and PRI unless told otherwise, bound to the context.
    func device(_ rid: RequesterID = RequesterID(bus: 0x10, device: 0, function: 0), pasid: Bool = true, ats: Bool = true,
                pri: Bool = true, privileged: Bool = false) throws -> (VTdDevice, Device.ID) {
        let caps = PCIFunction.Capabilities(pasidWidth: pasid ? 20 : nil, privilegedMode: privileged && pasid,
                                            ats: ats ? .deviceTLB : nil, pageRequestCapacity: ats && pri ? 32 : nil)
        let d = try driver.addDevice(requesterID: rid, capabilities: caps)
        return (d, try d.bind(to: context))
    }
}

/// Runs `body`, which must fail with `errno`.
func expectVTdErrno<R>(_ errno: Int32, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                    _ body: () throws -> R) {
    do {
        let r = try body()
        Issue.record("expected errno \(errno), got success \(r). \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    } catch {
        #expect((error as? IOMMUError)?.errno == errno, "expected errno \(errno), got \(error) \(comment.map { "\($0)" } ?? "")",
                sourceLocation: sourceLocation)
    }
}

/// Writes `bytes` by DMA; true when it completed.
func dmaWrite(_ d: VTdDevice, pasid: UInt32? = nil, _ address: UInt64, _ bytes: [UInt8]) -> Bool {
    if case .completed = d.function.write(pasid: pasid.map { IOASIDSoftIOMMU.PASID($0) }, address: address, bytes: bytes) { return true }
    return false
}

/// Reads `count` bytes by DMA; nil when it did not complete.
func dmaRead(_ d: VTdDevice, pasid: UInt32? = nil, _ address: UInt64, count: Int) -> [UInt8]? {
    if case .completed(let data) = d.function.read(pasid: pasid.map { IOASIDSoftIOMMU.PASID($0) }, address: address, count: count) {
        return data
    }
    return nil
}
