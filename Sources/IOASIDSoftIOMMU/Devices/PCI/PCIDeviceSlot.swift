import IOASIDStructures
import Synchronization

// A device model plugged into the machine: the `PCIDeviceHost` a model talks to, and the
// machine's side of the function — its configuration space, its MSI-X table and pending bits,
// the routing of BAR accesses (the MSI-X structures are answered here and never reach the
// model), the interrupt enables, and function-level reset.
//
// Interrupts: `signal(vector:)` picks the mode the configuration space has enabled — MSI-X (the
// vector's table entry; a masked entry or a function mask sets its pending bit instead, and the
// message goes out when software unmasks it), MSI (vector below the enabled count; per-vector
// masking as for MSI-X), or INTx (STATUS's interrupt bit, unless COMMAND disables INTx) — and
// hands the result to the `interruptSink`, which the VFIO face sets (eventfd triggers). The sink
// is called outside the slot's lock, allocation-free.
//
// Bus mastering: `busMasterEnabled` mirrors COMMAND bit 2 in an atomic so a model's DMA path can
// ask without taking a lock.
//
// Locking: `state` is a leaf lock; neither the model nor the sink is called while it is held.

/// An interrupt a plugged function raises.
public enum PCIInterrupt: Hashable, Sendable {
    /// The legacy pin (INTA#).
    case intx
    /// MSI message `vector`.
    case msi(vector: Int)
    /// MSI-X table entry `vector`.
    case msix(vector: Int)
}

/// Where a plugged function's interrupts go (the VFIO face's eventfd triggers).
public protocol PCIInterruptSink: AnyObject, Sendable {
    /// Delivers `interrupt`. Called from any thread, never under the slot's lock; must not block
    /// for long or allocate.
    func deliver(_ interrupt: PCIInterrupt)
}

/// A device model plugged into a PCI function of the modelled machine.
public final class PCIDeviceSlot: PCIDeviceHost, @unchecked Sendable {
    /// The model.
    public let model: any PCIDeviceModel
    /// The function that issues the model's DMA through the IOMMU.
    public let function: PCIFunction

    private struct State {
        var config: PCIConfigSpace
        var msix: MSIXTable
        /// MSI vectors signalled while masked.
        var msiPending: UInt32 = 0
        /// Whether INTx is asserted (STATUS bit 3).
        var intxAsserted = false
        var sink: (any PCIInterruptSink)?
    }
    private let state: Locked<State>
    private let busMaster = Atomic<Bool>(false)
    private let powerOn: PCIConfigSpace

    /// Where each capability lies in the configuration space.
    public let layout: PCICapabilityLayout

    /// Plugs `model` into `function`, then tells the model (`plug(into:)`).
    public init(model: any PCIDeviceModel, function: PCIFunction) {
        self.model = model
        self.function = function
        let config = PCIConfigSpace(model: model)
        self.powerOn = config
        self.layout = config.layout
        self.state = Locked(State(config: config, msix: MSIXTable(count: config.layout.msixVectors)))
        model.plug(into: self)
    }

    // MARK: PCIDeviceHost

    public var busMasterEnabled: Bool { busMaster.load(ordering: .acquiring) }

    public func signal(vector: Int) {
        var sink: (any PCIInterruptSink)?
        let interrupt: PCIInterrupt? = state.withLock { s in
            sink = s.sink
            let command = s.config.command
            if layout.msix != 0 {
                let control = UInt16(s.config.read(layout.msix + 2, size: 2))
                if control & PCIRegister.msixEnable != 0 {
                    guard vector >= 0, vector < s.msix.count else { return nil }
                    if control & PCIRegister.msixFunctionMask != 0 || s.msix.isMasked(vector) {
                        s.msix.setPending(vector, true)
                        return nil
                    }
                    return .msix(vector: vector)
                }
            }
            if layout.msi != 0 {
                let flags = UInt16(s.config.read(layout.msi + 2, size: 2))
                if flags & PCIRegister.msiEnable != 0 {
                    let enabled = 1 << Int((flags >> 4) & 7)
                    guard vector >= 0, vector < enabled else { return nil }
                    if flags & PCIRegister.msiPerVectorMasking != 0 {
                        let maskOffset = layout.msi + (flags & PCIRegister.msi64Bit != 0 ? 16 : 12)
                        if s.config.read(maskOffset, size: 4) & (1 << UInt32(vector)) != 0 {
                            s.msiPending |= 1 << UInt32(vector)
                            s.config.set(maskOffset + 4, size: 4, value: s.msiPending)
                            return nil
                        }
                    }
                    return .msi(vector: vector)
                }
            }
            guard s.config.read(PCIRegister.interruptPin, size: 1) != 0 else { return nil }
            s.intxAsserted = true
            let status = UInt16(s.config.read(PCIRegister.status, size: 2))
            s.config.set(PCIRegister.status, size: 2, value: UInt32(status | PCIRegister.statusInterrupt))
            return command & PCIRegister.commandINTxDisable == 0 ? .intx : nil
        }
        guard let interrupt, let sink else { return }
        sink.deliver(interrupt)
    }

    // MARK: the machine's controls

    /// Where interrupts go; nil drops them (they stay pending where the mode has pending bits).
    public var interruptSink: (any PCIInterruptSink)? {
        get { state.withLock { $0.sink } }
        set { state.withLock { $0.sink = newValue } }
    }

    /// Clears the INTx status (the function's handler acknowledged it; VFIO's unmask).
    public func deassertINTx() {
        state.withLock { s in
            s.intxAsserted = false
            let status = UInt16(s.config.read(PCIRegister.status, size: 2))
            s.config.set(PCIRegister.status, size: 2, value: UInt32(status & ~PCIRegister.statusInterrupt))
        }
    }

    /// Enables or disables MSI-X in the capability, as the host's interrupt setup does; enabling
    /// unmasks `unmasked` entries (the vectors the host requested).
    public func setMSIX(enabled: Bool, unmasked: Range<Int> = 0..<0) {
        guard layout.msix != 0 else { return }
        state.withLock { s in
            let control = UInt16(s.config.read(layout.msix + 2, size: 2))
            let next = enabled ? control | PCIRegister.msixEnable : control & ~PCIRegister.msixEnable
            s.config.set(layout.msix + 2, size: 2, value: UInt32(next))
            for v in unmasked.clamped(to: 0..<s.msix.count) { s.msix.setMasked(v, false) }
            if !enabled { for v in 0..<s.msix.count { s.msix.setMasked(v, true); s.msix.setPending(v, false) } }
        }
    }

    /// Masks or unmasks MSI-X vector `v` as the host does; unmasking delivers a pending message.
    public func setMSIXMasked(_ v: Int, _ masked: Bool) {
        let deliver: Bool = state.withLock { s in
            guard v >= 0, v < s.msix.count else { return false }
            s.msix.setMasked(v, masked)
            guard !masked, s.msix.isPending(v) else { return false }
            s.msix.setPending(v, false)
            return true
        }
        if deliver, let sink = interruptSink { sink.deliver(.msix(vector: v)) }
    }

    /// Enables MSI with `vectors` messages (rounded up to a power of two), or disables it (0).
    public func setMSI(vectors: Int) {
        guard layout.msi != 0 else { return }
        state.withLock { s in
            var flags = UInt16(s.config.read(layout.msi + 2, size: 2)) & ~(PCIRegister.msiEnable | 0x70)
            if vectors > 0 {
                var log = 0
                while (1 << log) < vectors { log += 1 }
                flags |= PCIRegister.msiEnable | UInt16(log) << 4
            }
            s.config.set(layout.msi + 2, size: 2, value: UInt32(flags))
            if vectors == 0 { s.msiPending = 0 }
        }
    }

    /// Whether MSI-X vector `v` is pending.
    public func isMSIXPending(_ v: Int) -> Bool { state.withLock { v >= 0 && v < $0.msix.count && $0.msix.isPending(v) } }

    // MARK: configuration space

    /// Reads `size` (1, 2, 4) bytes of configuration space at `offset` (within one dword).
    public func configRead(_ offset: Int, size: Int) -> UInt32 {
        state.withLock { $0.config.read(offset, size: size) }
    }

    /// Writes configuration space as software does: only writable bits change; COMMAND updates the
    /// bus-master state; an FLR written to the PCI Express device control resets the function.
    public func configWrite(_ offset: Int, size: Int, value: UInt32) {
        let flr: Bool = state.withLock { s in
            s.config.write(offset, size: size, value: value)
            busMaster.store(s.config.command & PCIRegister.commandBusMaster != 0, ordering: .releasing)
            guard layout.express != 0 else { return false }
            let control = layout.express + 8
            if offset <= control + 1, offset + size > control + 1 {
                let v = UInt16(s.config.read(control, size: 2))
                if v & PCIRegister.expressDeviceControlFLR != 0 {
                    s.config.set(control, size: 2, value: UInt32(v & ~PCIRegister.expressDeviceControlFLR))
                    return true
                }
            }
            return false
        }
        if flr { functionLevelReset() }
    }

    /// The configuration space as it is now.
    public var config: PCIConfigSpace { state.withLock { $0.config } }

    /// What a reset keeps: the configuration space and MSI-X table (the PCI core's saved state).
    public struct SavedState: Sendable {
        fileprivate let config: PCIConfigSpace
        fileprivate let msix: MSIXTable
    }

    /// Saves the configuration state, as the PCI core does around a reset.
    public func saveState() -> SavedState { state.withLock { SavedState(config: $0.config, msix: $0.msix) } }

    /// Restores a saved configuration state.
    public func restoreState(_ saved: SavedState) {
        state.withLock { s in
            s.config = saved.config
            s.msix = saved.msix
            busMaster.store(s.config.command & PCIRegister.commandBusMaster != 0, ordering: .releasing)
        }
    }

    /// Restores a saved configuration state but keeps the current MSI and MSI-X setup (their
    /// capability registers and the MSI-X table), as the PCI core's restore after a reset does:
    /// it rewrites the interrupt state the host has configured, not the saved copy's.
    public func restoreState(_ saved: SavedState, keepingInterruptsOf current: SavedState) {
        state.withLock { s in
            s.config = saved.config
            if layout.msi != 0 {
                let length = layout.msiVectors > 0 ? 24 : 0
                for o in layout.msi + 2..<min(layout.msi + length, PCIRegister.conventionalSize) {
                    s.config.set(o, size: 1, value: current.config.read(o, size: 1))
                }
            }
            if layout.msix != 0 { s.config.set(layout.msix + 2, size: 2, value: current.config.read(layout.msix + 2, size: 2)) }
            s.msix = current.msix
            busMaster.store(s.config.command & PCIRegister.commandBusMaster != 0, ordering: .releasing)
        }
    }

    /// A function-level reset: bus mastering off, the configuration space and MSI-X table back
    /// to their power-on values, then the model's own reset.
    public func functionLevelReset() {
        state.withLock { s in
            s.config = powerOn
            s.msix = MSIXTable(count: s.msix.count)
            s.msiPending = 0
            s.intxAsserted = false
            busMaster.store(false, ordering: .releasing)
        }
        model.reset()
    }

    // MARK: BARs

    /// Whether COMMAND enables memory decoding.
    public var memoryEnabled: Bool { state.withLock { $0.config.command & PCIRegister.commandMemory != 0 } }

    /// The size of BAR `bar` (0 when unimplemented).
    public func barSize(_ bar: Int) -> UInt64 {
        guard bar >= 0, bar < 6, let b = powerOn.bars[bar] else { return 0 }
        return b.size
    }

    /// Whether BAR `bar` decodes I/O space (false for memory BARs and unimplemented ones).
    public func barIsIO(_ bar: Int) -> Bool {
        guard bar >= 0, bar < 6, let b = powerOn.bars[bar] else { return false }
        return b.kind == .io
    }

    private enum Target { case model, table(UInt64), pba(UInt64) }

    private func target(_ bar: Int, _ offset: UInt64, _ size: Int) -> Target {
        if bar == layout.msixTableBAR, offset >= layout.msixTableOffset, offset < layout.msixTableOffset + UInt64(layout.msixVectors) * 16 {
            return .table(offset - layout.msixTableOffset)
        }
        if bar == layout.msixPBABAR, offset >= layout.msixPBAOffset, offset < layout.msixPBAOffset + UInt64((layout.msixVectors + 63) / 64) * 8 {
            return .pba(offset - layout.msixPBAOffset)
        }
        return .model
    }

    /// Reads `size` (1, 2, 4, 8) bytes at `offset` of BAR `bar`: the MSI-X structures here, the
    /// rest from the model. All-ones for an access outside the BAR.
    public func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        let limit = barSize(bar)
        let ones: UInt64 = size >= 8 ? ~0 : (1 << (8 * UInt64(size))) - 1
        guard offset < limit, UInt64(size) <= limit - offset else { return ones }
        switch target(bar, offset, size) {
        case .model: return model.read(bar: bar, offset: offset, size: size) & ones
        case .table(let o): return state.withLock { $0.msix.readTable(o, size: size) } ?? ones
        case .pba(let o): return state.withLock { $0.msix.readPBA(o, size: size) } ?? ones
        }
    }

    /// Writes `size` (1, 2, 4, 8) bytes of `value` at `offset` of BAR `bar`.
    public func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        let limit = barSize(bar)
        guard offset < limit, UInt64(size) <= limit - offset else { return }
        switch target(bar, offset, size) {
        case .model: model.write(bar: bar, offset: offset, size: size, value: value)
        case .table(let o):
            let unmasked = state.withLock { $0.msix.writeTable(o, size: size, value: value) }
            for v in unmasked { deliverIfPending(v) }
        case .pba: break
        }
    }

    /// Writes a span wider than 8 bytes (a 64-byte `MOVDIR64B` store, a 16-, 32- or 64-byte
    /// vector store) as one access to the model; a span that touches the MSI-X table or pending
    /// bits goes as 8-byte writes in address order instead, each where it belongs.
    public func barWrite(_ bar: Int, offset: UInt64, bytes: UnsafeRawBufferPointer) {
        let limit = barSize(bar)
        guard offset < limit, UInt64(bytes.count) <= limit - offset else { return }
        if !touchesMSIX(bar, offset, bytes.count) {
            model.write(bar: bar, offset: offset, bytes: bytes)
            return
        }
        var at = 0
        while at < bytes.count {
            let width = min(8, bytes.count - at)
            var value: UInt64 = 0
            for i in 0..<width { value |= UInt64(bytes[at + i]) << (8 * UInt64(i)) }
            barWrite(bar, offset: offset + UInt64(at), size: width, value: value)
            at += width
        }
    }

    /// Reads a span wider than 8 bytes (a vector load) as 8-byte reads in address order;
    /// all-ones outside the BAR.
    public func barRead(_ bar: Int, offset: UInt64, into bytes: UnsafeMutableRawBufferPointer) {
        var at = 0
        while at < bytes.count {
            let width = min(8, bytes.count - at)
            let value = barRead(bar, offset: offset + UInt64(at), size: width)
            for i in 0..<width { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
            at += width
        }
    }

    private func touchesMSIX(_ bar: Int, _ offset: UInt64, _ count: Int) -> Bool {
        let end = offset + UInt64(count)
        func overlaps(_ start: UInt64, _ length: UInt64) -> Bool { length > 0 && offset < start + length && start < end }
        return (bar == layout.msixTableBAR && overlaps(layout.msixTableOffset, UInt64(layout.msixVectors) * 16))
            || (bar == layout.msixPBABAR && overlaps(layout.msixPBAOffset, UInt64((layout.msixVectors + 63) / 64) * 8))
    }

    private func deliverIfPending(_ v: Int) {
        let deliver: Bool = state.withLock { s in
            let control = UInt16(s.config.read(layout.msix + 2, size: 2))
            guard control & PCIRegister.msixEnable != 0, control & PCIRegister.msixFunctionMask == 0,
                  s.msix.isPending(v), !s.msix.isMasked(v) else { return false }
            s.msix.setPending(v, false)
            return true
        }
        if deliver, let sink = interruptSink { sink.deliver(.msix(vector: v)) }
    }
}
