// I/O page faults of a mediated device: the parent function's page request for the mediated
// device's PASID reaches the fault queue of the context the mediated device is bound to, as that
// device's own request (no PASID), and the answer travels back to the parent at that PASID.
import IOASIDProcessMemory
import IOASIDCore
import IOASIDLinuxABI
@testable import IOASIDSets
@testable import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Testing

@Suite struct MediatedFaultTests {
    @Test(arguments: ["vtd", "smmuv3"])
    func aMediatedDevicesPageRequestReachesItsOwnersFaultQueue(iommu: String) throws {
        try pinsShared {
            let caps = PCIFunction.Capabilities(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 16)
            let rid = RequesterID(bus: 2, device: 0, function: 0)
            let owner = Context(memory: ProcessMemory.shared)
            defer { owner.close() }
            let parentFunction: any DMADevice
            let service: () -> Void
            if iommu == "vtd" {
                let driver = try VTdDriver(memory: VTdDriver.processMemory(), delivery: .manual)
                parentFunction = try driver.addDevice(requesterID: rid, capabilities: caps)
                service = { driver.servicePageRequests() }
            } else {
                let driver = SMMUv3Driver()
                parentFunction = driver.addDevice(requesterID: rid, capabilities: caps)
                service = { driver.processInterrupts() }
            }
            let allocator = try PASIDAllocator()
            let vendor = try allocator.allocSet(owner: .none, quota: .limited(4))
            let parent = try MediatedParent(function: parentFunction, allocator: allocator, set: vendor)
            let mdev = try parent.createDevice()

            // The owner binds the mediated device (not the parent) and gives it a fault-capable HWPT.
            let device = try owner.bind(mdev)
            let buffer = VTdUserBuffer(pages: 2)
            let ioas = try owner.allocateIOAS()
            let queue = try owner.allocateFaultQueue()
            let hwpt = try owner.allocateHWPT(device: device, parent: ioas.object, flags: [.faultIDValid], data: nil,
                                              faultQueue: queue.objectID)
            _ = try owner.attach(device, to: hwpt.object)

            // The mediated device's DMA is the parent's RID plus the mediated PASID; nothing is mapped.
            let pasid = IOASIDSoftIOMMU.PASID(mdev.pasid)
            guard case .waitingForPageResponse(let pending) = parentFunction.function.write(pasid: pasid, address: 0x5_0010, bytes: [7, 8]) else {
                Issue.record("expected a page request"); return
            }
            service()
            let faults = try owner.readFaults(queue, maxRecords: 4)
            let f = try #require(faults.first)
            #expect(faults.count == 1)
            #expect(f.deviceID == device.rawValue, "reported as the mediated device's request")
            #expect(f.flags & PageFaultRecord.pasidValid == 0, "without a PASID: the mediated device has none of its own")
            #expect(f.address == 0x5_0000)

            // The owner maps the page and answers; the parent receives the response at the mediated PASID and retries.
            _ = try owner.map(ioas, source: .user(address: buffer.address), length: 0x1000, iova: 0x5_0000, access: .readWrite)
            try owner.respond(queue, cookie: f.cookie, code: 0)
            #expect(parentFunction.function.isAnswered(pending))
            guard case .completed = parentFunction.function.resume(pending) else { Issue.record("the retry did not complete"); return }
            #expect(buffer[0x10] == 7 && buffer[0x11] == 8)

            // Unbound: the parent's PASID entry is gone, so DMA with that PASID is blocked outright
            // (an unrecoverable fault, no page request) and nothing reaches the owner's queue.
            try owner.unbind(device)
            let blocked = parentFunction.function.write(pasid: pasid, address: 0x5_0010, bytes: [1])
            guard case .failed(let why) = blocked else { Issue.record("DMA with the unbound PASID must be blocked: \(blocked)"); return }
            switch why {
            case .fault, .translationRequestFailed: break  // untranslated request refused, or the ATS request (with ATS)
            default: Issue.record("blocked for the wrong reason: \(why)")
            }
            #expect(buffer[0x10] == 7, "nothing written")
            service()
            #expect(try owner.readFaults(queue, maxRecords: 4).isEmpty)
        }
    }
}
