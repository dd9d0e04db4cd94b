import ArgumentParser
import IOASIDSoftDrivers

/// `ioasid devices --machine SPEC`: what a machine specification contains, one line per device,
/// in the manner of `lspci -nn`.
struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "List the devices of a modelled machine, like lspci -nn.",
        discussion: """
            Prints one line per device of SPEC (the same text as `ioasid run --machine`), in \
            cdev order: its PCI address (modelled devices live in PCI domain 0100, so they \
            never share a name with a real device), class, name, [vendor:device] and revision \
            as lspci -nn prints them, then the device kind, the IOMMU it sits behind, its IOMMU \
            group (/dev/vfio/N), its VFIO cdev (/dev/vfio/devices/vfioN) and its capabilities \
            (pm, msi, msix, pcie, pasid, ats, pri, sriov). Virtual functions appear only once a \
            program writes sriov_numvfs, so they are not listed. See docs/machine.md.

            Example:
              ioasid devices --machine vtd:2,smmuv3:ioat
            """)

    @Option(name: .customLong("machine"), help: ArgumentHelp("The machine: comma-separated IOMMU[:DEVICE][:COUNT].", valueName: "spec"))
    var machine: String

    func validate() throws {
        do throws(MachineSpec.ParseError) { _ = try MachineSpec.parse(machine) } catch {
            throw ValidationError("--machine: \(error.description)")
        }
    }

    func run() throws {
        let spec = try MachineSpec.parse(machine)
        for device in MachineLayout(spec).devices { print(Self.line(device)) }
    }

    /// One line: `0100:00:01.0 Unassigned class [ff00]: ioasid PCI function [1b36:00f0] (rev 01) kind=pci iommu=vtd group=0 cdev=vfio0 caps=...`.
    static func line(_ device: MachineLayout.Device) -> String {
        let identity = device.description.identity
        let classCode = UInt16(truncatingIfNeeded: identity.classCode >> 8)
        var text = "\(device.address) \(className(classCode)) [\(hex(classCode, 4))]: \(device.description.name)"
        text += " [\(hex(identity.vendorID, 4)):\(hex(identity.deviceID, 4))]"
        if identity.revision != 0 { text += " (rev \(hex(UInt16(identity.revision), 2)))" }
        text += " kind=\(device.iommu == .mock ? "mock" : device.kind.rawValue) iommu=\(device.iommu.rawValue)"
        text += " group=\(device.group) cdev=\(device.cdevName)"
        text += " caps=\(device.description.capabilityNames.joined(separator: ","))"
        if let sriov = device.description.sriov { text += " totalvfs=\(sriov.totalVFs)" }
        return text
    }

    /// The names lspci prints for the class codes modelled devices use.
    static func className(_ classCode: UInt16) -> String {
        switch classCode {
        case 0x0880: "System peripheral"
        case 0x0200: "Ethernet controller"
        case 0x0108: "Non-Volatile memory controller"
        case 0xff00: "Unassigned class"
        default: "Class"
        }
    }

    private static func hex(_ value: UInt16, _ digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}
