import CIOASIDSys
import IOASIDCore

/// The program unmaps memory an IOAS still maps.
///
/// On the kernel the pages stay pinned: the device goes on reaching the old pages, and a new
/// mapping the program makes later, even at the same address, is never touched by the device.
/// ioasid cannot keep pages the program gave back, so it keeps the *address range* instead:
/// the part of an `munmap` that user memory behind a live IOAS area covers is replaced by an
/// inaccessible reservation (`PROT_NONE`, no memory behind it) rather than freed. The kernel
/// then places no new mapping there, and a DMA through the old translation faults in the safe
/// copy and ends as a DMA error the device model reports — never a write into the program's
/// new memory, never a crash. The rest of the range is unmapped normally; the call answers 0.
///
/// The reservation stays for the life of the process (it costs address space, not memory):
/// releasing it when the IOAS lets go could unmap a mapping the program has since placed there
/// with `MAP_FIXED`. Not seen: `munmap` made as a raw system call, `mremap`, `MAP_FIXED` over
/// the range, `madvise(MADV_DONTNEED)` (docs/architecture.md, "User memory").
enum PinnedUnmap {
    /// Unmaps `[address, address + length)` for the program, keeping the parts an IOAS maps as
    /// reservations. Returns false (nothing done) when no part is mapped by an IOAS: the caller
    /// then unmaps as usual.
    static func unmap(_ address: UInt, length: Int) -> Bool {
        guard length > 0 else { return false }
        let page: UInt = 4096
        let start = UInt64(address & ~(page - 1))
        let end = UInt64((address &+ UInt(length) &+ page - 1) & ~(page - 1))
        guard end > start else { return false }
        let kept = PinRegistry.shared.userSpans(overlapping: start, end)
        if kept.isEmpty { return false }
        var at = start
        for span in kept {
            if span.start > at { _ = ioasid_sys_munmap(pointer(at), Int(span.start - at)) }
            reserve(span.start, span.end)
            at = span.end
        }
        if end > at { _ = ioasid_sys_munmap(pointer(at), Int(end - at)) }
        return true
    }

    private static func reserve(_ start: UInt64, _ end: UInt64) {
        let prot: Int32 = 0 // PROT_NONE
        let flags: Int32 = 0x02 | 0x20 | 0x10 | 0x4000 // MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE
        _ = ioasid_sys_mmap(pointer(start), Int(end - start), prot, flags, -1, 0)
    }

    private static func pointer(_ address: UInt64) -> UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(bitPattern: UInt(address))
    }
}
