// What a device author writes to put a PCI device on the modelled machine.
//
// A device model is its identity (the configuration header's IDs), its BARs, the capabilities
// it advertises, and the behaviour of its registers. Everything else — the configuration space
// built from that description (BAR sizing, COMMAND, the capability lists), the MSI/MSI-X tables
// and their delivery to eventfds, the VFIO regions, trapped MMIO from a program that mapped a
// BAR — is the machine's and the VFIO face's, not the device author's.
//
// The model does DMA only through its host: `host.dma` (a `DMAPort`: reads and writes by IOVA
// into the model's own buffers, refused while bus mastering is off) or the host's `function` (a
// `PCIFunction`, for PASIDs, ATS, page requests and bulk copies), both through the IOMMU by IOVA
// and only while `busMasterEnabled` says so, exactly as hardware must. It never touches program
// memory directly; this keeps the door open for a mode in which the engine and its devices run
// in another process than the program (the function's memory is then the other process's view
// of the program's pinned pages, and nothing here changes; docs/machine.md, "Device memory
// access").
//
// A machine builds a model by kind name: register a factory in `DeviceKinds` (IOASIDSoftDrivers)
// and `--machine vtd:NAME` names it; an engine library of your own registers its kinds when it
// starts (docs/machine.md, "Adding a device kind"; Examples/custom-device).
//
// Register access is by value (1, 2, 4 or 8 bytes, little endian), or by a byte span for wider
// stores (64-byte `MOVDIR64B` work submission). Calls may come from any thread; a model
// serialises its own state.

/// The identity registers of a PCI function's configuration header.
public struct PCIIdentity: Hashable, Sendable {
    /// Vendor ID (offset 0x00), e.g. 0x8086.
    public var vendorID: UInt16
    /// Device ID (offset 0x02).
    public var deviceID: UInt16
    /// Revision ID (offset 0x08).
    public var revision: UInt8
    /// Class code (offsets 0x09–0x0b): base class << 16 | subclass << 8 | programming interface.
    public var classCode: UInt32
    /// Subsystem vendor ID (offset 0x2c).
    public var subsystemVendorID: UInt16
    /// Subsystem ID (offset 0x2e).
    public var subsystemID: UInt16

    /// An identity; the subsystem IDs default to the vendor and device IDs.
    public init(vendorID: UInt16, deviceID: UInt16, revision: UInt8 = 0, classCode: UInt32,
                subsystemVendorID: UInt16? = nil, subsystemID: UInt16? = nil) {
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.revision = revision
        self.classCode = classCode & 0xff_ffff
        self.subsystemVendorID = subsystemVendorID ?? vendorID
        self.subsystemID = subsystemID ?? deviceID
    }
}

/// A base address register's window.
public struct PCIBAR: Hashable, Sendable {
    /// What the window decodes.
    public enum Kind: Hashable, Sendable {
        /// Memory space, 32-bit address (one BAR register).
        case memory32
        /// Memory space, 64-bit address (this BAR register and the next).
        case memory64
        /// I/O space.
        case io
    }

    /// The BAR register index, 0–5 (a 64-bit BAR also uses `index + 1`).
    public var index: Int
    /// Size in bytes: a power of two, at least 16 for memory and 4 for I/O.
    public var size: UInt64
    /// What the window decodes.
    public var kind: Kind
    /// The prefetchable bit of a memory BAR.
    public var prefetchable: Bool

    /// A BAR.
    public init(index: Int, size: UInt64, kind: Kind = .memory64, prefetchable: Bool = false) {
        self.index = index
        self.size = size
        self.kind = kind
        self.prefetchable = prefetchable
    }
}

/// The device/port type of a PCI Express capability.
public enum PCIExpressDeviceType: UInt8, Hashable, Sendable {
    /// A PCI Express endpoint.
    case endpoint = 0
    /// A root complex integrated endpoint.
    case rootComplexIntegratedEndpoint = 9
}

/// A capability the function advertises in its configuration space.
public enum PCICapability: Hashable, Sendable {
    /// Power management (PCI capability ID 0x01).
    case powerManagement
    /// MSI (0x05) with `vectors` (1, 2, 4, … 32) messages.
    case msi(vectors: Int, addresses64Bit: Bool, perVectorMasking: Bool)
    /// MSI-X (0x11): `vectors` table entries; the table and the pending-bit array live in BARs.
    case msix(vectors: Int, tableBAR: Int, tableOffset: UInt32, pbaBAR: Int, pbaOffset: UInt32)
    /// PCI Express (0x10).
    case pciExpress(deviceType: PCIExpressDeviceType, functionLevelReset: Bool)
    /// PASID (extended capability 0x1b).
    case pasid(width: Int, executePermission: Bool, privilegedMode: Bool)
    /// Address Translation Services (extended capability 0x0f).
    case ats
    /// Page Request Interface (extended capability 0x13) with its outstanding-request capacity.
    case pageRequest(capacity: Int)
    /// SR-IOV (extended capability 0x10): up to `totalVFs` virtual functions with `vfDeviceID`,
    /// at routing IDs `firstVFOffset + n * vfStride` from the physical function.
    case sriov(totalVFs: Int, vfDeviceID: UInt16, firstVFOffset: UInt16, vfStride: UInt16)
}

/// The machine's side of a plugged device: its DMA port, bus-master state and interrupts.
public protocol PCIDeviceHost: AnyObject, Sendable {
    /// The function that issues the device's DMA through the IOMMU, by IOVA.
    var function: PCIFunction { get }
    /// Whether COMMAND's bus-master enable is set: with it clear the device issues no DMA.
    var busMasterEnabled: Bool { get }
    /// Sends interrupt `vector`: an MSI-X table entry or MSI message (as the function's enabled
    /// mode says), or INTx when neither is enabled (any vector).
    func signal(vector: Int)
}

/// A modelled PCI device: what a device author implements.
///
/// The machine calls the register methods (trapped loads and stores of a program that mapped a
/// BAR, `pread`/`pwrite` on the VFIO regions) and `reset`; the model does DMA through the host
/// it is plugged into (`host.dma`, a ``DMAPort``) and signals interrupts with
/// `host.signal(vector:)`. To make a model selectable with `--machine`, register it in
/// `DeviceKinds`; `Examples/custom-device` is a complete device used from C through VFIO.
///
/// ```swift
/// final class Scratchpad: PCIDeviceModel, @unchecked Sendable {
///     let identity = PCIIdentity(vendorID: 0x1af4, deviceID: 0x10f0, classCode: 0xff_0000)
///     let bars = [PCIBAR(index: 0, size: 4096)]
///     let capabilities: [PCICapability] = [.pciExpress(deviceType: .endpoint, functionLevelReset: true)]
///     private let registers = Locked([UInt64](repeating: 0, count: 512))
///     func read(bar: Int, offset: UInt64, size: Int) -> UInt64 { registers.withLock { $0[Int(offset / 8)] } }
///     func write(bar: Int, offset: UInt64, size: Int, value: UInt64) { registers.withLock { $0[Int(offset / 8)] = value } }
///     func reset() { registers.withLock { $0 = [UInt64](repeating: 0, count: 512) } }
///     func plug(into host: any PCIDeviceHost) {}
/// }
/// ```
public protocol PCIDeviceModel: AnyObject, Sendable {
    /// The configuration header's IDs.
    var identity: PCIIdentity { get }
    /// The BARs the function implements (at most six registers in all).
    var bars: [PCIBAR] { get }
    /// The capabilities the function advertises, in list order.
    var capabilities: [PCICapability] { get }
    /// Reads `size` bytes (1, 2, 4 or 8) at `offset` in BAR `bar`; the value is little endian.
    /// The MSI-X table and pending-bit array are the machine's and never reach the model.
    func read(bar: Int, offset: UInt64, size: Int) -> UInt64
    /// Writes `size` bytes (1, 2, 4 or 8) of `value` at `offset` in BAR `bar`.
    func write(bar: Int, offset: UInt64, size: Int, value: UInt64)
    /// Writes a span wider than 8 bytes as one access (a 64-byte `MOVDIR64B` store). The default
    /// splits it into 8-byte writes in address order.
    func write(bar: Int, offset: UInt64, bytes: UnsafeRawBufferPointer)
    /// A function-level reset: registers to their power-on values, DMA stopped.
    func reset()
    /// Called once, when the machine plugs the device in: where its DMA and interrupts go.
    func plug(into host: any PCIDeviceHost)
}

extension PCIDeviceModel {
    /// Splits the span into 8-byte writes (then 4, 2, 1 for a tail), in address order.
    public func write(bar: Int, offset: UInt64, bytes: UnsafeRawBufferPointer) {
        var at = 0
        for width in [8, 4, 2, 1] {
            while bytes.count - at >= width {
                var value: UInt64 = 0
                for i in 0..<width { value |= UInt64(bytes[at + i]) << (8 * UInt64(i)) }
                write(bar: bar, offset: offset + UInt64(at), size: width, value: value)
                at += width
            }
        }
    }
}
