// The configuration space of a plugged PCI function, as the hardware presents it.
//
// Built once from a `PCIDeviceModel`'s description: the type-0 header (IDs, COMMAND, STATUS,
// BARs at host-assigned addresses, INTA), the capability list (PM, MSI, MSI-X, PCI Express, in
// the model's order) from 0x40, and the extended capabilities (PASID, ATS, PRI, SR-IOV) from
// 0x100. Every byte has a mask of the bits software may change; BAR registers keep only their
// address bits writable, which is what makes the all-ones sizing probe read back the size.
//
// This is the "physical" view. The VFIO face virtualizes parts of it on top (vfio-pci's
// permission tables); the machine reacts to the registers that steer it (COMMAND's memory and
// bus-master enables, MSI/MSI-X enables, the PCI Express FLR bit) through `PCIDeviceSlot`.

/// Register offsets and bits of the PCI configuration space (PCI Local Bus 3.0, PCIe 6.0).
public enum PCIRegister {
    public static let vendorID = 0x00
    public static let deviceID = 0x02
    public static let command = 0x04
    public static let status = 0x06
    public static let revision = 0x08
    public static let classCode = 0x09
    public static let cacheLineSize = 0x0c
    public static let latencyTimer = 0x0d
    public static let headerType = 0x0e
    public static let bist = 0x0f
    public static let bar0 = 0x10
    public static let subsystemVendorID = 0x2c
    public static let subsystemID = 0x2e
    public static let romAddress = 0x30
    public static let capabilityList = 0x34
    public static let interruptLine = 0x3c
    public static let interruptPin = 0x3d
    /// Size of the type-0 header (`PCI_STD_HEADER_SIZEOF`).
    public static let headerSize = 0x40
    /// Size of conventional configuration space; extended capabilities start here.
    public static let conventionalSize = 0x100
    /// Size of PCI Express configuration space.
    public static let expressSize = 0x1000

    // COMMAND bits.
    public static let commandIO: UInt16 = 1 << 0
    public static let commandMemory: UInt16 = 1 << 1
    public static let commandBusMaster: UInt16 = 1 << 2
    public static let commandParity: UInt16 = 1 << 6
    public static let commandSERR: UInt16 = 1 << 8
    public static let commandINTxDisable: UInt16 = 1 << 10
    // STATUS bits.
    public static let statusInterrupt: UInt16 = 1 << 3
    public static let statusCapabilityList: UInt16 = 1 << 4

    // Capability IDs.
    public static let capabilityPM: UInt8 = 0x01
    public static let capabilityMSI: UInt8 = 0x05
    public static let capabilityExpress: UInt8 = 0x10
    public static let capabilityMSIX: UInt8 = 0x11
    // Extended capability IDs.
    public static let extendedATS: UInt16 = 0x0f
    public static let extendedSRIOV: UInt16 = 0x10
    public static let extendedPRI: UInt16 = 0x13
    public static let extendedPASID: UInt16 = 0x1b

    // MSI capability: flags at +2.
    public static let msiEnable: UInt16 = 1 << 0
    public static let msi64Bit: UInt16 = 1 << 7
    public static let msiPerVectorMasking: UInt16 = 1 << 8
    // MSI-X capability: control at +2, table at +4, PBA at +8.
    public static let msixEnable: UInt16 = 1 << 15
    public static let msixFunctionMask: UInt16 = 1 << 14
    // PCI Express capability: device capabilities at +4, device control at +8.
    public static let expressDeviceCapabilityFLR: UInt32 = 1 << 28
    public static let expressDeviceControlFLR: UInt16 = 1 << 15
}

/// Where each capability of a function's configuration space lies (0 when absent).
public struct PCICapabilityLayout: Hashable, Sendable {
    public var powerManagement = 0
    public var msi = 0
    public var msix = 0
    public var express = 0
    public var pasid = 0
    public var ats = 0
    public var pri = 0
    public var sriov = 0
    /// Vectors of the MSI capability (0 without one).
    public var msiVectors = 0
    /// Vectors of the MSI-X table (0 without one).
    public var msixVectors = 0
    /// The BAR holding the MSI-X table (-1 without MSI-X) and the table's offset in it.
    public var msixTableBAR = -1
    public var msixTableOffset: UInt64 = 0
    /// The BAR holding the MSI-X pending-bit array (-1 without MSI-X) and its offset in it.
    public var msixPBABAR = -1
    public var msixPBAOffset: UInt64 = 0
}

/// A function's 4 KiB configuration space: the bytes and, per bit, whether software may write it.
///
/// Values are little endian. Accesses are 1, 2 or 4 bytes and must not cross a 4-byte boundary
/// (as on the bus); the VFIO face splits wider or unaligned accesses before they get here.
public struct PCIConfigSpace: Sendable {
    /// The current contents.
    public private(set) var bytes: [UInt8]
    /// Bits software may change (1 = writable).
    public private(set) var writable: [UInt8]
    /// Where the capabilities are.
    public private(set) var layout = PCICapabilityLayout()
    /// The BARs as the model declared them, by register index (nil: unimplemented or upper half).
    public let bars: [PCIBAR?]
    /// The host-assigned address of each BAR (0 when unimplemented).
    public let barAddresses: [UInt64]

    /// The power-on configuration space of `model`; BARs are placed at `barBase` upwards
    /// (naturally aligned), as the host's resource assignment would.
    public init(model: any PCIDeviceModel, barBase: UInt64 = 0xfe00_0000) {
        bytes = [UInt8](repeating: 0, count: PCIRegister.expressSize)
        writable = [UInt8](repeating: 0, count: PCIRegister.expressSize)
        var bars = [PCIBAR?](repeating: nil, count: 6)
        for bar in model.bars where (0..<6).contains(bar.index) { bars[bar.index] = bar }
        self.bars = bars
        var addresses = [UInt64](repeating: 0, count: 6)
        var next = barBase
        for case let bar? in bars {
            let size = max(bar.size, bar.kind == .io ? 4 : 16)
            next = (next + size - 1) & ~(size - 1)
            addresses[bar.index] = next
            next += size
        }
        barAddresses = addresses
        var layout = PCICapabilityLayout()
        let identity = model.identity
        put16(PCIRegister.vendorID, identity.vendorID)
        put16(PCIRegister.deviceID, identity.deviceID)
        let hasIO = bars.contains { $0?.kind == .io }
        let hasMemory = bars.contains { $0 != nil && $0?.kind != .io }
        var commandMask = PCIRegister.commandBusMaster | PCIRegister.commandSERR | PCIRegister.commandINTxDisable
        if hasIO { commandMask |= PCIRegister.commandIO }
        if hasMemory { commandMask |= PCIRegister.commandMemory }
        mask16(PCIRegister.command, commandMask)
        bytes[PCIRegister.revision] = identity.revision
        bytes[PCIRegister.classCode] = UInt8(identity.classCode & 0xff)
        bytes[PCIRegister.classCode + 1] = UInt8((identity.classCode >> 8) & 0xff)
        bytes[PCIRegister.classCode + 2] = UInt8((identity.classCode >> 16) & 0xff)
        writable[PCIRegister.cacheLineSize] = 0xff
        // The latency timer is hardwired to 0 on PCI Express.
        for case let bar? in bars {
            let offset = PCIRegister.bar0 + 4 * bar.index
            let size = max(bar.size, bar.kind == .io ? 4 : 16)
            let addressMask = ~(size - 1)
            var low = UInt32(truncatingIfNeeded: addresses[bar.index])
            switch bar.kind {
            case .io: low |= 1
            case .memory32: if bar.prefetchable { low |= 1 << 3 }
            case .memory64: low |= 2 << 1; if bar.prefetchable { low |= 1 << 3 }
            }
            put32(offset, low)
            mask32(offset, UInt32(truncatingIfNeeded: addressMask) & (bar.kind == .io ? ~3 : ~0xf))
            if bar.kind == .memory64, bar.index < 5 {
                put32(offset + 4, UInt32(truncatingIfNeeded: addresses[bar.index] >> 32))
                mask32(offset + 4, UInt32(truncatingIfNeeded: addressMask >> 32))
            }
        }
        put16(PCIRegister.subsystemVendorID, identity.subsystemVendorID)
        put16(PCIRegister.subsystemID, identity.subsystemID)
        writable[PCIRegister.interruptLine] = 0xff
        bytes[PCIRegister.interruptPin] = 1  // INTA#

        // Capabilities, chained from 0x40 in the model's order.
        var at = PCIRegister.headerSize
        var previousNext = PCIRegister.capabilityList
        func link(_ id: UInt8, length: Int) -> Int {
            let start = at
            bytes[previousNext] = UInt8(start)
            bytes[start] = id
            previousNext = start + 1
            at = (start + length + 3) & ~3
            return start
        }
        var extended: [PCICapability] = []
        for capability in model.capabilities {
            switch capability {
            case .powerManagement:
                let p = link(PCIRegister.capabilityPM, length: 8)
                layout.powerManagement = p
                put16(p + 2, 0x0003)          // PMC: version 3, no PME support
                put16(p + 4, 0x0008)          // PMCSR: D0, No_Soft_Reset
                mask16(p + 4, 0x0003)         // power state
            case .msi(let vectors, let wide, let masking):
                let length = 10 + (wide ? 4 : 0) + (masking ? 10 : 0)
                let p = link(PCIRegister.capabilityMSI, length: length)
                layout.msi = p
                layout.msiVectors = max(1, min(32, vectors))
                let mmc = UInt16(Self.log2(layout.msiVectors))
                var flags = mmc << 1
                if wide { flags |= PCIRegister.msi64Bit }
                if masking { flags |= PCIRegister.msiPerVectorMasking }
                put16(p + 2, flags)
                mask16(p + 2, PCIRegister.msiEnable | 0x70)
                mask32(p + 4, ~3)
                if wide { mask32(p + 8, ~0) }
                let data = wide ? p + 12 : p + 8
                mask16(data, 0xffff)
                if masking { mask32(wide ? p + 16 : p + 12, ~0) }   // mask bits (pending bits are read-only)
            case .msix(let vectors, let tableBAR, let tableOffset, let pbaBAR, let pbaOffset):
                let p = link(PCIRegister.capabilityMSIX, length: 12)
                layout.msix = p
                layout.msixVectors = max(1, min(2048, vectors))
                put16(p + 2, UInt16(layout.msixVectors - 1))
                mask16(p + 2, PCIRegister.msixEnable | PCIRegister.msixFunctionMask)
                put32(p + 4, (tableOffset & ~7) | UInt32(tableBAR & 7))
                put32(p + 8, (pbaOffset & ~7) | UInt32(pbaBAR & 7))
                layout.msixTableBAR = tableBAR
                layout.msixTableOffset = UInt64(tableOffset & ~7)
                layout.msixPBABAR = pbaBAR
                layout.msixPBAOffset = UInt64(pbaOffset & ~7)
            case .pciExpress(let type, let flr):
                let length = type == .rootComplexIntegratedEndpoint ? 0x2c : 0x3c
                let p = link(PCIRegister.capabilityExpress, length: length)
                layout.express = p
                put16(p + 2, 0x0002 | UInt16(type.rawValue) << 4)      // version 2
                var deviceCapabilities: UInt32 = 0x1                    // 256-byte max payload
                if flr { deviceCapabilities |= PCIRegister.expressDeviceCapabilityFLR }
                put32(p + 4, deviceCapabilities)
                put16(p + 8, 0x2810)                                    // relaxed ordering, MRRS 512
                mask16(p + 8, 0x7cff | (flr ? PCIRegister.expressDeviceControlFLR : 0))
                if type == .endpoint {
                    put32(p + 0x0c, 0x0000_0011)                        // link: 2.5 GT/s x1
                    put16(p + 0x12, 0x0011)
                }
                mask16(p + 0x28, 0x07ff)                                // device control 2
            default:
                extended.append(capability)
            }
        }
        if previousNext != PCIRegister.capabilityList {
            bytes[PCIRegister.status] |= UInt8(PCIRegister.statusCapabilityList)
        }

        // Extended capabilities from 0x100.
        var extendedAt = PCIRegister.conventionalSize
        var previousHeader = -1
        func linkExtended(_ id: UInt16, version: UInt32, length: Int) -> Int {
            let start = extendedAt
            if previousHeader >= 0 {
                let header = get32(previousHeader) | UInt32(start) << 20
                put32(previousHeader, header)
            }
            put32(start, UInt32(id) | version << 16)
            previousHeader = start
            extendedAt = (start + length + 7) & ~7
            return start
        }
        for capability in extended {
            switch capability {
            case .pasid(let width, let execute, let privileged):
                let p = linkExtended(PCIRegister.extendedPASID, version: 1, length: 8)
                layout.pasid = p
                var cap = UInt16(max(1, min(20, width))) << 8
                if execute { cap |= 1 << 1 }
                if privileged { cap |= 1 << 2 }
                put16(p + 4, cap)
                mask16(p + 6, 0x0001 | (execute ? 0x2 : 0) | (privileged ? 0x4 : 0))
            case .ats:
                let p = linkExtended(PCIRegister.extendedATS, version: 1, length: 8)
                layout.ats = p
                put16(p + 4, 0x0020)                                    // page aligned requests, queue depth 32
                mask16(p + 6, 0x801f)                                   // enable, STU
            case .pageRequest(let capacity):
                let p = linkExtended(PCIRegister.extendedPRI, version: 1, length: 16)
                layout.pri = p
                mask16(p + 4, 0x0003)                                   // enable, reset
                put16(p + 6, 0x0100)                                    // stopped
                put32(p + 8, UInt32(max(0, capacity)))
                mask32(p + 12, ~0)
            case .sriov(let total, let vfDevice, let firstOffset, let stride):
                let p = linkExtended(PCIRegister.extendedSRIOV, version: 1, length: 0x40)
                layout.sriov = p
                mask16(p + 8, 0x001f)                                   // VF enable, migration, interrupt, MSE, ARI
                put16(p + 0x0c, UInt16(max(0, total)))                  // initial VFs
                put16(p + 0x0e, UInt16(max(0, total)))                  // total VFs
                mask16(p + 0x10, 0xffff)                                // number of VFs
                put16(p + 0x14, firstOffset)
                put16(p + 0x16, stride)
                put16(p + 0x1a, vfDevice)
                put32(p + 0x1c, 0x0000_0553)                            // supported page sizes
                put32(p + 0x20, 0x0000_0001)                            // system page size 4 KiB
                mask32(p + 0x20, 0xffff_ffff)
            default:
                break
            }
        }
        self.layout = layout
    }

    // MARK: access

    /// Reads `size` (1, 2 or 4) bytes at `offset`; 0xff… outside the space.
    public func read(_ offset: Int, size: Int) -> UInt32 {
        guard offset >= 0, offset + size <= bytes.count else { return size == 4 ? ~0 : (1 << (8 * UInt32(size))) - 1 }
        var value: UInt32 = 0
        for i in 0..<size { value |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
        return value
    }

    /// Writes the writable bits of `size` bytes at `offset`; read-only bits keep their value.
    public mutating func write(_ offset: Int, size: Int, value: UInt32) {
        guard offset >= 0, offset + size <= bytes.count else { return }
        for i in 0..<size {
            let b = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i)))
            let m = writable[offset + i]
            bytes[offset + i] = (bytes[offset + i] & ~m) | (b & m)
        }
    }

    /// Sets bytes regardless of the writable mask: the function's own updates (status bits, the
    /// enables the machine drives).
    public mutating func set(_ offset: Int, size: Int, value: UInt32) {
        for i in 0..<size { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }

    /// The COMMAND register.
    public var command: UInt16 { UInt16(read(PCIRegister.command, size: 2)) }

    // MARK: building

    private mutating func put16(_ o: Int, _ v: UInt16) { set(o, size: 2, value: UInt32(v)) }
    private mutating func put32(_ o: Int, _ v: UInt32) { set(o, size: 4, value: v) }
    private func get32(_ o: Int) -> UInt32 { read(o, size: 4) }
    private mutating func mask16(_ o: Int, _ m: UInt16) { writable[o] = UInt8(m & 0xff); writable[o + 1] = UInt8(m >> 8) }
    private mutating func mask32(_ o: Int, _ m: UInt32) { for i in 0..<4 { writable[o + i] = UInt8(truncatingIfNeeded: m >> (8 * UInt32(i))) } }

    private static func log2(_ n: Int) -> Int {
        var r = 0
        while (1 << (r + 1)) <= n { r += 1 }
        return r
    }
}
