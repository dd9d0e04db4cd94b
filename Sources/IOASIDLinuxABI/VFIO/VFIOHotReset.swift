import IOASIDCore

// Bus and slot resets (`VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`, `VFIO_DEVICE_PCI_HOT_RESET`), as
// vfio-pci answers them for a function that can be reset by neither: the modelled devices sit on
// the root bus of their own PCI domain, with no bridge above them whose secondary bus could be
// reset and no hotplug slot, so after the argument checks both requests are `ENODEV` (the
// kernel's pci_probe_reset_slot and pci_probe_reset_bus both fail). A VMM then falls back to the
// function's own reset (`VFIO_DEVICE_RESET`: FLR), which every modelled device has.
//
// Layouts (include/uapi/linux/vfio.h):
//   vfio_pci_hot_reset_info { u32 argsz, flags, count; vfio_pci_dependent_device devices[] }  minsz 12
//   vfio_pci_hot_reset      { u32 argsz, flags, count; s32 group_fds[] }                       minsz 12

extension VFIODeviceRequests {
    static func hotResetInfo(_ user: UInt64) throws(IOMMUError) -> Int {
        _ = try argsz(user, minimum: 12)
        throw .noDevice("no slot or bus reset: the function sits on a root bus")
    }

    /// `cdev`: the descriptor was opened as the cdev, where the array of group descriptors must
    /// be empty (a group's device descriptor needs at least one).
    static func hotReset(_ user: UInt64, cdev: Bool) throws(IOMMUError) -> Int {
        _ = try argsz(user, minimum: 12)
        guard try load32(user, 4) == 0 else { throw .invalid("flags must be zero") }
        let count = try load32(user, 8)
        guard (count != 0) != cdev else {
            throw .invalid(cdev ? "a cdev's hot reset names no groups" : "a group's device names its groups")
        }
        throw .noDevice("no slot or bus reset: the function sits on a root bus")
    }
}
