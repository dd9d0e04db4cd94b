// The Intel I/OAT DMA engine of Skylake-SP (CBDMA, PCI 8086:2021) as a modelled PCI device.
//
// Identity: vendor 0x8086, device 0x2021, class 0x088000 (system peripheral, other). BAR 0:
// 16 KiB of 64-bit memory space with the registers (IOATRegisters.swift), the MSI-X table at
// 0x2000 and the PBA at 0x3000 (one vector). Capabilities: MSI-X, PCI Express (a root complex
// integrated endpoint with function-level reset), power management. One channel, as each CBDMA
// function of this part has; transfers of up to 64 KiB per descriptor (XFERCAP 16: the drivers
// read it and split larger copies; a smaller cap than the silicon's keeps a full 65 535-descriptor
// chain, which the engine runs in software, within the VFIO selftest's time budget).
//
// Version: CBVER reads 0x33. Linux's ioatdma binds any version from 3.0 and treats this device
// ID as 3.2 whatever it reads; the VFIO selftests' driver accepts 3.2 and 3.3. DMACAPABILITY
// reports no XOR, P+Q or DCA operations and DCAOFFSET is 0, so both drivers use memory copies
// (and Linux its null descriptors) only; no DCA provider is registered.
//
// Register accesses may be of any width at any offset: each register a read or write overlaps
// is read or written once, bytes outside registers read as zero and ignore writes. See
// IOATChannel.swift for the engine (it runs synchronously in the write that gives it work).
// The model's state is under one lock; DMA runs under it, interrupts are sent after it.

/// An Intel I/OAT (QuickData) DMA engine, PCI 8086:2021, with one channel.
///
/// ```swift
/// let ioat = IOATDevice()
/// machine.plug(ioat)        // the machine gives it a PCIDeviceHost
/// // a driver: reset the channel, set CHAINADDR, write DMACOUNT, poll CHANSTS
/// ioat.write(bar: 0, offset: 0x84, size: 1, value: 0x20)
/// ```
import IOASIDStructures

public final class IOATDevice: PCIDeviceModel, @unchecked Sendable {
    /// CBVER's value.
    public static let versionValue: UInt8 = 0x33
    /// XFERCAP's value: transfers of up to 2^16 bytes per descriptor.
    public static let transferCapacityLog2: UInt8 = 16
    /// The number of channels (CHANCNT).
    public static let channelCount = 1

    /// 8086:2021, class 0x088000.
    public let identity = PCIIdentity(vendorID: 0x8086, deviceID: 0x2021, revision: 0x04, classCode: 0x08_8000)
    /// BAR 0: 16 KiB of 64-bit, non-prefetchable memory.
    public let bars = [PCIBAR(index: 0, size: IOATRegister.barSize, kind: .memory64)]
    /// MSI-X (one vector; table and PBA in BAR 0), PCI Express with FLR, power management.
    public let capabilities: [PCICapability] = [
        .msix(vectors: IOATDevice.channelCount, tableBAR: 0, tableOffset: IOATRegister.msixTableOffset,
              pbaBAR: 0, pbaOffset: IOATRegister.msixPBAOffset),
        .pciExpress(deviceType: .rootComplexIntegratedEndpoint, functionLevelReset: true),
        .powerManagement,
    ]

    /// The general registers that hold a value.
    private struct GeneralRegisters {
        var generalControl: UInt8 = 0
        var interruptControl: UInt8 = 0
        var interruptDelay: UInt16 = 0
        var prefetchLimit: UInt8 = 0
    }
    // Under `lock`. Three stored properties, not one struct: the channel updates ATTNSTATUS while
    // it is itself being mutated, and exclusive access is per property.
    private let lock = Lock()
    private var general = GeneralRegisters()
    private var attention: UInt32 = 0
    private var channel = IOATChannel(index: 0, transferCapacityLog2: IOATDevice.transferCapacityLog2)
    private var host: (any PCIDeviceHost)?
    /// Whether the device is stopped for migration (`setRunning(false)`).
    private var stopped = false
    /// Interrupt vectors raised while stopped, sent when the device runs again.
    private var heldVectors: UInt64 = 0
    /// The host the engine may do DMA through: none while stopped (work is held).
    private var engineHost: (any PCIDeviceHost)? { stopped ? nil : host }

    /// A device at its power-on state, not yet plugged in.
    public init() {}

    /// Remembers where the device's DMA and interrupts go.
    public func plug(into host: any PCIDeviceHost) {
        lock.withLock { self.host = host }
    }

    /// Function-level reset: every register to its power-on value, the channel halted.
    public func reset() {
        lock.withLock {
            general = GeneralRegisters()
            attention = 0
            heldVectors = 0
            channel.reset()
        }
    }

    // MARK: Register map

    /// A register: its offset in BAR 0 and width in bytes.
    private struct Register {
        let offset: UInt64
        let width: Int
    }

    private static let channelBase = IOATRegister.channelSize
    private static let registers: [Register] = [
        Register(offset: IOATRegister.channelCount, width: 1),
        Register(offset: IOATRegister.transferCapacity, width: 1),
        Register(offset: IOATRegister.generalControl, width: 1),
        Register(offset: IOATRegister.interruptControl, width: 1),
        Register(offset: IOATRegister.attentionStatus, width: 4),
        Register(offset: IOATRegister.version, width: 1),
        Register(offset: IOATRegister.perPortOffset, width: 2),
        Register(offset: IOATRegister.interruptDelay, width: 2),
        Register(offset: IOATRegister.deviceStatus, width: 2),
        Register(offset: IOATRegister.dmaCapability, width: 4),
        Register(offset: IOATRegister.dcaOffset, width: 2),
        Register(offset: IOATRegister.prefetchLimit, width: 1),
        Register(offset: channelBase + IOATRegister.channelControl, width: 2),
        Register(offset: channelBase + IOATRegister.channelCompatibility, width: 2),
        Register(offset: channelBase + IOATRegister.channelCommand, width: 1),
        Register(offset: channelBase + IOATRegister.dmaCount, width: 2),
        Register(offset: channelBase + IOATRegister.channelStatus, width: 8),
        Register(offset: channelBase + IOATRegister.chainAddress, width: 8),
        Register(offset: channelBase + IOATRegister.completionAddress, width: 8),
        Register(offset: channelBase + IOATRegister.currentDescriptorAddress, width: 8),
        Register(offset: channelBase + IOATRegister.channelError, width: 4),
        Register(offset: channelBase + IOATRegister.channelErrorMask, width: 4),
        Register(offset: channelBase + IOATRegister.dcaControl, width: 4),
    ]

    /// The register containing `address`, if any.
    private static func register(at address: UInt64) -> Register? {
        for r in registers where address >= r.offset && address < r.offset + UInt64(r.width) { return r }
        return nil
    }

    // MARK: PCIDeviceModel

    /// Reads `size` bytes at `offset` of BAR 0 (see the file comment).
    public func read(bar: Int, offset: UInt64, size: Int) -> UInt64 {
        guard bar == 0, (1...8).contains(size), offset < IOATRegister.barSize else { return 0 }
        var interrupts = IOATInterrupts()
        let value: UInt64 = lock.withLock {
            var result: UInt64 = 0
            var i = 0
            while i < size {
                let address = offset + UInt64(i)
                guard let r = Self.register(at: address) else { i += 1; continue }
                let whole = readRegister(r.offset, &interrupts)
                let first = Int(address - r.offset)
                let n = min(r.width - first, size - i)
                let bytes = (whole >> UInt64(8 * first)) & (n == 8 ? ~0 : (UInt64(1) << UInt64(8 * n)) - 1)
                result |= bytes << UInt64(8 * i)
                i += n
            }
            return result
        }
        send(interrupts)
        return value
    }

    /// Writes `size` bytes of `value` at `offset` of BAR 0, register by register in address order.
    public func write(bar: Int, offset: UInt64, size: Int, value: UInt64) {
        guard bar == 0, (1...8).contains(size), offset < IOATRegister.barSize else { return }
        var interrupts = IOATInterrupts()
        lock.withLock {
            var i = 0
            while i < size {
                let address = offset + UInt64(i)
                guard let r = Self.register(at: address) else { i += 1; continue }
                let first = Int(address - r.offset)
                let n = min(r.width - first, size - i)
                let fieldMask = (n == 8 ? ~UInt64(0) : (UInt64(1) << UInt64(8 * n)) - 1) << UInt64(8 * first)
                let bits = ((value >> UInt64(8 * i)) << UInt64(8 * first)) & fieldMask
                writeRegister(r.offset, bits: bits, mask: fieldMask, &interrupts)
                i += n
            }
        }
        send(interrupts)
    }

    /// The value of the register at `offset` (reading ATTNSTATUS clears it; reading CHANSTS
    /// prompts a channel held up by bus mastering). Lock held.
    private func readRegister(_ offset: UInt64, _ interrupts: inout IOATInterrupts) -> UInt64 {
        switch offset {
        case IOATRegister.channelCount: return UInt64(Self.channelCount)
        case IOATRegister.transferCapacity: return UInt64(Self.transferCapacityLog2)
        case IOATRegister.generalControl: return UInt64(general.generalControl)
        case IOATRegister.interruptControl:
            var v = general.interruptControl
            if attention != 0 {
                v |= IOATRegister.interruptStatus
                if v & IOATRegister.interruptMasterEnable != 0 { v |= IOATRegister.interruptActive }
            }
            return UInt64(v)
        case IOATRegister.attentionStatus:
            defer { attention = 0 }
            return UInt64(attention)
        case IOATRegister.version: return UInt64(Self.versionValue)
        case IOATRegister.interruptDelay: return UInt64(general.interruptDelay)
        case IOATRegister.prefetchLimit: return UInt64(general.prefetchLimit)
        case Self.channelBase + IOATRegister.channelControl: return UInt64(channel.control)
        case Self.channelBase + IOATRegister.channelCompatibility: return UInt64(IOATRegister.compatibilityV2)
        case Self.channelBase + IOATRegister.dmaCount: return UInt64(channel.dmaCount)
        case Self.channelBase + IOATRegister.channelStatus:
            channel.prompt(host: engineHost, attention: &attention, intrctrl: general.interruptControl, into: &interrupts)
            return channel.status
        case Self.channelBase + IOATRegister.chainAddress: return channel.chainAddress
        case Self.channelBase + IOATRegister.completionAddress: return channel.completionAddress
        case Self.channelBase + IOATRegister.currentDescriptorAddress: return channel.currentDescriptor
        case Self.channelBase + IOATRegister.channelError: return UInt64(channel.error)
        case Self.channelBase + IOATRegister.channelErrorMask: return UInt64(channel.errorMask)
        case Self.channelBase + IOATRegister.dcaControl: return UInt64(channel.dcaControl)
        default: return 0  // CHANCMD (commands complete at once), PERPORTOFFSET, CS_STATUS, DMACAPABILITY, DCAOFFSET
        }
    }

    /// Writes the bytes `mask` selects of the register at `offset` (`bits` in place). Lock held.
    private func writeRegister(_ offset: UInt64, bits: UInt64, mask: UInt64, _ interrupts: inout IOATInterrupts) {
        @inline(__always) func merge(_ old: UInt64) -> UInt64 { old & ~mask | bits }
        let intrctrl = general.interruptControl
        switch offset {
        case IOATRegister.generalControl: general.generalControl = UInt8(truncatingIfNeeded: bits) & 0x01
        case IOATRegister.interruptControl:
            general.interruptControl = UInt8(truncatingIfNeeded: bits)
                & (IOATRegister.interruptMasterEnable | IOATRegister.interruptMSIXVectorControl)
        case IOATRegister.interruptDelay:
            general.interruptDelay = UInt16(truncatingIfNeeded: merge(UInt64(general.interruptDelay))) & IOATRegister.interruptDelayMask
        case IOATRegister.prefetchLimit: general.prefetchLimit = UInt8(truncatingIfNeeded: bits)
        case Self.channelBase + IOATRegister.channelControl:
            // The stored bits never include INT_REARM, so it acts only when its byte is written with it set.
            channel.writeControl(UInt16(truncatingIfNeeded: merge(UInt64(channel.control))), intrctrl: intrctrl,
                                       into: &interrupts)
        case Self.channelBase + IOATRegister.channelCommand:
            channel.command(UInt8(truncatingIfNeeded: bits), host: engineHost, attention: &attention, intrctrl: intrctrl,
                                  into: &interrupts)
        case Self.channelBase + IOATRegister.dmaCount:
            channel.writeDMACount(UInt16(truncatingIfNeeded: merge(UInt64(channel.dmaCount))), host: engineHost,
                                        attention: &attention, intrctrl: intrctrl, into: &interrupts)
        case Self.channelBase + IOATRegister.chainAddress:
            channel.writeChainAddress(merge(channel.chainAddress))
        case Self.channelBase + IOATRegister.completionAddress:
            channel.completionAddress = merge(channel.completionAddress)
        case Self.channelBase + IOATRegister.channelError:
            channel.error &= ~UInt32(truncatingIfNeeded: bits)
        case Self.channelBase + IOATRegister.channelErrorMask:
            channel.errorMask = UInt32(truncatingIfNeeded: merge(UInt64(channel.errorMask)))
        case Self.channelBase + IOATRegister.dcaControl:
            channel.dcaControl = UInt32(truncatingIfNeeded: merge(UInt64(channel.dcaControl)))
        default: break  // read-only registers
        }
    }

    /// Sends the interrupts a register access raised (outside the lock).
    private func send(_ interrupts: IOATInterrupts) {
        guard interrupts.vectors != 0 else { return }
        let target: (any PCIDeviceHost)? = lock.withLock {
            if stopped {
                heldVectors |= interrupts.vectors
                return nil
            }
            return self.host
        }
        guard let host = target else { return }
        var vectors = interrupts.vectors
        while vectors != 0 {
            let vector = vectors.trailingZeroBitCount
            vectors &= vectors - 1
            host.signal(vector: vector)
        }
    }
}

// MARK: Migration
//
// The saved state (version 1, little endian): "IOAT" magic (u32 0x5441_4f49), version (u16),
// vendor and device ID (u16 each), then the general registers (GENCTRL u8, INTRCTRL u8,
// INTRDELAY u16, CHWPREFLMT u8), ATTNSTATUS (u32), the interrupt vectors held while stopped
// (u64), the channel count (u8) and each channel (IOATChannel.save). The PCI configuration space
// and the MSI-X table are not in it: they are the machine's, and the VMM migrates them.

extension IOATDevice: MigratableDeviceModel {
    /// The first field of a saved state.
    public static let stateMagic: UInt32 = 0x5441_4f49
    /// The version of the saved state this model writes and reads.
    public static let stateVersion: UInt16 = 1

    /// Stops or restarts the engine (see `MigratableDeviceModel`). Restarting runs a channel left
    /// active and sends the interrupts held meanwhile.
    public func setRunning(_ running: Bool) {
        var interrupts = IOATInterrupts()
        lock.withLock {
            guard stopped == running else { return }
            stopped = !running
            guard running else { return }
            interrupts.vectors = heldVectors
            heldVectors = 0
            channel.prompt(host: engineHost, attention: &attention, intrctrl: general.interruptControl, into: &interrupts)
        }
        send(interrupts)
    }

    /// The registers and the channel's engine state.
    public func saveState() -> [UInt8] {
        var w = DeviceStateWriter()
        w.append(Self.stateMagic)
        w.append(Self.stateVersion)
        w.append(identity.vendorID)
        w.append(identity.deviceID)
        lock.withLock {
            w.append(general.generalControl)
            w.append(general.interruptControl)
            w.append(general.interruptDelay)
            w.append(general.prefetchLimit)
            w.append(attention)
            w.append(heldVectors)
            w.append(UInt8(Self.channelCount))
            channel.save(into: &w)
        }
        return w.bytes
    }

    /// Restores a state `saveState` wrote (same magic, version, identity and channel count, no
    /// byte more or less); false and no change otherwise.
    public func restoreState(_ bytes: [UInt8]) -> Bool {
        var r = DeviceStateReader(bytes)
        guard r.read(UInt32.self) == Self.stateMagic, r.read(UInt16.self) == Self.stateVersion,
              r.read(UInt16.self) == identity.vendorID, r.read(UInt16.self) == identity.deviceID,
              let generalControl: UInt8 = r.read(), let interruptControl: UInt8 = r.read(),
              let interruptDelay: UInt16 = r.read(), let prefetchLimit: UInt8 = r.read(),
              let attention: UInt32 = r.read(), let held: UInt64 = r.read(),
              r.read(UInt8.self) == UInt8(Self.channelCount) else { return false }
        var restored = IOATChannel(index: 0, transferCapacityLog2: Self.transferCapacityLog2)
        guard restored.restore(from: &r), r.atEnd else { return false }
        lock.withLock {
            general = GeneralRegisters(generalControl: generalControl, interruptControl: interruptControl,
                                       interruptDelay: interruptDelay, prefetchLimit: prefetchLimit)
            self.attention = attention
            heldVectors = held
            channel = restored
        }
        return true
    }
}
