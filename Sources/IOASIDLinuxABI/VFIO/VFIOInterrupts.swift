import CIOASIDSys
import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

// VFIO_DEVICE_GET_IRQ_INFO and VFIO_DEVICE_SET_IRQS of a vfio-pci device: the five interrupt
// indexes (INTx, MSI, MSI-X, ERR, REQ), one eventfd trigger per vector, and vfio-pci's rules.
//
// - At most one of INTx, MSI and MSI-X is active ("the mode"); setting eventfds on an index
//   while another is active is EINVAL. The first eventfds enable the mode (MSI allocates
//   `start + count` vectors; MSI-X unmasks the vectors given triggers), `count == 0` with
//   DATA_NONE and ACTION_TRIGGER tears the mode down, and fd -1 removes one vector's trigger.
// - DATA_NONE and DATA_BOOL with ACTION_TRIGGER signal the triggers (loopback testing).
// - INTx is automasked: after it fires it stays masked until ACTION_UNMASK; MSI and MSI-X
//   have no mask/unmask actions (ENOTTY), nor have ERR and REQ. An unmask eventfd
//   (`ACTION_UNMASK | DATA_EVENTFD`) is watched (`VFIOEventfdWatcher`): each signal unmasks, as
//   KVM's resample eventfd does in the kernel.
// - Triggers are the program's eventfds. Each is duplicated with a raw system call (the engine
//   never re-enters the preload) so that the program may close its own number, and signalled
//   with a raw write of 1 from whatever thread the device raises the interrupt on.

/// The interrupt indexes of a vfio-pci device.
enum VFIOIRQIndex: UInt32 {
    case intx = 0, msi = 1, msix = 2, err = 3, req = 4
    static let count: UInt32 = 5
}

/// The interrupt state of one VFIO device (shared by every descriptor of the device).
final class VFIOInterrupts: PCIInterruptSink, @unchecked Sendable {
    enum Mode: Equatable { case none, intx, msi, msix }

    private struct State {
        var mode = Mode.none
        /// Trigger descriptor per vector of the mode (-1: none).
        var triggers: [Int32] = []
        var intxMasked = false
        /// INTx fired while masked (delivered on unmask).
        var intxPending = false
        /// INTx disabled through COMMAND (vfio-pci's virtual INTx disable).
        var intxDisabledByCommand = false
        var errTrigger: Int32 = -1
        var reqTrigger: Int32 = -1
        /// The INTx unmask eventfd (`ACTION_UNMASK | DATA_EVENTFD`), watched: each signal unmasks.
        var unmaskWatch: VFIOEventfdWatch?
    }
    private let state = Locked(State())
    private let slot: PCIDeviceSlot
    /// Whether a descriptor belongs to the engine (such eventfds are not the program's).
    private let isEngineDescriptor: @Sendable (Int32) -> Bool

    init(slot: PCIDeviceSlot, isEngineDescriptor: @escaping @Sendable (Int32) -> Bool) {
        self.slot = slot
        self.isEngineDescriptor = isEngineDescriptor
    }

    /// The active mode.
    var mode: Mode { state.withLock { $0.mode } }

    // MARK: counts (vfio_pci_get_irq_count)

    /// How many vectors `index` has: INTx 1 if the pin is wired, MSI and MSI-X from their
    /// capabilities, ERR 1 for PCI Express, REQ 1.
    func count(_ index: UInt32, interruptPin: UInt8) -> Int {
        switch VFIOIRQIndex(rawValue: index) {
        case .intx: interruptPin != 0 ? 1 : 0
        case .msi: slot.layout.msiVectors
        case .msix: slot.layout.msixVectors
        case .err: slot.layout.express != 0 ? 1 : 0
        case .req: 1
        case nil: 0
        }
    }

    // MARK: delivery

    func deliver(_ interrupt: PCIInterrupt) {
        var fd: Int32 = -1
        state.withLock { s in
            switch interrupt {
            case .intx:
                guard s.mode == .intx else { return }
                if s.intxMasked || s.intxDisabledByCommand { s.intxPending = true; return }
                s.intxMasked = true                     // automasked
                fd = s.triggers.first ?? -1
            case .msi(let v):
                guard s.mode == .msi, v < s.triggers.count else { return }
                fd = s.triggers[v]
            case .msix(let v):
                guard s.mode == .msix, v < s.triggers.count else { return }
                fd = s.triggers[v]
            }
        }
        if fd >= 0 { _ = ioasid_sys_eventfd_signal(fd) }
    }

    /// Signals the REQ trigger (the host asks the user to release the device).
    func request() {
        let fd = state.withLock { $0.reqTrigger }
        if fd >= 0 { _ = ioasid_sys_eventfd_signal(fd) }
    }

    /// The user set or cleared COMMAND's INTx disable (vfio-pci masks INTx with it).
    func setINTxDisabledByCommand(_ disabled: Bool) {
        let deliver = state.withLock { s -> Bool in
            s.intxDisabledByCommand = disabled
            guard !disabled, s.intxPending, !s.intxMasked, s.mode == .intx else { return false }
            s.intxPending = false
            return true
        }
        if deliver { self.deliver(.intx) }
    }

    // MARK: SET_IRQS

    static let dataNone: UInt32 = 1 << 0, dataBool: UInt32 = 1 << 1, dataEventfd: UInt32 = 1 << 2
    static let actionMask: UInt32 = 1 << 3, actionUnmask: UInt32 = 1 << 4, actionTrigger: UInt32 = 1 << 5
    static let dataTypeMask: UInt32 = 7, actionTypeMask: UInt32 = 7 << 3

    /// Applies a validated `VFIO_DEVICE_SET_IRQS`; `data` holds `count` bools or eventfds.
    func set(flags: UInt32, index: UInt32, start: Int, count: Int, data: [UInt8]) throws(IOMMUError) {
        let action = flags & Self.actionTypeMask
        switch VFIOIRQIndex(rawValue: index) {
        case .intx:
            switch action {
            case Self.actionMask: try intxMask(flags, start, count, data, mask: true)
            case Self.actionUnmask: try intxMask(flags, start, count, data, mask: false)
            case Self.actionTrigger: try intxTrigger(flags, start, count, data)
            default: throw .notTTY("no such action")
            }
        case .msi, .msix:
            guard action == Self.actionTrigger else { throw .notTTY("MSI and MSI-X have no mask/unmask actions") }
            try msiTrigger(flags, msix: index == VFIOIRQIndex.msix.rawValue, start, count, data)
        case .err:
            guard action == Self.actionTrigger, slot.layout.express != 0 else { throw .notTTY("no such action") }
            guard start == 0, count <= 1 else { throw .invalid("ERR has one vector") }
            try singleTrigger(flags, count, data, err: true)
        case .req:
            guard action == Self.actionTrigger else { throw .notTTY("no such action") }
            guard start == 0, count <= 1 else { throw .invalid("REQ has one vector") }
            try singleTrigger(flags, count, data, err: false)
        case nil:
            throw .notTTY("no such index")
        }
    }

    /// Removes every trigger and disables the mode (the device's last close).
    func disableAll() {
        let (closing, unmask): ([Int32], VFIOEventfdWatch?) = state.withLock { s in
            var fds = s.triggers + [s.errTrigger, s.reqTrigger]
            fds.removeAll { $0 < 0 }
            let unmask = s.unmaskWatch
            s = State()
            return (fds, unmask)
        }
        unmask?.cancel()
        for fd in closing { _ = ioasid_sys_close(fd) }
        slot.setMSIX(enabled: false)
        slot.setMSI(vectors: 0)
    }

    private static func fd(_ data: [UInt8], _ i: Int) -> Int32 {
        Int32(bitPattern: UInt32(data[4 * i]) | UInt32(data[4 * i + 1]) << 8 | UInt32(data[4 * i + 2]) << 16 | UInt32(data[4 * i + 3]) << 24)
    }

    /// Takes a reference on the program's eventfd `fd` (`eventfd_ctx_fdget`): EBADF for a
    /// closed descriptor, EINVAL for one that is not an eventfd.
    func reference(_ fd: Int32) throws(IOMMUError) -> Int32 {
        let kind = ioasid_sys_is_eventfd(fd)
        if kind < 0 { throw .badDescriptor("not an open descriptor") }
        guard kind == 1, !isEngineDescriptor(fd) else { throw .invalid("not an eventfd") }
        let copy = ioasid_sys_dup_cloexec(fd, 0)
        guard copy >= 0 else { throw .noMemory("cannot duplicate the eventfd") }
        return Int32(copy)
    }

    private func intxMask(_ flags: UInt32, _ start: Int, _ count: Int, _ data: [UInt8], mask: Bool) throws(IOMMUError) {
        guard mode == .intx, start == 0, count == 1 else { throw .invalid("INTx is not enabled, or not vector 0 alone") }
        var apply = true
        switch flags & Self.dataTypeMask {
        case Self.dataBool: apply = data[0] != 0
        case Self.dataEventfd:
            if mask { throw .notTTY("masking by eventfd is not supported") }
            try setUnmaskEventfd(Self.fd(data, 0))
            return
        default: break
        }
        guard apply else { return }
        if mask {
            state.withLock { $0.intxMasked = true }
        } else {
            unmaskINTx()
        }
    }

    /// Unmasks INTx; an interrupt that fired while masked is delivered now.
    private func unmaskINTx() {
        slot.deassertINTx()
        let deliver = state.withLock { s -> Bool in
            guard s.mode == .intx else { return false }
            s.intxMasked = false
            guard s.intxPending, !s.intxDisabledByCommand else { return false }
            s.intxPending = false
            return true
        }
        if deliver { self.deliver(.intx) }
    }

    /// `ACTION_UNMASK | DATA_EVENTFD` on INTx: `fd` ≥ 0 starts watching the eventfd (each signal
    /// unmasks, as vfio's virqfd does; EBUSY when one is watched already), -1 stops. A watched
    /// eventfd whose descriptors the program has all closed is gone, as the kernel drops it at
    /// that close (QEMU closes the old unmask eventfd and sets a new one when INTx routing moves).
    private func setUnmaskEventfd(_ fd: Int32) throws(IOMMUError) {
        guard fd >= 0 else {
            state.withLock { s -> VFIOEventfdWatch? in defer { s.unmaskWatch = nil }; return s.unmaskWatch }?.cancel()
            return
        }
        if let current = state.withLock({ $0.unmaskWatch }) {
            guard !VFIOEventfdWatcher.shared.programHolds(current) else { throw .busy("an unmask eventfd is set already") }
            state.withLock { s in if s.unmaskWatch === current { s.unmaskWatch = nil } }
            current.cancel()
        }
        let copy = try reference(fd)
        let watch = try VFIOEventfdWatcher.shared.watch(copy) { [weak self] in self?.unmaskINTx() }
        let installed = state.withLock { s -> Bool in
            guard s.unmaskWatch == nil, s.mode == .intx else { return false }
            s.unmaskWatch = watch
            return true
        }
        if !installed {
            watch.cancel()
            throw .busy("an unmask eventfd is set already")
        }
    }

    private func intxTrigger(_ flags: UInt32, _ start: Int, _ count: Int, _ data: [UInt8]) throws(IOMMUError) {
        let current = mode
        if current == .intx, count == 0, flags & Self.dataNone != 0 {
            let (old, unmask) = state.withLock { s -> ([Int32], VFIOEventfdWatch?) in
                defer { s.mode = .none; s.triggers = []; s.intxMasked = false; s.intxPending = false; s.unmaskWatch = nil }
                return (s.triggers, s.unmaskWatch)
            }
            unmask?.cancel()
            for fd in old where fd >= 0 { _ = ioasid_sys_close(fd) }
            return
        }
        guard current == .intx || current == .none, start == 0, count == 1 else { throw .invalid("another interrupt mode is active, or not vector 0 alone") }
        if flags & Self.dataEventfd != 0 {
            let fd = Self.fd(data, 0)
            var trigger: Int32 = -1
            if fd >= 0 { trigger = try reference(fd) }
            let installed = trigger
            let old = state.withLock { s -> Int32 in
                let old = s.triggers.first ?? -1
                if s.mode == .none {
                    s.mode = .intx
                    s.intxMasked = false
                    s.intxPending = false
                }
                s.triggers = [installed]
                return old
            }
            if old >= 0 { _ = ioasid_sys_close(old) }
            return
        }
        guard current == .intx else { throw .invalid("INTx is not enabled") }
        if flags & Self.dataBool != 0, data[0] == 0 { return }
        let fd = state.withLock { s -> Int32 in s.intxDisabledByCommand ? -1 : (s.triggers.first ?? -1) }
        if fd >= 0 { _ = ioasid_sys_eventfd_signal(fd) }
    }

    private func msiTrigger(_ flags: UInt32, msix: Bool, _ start: Int, _ count: Int, _ data: [UInt8]) throws(IOMMUError) {
        let target: Mode = msix ? .msix : .msi
        let current = mode
        if current == target, count == 0, flags & Self.dataNone != 0 {
            disableMSI(msix: msix)
            return
        }
        guard current == target || current == .none else { throw .invalid("another interrupt mode is active") }
        if flags & Self.dataEventfd != 0 {
            if current == .none {
                let vectors = start + count
                state.withLock { s in
                    s.mode = target
                    s.triggers = [Int32](repeating: -1, count: msix ? slot.layout.msixVectors : vectors)
                }
                if msix { slot.setMSIX(enabled: true) } else { slot.setMSI(vectors: vectors) }
                do throws(IOMMUError) { try setBlock(msix: msix, start, count, data) } catch {
                    disableMSI(msix: msix)
                    throw error
                }
            } else {
                try setBlock(msix: msix, start, count, data)
            }
            return
        }
        guard current == target else { throw .invalid("the interrupt mode is not enabled") }
        let fds: [Int32] = state.withLock { s in
            (start..<(start + count)).compactMap { v in
                guard v < s.triggers.count, s.triggers[v] >= 0 else { return nil }
                if flags & Self.dataBool != 0, data[v - start] == 0 { return nil }
                return s.triggers[v]
            }
        }
        for fd in fds { _ = ioasid_sys_eventfd_signal(fd) }
    }

    /// Sets triggers `start..<start+count`; on a failure, the ones set by this call are removed.
    private func setBlock(msix: Bool, _ start: Int, _ count: Int, _ data: [UInt8]) throws(IOMMUError) {
        var done = start
        do throws(IOMMUError) {
            for i in 0..<count {
                let vector = start + i
                try setVector(msix: msix, vector, Self.fd(data, i))
                done = vector + 1
            }
        } catch {
            for v in start..<done { try? setVector(msix: msix, v, -1) }
            throw error
        }
    }

    private func setVector(msix: Bool, _ vector: Int, _ fd: Int32) throws(IOMMUError) {
        let old = state.withLock { s -> Int32 in
            guard vector < s.triggers.count else { return -1 }
            defer { s.triggers[vector] = -1 }
            return s.triggers[vector]
        }
        if old >= 0 {
            _ = ioasid_sys_close(old)
            if msix { slot.setMSIXMasked(vector, true) }
        }
        guard fd >= 0 else { return }
        guard vector < state.withLock({ $0.triggers.count }) else { throw .invalid("vector beyond the allocated ones") }
        let trigger = try reference(fd)
        state.withLock { $0.triggers[vector] = trigger }
        if msix { slot.setMSIXMasked(vector, false) }
    }

    private func disableMSI(msix: Bool) {
        let old = state.withLock { s -> [Int32] in defer { s.mode = .none; s.triggers = [] }; return s.triggers }
        for fd in old where fd >= 0 { _ = ioasid_sys_close(fd) }
        if msix { slot.setMSIX(enabled: false) } else { slot.setMSI(vectors: 0) }
    }

    private func singleTrigger(_ flags: UInt32, _ count: Int, _ data: [UInt8], err: Bool) throws(IOMMUError) {
        let current = state.withLock { err ? $0.errTrigger : $0.reqTrigger }
        func replace(_ new: Int32) {
            let old = state.withLock { s -> Int32 in
                let old = err ? s.errTrigger : s.reqTrigger
                if err { s.errTrigger = new } else { s.reqTrigger = new }
                return old
            }
            if old >= 0 { _ = ioasid_sys_close(old) }
        }
        if flags & Self.dataNone != 0 {
            guard current >= 0 else { throw .invalid("no trigger is set") }
            if count > 0 { _ = ioasid_sys_eventfd_signal(current) } else { replace(-1) }
        } else if flags & Self.dataBool != 0 {
            guard count > 0 else { throw .invalid("no data") }
            if data[0] != 0, current >= 0 { _ = ioasid_sys_eventfd_signal(current) }
        } else if flags & Self.dataEventfd != 0 {
            guard count > 0 else { throw .invalid("no data") }
            let fd = Self.fd(data, 0)
            if fd == -1 { replace(-1); return }
            guard fd >= 0 else { throw .invalid("bad descriptor number") }
            replace(try reference(fd))
        } else {
            throw .invalid("no data type")
        }
    }
}
