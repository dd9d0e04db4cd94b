import CIOASIDSys
import IOASIDSoftDrivers

/// Device authors' code built into this engine library: before the engine builds its machine it
/// calls `ioasid_engine_register_device_kinds` if that C symbol is defined *in the engine's own
/// library* (not anywhere else in the process), once per process.
///
/// An engine with added device kinds is one dynamic library that holds this module and the
/// author's: a SwiftPM product such as
/// `.library(name: "MyEngine", type: .dynamic, targets: ["IOASIDEngine", "MyDevice"])` in this
/// package, or one that depends on the `IOASIDEngineKit` product from another package. Its one
/// copy of the model types (`PCIDeviceModel`, `DeviceKinds`) is the engine's, which is what makes
/// the author's types usable by the machine: a second library with its own copy of
/// `IOASIDSoftIOMMU` would have a second, separate registry and distinct types. The author's
/// module defines
///
/// ```swift
/// @_cdecl("ioasid_engine_register_device_kinds")
/// public func registerDeviceKinds() {
///     try? DeviceKinds.register(name: "csum", displayName: "checksum engine") { _ in ChecksumDevice() }
/// }
/// ```
///
/// and `ioasid run --engine PATH` (or `IOASID_ENGINE`) makes the preload load that library
/// instead of the built-in `libIOASIDEngine.so` (docs/machine.md, "Adding a device kind").
enum EngineExtensions {
    /// The symbol looked up.
    static let registrationSymbol = "ioasid_engine_register_device_kinds"

    /// Calls the registration entry point of this library, the first time only.
    static func load() { _ = loaded }

    /// Whether this library has a registration entry point (it was called, once).
    static let loaded: Bool = {
        guard let register = ownSymbol(registrationSymbol) else { return false }
        typealias Registration = @convention(c) () -> Void
        unsafeBitCast(register, to: Registration.self)()
        return true
    }()

    /// `name` as defined in the library this code is in, or nil (`ioasid_sys_own_library_symbol`:
    /// the library is found by the address of its own code, and only its own definitions count,
    /// so a registration symbol in the program or another library is never called).
    private static func ownSymbol(_ name: String) -> UnsafeMutableRawPointer? {
        ioasid_sys_own_library_symbol(name)
    }
}
