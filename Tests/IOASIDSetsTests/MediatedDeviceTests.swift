// Mediated and vDPA devices on layer-issued PASIDs, through the core's API (the hardware side
// is a recording device model here; DMA through the software IOMMU is tested with its drivers).
import IOASIDProcessMemory
import IOASIDCore
import IOASIDLinuxABI
@testable import IOASIDSets
import IOASIDStructures
import IOASIDTestDriver
import Testing

/// A PASID-capable mock function (domains come from the mock driver) that records what the
/// core programs at each PASID.
final class RecordingFunction: DeviceModel, @unchecked Sendable {
    let mock = MockDevice(flags: Mock.devicePASID)
    let domains = Locked<[PASID?: ObjectIdentifier]>([:])
    var driver: any IOMMUDriver { mock.driver }
    var maxPASIDs: UInt32 { mock.maxPASIDs }
    var refusesFaultDomains: Bool { false }
    var iommuDevice: any DeviceModel { mock }
    func attach(_ domain: any IOMMUDomain, pasid: PASID?, replacing: (any IOMMUDomain)?) throws(IOMMUError) {
        try mock.attach(domain, pasid: pasid, replacing: replacing)
        domains.withLock { $0[pasid] = ObjectIdentifier(domain) }
    }
    func detach(pasid: PASID?) { mock.detach(pasid: pasid); domains.withLock { $0[pasid] = nil } }
    func pageResponse(pasid: PASID?, group: UInt32, code: UInt32) {}
    func domain(at pasid: PASID?) -> ObjectIdentifier? { domains.withLock { $0[pasid] } }
}

@Suite struct MediatedDeviceTests {
    @Test func eachMediatedDeviceIsAPASIDOfItsParent() throws {
        let allocator = try PASIDAllocator()
        let vendorSet = try allocator.allocSet(owner: .none, quota: .limited(2))
        let function = RecordingFunction()
        let parent = try MediatedParent(function: function, allocator: allocator, set: vendorSet)
        let a = try parent.createDevice(), b = try parent.createDevice()
        #expect(a.pasid != b.pasid && a.pasid >= 1 && b.pasid >= 1)
        #expect(errnoOf { try parent.createDevice() } == ENOSPC, "the vendor set's quota is 2")

        // Two VMs bind one mediated device each through the ordinary core API.
        let vm1 = Context(memory: ProcessMemory.shared), vm2 = Context(memory: ProcessMemory.shared)
        defer { vm1.close(); vm2.close() }
        let d1 = try vm1.bind(a), d2 = try vm2.bind(b)
        let ioas1 = try vm1.allocateIOAS(), ioas2 = try vm2.allocateIOAS()
        let h1 = try vm1.attach(d1, to: ioas1.object), h2 = try vm2.attach(d2, to: ioas2.object)
        #expect(h1.rawValue != 0 && h2.rawValue != 0)
        // The parent's PASID entries carry the two address spaces; the parent's RID carries none.
        let at1 = function.domain(at: a.pasid), at2 = function.domain(at: b.pasid)
        #expect(at1 != nil && at2 != nil && at1 != at2)
        #expect(function.domain(at: nil) == nil)
        #expect(errnoOf { try vm1.attach(d1, pasid: 3, to: ioas1.object) } == EINVAL, "no PASIDs of its own")
        #expect(errnoOf { try parent.removeDevice(a) } == EBUSY)

        try vm1.unbind(d1)
        #expect(function.domain(at: a.pasid) == nil, "unbinding detaches the parent's PASID")
        try parent.removeDevice(a)
        #expect(errnoOf { try allocator.entry(a.pasid, in: vendorSet) } == ENOENT, "its PASID is free again")
        #expect(try parent.createDevice().pasid == a.pasid)
    }

    @Test func vdpaGroupsAreTaggedWithTheirPASIDsAndFrozenWhileRunning() throws {
        let allocator = try PASIDAllocator()
        let layer = IOASIDLayer(allocator: allocator)
        let vm = try allocator.allocSet(owner: .vm(id: 4), quota: .limited(4))
        let function = RecordingFunction()
        // Data virtqueues 0,1 in group 0; the control virtqueue 2 in group 1 (as virtio-net's CVQ).
        let vdpa = try VDPADevice(function: function, groupCount: 2, virtqueueGroups: [0, 0, 1])
        let context = Context(memory: ProcessMemory.shared)
        defer { context.close() }
        try layer.enroll(context, in: vm)
        let device = try context.bind(vdpa)
        let ioas = try context.allocateIOAS()
        let dataHWPT = try context.allocateHWPT(device: device, parent: ioas.object, flags: [.pasid], data: nil)
        let cvqHWPT = try context.allocateHWPT(device: device, parent: ioas.object, flags: [.pasid], data: nil)
        // The RID needs a PASID-compatible domain before PASIDs can be attached (the kernel's rule).
        _ = try context.attach(device, to: dataHWPT.object)

        let dataPASID = try layer.allocPASID(for: context), cvqPASID = try layer.allocPASID(for: context)
        try vdpa.assign(pasid: dataPASID, to: 0)
        try vdpa.assign(pasid: cvqPASID, to: 1)
        #expect(errnoOf { try vdpa.assign(pasid: dataPASID, to: 1) } == EINVAL)
        _ = try context.attach(device, pasid: dataPASID, to: dataHWPT.object)
        _ = try context.attach(device, pasid: cvqPASID, to: cvqHWPT.object)
        #expect(vdpa.pasid(ofVirtqueue: 1) == dataPASID && vdpa.pasid(ofVirtqueue: 2) == cvqPASID)
        #expect(function.domain(at: dataPASID) != function.domain(at: cvqPASID))

        vdpa.start()
        #expect(errnoOf { try context.replace(device, pasid: cvqPASID, with: dataHWPT.object) } == EBUSY)
        #expect(errnoOf { try vdpa.assign(pasid: nil, to: 1) } == EBUSY)
        vdpa.reset()
        _ = try context.replace(device, pasid: cvqPASID, with: dataHWPT.object)
        #expect(function.domain(at: dataPASID) == function.domain(at: cvqPASID))
        // A PASID the VM's set does not own cannot be attached for a group.
        #expect(errnoOf { try context.attach(device, pasid: 200, to: cvqHWPT.object) } == ENOENT)
    }
}
