import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

// What vfio-pci keeps per device, shared by every descriptor that opened it (cdevs and group
// device descriptors): the virtual configuration space of the current open, the interrupt
// triggers, the VF token, and the open count. The first open enables the device (bus mastering
// cleared, memory decoding on, a reset, the state saved, the virtual configuration space built
// from the function's); the last close disables it (interrupts torn down, bus mastering off,
// a reset, the saved state restored).

/// The PCI address text of device `index` of the modelled machine: `0100:00:NN.0`. The modelled
/// devices live in their own PCI domain (0x0100) so they cannot collide with the machine's own.
public func bdf(of index: Int) -> String {
    let device = index + 1
    let hex = String(device, radix: 16)
    return "0100:00:" + (hex.count < 2 ? "0" + hex : hex) + ".0"
}

/// A modelled PCI device as vfio-pci presents it.
public final class VFIOPCIDevice: @unchecked Sendable {
    /// The device's slot: configuration space, BARs, interrupts.
    public let slot: PCIDeviceSlot
    /// The core's device (what an iommufd binds).
    public let device: any DeviceModel
    /// The device's number in the machine (cdev `vfioN`, group `N`).
    public let index: Int
    /// The PCI address (by default `bdf(of: index)`; a virtual function's is its own).
    public let address: String
    /// For a virtual function, its physical function.
    public let physicalFunction: VFIOPCIDevice?

    struct Session {
        var config: VFIOConfigSpace
        var opens: Int
        var saved: PCIDeviceSlot.SavedState
    }
    private let session = Locked<Session?>(nil)
    /// The VF token of a physical function with SR-IOV (nil otherwise): UUID (random until set,
    /// as vfio-pci's) and open VFs.
    private let vfToken: Locked<(uuid: [UInt8], users: Int)>?
    let interrupts: VFIOInterrupts
    /// `VFIO_DEVICE_IOEVENTFD`s (`VFIOIOEventfds.swift`).
    let ioeventfds = Locked<[VFIOIOEventfd]>([])
    /// The migration state, for a model that can save its state (nil otherwise: the migration
    /// features are then ENOTTY, as for a vfio-pci device without a migration driver).
    let migration: VFIOMigration?

    /// A device of the machine.
    public init(slot: PCIDeviceSlot, device: any DeviceModel, index: Int, address: String? = nil, physicalFunction: VFIOPCIDevice? = nil,
                isEngineDescriptor: @escaping @Sendable (Int32) -> Bool = { _ in false }) {
        self.slot = slot
        self.device = device
        self.index = index
        self.address = address ?? bdf(of: index)
        self.physicalFunction = physicalFunction
        vfToken = physicalFunction == nil && slot.layout.sriov != 0
            ? Locked<(uuid: [UInt8], users: Int)>((uuid: (0..<16).map { _ in UInt8.random(in: 0...255) }, users: 0)) : nil
        interrupts = VFIOInterrupts(slot: slot, isEngineDescriptor: isEngineDescriptor)
        migration = (slot.model as? any MigratableDeviceModel).map { VFIOMigration(model: $0) }
    }

    // MARK: open and close

    /// Grants one more descriptor access; the first builds the open state.
    func open() {
        let first = session.withLock { s -> Bool in
            if s != nil { s!.opens += 1; return false }
            return true
        }
        guard first else { return }
        // pci_clear_master, pci_enable_device (memory decoding on), a reset, pci_save_state.
        let command = slot.configRead(PCIRegister.command, size: 2)
        var enabled = command & ~UInt32(PCIRegister.commandBusMaster | PCIRegister.commandINTxDisable)
        if (0..<6).contains(where: { slot.barSize($0) > 0 }) { enabled |= UInt32(PCIRegister.commandMemory) }
        let before = slot.saveState()
        slot.functionLevelReset()
        slot.restoreState(before)
        slot.configWrite(PCIRegister.command, size: 2, value: enabled)
        let saved = slot.saveState()
        var config = VFIOConfigSpace(slot: slot)
        let interrupts = self.interrupts
        config.onINTxDisable = { [weak interrupts] disabled in interrupts?.setINTxDisabledByCommand(disabled) }
        config.onFunctionLevelReset = { [slot] in
            let current = slot.saveState()
            slot.functionLevelReset()
            slot.restoreState(saved, keepingInterruptsOf: current)
        }
        slot.interruptSink = interrupts
        session.withLock { $0 = Session(config: config, opens: 1, saved: saved) }
        if let pf = physicalFunction { pf.vfToken?.withLock { $0.users += 1 } }
    }

    /// Drops one descriptor's access; the last tears the open state down.
    func close() {
        let last: PCIDeviceSlot.SavedState? = session.withLock { s in
            guard s != nil else { return nil }
            s!.opens -= 1
            guard s!.opens == 0 else { return nil }
            defer { s = nil }
            return s!.saved
        }
        guard let saved = last else { return }
        removeIOEventfds()
        migration?.reset()
        interrupts.disableAll()
        slot.interruptSink = nil
        slot.functionLevelReset()
        slot.restoreState(saved)
        let command = slot.configRead(PCIRegister.command, size: 2)
        slot.configWrite(PCIRegister.command, size: 2, value: command & ~UInt32(PCIRegister.commandBusMaster))
        if let pf = physicalFunction { pf.vfToken?.withLock { $0.users -= 1 } }
    }

    /// Runs `body` on the open state (nil when the device is not open).
    func withConfig<R>(_ body: (inout VFIOConfigSpace) -> R) -> R? {
        session.withLock { s in
            guard s != nil else { return nil }
            return body(&s!.config)
        }
    }

    // MARK: reset

    /// `VFIO_DEVICE_RESET` (and an FLR written to config space): a function-level reset, after
    /// which the function's configuration is the one saved when the device was opened (the real
    /// kernel answers COMMAND 0x406 → 0x103 across a reset), with the interrupt setup kept; the
    /// virtual registers (BARs, interrupt line) are untouched and the device's own registers
    /// return to their power-on values.
    func reset() {
        migration?.reset()
        let current = slot.saveState()
        let opened = session.withLock { $0?.saved } ?? current
        slot.functionLevelReset()
        slot.restoreState(opened, keepingInterruptsOf: current)
        _ = withConfig { $0.afterReset() }
    }

    /// Descriptors of this device granted through its cdev (a group is not viable meanwhile).
    private let cdevOpens = Locked(0)
    /// Whether the device is open through a cdev.
    var openThroughCdev: Bool { cdevOpens.withLock { $0 > 0 } }
    func cdevOpened() { cdevOpens.withLock { $0 += 1 } }
    func cdevClosed() { cdevOpens.withLock { $0 -= 1 } }

    /// Whether reset works (`reset_works`): the function has FLR (PCI Express capability) or PM
    /// without No_Soft_Reset; our functions reset whenever they have PCI Express with FLR.
    var resetWorks: Bool {
        let p = slot.layout.express
        return p != 0 && slot.configRead(p + 4, size: 4) & PCIRegister.expressDeviceCapabilityFLR != 0
    }

    // MARK: VF token

    /// Whether this device has a VF token to set (`VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`).
    var hasVFToken: Bool { vfToken != nil }

    /// Sets the VF token (the feature's SET).
    func setVFToken(_ uuid: [UInt8]) { vfToken?.withLock { $0.uuid = uuid } }

    /// vfio-pci's token check at open (`match_token_uuid`): a VF needs its PF's token; a PF with
    /// open VFs needs its own; a PF without takes a given token as its new one; any other device
    /// refuses a token (EINVAL).
    func matchToken(_ uuid: [UInt8]?) throws(IOMMUError) {
        if let pf = physicalFunction {
            guard let token = pf.vfToken else {
                if uuid == nil { return }
                throw .invalid("VF token given, PF not bound to vfio-pci")
            }
            guard let uuid else { throw .accessDenied("VF token required") }
            guard token.withLock({ $0.uuid == uuid }) else { throw .accessDenied("incorrect VF token") }
        } else if let token = vfToken {
            let result: IOMMUError? = token.withLock { t in
                if t.users > 0 {
                    guard let uuid else { return .accessDenied("VF token required") }
                    guard uuid == t.uuid else { return .accessDenied("incorrect VF token") }
                } else if let uuid {
                    t.uuid = uuid
                }
                return nil
            }
            if let result { throw result }
        } else if uuid != nil {
            throw .invalid("VF token given, not a PF or VF")
        }
    }

    /// Parses `"BDF"` or `"BDF vf_token=UUID"` as `VFIO_GROUP_GET_DEVICE_FD` takes it: nil when
    /// the name is another device's; the token (nil without) when it is this one's; EINVAL for a
    /// malformed option.
    func matchName(_ text: String) throws(IOMMUError) -> [UInt8]?? {
        guard text.hasPrefix(address) else { return .none }
        var rest = text.dropFirst(address.count)
        if rest.isEmpty { return .some(nil) }
        guard rest.first == " " else { return .none }
        rest = rest.drop { $0 == " " }
        var token: [UInt8]? = nil
        for option in rest.split(separator: " ") {
            guard option.hasPrefix("vf_token="), token == nil, let uuid = Self.parseUUID(option.dropFirst(9)) else {
                throw .invalid("bad option")
            }
            token = uuid
        }
        return .some(token)
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    static func parseUUID(_ text: Substring) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count == 36 else { return nil }
        var bytes: [UInt8] = []
        var i = 0
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                guard chars[i] == UInt8(ascii: "-") else { return nil }
                i += 1
                continue
            }
            guard let hi = hexValue(chars[i]), let lo = hexValue(chars[i + 1]) else { return nil }
            bytes.append(hi << 4 | lo)
            i += 2
        }
        return bytes
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
