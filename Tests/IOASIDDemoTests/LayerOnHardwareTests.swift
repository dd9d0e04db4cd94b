// The IOASID layer on the modelled hardware (both PASID models, mediated and vDPA devices, the free path):
// mediated and vDPA devices, both PASID models side by side, and freed PASIDs, each checked by
// real DMA through the VT-d and SMMUv3 models into real memory.
import IOASIDProcessMemory
import IOASIDCore
@testable import IOASIDDemo
import IOASIDLinuxABI
@testable import IOASIDSets
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import IOASIDStructures
import Testing

@Suite struct MediatedDevicesOnHardwareTests {
    /// Three mediated devices on one parent function: two in one context (different IOAS), one in
    /// another. Each DMA (parent RID + the mediated device's PASID) reaches only its own address
    /// space; the parent's RID and PASIDs no mediated device has reach nothing; an unbound
    /// mediated device's DMA is blocked and reported; its PASID, freed and handed to a new
    /// mediated device, carries no stale translation.
    @Test(arguments: IOMMUKind.allCases)
    func eachMediatedDeviceReachesOnlyItsOwnAddressSpace(_ kind: IOMMUKind) throws {
        try pinsUserMemory {
            let hw = try Hardware(kind)
            let allocator = try PASIDAllocator()
            let vendor = try allocator.allocSet(owner: .none, quota: .limited(3))
            let rid = RequesterID(bus: 3, device: 0, function: 0)
            let parentFunction = try hw.function(rid, ats: true)
            let parent = try MediatedParent(function: parentFunction.model, allocator: allocator, set: vendor)
            let a = try parent.createDevice(), b = try parent.createDevice(), c = try parent.createDevice()
            #expect(Set([a.pasid, b.pasid, c.pasid]).count == 3)
            #expect(errnoOf { try parent.createDevice() } == ENOSPC, "the vendor set's quota is 3")

            let vm1 = Context(memory: ProcessMemory.shared), vm2 = Context(memory: ProcessMemory.shared)
            defer { vm1.close(); vm2.close() }
            let buffers = (0..<3).map { _ in DemoBuffer(pages: 1) }
            let iova: UInt64 = 0x10_0000
            func space(_ context: Context, _ buffer: DemoBuffer) throws -> IOAS.ID {
                let ioas = try context.allocateIOAS()
                _ = try context.map(ioas, source: .user(address: buffer.address), length: 4096, iova: iova, access: .readWrite)
                return ioas
            }
            let ioasA = try space(vm1, buffers[0]), ioasB = try space(vm1, buffers[1]), ioasC = try space(vm2, buffers[2])
            let idA = try vm1.bind(a), idB = try vm1.bind(b), idC = try vm2.bind(c)
            _ = try vm1.attach(idA, to: ioasA.object)
            _ = try vm1.attach(idB, to: ioasB.object)
            _ = try vm2.attach(idC, to: ioasC.object)

            let f = parentFunction.function
            for (i, m) in [a, b, c].enumerated() { #expect(dmaWrite(f, pasid: m.pasid, iova + 8, [UInt8(0xA0 + i)])) }
            #expect(buffers.map { $0[8] } == [0xA0, 0xA1, 0xA2], "each mediated device's DMA lands in its own space only")
            // The parent's own RID and a PASID no mediated device has reach nothing.
            #expect(!dmaWrite(f, pasid: nil, iova + 16, [0xEE]))
            #expect(!dmaWrite(f, pasid: 40, iova + 16, [0xEE]))
            #expect(buffers.allSatisfy { $0[16] == 0 })

            // Unbinding b detaches its PASID: its DMA is blocked and reported.
            _ = hw.takeBlockedRecords(rid, pasid: b.pasid)
            try vm1.unbind(idB)
            #expect(!b.isAttached)
            #expect(!dmaWrite(f, pasid: b.pasid, iova + 24, [0xBB]))
            #expect(buffers[1][24] == 0)
            if kind == .vtd { #expect(!hw.takeBlockedRecords(rid, pasid: b.pasid).isEmpty, "a fault record for the blocked PASID") }
            #expect(dmaWrite(f, pasid: a.pasid, iova + 24, [0xAA]) && buffers[0][24] == 0xAA, "a is unaffected")

            // b's PASID goes back to the vendor set and to a new mediated device in vm2.
            try parent.removeDevice(b)
            let d = try parent.createDevice()
            #expect(d.pasid == b.pasid, "the lowest free PASID")
            let idD = try vm2.bind(d)
            _ = try vm2.attach(idD, to: ioasC.object)
            #expect(dmaWrite(f, pasid: d.pasid, iova + 32, [0xDD]))
            #expect(buffers[2][32] == 0xDD && buffers[1][32] == 0, "no stale translation of the PASID's old address space")
            withExtendedLifetime((idA, idC, buffers)) {}
        }
    }

    /// A context enrolled in a VM's set cannot attach its device at a mediated device's PASID:
    /// that PASID belongs to the vendor set.
    @Test func aVMCannotTakeAMediatedDevicesPASID() throws {
        try pinsUserMemory {
            let hw = try Hardware(.vtd)
            let allocator = try PASIDAllocator()
            let layer = IOASIDLayer(allocator: allocator)
            let vendor = try allocator.allocSet(owner: .none, quota: .limited(1))
            let vmSet = try allocator.allocSet(owner: .vm(id: 1), quota: .limited(1))
            let parentFunction = try hw.function(RequesterID(bus: 3, device: 0, function: 0))
            let mdev = try MediatedParent(function: parentFunction.model, allocator: allocator, set: vendor).createDevice()
            let vm = Context(memory: ProcessMemory.shared)
            defer { vm.close() }
            try layer.enroll(vm, in: vmSet)
            let vf = try hw.function(RequesterID(bus: 4, device: 0, function: 0))
            let id = try vm.bind(vf.model)
            let buffer = DemoBuffer(pages: 1)
            let ioas = try vm.allocateIOAS()
            _ = try vm.map(ioas, source: .user(address: buffer.address), length: 4096, iova: 0x10_0000, access: .readWrite)
            let hwpt = try vm.allocateHWPT(device: id, parent: ioas.object, flags: [.pasid], data: nil)
            #expect(errnoOf { try vm.attach(id, pasid: mdev.pasid, to: hwpt.object) } == EPERM)
            #expect(!dmaWrite(vf.function, pasid: mdev.pasid, 0x10_0000, [1]) && buffer[0] == 0)
        }
    }
}

@Suite struct VDPAOnHardwareTests {
    /// Data virtqueues 0 and 1 in group 0, the control virtqueue 2 in group 1, each group on a
    /// PASID of the VM's set attached to its own IOAS (the same IOVA in both): every virtqueue's
    /// DMA lands in its group's memory only. While running, neither the group's address space
    /// nor its PASID can change (`EBUSY`); after a reset they can, and the control queue's DMA
    /// then follows the new address space at once. Freeing a group's PASID blocks its DMA.
    @Test(arguments: IOMMUKind.allCases)
    func eachGroupsDMALandsInItsOwnAddressSpace(_ kind: IOMMUKind) throws {
        try pinsUserMemory {
            let hw = try Hardware(kind)
            let allocator = try PASIDAllocator()
            let layer = IOASIDLayer(allocator: allocator)
            let set = try allocator.allocSet(owner: .vm(id: 7), quota: .limited(3))
            let context = Context(memory: ProcessMemory.shared)
            defer { context.close() }
            try layer.enroll(context, in: set)
            let function = try hw.function(RequesterID(bus: 5, device: 0, function: 0), ats: true)
            let vdpa = try VDPADevice(function: function.model, groupCount: 2, virtqueueGroups: [0, 0, 1])
            let id = try context.bind(vdpa)
            let guest = DemoBuffer(pages: 1), shadow = DemoBuffer(pages: 1)
            let iova: UInt64 = 0x20_0000
            var hwpts: [HWPT.ID] = []
            for buffer in [guest, shadow] {
                let ioas = try context.allocateIOAS()
                _ = try context.map(ioas, source: .user(address: buffer.address), length: 4096, iova: iova, access: .readWrite)
                hwpts.append(try context.allocateHWPT(device: id, parent: ioas.object, flags: [.pasid], data: nil))
            }
            let dataPASID = try layer.allocPASID(for: context), controlPASID = try layer.allocPASID(for: context)
            let unused = try layer.allocPASID(for: context)
            try vdpa.assign(pasid: dataPASID, to: 0)
            try vdpa.assign(pasid: controlPASID, to: 1)
            _ = try context.attach(id, pasid: dataPASID, to: hwpts[0].object)
            _ = try context.attach(id, pasid: controlPASID, to: hwpts[1].object)
            vdpa.start()

            let f = function.function
            for vq in 0..<3 { #expect(dmaWrite(f, pasid: vdpa.pasid(ofVirtqueue: vq), iova + UInt64(vq) * 8, [UInt8(vq + 1)])) }
            #expect([guest[0], guest[8], guest[16]] == [1, 2, 0], "data virtqueues land in the guest's space")
            #expect([shadow[0], shadow[8], shadow[16]] == [0, 0, 3], "the control virtqueue lands in the shadow space")
            #expect(!dmaWrite(f, pasid: unused, iova + 24, [9]), "a PASID of the set that no group uses reaches nothing")
            #expect(guest[24] == 0 && shadow[24] == 0)

            // Running: no change of a group's address space or PASID.
            #expect(errnoOf { try context.replace(id, pasid: controlPASID, with: hwpts[0].object) } == EBUSY)
            #expect(errnoOf { try vdpa.assign(pasid: unused, to: 1) } == EBUSY)
            #expect(dmaWrite(f, pasid: vdpa.pasid(ofVirtqueue: 2), iova + 32, [4]) && shadow[32] == 4 && guest[32] == 0)

            // After a reset the control group moves to the guest's space; its DMA follows at once.
            vdpa.reset()
            _ = try context.replace(id, pasid: controlPASID, with: hwpts[0].object)
            #expect(dmaWrite(f, pasid: vdpa.pasid(ofVirtqueue: 2), iova + 40, [5]))
            #expect(guest[40] == 5 && shadow[40] == 0, "no stale translation of the shadow space")

            // Freeing the control group's PASID detaches it: the control virtqueue's DMA is blocked.
            #expect(try layer.freePASID(controlPASID, for: context) == 1)
            #expect(!dmaWrite(f, pasid: vdpa.pasid(ofVirtqueue: 2), iova + 48, [6]))
            #expect(guest[48] == 0 && shadow[48] == 0)
            #expect(dmaWrite(f, pasid: vdpa.pasid(ofVirtqueue: 0), iova + 48, [7]) && guest[48] == 7, "the data group is unaffected")
        }
    }
}

@Suite struct PASIDModelsSideBySideTests {
    /// One host allocator, two VMs. vm A (VT-d, host-allocated model): two guest PASIDs become host
    /// PASIDs through its set's private IDs; each guest table is attached at its host PASID; DMA
    /// with a host PASID goes through its guest table, DMA tagged with the guest's own PASID value
    /// reaches nothing. vm B (SMMUv3, guest-owned model): its guest CD table uses SubstreamIDs equal
    /// to vm A's host PASIDs without any conflict, and its set stays empty.
    @Test func hostAllocatedAndGuestOwnedPASIDsCoexist() throws {
        try pinsUserMemory {
            let allocator = try PASIDAllocator()
            let layer = IOASIDLayer(allocator: allocator)
            let setA = try allocator.allocSet(owner: .vm(id: 1), quota: .limited(4))
            let setB = try allocator.allocSet(owner: .vm(id: 2), quota: .limited(4))
            let vmA = Context(memory: ProcessMemory.shared), vmB = Context(memory: ProcessMemory.shared)
            defer { vmA.close(); vmB.close() }
            try layer.enroll(vmA, in: setA)
            try layer.enroll(vmB, in: setB)

            // vm A on VT-d.
            let vtd = try Hardware(.vtd)
            let ramA = GuestRAM(gpa: 0x8000_0000)
            let ioasA = try vmA.allocateIOAS()
            _ = try vmA.map(ioasA, source: .user(address: ramA.buffer.address), length: ramA.length, iova: ramA.gpa, access: .readWrite)
            let vf = try vtd.function(RequesterID(bus: 1, device: 0, function: 1), ats: true)
            let vfID = try vmA.bind(vf.model)
            let parentA = try vmA.allocateHWPT(device: vfID, parent: ioasA.object, flags: [.nestParent, .pasid], data: nil)
            var hostPASIDs: [UInt32: UInt32] = [:]
            var keep: [AnyObject] = []
            for (guestPASID, page) in [(UInt32(5), 4), (UInt32(9), 5)] {
                let host = try layer.allocPASID(for: vmA, guestPASID: guestPASID)
                hostPASIDs[guestPASID] = host
                #expect(try allocator.hostPASID(forPrivateID: guestPASID, in: setA) == host)
                #expect(try allocator.privateID(forHostPASID: host, in: setA) == guestPASID)
                let table = try ramA.x86Table()
                try table.map(iova: 0x4000_0000, physical: ramA.page(page), size: 4096, permissions: [.write, .user])
                let data = UserValue([VTdStage1Data(pageTableAddress: table.root, addressWidth: 48)])
                keep += [table, data]
                let nested = try vmA.allocateHWPT(device: vfID, parent: parentA.object, flags: [.pasid],
                                                  data: DriverData(type: VTdUAPI.hwptDataVTdS1, address: data.address, length: 24))
                _ = try vmA.attach(vfID, pasid: host, to: nested.object)
            }
            ramA.publishTables()
            #expect(hostPASIDs[5] != 5 && hostPASIDs[9] != 9, "host and guest PASID spaces differ")
            #expect(dmaWrite(vf.function, pasid: hostPASIDs[5], 0x4000_0010, [0x55]))
            #expect(dmaWrite(vf.function, pasid: hostPASIDs[9], 0x4000_0010, [0x99]))
            #expect(ramA.bytes(atGPA: ramA.page(4) + 0x10, count: 1) == [0x55] && ramA.bytes(atGPA: ramA.page(5) + 0x10, count: 1) == [0x99])
            #expect(!dmaWrite(vf.function, pasid: 5, 0x4000_0018, [0xEE]), "the guest PASID value itself is not attached on the host")
            #expect(try allocator.setInfo(setA).count == 2)

            // vm B on SMMUv3: CDs at SubstreamIDs equal to vm A's host PASIDs, in the guest's memory.
            let smmu = try Hardware(.smmuv3)
            let ramB = GuestRAM(gpa: 0x8000_0000)
            let ioasB = try vmB.allocateIOAS()
            _ = try vmB.map(ioasB, source: .user(address: ramB.buffer.address), length: ramB.length, iova: ramB.gpa, access: .readWrite)
            let dev = try smmu.function(RequesterID(bus: 0, device: 4, function: 0))
            let devID = try vmB.bind(dev.model)
            let parentB = try vmB.allocateHWPT(device: devID, parent: ioasB.object, flags: [.nestParent], data: nil)
            let viommu = try vmB.allocateVIOMMU(device: devID, parent: parentB, type: SMMUv3UAPI.viommuType, data: nil)
            _ = try vmB.allocateVDevice(viommu: viommu, device: devID, virtualID: 0x42)
            let cdTable = ramB.page(16)
            let ssids = hostPASIDs.values.sorted()
            for (i, ssid) in ssids.enumerated() {
                let t = try ramB.armTable()
                try t.map(iova: 0x1000_0000, physical: ramB.page(2 + i), size: 4096, permissions: [.write, .user],
                          attributes: ArmStage1Attributes(notGlobal: true))
                keep.append(t)
                var cd = SMMUv3ContextDescriptor()
                cd.t0SZ = 16; cd.ir0 = 1; cd.or0 = 1; cd.sh0 = 3; cd.epd1 = true; cd.valid = true
                cd.ips = 5; cd.aa64 = true; cd.record = true; cd.abort = true; cd.aset = true; cd.asid = UInt16(0x30 + i); cd.ttb0 = t.root
                for w in 0..<8 { ramB.write64(atGPA: cdTable + UInt64(ssid) * 64 + UInt64(w * 8), cd.words[w]) }
            }
            ramB.publishTables()
            let ste = UserValue([SMMUv3HWPTData(1 | (5 << 1) | cdTable | (4 << 59), 2)])
            let nestedB = try vmB.allocateHWPT(device: devID, parent: viommu.object, flags: [],
                                               data: DriverData(type: SMMUv3UAPI.hwptDataType, address: ste.address, length: 16))
            _ = try vmB.attach(devID, to: nestedB.object)
            let entry = try #require(streamTableEntry(smmu.smmu!.smmu, memory: smmu.smmu!.memory, streamID: UInt32(0x0020)))
            #expect(entry.config == .nested && entry.s1ContextPtr == cdTable, "the STE points at the guest's CD table (a GPA)")
            for (i, ssid) in ssids.enumerated() {
                #expect(dmaWrite(dev.function, pasid: ssid, 0x1000_0020, [UInt8(0xB0 + i)]))
                #expect(ramB.bytes(atGPA: ramB.page(2 + i) + 0x20, count: 1) == [UInt8(0xB0 + i)])
            }
            #expect(try allocator.setInfo(setB).count == 0, "the guest-owned model allocates no host PASID")
            #expect(try vmB.attachedPASIDs(devID).isEmpty, "nothing is attached per PASID on the host")
            // vm A's DMA was not disturbed by vm B's use of the same numbers.
            #expect(dmaWrite(vf.function, pasid: hostPASIDs[5], 0x4000_0020, [0x56]))
            #expect(ramA.bytes(atGPA: ramA.page(4) + 0x20, count: 1) == [0x56] && ramB.bytes(atGPA: ramB.page(4) + 0x20, count: 1) == [0])
            withExtendedLifetime((keep, ste)) {}
        }
    }
}

@Suite struct FreedPASIDOnHardwareTests {
    /// A PASID freed while attached (and while someone else still holds a reference) is detached
    /// at once: its DMA is blocked and reported, it cannot be attached again while free-pending,
    /// and the notifications come in order. Once released, the same number attached elsewhere
    /// carries no stale translation.
    @Test(arguments: IOMMUKind.allCases)
    func aFreedPASIDsDMAIsBlocked(_ kind: IOMMUKind) throws {
        try pinsUserMemory {
            let hw = try Hardware(kind)
            let allocator = try PASIDAllocator()
            let layer = IOASIDLayer(allocator: allocator)
            let set = try allocator.allocSet(owner: .vm(id: 3), quota: .limited(2))
            let events = Locked<[String]>([])
            try allocator.registerNotifier(set: set) { n in events.withLock { $0.append("\(n.event)") } }
            let context = Context(memory: ProcessMemory.shared)
            defer { context.close() }
            try layer.enroll(context, in: set)
            let rid = RequesterID(bus: 6, device: 0, function: 0)
            let function = try hw.function(rid, ats: true)
            let id = try context.bind(function.model)
            let first = DemoBuffer(pages: 1), second = DemoBuffer(pages: 1)
            var hwpts: [HWPT.ID] = []
            for buffer in [first, second] {
                let ioas = try context.allocateIOAS()
                _ = try context.map(ioas, source: .user(address: buffer.address), length: 4096, iova: 0x30_0000, access: .readWrite)
                hwpts.append(try context.allocateHWPT(device: id, parent: ioas.object, flags: [.pasid], data: nil))
            }
            let pasid = try layer.allocPASID(for: context)
            _ = try context.attach(id, pasid: pasid, to: hwpts[0].object)
            let f = function.function
            #expect(dmaWrite(f, pasid: pasid, 0x30_0000, [1]) && first[0] == 1)

            // Someone else holds a reference: the free leaves the PASID free-pending, but detaches it now.
            _ = try allocator.get(pasid, in: set)
            _ = hw.takeBlockedRecords(rid, pasid: pasid)
            #expect(try layer.freePASID(pasid, for: context) == 1)
            #expect(try allocator.entry(pasid, in: set).state == .freePending)
            #expect(try context.attachedPASIDs(id).isEmpty)
            #expect(!dmaWrite(f, pasid: pasid, 0x30_0008, [2]) && first[8] == 0, "DMA with the freed PASID is blocked")
            if kind == .vtd {
                #expect(!hw.takeBlockedRecords(rid, pasid: pasid).isEmpty, "and reported as a fault record")
            }
            #expect(errnoOf { try context.attach(id, pasid: pasid, to: hwpts[1].object) } == EBUSY, "free-pending: no new users")
            #expect(events.withLock { $0 } == ["alloc", "bind", "unbind"])
            #expect(try allocator.put(pasid, in: set), "the last reference releases it")
            #expect(events.withLock { $0 } == ["alloc", "bind", "unbind", "free"])
            #expect(errnoOf { try context.attach(id, pasid: pasid, to: hwpts[1].object) } == ENOENT, "released: not allocated")

            // The same number, allocated again, attached to the second address space.
            #expect(try layer.allocPASID(for: context) == pasid)
            _ = try context.attach(id, pasid: pasid, to: hwpts[1].object)
            #expect(dmaWrite(f, pasid: pasid, 0x30_0010, [3]))
            #expect(second[16] == 3 && first[16] == 0, "no stale translation from the freed PASID's old space")
        }
    }
}
