// The device kinds a machine specification may name (`vtd:KIND`): a registry from name to a
// factory that makes the `PCIDeviceModel`. The built-in kinds (`pci`, `ioat`) are registered the
// same way as a user's; `MachineSpec.parse` and the engine's machine consult it.
import IOASIDSoftIOMMU
import Synchronization

/// How the machine asks a factory for a model.
public struct DeviceKindRequest: Sendable {
    /// Whether the model is a virtual function that a program enabled through `sriov_numvfs`
    /// (only kinds with an SR-IOV capability are asked for one).
    public var virtualFunction: Bool

    /// A request.
    public init(virtualFunction: Bool = false) { self.virtualFunction = virtualFunction }
}

/// One registered device kind.
public struct DeviceKindEntry: Sendable {
    /// The name in machine specifications (`vtd:NAME`): lowercase letters, digits and `-`,
    /// starting with a letter.
    public var name: String
    /// A short human name (`ioasid devices`), e.g. "Intel I/OAT DMA engine".
    public var displayName: String
    /// Makes a new model, at its power-on state and not yet plugged in. Called once per device
    /// of this kind the machine builds (and once more, for its description, by discovery).
    public var make: @Sendable (DeviceKindRequest) -> any PCIDeviceModel
}

/// The device kinds machine specifications may name, by name.
///
/// A device author registers a kind once, before the engine builds its machine, and from then
/// on `--machine vtd:NAME` builds that device:
///
/// ```swift
/// @_cdecl("ioasid_engine_register_device_kinds")
/// public func registerDeviceKinds() {
///     try? DeviceKinds.register(name: "csum", displayName: "checksum engine") { _ in ChecksumDevice() }
/// }
/// ```
///
/// (That C symbol is what the engine looks up in its own library when it starts; see
/// docs/machine.md, "Adding a device kind".) Thread-safe.
public enum DeviceKinds {
    /// In registration order (the built-in kinds first).
    private static let table = Mutex<[DeviceKindEntry]>([
        DeviceKindEntry(name: "pci", displayName: "ioasid PCI function") { request in
            GenericPCIDevice(virtualFunction: request.virtualFunction)
        },
        DeviceKindEntry(name: "ioat", displayName: "Intel I/OAT DMA engine") { _ in IOATDevice() },
    ])
    /// Descriptions made so far, by name (a kind's model describes itself the same way each time).
    private static let descriptions = Mutex<[String: MachineDeviceDescription]>([:])

    /// Why a kind was not registered.
    public struct RegistrationError: Error, Hashable, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Registers a kind named `name`. Throws for a malformed name, a name already registered
    /// (the built-in `pci` and `ioat` included) or the IOMMU names (`mock`, `vtd`, `smmuv3`).
    public static func register(name: String, displayName: String,
                                make: @escaping @Sendable (DeviceKindRequest) -> any PCIDeviceModel) throws(RegistrationError) {
        guard isWellFormed(name) else {
            throw RegistrationError(description: "device kind '\(name)': use lowercase letters, digits and '-', starting with a letter")
        }
        guard MachineSpec.IOMMU(rawValue: name) == nil else {
            throw RegistrationError(description: "device kind '\(name)' is the name of an IOMMU")
        }
        try table.withLock { (t) throws(RegistrationError) in
            guard !t.contains(where: { $0.name == name }) else {
                throw RegistrationError(description: "device kind '\(name)' is already registered")
            }
            t.append(DeviceKindEntry(name: name, displayName: displayName, make: make))
        }
    }

    /// The kind named `name`, if registered.
    public static func entry(named name: String) -> DeviceKindEntry? { table.withLock { $0.first { $0.name == name } } }

    /// Every registered name, in registration order (`pci`, `ioat`, then the added kinds).
    public static var names: [String] { table.withLock { $0.map(\.name) } }

    /// A new model of `kind` (a kind that was parsed from a specification is registered).
    public static func makeModel(_ kind: MachineSpec.DeviceKind, virtualFunction: Bool = false) -> (any PCIDeviceModel)? {
        entry(named: kind.rawValue)?.make(DeviceKindRequest(virtualFunction: virtualFunction))
    }

    /// What a device of `kind` looks like from outside: what its model says of itself, with
    /// the kind's display name. Nil for a name that is not registered.
    public static func description(of kind: MachineSpec.DeviceKind) -> MachineDeviceDescription? {
        if let made = descriptions.withLock({ $0[kind.rawValue] }) { return made }
        guard let entry = entry(named: kind.rawValue) else { return nil }
        let made = MachineDeviceDescription(of: entry.make(DeviceKindRequest()), name: entry.displayName)
        descriptions.withLock { $0[kind.rawValue] = made }
        return made
    }

    /// Whether `name` may name a kind: `[a-z][a-z0-9-]*`, at most 32 characters.
    static func isWellFormed(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= 32, ("a"..."z").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
    }
}
