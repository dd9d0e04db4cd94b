// What keeps an iommufd's context open after its last descriptor is closed: as in the kernel,
// a bound VFIO device, a group whose container it is, and a queue or access descriptor it
// handed out each hold the file; the context closes when the last of them goes.
import IOASIDCore
import IOASIDLinuxABI
import Testing

@Suite("What holds an iommufd open")
struct IOMMUFileHoldTests {
    @Test func aBoundDeviceKeepsItsMappingsAndAttachmentAfterTheIommufdIsClosed() throws {
        let t = try VFIOTestbed()
        let ioas = try t.iommu.context.allocateIOAS()
        var at = vfio_device_attach_iommufd_pt()
        at.pt_id = ioas.rawValue
        #expect(t.cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0)
        let device = try #require(t.cdev.boundDevice?.device)

        t.host.close(t.iommufd)
        #expect(t.iommu.isOpen, "the bound device holds the iommufd")
        #expect(try t.iommu.context.attachedHWPT(device)?.rawValue == at.pt_id)
        var det = vfio_device_detach_iommufd_pt()
        #expect(t.cdev.vfioCall(IOCTL.VFIO_DEVICE_DETACH_IOMMUFD_PT, &det) == 0, "the device still reaches its context")
        at.pt_id = ioas.rawValue
        #expect(t.cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0, "and attaches again")

        t.cdev.release()
        #expect(!t.iommu.isOpen, "the device was the last hold")
        #expect(!t.iommu.context.holds(ioas.object), "closing the context destroyed the IOAS")
    }

    @Test func bindingToAClosedIommufdIsEBADF() throws {
        let t = try VFIOTestbed(bind: false)
        let file = t.iommu
        // The descriptor still names the file, but the file's holds are gone (a close that
        // raced with the lookup).
        file.release()
        var b = vfio_device_bind_iommufd()
        b.iommufd = t.iommufd
        #expect(t.cdev.vfioCall(IOCTL.VFIO_DEVICE_BIND_IOMMUFD, &b) == -9)
        #expect(t.cdev.boundDevice == nil)
        #expect(!file.hold(), "a closed context is never held again")
    }

    @Test func aGroupHoldsItsContainerUntilUnsetOrClosed() throws {
        let t = try VFIOTestbed(bind: false)
        let group = VFIOGroupFile(host: t.host, pci: t.pci)
        var fd: [Int32] = [t.iommufd]
        #expect(fd.withUnsafeMutableBytes { group.ioctl(request: IOCTL.VFIO_GROUP_SET_CONTAINER, argument: $0.baseAddress) } == 0)
        let ioas = try t.iommu.context.compatibilityIOAS(create: false)
        t.host.close(t.iommufd)
        #expect(t.iommu.isOpen, "the group holds its container")
        #expect(try t.iommu.context.compatibilityIOAS(create: false).object == ioas.object)
        #expect(group.ioctl(request: IOCTL.VFIO_GROUP_UNSET_CONTAINER, argument: nil) == 0)
        #expect(!t.iommu.isOpen, "unset let go of the last hold")

        // Closing the group lets go as well.
        let (second, host) = makeFile()
        let secondfd = host.install(second)
        let other = VFIOGroupFile(host: host, pci: t.pci)
        fd = [secondfd]
        #expect(fd.withUnsafeMutableBytes { other.ioctl(request: IOCTL.VFIO_GROUP_SET_CONTAINER, argument: $0.baseAddress) } == 0)
        host.close(secondfd)
        #expect(second.isOpen)
        other.release()
        #expect(!second.isOpen)
    }

    @Test func aGroupsDeviceHoldsTheContainerAfterTheGroupLetsGo() throws {
        let t = try VFIOTestbed(bind: false)
        let group = VFIOGroupFile(host: t.host, pci: t.pci)
        var fd: [Int32] = [t.iommufd]
        #expect(fd.withUnsafeMutableBytes { group.ioctl(request: IOCTL.VFIO_GROUP_SET_CONTAINER, argument: $0.baseAddress) } == 0)
        var name = Array(bdf(of: 0).utf8CString)
        let n = name.withUnsafeMutableBytes { group.ioctl(request: IOCTL.VFIO_GROUP_GET_DEVICE_FD, argument: $0.baseAddress) }
        #expect(n >= 0)
        t.host.close(t.iommufd)
        group.release()
        #expect(t.iommu.isOpen, "the device descriptor still holds it")
        t.host.close(Int32(n))
        #expect(!t.iommu.isOpen)
    }

    @Test func aFaultQueueDescriptorHoldsItsIommufd() throws {
        let (iommu, host) = makeFile()
        let iommufd = host.install(iommu)
        var fa = iommu_fault_alloc()
        #expect(iommu.call(IOCTL.IOMMU_FAULT_QUEUE_ALLOC, &fa) == 0)
        let queue = Int32(bitPattern: fa.out_fault_fd)
        host.close(iommufd)
        #expect(iommu.isOpen, "the queue's descriptor holds the iommufd")
        #expect(iommu.context.holds(ObjectID(fa.out_fault_id)), "the queue object lives on")
        host.close(queue)
        #expect(!iommu.isOpen)
        #expect(!iommu.context.holds(ObjectID(fa.out_fault_id)))
    }

    @Test func aQueueWhoseDescriptorCannotBeInstalledTakesNoHold() throws {
        let (iommu, host) = makeFile()
        let iommufd = host.install(iommu)
        host.failInstall.store(24, ordering: .relaxed)
        var fa = iommu_fault_alloc()
        #expect(iommu.call(IOCTL.IOMMU_FAULT_QUEUE_ALLOC, &fa) == -12)
        host.failInstall.store(0, ordering: .relaxed)
        host.close(iommufd)
        #expect(!iommu.isOpen, "nothing was left holding it")
    }
}

extension Context {
    /// Whether object `id` is live in the context.
    func holds(_ id: ObjectID) -> Bool {
        (try? withState { s throws(IOMMUError) in _ = try s.object(id) }) != nil
    }
}
