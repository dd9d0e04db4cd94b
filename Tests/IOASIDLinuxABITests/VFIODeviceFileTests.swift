// The VFIO device cdev of a modelled device: bind to an iommufd, attach, replace, detach, close.
import IOASIDCore
import IOASIDSoftDrivers
import IOASIDLinuxABI
import IOASIDTestDriver
import Testing

@Suite("VFIO device cdev")
struct VFIODeviceFileTests {
    @Test func bindAttachReplaceDetachAndClose() throws {
        let (iommu, host) = makeFile()
        defer { iommu.release() }
        let iommufd = host.install(iommu)
        let cdev = VFIODeviceFile(host: host, model: MockDevice(flags: Mock.devicePASID), name: "vfio0")
        var at = vfio_device_attach_iommufd_pt()
        let ioas = try iommu.context.allocateIOAS()
        at.pt_id = ioas.rawValue
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == -22, "nothing but BIND before the bind")

        var bind = vfio_device_bind_iommufd()
        bind.iommufd = -1
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_BIND_IOMMUFD, &bind) == -22)
        bind.iommufd = iommufd
        bind.flags = 1
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_BIND_IOMMUFD, &bind) == -22, "no VF token on a modelled device")
        bind.flags = 0
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_BIND_IOMMUFD, &bind, argsz: 12) == -22, "argsz below out_devid")
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0)
        let device = Device.ID(bind.out_devid)
        #expect(cdev.boundDevice?.device == device)
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_BIND_IOMMUFD, &bind) == -22, "bound twice")

        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0)
        let auto = at.pt_id
        #expect(auto != ioas.rawValue, "an IOAS gets an automatic HWPT, whose ID comes back")
        #expect(try iommu.context.attachedHWPT(device)?.rawValue == auto)
        // A second attach replaces.
        let hwpt = try iommu.context.allocateHWPT(device: device, parent: ioas.object, flags: [.pasid], data: nil)
        at.pt_id = hwpt.rawValue
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0)
        #expect(try iommu.context.attachedHWPT(device) == hwpt)
        // Per PASID.
        at.flags = 1
        at.pasid = 5
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at, argsz: 12) == -22, "argsz below pasid")
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0)
        #expect(try iommu.context.attachedPASIDs(device) == [5])
        at.flags = 2
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == -22, "unknown flag")

        var det = vfio_device_detach_iommufd_pt()
        det.flags = 1
        det.pasid = 5
        #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_DETACH_IOMMUFD_PT, &det) == 0)
        #expect(try iommu.context.attachedPASIDs(device).isEmpty)
        // Closing the cdev unbinds the device and detaches its RID.
        cdev.release()
        #expect(throws: IOMMUError.self) { try iommu.context.attachedHWPT(device) }
    }
}

extension VFIODeviceFile {
    /// Issues a VFIO request with `value` (its `argsz`, the first field, set to `argsz` or the struct's size).
    func vfioCall<T: UAPIStruct>(_ request: UInt, _ value: inout T, argsz: Int? = nil) -> Int {
        withUnsafeMutableBytes(of: &value) { b in
            b.storeBytes(of: UInt32(argsz ?? b.count), as: UInt32.self)
            return ioctl(request: request, argument: b.baseAddress)
        }
    }
}

@Suite("VFIO device cdev on the software IOMMU")
struct VFIODeviceDMATests {
    /// What `ioasid run --machine vtd,smmuv3` gives a C program, driven through the same requests.
    @Test(arguments: ["vtd", "smmuv3"])
    func dmaThroughTheModelledIOMMU(kind: String) throws {
        try PinLock.shared {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4 * 4096, alignment: 4096)
            defer { buffer.deallocate() }  // runs last: after the context released its pins
            let machine = SoftMachine(vtdDelivery: .interruptThread)
            let model: any DMADevice = kind == "vtd" ? try machine.addVTdDevice() : try machine.addSMMUv3Device()
            let (iommu, host) = makeFile()
            defer { iommu.release() }
            let cdev = VFIODeviceFile(host: host, model: model, name: "vfio0")
            defer { cdev.release() }
            var bind = vfio_device_bind_iommufd()
            bind.iommufd = host.install(iommu)
            #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0)
            let info = try iommu.context.hardwareInfo(Device.ID(bind.out_devid))
            #expect(info.type == (kind == "vtd" ? UAPI.IOMMU_HW_INFO_TYPE_INTEL_VTD : UAPI.IOMMU_HW_INFO_TYPE_ARM_SMMUV3))

            buffer.initializeMemory(as: UInt8.self, repeating: 0, count: 4 * 4096)
            let ioas = try iommu.context.allocateIOAS()
            _ = try iommu.context.map(ioas, source: .user(address: UInt64(UInt(bitPattern: buffer))), length: 4 * 4096,
                                      iova: 1 << 20, access: .readWrite)
            var at = vfio_device_attach_iommufd_pt()
            at.pt_id = ioas.rawValue
            #expect(cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0)

            var payload: [UInt8] = [0xC0, 0xFF, 0xEE]
            var dma = ioasid_device_dma()
            dma.flags = IOASIDUAPI.IOASID_DMA_WRITE
            dma.iova = (1 << 20) + 4096 + 16
            dma.length = 3
            let rc = payload.withUnsafeMutableBytes { p -> Int in
                dma.data_uptr = UInt64(UInt(bitPattern: p.baseAddress))
                return cdev.vfioCall(IOASIDUAPI.IOASID_DEVICE_DMA, &dma)
            }
            #expect(rc == 0 && dma.out_status == IOASIDUAPI.IOASID_DMA_DONE)
            #expect(buffer.load(fromByteOffset: 4096 + 16, as: UInt8.self) == 0xC0 && buffer.load(fromByteOffset: 4096 + 18, as: UInt8.self) == 0xEE)

            // A PASID nobody attached: blocked, not translated.
            dma.flags = IOASIDUAPI.IOASID_DMA_WRITE | IOASIDUAPI.IOASID_DMA_PASID
            dma.pasid = 9
            dma.iova = 1 << 20
            buffer.storeBytes(of: UInt8(0x11), as: UInt8.self)
            _ = payload.withUnsafeMutableBytes { p -> Int in
                dma.data_uptr = UInt64(UInt(bitPattern: p.baseAddress))
                return cdev.vfioCall(IOASIDUAPI.IOASID_DEVICE_DMA, &dma)
            }
            #expect(dma.out_status == IOASIDUAPI.IOASID_DMA_FAULT)
            #expect(buffer.load(as: UInt8.self) == 0x11)
            var resume = ioasid_device_dma()
            resume.flags = IOASIDUAPI.IOASID_DMA_RESUME
            #expect(cdev.vfioCall(IOASIDUAPI.IOASID_DEVICE_DMA, &resume) == -22, "nothing waits for a page response")
        }
    }
}
