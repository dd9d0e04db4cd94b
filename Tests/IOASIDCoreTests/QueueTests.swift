import IOASIDCore
import IOASIDTestDriver
import Synchronization
import Testing

/// Readiness callbacks, recorded.
final class Readiness: Sendable {
    let log = Mutex<[Bool]>([])
    var callback: @Sendable (Bool) -> Void { { [self] r in log.withLock { $0.append(r) } } }
    var last: Bool? { log.withLock { $0.last } }
}

@Suite("Fault queue protocol")
struct FaultQueueTests {
    /// A fixture whose device RID is attached to a fault-capable HWPT.
    func faultFixture() throws -> (Fixture, FaultQueue, Readiness, HWPT.ID) {
        let f = try Fixture()
        let r = Readiness()
        let q = try f.context.allocateFaultQueue(readinessChanged: r.callback)
        let hwpt = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.faultIDValid], data: nil,
                                              faultQueue: q.objectID)
        _ = try f.driver.mockDomainReplace(f.handle, with: hwpt.object)
        return (f, q, r, hwpt)
    }

    @Test func groupsAreDeliveredWholeWithOneCookieEach() throws {
        try PinLock.shared {
            let (f, q, ready, _) = try faultFixture()
            defer { f.context.close() }
            let dev = f.device
            try f.context.reportPageFault(device: dev, pasid: nil, group: 7, permissions: 1, address: 0x1000, last: false)
            #expect(!q.isReadable, "an unfinished group is not delivered")
            try f.context.reportPageFault(device: dev, pasid: nil, group: 7, permissions: 1, address: 0x2000, last: true)
            try f.context.reportPageFault(device: dev, pasid: nil, group: 8, permissions: 2, address: 0x3000, last: true)
            #expect(q.isReadable)
            #expect(ready.last == true)
            expectErrno(22, "a two-fault group does not fit in one record") { try f.context.readFaults(q, maxRecords: 1) }
            let records = try f.context.readFaults(q, maxRecords: 16)
            #expect(records.map(\.groupID) == [7, 7, 8])
            #expect(records.map(\.address) == [0x1000, 0x2000, 0x3000])
            #expect(records[0].cookie == records[1].cookie)
            #expect(records[2].cookie != records[0].cookie)
            #expect(records.map { $0.flags & PageFaultRecord.lastPage } == [0, PageFaultRecord.lastPage, PageFaultRecord.lastPage])
            #expect(records.allSatisfy { $0.deviceID == dev.rawValue && $0.flags & PageFaultRecord.pasidValid == 0 })
            #expect(!q.isReadable)
            #expect(ready.last == false)
            #expect(try f.context.readFaults(q, maxRecords: 16).isEmpty)

            try f.context.respond(q, cookie: records[0].cookie, code: 0)
            let mock = f.mock()
            #expect(mock.responses.count == 1)
            #expect(mock.responses.last?.group == 7 && mock.responses.last?.code == 0 && mock.responses.last?.pasid == nil)
            expectErrno(22, "answered already") { try f.context.respond(q, cookie: records[0].cookie, code: 0) }
            expectErrno(22, "unknown cookie") { try f.context.respond(q, cookie: 0xdead, code: 0) }
            expectErrno(22, "unknown code") { try f.context.respond(q, cookie: records[2].cookie, code: 2) }
            try f.context.respond(q, cookie: records[2].cookie, code: 1)
            #expect(mock.responses.last?.group == 8 && mock.responses.last?.code == 1)
        }
    }

    @Test func detachAutoRespondsToReadAndUnreadGroups() throws {
        try PinLock.shared {
            let (f, q, _, _) = try faultFixture()
            defer { f.context.close() }
            try f.context.reportPageFault(device: f.device, pasid: nil, group: 9, permissions: 1, address: 0x1000, last: true)
            let read = try f.context.readFaults(q, maxRecords: 4)
            #expect(read.count == 1)
            try f.context.reportPageFault(device: f.device, pasid: nil, group: 10, permissions: 1, address: 0x2000, last: true)
            let mock = f.mock()
            #expect(mock.responses.isEmpty)
            try f.context.detach(f.device)
            let answered = mock.responses.map { ($0.group, $0.code) }
            #expect(answered.count == 2)
            #expect(Set(answered.map(\.0)) == [9, 10])
            #expect(answered.allSatisfy { $0.1 == 1 }, "auto responses are IOMMUFD_PAGE_RESP_INVALID")
            #expect(!q.isReadable)
            expectErrno(22, "the group was answered by detach") { try f.context.respond(q, cookie: read[0].cookie, code: 0) }
        }
    }

    @Test func faultsWithoutAFaultDomainAreEINVALAndQueueInUseIsEBUSY() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            expectErrno(22) { try f.context.reportPageFault(device: f.device, pasid: nil, group: 1, permissions: 1, address: 0, last: true) }
            let q = try f.context.allocateFaultQueue()
            let hwpt = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.faultIDValid], data: nil, faultQueue: q.objectID)
            expectErrno(16, "a HWPT uses the queue") { try f.context.destroy(q.objectID) }
            expectErrno(2, "fault_id names no queue") {
                try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.faultIDValid], data: nil, faultQueue: f.ioas.object)
            }
            try f.context.destroy(hwpt.object)
            try f.context.destroy(q.objectID)
        }
    }
}

/// The layout of `struct iommu_hwpt_selftest` (iotlb, pagetable type).
struct HWPTSelftest { var iotlb: UInt32 = 0; var pagetableType: UInt32 = 0 }

@Suite("vEVENT queue")
struct VEventQueueTests {
    @Test func depthLimitsEventsAndALostEventsHeaderStandsIn() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            let parent = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.nestParent], data: nil)
            let viommu = try f.context.allocateVIOMMU(device: f.device, parent: parent, type: Mock.viommuType, data: nil)
            let vid: UInt64 = 0x99
            _ = try f.context.allocateVDevice(viommu: viommu, device: f.device, virtualID: vid)
            var cfg = HWPTSelftest(iotlb: Mock.iotlbDefault)
            let nested = try withUnsafeMutableBytes(of: &cfg) { b in
                try f.context.allocateHWPT(device: f.device, parent: viommu.object, flags: [],
                                           data: DriverData(type: Mock.hwptDataType, address: UInt64(UInt(bitPattern: b.baseAddress!)), length: 8))
            }
            _ = try f.driver.mockDomainReplace(f.handle, with: nested.object)
            expectErrno(22, "zero depth") { try f.context.allocateVEventQueue(viommu: viommu, type: Mock.veventqType, depth: 0) }
            let q = try f.context.allocateVEventQueue(viommu: viommu, type: Mock.veventqType, depth: 2)
            expectErrno(17, "one queue per type") { try f.context.allocateVEventQueue(viommu: viommu, type: Mock.veventqType, depth: 2) }

            for _ in 0..<4 { try f.driver.triggerVEvent(device: f.device) }
            let data = withUnsafeBytes(of: UInt32(vid).littleEndian) { Array($0) }
            expectErrno(22, "smaller than a header") { try f.context.readVEvents(q, capacity: 4) }
            let events = try f.context.readVEvents(q, capacity: 4096)
            #expect(events.count == 3)
            #expect(events.map(\.flags) == [0, 0, 1], "two events, then the lost-events header")
            #expect(events[0].data == data && events[1].data == data && events[2].data.isEmpty)
            #expect(events.map(\.sequence) == [0, 1, 3], "the header carries the newest lost sequence")
            #expect(!q.isReadable)
            // The queue has room again; sequences continue.
            try f.driver.triggerVEvent(device: f.device)
            let next = try f.context.readVEvents(q, capacity: 4096)
            #expect(next.map(\.sequence) == [4])
            #expect(next.map(\.flags) == [0])
            // A partial read: only the first event fits.
            try f.driver.triggerVEvent(device: f.device)
            try f.driver.triggerVEvent(device: f.device)
            #expect(try f.context.readVEvents(q, capacity: 8 + 4 + 7).count == 1)
            #expect(try f.context.readVEvents(q, capacity: 4096).count == 1)
            expectErrno(16, "the queue holds the vIOMMU") { try f.context.destroy(viommu.object) }
        }
    }
}

/// An access owner that never lets go of its pins.
final class StubbornOwner: AccessOwner, @unchecked Sendable {
    var notifications: [(UInt64, UInt64)] = []
    func unmapRequested(_ access: Access, iova: UInt64, length: UInt64, state: ContextState) {
        notifications.append((iova, length))
    }
}

@Suite("Access pin, unpin and unmap notification")
struct AccessTests {
    @Test func pinUnpinAndReadWriteThroughTheIOAS() throws {
        try PinLock.shared {
            let (c, d) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let buf = UserBuffer(pages: 8)
            let iova = try c.map(ioas, source: .user(address: buf.address), length: 4 * 4096, iova: 1 << 30, access: .readWrite)
            let owner = try d.createAccess(ioas, flags: 1)
            #expect(pinCount(buf.address(page: 1)) == 0)
            let item = try d.accessPages(owner, iova: iova + 4096, length: 2 * 4096, address: buf.address(page: 1), flags: 1)
            #expect(pinCount(buf.address(page: 0)) == 0)
            #expect(pinCount(buf.address(page: 1)) == 1)
            #expect(pinCount(buf.address(page: 2)) == 1)
            try d.checkRefs(address: buf.address(page: 1), length: 2 * 4096, refs: 1)
            try d.destroyAccessPages(owner, item: item)
            #expect(pinCount(buf.address(page: 1)) == 0)
            expectErrno(2, "no such item") { try d.destroyAccessPages(owner, item: item) }
            expectErrno(2, "not mapped") { try d.accessPages(owner, iova: 1 << 20, length: 4096, address: 0, flags: 0) }
            expectErrno(75, "IOVA + length overflows") { try d.accessPages(owner, iova: .max - 100, length: 4096, address: 0, flags: 0) }

            // Write through the IOAS into the user pages, and read back.
            let src = UserBuffer(pages: 1)
            src.base.storeBytes(of: 0x1122_3344_5566_7788 as UInt64, as: UInt64.self)
            try d.accessRW(owner, iova: iova + 2 * 4096 + 8, length: 8, address: src.address, flags: 1)
            #expect(buf.base.load(fromByteOffset: 2 * 4096 + 8, as: UInt64.self) == 0x1122_3344_5566_7788)
            let dst = UserBuffer(pages: 1)
            try d.accessRW(owner, iova: iova + 2 * 4096 + 8, length: 8, address: dst.address, flags: 0)
            #expect(dst.base.load(as: UInt64.self) == 0x1122_3344_5566_7788)
        }
    }

    @Test func unmapNotifiesTheAccessWhichUnpins() throws {
        try PinLock.shared {
            let (c, d) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let buf = UserBuffer(pages: 4)
            let iova = try c.map(ioas, source: .user(address: buf.address), length: 4 * 4096, iova: 1 << 30, access: .readWrite)
            let owner = try d.createAccess(ioas, flags: 1)
            let item = try d.accessPages(owner, iova: iova, length: 4096, address: 0, flags: 0)
            #expect(pinCount(buf.address) == 1)
            #expect(try c.unmap(ioas, iova: iova, length: 4 * 4096) == 4 * 4096)
            #expect(pinCount(buf.address) == 0)
            expectErrno(2, "the unmap removed the item") { try d.destroyAccessPages(owner, item: item) }
        }
    }

    @Test func anAccessThatKeepsItsPinsMakesUnmapEDEADLOCK() throws {
        try PinLock.shared {
            let (c, _) = makeContext()
            defer { c.close() }
            let ioas = try c.allocateIOAS()
            let buf = UserBuffer(pages: 2)
            let iova = try c.map(ioas, source: .user(address: buf.address), length: 2 * 4096, iova: 1 << 30, access: .read)
            let owner = StubbornOwner()
            let access = try c.createAccess(owner: owner, ioas: ioas, pinsPages: true)
            _ = try c.pinPages(access, iova: iova, length: 4096, write: false)
            expectErrno(35) { try c.unmap(ioas, iova: iova, length: 2 * 4096) }
            #expect(owner.notifications.count > 1, "the owner was asked repeatedly")
            #expect(owner.notifications.allSatisfy { $0 == (iova, 2 * 4096) })
            #expect(try c.areas(ioas).count == 1)
            expectErrno(16, "the access holds the IOAS") { try c.destroy(ioas.object) }
            c.destroyAccess(access)
            #expect(pinCount(buf.address) == 0, "destroying the access drops its pins")
            #expect(try c.unmapAll(ioas) == 2 * 4096)
        }
    }
}
