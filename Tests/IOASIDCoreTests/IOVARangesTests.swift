import IOASIDCore
import IOASIDStructures
import IOASIDTestDriver
import Testing

@Suite("IOVA ranges, allowed and reserved spans")
struct IOVARangesTests {
    @Test func emptyIOASCoversEverything() throws {
        let (c, _) = makeContext()
        defer { c.close() }
        let ioas = try c.allocateIOAS()
        let (ranges, alignment) = try c.iovaRanges(ioas)
        #expect(ranges == [IOVARange.all])
        #expect(alignment == 1)
        expectErrno(2) { try c.iovaRanges(IOAS.ID(99)) }
    }

    @Test func domainApertureAndReservedSpansShapeTheRanges() throws {
        try PinLock.shared {
            let (c, d) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            _ = try d.mockDomain(ioas.object)
            var (ranges, alignment) = try c.iovaRanges(ioas)
            #expect(ranges == [Mock.aperture])
            #expect(alignment == Mock.pageSize)
            try c.addReserved(ioas, IOVARange(start: 1 << 28, last: (1 << 29) - 1))
            (ranges, _) = try c.iovaRanges(ioas)
            #expect(ranges == [IOVARange(start: 1 << 24, last: (1 << 28) - 1), IOVARange(start: 1 << 29, last: (1 << 31) - 1)])
            // Mapping into a reserved span is EINVAL; auto IOVA avoids it.
            let buf = UserBuffer(pages: 4)
            expectErrno(22) { try c.map(ioas, source: .user(address: buf.address), length: 4096, iova: 1 << 28, access: .read) }
        }
    }

    @Test func addReservedOverAMappingIsEADDRINUSE() throws {
        try PinLock.shared {
            let (c, _) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let buf = UserBuffer(pages: 4)
            _ = try c.map(ioas, source: .user(address: buf.address), length: 4096, iova: 1 << 30, access: .read)
            expectErrno(98) { try c.addReserved(ioas, IOVARange(start: (1 << 30) + 100, last: (1 << 30) + 200)) }
            try c.allowIOVAs(ioas, [IOVARange(start: 1 << 32, last: (1 << 33) - 1)])
            expectErrno(98, "over an allowed span") { try c.addReserved(ioas, IOVARange(start: 1 << 32, last: 1 << 32)) }
            try c.addReserved(ioas, IOVARange(start: 1 << 34, last: 1 << 35))
        }
    }

    @Test func allowIOVAsRestrictsAutoIOVA() throws {
        try PinLock.shared {
            let (c, _) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let buf = UserBuffer(pages: 8)
            let window = IOVARange(start: 0x1_0000_0000, last: 0x1_0000_3fff)
            try c.allowIOVAs(ioas, [window])
            let a = try c.map(ioas, source: .user(address: buf.address), length: 2 * 4096, iova: nil, access: .read)
            #expect(window.contains(IOVARange(start: a, length: 2 * 4096)!))
            let b = try c.map(ioas, source: .user(address: buf.address(page: 2)), length: 2 * 4096, iova: nil, access: .read)
            #expect(window.contains(IOVARange(start: b, length: 2 * 4096)!))
            expectErrno(28, "window is full") { try c.map(ioas, source: .user(address: buf.address(page: 4)), length: 4096, iova: nil, access: .read) }
            // Fixed IOVA outside the allowed spans is still fine (allowed only steers auto IOVA).
            _ = try c.map(ioas, source: .user(address: buf.address(page: 4)), length: 4096, iova: 1 << 40, access: .read)
            // Empty list: no restriction again.
            try c.allowIOVAs(ioas, [])
            _ = try c.map(ioas, source: .user(address: buf.address(page: 5)), length: 4096, iova: nil, access: .read)
        }
    }

    @Test func allowIOVAsValidation() throws {
        let (c, _) = makeContext()
        defer { c.close() }
        let ioas = try c.allocateIOAS()
        expectErrno(22, "start == last") { try c.allowIOVAs(ioas, [IOVARange(start: 5, last: 5)]) }
        expectErrno(22, "overlap") { try c.allowIOVAs(ioas, [IOVARange(start: 0, last: 100), IOVARange(start: 50, last: 200)]) }
        try c.addReserved(ioas, IOVARange(start: 1000, last: 2000))
        expectErrno(98, "reserved") { try c.allowIOVAs(ioas, [IOVARange(start: 0, last: 1500)]) }
        try c.allowIOVAs(ioas, [IOVARange(start: 0, last: 999), IOVARange(start: 2001, last: 3000)])
    }
}
