// The vfio-pci face of a modelled device: config space virtualization, regions, interrupts,
// reset, features, groups — with vfio-pci's errnos.
import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Testing

/// A `pci` device behind the VT-d unit, its cdev bound to a fresh iommufd.
final class VFIOTestbed: @unchecked Sendable {
    let iommu: IOMMUFile
    let host: MemoryHost
    let iommufd: Int32
    let machine: SoftMachine
    let plugged: PluggedPCIDevice
    let pci: VFIOPCIDevice
    let cdev: VFIODeviceFile

    init(bind: Bool = true, model: any PCIDeviceModel = GenericPCIDevice()) throws {
        (iommu, host) = makeFile()
        iommufd = host.install(iommu)
        machine = SoftMachine(vtdDelivery: .manual)
        plugged = try machine.plugVTd(model)
        let host = self.host
        pci = VFIOPCIDevice(slot: plugged.slot, device: plugged.device, index: 0, isEngineDescriptor: { host.file(for: $0) != nil })
        cdev = VFIODeviceFile(host: host, model: plugged.device, pci: pci, name: "vfio0")
        if bind {
            var b = vfio_device_bind_iommufd()
            b.iommufd = iommufd
            #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_BIND_IOMMUFD, &b) == 0)
        }
    }

    deinit {
        cdev.release()
        iommu.release()
    }

    static let configBase: Int64 = 7 << 40

    func config(_ offset: Int, _ size: Int = 4) -> UInt32 {
        var v: UInt32 = 0
        let n = withUnsafeMutablePointer(to: &v) { cdev.pread(into: UInt64(UInt(bitPattern: $0)), count: size, offset: Self.configBase + Int64(offset)) }
        #expect(n == size)
        return v
    }

    @discardableResult
    func setConfig(_ offset: Int, _ size: Int, _ value: UInt32) -> Int {
        var v = value
        return withUnsafeMutablePointer(to: &v) { cdev.pwrite(from: UInt64(UInt(bitPattern: $0)), count: size, offset: Self.configBase + Int64(offset)) }
    }

    func bar0(_ offset: UInt64, _ size: Int = 4) -> (Int, UInt64) {
        var v: UInt64 = 0
        let n = withUnsafeMutablePointer(to: &v) { cdev.pread(into: UInt64(UInt(bitPattern: $0)), count: size, offset: Int64(offset)) }
        return (n, v)
    }

    @discardableResult
    func setBAR0(_ offset: UInt64, _ size: Int, _ value: UInt64) -> Int {
        var v = value
        return withUnsafeMutablePointer(to: &v) { cdev.pwrite(from: UInt64(UInt(bitPattern: $0)), count: size, offset: Int64(offset)) }
    }

    /// Issues a raw VFIO request whose argument is `words` (argsz first).
    func request(_ request: UInt, _ words: inout [UInt32], on file: (any LinuxFile)? = nil) -> Int {
        words.withUnsafeMutableBytes { (file ?? cdev).ioctl(request: request, argument: $0.baseAddress) }
    }

    /// A `VFIO_DEVICE_SET_IRQS` with `data` after the header.
    func setIRQs(flags: UInt32, index: UInt32, start: UInt32, count: UInt32, data: [UInt8] = []) -> Int {
        var bytes = [UInt8](repeating: 0, count: 20 + data.count)
        bytes.withUnsafeMutableBytes { b in
            for (i, w) in [UInt32(20 + data.count), flags, index, start, count].enumerated() { b.storeBytes(of: w, toByteOffset: 4 * i, as: UInt32.self) }
        }
        for (i, d) in data.enumerated() { bytes[20 + i] = d }
        return bytes.withUnsafeMutableBytes { cdev.ioctl(request: IOCTL.VFIO_DEVICE_SET_IRQS, argument: $0.baseAddress) }
    }
}

func fdBytes(_ fds: Int32...) -> [UInt8] {
    fds.flatMap { fd in withUnsafeBytes(of: fd) { Array($0) } }
}

/// A nonblocking eventfd of the test process, and how many signals it has counted.
final class TestEventfd {
    let fd = Int32(ioasid_sys_eventfd(0, IOASID_SYS_EFD_NONBLOCK))
    deinit { Glibc.close(fd) }
    /// The counter (reset to 0), or 0 when nothing was signalled.
    func take() -> UInt64 {
        var v: UInt64 = 0
        return Glibc.read(fd, &v, 8) == 8 ? v : 0
    }
}

let irqTrigger: UInt32 = 1 << 5, dataNone: UInt32 = 1, dataBool: UInt32 = 2, dataEventfd: UInt32 = 4, actionMask: UInt32 = 1 << 3, actionUnmask: UInt32 = 1 << 4

@Suite("vfio-pci config space")
struct VFIOConfigSpaceTests {
    @Test func headerAndCapabilityChainsAsVFIOPresentsThem() throws {
        let t = try VFIOTestbed()
        #expect(t.config(0) == 0x00f0_1b36)
        #expect(t.config(0x08) >> 8 == 0xff_0000)
        let command = UInt16(t.config(0x04, 2))
        #expect(command & PCIRegister.commandMemory != 0, "the open enables memory decoding")
        #expect(command & PCIRegister.commandBusMaster == 0, "and clears bus mastering")
        #expect(UInt16(t.config(0x06, 2)) & PCIRegister.statusCapabilityList != 0)
        // The standard list: PM, MSI, MSI-X, PCI Express.
        var ids: [UInt8] = []
        var at = Int(t.config(0x34, 1))
        while at != 0, ids.count < 16 {
            ids.append(UInt8(t.config(at, 1)))
            at = Int(t.config(at + 1, 1))
        }
        #expect(ids == [0x01, 0x05, 0x11, 0x10])
        // Extended: PASID is hidden (vfio-pci has no length for it); being first, it stays as an
        // empty placeholder that links on to ATS and PRI.
        let first = t.config(0x100)
        #expect(first & 0xf_ffff == 0, "placeholder: ID 0, version 0")
        var ext: [UInt32] = []
        var e = Int(first >> 20)
        while e != 0, ext.count < 8 {
            let h = t.config(e)
            ext.append(h & 0xffff)
            e = Int(h >> 20)
        }
        #expect(ext == [0x0f, 0x13, 0x10], "ATS, PRI, SR-IOV")
        #expect(t.plugged.slot.configRead(0x100, size: 2) == 0x1b, "the function itself still has PASID there")
    }

    @Test func barSizingIsVirtualAndFollowsTheKernelsFixup() throws {
        let t = try VFIOTestbed()
        let physical = t.plugged.slot.configRead(0x10, size: 4)
        #expect(t.config(0x10) == physical, "reads the host's address first")
        t.setConfig(0x10, 4, ~0)
        t.setConfig(0x14, 4, ~0)
        #expect(t.config(0x10) == 0xffff_c004, "16 KiB, 64-bit memory")
        #expect(t.config(0x14) == 0xffff_ffff)
        t.setConfig(0x18, 4, ~0)
        #expect(t.config(0x18) == 0, "an unimplemented BAR reads 0")
        t.setConfig(0x30, 4, ~0)
        #expect(t.config(0x30) == 0, "no expansion ROM")
        #expect(t.plugged.slot.configRead(0x10, size: 4) == physical, "the function's BAR is untouched")
    }

    @Test func permissionsOfTheHeaderAndCapabilities() throws {
        let t = try VFIOTestbed()
        t.setConfig(0x00, 4, 0xdead_beef)
        #expect(t.config(0) == 0x00f0_1b36, "IDs are read-only")
        t.setConfig(0x3c, 1, 0x5a)
        #expect(t.config(0x3c, 1) == 0x5a, "interrupt line is virtual and writable")
        #expect(t.plugged.slot.configRead(0x3c, size: 1) == 0, "and never reaches the function")
        let msix = t.plugged.slot.layout.msix
        t.setConfig(msix + 2, 2, UInt32(PCIRegister.msixEnable))
        #expect(UInt16(t.config(msix + 2, 2)) & PCIRegister.msixEnable == 0, "MSI-X is enabled by SET_IRQS, not by config writes")
        let msi = t.plugged.slot.layout.msi
        t.setConfig(msi + 2, 1, 1)
        #expect(t.config(msi + 2, 1) & 1 == 0, "MSI enable is dropped while MSI is not the active mode")
        #expect((t.config(msi + 2, 2) >> 1) & 7 == 2, "Multiple Message Capable: 4 vectors")
        // Beyond the space: EFAULT, as vfio_pci_config_rw answers.
        var v: UInt32 = 0
        #expect(withUnsafeMutablePointer(to: &v) { t.cdev.pread(into: UInt64(UInt(bitPattern: $0)), count: 4, offset: VFIOTestbed.configBase + 4094) } == -14)
        // Unaligned multi-byte access is split as vfio-pci splits it.
        var two: UInt64 = 0
        #expect(withUnsafeMutablePointer(to: &two) { t.cdev.pread(into: UInt64(UInt(bitPattern: $0)), count: 8, offset: VFIOTestbed.configBase + 1) } == 8)
        #expect(two & 0xff_ffff == 0x00_f01b, "byte 1 of the vendor ID, then the device ID")
    }
}

@Suite("vfio-pci device info, regions and IRQ info")
struct VFIOInfoTests {
    @Test func deviceInfo() throws {
        let t = try VFIOTestbed()
        var w: [UInt32] = [24, 0, 0, 0, 0, 0]
        #expect(t.request(IOCTL.VFIO_DEVICE_GET_INFO, &w) == 0)
        #expect(w[1] == 3, "PCI | RESET")
        #expect(w[2] == 9 && w[3] == 5)
        w[0] = 12
        #expect(t.request(IOCTL.VFIO_DEVICE_GET_INFO, &w) == -22)
        let unbound = try VFIOTestbed(bind: false)
        w[0] = 24
        #expect(unbound.request(IOCTL.VFIO_DEVICE_GET_INFO, &w) == -22, "nothing before the bind")
    }

    @Test func regionInfo() throws {
        let t = try VFIOTestbed()
        func info(_ index: UInt32) -> (Int, [UInt32]) {
            var w = [UInt32](repeating: 0, count: 8)
            w[0] = 32
            w[2] = index
            let rc = t.request(IOCTL.VFIO_DEVICE_GET_REGION_INFO, &w)
            return (rc, w)
        }
        let config = info(7)
        #expect(config.0 == 0 && config.1[1] == 3 && config.1[4] == 4096 && config.1[6] == 0 && config.1[7] == 0x700)
        let bar0 = info(0)
        #expect(bar0.0 == 0 && bar0.1[4] == 0x4000 && bar0.1[1] & 3 == 3)
        #expect(bar0.1[1] & 4 == 0, "no mmap without trapped MMIO in this process")
        #expect(info(1).1[4] == 0 && info(1).1[1] == 0, "the upper half of a 64-bit BAR")
        #expect(info(6).0 == 0 && info(6).1[4] == 0, "no ROM")
        #expect(info(8).0 == -22, "no VGA")
        #expect(info(9).0 == -22)
        var w: [UInt32] = [16, 0, 7, 0, 0, 0, 0, 0]
        #expect(t.request(IOCTL.VFIO_DEVICE_GET_REGION_INFO, &w) == -22, "argsz below offset")
    }

    @Test func irqInfo() throws {
        let t = try VFIOTestbed()
        func info(_ index: UInt32) -> (Int, UInt32, UInt32) {
            var w: [UInt32] = [16, 0, index, 0]
            let rc = t.request(IOCTL.VFIO_DEVICE_GET_IRQ_INFO, &w)
            return (rc, w[1], w[3])
        }
        #expect(info(0) == (0, 1 | 2 | 4, 1), "INTx: eventfd, maskable, automasked")
        #expect(info(1) == (0, 1 | 8, 4), "MSI: noresize")
        #expect(info(2) == (0, 1, 8), "MSI-X")
        #expect(info(3) == (0, 1 | 8, 1), "ERR (PCI Express)")
        #expect(info(4) == (0, 1 | 8, 1), "REQ")
        #expect(info(5).0 == -22)
    }
}

@Suite("vfio-pci SET_IRQS")
struct VFIOSetIRQsTests {
    @Test func msixVectorSignalsItsEventfd() throws {
        let t = try VFIOTestbed()
        let e = TestEventfd()
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 2, start: 2, count: 1, data: fdBytes(e.fd)) == 0)
        #expect(t.plugged.slot.configRead(t.plugged.slot.layout.msix + 2, size: 2) & UInt32(PCIRegister.msixEnable) != 0)
        t.plugged.slot.signal(vector: 2)
        #expect(e.take() == 1)
        t.plugged.slot.signal(vector: 3)
        #expect(e.take() == 0, "vector 3 has no trigger")
        // Loopback: DATA_NONE and DATA_BOOL trigger.
        #expect(t.setIRQs(flags: dataNone | irqTrigger, index: 2, start: 0, count: 4) == 0)
        #expect(e.take() == 1)
        #expect(t.setIRQs(flags: dataBool | irqTrigger, index: 2, start: 2, count: 1, data: [0]) == 0)
        #expect(e.take() == 0)
        // Errnos.
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 1, start: 0, count: 1, data: fdBytes(e.fd)) == -22, "MSI while MSI-X is active")
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 2, start: 7, count: 2, data: fdBytes(e.fd, e.fd)) == -22, "beyond 8 vectors")
        #expect(t.setIRQs(flags: dataNone | actionMask, index: 2, start: 0, count: 1) == -25, "no mask action for MSI-X")
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 2, start: 0, count: 1, data: fdBytes(999_999)) == -9, "closed descriptor")
        var pipeFDs: [Int32] = [0, 0]
        #expect(pipe(&pipeFDs) == 0)
        defer { Glibc.close(pipeFDs[0]); Glibc.close(pipeFDs[1]) }
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 2, start: 0, count: 1, data: fdBytes(pipeFDs[0])) == -22, "not an eventfd")
        #expect(t.setIRQs(flags: dataEventfd | dataBool | irqTrigger, index: 2, start: 0, count: 1, data: fdBytes(e.fd)) == -22, "two data types")
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 2, start: 0, count: 2, data: [1, 0, 0, 0]) == -22, "argsz short of the data")
        // The program may close its descriptor: the device holds its own reference.
        let e2 = TestEventfd()
        let copy = dup(e2.fd)
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 2, start: 5, count: 1, data: fdBytes(copy)) == 0)
        Glibc.close(copy)
        t.plugged.slot.signal(vector: 5)
        #expect(e2.take() == 1)
        // Teardown: count 0 with DATA_NONE; then INTx may be enabled.
        #expect(t.setIRQs(flags: dataNone | irqTrigger, index: 2, start: 0, count: 0) == 0)
        t.plugged.slot.signal(vector: 2)
        #expect(e.take() == 0)
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 0, start: 0, count: 1, data: fdBytes(e.fd)) == 0)
    }

    @Test func intxIsAutomaskedUntilUnmask() throws {
        let t = try VFIOTestbed()
        let e = TestEventfd()
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 0, start: 0, count: 1, data: fdBytes(e.fd)) == 0)
        t.plugged.slot.signal(vector: 0)
        #expect(e.take() == 1)
        t.plugged.slot.signal(vector: 0)
        #expect(e.take() == 0, "masked after firing")
        #expect(t.setIRQs(flags: dataNone | actionUnmask, index: 0, start: 0, count: 1) == 0)
        #expect(e.take() == 1, "the pending interrupt is delivered on unmask")
        #expect(t.setIRQs(flags: dataEventfd | actionMask, index: 0, start: 0, count: 1, data: fdBytes(e.fd)) == -25)
        #expect(t.setIRQs(flags: dataNone | actionUnmask, index: 0, start: 0, count: 2) == -22)
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 2, start: 0, count: 1, data: fdBytes(e.fd)) == -22, "MSI-X while INTx is active")
    }

    @Test func errAndReqTriggers() throws {
        let t = try VFIOTestbed()
        let e = TestEventfd()
        #expect(t.setIRQs(flags: dataNone | irqTrigger, index: 4, start: 0, count: 1) == -22, "no trigger yet")
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 4, start: 0, count: 1, data: fdBytes(e.fd)) == 0)
        #expect(t.setIRQs(flags: dataNone | irqTrigger, index: 4, start: 0, count: 1) == 0)
        #expect(e.take() == 1)
        #expect(t.setIRQs(flags: dataNone | irqTrigger, index: 4, start: 0, count: 0) == 0, "count 0 releases it")
        #expect(t.setIRQs(flags: dataNone | irqTrigger, index: 4, start: 0, count: 1) == -22)
        #expect(t.setIRQs(flags: dataNone | actionMask, index: 3, start: 0, count: 1) == -25)
        #expect(t.setIRQs(flags: dataNone | irqTrigger, index: 5, start: 0, count: 1) == -22)
    }
}

@Suite("vfio-pci BAR access, bus mastering and reset")
struct VFIOBARTests {
    @Test func barReadWriteAndTheMSIXTableHole() throws {
        let t = try VFIOTestbed()
        #expect(t.bar0(0) == (4, UInt64(GenericPCIDevice.magic)))
        #expect(t.setBAR0(0x28, 8, 0x1122_3344_5566_7788) == 8)
        #expect(t.bar0(0x28, 8) == (8, 0x1122_3344_5566_7788))
        #expect(t.bar0(0x2000, 8) == (8, ~0), "the MSI-X table reads all-ones through pread")
        #expect(t.bar0(0x4000).0 == -22, "beyond the BAR")
        var v: UInt64 = 0
        #expect(withUnsafeMutablePointer(to: &v) { t.cdev.pread(into: UInt64(UInt(bitPattern: $0)), count: 4, offset: 6 << 40) } == -22, "no ROM")
        #expect(withUnsafeMutablePointer(to: &v) { t.cdev.pwrite(from: UInt64(UInt(bitPattern: $0)), count: 4, offset: 9 << 40) } == -22)
        // Memory decoding off: EIO.
        let command = t.config(4, 2)
        t.setConfig(4, 2, command & ~UInt32(PCIRegister.commandMemory))
        #expect(t.bar0(0).0 == -5)
        t.setConfig(4, 2, command)
        #expect(t.bar0(0).0 == 4)
    }

    @Test func resetReturnsRegistersButKeepsConfig() throws {
        let t = try VFIOTestbed()
        t.setBAR0(0x28, 8, 42)
        t.setConfig(0x10, 4, 0xfe10_0000)
        let opened = t.config(4, 2)
        t.setConfig(4, 2, 0x0406)
        #expect(t.config(4, 2) == 0x0406)
        #expect(t.cdev.ioctl(request: IOCTL.VFIO_DEVICE_RESET, argument: nil) == 0)
        #expect(t.bar0(0x28, 8) == (8, 0), "the model's registers reset")
        #expect(t.config(0x10) == 0xfe10_0004, "the virtual BAR survives")
        #expect(t.config(4, 2) == opened, "COMMAND back to its state after the open, as the kernel answers")
        // An FLR written to the PCI Express device control does the same.
        t.setBAR0(0x28, 8, 42)
        let express = t.plugged.slot.layout.express
        t.setConfig(express + 8, 2, t.config(express + 8, 2) | UInt32(PCIRegister.expressDeviceControlFLR))
        #expect(t.bar0(0x28, 8) == (8, 0))
        #expect(t.config(express + 8, 2) & UInt32(PCIRegister.expressDeviceControlFLR) == 0, "the FLR bit reads 0")
    }

    @Test func hotResetsAreENODEVOnTheRootBus() throws {
        let t = try VFIOTestbed()
        var info: [UInt32] = [12, 0, 0, 0, 0, 0]
        #expect(t.request(IOCTL.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, &info) == -19, "no slot or bus reset above a root-bus function")
        info[0] = 8
        #expect(t.request(IOCTL.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, &info) == -22, "argsz below count")
        #expect(t.cdev.ioctl(request: IOCTL.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, argument: UnsafeMutableRawPointer(bitPattern: 0x10)) == -14)
        var reset: [UInt32] = [12, 0, 0, 0]
        #expect(t.request(IOCTL.VFIO_DEVICE_PCI_HOT_RESET, &reset) == -19)
        reset = [12, 1, 0, 0]
        #expect(t.request(IOCTL.VFIO_DEVICE_PCI_HOT_RESET, &reset) == -22, "flags")
        reset = [16, 0, 1, 3]
        #expect(t.request(IOCTL.VFIO_DEVICE_PCI_HOT_RESET, &reset) == -22, "a cdev names no group descriptors")
        #expect(t.cdev.ioctl(request: IOCTL.VFIO_DEVICE_RESET, argument: nil) == 0, "the function's own reset works")
    }

    @Test func busMasterOffMeansNoDMA() throws {
        try PinLock.shared {
            let t = try VFIOTestbed()
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
            let ioas = try t.iommu.context.allocateIOAS()
            _ = try t.iommu.context.map(ioas, source: .user(address: UInt64(UInt(bitPattern: buffer))), length: 4096, iova: 1 << 20, access: .readWrite)
            var at = vfio_device_attach_iommufd_pt()
            at.pt_id = ioas.rawValue
            #expect(t.cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0)
            let e = TestEventfd()
            #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 2, start: 0, count: 1, data: fdBytes(e.fd)) == 0)
            t.setBAR0(0x100, 4, 0xa5a5_a5a5)
            t.setBAR0(0x08, 8, 1 << 20)
            t.setBAR0(0x10, 4, 4)
            t.setBAR0(0x1c, 4, 0)             // completion vector 0
            t.setBAR0(0x18, 4, 2)             // DMA write
            #expect(t.bar0(0x20).1 == 3, "bus mastering is off")
            #expect(buffer.load(as: UInt32.self) == 0)
            #expect(e.take() == 1, "the completion still interrupts")
            let command = t.config(4, 2)
            t.setConfig(4, 2, command | UInt32(PCIRegister.commandBusMaster))
            #expect(t.plugged.slot.busMasterEnabled)
            t.setBAR0(0x18, 4, 2)
            #expect(t.bar0(0x20).1 == 1)
            #expect(buffer.load(as: UInt32.self) == 0xa5a5_a5a5)
            #expect(e.take() == 1)
            t.cdev.release()
            #expect(!t.plugged.slot.busMasterEnabled, "the last close clears bus mastering")
        }
    }
}

@Suite("vfio-pci device features")
struct VFIOFeatureTests {
    @Test func probeSetAndUnsupported() throws {
        let t = try VFIOTestbed()
        let probe: UInt32 = 1 << 18, set: UInt32 = 1 << 17, get: UInt32 = 1 << 16
        var w: [UInt32] = [8, probe | set | 0]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == 0, "an SR-IOV PF has a VF token")
        w = [16, set | 0, 0, 0]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == -22, "SET without the 16-byte UUID")
        w = [24, set | 0, 1, 2, 3, 4]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == 0)
        w = [24, get | 0, 0, 0, 0, 0]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == -22, "the token cannot be read back")
        w = [8, probe | set | 12]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == -22, "feature 12 is the VFIO core's")
        w = [8, probe | get | 1]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == -25, "no migration")
        w = [8, probe | set | 3]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == 0, "low-power entry probes")
        w = [8, probe | get | 3]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == -22, "low-power entry has no GET")
        w = [8, get | set | 3]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == -22, "GET and SET together without PROBE")
        w = [8, 1 << 20 | 3]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == -22, "unknown flag")
        w = [4, set | 3]
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == -22, "argsz below flags")
    }
}

@Suite("VF tokens")
struct VFIOTokenTests {
    /// Binds `cdev` with `token` (nil: no VFIO_DEVICE_BIND_FLAG_TOKEN).
    func bind(_ cdev: VFIODeviceFile, _ iommufd: Int32, _ token: [UInt8]?) -> Int {
        var uuid = token ?? []
        return uuid.withUnsafeMutableBytes { u in
            var b = vfio_device_bind_iommufd()
            b.iommufd = iommufd
            if token != nil {
                b.flags = 1
                b.token_uuid_ptr = UInt64(UInt(bitPattern: u.baseAddress))
            }
            return cdev.vfioCall(IOCTL.VFIO_DEVICE_BIND_IOMMUFD, &b)
        }
    }

    @Test func aVFNeedsItsPFsToken() throws {
        let t = try VFIOTestbed(bind: false)
        let one = [UInt8](1...16), two = [UInt8](17...32)
        #expect(bind(t.cdev, t.iommufd, one) == 0, "the PF takes a token while no VF is open")
        // A second function standing for a VF of that PF.
        let plugged = try t.machine.plugVTd(GenericPCIDevice())
        let vf = VFIOPCIDevice(slot: plugged.slot, device: plugged.device, index: 1, physicalFunction: t.pci)
        func vfCdev() -> VFIODeviceFile { VFIODeviceFile(host: t.host, model: plugged.device, pci: vf, name: "vfio1") }
        #expect(bind(vfCdev(), t.iommufd, nil) == -13, "no token: EACCES")
        #expect(bind(vfCdev(), t.iommufd, two) == -13, "wrong token: EACCES")
        let good = vfCdev()
        #expect(bind(good, t.iommufd, one) == 0)
        // Override through the feature, then only the new token opens the VF.
        var w: [UInt32] = [24, 1 << 17 | 0] + two.withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)) }
        #expect(t.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == 0)
        #expect(bind(vfCdev(), t.iommufd, one) == -13)
        #expect(bind(vfCdev(), t.iommufd, two) == 0)
        good.release()
    }
}

@Suite("VFIO groups and the container")
struct VFIOGroupTests {
    @Test func groupFlowWithAnIommufdAsContainer() throws {
        let t = try VFIOTestbed(bind: false)
        let group = VFIOGroupFile(host: t.host, pci: t.pci)
        var status: [UInt32] = [8, 0]
        #expect(t.request(IOCTL.VFIO_GROUP_GET_STATUS, &status, on: group) == 0 && status[1] == 1, "viable")
        func deviceFD(_ name: String) -> Int {
            var text = Array(name.utf8CString)
            return text.withUnsafeMutableBytes { group.ioctl(request: IOCTL.VFIO_GROUP_GET_DEVICE_FD, argument: $0.baseAddress) }
        }
        #expect(deviceFD(bdf(of: 0)) == -22, "no container yet")
        var fd: [Int32] = [999_999]
        #expect(fd.withUnsafeMutableBytes { group.ioctl(request: IOCTL.VFIO_GROUP_SET_CONTAINER, argument: $0.baseAddress) } == -9)
        fd = [t.iommufd]
        #expect(fd.withUnsafeMutableBytes { group.ioctl(request: IOCTL.VFIO_GROUP_SET_CONTAINER, argument: $0.baseAddress) } == 0)
        #expect(fd.withUnsafeMutableBytes { group.ioctl(request: IOCTL.VFIO_GROUP_SET_CONTAINER, argument: $0.baseAddress) } == -22, "set already")
        #expect(t.request(IOCTL.VFIO_GROUP_GET_STATUS, &status, on: group) == 0 && status[1] == 3)
        #expect(deviceFD("0100:00:02.0") == -19)
        #expect(deviceFD(bdf(of: 0) + " vf_token=2ab74924-c335-45f4-9b16-8569e5b0825") == -22, "a 35-character UUID")
        #expect(deviceFD(bdf(of: 0) + " bogus") == -22)
        let n = deviceFD(bdf(of: 0) + "  vf_token=2ab74924-c335-45f4-9b16-8569e5b08258")
        #expect(n >= 0, "a PF without open VFs takes the token")
        let file = try #require(t.host.file(for: Int32(n)) as? VFIODeviceFile)
        let bound = try #require(file.boundDevice)
        #expect(try t.iommu.context.attachedHWPT(bound.device) != nil, "attached to the compatibility IOAS")
        var bind = vfio_device_bind_iommufd()
        bind.iommufd = t.iommufd
        #expect(file.vfioCall(IOCTL.VFIO_DEVICE_BIND_IOMMUFD, &bind) == -22, "no bind on a group's device")
        var at = vfio_device_attach_iommufd_pt()
        #expect(file.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == -25)
        var w: [UInt32] = [24, 0, 0, 0, 0, 0]
        #expect(t.request(IOCTL.VFIO_DEVICE_GET_INFO, &w, on: file) == 0 && w[2] == 9)
        var reset: [UInt32] = [12, 0, 0, 0]
        #expect(t.request(IOCTL.VFIO_DEVICE_PCI_HOT_RESET, &reset, on: file) == -22, "a group's device names its groups")
        reset = [16, 0, 1, 3]
        #expect(t.request(IOCTL.VFIO_DEVICE_PCI_HOT_RESET, &reset, on: file) == -19)
        #expect(group.ioctl(request: IOCTL.VFIO_GROUP_UNSET_CONTAINER, argument: nil) == 0)
        #expect(group.ioctl(request: IOCTL.VFIO_GROUP_UNSET_CONTAINER, argument: nil) == -22)
        t.host.close(Int32(n))
        #expect(throws: IOMMUError.self) { try t.iommu.context.attachedHWPT(bound.device) }
        group.release()
    }

    @Test func addressesLiveInTheirOwnDomain() {
        #expect(bdf(of: 0) == "0100:00:01.0")
        #expect(bdf(of: 30) == "0100:00:1f.0")
    }
}
