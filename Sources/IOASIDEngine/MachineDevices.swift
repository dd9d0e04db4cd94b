import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import IOASIDTestDriver
import Synchronization

/// One device of the modelled machine as the engine serves it: a physical function of the
/// machine specification, or a virtual function a program created through `sriov_numvfs`.
final class MachineDevice: Sendable {
    /// Its VFIO cdev minor (`/dev/vfio/devices/vfio<index>`); also its IOMMU group number.
    let index: Int
    /// Its PCI address (domain 0x0100; see `PCIAddress.modelled(index:)`).
    let address: PCIAddress
    /// The IOMMU it sits behind.
    let iommu: MachineSpec.IOMMU
    /// Its kind (a VF has its physical function's kind).
    let kind: MachineSpec.DeviceKind
    /// Identity, BARs and capabilities.
    let description: MachineDeviceDescription
    /// The model the cdev serves.
    let model: any DeviceModel
    /// Its PCI face as vfio-pci presents it (nil for a device of the test driver's mock IOMMU).
    let pci: VFIOPCIDevice?
    /// For a virtual function: the index of its physical function, and its VF number (0-based).
    let physicalFunction: (index: Int, vf: Int)?

    /// How many open cdevs name this device (a VF whose cdev is open cannot be removed).
    let openCount = Atomic<Int>(0)
    /// Reads the device's current configuration space. The VFIO face sets it when it builds a
    /// live configuration space; until then `MachineDevices.configSpace(of:)` builds the header
    /// from `description`.
    let configProvider = Mutex<(@Sendable () -> [UInt8])?>(nil)

    /// The IOMMU group number (one device per group).
    var group: Int { index }

    init(index: Int, address: PCIAddress, iommu: MachineSpec.IOMMU, kind: MachineSpec.DeviceKind,
         description: MachineDeviceDescription, model: any DeviceModel, pci: VFIOPCIDevice? = nil,
         physicalFunction: (index: Int, vf: Int)? = nil) {
        self.index = index
        self.address = address
        self.iommu = iommu
        self.kind = kind
        self.description = description
        self.model = model
        self.pci = pci
        self.physicalFunction = physicalFunction
    }
}

/// The machine's device list: the physical functions of the specification plus the virtual
/// functions programs enable. Lookups by cdev minor, IOMMU group and PCI address; SR-IOV with
/// the kernel's `sriov_numvfs` rules. Thread-safe; `state` is a leaf lock (no model, file or
/// callback is called while it is held).
final class MachineDevices: Sendable {
    private struct State {
        /// Every live device by index.
        var devices: [Int: MachineDevice] = [:]
        /// Per physical function: the indices of its enabled VFs, in VF order.
        var virtualFunctions: [Int: [Int]] = [:]
        /// VF models by requester ID, kept after the VFs are disabled and reused when enabled
        /// again (the IOMMU keeps the function's context entry, as a real one keeps the slot).
        var retiredModels: [UInt16: (model: any DeviceModel, pci: VFIOPCIDevice?)] = [:]
    }

    private let state: Mutex<State>
    /// Builds a virtual function of a physical function at a requester ID, with its cdev number.
    private let makeVirtualFunction: @Sendable (MachineDevice, RequesterID, Int) throws(IOMMUError) -> (any DeviceModel, VFIOPCIDevice?)
    /// Serialises `sriov_numvfs` writes (VF numbers are chosen before the models are built).
    private let sriovWrites = Mutex(())
    /// How many devices the specification has (VFs are numbered after them).
    let physicalCount: Int

    init(physical: [MachineDevice],
         makeVirtualFunction: @escaping @Sendable (MachineDevice, RequesterID, Int) throws(IOMMUError) -> (any DeviceModel, VFIOPCIDevice?)) {
        var state = State()
        for device in physical { state.devices[device.index] = device }
        self.state = Mutex(state)
        self.physicalCount = physical.count
        self.makeVirtualFunction = makeVirtualFunction
    }

    /// Every live device in index order.
    var all: [MachineDevice] { state.withLock { $0.devices.values.sorted { $0.index < $1.index } } }

    /// The device behind `/dev/vfio/devices/vfio<minor>`.
    func device(cdev minor: Int) -> MachineDevice? { state.withLock { $0.devices[minor] } }

    /// The device in IOMMU group `group` (`/dev/vfio/<group>`).
    func device(group: Int) -> MachineDevice? { state.withLock { $0.devices[group] } }

    /// The device at `address`.
    func device(address: PCIAddress) -> MachineDevice? {
        state.withLock { $0.devices.values.first { $0.address == address } }
    }

    /// The enabled VFs of physical function `pf`, in VF order.
    func virtualFunctions(of pf: Int) -> [MachineDevice] {
        state.withLock { s in (s.virtualFunctions[pf] ?? []).compactMap { s.devices[$0] } }
    }

    /// What changed when `sriov_numvfs` was written.
    struct SRIOVChange {
        var added: [MachineDevice] = []
        var removed: [MachineDevice] = []
    }

    /// Writes `count` to `sriov_numvfs` of physical function `pf`, with the kernel's rules
    /// (`sriov_numvfs_store` and vfio-pci's `sriov_configure`): `ERANGE` above `sriov_totalvfs`,
    /// nothing to do when `count` is the current number, `EBUSY` for a different non-zero number
    /// while VFs exist (disable first), `ENOENT` for a device without SR-IOV. Disabling VFs of
    /// which a cdev is open is `EBUSY` here (the kernel would wait for the user to close it;
    /// ioasid never blocks the program).
    func setVirtualFunctions(pf: Int, count: Int) throws(IOMMUError) -> SRIOVChange {
        try sriovWrites.withLock { _ throws(IOMMUError) -> SRIOVChange in try applyVirtualFunctions(pf: pf, count: count) }
    }

    private func applyVirtualFunctions(pf: Int, count: Int) throws(IOMMUError) -> SRIOVChange {
        guard let parent = device(cdev: pf), parent.physicalFunction == nil, let sriov = parent.description.sriov else {
            throw .noEntry("no SR-IOV capability")
        }
        guard count >= 0, count <= sriov.totalVFs else { throw .range("more VFs than sriov_totalvfs") }
        let current = virtualFunctions(of: pf)
        if count == current.count { return SRIOVChange() }
        if count == 0 {
            return try state.withLock { (s) throws(IOMMUError) -> SRIOVChange in
                let vfs = (s.virtualFunctions[pf] ?? []).compactMap { s.devices[$0] }
                guard vfs.allSatisfy({ $0.openCount.load(ordering: .acquiring) == 0 }) else { throw .busy("a VF's cdev is open") }
                for vf in vfs {
                    s.devices.removeValue(forKey: vf.index)
                    s.retiredModels[vf.address.requesterID.rawValue] = (vf.model, vf.pci)
                }
                s.virtualFunctions.removeValue(forKey: pf)
                return SRIOVChange(removed: vfs)
            }
        }
        guard current.isEmpty else { throw .busy("VFs already enabled; disable them first") }
        // The numbers first (writes are serialised), then the models outside the lock (they
        // register with their IOMMU), then publish.
        let numbers: [Int] = state.withLock { s in
            var numbers: [Int] = []
            var next = physicalCount
            for _ in 0..<count {
                while s.devices[next] != nil || numbers.contains(next) { next += 1 }
                numbers.append(next)
            }
            return numbers
        }
        let pfRID = Int(parent.address.requesterID.rawValue)
        var planned: [(rid: RequesterID, model: any DeviceModel, pci: VFIOPCIDevice?)] = []
        for vf in 0..<count {
            let raw = pfRID + Int(sriov.firstVFOffset) + vf * Int(sriov.vfStride)
            guard raw <= 0xffff else { throw .range("VF routing ID beyond the bus") }
            let rid = RequesterID(rawValue: UInt16(raw))
            let retired = state.withLock { $0.retiredModels[rid.rawValue] }
            if let retired, retired.pci?.index == numbers[vf] || retired.pci == nil {
                state.withLock { _ = $0.retiredModels.removeValue(forKey: rid.rawValue) }
                planned.append((rid, retired.model, retired.pci))
            } else if let retired {
                // The same function under another cdev number: a new PCI face on the same model.
                state.withLock { _ = $0.retiredModels.removeValue(forKey: rid.rawValue) }
                let address = PCIAddress(domain: PCIAddress.modelledDomain, requesterID: rid)
                let pci = retired.pci.map { old in
                    VFIOPCIDevice(slot: old.slot, device: old.device, index: numbers[vf], address: address.description,
                                  physicalFunction: parent.pci)
                }
                planned.append((rid, retired.model, pci))
            } else {
                let made = try makeVirtualFunction(parent, rid, numbers[vf])
                planned.append((rid, made.0, made.1))
            }
        }
        return state.withLock { s in
            var change = SRIOVChange()
            for (vf, plan) in planned.enumerated() {
                let device = MachineDevice(
                    index: numbers[vf], address: PCIAddress(domain: PCIAddress.modelledDomain, requesterID: plan.rid),
                    iommu: parent.iommu, kind: parent.kind, description: .pciVirtualFunction, model: plan.model,
                    pci: plan.pci, physicalFunction: (pf, vf))
                s.devices[numbers[vf]] = device
                change.added.append(device)
            }
            s.virtualFunctions[pf] = numbers
            return change
        }
    }

    /// The device's configuration space as sysfs `config` shows it: the live one when the VFIO
    /// face provides it, else the header built from the description (IDs, class, revision,
    /// subsystem IDs, header type 0). 4096 bytes for PCI Express, 256 otherwise.
    func configSpace(of device: MachineDevice) -> [UInt8] {
        if let provider = device.configProvider.withLock({ $0 }) { return provider() }
        let identity = device.description.identity
        var bytes = [UInt8](repeating: 0, count: device.description.isPCIExpress ? 4096 : 256)
        func put16(_ offset: Int, _ value: UInt16) {
            bytes[offset] = UInt8(truncatingIfNeeded: value)
            bytes[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
        }
        put16(0x00, device.physicalFunction == nil ? identity.vendorID : 0xffff)  // a VF's IDs read as 0xffff
        put16(0x02, device.physicalFunction == nil ? identity.deviceID : 0xffff)
        bytes[0x08] = identity.revision
        bytes[0x09] = UInt8(truncatingIfNeeded: identity.classCode)
        bytes[0x0a] = UInt8(truncatingIfNeeded: identity.classCode >> 8)
        bytes[0x0b] = UInt8(truncatingIfNeeded: identity.classCode >> 16)
        put16(0x2c, identity.subsystemVendorID)
        put16(0x2e, identity.subsystemID)
        return bytes
    }
}
