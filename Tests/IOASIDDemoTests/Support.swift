// Helpers of the demo suites: the process-wide pin lock, hardware of either IOMMU kind, DMA.
import Foundation
import IOASIDCore
@testable import IOASIDDemo
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Testing

/// Runs `body` holding the shared side of the process-wide pin lock: the core suites compare the
/// process's total of pinned pages and take it exclusively (IOASIDCoreTests/Support.swift, the
/// same per-process file). Taken inside each synchronous test body, never across an `await`: a
/// holder suspended while the cooperative pool's threads block in `flock` for the exclusive side
/// could never run again to release it.
func pinsUserMemory<R>(_ body: () throws -> R) rethrows -> R {
    let fd = open(NSTemporaryDirectory() + "ioasid-pinlock-\(getpid())", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    precondition(fd >= 0, "cannot open the pin lock file")
    while flock(fd, LOCK_SH) != 0 { precondition(errno == EINTR) }
    defer { flock(fd, LOCK_UN); close(fd) }
    return try body()
}

/// The errno a throwing call fails with, or nil if it succeeds.
func errnoOf<T>(_ body: () throws -> T) -> Int32? {
    do { _ = try body(); return nil } catch { return (error as? IOMMUError)?.errno ?? -1 }
}

let EPERM: Int32 = 1, ENOENT: Int32 = 2, EBUSY: Int32 = 16, ENOSPC: Int32 = 28

/// Which IOMMU model a test runs on.
enum IOMMUKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case vtd, smmuv3
    var testDescription: String { rawValue }
}

/// One IOMMU of either kind, its driver, and functions behind it.
final class Hardware: @unchecked Sendable {
    let kind: IOMMUKind
    let vtd: VTdDriver?
    let smmu: SMMUv3Driver?

    init(_ kind: IOMMUKind) throws {
        self.kind = kind
        switch kind {
        case .vtd:
            vtd = try VTdDriver(memory: VTdDriver.processMemory(), configuration: VTdConfiguration(), delivery: .manual)
            smmu = nil
        case .smmuv3:
            vtd = nil
            smmu = SMMUv3Driver()
        }
    }

    /// A PASID-capable (20-bit) function behind the IOMMU: the core's device model and the PCI
    /// function that issues its DMA.
    func function(_ rid: RequesterID, ats: Bool = false) throws -> (model: any DeviceModel, function: PCIFunction) {
        let caps = PCIFunction.Capabilities(pasidWidth: 20, ats: ats ? .deviceTLB : nil)
        switch kind {
        case .vtd:
            let d = try vtd!.addDevice(requesterID: rid, capabilities: caps)
            return (d, d.function)
        case .smmuv3:
            let m = smmu!.addDevice(requesterID: rid, capabilities: caps)
            return (m, m.function)
        }
    }

    /// What the IOMMU recorded for blocked requests of `rid` at `pasid` since the last call
    /// (VT-d fault records; SMMUv3 events), as text.
    func takeBlockedRecords(_ rid: RequesterID, pasid: UInt32?) -> [String] {
        switch kind {
        case .vtd:
            return vtd!.unit.takeFaults().filter { $0.sourceID == rid.rawValue && $0.pasid == pasid }.map(\.description)
        case .smmuv3:
            smmu!.processInterrupts()
            return smmu!.takeUnhandledEvents().filter { $0.streamID == UInt32(rid.rawValue) && $0.substreamID == pasid }
                .map(\.description)
        }
    }
}

/// Writes `bytes` by DMA at `address` with `pasid`; true when it completed.
func dmaWrite(_ f: PCIFunction, pasid: UInt32?, _ address: UInt64, _ bytes: [UInt8]) -> Bool {
    if case .completed = f.write(pasid: pasid.map { IOASIDSoftIOMMU.PASID($0) }, address: address, bytes: bytes) { return true }
    return false
}

extension DemoBuffer {
    subscript(offset: Int) -> UInt8 { base.load(fromByteOffset: offset, as: UInt8.self) }
}
