import CIOASIDSys
import Glibc
import IOASIDSoftIOMMU
import Testing

/// The safe copy (`ioasid_sys_uaccess.h`) in this process, with the in-process handler: bad
/// pointers of every class give EFAULT without a system call, a truncated file gives EFAULT
/// instead of SIGBUS, and a thread that blocks the fault signals is declined (the caller then
/// copies with a system call).
@Suite(.serialized) struct SafeCopyTests {
    static let page = Int(sysconf(Int32(_SC_PAGESIZE)))

    init() {
        #expect(ioasid_sys_uaccess_install() == 0)
    }

    /// Four pages: read-write, PROT_NONE, read-only, unmapped.
    private func withPages(_ body: (UnsafeMutableRawPointer) throws -> Void) rethrows {
        let page = Self.page
        let area = mmap(nil, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        defer { munmap(area, 3 * page) }
        memset(area, 0x5a, 4 * page)
        mprotect(area + page, page, PROT_NONE)
        mprotect(area + 2 * page, page, PROT_READ)
        munmap(area + 3 * page, page)
        try body(area)
    }

    @Test func copiesGoodMemory() {
        var source = [UInt8](repeating: 0, count: 300)
        for i in source.indices { source[i] = UInt8(truncatingIfNeeded: i * 7) }
        var target = [UInt8](repeating: 0, count: 300)
        let rc = source.withUnsafeBytes { s in target.withUnsafeMutableBytes { t in ioasid_sys_safe_copy(t.baseAddress, s.baseAddress, 300) } }
        #expect(rc == 0)
        #expect(target == source)
    }

    @Test func badSourcesAreEFAULT() {
        withPages { area in
            var target = [UInt8](repeating: 0, count: 64)
            for (name, source) in [("PROT_NONE", area + Self.page), ("unmapped", area + 3 * Self.page),
                                   ("null page", UnsafeMutableRawPointer(bitPattern: 16)!),
                                   ("non-canonical", UnsafeMutableRawPointer(bitPattern: UInt(0x8000_0000_0000_0000))!),
                                   ("kernel half", UnsafeMutableRawPointer(bitPattern: UInt(0xffff_8000_0000_0000))!)] {
                let rc = target.withUnsafeMutableBytes { ioasid_sys_safe_copy($0.baseAddress, source, 64) }
                #expect(rc == -14, "\(name)")
            }
            // Straddling the end of the readable page: the readable part arrives, then EFAULT.
            let rc = target.withUnsafeMutableBytes { ioasid_sys_safe_copy($0.baseAddress, area + Self.page - 16, 64) }
            #expect(rc == -14)
            #expect(target[0..<16].allSatisfy { $0 == 0x5a })
            // And through the callers' entry point: the same answers.
            #expect(target.withUnsafeMutableBytes { ioasid_sys_copy_in($0.baseAddress, UInt64(UInt(bitPattern: area + Self.page)), 8) } == -14)
            #expect(target.withUnsafeMutableBytes { ioasid_sys_copy_in($0.baseAddress, UInt64(UInt(bitPattern: area)), 8) } == 0)
        }
    }

    @Test func badTargetsAreEFAULT() {
        withPages { area in
            let source = [UInt8](repeating: 1, count: 64)
            for (name, target) in [("read-only", area + 2 * Self.page), ("PROT_NONE", area + Self.page),
                                   ("unmapped", area + 3 * Self.page)] {
                let rc = source.withUnsafeBytes { ioasid_sys_safe_copy(target, $0.baseAddress, 64) }
                #expect(rc == -14, "\(name)")
            }
            #expect((area + 2 * Self.page).load(as: UInt8.self) == 0x5a, "a read-only page is unchanged")
            #expect(source.withUnsafeBytes { ioasid_sys_copy_out(UInt64(UInt(bitPattern: area + 2 * Self.page)), $0.baseAddress, 8) } == -14)
        }
    }

    /// A shared mapping of a file that was truncated under it raises SIGBUS on access; the safe
    /// copy turns that into EFAULT too.
    @Test func truncatedFileIsEFAULTNotSIGBUS() throws {
        let fd = ioasid_sys_memfd(UInt64(2 * Self.page), 1)
        try #require(fd >= 0)
        defer { close(Int32(fd)) }
        let mapped = mmap(nil, 2 * Self.page, PROT_READ | PROT_WRITE, MAP_SHARED, Int32(fd), 0)!
        try #require(mapped != MAP_FAILED)
        defer { munmap(mapped, 2 * Self.page) }
        #expect(ftruncate(Int32(fd), off_t(Self.page)) == 0)
        var target = [UInt8](repeating: 0, count: 8)
        #expect(target.withUnsafeMutableBytes { ioasid_sys_safe_copy($0.baseAddress, mapped, 8) } == 0)
        #expect(target.withUnsafeMutableBytes { ioasid_sys_safe_copy($0.baseAddress, mapped + Self.page, 8) } == -14)
        #expect(target.withUnsafeBytes { ioasid_sys_safe_copy(mapped + Self.page, $0.baseAddress, 8) } == -14)
    }

    /// DMA into memory the program unmapped after it was handed to the device (RAM attached over
    /// the program's pages): a DMA error (`unbacked`), never a SIGSEGV in the program.
    @Test func dmaIntoUnmappedProgramMemoryIsADMAError() throws {
        let page = Self.page
        let area = mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        try #require(area != MAP_FAILED)
        defer { munmap(area, 2 * page) }
        let memory = PhysicalMemory(allocatorBase: 1 << 48, allocatorLimit: (1 << 48) + (1 << 24))
        let base = UInt64(UInt(bitPattern: area))
        _ = try memory.attachRAM(at: base, external: UnsafeMutableRawBufferPointer(start: area, count: 2 * page))
        var bytes = [UInt8](repeating: 7, count: 64)
        try bytes.withUnsafeBytes { try memory.write($0, at: base + UInt64(page) - 32) }
        #expect(area.load(fromByteOffset: page - 32, as: UInt8.self) == 7)
        munmap(area + page, page)
        #expect(throws: PhysicalMemoryError.self) { try bytes.withUnsafeBytes { try memory.write($0, at: base + UInt64(page)) } }
        #expect(throws: PhysicalMemoryError.self) { try bytes.withUnsafeMutableBytes { try memory.read($0, at: base + UInt64(page) + 8) } }
        #expect(throws: PhysicalMemoryError.self) { try bytes.withUnsafeMutableBytes { try memory.read($0, at: base + UInt64(page) - 16) } }
        try bytes.withUnsafeMutableBytes { try memory.read($0, at: base) }
    }

    /// On a thread that blocks SIGSEGV a fault would kill the process: the copy declines
    /// (EAGAIN), and the callers' entry point still answers EFAULT, with a system call.
    @Test func threadBlockingFaultsIsDeclined() throws {
        let result = UnsafeMutablePointer<(Int, Int, Int)>.allocate(capacity: 1)
        defer { result.deallocate() }
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { argument in
            let out = argument!.assumingMemoryBound(to: (Int, Int, Int).self)
            var blocked = sigset_t()
            sigemptyset(&blocked)
            sigaddset(&blocked, SIGSEGV)
            // Nothing tracks this call in-process: the copy learns the mask on first use.
            pthread_sigmask(SIG_BLOCK, &blocked, nil)
            var byte: UInt8 = 0
            let good = withUnsafeMutablePointer(to: &byte) { p in
                withUnsafePointer(to: UInt8(7)) { ioasid_sys_safe_copy(p, $0, 1) }
            }
            let bad = withUnsafeMutablePointer(to: &byte) { ioasid_sys_safe_copy($0, UnsafeRawPointer(bitPattern: 16), 1) }
            let fallback = withUnsafeMutablePointer(to: &byte) { ioasid_sys_copy_in($0, 16, 1) }
            out.pointee = (good, bad, fallback)
            return nil
        }, result)
        try #require(created == 0)
        pthread_join(thread, nil)
        #expect(result.pointee.0 == -11, "declined even for good memory: the thread's mask is learnt first")
        #expect(result.pointee.1 == -11)
        #expect(result.pointee.2 == -14)
    }
}
