// How the checksum engine gets into an ioasid engine: the engine library this module is linked
// into (the `CustomDeviceEngine` product) calls this C symbol once, before it builds the
// machine, and `--machine vtd:csum` then names the device.
import IOASIDSoftDrivers

/// Registers the `csum` device kind (`ChecksumDevice`).
@_cdecl("ioasid_engine_register_device_kinds")
public func registerDeviceKinds() {
    try? DeviceKinds.register(name: "csum", displayName: "ioasid checksum engine") { _ in ChecksumDevice() }
}
