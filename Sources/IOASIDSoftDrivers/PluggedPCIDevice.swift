import IOASIDCore
import IOASIDSoftIOMMU

/// A device model plugged into the modelled machine: the core's device (what an iommufd binds,
/// behind the VT-d unit or the SMMUv3) and the slot that holds the model's configuration space,
/// MSI-X table and interrupt routing.
public struct PluggedPCIDevice: Sendable {
    /// The device the IOASID core binds and attaches; its function issues the model's DMA.
    public let device: any DMADevice
    /// The model's slot: configuration space, BAR routing, interrupts, reset.
    public let slot: PCIDeviceSlot
}

extension SoftMachine {
    /// Plugs `model` into a new PCI function behind the VT-d unit (capabilities from the model),
    /// at `requesterID` (default: the next free slot).
    public func plugVTd(_ model: any PCIDeviceModel, requesterID: RequesterID? = nil) throws(IOMMUError) -> PluggedPCIDevice {
        let device = try addVTdDevice(requesterID: requesterID, capabilities: PCIFunction.Capabilities(advertisedBy: model))
        return PluggedPCIDevice(device: device, slot: PCIDeviceSlot(model: model, function: device.function))
    }

    /// Plugs `model` into a new PCI function behind the SMMUv3 (capabilities from the model), at
    /// `requesterID` (default: the next free slot).
    public func plugSMMUv3(_ model: any PCIDeviceModel, requesterID: RequesterID? = nil) throws(IOMMUError) -> PluggedPCIDevice {
        let device = try addSMMUv3Device(requesterID: requesterID, capabilities: PCIFunction.Capabilities(advertisedBy: model))
        return PluggedPCIDevice(device: device, slot: PCIDeviceSlot(model: model, function: device.function))
    }
}
