// A modelled machine: IOMMUs and the PCI functions behind them (the Swift API for device
// emulators; also what `ioasid run --machine` builds).
import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

/// A device of the modelled machine that issues DMA: the core's device model plus the PCI
/// function (requester ID, PASID, ATS, PRI) whose reads and writes go through its IOMMU.
public protocol DMADevice: DeviceModel {
    /// The PCI function that issues the device's DMA.
    var function: PCIFunction { get }
}

extension VTdDevice: DMADevice {}
extension SMMUv3Master: DMADevice {}

/// A machine of modelled IOMMUs with PCI functions behind them.
///
/// ```swift
/// let machine = SoftMachine()
/// let nic = try machine.addVTdDevice()                 // 00:01.0 behind the VT-d unit
/// let context = Context(memory: ProcessMemory.shared)  // one "open of /dev/iommu"
/// let device = try context.bind(nic)
/// let ioas = try context.allocateIOAS()
/// _ = try context.map(ioas, source: .user(address: buffer), length: 1 << 20, iova: 0x10_0000, access: .readWrite)
/// _ = try context.attach(device, to: ioas.object)
/// _ = nic.function.write(address: 0x10_0000, bytes: [1, 2, 3])   // DMA lands in `buffer`
/// ```
///
/// One VT-d unit and one SMMUv3 are created on first use; devices get requester IDs
/// `00:01.0`, `00:02.0`, … in the order they are added. The host-physical address space is this
/// process's: pages the core pins are translated to their user addresses.
public final class SoftMachine: @unchecked Sendable {
    private let lock = Locked<State>(State())
    private struct State {
        var vtd: VTdDriver?
        var smmu: SMMUv3Driver?
        var devices: [any DMADevice] = []
    }
    /// How the VT-d driver delivers page requests to fault queues.
    public let vtdDelivery: VTdDriver.PageRequestDelivery
    /// What the VT-d unit supports (created with the first VT-d device).
    public let vtdConfiguration: VTdConfiguration

    /// An empty machine. `vtdDelivery: .interruptThread` delivers page requests on the driver's
    /// own thread, as the kernel's threaded interrupt handler does; `.manual` waits for
    /// ``VTdDriver/servicePageRequests()``. `vtdConfiguration` describes the VT-d unit.
    public init(vtdDelivery: VTdDriver.PageRequestDelivery = .interruptThread,
                vtdConfiguration: VTdConfiguration = VTdConfiguration()) {
        self.vtdDelivery = vtdDelivery
        self.vtdConfiguration = vtdConfiguration
    }

    /// The default capabilities of an added function: 20-bit PASIDs, ATS with a device TLB, PRI
    /// with 32 outstanding page requests.
    public static let defaultCapabilities = PCIFunction.Capabilities(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 32)

    /// The devices, in the order they were added.
    public var devices: [any DMADevice] { lock.withLock { $0.devices } }

    /// The VT-d driver (created by the first VT-d device).
    public var vtd: VTdDriver? { lock.withLock { $0.vtd } }
    /// The SMMUv3 driver (created by the first SMMUv3 device).
    public var smmu: SMMUv3Driver? { lock.withLock { $0.smmu } }

    private func nextRequesterID(_ s: State) -> RequesterID {
        RequesterID(bus: 0, device: UInt8(truncatingIfNeeded: s.devices.count + 1), function: 0)
    }

    /// Adds a PCI function behind the VT-d unit, at `requesterID` (default: the next free slot
    /// `00:NN.0` in the order of addition; `EEXIST` if the ID is taken).
    public func addVTdDevice(requesterID: RequesterID? = nil,
                             capabilities: PCIFunction.Capabilities = SoftMachine.defaultCapabilities) throws(IOMMUError) -> VTdDevice {
        try lock.withLock { (s) throws(IOMMUError) -> VTdDevice in
            guard s.devices.count < 31 * 8 else { throw .noSpace("the machine's bus is full") }
            if s.vtd == nil { s.vtd = try VTdDriver(memory: VTdDriver.processMemory(), configuration: vtdConfiguration, delivery: vtdDelivery) }
            let d = try s.vtd!.addDevice(requesterID: requesterID ?? nextRequesterID(s), capabilities: capabilities)
            s.devices.append(d)
            return d
        }
    }

    /// Adds a PCI function behind the SMMUv3, at `requesterID` (default: the next free slot;
    /// `EEXIST` if the ID is taken).
    public func addSMMUv3Device(requesterID: RequesterID? = nil,
                                capabilities: PCIFunction.Capabilities = SoftMachine.defaultCapabilities) throws(IOMMUError) -> SMMUv3Master {
        try lock.withLock { (s) throws(IOMMUError) -> SMMUv3Master in
            guard s.devices.count < 31 * 8 else { throw .noSpace("the machine's bus is full") }
            let rid = requesterID ?? nextRequesterID(s)
            guard !s.devices.contains(where: { $0.function.requesterID == rid }) else { throw .exists("requester ID in use") }
            if s.smmu == nil { s.smmu = SMMUv3Driver() }
            let d = s.smmu!.addDevice(requesterID: rid, capabilities: capabilities)
            s.devices.append(d)
            return d
        }
    }
}
