import IOASIDProcessMemory
import Glibc
import IOASIDCore
import IOASIDLinuxABI
import IOASIDStructures
import IOASIDTestDriver
import Testing

/// What may be pinned for a device: the kernel's pin refuses unmapped, `PROT_NONE` and device
/// (I/O) memory, and read-only memory for a writeable map, with `EFAULT`; ioasid applies the
/// same rules when `IOAS_MAP` pins (a domain is attached) or a domain is attached later.
@Suite struct PinRuleTests {
    /// Fresh anonymous memory of `pages` pages with `protection`.
    private func memory(pages: Int, protection: Int32) -> UInt64 {
        let p = mmap(nil, pages * 4096, protection, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        precondition(p != MAP_FAILED)
        return UInt64(UInt(bitPattern: p))
    }

    @Test func mapWithADomainRefusesWhatTheKernelCannotPin() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            let none = memory(pages: 2, protection: PROT_NONE)
            let readOnly = memory(pages: 2, protection: PROT_READ)
            let unmapped = memory(pages: 2, protection: PROT_READ | PROT_WRITE)
            munmap(UnsafeMutableRawPointer(bitPattern: UInt(unmapped)), 2 * 4096)
            let half = memory(pages: 2, protection: PROT_READ | PROT_WRITE)
            mprotect(UnsafeMutableRawPointer(bitPattern: UInt(half + 4096)), 4096, PROT_NONE)

            expectErrno(EFAULT, "PROT_NONE") { try f.context.map(f.ioas, source: .user(address: none), length: 8192, iova: nil, access: .read) }
            expectErrno(EFAULT, "read-only memory mapped writeable") {
                try f.context.map(f.ioas, source: .user(address: readOnly), length: 8192, iova: nil, access: .readWrite)
            }
            expectErrno(EFAULT, "unmapped") { try f.context.map(f.ioas, source: .user(address: unmapped), length: 8192, iova: nil, access: .read) }
            expectErrno(EFAULT, "the second page is PROT_NONE") {
                try f.context.map(f.ioas, source: .user(address: half), length: 8192, iova: nil, access: .read)
            }
            // What the kernel does pin: read-only memory for a read-only map, the good page alone.
            _ = try f.context.map(f.ioas, source: .user(address: readOnly), length: 8192, iova: nil, access: .read)
            _ = try f.context.map(f.ioas, source: .user(address: half), length: 4096, iova: nil, access: .readWrite)
            // Nothing was left behind by the refused maps.
            #expect(try f.context.areas(f.ioas).count == 3)
        }
    }

    @Test func attachPinsLazilyMappedMemoryWithTheSameRules() throws {
        try PinLock.shared {
            let (c, driver) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let none = memory(pages: 1, protection: PROT_NONE)
            // No domain: nothing is pinned, so the map succeeds (as on the kernel) ...
            _ = try c.map(ioas, source: .user(address: none), length: 4096, iova: 1 << 24, access: .read)
            // ... and the attach that would pin it fails.
            expectErrno(EFAULT) { try driver.mockDomain(ioas.object) }
            _ = try c.unmap(ioas, iova: 1 << 24, length: 4096)
            _ = try driver.mockDomain(ioas.object)
        }
    }

    @Test func pinFaultsThePagesIn() throws {
        let address = memory(pages: 4, protection: PROT_READ | PROT_WRITE)
        var resident = [UInt8](repeating: 0, count: 4)
        mincore(UnsafeMutableRawPointer(bitPattern: UInt(address)), 4 * 4096, &resident)
        #expect(resident.allSatisfy { $0 & 1 == 0 })
        try ProcessMemory.shared.pin(address: address, length: 4 * 4096, writable: true)
        mincore(UnsafeMutableRawPointer(bitPattern: UInt(address)), 4 * 4096, &resident)
        #expect(resident.allSatisfy { $0 & 1 == 1 })
    }
}
