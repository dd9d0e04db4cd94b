import IOASIDCore
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import IOASIDTestDriver

/// The modelled machine a program sees under `ioasid run --machine SPEC` (environment
/// `IOASID_MACHINE`, grammar `MachineSpec`): the devices behind `/dev/vfio/devices/vfio0`,
/// `vfio1`, … in order, at the PCI addresses `MachineLayout` gives them (`0100:00:01.0`, …).
///
/// - `mock` — a PASID-capable device of the test driver's mock IOMMU (the kernel's
///   `IOMMUFD_TEST` semantics: 2 KiB pages, mock hardware info);
/// - `vtd[:KIND]` — a PCI function behind the software VT-d unit (scalable mode);
/// - `smmuv3[:KIND]` — a PCI function behind the software SMMUv3.
///
/// All `vtd` devices share one VT-d unit and all `smmuv3` devices one SMMUv3 (`SoftMachine`);
/// each function's requester ID is its PCI address's bus/device/function.
struct Machine {
    /// The devices, with the virtual functions programs enable.
    let devices: MachineDevices
    /// The software IOMMUs behind the `vtd` and `smmuv3` devices.
    let soft: SoftMachine

    /// Why a specification was refused.
    struct SpecError: Error, CustomStringConvertible {
        let description: String
    }

    /// An empty machine (no `IOASID_MACHINE`).
    static func empty() -> Machine {
        let soft = SoftMachine()
        return Machine(devices: MachineDevices(physical: [], makeVirtualFunction: Self.functionMaker(soft)), soft: soft)
    }

    /// Builds the machine `spec` describes; an empty text is an empty machine.
    static func parse(_ text: String) throws(SpecError) -> Machine {
        if text.isEmpty { return empty() }
        let spec: MachineSpec
        do throws(MachineSpec.ParseError) { spec = try MachineSpec.parse(text) } catch {
            throw SpecError(description: error.description)
        }
        let soft = SoftMachine()
        let make = functionMaker(soft)
        var physical: [MachineDevice] = []
        for device in MachineLayout(spec).devices {
            guard device.kind == .pci else {
                throw SpecError(description: "device kind '\(device.kind.rawValue)' is not modelled by this engine")
            }
            let model: any DeviceModel
            if device.iommu == .mock {
                model = MockDevice(flags: Mock.devicePASID)
            } else {
                do throws(IOMMUError) { model = try make(device.iommu, device.address.requesterID) } catch {
                    throw SpecError(description: "cannot add a \(device.iommu.rawValue) device: \(error)")
                }
            }
            physical.append(MachineDevice(index: device.index, address: device.address, iommu: device.iommu,
                                          kind: device.kind, description: device.description, model: model))
        }
        return Machine(devices: MachineDevices(physical: physical, makeVirtualFunction: make), soft: soft)
    }

    /// Adds a PCI function behind the software IOMMU `iommu` at `rid`.
    private static func functionMaker(_ soft: SoftMachine) -> @Sendable (MachineSpec.IOMMU, RequesterID) throws(IOMMUError) -> any DeviceModel {
        { (iommu, rid) throws(IOMMUError) -> any DeviceModel in
            switch iommu {
            case .vtd: return try soft.addVTdDevice(requesterID: rid)
            case .smmuv3: return try soft.addSMMUv3Device(requesterID: rid)
            case .mock: return MockDevice(flags: Mock.devicePASID)
            }
        }
    }
}
