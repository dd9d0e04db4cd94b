import IOASIDStructures

/// The `pci` device kind of the modelled machine (1b36:00f0): a PCI Express endpoint with 20-bit
/// PASIDs, ATS and PRI, MSI and MSI-X, SR-IOV (7 VFs, 1b36:00f1, offset 1, stride 1), and a small DMA engine in a 16 KiB BAR 0 — enough to drive every
/// path of the machine (config space, MSI-X, bus mastering, DMA through the IOMMU) from a
/// user-space driver.
///
/// BAR 0 registers (little endian):
///
/// | offset | width | register |
/// |---|---|---|
/// | 0x000 | 4 | identification, reads `GenericPCIDevice.magic` (read-only) |
/// | 0x008 | 8 | DMA address (IOVA) |
/// | 0x010 | 4 | DMA length, 1 to 256 bytes |
/// | 0x014 | 4 | PASID; bit 31 set: tag the DMA with PASID bits 19:0 |
/// | 0x018 | 4 | doorbell: 1 = read `length` bytes at the address into the buffer, 2 = write the buffer there (write-only) |
/// | 0x01c | 4 | completion vector: signalled when a DMA ends; 0xffffffff = none |
/// | 0x020 | 4 | status: 0 idle, 1 done, 2 IOMMU fault, 3 bus mastering disabled, 4 waiting for a page response |
/// | 0x028 | 8 | scratch |
/// | 0x100 | 256 | data buffer |
/// | 0x2000 | | MSI-X table (8 vectors), then the pending bits at 0x3000 (the machine's) |
public final class GenericPCIDevice: PCIDeviceModel, @unchecked Sendable {
    /// What the identification register reads.
    public static let magic: UInt32 = 0x494f_4153   // "SAOI" little endian: "IOAS"
    public let identity: PCIIdentity
    public let bars = [PCIBAR(index: 0, size: 0x4000, kind: .memory64)]
    public let capabilities: [PCICapability]
    /// Whether this is one of the physical function's virtual functions (1b36:00f1: no MSI, no
    /// SR-IOV, no PRI of its own).
    public let isVirtualFunction: Bool

    private struct Registers {
        var address: UInt64 = 0
        var length: UInt32 = 0
        var pasid: UInt32 = 0
        var vector: UInt32 = 0
        var status: UInt32 = 0
        var scratch: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 256)
    }
    private let registers = Locked(Registers())
    private let hostSlot = Locked<(any PCIDeviceHost)?>(nil)

    /// A device at power-on: the physical function, or one of its virtual functions.
    public init(virtualFunction: Bool = false) {
        isVirtualFunction = virtualFunction
        if virtualFunction {
            identity = PCIIdentity(vendorID: 0x1b36, deviceID: 0x00f1, revision: 1, classCode: 0xff_0000)
            capabilities = [
                .msix(vectors: 8, tableBAR: 0, tableOffset: 0x2000, pbaBAR: 0, pbaOffset: 0x3000),
                .pciExpress(deviceType: .endpoint, functionLevelReset: true),
                .pasid(width: 20, executePermission: false, privilegedMode: false),
                .ats,
            ]
        } else {
            identity = PCIIdentity(vendorID: 0x1b36, deviceID: 0x00f0, revision: 1, classCode: 0xff_0000)
            capabilities = [
                .powerManagement,
                .msi(vectors: 4, addresses64Bit: true, perVectorMasking: true),
                .msix(vectors: 8, tableBAR: 0, tableOffset: 0x2000, pbaBAR: 0, pbaOffset: 0x3000),
                .pciExpress(deviceType: .endpoint, functionLevelReset: true),
                .pasid(width: 20, executePermission: false, privilegedMode: false),
                .ats,
                .pageRequest(capacity: 32),
                .sriov(totalVFs: 7, vfDeviceID: 0x00f1, firstVFOffset: 1, vfStride: 1),
            ]
        }
    }

    public func plug(into host: any PCIDeviceHost) { hostSlot.withLock { $0 = host } }

    public func reset() { registers.withLock { $0 = Registers() } }

    public func read(bar: Int, offset: UInt64, size: Int) -> UInt64 {
        guard bar == 0 else { return 0 }
        return registers.withLock { r -> UInt64 in
            if offset >= 0x100, offset + UInt64(size) <= 0x200 {
                var v: UInt64 = 0
                for i in 0..<size { v |= UInt64(r.buffer[Int(offset) - 0x100 + i]) << (8 * UInt64(i)) }
                return v
            }
            let whole: UInt64
            let base: UInt64
            switch offset & ~7 {
            case 0x00: whole = UInt64(Self.magic); base = 0
            case 0x08: whole = r.address; base = 8
            case 0x10: whole = UInt64(r.length) | UInt64(r.pasid) << 32; base = 0x10
            case 0x18: whole = UInt64(r.vector) << 32; base = 0x18
            case 0x20: whole = UInt64(r.status); base = 0x20
            case 0x28: whole = r.scratch; base = 0x28
            default: return 0
            }
            let shift = 8 * (offset - base)
            return size >= 8 ? whole : (whole >> shift) & ((1 << (8 * UInt64(size))) - 1)
        }
    }

    public func write(bar: Int, offset: UInt64, size: Int, value: UInt64) {
        guard bar == 0 else { return }
        var doorbell: UInt32 = 0
        registers.withLock { r in
            if offset >= 0x100, offset + UInt64(size) <= 0x200 {
                for i in 0..<size { r.buffer[Int(offset) - 0x100 + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
                return
            }
            func merge(_ old: UInt64, base: UInt64) -> UInt64 {
                guard size < 8 else { return value }
                let shift = 8 * (offset - base)
                let mask: UInt64 = ((1 << (8 * UInt64(size))) - 1) << shift
                return (old & ~mask) | ((value << shift) & mask)
            }
            switch offset & ~7 {
            case 0x08: r.address = merge(r.address, base: 8)
            case 0x10:
                let both = merge(UInt64(r.length) | UInt64(r.pasid) << 32, base: 0x10)
                r.length = UInt32(truncatingIfNeeded: both); r.pasid = UInt32(truncatingIfNeeded: both >> 32)
            case 0x18:
                let both = merge(UInt64(r.vector) << 32, base: 0x18)
                r.vector = UInt32(truncatingIfNeeded: both >> 32)
                if offset == 0x18 { doorbell = UInt32(truncatingIfNeeded: both) }
            case 0x28: r.scratch = merge(r.scratch, base: 0x28)
            default: break
            }
        }
        if doorbell == 1 || doorbell == 2 { runDMA(write: doorbell == 2) }
    }

    /// Runs the programmed DMA (only with bus mastering enabled), then signals the completion vector.
    private func runDMA(write: Bool) {
        guard let host = hostSlot.withLock({ $0 }) else { return }
        let (address, length, pasidRegister, vector, data) = registers.withLock { r in
            (r.address, Int(min(r.length, 256)), r.pasid, r.vector, write ? Array(r.buffer[0..<Int(min(r.length, 256))]) : [])
        }
        let status: UInt32
        if !host.busMasterEnabled {
            status = 3
        } else if length == 0 {
            status = 2
        } else {
            let pasid = pasidRegister & 0x8000_0000 != 0 ? PASID(rawValue: pasidRegister & 0xf_ffff) : nil
            if write {
                switch host.function.write(pasid: pasid, address: address, bytes: data) {
                case .completed: status = 1
                case .waitingForPageResponse: status = 4
                case .failed: status = 2
                }
            } else {
                switch host.function.read(pasid: pasid, address: address, count: length) {
                case .completed(let bytes):
                    registers.withLock { r in for (i, b) in bytes.enumerated() { r.buffer[i] = b } }
                    status = 1
                case .waitingForPageResponse: status = 4
                case .failed: status = 2
                }
            }
        }
        registers.withLock { $0.status = status }
        if vector != 0xffff_ffff { host.signal(vector: Int(vector)) }
    }
}

extension PCIFunction.Capabilities {
    /// The DMA-side capabilities a model advertises: its PASID width and permissions, ATS (with
    /// a device TLB), and PRI's outstanding-request capacity.
    public init(advertisedBy model: any PCIDeviceModel) {
        var width: Int?, execute = false, privileged = false, ats: TranslationCache.Configuration?, capacity: Int?
        for capability in model.capabilities {
            switch capability {
            case .pasid(let w, let x, let p): width = max(1, min(PASID.maxWidth, w)); execute = x; privileged = p
            case .ats: ats = .deviceTLB
            case .pageRequest(let c): capacity = c
            default: break
            }
        }
        self.init(pasidWidth: width, executePermission: execute, privilegedMode: privileged, ats: ats, pageRequestCapacity: capacity)
    }
}
