import IOASIDCore
import IOASIDSoftDrivers
import IOASIDTestDriver

/// The modelled machine a program sees under `ioasid run --machine SPEC` (environment
/// `IOASID_MACHINE`): the devices behind `/dev/vfio/devices/vfio0`, `vfio1`, … in order.
///
/// `SPEC` is a comma-separated list of `KIND[:COUNT]` (COUNT defaults to 1):
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

    /// Builds the machine `spec` describes.
    static func parse(_ spec: String) throws(SpecError) -> Machine {
        var devices: [any DeviceModel] = []
        let soft = SoftMachine()
        for item in spec.split(separator: ",", omittingEmptySubsequences: true) {
            let parts = item.split(separator: ":", maxSplits: 1)
            let kind = String(parts[0]).lowercased()
            var count = 1
            if parts.count == 2 {
                guard let n = Int(parts[1]), n > 0, n <= 256 else { throw SpecError(description: "bad count in '\(item)'") }
                count = n
            }
            for _ in 0..<count {
                switch kind {
                case "mock": devices.append(MockDevice(flags: Mock.devicePASID))
                case "vtd":
                    do throws(IOMMUError) { devices.append(try soft.addVTdDevice()) } catch {
                        throw SpecError(description: "cannot add a VT-d device: \(error)")
                    }
                case "smmuv3":
                    do throws(IOMMUError) { devices.append(try soft.addSMMUv3Device()) } catch {
                        throw SpecError(description: "cannot add an SMMUv3 device: \(error)")
                    }
                default: throw SpecError(description: "unknown device kind '\(kind)' (known: mock, vtd, smmuv3)")
                }
            }
        }
        return Machine(devices: devices, soft: soft)
    }
}
