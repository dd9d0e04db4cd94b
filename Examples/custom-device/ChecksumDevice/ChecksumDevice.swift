// A small custom PCI device written in Swift: a checksum engine. A driver writes the IOVA and
// length of a buffer, rings the doorbell, and the device reads the buffer by DMA — through the
// software IOMMU, by IOVA — computes its 64-bit FNV-1a checksum, writes it to a result register
// and (if asked) to memory by DMA, sets STATUS and sends MSI-X vector 0. A DMA the IOMMU refuses
// (an unmapped IOVA, a read-only page for the result) ends the command with an error status and
// the IOMMU's fault record in two registers; nothing else happens, the program goes on.
//
// Its only doors to the machine are those of `PCIDeviceModel`: register reads and writes by
// value, and DMA through its host's `DMAPort` (`host.dma`). It never sees a pointer into the
// program's memory, so the same model would run unchanged in an engine that lives in another
// process than the program (docs/machine.md, "Device memory access").
//
// Registers (BAR 0, 4 KiB, 64-bit registers; 4-byte accesses reach either half):
//
//   0x00 ID               RO  0x0000_0001_4353_554d ("MUSC" little endian, version 1)
//   0x08 SOURCE           RW  IOVA of the data
//   0x10 LENGTH           RW  bytes, 1 to 16 MiB
//   0x18 RESULT_ADDRESS   RW  IOVA the device writes the 8-byte checksum to; 0: no write
//   0x20 DOORBELL         WO  write 1: run the command (synchronously, in the write); reads 0
//   0x28 STATUS           RO  bit 0 DONE, bit 1 ERROR, bits 8–15 the error code (Error below)
//   0x30 RESULT           RO  the checksum of the last command that read all its data
//   0x38 FAULT_ADDRESS    RO  the IOVA of the IOMMU's last fault record
//   0x40 FAULT_INFO       RO  bits 0–15 requester ID, bit 16 write access, bits 24–31 FaultKind
//   0x48 INTERRUPT_ENABLE RW  bit 0: send MSI-X vector 0 when a command ends
//   0x800 MSI-X table, 0xc00 pending bits (the machine's, not the model's)
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Synchronization

/// The checksum engine: PCI 1b36:00f1, class 0x120000 (processing accelerator).
public final class ChecksumDevice: PCIDeviceModel, Sendable {
    /// Register offsets in BAR 0.
    public enum Register {
        public static let id: UInt64 = 0x00
        public static let source: UInt64 = 0x08
        public static let length: UInt64 = 0x10
        public static let resultAddress: UInt64 = 0x18
        public static let doorbell: UInt64 = 0x20
        public static let status: UInt64 = 0x28
        public static let result: UInt64 = 0x30
        public static let faultAddress: UInt64 = 0x38
        public static let faultInfo: UInt64 = 0x40
        public static let interruptEnable: UInt64 = 0x48
    }

    /// ID's value.
    public static let idValue: UInt64 = 0x0000_0001_4353_554d
    /// The largest LENGTH.
    public static let maximumLength: UInt64 = 16 << 20
    /// STATUS bits.
    public static let statusDone: UInt64 = 1 << 0
    public static let statusError: UInt64 = 1 << 1

    /// The error code in STATUS bits 8–15.
    public enum Error: UInt8, Sendable {
        /// Reading the source was refused (FAULT_* hold the IOMMU's record).
        case sourceFault = 1
        /// Writing the result was refused (FAULT_* hold the IOMMU's record).
        case resultFault = 2
        /// Bus mastering is off (COMMAND bit 2): the device issued no DMA.
        case busMasterDisabled = 3
        /// LENGTH is 0 or above the maximum.
        case badLength = 4
        /// The DMA failed for another reason (no fault record).
        case dmaFailed = 5
    }

    /// FAULT_INFO bits 24–31: the kind of the IOMMU's fault.
    public enum FaultKind: UInt8, Sendable {
        /// No translation (a table entry not present: an unmapped IOVA).
        case translation = 1
        /// A translation without the permission asked for.
        case permission = 2
        /// The function (or PASID) is blocked or not attached.
        case blocked = 3
        /// Any other reason.
        case other = 4

        init(_ reason: FaultReason) {
            switch reason {
            case .translation: self = .translation
            case .permission: self = .permission
            case .blocked, .pasidNotAttached, .invalidContext: self = .blocked
            default: self = .other
            }
        }
    }

    public let identity = PCIIdentity(vendorID: 0x1b36, deviceID: 0x00f1, revision: 1, classCode: 0x12_0000)
    public let bars = [PCIBAR(index: 0, size: 4096, kind: .memory64)]
    public let capabilities: [PCICapability] = [
        .msix(vectors: 1, tableBAR: 0, tableOffset: 0x800, pbaBAR: 0, pbaOffset: 0xc00),
        .pciExpress(deviceType: .endpoint, functionLevelReset: true),
    ]

    private struct Registers {
        var source: UInt64 = 0
        var length: UInt64 = 0
        var resultAddress: UInt64 = 0
        var status: UInt64 = 0
        var result: UInt64 = 0
        var faultAddress: UInt64 = 0
        var faultInfo: UInt64 = 0
        var interruptEnable: UInt64 = 0
    }

    private struct State {
        var registers = Registers()
        var host: (any PCIDeviceHost)?
        /// The device's own staging buffer for DMA reads (made once: commands allocate nothing).
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 64)
    }

    private let state = Mutex(State())

    /// A device at its power-on state, not yet plugged in.
    public init() {}

    deinit { state.withLock { $0.chunk.deallocate() } }

    public func plug(into host: any PCIDeviceHost) { state.withLock { $0.host = host } }

    public func reset() { state.withLock { $0.registers = Registers() } }

    public func read(bar: Int, offset: UInt64, size: Int) -> UInt64 {
        guard bar == 0, size == 4 || size == 8, offset % UInt64(size) == 0 else { return 0 }
        let register = offset & ~7
        let value: UInt64 = state.withLock { s in
            let r = s.registers
            switch register {
            case Register.id: return Self.idValue
            case Register.source: return r.source
            case Register.length: return r.length
            case Register.resultAddress: return r.resultAddress
            case Register.status: return r.status
            case Register.result: return r.result
            case Register.faultAddress: return r.faultAddress
            case Register.faultInfo: return r.faultInfo
            case Register.interruptEnable: return r.interruptEnable
            default: return 0
            }
        }
        return size == 8 ? value : (offset & 4 == 0 ? value & 0xffff_ffff : value >> 32)
    }

    public func write(bar: Int, offset: UInt64, size: Int, value: UInt64) {
        guard bar == 0, size == 4 || size == 8, offset % UInt64(size) == 0 else { return }
        let register = offset & ~7
        /// The register's new value after a 4- or 8-byte write of `value` into `old`.
        func merged(_ old: UInt64) -> UInt64 {
            if size == 8 { return value }
            let shift: UInt64 = offset & 4 == 0 ? 0 : 32
            return (old & ~(0xffff_ffff << shift)) | ((value & 0xffff_ffff) << shift)
        }
        var interrupt: (any PCIDeviceHost)? = nil
        state.withLock { s in
            switch register {
            case Register.source: s.registers.source = merged(s.registers.source)
            case Register.length: s.registers.length = merged(s.registers.length)
            case Register.resultAddress: s.registers.resultAddress = merged(s.registers.resultAddress)
            case Register.interruptEnable: s.registers.interruptEnable = merged(s.registers.interruptEnable) & 1
            case Register.doorbell where merged(0) & 1 != 0:
                Self.run(&s)
                if s.registers.interruptEnable & 1 != 0 { interrupt = s.host }
            default: break
            }
        }
        // Interrupts go out after the lock: delivery may call back into the machine.
        interrupt?.signal(vector: 0)
    }

    /// Runs the command the registers describe; ends with STATUS set.
    private static func run(_ s: inout State) {
        s.registers.status = 0
        let length = s.registers.length
        guard length > 0, length <= maximumLength else { return finish(&s, .badLength) }
        guard let host = s.host else { return finish(&s, .busMasterDisabled) }
        let port = host.dma
        var checksum: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a 64 offset basis
        var done: UInt64 = 0
        while done < length {
            let n = Int(min(length - done, UInt64(s.chunk.count)))
            let window = UnsafeMutableRawBufferPointer(rebasing: s.chunk[0..<n])
            if case .failure(let error) = port.read(address: s.registers.source &+ done, into: window) {
                return finish(&s, .sourceFault, error)
            }
            for byte in window {
                checksum = (checksum ^ UInt64(byte)) &* 0x0000_0100_0000_01b3  // FNV-1a 64 prime
            }
            done += UInt64(n)
        }
        s.registers.result = checksum
        if s.registers.resultAddress != 0 {
            var littleEndian = checksum.littleEndian
            let written = withUnsafeBytes(of: &littleEndian) { port.write(address: s.registers.resultAddress, from: $0) }
            if case .failure(let error) = written { return finish(&s, .resultFault, error) }
        }
        s.registers.status = statusDone
    }

    /// Ends a command with `error`: STATUS, and the fault registers when the IOMMU refused a DMA.
    private static func finish(_ s: inout State, _ error: Error, _ cause: DMAPortError? = nil) {
        var code = error
        if case .busMasterDisabled? = cause { code = .busMasterDisabled }
        if let cause, cause.faultRecord == nil, code != .busMasterDisabled { code = .dmaFailed }
        if let record = cause?.faultRecord {
            s.registers.faultAddress = record.address
            s.registers.faultInfo = UInt64(record.requesterID.rawValue)
                | (record.access.contains(.write) ? 1 << 16 : 0)
                | UInt64(FaultKind(record.reason).rawValue) << 24
        }
        s.registers.status = statusDone | statusError | UInt64(code.rawValue) << 8
    }
}
