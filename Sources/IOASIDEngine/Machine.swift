import IOASIDCore
import IOASIDSoftDrivers
import IOASIDTestDriver

/// The modelled machine a program sees under `ioasid run --machine SPEC` (environment
/// `IOASID_MACHINE`): the devices behind `/dev/vfio/devices/vfio0`, `vfio1`, … in order.
///
/// `SPEC` is a `MachineSpec`: a comma-separated list of `IOMMU[:DEVICE][:COUNT]` (COUNT defaults
/// to 1; DEVICE `pci`, the only kind this engine models so far):
/// - `mock` — a PASID-capable device of the test driver's mock IOMMU (the kernel's
///   `IOMMUFD_TEST` semantics: 2 KiB pages, mock hardware info);
/// - `vtd` — a PCI function (20-bit PASIDs, ATS, PRI) behind the software VT-d unit
///   (scalable mode; `IOMMU_HW_INFO_TYPE_INTEL_VTD`, nested HWPTs from `IOMMU_HWPT_DATA_VTD_S1`);
/// - `smmuv3` — a PCI function (20-bit SubstreamIDs, ATS, PRI) behind the software SMMUv3
///   (`IOMMU_HW_INFO_TYPE_ARM_SMMUV3`, vIOMMU `IOMMU_VIOMMU_TYPE_ARM_SMMUV3`).
///
/// Device numbers follow the order of the list; all `vtd` devices share one VT-d unit and all
/// `smmuv3` devices one SMMUv3 (`SoftMachine`).
struct Machine {
    /// The devices, by cdev number.
    let devices: [any DeviceModel]
    /// The software IOMMUs behind the `vtd` and `smmuv3` devices.
    let soft: SoftMachine

    /// Why a specification was refused.
    struct SpecError: Error, CustomStringConvertible {
        let description: String
    }

    /// Builds the machine `text` describes (`MachineSpec`, the grammar `ioasid run --machine`
    /// checks); an empty text is a machine without devices.
    static func parse(_ text: String) throws(SpecError) -> Machine {
        var devices: [any DeviceModel] = []
        let soft = SoftMachine()
        guard !text.isEmpty else { return Machine(devices: devices, soft: soft) }
        let spec: MachineSpec
        do throws(MachineSpec.ParseError) { spec = try MachineSpec.parse(text) } catch {
            throw SpecError(description: error.description)
        }
        for item in spec.devices {
            guard item.device == .pci else {
                throw SpecError(description: "device kind '\(item.device.rawValue)' is not modelled by this engine")
            }
            switch item.iommu {
            case .mock: devices.append(MockDevice(flags: Mock.devicePASID))
            case .vtd:
                do throws(IOMMUError) { devices.append(try soft.addVTdDevice()) } catch {
                    throw SpecError(description: "cannot add a VT-d device: \(error)")
                }
            case .smmuv3:
                do throws(IOMMUError) { devices.append(try soft.addSMMUv3Device()) } catch {
                    throw SpecError(description: "cannot add an SMMUv3 device: \(error)")
                }
            }
        }
        return Machine(devices: devices, soft: soft)
    }
}
