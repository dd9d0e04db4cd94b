import IOASIDCore
import IOASIDStructures
import IOASIDTestDriver
import Testing

@Suite("Context snapshot: a plain picture of objects, IOVA space and pins")
struct SnapshotTests {
    @Test func snapshotShowsObjectsConnectionsAreasAndPins() throws {
        try PinLock.shared {
            let f = try Fixture(deviceFlags: 1 << 2)  // MOCK_FLAGS_DEVICE_PASID
            defer { f.context.close() }
            // A PASID attachment needs a PASID-compatible HWPT at the RID too.
            let ridHWPT = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.pasid], data: nil)
            let pasidHWPT = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.pasid], data: nil)
            _ = try f.driver.mockDomainReplace(f.handle, with: ridHWPT.object)
            _ = try f.driver.pasidAttach(f.handle, pasid: 7, to: pasidHWPT.object)
            try f.context.allowIOVAs(f.ioas, [IOVARange(start: 1 << 24, last: (1 << 25) - 1)])

            let s = f.context.snapshot()
            #expect(s.ioas.map(\.id) == [f.ioas.rawValue])
            let ioas = try #require(s.ioas.first)
            #expect(ioas.areas == [ContextSnapshot.Area(iova: IOVARange(start: f.iova, last: f.iova + 4 * 4096 - 1),
                                                        userAddress: f.buffer.address, readable: true, writable: true, fromFile: false)])
            #expect(ioas.allowed == [IOVARange(start: 1 << 24, last: (1 << 25) - 1)])
            // The mock domain's aperture leaves reserved spans; usable is their complement.
            #expect(!ioas.reserved.isEmpty)
            #expect(ioas.reserved.allSatisfy { $0.owner == .domain })
            for r in ioas.reserved { #expect(!ioas.usable.contains { $0.overlaps(r.range) }) }

            let device = try #require(s.devices.first { $0.id == f.device.rawValue })
            #expect(device.attachments == [.init(pasid: nil, hwpt: ridHWPT.rawValue), .init(pasid: 7, hwpt: pasidHWPT.rawValue)])
            #expect(!s.hwpts.contains { $0.id == f.hwpt.rawValue }, "the automatic domain left with the replace")
            #expect(s.hwpts.map(\.id) == [ridHWPT.rawValue, pasidHWPT.rawValue])
            for h in s.hwpts { #expect(h.kind == .paging(ioas: f.ioas.rawValue) && h.pasidCompatible && !h.isAutoDomain) }
            // The test driver's handle is a driver object.
            #expect(s.others.map(\.id) == [f.handle.rawValue])
            // Four pages pinned once (two domains map them), charged to the user once.
            #expect(s.pinnedPages == 4)
            #expect(s.accountingMode == .perUser)
            #expect(s.chargedPages[.perUser] == 4)
            #expect(s.objectCount == f.context.objects.count)
        }
    }

    @Test func snapshotIsAValueThatOutlivesTheContext() throws {
        try PinLock.shared {
            let f = try Fixture()
            let before = f.context.snapshot()
            f.context.close()
            let after = f.context.snapshot()
            #expect(before.ioas.first?.areas.count == 1, "the earlier picture is unchanged by the close")
            #expect(after.objectCount == 0 && after.pinnedPages == 0)
            #expect(before.weight > after.weight)
        }
    }
}
