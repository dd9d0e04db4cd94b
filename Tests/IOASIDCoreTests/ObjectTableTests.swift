import IOASIDCore
import IOASIDTestDriver
import Testing

@Suite("Object table")
struct ObjectTableTests {
    @Test func idsAreLowestFreeFromOne() throws {
        let (c, _) = makeContext()
        defer { c.close() }
        let ids = try (0..<5).map { _ in try c.allocateIOAS().rawValue }
        #expect(ids == [1, 2, 3, 4, 5])
        try c.destroy(ObjectID(2))
        try c.destroy(ObjectID(4))
        #expect(try c.allocateIOAS().rawValue == 2)
        #expect(try c.allocateIOAS().rawValue == 4)
        #expect(try c.allocateIOAS().rawValue == 6)
        #expect(c.objects.map(\.id.rawValue) == [1, 2, 3, 4, 5, 6])
    }

    @Test func destroyUnknownIsENOENTAndTwiceIsENOENT() throws {
        let (c, _) = makeContext()
        defer { c.close() }
        expectErrno(2) { try c.destroy(ObjectID(0)) }
        expectErrno(2) { try c.destroy(ObjectID(1)) }
        let a = try c.allocateIOAS()
        try c.destroy(a.object)
        expectErrno(2) { try c.destroy(a.object) }
        #expect(c.objects.isEmpty)
    }

    @Test func mockDomainIDsAndInUseIsEBUSY() throws {
        try PinLock.shared {
            let (c, d) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let r = try d.mockDomain(ioas.object)
            // As the kernel's selftest: the handle, then the device, then the auto domain.
            #expect(r.handle.rawValue == 2)
            #expect(r.device.rawValue == 3)
            #expect(r.hwpt.rawValue == 4)
            expectErrno(16, "IOAS has a HWPT") { try c.destroy(ioas.object) }
            expectErrno(16, "HWPT is attached") { try c.destroy(r.hwpt) }
            expectErrno(16, "device is owned by the driver") { try c.destroy(r.device.object) }
            // Destroying the handle unbinds the device; the auto domain goes with it.
            try c.destroy(r.handle)
            #expect(c.objects.map(\.id) == [ioas.object])
            try c.destroy(ioas.object)
            #expect(c.objects.isEmpty)
        }
    }

    @Test func failedMockDomainPublishesNothingAndFreesIDs() throws {
        let (c, d) = makeContext()
        defer { c.close() }
        let ioas = try c.allocateIOAS()
        expectErrno(2) { try d.mockDomain(ObjectID(77)) }
        expectErrno(22, "unknown device flags") { try d.mockDomain(ioas.object, flags: 1 << 9) }
        #expect(c.objects.map(\.id) == [ioas.object])
        #expect(try c.allocateIOAS().rawValue == 2)
    }

    @Test func closeDestroysEverything() throws {
        try PinLock.shared {
            let f = try Fixture()
            let q = try f.context.allocateFaultQueue()
            f.context.retainQueue(q, true) // an open queue file
            _ = try f.driver.createAccess(f.ioas, flags: 1)
            #expect(f.context.objects.count >= 5)
            f.context.close()
            #expect(f.context.objects.isEmpty)
            #expect(pinCount(f.buffer.address) == 0)
            #expect(f.context.chargedPages(.perUser) == 0)
        }
    }
}
