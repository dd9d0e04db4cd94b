// Section 11 of ioasid-benchmark: the VFIO face of a modelled PCI device.
//
//   - `pread` of 4 bytes of config space on a device descriptor, in-process (the engine's
//     `VFIODeviceFile.pread`, which is what the preload calls for an owned descriptor): a
//     virtual register (the vendor ID, answered from the open's copy) and a register read
//     through to the function (COMMAND), against one real system call in the same runs
//     (getppid, and pread of 4 bytes from a regular file);
//   - `pread` of 4 bytes of BAR 0 (a register of the device model).

import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU

func vfioSection() {
    print("== 11. VFIO device: pread of config space and BAR 0 vs one system call ==")
    let host = BenchHost()
    let iommu = IOMMUFile(host: host, configuration: EngineConfiguration(testDriver: false))
    let iommufd = host.install(iommu)
    let machine = SoftMachine(vtdDelivery: .manual)
    let plugged = try! machine.plugVTd(GenericPCIDevice())
    let pci = VFIOPCIDevice(slot: plugged.slot, device: plugged.device, index: 0)
    let cdev = VFIODeviceFile(host: host, model: plugged.device, pci: pci, name: "vfio0")
    var bind = vfio_device_bind_iommufd()
    bind.argsz = UInt32(MemoryLayout<vfio_device_bind_iommufd>.size)
    bind.iommufd = iommufd
    guard withUnsafeMutableBytes(of: &bind, { cdev.ioctl(request: IOCTL.VFIO_DEVICE_BIND_IOMMUFD, argument: $0.baseAddress) }) == 0 else {
        fail("bind failed")
    }
    defer { cdev.release(); iommu.release() }

    let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    defer { word.deallocate() }
    let user = UInt64(UInt(bitPattern: word))
    let config: Int64 = 7 << 40

    var path = Array("/tmp/ioasid-bench-pread-XXXXXX".utf8CString)
    let file = mkstemp(&path)
    guard file >= 0, Glibc.write(file, "abcdefgh", 8) == 8 else { fail("cannot create a scratch file") }
    defer { Glibc.close(file); unlink(path) }

    let reads: [(String, () -> Void)] = [
        ("config vendor ID (virtual)", { _ = cdev.pread(into: user, count: 4, offset: config) }),
        ("config COMMAND (through to the function)", { _ = cdev.pread(into: user, count: 4, offset: config + 4) }),
        ("BAR 0 register (device model)", { _ = cdev.pread(into: user, count: 4, offset: 0) }),
    ]
    let baselines: [(String, () -> Void)] = [
        ("getppid()", { _ = getppid() }),
        ("pread 4 B of a regular file", { _ = Glibc.pread(file, word, 4, 0) }),
    ]
    var rows: [[String]] = []
    for (name, op) in reads {
        for (baseName, baseline) in baselines {
            let n = calibrate(op)
            let r = paired(iterations: n, op: op, baseline: baseline)
            rows.append([name, fmt(r.op.median), "\(fmt(r.op.min))..\(fmt(r.op.max))", baseName, fmt(r.base.median), fmt(r.ratio.median, 2)])
        }
    }
    printTable(["pread of 4 bytes", "ns", "spread", "baseline", "ns", "ratio"], rows)
    print()
}
