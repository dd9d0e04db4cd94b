import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import IOASIDTestDriver

/// The modelled machine a program sees under `ioasid run --machine SPEC` (environment
/// `IOASID_MACHINE`, grammar `MachineSpec`): the devices behind `/dev/vfio/devices/vfio0`,
/// `vfio1`, … and the groups `/dev/vfio/0`, `/dev/vfio/1`, … in order.
///
/// - `mock` — a PASID-capable device of the test driver's mock IOMMU (the kernel's
///   `IOMMUFD_TEST` semantics); it has a cdev but no PCI face (no regions, IRQs or group);
/// - `vtd[:KIND]` — a device behind the software VT-d unit (scalable mode);
/// - `smmuv3[:KIND]` — a device behind the software SMMUv3;
/// - `KIND` is `pci` (`GenericPCIDevice`: 20-bit PASIDs, ATS, PRI, MSI, MSI-X, a DMA engine in
///   BAR 0) or `ioat` (an Intel I/OAT DMA engine).
///
/// All `vtd` devices share one VT-d unit and all `smmuv3` devices one SMMUv3 (`SoftMachine`).
/// Device N is in IOMMU group N and has the PCI address `bdf(of: N)`.
struct Machine {
    /// One device: what an iommufd binds, and its PCI face (nil for `mock`).
    struct Entry {
        let device: any DeviceModel
        let pci: VFIOPCIDevice?
    }

    /// The devices, by cdev number.
    let entries: [Entry]
    /// The software IOMMUs behind the `vtd` and `smmuv3` devices.
    let soft: SoftMachine

    /// The devices the IOASID core binds, by cdev number.
    var devices: [any DeviceModel] { entries.map(\.device) }

    /// Why a specification was refused.
    struct SpecError: Error, CustomStringConvertible {
        let description: String
    }

    /// The device model of one `KIND`.
    static func model(_ kind: MachineSpec.DeviceKind) throws(SpecError) -> any PCIDeviceModel {
        switch kind {
        case .pci: return GenericPCIDevice()
        case .ioat: return IOATDevice()
        }
    }

    /// Builds the machine `spec` describes (an empty text: no devices). `isEngineDescriptor`
    /// says whether a descriptor is one of the engine's (not a program's eventfd).
    static func parse(_ spec: String, isEngineDescriptor: @escaping @Sendable (Int32) -> Bool = { _ in false }) throws(SpecError) -> Machine {
        let soft = SoftMachine()
        guard !spec.isEmpty else { return Machine(entries: [], soft: soft) }
        let parsed: MachineSpec
        do throws(MachineSpec.ParseError) { parsed = try MachineSpec.parse(spec.lowercased()) } catch {
            throw SpecError(description: error.description)
        }
        var entries: [Entry] = []
        for item in parsed.devices {
            let index = entries.count
            switch item.iommu {
            case .mock:
                entries.append(Entry(device: MockDevice(flags: Mock.devicePASID), pci: nil))
            case .vtd, .smmuv3:
                let model = try Self.model(item.device)
                let plugged: PluggedPCIDevice
                do throws(IOMMUError) {
                    plugged = item.iommu == .vtd ? try soft.plugVTd(model) : try soft.plugSMMUv3(model)
                } catch {
                    throw SpecError(description: "cannot add a \(item.iommu.rawValue) device: \(error)")
                }
                let pci = VFIOPCIDevice(slot: plugged.slot, device: plugged.device, index: index, isEngineDescriptor: isEngineDescriptor)
                entries.append(Entry(device: plugged.device, pci: pci))
            }
        }
        return Machine(entries: entries, soft: soft)
    }
}
