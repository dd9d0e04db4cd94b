import CIOASIDSys
import IOASIDCore

/// The memory of the process the framework runs in, as the core sees user memory: copies are
/// fault-safe (`process_vm_readv`/`writev` on ourselves), pinning checks that the pages are
/// mapped, and files are mapped with raw `mmap`, never through the preload.
public final class ProcessMemory: UserMemory, @unchecked Sendable {
    /// The process-wide instance.
    public static let shared = ProcessMemory()
    let pageSize: UInt64 = 4096

    /// CAP_IPC_LOCK and RLIMIT_MEMLOCK, read once: pinning must not cost system calls beyond
    /// the mapping check. A program that changes its limit later keeps the first reading.
    let lockLimit: UInt64?

    public init() {
        let n = ioasid_sys_lock_limit_pages(4096)
        lockLimit = n < 0 ? nil : UInt64(n)
    }

    public func pin(address: UInt64, length: UInt64, writable: Bool) throws(IOMMUError) {
        if ioasid_sys_check_range(address, length, writable ? 1 : 0) != 0 { throw .fault("user memory is not mapped") }
    }

    public func copyIn(from address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(IOMMUError) {
        guard buffer.count > 0 else { return }
        try FaultInjection.check(.copyFromUser)
        if ioasid_sys_copy_in(buffer.baseAddress, address, buffer.count) != 0 { throw .fault("user memory is not readable") }
    }

    public func copyOut(_ buffer: UnsafeRawBufferPointer, to address: UInt64) throws(IOMMUError) {
        guard buffer.count > 0 else { return }
        try FaultInjection.check(.copyToUser)
        if ioasid_sys_copy_out(address, buffer.baseAddress, buffer.count) != 0 { throw .fault("user memory is not writeable") }
    }

    public func fileInfo(fd: Int32) throws(IOMMUError) -> (identity: FileIdentity, size: UInt64) {
        let status = try fileStatus(fd: fd)
        return (status.identity, status.size)
    }

    /// Which file `fd` names, its size, and whether it is a regular file (one whose pages can
    /// be mapped); `EBADF` only for a descriptor that is not open, as the kernel's `fget`.
    private func fileStatus(fd: Int32) throws(IOMMUError) -> (identity: FileIdentity, size: UInt64, regular: Bool) {
        var device: UInt64 = 0, inode: UInt64 = 0, size: UInt64 = 0
        var mappable: Int32 = 0
        let rc = ioasid_sys_file_info(fd, &device, &inode, &size, &mappable)
        if rc != 0 { throw .badDescriptor("not an open file descriptor") }
        return (FileIdentity(device: device, inode: inode), mappable != 0 ? size : 0, mappable != 0)
    }

    public func mapFile(fd: Int32, offset: UInt64, length: UInt64, writable: Bool) throws(IOMMUError) -> FileMapping {
        let (file, size, regular) = try fileStatus(fd: fd)
        // A file without pages to map (an eventfd, a pipe, a socket, a queue descriptor): the
        // kernel records any open file and refuses only its pins (EINVAL: not shmem or
        // hugetlbfs), so nothing of it is mapped and every page counts as past its end.
        guard regular else { return FileMapping(base: 0, length: length, file: file, fileOffset: offset, mappedLength: 0) }
        let prot: Int32 = writable ? 3 : 1 // PROT_READ | PROT_WRITE
        if length <= UInt64(Int.max), offset <= UInt64(Int.max) {
            let address = ioasid_sys_mmap(nil, Int(length), prot, 1 /* MAP_SHARED */, fd, Int(offset))
            if address >= 0 { return FileMapping(base: UInt64(address), length: length, file: file, fileOffset: offset) }
            if address == -13 { throw .notPermitted("file is not writeable") }
            // ENOMEM or EOVERFLOW: the address space cannot hold the span (below).
            guard address == -12 || address == -75 else { throw .invalid("file cannot be mapped") }
        }
        // A span no address space holds. The kernel maps files lazily and accepts it; its pins
        // of pages past the end of the file fail. So only the part the file reaches is mapped,
        // and a page beyond it counts as past the end (docs/conformance.md, "Differential
        // check"). A file grown past that part later is not seen.
        let reached = size > offset ? min(length, (size - offset + pageSize - 1) & ~(pageSize - 1)) : 0
        guard reached > 0 else { return FileMapping(base: 0, length: length, file: file, fileOffset: offset, mappedLength: 0) }
        guard reached <= UInt64(Int.max), offset <= UInt64(Int.max) else { throw .invalid("file span larger than the address space") }
        let address = ioasid_sys_mmap(nil, Int(reached), prot, 1 /* MAP_SHARED */, fd, Int(offset))
        if address < 0 {
            if address == -13 { throw .notPermitted("file is not writeable") }
            throw .invalid("file cannot be mapped")
        }
        return FileMapping(base: UInt64(address), length: length, file: file, fileOffset: offset, mappedLength: reached)
    }

    public func unmapFile(_ mapping: FileMapping) {
        guard mapping.mappedLength > 0 else { return }
        _ = ioasid_sys_munmap(UnsafeMutableRawPointer(bitPattern: UInt(mapping.base)), Int(mapping.mappedLength))
    }

    public func identity(of address: UInt64) throws(IOMMUError) -> PageIdentity {
        var device: UInt64 = 0, inode: UInt64 = 0, offset: UInt64 = 0
        let rc = ioasid_sys_page_identity(address, &device, &inode, &offset)
        if rc < 0 { throw .fault("address is not mapped") }
        if rc == 1 { return .file(FileIdentity(device: device, inode: inode), offset: offset & ~(pageSize - 1)) }
        return .address(address & ~(pageSize - 1))
    }

    public func lockLimitPages() -> UInt64? { lockLimit }
}
