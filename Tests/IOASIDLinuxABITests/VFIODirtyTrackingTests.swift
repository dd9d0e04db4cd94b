// IOMMU dirty tracking as a VMM uses it to migrate a VM with an assigned device: the software
// VT-d advertises it (IOMMU_GET_HW_INFO), a HWPT is allocated for it, tracking is switched on,
// and the pages the I/OAT device writes through the IOMMU are exactly the dirty ones.
import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Testing

@Suite("IOMMU dirty tracking of an assigned device")
struct VFIODirtyTrackingTests {
    @Test func pagesTheDeviceWritesAreDirtyOnlyWithTrackingOn() throws {
        try PinLock.shared {
            let pages = 16
            let memory = UnsafeMutableRawPointer.allocate(byteCount: pages * 4096, alignment: 4096)
            defer { memory.deallocate() }
            memory.initializeMemory(as: UInt8.self, repeating: 0, count: pages * 4096)
            let iova: UInt64 = 1 << 20
            let ioat = IOATDevice()
            let t = try VFIOTestbed(model: ioat)
            let device = t.cdev.boundDevice!.device.rawValue

            var info = iommu_hw_info()
            info.dev_id = device
            #expect(t.iommu.call(IOCTL.IOMMU_GET_HW_INFO, &info) == 0)
            #expect(info.out_capabilities & UAPI.IOMMU_HW_CAP_DIRTY_TRACKING != 0, "the VT-d advertises dirty tracking")

            let ioas = try t.iommu.context.allocateIOAS()
            _ = try t.iommu.context.map(ioas, source: .user(address: UInt64(UInt(bitPattern: memory))), length: UInt64(pages * 4096),
                                        iova: iova, access: .readWrite)
            var alloc = iommu_hwpt_alloc()
            alloc.flags = UAPI.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
            alloc.dev_id = device
            alloc.pt_id = ioas.rawValue
            #expect(t.iommu.call(IOCTL.IOMMU_HWPT_ALLOC, &alloc) == 0)
            var at = vfio_device_attach_iommufd_pt()
            at.pt_id = alloc.out_hwpt_id
            #expect(t.cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0)
            t.setConfig(4, 2, t.config(4, 2) | UInt32(PCIRegister.commandBusMaster))

            func setTracking(_ on: Bool) {
                var s = iommu_hwpt_set_dirty_tracking()
                s.flags = on ? UAPI.IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0
                s.hwpt_id = alloc.out_hwpt_id
                #expect(t.iommu.call(IOCTL.IOMMU_HWPT_SET_DIRTY_TRACKING, &s) == 0)
            }
            /// The dirty pages (indexes from `iova`) by IOMMU_HWPT_GET_DIRTY_BITMAP, cleared.
            func dirtyPages() -> [Int] {
                var bitmap: UInt64 = 0
                var g = iommu_hwpt_get_dirty_bitmap()
                g.hwpt_id = alloc.out_hwpt_id
                g.iova = iova
                g.length = UInt64(pages * 4096)
                g.page_size = 4096
                let r = withUnsafeMutablePointer(to: &bitmap) { p -> Int in
                    g.data = UInt64(UInt(bitPattern: p))
                    return t.iommu.call(IOCTL.IOMMU_HWPT_GET_DIRTY_BITMAP, &g)
                }
                #expect(r == 0)
                return (0..<pages).filter { bitmap & (1 << UInt64($0)) != 0 }
            }
            /// The device copies 8 KiB from page 1 to `destination` (two pages), with a completion
            /// write to page 10; its descriptor is read from page 0.
            var chained: UInt16 = 0
            func copy(to destination: Int) {
                let d = IOATDescriptor.copy(size: 8192, from: iova + 4096, to: iova + UInt64(4096 * destination), next: iova,
                                            completionWrite: true)
                for (i, b) in d.bytes.enumerated() { memory.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
                t.setBAR0(0x84, 1, UInt64(IOATRegister.commandReset))
                t.setBAR0(0x98, 8, iova + 10 * 4096)
                t.setBAR0(0x90, 8, iova)
                t.setBAR0(0x86, 2, 1)
                chained += 1
                #expect(t.bar0(0x88, 8).1 & 7 == IOATChannelState.idle.rawValue)
            }

            // Tracking off: the device's writes dirty nothing.
            copy(to: 3)
            #expect(dirtyPages() == [], "no dirty bit while tracking is off")
            setTracking(true)
            #expect(dirtyPages() == [], "enabling starts from clean")
            // The software CPU writes the descriptor (not through the IOMMU: not dirty); the device
            // reads pages 0 and 1 and writes 5, 6 and the completion in 10.
            copy(to: 5)
            #expect(dirtyPages() == [5, 6, 10], "exactly the pages the device wrote")
            #expect(dirtyPages() == [], "the read cleared them")
            copy(to: 12)
            #expect(dirtyPages() == [10, 12, 13])
            setTracking(false)
            copy(to: 7)
            #expect(dirtyPages() == [], "tracking off again")
        }
    }
}
