// Where the modelled machine's devices appear: their PCI addresses, the numbers of their device
// nodes, and what each device kind looks like from outside (identity and capabilities). One
// place for the formulas the engine, the sysfs view and `ioasid devices` share.
import IOASIDSoftIOMMU

/// A PCI address, `domain:bus:device.function` (`0100:00:01.0`), as sysfs names devices.
public struct PCIAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The PCI domain (segment).
    public var domain: UInt16
    /// The bus number.
    public var bus: UInt8
    /// The device (slot) number, 0–31.
    public var device: UInt8
    /// The function number, 0–7.
    public var function: UInt8

    /// An address; `device` must be below 32 and `function` below 8.
    public init(domain: UInt16, bus: UInt8, device: UInt8, function: UInt8) {
        precondition(device < 32 && function < 8, "device is 5 bits and function 3 bits")
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// The address in `domain` of the function with requester ID `requesterID`.
    public init(domain: UInt16, requesterID: RequesterID) {
        self.init(domain: domain, bus: requesterID.bus, device: requesterID.device, function: requesterID.function)
    }

    /// The PCI domain of every modelled device. Real machines number their domains from 0 and
    /// rarely have more than a few, so the modelled devices never share a name with a real one.
    public static let modelledDomain: UInt16 = 0x0100

    /// The address of the modelled machine's device `index` (its place in the machine
    /// specification, from 0): domain 0x0100, bus 0, device `index + 1`, function 0 —
    /// `0100:00:01.0` for device 0. The only formula for it in Swift; the preload's C side has
    /// the same one (`modelled_bdf` in `Sources/CIOASIDPreload/preload_paths.c`).
    public static func modelled(index: Int) -> PCIAddress {
        precondition(index >= 0 && index < 31, "the modelled bus has slots 1 to 31")
        return PCIAddress(domain: modelledDomain, bus: 0, device: UInt8(index + 1), function: 0)
    }

    /// The requester ID a DMA from this function carries (the domain is the IOMMU's segment).
    public var requesterID: RequesterID { RequesterID(bus: bus, device: device, function: function) }

    /// `dddd:bb:dd.f` in lowercase hexadecimal.
    public var description: String {
        hex(UInt64(domain), 4) + ":" + hex(UInt64(bus), 2) + ":" + hex(UInt64(device), 2) + "." + String(function)
    }

    /// Parses `dddd:bb:dd.f`; nil if malformed.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2,
              let domain = UInt16(parts[0], radix: 16), let bus = UInt8(parts[1], radix: 16) else { return nil }
        let slot = parts[2].split(separator: ".", omittingEmptySubsequences: false)
        guard slot.count == 2, slot[0].count == 2, slot[1].count == 1,
              let device = UInt8(slot[0], radix: 16), let function = UInt8(slot[1]), device < 32, function < 8 else { return nil }
        self.init(domain: domain, bus: bus, device: device, function: function)
    }

    public static func < (a: PCIAddress, b: PCIAddress) -> Bool {
        (a.domain, a.bus, a.device, a.function) < (b.domain, b.bus, b.device, b.function)
    }
}

/// The device numbers (`major:minor`) of the nodes the modelled machine shows, as `stat` reports
/// them and sysfs `dev` files name them. The preload's C side uses the same numbers
/// (`Sources/CIOASIDPreload/preload_paths.c`); a test checks that they agree.
///
/// Linux gives `/dev/iommu` a dynamic misc minor and the two VFIO character regions dynamic
/// majors, so no value is "the" kernel's; these are plausible fixed choices.
public enum DeviceNumbers {
    /// The misc character major (`/dev/iommu`, `/dev/vfio/vfio`).
    public static let miscMajor: UInt32 = 10
    /// `/dev/iommu`: Linux 7.2 hands out dynamic misc minors from 256 upward; 257 is what a
    /// machine with one earlier dynamic misc device (e.g. `vga_arbiter`) gives iommufd.
    public static let iommuMinor: UInt32 = 257
    /// `/dev/vfio/vfio`: the fixed `VFIO_MINOR`.
    public static let vfioContainerMinor: UInt32 = 196
    /// `/dev/vfio/N`: the "vfio" region (dynamic majors are taken from 254 down to 234 first).
    public static let groupMajor: UInt32 = 242
    /// `/dev/vfio/devices/vfioN`: the "vfio-dev" region, allocated after the group region.
    public static let cdevMajor: UInt32 = 241

    /// `"MAJ:MIN"` as sysfs `dev` files print it.
    public static func text(major: UInt32, minor: UInt32) -> String { "\(major):\(minor)" }
}

/// What a device kind looks like from outside, before any model runs: its identity, BARs and
/// capabilities, and for a physical function with SR-IOV, its virtual functions' device ID.
/// The sysfs view, `ioasid devices` and the configuration space of the `pci` kind read this.
public struct MachineDeviceDescription: Sendable {
    /// The configuration header's IDs.
    public var identity: PCIIdentity
    /// The BARs.
    public var bars: [PCIBAR]
    /// The capabilities in list order.
    public var capabilities: [PCICapability]
    /// A short human name (`ioasid devices`).
    public var name: String

    /// The SR-IOV capability, if the kind has one.
    public var sriov: (totalVFs: Int, vfDeviceID: UInt16, firstVFOffset: UInt16, vfStride: UInt16)? {
        for capability in capabilities {
            if case .sriov(let total, let vfDevice, let offset, let stride) = capability { return (total, vfDevice, offset, stride) }
        }
        return nil
    }

    /// Whether the description has PCI Express (4 KiB configuration space) or not (256 bytes).
    public var isPCIExpress: Bool {
        capabilities.contains { if case .pciExpress = $0 { return true } else { return false } }
    }

    /// The names `ioasid devices` prints (`pcie`, `pm`, `msi`, `msix`, `pasid`, `ats`, `pri`, `sriov`).
    public var capabilityNames: [String] {
        capabilities.map { capability in
            switch capability {
            case .powerManagement: "pm"
            case .msi: "msi"
            case .msix: "msix"
            case .pciExpress: "pcie"
            case .pasid: "pasid"
            case .ats: "ats"
            case .pageRequest: "pri"
            case .sriov: "sriov"
            }
        }
    }

    /// The description of a device of `kind` behind `iommu` (a `mock` item is the test driver's
    /// PASID-capable device and has neither MSI-X nor SR-IOV). A kind not registered in
    /// ``DeviceKinds`` (a specification built by hand, not parsed) is described as a function
    /// with no BARs and no capabilities.
    public static func of(_ kind: MachineSpec.DeviceKind, iommu: MachineSpec.IOMMU) -> MachineDeviceDescription {
        if iommu == .mock { return mock }
        return DeviceKinds.description(of: kind) ?? MachineDeviceDescription(
            identity: PCIIdentity(vendorID: 0xffff, deviceID: 0xffff, classCode: 0xff_0000), bars: [], capabilities: [],
            name: "unregistered device kind '\(kind.rawValue)'")
    }

    /// The `pci` kind: a PCI Express endpoint with 20-bit PASIDs, ATS, PRI and SR-IOV (7 VFs,
    /// the functions 1–7 of its own slot). IDs are made up under the QEMU/Red Hat vendor ID and
    /// belong to no real device (no host driver claims them).
    public static let pci = MachineDeviceDescription(of: GenericPCIDevice(), name: "ioasid PCI function")

    /// A virtual function of the `pci` kind: its device ID, no SR-IOV of its own, no MSI.
    public static let pciVirtualFunction = MachineDeviceDescription(of: GenericPCIDevice(virtualFunction: true),
                                                                    name: "ioasid PCI virtual function")

    /// The `ioat` kind: an Intel I/OAT (Crystal Beach) DMA engine, 8086:2021, class 0x088000
    /// (system peripheral), as Linux's `ioatdma` and the VFIO selftests' driver know it. The
    /// device model itself owns the register details; this is only what discovery shows.
    public static let ioat = MachineDeviceDescription(of: IOATDevice(), name: "Intel I/OAT DMA engine")

    /// The test driver's mock device: PASID-capable, nothing else.
    public static let mock = MachineDeviceDescription(
        identity: PCIIdentity(vendorID: 0x1b36, deviceID: 0x00f0, revision: 1, classCode: 0xff_0000),
        bars: [],
        capabilities: [
            .pciExpress(deviceType: .endpoint, functionLevelReset: true),
            .pasid(width: 20, executePermission: false, privilegedMode: false),
        ],
        name: "ioasid mock device")
}

/// Where each device of a machine specification appears: address, cdev, group, description.
/// Virtual functions are not listed here: they exist only once a program writes `sriov_numvfs`.
public struct MachineLayout: Sendable {
    /// One device of the specification.
    public struct Device: Sendable {
        /// The device's place in the specification; also its cdev (`vfio<index>`) and group number.
        public var index: Int
        /// `0100:00:<index + 1>.0`.
        public var address: PCIAddress
        /// The IOMMU it sits behind.
        public var iommu: MachineSpec.IOMMU
        /// Its kind.
        public var kind: MachineSpec.DeviceKind
        /// Identity and capabilities.
        public var description: MachineDeviceDescription

        /// The IOMMU group number (one device per group: the same as `index`).
        public var group: Int { index }
        /// The cdev's name under `/dev/vfio/devices`.
        public var cdevName: String { "vfio\(index)" }
    }

    /// The devices in cdev order.
    public var devices: [Device]

    /// The layout of `spec`.
    public init(_ spec: MachineSpec) {
        devices = spec.devices.enumerated().map { index, item in
            Device(index: index, address: .modelled(index: index), iommu: item.iommu, kind: item.device,
                   description: .of(item.device, iommu: item.iommu))
        }
    }
}

private func hex(_ value: UInt64, _ digits: Int) -> String {
    let text = String(value, radix: 16)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
}

extension MachineDeviceDescription {
    /// What `model` says of itself: its identity, BARs and capabilities, so discovery shows
    /// exactly the device the machine plugs in.
    public init(of model: any PCIDeviceModel, name: String) {
        self.init(identity: model.identity, bars: model.bars, capabilities: model.capabilities, name: name)
    }
}
