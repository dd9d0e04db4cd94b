import IOASIDCore
import IOASIDTestDriver

/// The modelled machine a program sees under `ioasid run --machine SPEC` (environment
/// `IOASID_MACHINE`): the devices behind `/dev/vfio/devices/vfio0`, `vfio1`, … in order.
///
/// `SPEC` is a comma-separated list of `KIND[:COUNT]` (COUNT defaults to 1):
/// - `mock` — a PASID-capable device of the test driver's mock IOMMU (the kernel's
///   `IOMMUFD_TEST` semantics: 2 KiB pages, mock hardware info).
///
/// Device numbers follow the order of the list.
struct Machine {
    /// The devices, by cdev number.
    let devices: [any DeviceModel]

    /// Why a specification was refused.
    struct SpecError: Error, CustomStringConvertible {
        let description: String
    }

    /// Builds the machine `spec` describes.
    static func parse(_ spec: String) throws(SpecError) -> Machine {
        var devices: [any DeviceModel] = []
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
                default: throw SpecError(description: "unknown device kind '\(kind)' (known: mock)")
                }
            }
        }
        return Machine(devices: devices)
    }
}
