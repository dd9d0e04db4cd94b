// Helpers of the ABI suites: an in-memory descriptor host, the iommufd ioctl table as the
// kernel declares it (drivers/iommu/iommufd/main.c, IOCTL_OP(..., last)), user buffers.

import Foundation
import IOASIDCore
import IOASIDLinuxABI
import Synchronization
import Testing

/// Descriptors handed out by number from a counter far above real descriptors, so that a
/// handed-out number never names a real file of the test process.
final class MemoryHost: DescriptorHost, @unchecked Sendable {
    struct State {
        var next: Int32 = 100_000
        var files: [Int32: any LinuxFile] = [:]
        var readable: [Int32: Bool] = [:]
    }
    let state = Mutex(State())
    /// When set, `install` fails with this errno.
    let failInstall = Atomic<Int32>(0)

    func install(_ file: any LinuxFile) -> Int32 {
        let e = failInstall.load(ordering: .relaxed)
        if e != 0 { return -e }
        return state.withLock { s in
            let fd = s.next
            s.next += 1
            s.files[fd] = file
            return fd
        }
    }

    func setReadable(_ file: any LinuxFile, _ readable: Bool) {
        state.withLock { s in
            for (fd, installed) in s.files where installed === file { s.readable[fd] = readable }
        }
    }
    func file(for fd: Int32) -> (any LinuxFile)? { state.withLock { $0.files[fd] } }
    func isReadable(_ fd: Int32) -> Bool { state.withLock { $0.readable[fd] ?? false } }
    var descriptors: [Int32] { state.withLock { Array($0.files.keys).sorted() } }

    /// Closes `fd` as the last close would: the file is released.
    func close(_ fd: Int32) {
        let f = state.withLock { $0.files.removeValue(forKey: fd) }
        f?.release()
    }

    /// Closes every descriptor.
    func closeAll() { for fd in descriptors { close(fd) } }
}

/// One row of the kernel's ioctl table.
struct IoctlRow: Sendable, CustomTestStringConvertible {
    let name: String
    let request: UInt
    let type: any UAPIStruct.Type
    /// The field named in the kernel's IOCTL_OP(): the struct must reach its end.
    let last: String
    var size: Int { type.byteSize }
    var minimumSize: Int { type.layoutField(named: last)!.end }
    var testDescription: String { name }
}

/// The iommufd ioctls and the last mandatory field of each, from Linux 7.2 main.c.
let iommufdRows: [IoctlRow] = [
    IoctlRow(name: "IOMMU_DESTROY", request: IOCTL.IOMMU_DESTROY, type: iommu_destroy.self, last: "id"),
    IoctlRow(name: "IOMMU_IOAS_ALLOC", request: IOCTL.IOMMU_IOAS_ALLOC, type: iommu_ioas_alloc.self, last: "out_ioas_id"),
    IoctlRow(name: "IOMMU_IOAS_ALLOW_IOVAS", request: IOCTL.IOMMU_IOAS_ALLOW_IOVAS, type: iommu_ioas_allow_iovas.self, last: "allowed_iovas"),
    IoctlRow(name: "IOMMU_IOAS_COPY", request: IOCTL.IOMMU_IOAS_COPY, type: iommu_ioas_copy.self, last: "src_iova"),
    IoctlRow(name: "IOMMU_IOAS_IOVA_RANGES", request: IOCTL.IOMMU_IOAS_IOVA_RANGES, type: iommu_ioas_iova_ranges.self, last: "out_iova_alignment"),
    IoctlRow(name: "IOMMU_IOAS_MAP", request: IOCTL.IOMMU_IOAS_MAP, type: iommu_ioas_map.self, last: "iova"),
    IoctlRow(name: "IOMMU_IOAS_UNMAP", request: IOCTL.IOMMU_IOAS_UNMAP, type: iommu_ioas_unmap.self, last: "length"),
    IoctlRow(name: "IOMMU_OPTION", request: IOCTL.IOMMU_OPTION, type: iommu_option.self, last: "val64"),
    IoctlRow(name: "IOMMU_VFIO_IOAS", request: IOCTL.IOMMU_VFIO_IOAS, type: iommu_vfio_ioas.self, last: "__reserved"),
    IoctlRow(name: "IOMMU_HWPT_ALLOC", request: IOCTL.IOMMU_HWPT_ALLOC, type: iommu_hwpt_alloc.self, last: "__reserved"),
    IoctlRow(name: "IOMMU_GET_HW_INFO", request: IOCTL.IOMMU_GET_HW_INFO, type: iommu_hw_info.self, last: "__reserved"),
    IoctlRow(name: "IOMMU_HWPT_SET_DIRTY_TRACKING", request: IOCTL.IOMMU_HWPT_SET_DIRTY_TRACKING, type: iommu_hwpt_set_dirty_tracking.self, last: "__reserved"),
    IoctlRow(name: "IOMMU_HWPT_GET_DIRTY_BITMAP", request: IOCTL.IOMMU_HWPT_GET_DIRTY_BITMAP, type: iommu_hwpt_get_dirty_bitmap.self, last: "data"),
    IoctlRow(name: "IOMMU_HWPT_INVALIDATE", request: IOCTL.IOMMU_HWPT_INVALIDATE, type: iommu_hwpt_invalidate.self, last: "__reserved"),
    IoctlRow(name: "IOMMU_FAULT_QUEUE_ALLOC", request: IOCTL.IOMMU_FAULT_QUEUE_ALLOC, type: iommu_fault_alloc.self, last: "out_fault_fd"),
    IoctlRow(name: "IOMMU_IOAS_MAP_FILE", request: IOCTL.IOMMU_IOAS_MAP_FILE, type: iommu_ioas_map_file.self, last: "iova"),
    IoctlRow(name: "IOMMU_VIOMMU_ALLOC", request: IOCTL.IOMMU_VIOMMU_ALLOC, type: iommu_viommu_alloc.self, last: "out_viommu_id"),
    IoctlRow(name: "IOMMU_VDEVICE_ALLOC", request: IOCTL.IOMMU_VDEVICE_ALLOC, type: iommu_vdevice_alloc.self, last: "virt_id"),
    IoctlRow(name: "IOMMU_IOAS_CHANGE_PROCESS", request: IOCTL.IOMMU_IOAS_CHANGE_PROCESS, type: iommu_ioas_change_process.self, last: "__reserved"),
    IoctlRow(name: "IOMMU_VEVENTQ_ALLOC", request: IOCTL.IOMMU_VEVENTQ_ALLOC, type: iommu_veventq_alloc.self, last: "out_veventq_fd"),
    IoctlRow(name: "IOMMU_HW_QUEUE_ALLOC", request: IOCTL.IOMMU_HW_QUEUE_ALLOC, type: iommu_hw_queue_alloc.self, last: "length"),
    IoctlRow(name: "IOMMU_TEST_CMD", request: IOCTL.IOMMU_TEST_CMD, type: iommu_test_cmd.self, last: "last"),
]

/// Memory for ioctl arguments: `pages` readable pages, optionally followed by an inaccessible
/// guard page. The guard stays mapped (PROT_NONE): an unmapped hole could be filled by another
/// test's mmap running in parallel, and then it would not fault.
final class ArgumentPages: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let pages: Int
    let total: Int
    init(pages: Int = 1, guardPage: Bool = false) {
        self.pages = pages
        total = (pages + (guardPage ? 1 : 0)) * 4096
        let p = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        precondition(p != MAP_FAILED)
        base = p
        if guardPage { mprotect(p + pages * 4096, 4096, PROT_NONE) }
    }
    deinit { munmap(base, total) }
    var address: UInt64 { UInt64(UInt(bitPattern: base)) }
    func zero() { base.initializeMemory(as: UInt8.self, repeating: 0, count: pages * 4096) }
    func setSize(_ size: Int) { base.storeBytes(of: UInt32(truncatingIfNeeded: size), as: UInt32.self) }
}

/// An `IOMMUFile` with the test driver on an in-memory host.
func makeFile(testDriver: Bool = true, configuration adjust: (inout EngineConfiguration) -> Void = { _ in }) -> (IOMMUFile, MemoryHost) {
    let host = MemoryHost()
    var configuration = EngineConfiguration(testDriver: testDriver)
    adjust(&configuration)
    return (IOMMUFile(host: host, configuration: configuration), host)
}

extension IOMMUFile {
    /// Issues `request` with `value` as the argument (its `size` set to the struct's size).
    func call<T: UAPIStruct>(_ request: UInt, _ value: inout T) -> Int {
        withUnsafeMutableBytes(of: &value) { b in
            b.storeBytes(of: UInt32(b.count), as: UInt32.self)
            return ioctl(request: request, argument: b.baseAddress)
        }
    }
}
