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

            With --engine PATH the specification is read by that engine library (one built \
            with added device kinds, as `ioasid run --engine PATH` would load it), so its \
            kinds are known; see docs/machine.md, "Adding a device kind".

            Examples:
              ioasid devices --machine vtd:2,smmuv3:ioat
              ioasid devices --engine .build/debug/libCustomDeviceEngine.so --machine vtd:csum
            """)

    @Option(name: .customLong("machine"), help: ArgumentHelp("The machine: comma-separated IOMMU[:DEVICE][:COUNT].", valueName: "spec"))
    var machine: String

    @Option(name: .customLong("engine"), help: ArgumentHelp("The engine library whose device kinds SPEC may name (default: the built-in one).", valueName: "path"))
    var engine: String?

    func validate() throws {
        guard engine == nil else { return }  // the engine checks it (run)
        do throws(MachineSpec.ParseError) { _ = try MachineSpec.parse(machine) } catch {
            throw ValidationError("--machine: \(error.description)")
        }
    }

    func run() throws {
        guard let engine else {
            print(MachineLayout(try MachineSpec.parse(machine)).listing, terminator: "")
            return
        }
        let library: EngineLibrary
        do { library = try EngineLibrary(path: engine) } catch { IOASIDCommand.fail(error.description) }
        switch library.describe(machine) {
        case .listing(let text): print(text, terminator: "")
        case .refused(let reason): IOASIDCommand.usageError("--machine: \(reason)", in: "ioasid")
        }
    }
}
