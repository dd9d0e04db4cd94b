import IOASIDCore        // the object model: Context, IOAS, HWPT, devices
import IOASIDProcessMemory  // ProcessMemory: this process's memory as the context's user memory
import IOASIDTestDriver  // TestDriver: the mock device of the kernel's IOMMUFD_TEST driver

let context = Context(memory: ProcessMemory.shared)  // one "open of /dev/iommu"
let length = 1 << 20
let buffer = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 1 << 12)
do throws(IOMMUError) {
    let ioas = try context.allocateIOAS()
    // Attach a device first: its IOMMU narrows the IOAS to the addresses it can translate
    // (the mock device's aperture starts at 16 MiB).
    let mock = try TestDriver(context: context).mockDomain(ioas.object)
    let usable = try context.iovaRanges(ioas).ranges
    print("device \(mock.device.rawValue) attached; usable IOVA: \(usable)")
    // Map 1 MiB of this process's memory where the IOAS has room, then unmap it.
    let iova = try context.map(ioas, source: .user(address: UInt64(UInt(bitPattern: buffer))),
                               length: UInt64(length), iova: nil, access: .readWrite)
    print("mapped \(length) bytes at IOVA 0x\(String(iova, radix: 16))")
    let unmapped = try context.unmap(ioas, iova: iova, length: UInt64(length))
    print("unmapped \(unmapped) bytes")
} catch {
    print("failed: \(error.errno) (\(error.reason))")  // every error carries the Linux errno
}
context.close()
buffer.deallocate()
