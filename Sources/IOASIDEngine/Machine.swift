import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import IOASIDTestDriver

/// The modelled machine a program sees under `ioasid run --machine SPEC` (environment
/// `IOASID_MACHINE`, grammar `MachineSpec`): the devices behind `/dev/vfio/devices/vfio0`,
/// `vfio1`, … and the groups `/dev/vfio/0`, `/dev/vfio/1`, … in order, at the PCI addresses
/// `MachineLayout` gives them (`0100:00:01.0`, …).
///
/// - `mock` — a PASID-capable device of the test driver's mock IOMMU (the kernel's
///   `IOMMUFD_TEST` semantics); it has a cdev but no PCI face (no regions, IRQs or group);
/// - `vtd[:KIND]` — a device behind the software VT-d unit (scalable mode);
/// - `smmuv3[:KIND]` — a device behind the software SMMUv3;
/// - `KIND` is a registered device kind (`DeviceKinds`): `pci` (`GenericPCIDevice`: 20-bit
///   PASIDs, ATS, PRI, MSI, MSI-X, SR-IOV, a DMA engine in BAR 0), `ioat` (an Intel I/OAT DMA
///   engine), or one that code built into this library registered (`EngineExtensions`).
///
/// All `vtd` devices share one VT-d unit and all `smmuv3` devices one SMMUv3 (`SoftMachine`);
/// each function's requester ID is its PCI address's bus/device/function. Virtual functions a
/// program enables through `sriov_numvfs` join the list (`MachineDevices`).
struct Machine {
    /// The devices, with the virtual functions programs enable.
    let devices: MachineDevices
    /// The software IOMMUs behind the `vtd` and `smmuv3` devices.
    let soft: SoftMachine

    /// Why a specification was refused.
    struct SpecError: Error, CustomStringConvertible {
        let description: String
    }

    /// A new device model of one `KIND` (the registered kinds only).
    static func model(_ kind: MachineSpec.DeviceKind, virtualFunction: Bool = false) throws(IOMMUError) -> any PCIDeviceModel {
        guard let model = DeviceKinds.makeModel(kind, virtualFunction: virtualFunction) else {
            throw .noEntry("no such device kind")
        }
        return model
    }

    /// Builds the machine `text` describes (an empty text: no devices). `isEngineDescriptor`
    /// says whether a descriptor is one of the engine's (not a program's eventfd);
    /// `vtdConfiguration` describes the VT-d unit behind the `vtd` devices.
    static func parse(_ text: String, isEngineDescriptor: @escaping @Sendable (Int32) -> Bool = { _ in false },
                      vtdConfiguration: VTdConfiguration = VTdConfiguration()) throws(SpecError) -> Machine {
        EngineExtensions.load()
        let soft = SoftMachine(vtdConfiguration: vtdConfiguration)
        let makeVF = virtualFunctionMaker(soft, isEngineDescriptor: isEngineDescriptor)
        guard !text.isEmpty else { return Machine(devices: MachineDevices(physical: [], makeVirtualFunction: makeVF), soft: soft) }
        let spec: MachineSpec
        do throws(MachineSpec.ParseError) { spec = try MachineSpec.parse(text.lowercased()) } catch {
            throw SpecError(description: error.description)
        }
        var physical: [MachineDevice] = []
        for device in MachineLayout(spec).devices {
            let model: any DeviceModel
            var pci: VFIOPCIDevice? = nil
            if device.iommu == .mock {
                model = MockDevice(flags: Mock.devicePASID)
            } else {
                let plugged: PluggedPCIDevice
                do throws(IOMMUError) {
                    plugged = try plug(try Self.model(device.kind), behind: device.iommu, at: device.address.requesterID, soft: soft)
                } catch {
                    throw SpecError(description: "cannot add a \(device.iommu.rawValue) device: \(error)")
                }
                model = plugged.device
                pci = VFIOPCIDevice(slot: plugged.slot, device: plugged.device, index: device.index,
                                    address: device.address.description, isEngineDescriptor: isEngineDescriptor)
            }
            let entry = MachineDevice(index: device.index, address: device.address, iommu: device.iommu,
                                      kind: device.kind, description: device.description, model: model, pci: pci)
            if let pci {
                let length = device.description.isPCIExpress ? 4096 : 256
                entry.configProvider.withLock { $0 = { Self.configBytes(of: pci.slot, length: length) } }
            }
            physical.append(entry)
        }
        return Machine(devices: MachineDevices(physical: physical, makeVirtualFunction: makeVF), soft: soft)
    }

    /// The device's configuration space as it reads now (the sysfs `config` file).
    static func configBytes(of slot: PCIDeviceSlot, length: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(length)
        for offset in stride(from: 0, to: length, by: 4) {
            let word = slot.configRead(offset, size: 4)
            for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: word >> (8 * UInt32(i)))) }
        }
        return bytes
    }

    private static func plug(_ model: any PCIDeviceModel, behind iommu: MachineSpec.IOMMU, at rid: RequesterID,
                             soft: SoftMachine) throws(IOMMUError) -> PluggedPCIDevice {
        iommu == .vtd ? try soft.plugVTd(model, requesterID: rid) : try soft.plugSMMUv3(model, requesterID: rid)
    }

    /// Builds a virtual function of `parent` at `rid` with cdev/group number `index`.
    private static func virtualFunctionMaker(_ soft: SoftMachine, isEngineDescriptor: @escaping @Sendable (Int32) -> Bool)
        -> @Sendable (MachineDevice, RequesterID, Int) throws(IOMMUError) -> (any DeviceModel, VFIOPCIDevice?) {
        { (parent, rid, index) throws(IOMMUError) -> (any DeviceModel, VFIOPCIDevice?) in
            guard parent.iommu != .mock else { return (MockDevice(flags: Mock.devicePASID), nil) }
            let plugged = try plug(try Self.model(parent.kind, virtualFunction: true), behind: parent.iommu, at: rid, soft: soft)
            let address = PCIAddress(domain: PCIAddress.modelledDomain, requesterID: rid)
            let pci = VFIOPCIDevice(slot: plugged.slot, device: plugged.device, index: index, address: address.description,
                                    physicalFunction: parent.pci, isEngineDescriptor: isEngineDescriptor)
            return (plugged.device, pci)
        }
    }
}
