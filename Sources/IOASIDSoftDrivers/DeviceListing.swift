// `ioasid devices`: a machine specification's devices, one line each, in the manner of
// `lspci -nn`. Here rather than in the tool, so that an engine with its own device kinds prints
// the same lines for them (the tool asks that engine; docs/machine.md).

extension MachineLayout.Device {
    /// One line: `0100:00:01.0 Unassigned class [ff00]: ioasid PCI function [1b36:00f0] (rev 01)
    /// kind=pci iommu=vtd group=0 cdev=vfio0 caps=...`.
    public var listingLine: String {
        let identity = description.identity
        let classCode = UInt16(truncatingIfNeeded: identity.classCode >> 8)
        var text = "\(address) \(Self.className(classCode)) [\(Self.hex(classCode, 4))]: \(description.name)"
        text += " [\(Self.hex(identity.vendorID, 4)):\(Self.hex(identity.deviceID, 4))]"
        if identity.revision != 0 { text += " (rev \(Self.hex(UInt16(identity.revision), 2)))" }
        text += " kind=\(iommu == .mock ? "mock" : kind.rawValue) iommu=\(iommu.rawValue)"
        text += " group=\(group) cdev=\(cdevName)"
        text += " caps=\(description.capabilityNames.joined(separator: ","))"
        if let sriov = description.sriov { text += " totalvfs=\(sriov.totalVFs)" }
        return text
    }

    /// The names lspci prints for common class codes (base class and subclass).
    static func className(_ classCode: UInt16) -> String {
        switch classCode {
        case 0x0880: "System peripheral"
        case 0x0200: "Ethernet controller"
        case 0x0108: "Non-Volatile memory controller"
        case 0x1000: "Network and computing encryption device"
        case 0x1200: "Processing accelerators"
        case 0xff00: "Unassigned class"
        default: "Class"
        }
    }

    private static func hex(_ value: UInt16, _ digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}

extension MachineLayout {
    /// Every device's ``MachineLayout/Device/listingLine``, each ending in a newline.
    public var listing: String { devices.map { $0.listingLine + "\n" }.joined() }
}
