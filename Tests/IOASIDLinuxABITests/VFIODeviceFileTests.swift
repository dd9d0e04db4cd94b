// The VFIO device cdev of a modelled device: bind to an iommufd, attach, replace, detach, close.
import IOASIDCore
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
