// The IOASID layer's authorization: a PASID reaches a device only through the set that owns it.
import IOASIDProcessMemory
import IOASIDCore
import IOASIDLinuxABI
@testable import IOASIDSets
import IOASIDTestDriver
import Testing

/// A context with a PASID-capable mock device whose RID holds a PASID-compatible HWPT, plus a
/// second PASID-compatible HWPT to attach PASIDs to. Nothing is mapped (no pinning needed).
struct PASIDFixture {
    let context: Context
    let driver: TestDriver
    let handle: ObjectID
    let device: Device.ID
    let hwpt: HWPT.ID

    init() throws {
        context = Context(memory: ProcessMemory.shared)
        driver = TestDriver(context: context)
        let ioas = try context.allocateIOAS()
        let (h, _, d) = try driver.mockDomain(ioas.object, flags: Mock.devicePASID)
        handle = h
        device = d
        hwpt = try context.allocateHWPT(device: d, parent: ioas.object, flags: [.pasid], data: nil)
        _ = try driver.mockDomainReplace(h, with: hwpt.object)
    }

    func attach(_ pasid: PASID) throws { _ = try driver.pasidAttach(handle, pasid: pasid, to: hwpt.object) }
    /// The HWPT the mock device has at `pasid` (0: none) — what the hardware would use.
    func hardwareHWPT(_ pasid: PASID) -> Bool { (try? driver.pasidCheck(handle, pasid: pasid, hwpt: hwpt.object)) != nil }
}

@Suite struct AuthorizationTests {
    @Test func enrolledContextAttachesOnlyItsSetsPASIDs() throws {
        let allocator = try PASIDAllocator()
        let layer = IOASIDLayer(allocator: allocator)
        let vmA = try allocator.allocSet(owner: .vm(id: 1), quota: .limited(8))
        let vmB = try allocator.allocSet(owner: .vm(id: 2), quota: .limited(8))
        let a = try PASIDFixture(), b = try PASIDFixture()
        defer { a.context.close(); b.context.close() }
        try layer.enroll(a.context, in: vmA)
        try layer.enroll(b.context, in: vmB)
        #expect(layer.set(of: a.context) == vmA)

        let mine = try layer.allocPASID(for: a.context)
        let theirs = try layer.allocPASID(for: b.context)
        #expect(errnoOf { try a.attach(theirs) } == EPERM, "another VM's PASID")
        #expect(errnoOf { try a.attach(200) } == ENOENT, "a PASID nobody allocated")
        #expect(!a.hardwareHWPT(theirs) && !a.hardwareHWPT(200), "refused attachments never reach the device")
        try a.attach(mine)
        #expect(a.hardwareHWPT(mine))
        #expect(try allocator.entry(mine, in: vmA).users == 1, "the attachment holds a reference")
        #expect(errnoOf { try layer.freePASID(theirs, for: a.context) } == EPERM)

        // Detaching drops the reference.
        try a.driver.pasidDetach(a.handle, pasid: mine)
        #expect(try allocator.entry(mine, in: vmA).users == 0)
    }

    @Test func freeingAPASIDDetachesItEverywhereWithNotifications() throws {
        let allocator = try PASIDAllocator()
        let layer = IOASIDLayer(allocator: allocator)
        let vm = try allocator.allocSet(owner: .vm(id: 7), quota: .limited(4))
        let log = NoteLog()
        _ = try allocator.registerNotifier(set: vm, log.handler("vm"))
        // Two contexts act for the same VM (e.g. two /dev/iommu opens of one VMM).
        let one = try PASIDFixture(), two = try PASIDFixture()
        defer { one.context.close(); two.context.close() }
        try layer.enroll(one.context, in: vm)
        try layer.enroll(two.context, in: vm)
        let pasid = try layer.allocPASID(for: one.context, guestPASID: 5)
        #expect(try allocator.hostPASID(forPrivateID: 5, in: vm) == pasid)
        try one.attach(pasid)
        try two.attach(pasid)
        #expect(try allocator.entry(pasid, in: vm).users == 2)

        #expect(try layer.freePASID(pasid, for: two.context) == 2)
        #expect(!one.hardwareHWPT(pasid) && !two.hardwareHWPT(pasid), "no device translates the freed PASID")
        #expect(try one.context.attachedPASIDs(one.device).isEmpty)
        #expect(errnoOf { try allocator.entry(pasid, in: vm) } == ENOENT, "released after the last detach")
        // alloc, two binds, two unbinds, and free last.
        let events = log.all
        #expect(events.first == "vm:alloc:\(pasid)")
        #expect(events.last == "vm:free:\(pasid)")
        #expect(events.filter { $0.hasPrefix("vm:bind") }.count == 2)
        #expect(events.filter { $0.hasPrefix("vm:unbind") }.count == 2)
        #expect(errnoOf { try one.attach(pasid) } == ENOENT)
    }

    @Test func aFreePendingPASIDCannotBeAttached() throws {
        let allocator = try PASIDAllocator()
        let layer = IOASIDLayer(allocator: allocator)
        let vm = try allocator.allocSet(owner: .process(pid: 42), quota: .unlimited)
        let f = try PASIDFixture()
        defer { f.context.close() }
        try layer.enroll(f.context, in: vm)
        let pasid = try layer.allocPASID(for: f.context)
        _ = try allocator.get(pasid, in: vm)  // another user (e.g. an SVA bind) keeps it
        try f.attach(pasid)
        #expect(try layer.freePASID(pasid, for: f.context) == 1)
        #expect(try allocator.entry(pasid, in: vm).state == .freePending)
        #expect(errnoOf { try f.attach(pasid) } == EBUSY, "free-pending: no new users")
        #expect(try allocator.put(pasid, in: vm), "the last put releases it")
    }

    @Test func enrollmentRulesAndKernelBehaviourWithoutIt() throws {
        let allocator = try PASIDAllocator()
        let layer = IOASIDLayer(allocator: allocator)
        let vm = try allocator.allocSet(owner: .vm(id: 3), quota: .limited(1))
        let f = try PASIDFixture()
        defer { f.context.close() }
        // Not enrolled: the kernel's rules, any PASID in the device's width.
        try f.attach(77)
        #expect(errnoOf { try layer.enroll(f.context, in: vm) } == EBUSY, "unauthorized PASIDs are attached")
        try f.driver.pasidDetach(f.handle, pasid: 77)
        #expect(errnoOf { try layer.enroll(f.context, in: IOASIDSetID(rawValue: 999)) } == ENOENT)
        try layer.enroll(f.context, in: vm)
        #expect(errnoOf { try layer.enroll(f.context, in: vm) } == EEXIST)
        #expect(errnoOf { try f.attach(77) } == ENOENT)

        let pasid = try layer.allocPASID(for: f.context)
        #expect(errnoOf { try layer.allocPASID(for: f.context) } == ENOSPC, "quota 1 used up")
        try f.attach(pasid)
        // Withdrawing ends the context's attachments and restores the kernel's rules.
        try layer.withdraw(f.context)
        #expect(!f.hardwareHWPT(pasid))
        #expect(try allocator.entry(pasid, in: vm).users == 0)
        #expect(errnoOf { try layer.allocPASID(for: f.context) } == ENOENT, "not enrolled any more")
        try f.attach(77)
    }

    @Test func closingAContextDropsItsReferences() throws {
        let allocator = try PASIDAllocator()
        let layer = IOASIDLayer(allocator: allocator)
        let vm = try allocator.allocSet(owner: .vm(id: 9), quota: .limited(2))
        let f = try PASIDFixture()
        try layer.enroll(f.context, in: vm)
        let p1 = try layer.allocPASID(for: f.context), p2 = try layer.allocPASID(for: f.context)
        try f.attach(p1)
        try f.attach(p2)
        f.context.close()
        #expect(try allocator.entry(p1, in: vm).users == 0 && allocator.entry(p2, in: vm).users == 0)
        #expect(try layer.freeAll(for: f.context) == 2)
        #expect(try allocator.setInfo(vm).count == 0)
    }
}
