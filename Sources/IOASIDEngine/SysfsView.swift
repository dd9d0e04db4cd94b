import CIOASIDSys
import Glibc
import IOASIDSoftDrivers
import Synchronization

/// The sysfs and `/dev/vfio` view of the modelled machine: a folder on disk (a *testbed*, as
/// umockdev calls it) that mirrors the parts of `/sys` and `/dev` a VFIO program reads, into
/// which the preload redirects those paths.
///
/// Why a folder and not answers from the engine: `opendir`/`readdir`, `readlink`, `realpath`,
/// `stat`, `fopen` and the program's own relative `openat` on a directory descriptor then all
/// work through the real libc and kernel, with nothing to emulate; the engine answers only the
/// two attributes that are alive — `config` (a snapshot of the current configuration space at
/// open) and `sriov_numvfs` (a write creates or removes virtual functions) — and rewrites the
/// folder when VFs come and go.
///
/// Layout under the root (symbolic links are relative, as the kernel's are, so they resolve
/// inside the folder):
/// ```
/// dev/vfio/vfio                              character device 10:196 (when mknod is permitted;
/// dev/vfio/<group>                           else an empty file: the preload's stat says
/// dev/vfio/devices/vfio<n>                   "character device" either way)
/// dev/char/<major>:<minor> -> ../vfio/...     udev's links (QEMU opens the cdev through them)
/// sys/devices/pci0100:00/<bdf>/              vendor device subsystem_vendor subsystem_device class
///                                            revision config numa_node enable
///                                            iommu_group -> ../../../kernel/iommu_groups/<group>
///                                            driver -> ../../../bus/pci/drivers/vfio-pci
///                                            subsystem -> ../../../bus/pci
///                                            vfio-dev/vfio<n>/dev ("241:<n>"), uevent, device link
///                                            sriov_totalvfs sriov_numvfs sriov_offset sriov_stride
///                                            sriov_vf_device virtfn<k> -> ../<vf bdf> (a PF)
///                                            physfn -> ../<pf bdf> (a VF)
/// sys/bus/pci/devices/<bdf> -> ../../../devices/pci0100:00/<bdf>
/// sys/bus/pci/drivers/vfio-pci/<bdf> -> ../../../../devices/pci0100:00/<bdf>
/// sys/kernel/iommu_groups/<group>/devices/<bdf> -> ../../../../devices/pci0100:00/<bdf>
/// ```
/// The folder belongs to one process (its engine): `$IOASID_TESTBED_ROOT` (or `$TMPDIR`, or
/// `/tmp`)/`ioasid-machine-<pid>-<n>`, removed when that process exits normally.
final class SysfsView: Sendable {
    /// The folder's absolute path.
    let root: String
    private let rootFD: Int32
    private let devices: MachineDevices
    /// Serializes rewrites of the folder (sriov_numvfs writes from several threads).
    private let writer = Mutex(())

    /// Creates the folder and writes every device of `devices`; nil if it cannot be created.
    init?(devices: MachineDevices) {
        let base = EngineEnvironment.variable("IOASID_TESTBED_ROOT").flatMap { $0.isEmpty ? nil : $0 }
            ?? EngineEnvironment.variable("TMPDIR").flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        let pid = ioasid_sys_getpid()
        var created: String?
        for attempt in 0..<100 {
            let candidate = base + "/ioasid-machine-\(pid)-\(attempt)"
            let result = ioasid_sys_mkdirat(IOASID_SYS_AT_FDCWD, candidate, 0o755)
            if result == 0 { created = candidate; break }
            if result != -Int(EEXIST) { return nil }
        }
        guard let root = created else { return nil }
        let fd = ioasid_sys_openat(IOASID_SYS_AT_FDCWD, root, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        guard fd >= 0 else { return nil }
        self.root = root
        self.rootFD = Int32(fd)
        self.devices = devices
        SysfsView.removeAtExit(root, creator: pid)

        for folder in ["dev", "dev/vfio", "dev/vfio/devices", "dev/char", "sys", "sys/devices", "sys/devices/pci0100:00",
                       "sys/bus", "sys/bus/pci", "sys/bus/pci/devices", "sys/bus/pci/drivers",
                       "sys/bus/pci/drivers/vfio-pci", "sys/kernel", "sys/kernel/iommu_groups"] {
            makeFolder(folder)
        }
        makeNode("dev/vfio/vfio", major: DeviceNumbers.miscMajor, minor: DeviceNumbers.vfioContainerMinor, mode: 0o666)
        makeLink("dev/char/\(DeviceNumbers.miscMajor):\(DeviceNumbers.vfioContainerMinor)", to: "../vfio/vfio")
        makeNode("dev/iommu", major: DeviceNumbers.miscMajor, minor: DeviceNumbers.iommuMinor, mode: 0o660)
        makeLink("dev/char/\(DeviceNumbers.miscMajor):\(DeviceNumbers.iommuMinor)", to: "../iommu")
        writer.withLock { _ in
            for device in devices.all { add(device) }
        }
    }

    // MARK: Changes

    /// Rewrites the folder after `sriov_numvfs` of `pf` changed.
    func apply(_ change: MachineDevices.SRIOVChange, pf: MachineDevice) {
        writer.withLock { _ in
            for vf in change.removed { remove(vf, pf: pf) }
            for vf in change.added { add(vf) }
            writeFile(deviceFolder(pf) + "/sriov_numvfs", "\(devices.virtualFunctions(of: pf.index).count)\n")
        }
    }

    // MARK: Writing one device

    private func deviceFolder(_ device: MachineDevice) -> String { "sys/devices/pci0100:00/\(device.address)" }

    private func add(_ device: MachineDevice) {
        let folder = deviceFolder(device)
        let bdf = device.address.description
        let identity = device.description.identity
        let isVF = device.physicalFunction != nil
        makeFolder(folder)
        writeFile(folder + "/vendor", "0x" + hex(UInt64(identity.vendorID), 4) + "\n")
        writeFile(folder + "/device", "0x" + hex(UInt64(identity.deviceID), 4) + "\n")
        writeFile(folder + "/subsystem_vendor", "0x" + hex(UInt64(identity.subsystemVendorID), 4) + "\n")
        writeFile(folder + "/subsystem_device", "0x" + hex(UInt64(identity.subsystemID), 4) + "\n")
        writeFile(folder + "/class", "0x" + hex(UInt64(identity.classCode), 6) + "\n")
        writeFile(folder + "/revision", "0x" + hex(UInt64(identity.revision), 2) + "\n")
        writeFile(folder + "/numa_node", "-1\n")
        writeFile(folder + "/enable", "1\n")
        writeFile(folder + "/config", devices.configSpace(of: device))
        makeLink(folder + "/iommu_group", to: "../../../kernel/iommu_groups/\(device.group)")
        makeLink(folder + "/driver", to: "../../../bus/pci/drivers/vfio-pci")
        makeLink(folder + "/subsystem", to: "../../../bus/pci")
        makeFolder(folder + "/vfio-dev")
        makeFolder(folder + "/vfio-dev/vfio\(device.index)")
        writeFile(folder + "/vfio-dev/vfio\(device.index)/dev",
                  DeviceNumbers.text(major: DeviceNumbers.cdevMajor, minor: UInt32(device.index)) + "\n")
        writeFile(folder + "/vfio-dev/vfio\(device.index)/uevent",
                  "MAJOR=\(DeviceNumbers.cdevMajor)\nMINOR=\(device.index)\nDEVNAME=vfio/devices/vfio\(device.index)\n")
        makeLink(folder + "/vfio-dev/vfio\(device.index)/device", to: "../../../\(bdf)")
        if !isVF, let sriov = device.description.sriov {
            writeFile(folder + "/sriov_totalvfs", "\(sriov.totalVFs)\n")
            writeFile(folder + "/sriov_numvfs", "0\n")
            writeFile(folder + "/sriov_offset", "\(sriov.firstVFOffset)\n")
            writeFile(folder + "/sriov_stride", "\(sriov.vfStride)\n")
            writeFile(folder + "/sriov_vf_device", hex(UInt64(sriov.vfDeviceID), 4) + "\n")
            writeFile(folder + "/sriov_drivers_autoprobe", "1\n")
        }
        if let parent = device.physicalFunction, let pf = devices.device(cdev: parent.index) {
            makeLink(folder + "/physfn", to: "../\(pf.address)")
            makeLink(deviceFolder(pf) + "/virtfn\(parent.vf)", to: "../\(bdf)")
        }
        makeLink("sys/bus/pci/devices/\(bdf)", to: "../../../devices/pci0100:00/\(bdf)")
        makeLink("sys/bus/pci/drivers/vfio-pci/\(bdf)", to: "../../../../devices/pci0100:00/\(bdf)")
        makeFolder("sys/kernel/iommu_groups/\(device.group)")
        makeFolder("sys/kernel/iommu_groups/\(device.group)/devices")
        writeFile("sys/kernel/iommu_groups/\(device.group)/type", "DMA\n")
        makeLink("sys/kernel/iommu_groups/\(device.group)/devices/\(bdf)", to: "../../../../devices/pci0100:00/\(bdf)")
        makeNode("dev/vfio/\(device.group)", major: DeviceNumbers.groupMajor, minor: UInt32(device.group), mode: 0o600)
        makeNode("dev/vfio/devices/vfio\(device.index)", major: DeviceNumbers.cdevMajor, minor: UInt32(device.index), mode: 0o600)
        makeLink("dev/char/\(DeviceNumbers.groupMajor):\(device.group)", to: "../vfio/\(device.group)")
        makeLink("dev/char/\(DeviceNumbers.cdevMajor):\(device.index)", to: "../vfio/devices/vfio\(device.index)")
    }

    private func remove(_ device: MachineDevice, pf: MachineDevice) {
        let bdf = device.address.description
        if let parent = device.physicalFunction { _ = ioasid_sys_unlinkat(rootFD, deviceFolder(pf) + "/virtfn\(parent.vf)", 0) }
        for link in ["sys/bus/pci/devices/\(bdf)", "sys/bus/pci/drivers/vfio-pci/\(bdf)",
                     "dev/vfio/\(device.group)", "dev/vfio/devices/vfio\(device.index)",
                     "dev/char/\(DeviceNumbers.groupMajor):\(device.group)", "dev/char/\(DeviceNumbers.cdevMajor):\(device.index)"] {
            _ = ioasid_sys_unlinkat(rootFD, link, 0)
        }
        _ = ioasid_sys_remove_tree(root + "/" + deviceFolder(device))
        _ = ioasid_sys_remove_tree(root + "/sys/kernel/iommu_groups/\(device.group)")
    }

    // MARK: File-system helpers (raw system calls: the engine never re-enters the preload)

    private func makeFolder(_ path: String) {
        _ = ioasid_sys_mkdirat(rootFD, path, 0o755)
    }

    private func makeLink(_ path: String, to target: String) {
        _ = ioasid_sys_unlinkat(rootFD, path, 0)
        _ = ioasid_sys_symlinkat(target, rootFD, path)
    }

    /// A character device node when the kernel lets us make one (then `readdir` says `DT_CHR`),
    /// else an empty regular file; the preload reports the numbers either way.
    private func makeNode(_ path: String, major: UInt32, minor: UInt32, mode: UInt32) {
        _ = ioasid_sys_unlinkat(rootFD, path, 0)
        if ioasid_sys_mknodat(rootFD, path, UInt32(IOASID_SYS_S_IFCHR) | mode, major, minor) == 0 { return }
        _ = ioasid_sys_mknodat(rootFD, path, UInt32(IOASID_SYS_S_IFREG) | mode, 0, 0)
    }

    private func writeFile(_ path: String, _ text: String) {
        writeFile(path, Array(text.utf8))
    }

    /// Writes a file whole: to a temporary name, then renamed over the old one, so a reader
    /// never sees half of it.
    private func writeFile(_ path: String, _ bytes: [UInt8]) {
        let temporary = path + ".new"
        let fd = ioasid_sys_openat(rootFD, temporary, IOASID_SYS_O_WRONLY | IOASID_SYS_O_CREAT | IOASID_SYS_O_TRUNC | IOASID_SYS_O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        _ = bytes.withUnsafeBytes { ioasid_sys_write_all(Int32(fd), $0.baseAddress, $0.count) }
        _ = ioasid_sys_close(Int32(fd))
        _ = ioasid_sys_renameat(rootFD, temporary, rootFD, path)
    }

    // MARK: Removal at exit

    private static let removal = Mutex<(path: String, creator: Int)?>(nil)

    private static func removeAtExit(_ path: String, creator: Int) {
        let first = removal.withLock { slot -> Bool in
            let first = slot == nil
            slot = (path, creator)
            return first
        }
        if first {
            atexit {
                // Only the process that made the folder removes it (a forked child inherits this).
                guard let (path, creator) = SysfsView.removal.withLock({ $0 }), creator == ioasid_sys_getpid() else { return }
                _ = ioasid_sys_remove_tree(path)
            }
        }
    }
}

func hex(_ value: UInt64, _ digits: Int) -> String {
    let text = String(value, radix: 16)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
}
