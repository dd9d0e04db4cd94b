import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Testing

/// The registry of device kinds that machine specifications name.
@Suite struct DeviceKindsTests {
    /// A kind registered at run time parses, lays out and builds like a built-in one.
    @Test func aRegisteredKindIsNamedByMachineSpecifications() throws {
        #expect(throws: MachineSpec.ParseError.self) { try MachineSpec.parse("vtd:test-scratch") }
        try DeviceKinds.register(name: "test-scratch", displayName: "scratchpad") { _ in IOATDevice() }
        let spec = try MachineSpec.parse("vtd:test-scratch:2,smmuv3")
        #expect(spec.items.first?.device == MachineSpec.DeviceKind(rawValue: "test-scratch"))
        #expect(spec.description == "vtd:test-scratch:2,smmuv3")
        let layout = MachineLayout(spec)
        #expect(layout.devices.map(\.description.name) == ["scratchpad", "scratchpad", "ioasid PCI function"])
        #expect(layout.devices[0].description.identity.deviceID == 0x2021)
        #expect(DeviceKinds.makeModel(spec.items[0].device) is IOATDevice)
        #expect(Array(DeviceKinds.names.prefix(2)) == ["pci", "ioat"])
    }

    @Test func theBuiltInKindsAreRegisteredTheSameWay() throws {
        #expect(DeviceKinds.makeModel(.pci) is GenericPCIDevice)
        #expect(DeviceKinds.makeModel(.ioat) is IOATDevice)
        #expect(DeviceKinds.description(of: .ioat)?.identity == IOATDevice().identity)
        #expect(MachineLayout(try MachineSpec.parse("vtd:ioat")).listing.contains("kind=ioat iommu=vtd"))
    }

    @Test(arguments: ["pci", "ioat", "vtd", "mock", "smmuv3", "Csum", "1x", "", "a b", String(repeating: "x", count: 33)])
    func badOrTakenNamesAreRefused(_ name: String) {
        #expect(throws: DeviceKinds.RegistrationError.self) {
            try DeviceKinds.register(name: name, displayName: "x") { _ in IOATDevice() }
        }
    }
}
