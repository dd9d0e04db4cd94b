import IOASIDSoftIOMMU

// The configuration space a VFIO user sees: vfio-pci's virtualization over the function's own.
//
// Each byte belongs to an owner — the header, one capability, or nothing ("unassigned") — and
// each owner has a permission table: per bit, whether it is *virtual* (kept in `virtual`, this
// open's copy, never touching the function) and whether the user may *write* it. A read merges
// the function's bits with the virtual ones; a write puts writable virtual bits in the copy and
// writable non-virtual bits into the function. Unassigned bytes pass straight through, as
// vfio-pci does for registers hidden between capabilities. The facts, per owner:
// - header: IDs, capability pointer, interrupt pin virtual and read-only; COMMAND writable with
//   INTx-disable virtual (emulated as INTx masking); STATUS read-only with its capability bit
//   virtual; cache line, latency timer, BIST written through; BARs and the ROM register virtual
//   and writable, read back through the sizing fixup (the address bits the size allows and the
//   type flags; 0 for unimplemented BARs and for a device without ROM); interrupt line virtual.
// - PM: next pointer virtual; PME support and PME enable/status virtual (cleared); the power
//   state is set by the machine on a write, not written through.
// - MSI: flags byte, address and data virtual and writable; mask bits written through. MSI is
//   enabled by SET_IRQS only, so a user's enable bit is dropped unless MSI is the active mode,
//   and the multiple-message fields report what SET_IRQS allocated.
// - MSI-X: read from the function (its enable and mask bits are the machine's), writes dropped.
// - PCI Express: next pointer virtual; device control writable except phantom functions, with
//   FLR, max payload and max read request virtual (an FLR write resets the function the way
//   VFIO_DEVICE_RESET does); device control 2 writable except ARI.
// - extended capabilities: read-only, first dword (ID, version, next) virtual; PASID is hidden
//   (vfio-pci knows no length for it): unlinked from the chain, or, when it is the first,
//   left as an empty placeholder (ID 0, version 0) that keeps the link to the rest.

/// One open's virtual configuration space over a `PCIDeviceSlot`.
struct VFIOConfigSpace {
    /// What a byte belongs to.
    private enum Owner: UInt8 {
        case header, powerManagement, msi, msix, express, extended, unassigned
    }

    private let slot: PCIDeviceSlot
    private let layout: PCICapabilityLayout
    private(set) var virtual: [UInt8]
    private var virtMask: [UInt8]
    private var writeMask: [UInt8]
    private var owner: [Owner]
    /// Start of the capability each byte belongs to.
    private var start: [UInt16]
    /// MSI's allocated-vectors exponent (`msi_qmax`).
    var msiExponent: Int
    /// Whether MSI is the active interrupt mode (its enable bit may then be set).
    var msiActive = false
    /// The emulated INTx-disable bit changed: the new value (the VFIO face masks or unmasks INTx).
    var onINTxDisable: ((Bool) -> Void)?
    /// The user wrote an FLR to the PCI Express device control: the VFIO face resets the device
    /// as `VFIO_DEVICE_RESET` does (called with the open state's lock held: it must not take it).
    var onFunctionLevelReset: (() -> Void)?

    /// Size of the space (`pdev->cfg_size`).
    static let size = PCIRegister.expressSize

    /// The space as vfio-pci builds it when the device is opened.
    init(slot: PCIDeviceSlot) {
        self.slot = slot
        layout = slot.layout
        let physical = slot.config
        virtual = physical.bytes
        let n = Self.size
        virtMask = [UInt8](repeating: 0, count: n)
        writeMask = [UInt8](repeating: 0, count: n)
        owner = [Owner](repeating: .unassigned, count: n)
        start = [UInt16](repeating: 0, count: n)
        msiExponent = layout.msiVectors > 0 ? Self.log2(layout.msiVectors) : 0
        claim(0, PCIRegister.headerSize, .header)
        setW(PCIRegister.vendorID, virt: 0xffff, write: 0)
        setW(PCIRegister.deviceID, virt: 0xffff, write: 0)
        setW(PCIRegister.command, virt: PCIRegister.commandINTxDisable, write: 0xffff)
        setW(PCIRegister.status, virt: PCIRegister.statusCapabilityList, write: 0)
        setB(PCIRegister.cacheLineSize, virt: 0, write: 0xff)
        setB(PCIRegister.latencyTimer, virt: 0, write: 0xff)
        setB(PCIRegister.bist, virt: 0, write: 0xff)
        for r in 0..<6 { setD(PCIRegister.bar0 + 4 * r, virt: ~0, write: ~0) }
        setD(PCIRegister.romAddress, virt: ~0, write: ~0)
        setB(PCIRegister.capabilityList, virt: 0xff, write: 0)
        setB(PCIRegister.interruptLine, virt: 0xff, write: 0xff)
        setB(PCIRegister.interruptPin, virt: 0xff, write: 0)

        if layout.powerManagement != 0 {
            let p = layout.powerManagement
            claim(p, 8, .powerManagement)
            setB(p + 1, virt: 0xff, write: 0)
            setW(p + 2, virt: 0xf800, write: 0)
            setD(p + 4, virt: 0x8100, write: ~UInt32(0x8103))
            virtual[p + 3] &= 0x07                       // no PME support
            virtual[p + 5] &= ~0x81                      // PME enable and status clear
        }
        if layout.msi != 0 {
            let p = layout.msi
            let flags = UInt16(physical.read(p + 2, size: 2))
            let wide = flags & PCIRegister.msi64Bit != 0, masking = flags & PCIRegister.msiPerVectorMasking != 0
            let length = 10 + (wide ? 4 : 0) + (masking ? 10 : 0)
            claim(p, length, .msi)
            setB(p + 1, virt: 0xff, write: 0)
            setB(p + 2, virt: 0xff, write: 0xff)
            setD(p + 4, virt: ~0, write: ~0)
            if wide { setD(p + 8, virt: ~0, write: ~0) }
            let data = wide ? p + 12 : p + 8
            setW(data, virt: 0xffff, write: 0xffff)
            if masking { setD(data + 4, virt: 0, write: ~0); setD(data + 8, virt: 0, write: ~0) }
        }
        if layout.msix != 0 {
            claim(layout.msix, 12, .msix)
            virtDirect(layout.msix)
        }
        if layout.express != 0 {
            let p = layout.express
            let type = (physical.read(p + 2, size: 2) >> 4) & 0xf
            claim(p, type == 9 ? 0x2c : 0x3c, .express)
            setB(p + 1, virt: 0xff, write: 0)
            setW(p + 8, virt: PCIRegister.expressDeviceControlFLR | 0x00e0 | 0x7000, write: ~UInt16(0x0200))
            setW(p + 0x28, virt: 0, write: ~UInt16(0x0020))
        }
        // Extended capabilities, in chain order.
        var at = PCIRegister.conventionalSize
        var previous = -1
        var shown = 0
        while at >= PCIRegister.conventionalSize, at < Self.size {
            let header = physical.read(at, size: 4)
            let id = UInt16(header & 0xffff)
            let next = Int(header >> 20) & 0xffc
            let length: Int
            switch id {
            case PCIRegister.extendedATS: length = 8
            case PCIRegister.extendedPRI: length = 16
            case PCIRegister.extendedSRIOV: length = 0x40
            default: length = 0                          // PASID and the unknown: hidden
            }
            if length == 0 {
                if previous >= 0 {
                    let p = UInt32(virtual[previous]) | UInt32(virtual[previous + 1]) << 8 | UInt32(virtual[previous + 2]) << 16 | UInt32(virtual[previous + 3]) << 24
                    put32(previous, (p & 0x000f_ffff) | UInt32(next) << 20)
                    at = next
                    if next == 0 { break }
                    continue
                }
                claim(at, 4, .extended)
                setD(at, virt: ~0, write: 0)
                put32(at, header & 0xfff0_0000)          // placeholder: keeps only the link
                previous = at
                at = next
                if next == 0 { break }
                continue
            }
            claim(at, length, .extended)
            setD(at, virt: ~0, write: 0)
            shown += 1
            previous = at
            at = next
            if next == 0 { break }
        }
        if shown == 0 { put32(PCIRegister.conventionalSize, 0) }
    }

    // MARK: access

    /// Reads `count` bytes at `position` into `buffer`, as `pread` on the config region does.
    /// Returns the bytes read or -errno (EFAULT outside the space, as vfio-pci answers).
    mutating func read(_ position: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let count = buffer.count
        guard position >= 0, position < Self.size, position + count <= Self.size else { return -14 }
        var done = 0
        while done < count {
            let pos = position + done
            let chunk = chunkSize(pos, count - done)
            let value = readChunk(pos, chunk)
            for i in 0..<chunk { buffer[done + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
            done += chunk
        }
        return done
    }

    /// Writes `buffer` at `position`, as `pwrite` on the config region does; bytes or -errno.
    mutating func write(_ position: Int, from buffer: UnsafeRawBufferPointer) -> Int {
        let count = buffer.count
        guard position >= 0, position < Self.size, position + count <= Self.size else { return -14 }
        var done = 0
        while done < count {
            let pos = position + done
            let chunk = chunkSize(pos, count - done)
            var value: UInt32 = 0
            for i in 0..<chunk { value |= UInt32(buffer[done + i]) << (8 * UInt32(i)) }
            writeChunk(pos, chunk, value)
            done += chunk
        }
        return done
    }

    /// Reads one aligned chunk (1, 2 or 4 bytes within one owner).
    mutating func readChunk(_ pos: Int, _ size: Int) -> UInt32 {
        let own = owner[pos]
        if own == .unassigned { return slot.configRead(pos, size: size) }
        if own == .header, (PCIRegister.bar0..<PCIRegister.bar0 + 24).contains(pos) || (PCIRegister.romAddress..<PCIRegister.romAddress + 4).contains(pos) {
            fixBARs()
        }
        if own == .msi { fixMSIFlags() }
        let virt = mask(virtMask, pos, size)
        var value = bytes(virtual, pos, size) & virt
        if virt != Self.ones(size) { value |= slot.configRead(pos, size: size) & ~virt }
        return value
    }

    /// Writes one aligned chunk.
    mutating func writeChunk(_ pos: Int, _ size: Int, _ value: UInt32) {
        let own = owner[pos]
        if own == .unassigned { slot.configWrite(pos, size: size, value: value); return }
        let write = mask(writeMask, pos, size)
        guard write != 0 else { return }
        let virt = mask(virtMask, pos, size)
        let capabilityStart = Int(start[pos])
        let wasINTxDisabled = UInt16(bytes(virtual, PCIRegister.command, 2)) & PCIRegister.commandINTxDisable != 0
        if write & virt != 0 {
            let merged = (bytes(virtual, pos, size) & ~(write & virt)) | (value & write & virt)
            put(pos, size, merged)
        }
        if write & ~virt != 0 {
            let physical = slot.configRead(pos, size: size)
            slot.configWrite(pos, size: size, value: (physical & ~(write & ~virt)) | (value & write & ~virt))
        }
        switch own {
        case .header:
            if pos <= PCIRegister.command + 1, pos + size > PCIRegister.command {
                let now = UInt16(bytes(virtual, PCIRegister.command, 2)) & PCIRegister.commandINTxDisable != 0
                if now != wasINTxDisabled { onINTxDisable?(now) }
            }
        case .powerManagement:
            if pos == capabilityStart + 4 {
                // The machine sets the requested power state itself.
                let state = value & 3
                let current = slot.configRead(capabilityStart + 4, size: 2)
                slot.configWrite(capabilityStart + 4, size: 2, value: (current & ~3) | state)
            }
        case .msi:
            if pos <= capabilityStart + 2, pos + size > capabilityStart + 2 {
                var flags = UInt16(bytes(virtual, capabilityStart + 2, 2))
                if !msiActive { flags &= ~PCIRegister.msiEnable }
                if Int((flags >> 4) & 7) > msiExponent { flags = (flags & ~0x70) | UInt16(msiExponent) << 4 }
                put(capabilityStart + 2, 2, UInt32(flags))
            }
        case .express:
            let control = capabilityStart + 8
            if pos <= control + 1, pos + size > control {
                let v = UInt16(bytes(virtual, control, 2))
                if v & PCIRegister.expressDeviceControlFLR != 0 {
                    put(control, 2, UInt32(v & ~PCIRegister.expressDeviceControlFLR))
                    if slot.configRead(capabilityStart + 4, size: 4) & PCIRegister.expressDeviceCapabilityFLR != 0 {
                        onFunctionLevelReset?()
                        afterReset()
                    }
                }
            }
        default: break
        }
    }

    /// What a reset does to the virtual registers: INTx-disable is clear again (the real kernel
    /// reads COMMAND 0x406 as 0x103 after a reset: back to the state after the open).
    mutating func afterReset() {
        let command = UInt16(bytes(virtual, PCIRegister.command, 2))
        if command & PCIRegister.commandINTxDisable != 0 {
            put(PCIRegister.command, 2, UInt32(command & ~PCIRegister.commandINTxDisable))
            onINTxDisable?(false)
        }
    }

    /// Whether COMMAND's memory enable is set in what the user wrote (vfio-pci keeps it in the copy).
    var memoryEnabled: Bool { slot.configRead(PCIRegister.command, size: 2) & UInt32(PCIRegister.commandMemory) != 0 }

    // MARK: internals

    /// vfio-pci's chunking: stop at the dword's end or the owner's end, then the widest aligned access.
    func chunkSize(_ pos: Int, _ remaining: Int) -> Int {
        var same = 1
        while (pos + same) % 4 != 0, pos + same < Self.size, owner[pos + same] == owner[pos], start[pos + same] == start[pos] { same += 1 }
        let count = min(remaining, same)
        if count >= 4 && pos % 4 == 0 { return 4 }
        if count >= 2 && pos % 2 == 0 { return 2 }
        return 1
    }

    /// The BAR sizing fixup: keep the address bits the BAR's size allows, add the type flags.
    private mutating func fixBARs() {
        let config = slot.config
        var r = 0
        while r < 6 {
            let at = PCIRegister.bar0 + 4 * r
            guard let bar = config.bars[r], config.barAddresses[r] != 0 else { put(at, 4, 0); r += 1; continue }
            let size = max(bar.size, bar.kind == .io ? 4 : 16)
            let mask = ~(size - 1)
            var low = bytes(virtual, at, 4) & UInt32(truncatingIfNeeded: mask)
            switch bar.kind {
            case .io: low |= 1
            case .memory32: if bar.prefetchable { low |= 8 }
            case .memory64: low |= 4; if bar.prefetchable { low |= 8 }
            }
            put(at, 4, low)
            if bar.kind == .memory64, r < 5 {
                put(at + 4, 4, bytes(virtual, at + 4, 4) & UInt32(truncatingIfNeeded: mask >> 32))
                r += 1
            }
            r += 1
        }
        put(PCIRegister.romAddress, 4, 0)   // no expansion ROM
    }

    private mutating func fixMSIFlags() {
        let p = layout.msi
        var flags = UInt16(bytes(virtual, p + 2, 2)) & ~0x000e
        flags |= UInt16(msiExponent) << 1
        put(p + 2, 2, UInt32(flags))
    }

    private mutating func claim(_ at: Int, _ length: Int, _ who: Owner) {
        for i in at..<min(at + length, Self.size) { owner[i] = who; start[i] = UInt16(at) }
    }
    private mutating func virtDirect(_ p: Int) { setB(p, virt: 0xff, write: 0); setB(p + 1, virt: 0xff, write: 0) }
    private mutating func setB(_ o: Int, virt: UInt8, write: UInt8) { virtMask[o] = virt; writeMask[o] = write }
    private mutating func setW(_ o: Int, virt: UInt16, write: UInt16) {
        for i in 0..<2 { virtMask[o + i] = UInt8(truncatingIfNeeded: virt >> (8 * UInt16(i))); writeMask[o + i] = UInt8(truncatingIfNeeded: write >> (8 * UInt16(i))) }
    }
    private mutating func setD(_ o: Int, virt: UInt32, write: UInt32) {
        for i in 0..<4 { virtMask[o + i] = UInt8(truncatingIfNeeded: virt >> (8 * UInt32(i))); writeMask[o + i] = UInt8(truncatingIfNeeded: write >> (8 * UInt32(i))) }
    }
    private func mask(_ m: [UInt8], _ pos: Int, _ size: Int) -> UInt32 { bytes(m, pos, size) }
    private func bytes(_ m: [UInt8], _ pos: Int, _ size: Int) -> UInt32 {
        var v: UInt32 = 0
        for i in 0..<size { v |= UInt32(m[pos + i]) << (8 * UInt32(i)) }
        return v
    }
    private mutating func put(_ pos: Int, _ size: Int, _ value: UInt32) {
        for i in 0..<size { virtual[pos + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }
    private mutating func put32(_ pos: Int, _ value: UInt32) { put(pos, 4, value) }
    private static func ones(_ size: Int) -> UInt32 { size == 4 ? ~0 : (1 << (8 * UInt32(size))) - 1 }
    private static func log2(_ n: Int) -> Int { var r = 0; while (1 << (r + 1)) <= n { r += 1 }; return r }
}
