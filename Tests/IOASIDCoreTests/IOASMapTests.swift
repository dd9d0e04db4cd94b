import Glibc
import IOASIDCore
import IOASIDStructures
import IOASIDTestDriver
import Testing

@Suite("IOAS map and unmap")
struct IOASMapTests {
    @Test func autoIOVAIsAlignedFreeAndRecorded() throws {
        try PinLock.shared {
            let (c, _) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let buf = UserBuffer(pages: 8)
            let a = try c.map(ioas, source: .user(address: buf.address), length: 4 * 4096, iova: nil, access: .readWrite)
            let b = try c.map(ioas, source: .user(address: buf.address(page: 4)), length: 4 * 4096, iova: nil, access: .read)
            #expect(a % 4096 == 0 && b % 4096 == 0)
            #expect(a != b)
            let areas = try c.areas(ioas)
            #expect(areas.count == 2)
            #expect(Set(areas.map(\.range.start)) == [a, b])
            for e in areas { #expect(e.range.length == 4 * 4096) }
            // No domain and no access: nothing is pinned yet (the kernel pins lazily).
            #expect(pinCount(buf.address) == 0)
        }
    }

    @Test func fixedIOVAIsHonouredAndOverlapIsEEXIST() throws {
        try PinLock.shared {
            let (c, _) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let buf = UserBuffer(pages: 8)
            let iova: UInt64 = 0x4000_0000
            #expect(try c.map(ioas, source: .user(address: buf.address), length: 4 * 4096, iova: iova, access: .readWrite) == iova)
            expectErrno(17) { try c.map(ioas, source: .user(address: buf.address), length: 4096, iova: iova, access: .read) }
            expectErrno(17, "overlaps the last page") {
                try c.map(ioas, source: .user(address: buf.address), length: 2 * 4096, iova: iova + 3 * 4096, access: .read)
            }
            // Adjacent is fine.
            #expect(try c.map(ioas, source: .user(address: buf.address), length: 4096, iova: iova + 4 * 4096, access: .read) == iova + 4 * 4096)
            #expect(try c.areas(ioas).count == 2)
        }
    }

    @Test func domainAlignmentMakesUnalignedMapsEINVALAndPinsOnMap() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            // The mock domain's page is 2 KiB: lengths and IOVA must be multiples of it.
            expectErrno(22) { try f.context.map(f.ioas, source: .user(address: f.buffer.address(page: 8)), length: 100, iova: nil, access: .read) }
            expectErrno(22) {
                try f.context.map(f.ioas, source: .user(address: f.buffer.address(page: 8)), length: 4096, iova: (1 << 25) + 512, access: .read)
            }
            // Below the aperture is reserved by the domain.
            expectErrno(22) { try f.context.map(f.ioas, source: .user(address: f.buffer.address(page: 8)), length: 4096, iova: 0, access: .read) }
            // With a domain, map pins: the fixture's four pages are pinned once each.
            for p in 0..<4 { #expect(pinCount(f.buffer.address(page: p)) == 1) }
            #expect(pinCount(f.buffer.address(page: 4)) == 0)
            // Unmapped user memory faults when pinned.
            expectErrno(14) { try f.context.map(f.ioas, source: .user(address: 0x1000), length: 4096, iova: 1 << 26, access: .read) }
            #expect(try f.context.areas(f.ioas).count == 1, "a failed map leaves no area behind")
            try f.driver.checkMap(f.hwpt, iova: f.iova, length: 4 * 4096, address: f.buffer.address)
        }
    }

    @Test func unmapWholeAreasReturnsBytes() throws {
        try PinLock.shared {
            let (c, _) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let buf = UserBuffer(pages: 8)
            let base: UInt64 = 1 << 30
            for i in 0..<4 {
                _ = try c.map(ioas, source: .user(address: buf.address(page: i)), length: 4096, iova: base + UInt64(i) * 4096, access: .read)
            }
            // A span covering areas 1 and 2 exactly.
            #expect(try c.unmap(ioas, iova: base + 4096, length: 2 * 4096) == 2 * 4096)
            #expect(try c.areas(ioas).map(\.range.start) == [base, base + 3 * 4096])
            // A span larger than what is mapped unmaps what lies wholly inside.
            #expect(try c.unmap(ioas, iova: 0, length: base + 4096) == 4096)
            expectErrno(2, "nothing mapped there") { try c.unmap(ioas, iova: base, length: 4096) }
            expectErrno(22, "zero length") { try c.unmap(ioas, iova: base, length: 0) }
            expectErrno(75, "overflow") { try c.unmap(ioas, iova: .max - 10, length: 4096) }
        }
    }

    /// IOAS.swift: "an area that sticks out stops the walk with ENOENT after the ones before it
    /// are gone" (the kernel's iopt_unmap_iova_range removes areas as it walks).
    @Test func unmapThatWouldSplitIsENOENTAndEarlierAreasAreGone() throws {
        try PinLock.shared {
            let (c, _) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let buf = UserBuffer(pages: 8)
            let base: UInt64 = 1 << 30
            _ = try c.map(ioas, source: .user(address: buf.address), length: 4096, iova: base, access: .read)
            _ = try c.map(ioas, source: .user(address: buf.address), length: 4 * 4096, iova: base + 4096, access: .read)
            // Starts inside the second area: ENOENT, nothing removed.
            expectErrno(2) { try c.unmap(ioas, iova: base + 2 * 4096, length: 4096) }
            #expect(try c.areas(ioas).count == 2)
            // Covers the first area and half of the second: ENOENT, the first is gone.
            expectErrno(2) { try c.unmap(ioas, iova: base, length: 3 * 4096) }
            #expect(try c.areas(ioas).map(\.range.start) == [base + 4096])
        }
    }

    @Test func unmapAllEmptiesAndUnpins() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            _ = try f.context.map(f.ioas, source: .user(address: f.buffer.address(page: 8)), length: 2 * 4096, iova: nil, access: .read)
            #expect(pinCount(f.buffer.address(page: 8)) == 1)
            #expect(try f.context.unmapAll(f.ioas) == 6 * 4096)
            #expect(try f.context.areas(f.ioas).isEmpty)
            #expect(try f.context.unmapAll(f.ioas) == 0, "unmap-all of nothing is fine")
            for p in [0, 3, 8, 9] { #expect(pinCount(f.buffer.address(page: p)) == 0) }
            #expect(f.context.chargedPages(.perUser) == 0)
        }
    }

    @Test func copySharesPinnedPages() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            let dst = try f.context.allocateIOAS()
            let h2 = try f.driver.mockDomain(dst.object)
            let at = try f.context.copy(from: f.ioas, sourceIOVA: f.iova + 4096, to: dst, destinationIOVA: nil, length: 2 * 4096, access: .read)
            // Pages 1 and 2 are shared: still one `Pages` pins them.
            for p in 0..<4 { #expect(pinCount(f.buffer.address(page: p)) == 1, "page \(p)") }
            try f.driver.checkMap(h2.hwpt, iova: at, length: 2 * 4096, address: f.buffer.address(page: 1))
            try f.driver.checkRefs(address: f.buffer.address(page: 1), length: 2 * 4096, refs: 1)
            // Unmapping the source keeps the copy's pages pinned.
            _ = try f.context.unmapAll(f.ioas)
            #expect(pinCount(f.buffer.address(page: 0)) == 0)
            #expect(pinCount(f.buffer.address(page: 1)) == 1)
            #expect(pinCount(f.buffer.address(page: 2)) == 1)
            #expect(pinCount(f.buffer.address(page: 3)) == 0)
            _ = try f.context.unmapAll(dst)
            #expect(pinCount(f.buffer.address(page: 1)) == 0)
            // Copy of a span that is not mapped.
            expectErrno(2) { try f.context.copy(from: f.ioas, sourceIOVA: f.iova, to: dst, destinationIOVA: nil, length: 4096, access: .read) }
        }
    }

    /// One `Pages` pinned in several extents (areas cut apart, a span copied to a second IOAS):
    /// each page is pinned and charged once while any extent holds it, whichever goes first.
    @Test func cutAndCopiedAreasPinAndChargeEachPageOnce() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            let mode = f.context.accountingMode
            func charged() -> UInt64 { f.context.chargedPages(mode) }
            func pins() -> [Int] { (0..<4).map { pinCount(f.buffer.address(page: $0)) } }
            #expect(charged() == 4)
            // Three areas over the one `Pages`: page 0, pages 1-2, page 3.
            try f.context.cutAreas(f.ioas, after: [f.iova + 4095, f.iova + 3 * 4096 - 1])
            #expect(try f.context.areas(f.ioas).count == 3)
            #expect(charged() == 4)
            #expect(pins() == [1, 1, 1, 1])
            // Pages 1-2 in a second IOAS too: the same extent pinned twice.
            let dst = try f.context.allocateIOAS()
            _ = try f.driver.mockDomain(dst.object)
            _ = try f.context.copy(from: f.ioas, sourceIOVA: f.iova + 4096, to: dst, destinationIOVA: nil, length: 2 * 4096, access: .read)
            #expect(charged() == 4)
            _ = try f.context.unmap(f.ioas, iova: f.iova + 4096, length: 2 * 4096)
            #expect(charged() == 4, "the copy still pins pages 1-2")
            #expect(pins() == [1, 1, 1, 1])
            _ = try f.context.unmap(f.ioas, iova: f.iova, length: 4096)
            #expect(charged() == 3)
            #expect(pins() == [0, 1, 1, 1])
            _ = try f.context.unmapAll(dst)
            #expect(charged() == 1)
            #expect(pins() == [0, 0, 0, 1])
            _ = try f.context.unmapAll(f.ioas)
            #expect(charged() == 0)
            #expect(pins() == [0, 0, 0, 0])
        }
    }

    /// A file span larger than any address space (2^63 bytes) or starting past every file: the
    /// kernel maps files lazily and accepts both; only what needs the pages meets the file's end.
    @Test func fileSpansNoAddressSpaceHoldsAreAcceptedUntilTheirPagesAreNeeded() throws {
        try PinLock.shared {
            let (c, _) = makeContext()
            defer { c.close() }
            var template = Array("/tmp/ioasid-file-span-XXXXXX".utf8CString)
            let fd = mkstemp(&template)
            try #require(fd >= 0)
            unlink(template)
            defer { close(fd) }
            #expect(ftruncate(fd, 3 * 4096) == 0)  // file pages 0, 1, 2
            var bytes: [UInt8] = Array(repeating: 0x5A, count: 4096)
            #expect(pwrite(fd, &bytes, 4096, 2 * 4096) == 4096)
            let ioas = try c.allocateIOAS()
            let huge: UInt64 = 1 << 63
            let iova = try c.map(ioas, source: .file(fd: fd, offset: 2 * 4096), length: huge, iova: 1 << 24, access: .readWrite)
            #expect(iova == 1 << 24)
            _ = try c.map(ioas, source: .file(fd: fd, offset: 1 << 62), length: 4096, iova: 1 << 20, access: .read)
            #expect(try c.areas(ioas).count == 2)
            // An access: the page the file holds reads and pins; the next one is past its end.
            let access = try c.createAccess(owner: IgnoringAccessOwner(), ioas: ioas, pinsPages: true)
            var page = [UInt8](repeating: 0, count: 4096)
            try page.withUnsafeMutableBytes { b in try c.accessRW(access, iova: iova, buffer: b, write: false) }
            #expect(page.allSatisfy { $0 == 0x5A })
            expectErrno(EFAULT, "a read past the end of the file") {
                try page.withUnsafeMutableBytes { b in try c.accessRW(access, iova: iova + 4096, buffer: b, write: false) }
            }
            let pinned = try c.pinPages(access, iova: iova, length: 4096, write: false)
            #expect(pinned.count == 1)
            expectErrno(EINVAL, "a pin past the end of the file") { try c.pinPages(access, iova: iova + 4096, length: 4096, write: false) }
            expectErrno(EINVAL, "a pin of a span starting past the end") { try c.pinPages(access, iova: 1 << 20, length: 4096, write: false) }
            c.unpinPages(access, iova: iova, length: 4096)
            #expect(try c.unmap(ioas, iova: iova, length: huge) == huge)
        }
    }

    @Test func filesWithoutPagesAreAcceptedAndTheirPinsRefused() throws {
        try PinLock.shared {
            let (c, _) = makeContext()
            defer { c.close() }
            var ends: [Int32] = [0, 0]
            try #require(pipe(&ends) == 0)
            defer { close(ends[0]); close(ends[1]) }
            let ioas = try c.allocateIOAS()
            // As the kernel: any open file is recorded; only pinning needs its pages.
            let iova = try c.map(ioas, source: .file(fd: ends[0], offset: 0), length: 2 * 4096, iova: 1 << 24, access: .read)
            #expect(try c.areas(ioas).count == 1)
            let access = try c.createAccess(owner: IgnoringAccessOwner(), ioas: ioas, pinsPages: true)
            expectErrno(EINVAL, "a pin of a pipe's page") { try c.pinPages(access, iova: iova, length: 4096, write: false) }
            expectErrno(EBADF, "a descriptor that is not open") {
                _ = try c.map(ioas, source: .file(fd: 1 << 20, offset: 0), length: 4096, iova: 1 << 26, access: .read)
            }
            #expect(try c.unmap(ioas, iova: iova, length: 2 * 4096) == 2 * 4096)
        }
    }

    @Test func copyAcrossAdjacentAreasAndHoles() throws {
        try PinLock.shared {
            let (c, _) = makeContext()
            defer { c.close() }
            let a = try c.allocateIOAS(), b = try c.allocateIOAS()
            let buf = UserBuffer(pages: 8)
            let base: UInt64 = 1 << 30
            _ = try c.map(a, source: .user(address: buf.address), length: 2 * 4096, iova: base, access: .readWrite)
            _ = try c.map(a, source: .user(address: buf.address(page: 4)), length: 2 * 4096, iova: base + 2 * 4096, access: .readWrite)
            let at = try c.copy(from: a, sourceIOVA: base + 4096, to: b, destinationIOVA: 1 << 31, length: 2 * 4096, access: .readWrite)
            #expect(at == 1 << 31)
            let areas = try c.areas(b)
            #expect(areas.map(\.range) == [IOVARange(start: 1 << 31, length: 4096)!, IOVARange(start: (1 << 31) + 4096, length: 4096)!])
            // A hole in the source span.
            _ = try c.unmap(a, iova: base, length: 2 * 4096)
            _ = try c.map(a, source: .user(address: buf.address), length: 4096, iova: base, access: .read)
            expectErrno(2) { try c.copy(from: a, sourceIOVA: base, to: b, destinationIOVA: nil, length: 3 * 4096, access: .read) }
            expectErrno(17, "destination taken") { try c.copy(from: a, sourceIOVA: base, to: b, destinationIOVA: 1 << 31, length: 4096, access: .read) }
        }
    }
}

/// An access owner that ignores unmap requests (the tests unpin by hand).
private final class IgnoringAccessOwner: AccessOwner, @unchecked Sendable {
    func unmapRequested(_ access: Access, iova: UInt64, length: UInt64, state: ContextState) {}
}
