// What the in-process sections drive: a descriptor host, the iommufd ioctls through the ABI
// dispatcher (IOMMUFile.ioctl) on a mock domain, anonymous memory, and the one-syscall baseline.
import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDLinuxABI
import Synchronization

let oneGiB: UInt64 = 1 << 30
let pageSize: UInt64 = 4096

// MARK: - a tiny descriptor host

final class BenchHost: DescriptorHost, @unchecked Sendable {
    private let files = Mutex<(next: Int32, table: [Int32: any LinuxFile])>((1000, [:]))
    func install(_ file: any LinuxFile) -> Int32 {
        files.withLock { s in
            let fd = s.next
            s.next += 1
            s.table[fd] = file
            return fd
        }
    }
    func setReadable(_ file: any LinuxFile, _ readable: Bool) {}
    func file(for fd: Int32) -> (any LinuxFile)? { files.withLock { $0.table[fd] } }
}

// MARK: - the ABI calls

let mapFlags: UInt32 = 1 | 2 | 4 // FIXED_IOVA | WRITEABLE | READABLE
let fixedIOVA: UInt64 = 1 << 24  // the start of the mock aperture

struct ABI {
    let file: IOMMUFile

    init() {
        file = IOMMUFile(host: BenchHost(), configuration: EngineConfiguration(testDriver: true))
    }

    @inline(__always) func call<T: UAPIStruct>(_ request: UInt, _ value: inout T) -> Int {
        withUnsafeMutableBytes(of: &value) { file.ioctl(request: request, argument: $0.baseAddress) }
    }

    func check(_ rc: Int, _ what: String) {
        if rc != 0 { fail("\(what) failed: \(rc)") }
    }

    func allocIOAS() -> UInt32 {
        var a = iommu_ioas_alloc()
        a.size = UInt32(MemoryLayout<iommu_ioas_alloc>.size)
        check(call(IOCTL.IOMMU_IOAS_ALLOC, &a), "IOMMU_IOAS_ALLOC")
        return a.out_ioas_id
    }

    func destroy(_ id: UInt32) {
        var d = iommu_destroy()
        d.size = UInt32(MemoryLayout<iommu_destroy>.size)
        d.id = id
        check(call(IOCTL.IOMMU_DESTROY, &d), "IOMMU_DESTROY")
    }

    /// IOMMU_TEST_CMD / IOMMU_TEST_OP_MOCK_DOMAIN on `ioas`: a mock device attached to a new mock domain.
    func mockDomain(_ ioas: UInt32) {
        var c = iommu_test_cmd()
        c.size = UInt32(MemoryLayout<iommu_test_cmd>.size)
        c.op = UAPI.IOMMU_TEST_OP_MOCK_DOMAIN
        c.id = ioas
        check(call(IOCTL.IOMMU_TEST_CMD, &c), "IOMMU_TEST_OP_MOCK_DOMAIN")
    }

    func map(_ ioas: UInt32, address: UnsafeMutableRawPointer, length: UInt64, iova: UInt64 = fixedIOVA) {
        var m = iommu_ioas_map()
        m.size = UInt32(MemoryLayout<iommu_ioas_map>.size)
        m.flags = mapFlags
        m.ioas_id = ioas
        m.user_va = UInt64(UInt(bitPattern: address))
        m.length = length
        m.iova = iova
        check(call(IOCTL.IOMMU_IOAS_MAP, &m), "IOMMU_IOAS_MAP")
    }

    func unmap(_ ioas: UInt32, length: UInt64, iova: UInt64 = fixedIOVA) {
        var u = iommu_ioas_unmap()
        u.size = UInt32(MemoryLayout<iommu_ioas_unmap>.size)
        u.ioas_id = ioas
        u.iova = iova
        u.length = length
        check(call(IOCTL.IOMMU_IOAS_UNMAP, &u), "IOMMU_IOAS_UNMAP")
        if u.length != length {
            fail("unmapped \(u.length) bytes, not \(length)")
        }
    }
}

/// Anonymous private memory of `length` bytes, aligned to 2 MiB, in 4 KiB pages.
func anonymous(_ length: Int, populate: Bool) -> UnsafeMutableRawPointer {
    let align = 2 << 20
    guard let raw = reportedMmap(length + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE),
          raw != MAP_FAILED else {
        fail("mmap of \(length) bytes failed")
    }
    let base = UnsafeMutableRawPointer(bitPattern: (UInt(bitPattern: raw) + UInt(align) - 1) & ~UInt(align - 1))!
    _ = madvise(base, length, 15) // MADV_NOHUGEPAGE: keep 4 KiB pages
    if populate { memset(base, 1, length) }
    return base
}

/// `mmap(nil, length, ...)` reported as the preload reports the program's (main.swift).
func reportedMmap(_ length: Int, _ protection: Int32, _ flags: Int32) -> UnsafeMutableRawPointer? {
    ioasid_sys_mappings_changing()
    defer { ioasid_sys_mappings_changing() }
    return mmap(nil, length, protection, flags, -1, 0)
}

/// `munmap` reported as the preload reports the program's.
func reportedMunmap(_ address: UnsafeMutableRawPointer, _ length: Int) {
    ioasid_sys_mappings_changing()
    _ = munmap(address, length)
    ioasid_sys_mappings_changing()
}

/// One real system call: ioctl(FIONREAD) on an eventfd.
let baselineFD = Int32(ioasid_sys_eventfd(0, IOASID_SYS_EFD_CLOEXEC | IOASID_SYS_EFD_NONBLOCK))
@inline(__always) func oneSyscall() {
    var v: Int32 = 0
    _ = ioasid_sys_fionread(baselineFD, &v)
}

/// The fast-path operations, each set up on its own file.
struct FastPath {
    let abi = ABI()
    let ioas: UInt32
    let buffer: UnsafeMutableRawPointer

    init() {
        ioas = abi.allocIOAS()
        abi.mockDomain(ioas)
        buffer = anonymous(2 << 20, populate: true)
    }

    func allocDestroy() { abi.destroy(abi.allocIOAS()) }
    func mapUnmap(_ length: UInt64) {
        abi.map(ioas, address: buffer, length: length)
        abi.unmap(ioas, length: length)
    }
}
