// The steps of `ioasid demo`, one section per point of the design (see Demo.swift).
//
// Every call goes through the public API a VMM would use: the IOASID layer (`IOASIDLayer`,
// `PASIDAllocator`), the core (`Context`), the drivers (`VTdDriver`, `SMMUv3Driver`) and the device
// models' DMA (`PCIFunction`). Nothing is faked: each outcome is read back from guest memory, the
// IOMMUs' tables and fault records, or the allocator.

import IOASIDProcessMemory
import IOASIDCore
import IOASIDSets
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import IOASIDStructures

/// A step whose failure the rest of the scenario cannot do without.
struct StepFailed: Error, CustomStringConvertible {
    let description: String
}

/// Per IOASID set: what its PASIDs' DMA did.
struct Tally {
    var completed = 0
    var blocked = 0
    var faultsAnswered = 0
}

final class Scenario {
    let recorder: DemoRecorder
    var tallies: [String: Tally] = ["vm1": Tally(), "vm2": Tally(), "vendor": Tally()]
    /// Notifications of the sets, as listeners see them.
    let notes = Locked<[String]>([])

    // Host
    var allocator: PASIDAllocator!
    var layer: IOASIDLayer!
    var vtd: VTdDriver!
    var smmu: SMMUv3Driver!
    var vm1Set: IOASIDSetID!
    var vm2Set: IOASIDSetID!
    var vendorSet: IOASIDSetID!
    let vm1 = Context(memory: ProcessMemory.shared)
    let vm2 = Context(memory: ProcessMemory.shared)

    // vm1: Intel model
    let vm1RAM = GuestRAM(gpa: 0x8000_0000)
    var vm1IOAS: IOAS.ID!
    var vf0: VTdDevice!
    var vf0ID: Device.ID!
    var vm1Parent: HWPT.ID!
    var vm1Nested: HWPT.ID!
    var vm1Faults: FaultQueue!
    var vm1Table: PageTable<X86FirstStageFormat>!
    var vf0PASID: UInt32 = 0

    // vm2: ARM model
    let vm2RAM = GuestRAM(gpa: 0x8000_0000)
    var vm2IOAS: IOAS.ID!
    var smmu0: SMMUv3Master!
    var smmu0ID: Device.ID!

    // Mediated devices
    var mdevParentFunction: VTdDevice!
    var mdevParent: MediatedParent!
    var mdevA: MediatedDevice!
    var mdevB: MediatedDevice!
    var mdevAID: Device.ID!
    var mdevBID: Device.ID!

    // vDPA
    var vdpaFunction: SMMUv3Master!
    var vdpa: VDPADevice!
    var vdpaID: Device.ID!
    let cvqBuffer = DemoBuffer(pages: 4)

    /// Driver data the drivers may read again later (kept alive for the run).
    var keep: [AnyObject] = []

    static let guestPASID: UInt32 = 5
    /// The IOVA vm1's guest maps to its page 4 (later 5), and the one it leaves unmapped.
    static let vsvaIOVA: UInt64 = 0x4000_0000
    static let holeIOVA: UInt64 = 0x4000_2000
    /// vm2's guest IOVA (CD 0 → page 2, CD 3 → page 3) and its CD table (page 16).
    static let armIOVA: UInt64 = 0x1000_0000

    init(recorder: DemoRecorder) { self.recorder = recorder }

    // MARK: Recording

    func record(_ actor: String, _ action: String, _ outcome: String, _ ok: Bool) {
        recorder.record(actor, action, outcome, expected: ok)
    }

    /// Runs a step the scenario depends on: records its outcome, or the error and stops.
    @discardableResult
    func step<T>(_ actor: String, _ action: String, _ body: () throws -> (T, String, Bool)) throws -> T {
        do {
            let (value, outcome, ok) = try body()
            record(actor, action, outcome, ok)
            return value
        } catch {
            record(actor, action, "failed: \(describe(error))", false)
            throw StepFailed(description: "\(actor): \(action)")
        }
    }

    /// A step whose outcome is all there is.
    func step(_ actor: String, _ action: String, _ body: () throws -> (String, Bool)) throws {
        try step(actor, action) { () throws -> ((), String, Bool) in
            let (o, ok) = try body()
            return ((), o, ok)
        }
    }

    /// A step the design says must be refused with `errno`.
    /// `then` adds what is read back afterwards.
    func refusal(_ actor: String, _ action: String, errno: Int32, then: () -> String = { "" }, _ body: () throws -> Void) {
        do {
            try body()
            record(actor, action, "succeeded, but \(errnoName(errno)) was expected", false)
        } catch {
            let got = (error as? IOMMUError)?.errno
            record(actor, action, "refused: \(describe(error))" + then(), got == errno)
        }
    }

    func tally(_ row: String, _ change: (inout Tally) -> Void) { change(&tallies[row, default: Tally()]) }

    /// A DMA write by `function` that must land: `check` reads back where it went.
    func dmaLands(_ actor: String, _ row: String, _ action: String, _ function: PCIFunction, pasid: UInt32?,
                  _ iova: UInt64, _ bytes: [UInt8], check: () -> (String, Bool)) {
        switch function.write(pasid: pasid.map { IOASIDSoftIOMMU.PASID($0) }, address: iova, bytes: bytes) {
        case .completed:
            let (where_, ok) = check()
            if ok { tally(row) { $0.completed += 1 } }
            record(actor, action, where_, ok)
        case .waitingForPageResponse:
            record(actor, action, "waits for a page response (not expected here)", false)
        case .failed(let e):
            tally(row) { $0.blocked += 1 }
            record(actor, action, "did not complete: \(describe(e))", false)
        }
    }

    /// A DMA write by a function behind the VT-d unit that must be blocked and recorded as a fault.
    func dmaBlockedOnVTd(_ actor: String, _ row: String, _ action: String, _ function: PCIFunction, pasid: UInt32?,
                         _ iova: UInt64, unchanged: () -> Bool) {
        _ = vtd.unit.takeFaults()
        let result = function.write(pasid: pasid.map { IOASIDSoftIOMMU.PASID($0) }, address: iova, bytes: Array("XXXX".utf8))
        let faults = vtd.unit.takeFaults().filter { $0.sourceID == function.requesterID.rawValue }
        guard case .failed(let e) = result else {
            record(actor, action, "was not blocked", false)
            return
        }
        tally(row) { $0.blocked += 1 }
        // PASID entry (or, for a PASID no entry was ever made near, directory entry) not present.
        let notAttached: Set<VTdFaultReasonCode> = [.pasidEntryNotPresent, .pasidDirectoryEntryNotPresent]
        let recorded = faults.first { $0.reason.map(notAttached.contains) == true && $0.pasid == pasid }
        let text = "blocked: \(describe(e)); " + (recorded.map(describe) ?? "no fault record: \(faults.map(describe))")
        record(actor, action, text + (unchanged() ? "" : "; memory CHANGED"), recorded != nil && unchanged())
    }

    // MARK: The scenario

    func play() throws {
        try host()
        try intelVM()
        try armVM()
        try mediatedDevices()
        try vdpaDevice()
        try unauthorized()
        try pageFault()
        try invalidation()
        try quotaAndFree()
    }

    /// The allocator, the IOMMUs, the sets and the enrollments.
    func host() throws {
        allocator = try step("host", "create the host PASID allocator (20-bit PASIDs)") {
            let a = try PASIDAllocator(pasidWidth: 20)
            return (a, "capacity \(a.systemCapacity) PASIDs (PASID 0 is reserved)", a.systemCapacity == (1 << 20) - 1)
        }
        layer = IOASIDLayer(allocator: allocator)
        vtd = try step("host", "bring up the VT-d unit (scalable mode) and its driver") {
            let d = try VTdDriver(memory: VTdDriver.processMemory(), configuration: VTdConfiguration(), delivery: .manual)
            let e = d.unit.extendedCapability
            let ok = e.scalableMode && e.nestedTranslation && e.pasid && e.pageRequests
            return (d, "ECAP: scalable mode, nested, \(e.pasidSizeSupported)-bit PASIDs, PRI, device TLB", ok)
        }
        smmu = try step("host", "bring up the SMMUv3 and its driver") {
            let d = SMMUv3Driver()
            let f = d.features
            return (d, "stage 1 + stage 2 (nesting), \(f.substreamIDBits)-bit SubstreamIDs, 2-level CD tables",
                    f.stage1 && f.stage2 && f.substreamIDBits == 20)
        }
        vm1Set = try makeSet("vm1", owner: .vm(id: 1), quota: 2)
        vm2Set = try makeSet("vm2", owner: .vm(id: 2), quota: 2)
        vendorSet = try makeSet("vendor", owner: .none, quota: 2)
        try step("host", "enroll vm1's context in its set, vm2's in its set") {
            try layer.enroll(vm1, in: vm1Set)
            try layer.enroll(vm2, in: vm2Set)
            let ok = layer.set(of: vm1) == vm1Set && layer.set(of: vm2) == vm2Set
            return ("vm1 acts for \(vm1Set!), vm2 for \(vm2Set!): each may attach only its own set's PASIDs", ok)
        }
    }

    func makeSet(_ who: String, owner: IOASIDSetOwner, quota: UInt32) throws -> IOASIDSetID {
        let ownerText = switch owner { case .vm(let id): "VM \(id)"; case .process(let pid): "process \(pid)"; case .none: "no owner" }
        return try step("host", "IOASID set for \(who == "vendor" ? "the mdev vendor driver" : who) (\(ownerText), quota \(quota))") {
            let set = try allocator.allocSet(owner: owner, quota: .limited(quota))
            let info = try allocator.setInfo(set)
            try allocator.registerNotifier(set: set) { [notes] n in
                notes.withLock { $0.append("\(n.event)") }
            }
            return (set, "\(set): quota \(info.quota == .limited(quota) ? String(quota) : "?"), \(info.count) PASIDs",
                    info.count == 0 && info.quota == .limited(quota))
        }
    }

    /// vm1: a function behind the VT-d unit, nested (vSVA) at a host PASID from vm1's set.
    func intelVM() throws {
        vm1IOAS = try step("vm1", "map 256 KiB of guest RAM at GPA 0x80000000 into an IOAS") {
            let ioas = try vm1.allocateIOAS()
            _ = try vm1.map(ioas, source: .user(address: vm1RAM.buffer.address), length: vm1RAM.length, iova: vm1RAM.gpa, access: .readWrite)
            let areas = try vm1.areas(ioas)
            let r = areas.first?.range
            return (ioas, "IOAS \(ioas.rawValue): IOVA [\(hex(r?.start ?? 0)), \(hex(r?.last ?? 0))] → vm1's RAM",
                    areas.count == 1 && r?.start == vm1RAM.gpa && r?.last == vm1RAM.gpa + vm1RAM.length - 1)
        }
        (vf0, vf0ID) = try step("vm1", "bind vf0 (01:00.1 behind VT-d: PASID, ATS, PRI)") {
            let d = try vtd.addDevice(requesterID: RequesterID(bus: 1, device: 0, function: 1),
                                      capabilities: .init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 32))
            let id = try d.bind(to: vm1)
            let info = try vm1.hardwareInfo(id)
            return ((d, id), "device \(id.rawValue): \(info.maxPASIDLog2)-bit PASIDs, ATS \(d.usesDeviceTLB ? "on" : "off"), PRI \(d.usesPageRequests ? "on" : "off")",
                    info.maxPASIDLog2 == 20 && d.usesPageRequests)
        }
        vm1Parent = try step("vm1", "nesting parent HWPT over the IOAS (stage 2: GPA → host)") {
            let h = try vm1.allocateHWPT(device: vf0ID, parent: vm1IOAS.object, flags: [.nestParent, .pasid], data: nil)
            return (h, "HWPT \(h.rawValue) (nest parent)", true)
        }
        vf0PASID = try step("vm1", "guest's vIOMMU wants PASID \(Self.guestPASID): host PASID from vm1's set") {
            let host = try layer.allocPASID(for: vm1, guestPASID: Self.guestPASID)
            let back = try allocator.hostPASID(forPrivateID: Self.guestPASID, in: vm1Set)
            let priv = try allocator.privateID(forHostPASID: host, in: vm1Set)
            let count = try allocator.setInfo(vm1Set).count
            return (host, "host PASID \(host); set-private ID: guest \(Self.guestPASID) ↔ host \(back) (both ways); \(vm1Set!) holds \(count)",
                    back == host && priv == Self.guestPASID && count == 1)
        }
        vm1Table = try step("guest1", "first-stage table: 0x40000000 → page 4, 0x40002000 unmapped") {
            let t = try vm1RAM.x86Table()
            try t.map(iova: Self.vsvaIOVA, physical: vm1RAM.page(4), size: 4096, permissions: [.write, .user])
            vm1RAM.publishTables()
            let target = try? t.translate(Self.vsvaIOVA, updateAccessedDirty: false).get().output
            let hole = (try? t.translate(Self.holeIOVA, updateAccessedDirty: false).get()) == nil
            return (t, "root at GPA \(hex(t.root)); walk: IOVA \(hex(Self.vsvaIOVA)) → GPA \(hex(target ?? 0)), \(hex(Self.holeIOVA)) not present",
                    target == vm1RAM.page(4) && hole)
        }
        vm1Faults = try vm1.allocateFaultQueue()
        vm1Nested = try step("vm1", "nested HWPT (VTD_S1, guest's table), attach vf0 at PASID \(vf0PASID)") {
            let data = UserValue([VTdStage1Data(pageTableAddress: vm1Table.root, addressWidth: 48)])
            keep.append(data)
            let h = try vm1.allocateHWPT(device: vf0ID, parent: vm1Parent.object, flags: [.pasid, .faultIDValid],
                                         data: DriverData(type: VTdUAPI.hwptDataVTdS1, address: data.address,
                                                          length: UInt32(VTdStage1Data.minimumLength)),
                                         faultQueue: vm1Faults.objectID)
            _ = try vm1.attach(vf0ID, pasid: vf0PASID, to: h.object)
            let e = vtd.tables.pasidEntry(vf0.requesterID, pasid: vf0PASID)
            let users = try allocator.entry(vf0PASID, in: vm1Set).users
            let ok = e?.present == true && e?.pgtt == .nested && e?.firstStageTable == vm1Table.root && users == 1
            return (h, "PASID entry \(vf0PASID) of 01:00.1: \(e.map { "PGTT \($0.pgtt.map { "\($0)" } ?? "?"), first stage at GPA \(hex($0.firstStageTable))" } ?? "missing"); the attachment holds \(users) reference", ok)
        }
        let bytes = Array("vSVA".utf8)
        dmaLands("vf0", "vm1", "DMA write \(show(bytes)) to IOVA 0x40000010, PASID \(vf0PASID)", vf0.function, pasid: vf0PASID,
                 Self.vsvaIOVA + 0x10, bytes) {
            let got = vm1RAM.bytes(atGPA: vm1RAM.page(4) + 0x10, count: 4)
            return ("landed at GPA \(hex(vm1RAM.page(4) + 0x10)): vm1's RAM reads \(show(got))", got == bytes)
        }
    }

    /// vm2: an SMMUv3 device bound to the guest's own CD table.
    func armVM() throws {
        vm2IOAS = try step("vm2", "map 256 KiB of guest RAM at GPA 0x80000000 into an IOAS") {
            let ioas = try vm2.allocateIOAS()
            _ = try vm2.map(ioas, source: .user(address: vm2RAM.buffer.address), length: vm2RAM.length, iova: vm2RAM.gpa, access: .readWrite)
            let areas = try vm2.areas(ioas)
            return (ioas, "IOAS \(ioas.rawValue): same GPAs as vm1, different host pages", areas.count == 1)
        }
        let viommu: VIOMMU.ID
        (smmu0, smmu0ID, viommu) = try step("vm2", "bind smmu0 (00:04.0, SMMUv3); nest parent, vIOMMU, vSID 0x42") {
            let m = smmu.addDevice(requesterID: RequesterID(bus: 0, device: 4, function: 0), capabilities: .init(pasidWidth: 20))
            let id = try m.bind(to: vm2)
            let parent = try vm2.allocateHWPT(device: id, parent: vm2IOAS.object, flags: [.nestParent], data: nil)
            let v = try vm2.allocateVIOMMU(device: id, parent: parent, type: SMMUv3UAPI.viommuType, data: nil)
            _ = try vm2.allocateVDevice(viommu: v, device: id, virtualID: 0x42)
            return ((m, id, v), "device \(id.rawValue), vIOMMU \(v.rawValue) over stage-2 HWPT \(parent.rawValue)", true)
        }
        let cdTable = vm2RAM.page(16)
        try step("guest2", "stage-1 tables + CD table: CD 0 → page 2, CD 3 → page 3") {
            let t0 = try vm2RAM.armTable(), t3 = try vm2RAM.armTable()
            let attrs = ArmStage1Attributes(notGlobal: true)
            try t0.map(iova: Self.armIOVA, physical: vm2RAM.page(2), size: 4096, permissions: [.write, .user], attributes: attrs)
            try t3.map(iova: Self.armIOVA, physical: vm2RAM.page(3), size: 4096, permissions: [.write, .user], attributes: attrs)
            vm2RAM.publishTables()
            writeGuestCD(cdTable, index: 0, asid: 0x21, ttb0: t0.root)
            writeGuestCD(cdTable, index: 3, asid: 0x23, ttb0: t3.root)
            return ("CD table at GPA \(hex(cdTable)) (guest memory); CD 3: ASID 0x23, TTB0 GPA \(hex(t3.root))", true)
        }
        try step("vm2", "nested HWPT from the guest's STE, attach smmu0") {
            let ste = UserValue([SMMUv3HWPTData(1 | (5 << 1) | cdTable | (4 << 59), 2)])
            keep.append(ste)
            let h = try vm2.allocateHWPT(device: smmu0ID, parent: viommu.object, flags: [],
                                         data: DriverData(type: SMMUv3UAPI.hwptDataType, address: ste.address, length: 16))
            _ = try vm2.attach(smmu0ID, to: h.object)
            let e = streamTableEntry(smmu.smmu, memory: smmu.memory, streamID: smmu0.streamID)
            let ok = e?.config == .nested && e?.s1ContextPtr == cdTable
            return ("STE of 00:04.0: Config \(e.map { "\($0.config)" } ?? "?"), S1ContextPtr \(hex(e?.s1ContextPtr ?? 0)) = the guest's CD table (a GPA), VMID \(e?.s2VMID ?? 0)", ok)
        }
        try step("host", "count vm2's host PASIDs after the bind") {
            let n = try allocator.setInfo(vm2Set).count
            return ("\(vm2Set!) holds \(n) PASIDs: the guest owns its SubstreamIDs, the host allocated none", n == 0)
        }
        let bytes = Array("SSID".utf8)
        dmaLands("smmu0", "vm2", "DMA write \(show(bytes)) to IOVA 0x10000020, SubstreamID 3", smmu0.function, pasid: 3,
                 Self.armIOVA + 0x20, bytes) {
            let got = vm2RAM.bytes(atGPA: vm2RAM.page(3) + 0x20, count: 4)
            return ("landed at GPA \(hex(vm2RAM.page(3) + 0x20)) through the guest's CD 3: vm2's RAM reads \(show(got))", got == bytes)
        }
    }

    /// Writes CD `index` of the guest's CD table (as the guest's SMMU driver does).
    func writeGuestCD(_ table: UInt64, index: Int, asid: UInt16, ttb0: UInt64) {
        var cd = SMMUv3ContextDescriptor()
        cd.t0SZ = 16; cd.tg0 = 0; cd.ir0 = 1; cd.or0 = 1; cd.sh0 = 3; cd.epd1 = true; cd.valid = true
        cd.ips = 5; cd.aa64 = true; cd.record = true; cd.abort = true; cd.aset = true; cd.asid = asid; cd.ttb0 = ttb0
        for i in 0..<8 { vm2RAM.write64(atGPA: table + UInt64(index * 64 + i * 8), cd.words[i]) }
    }

    /// A parent function behind VT-d with two mediated devices on PASIDs of the vendor set, one
    /// in each VM.
    func mediatedDevices() throws {
        let parentRID = RequesterID(bus: 2, device: 0, function: 0)
        try step("host", "mediated parent 02:00.0 behind VT-d; create mdev-a and mdev-b") {
            mdevParentFunction = try vtd.addDevice(requesterID: parentRID, capabilities: .init(pasidWidth: 20))
            mdevParent = try MediatedParent(function: mdevParentFunction, allocator: allocator, set: vendorSet)
            mdevA = try mdevParent.createDevice()
            mdevB = try mdevParent.createDevice()
            let count = try allocator.setInfo(vendorSet).count
            return ("mdev-a on PASID \(mdevA.pasid), mdev-b on PASID \(mdevB.pasid), both from \(vendorSet!) (\(count) of 2)",
                    mdevA.pasid != mdevB.pasid && count == 2)
        }
        try step("vm1", "bind mdev-a like any device, attach it to vm1's IOAS") {
            mdevAID = try vm1.bind(mdevA)
            _ = try vm1.attach(mdevAID, to: vm1IOAS.object)
            let e = vtd.tables.pasidEntry(parentRID, pasid: mdevA.pasid)
            let rid = vtd.tables.pasidEntry(parentRID, pasid: 0)
            return ("02:00.0 PASID entry \(mdevA.pasid): PGTT \(e?.pgtt.map { "\($0)" } ?? "none"); its RID entry: \(rid?.present == true ? "present" : "not present")",
                    e?.present == true && e?.pgtt == .secondStage && rid?.present != true)
        }
        try step("vm2", "bind mdev-b, attach it to vm2's IOAS") {
            mdevBID = try vm2.bind(mdevB)
            _ = try vm2.attach(mdevBID, to: vm2IOAS.object)
            let e = vtd.tables.pasidEntry(parentRID, pasid: mdevB.pasid)
            return ("02:00.0 PASID entry \(mdevB.pasid): PGTT \(e?.pgtt.map { "\($0)" } ?? "none"), its own domain",
                    e?.present == true && e?.domainID != vtd.tables.pasidEntry(parentRID, pasid: mdevA.pasid)?.domainID)
        }
        let gpa = vm1RAM.page(8)
        let a = Array("mdA!".utf8), b = Array("mdB!".utf8)
        dmaLands("mdev-a", "vendor", "DMA write \(show(a)) to \(hex(gpa)) (RID 02:00.0 + PASID \(mdevA.pasid))",
                 mdevParentFunction.function, pasid: mdevA.pasid, gpa, a) {
            let in1 = vm1RAM.bytes(atGPA: gpa, count: 4), in2 = vm2RAM.bytes(atGPA: gpa, count: 4)
            return ("vm1's RAM reads \(show(in1)); vm2's RAM at the same GPA: \(show(in2))", in1 == a && in2 == [0, 0, 0, 0])
        }
        dmaLands("mdev-b", "vendor", "DMA write \(show(b)) to \(hex(gpa)) (RID 02:00.0 + PASID \(mdevB.pasid))",
                 mdevParentFunction.function, pasid: mdevB.pasid, gpa, b) {
            let in1 = vm1RAM.bytes(atGPA: gpa, count: 4), in2 = vm2RAM.bytes(atGPA: gpa, count: 4)
            return ("vm2's RAM reads \(show(in2)); vm1's RAM still \(show(in1))", in2 == b && in1 == a)
        }
        dmaBlockedOnVTd("02:00.0", "vendor", "DMA write to \(hex(gpa)) with the parent's RID and no PASID",
                        mdevParentFunction.function, pasid: nil, gpa) {
            vm1RAM.bytes(atGPA: gpa, count: 4) == a && vm2RAM.bytes(atGPA: gpa, count: 4) == b
        }
    }

    /// vm2's vDPA device: data and control virtqueue groups on two PASIDs of vm2's set.
    func vdpaDevice() throws {
        let cvqIOVA: UInt64 = 0x8000_1000
        let (dataHWPT, cvqHWPT, dataPASID, cvqPASID) = try step("vm2",
            "vdpa0 (00:05.0, SMMUv3): groups data {vq0, vq1}, control {vq2}") {
            vdpaFunction = smmu.addDevice(requesterID: RequesterID(bus: 0, device: 5, function: 0), capabilities: .init(pasidWidth: 20))
            vdpa = try VDPADevice(function: vdpaFunction, groupCount: 2, virtqueueGroups: [0, 0, 1])
            vdpaID = try vm2.bind(vdpa)
            let cvqIOAS = try vm2.allocateIOAS()
            _ = try vm2.map(cvqIOAS, source: .user(address: cvqBuffer.address), length: UInt64(cvqBuffer.length), iova: 0x8000_0000,
                            access: .readWrite)
            let dataHWPT = try vm2.allocateHWPT(device: vdpaID, parent: vm2IOAS.object, flags: [.pasid], data: nil)
            let cvqHWPT = try vm2.allocateHWPT(device: vdpaID, parent: cvqIOAS.object, flags: [.pasid], data: nil)
            let dataPASID = try layer.allocPASID(for: vm2), cvqPASID = try layer.allocPASID(for: vm2)
            try vdpa.assign(pasid: dataPASID, to: 0)
            try vdpa.assign(pasid: cvqPASID, to: 1)
            let count = try allocator.setInfo(vm2Set).count
            return ((dataHWPT, cvqHWPT, dataPASID, cvqPASID),
                    "PASIDs from \(vm2Set!) (\(count) of 2): data \(dataPASID) → guest RAM, control \(cvqPASID) → the VMM's shadow CVQ IOAS",
                    count == 2 && vdpa.pasid(ofVirtqueue: 1) == dataPASID && vdpa.pasid(ofVirtqueue: 2) == cvqPASID)
        }
        try step("vm2", "attach each group's PASID to its address space, then DRIVER_OK") {
            _ = try vm2.attach(vdpaID, pasid: dataPASID, to: dataHWPT.object)
            _ = try vm2.attach(vdpaID, pasid: cvqPASID, to: cvqHWPT.object)
            vdpa.start()
            let ste = streamTableEntry(smmu.smmu, memory: smmu.memory, streamID: vdpaFunction.streamID)
            let cds = [dataPASID, cvqPASID].map { p in ste.flatMap { contextDescriptor($0, memory: smmu.memory, ssid: p) } }
            let ok = ste?.config == .stage1 && cds.allSatisfy { $0?.valid == true } && cds[0]?.ttb0 != cds[1]?.ttb0 && vdpa.isRunning
            return ("STE of 00:05.0: \(ste.map { "Config \($0.config)" } ?? "?"), host CD table; CDs \(dataPASID) and \(cvqPASID) valid with different tables; running",
                    ok)
        }
        let rx = Array("rxq0".utf8), ctl = Array("ctrl".utf8)
        dmaLands("vdpa0", "vm2", "virtqueue 0 (data) DMA write \(show(rx)) to IOVA \(hex(cvqIOVA))", vdpaFunction.function,
                 pasid: vdpa.pasid(ofVirtqueue: 0), cvqIOVA, rx) {
            let g = vm2RAM.bytes(atGPA: cvqIOVA, count: 4), c = cvqBuffer.bytes(at: 0x1000, count: 4)
            return ("tagged PASID \(dataPASID): vm2's RAM reads \(show(g)); shadow CVQ memory: \(show(c))", g == rx && c == [0, 0, 0, 0])
        }
        dmaLands("vdpa0", "vm2", "virtqueue 2 (control) DMA write \(show(ctl)) to the same IOVA", vdpaFunction.function,
                 pasid: vdpa.pasid(ofVirtqueue: 2), cvqIOVA, ctl) {
            let g = vm2RAM.bytes(atGPA: cvqIOVA, count: 4), c = cvqBuffer.bytes(at: 0x1000, count: 4)
            return ("tagged PASID \(cvqPASID): shadow CVQ memory reads \(show(c)); vm2's RAM still \(show(g))", c == ctl && g == rx)
        }
        refusal("vm2", "move the control group to guest RAM while running", errno: 16) {
            _ = try vm2.replace(vdpaID, pasid: cvqPASID, with: dataHWPT.object)
        }
    }

    /// vm1 cannot use vm2's PASID; DMA with a PASID nobody attached is blocked and recorded.
    func unauthorized() throws {
        guard let theirs = vdpa.pasid(ofGroup: 0) else { throw StepFailed(description: "vdpa0 has no data PASID") }
        refusal("vm1", "attach vf0 at PASID \(theirs) (vm2's vdpa0 data PASID)", errno: 1,
                then: { "; PASID entry \(theirs) of 01:00.1: \(self.vtd.tables.pasidEntry(self.vf0.requesterID, pasid: theirs)?.present == true ? "present" : "not present")" }) {
            _ = try vm1.attach(vf0ID, pasid: theirs, to: vm1Nested.object)
        }
        dmaBlockedOnVTd("vf0", "vm1", "DMA write to IOVA 0x40000000 tagged PASID 9 (never attached)", vf0.function, pasid: 9,
                        Self.vsvaIOVA) {
            vm1RAM.bytes(atGPA: vm1RAM.page(4), count: 4) == [0, 0, 0, 0]
        }
    }

    /// A page the guest left unmapped: the device asks (PRI), the VMM reads the fault queue, the
    /// guest maps it, the VMM answers, the device retries.
    func pageFault() throws {
        let bytes = Array("PRI!".utf8)
        let pending = try step("vf0", "DMA \(show(bytes)) to \(hex(Self.holeIOVA + 8)), PASID \(vf0PASID) (unmapped by guest)") {
            () throws -> (PendingDMA<Void>, String, Bool) in
            let r = vf0.function.write(pasid: IOASIDSoftIOMMU.PASID(vf0PASID), address: Self.holeIOVA + 8, bytes: bytes)
            guard case .waitingForPageResponse(let p) = r else { throw StepFailed(description: "no page request: \(r)") }
            return (p, "ATS gave no translation: page request sent (group \(p.groupIndex)), the DMA waits", true)
        }
        let fault = try step("vm1", "VMM reads its fault queue") { () throws -> (PageFaultRecord, String, Bool) in
            vtd.servicePageRequests()
            let faults = try vm1.readFaults(vm1Faults, maxRecords: 8)
            guard let f = faults.first else { throw StepFailed(description: "the fault queue is empty") }
            let ok = faults.count == 1 && f.pasid == vf0PASID && f.address == Self.holeIOVA && f.deviceID == vf0ID.rawValue
                && f.permissions & VTdUAPI.faultPermWrite != 0
            return (f, "\(faults.count) fault: device \(f.deviceID), PASID \(f.pasid) (guest PASID \((try? allocator.privateID(forHostPASID: f.pasid, in: vm1Set)) ?? 0)), address \(hex(f.address)), write",
                    ok)
        }
        try step("guest1", "maps IOVA \(hex(Self.holeIOVA)) → GPA page 7 in its first-stage table") {
            try vm1Table.map(iova: Self.holeIOVA, physical: vm1RAM.page(7), size: 4096, permissions: [.write, .user])
            vm1RAM.publishTables()
            return ("PTE written in guest RAM", true)
        }
        try step("vm1", "VMM answers the page request group: Success") {
            try vm1.respond(vm1Faults, cookie: fault.cookie, code: 0)
            let answered = vf0.function.isAnswered(pending)
            if answered { tally("vm1") { $0.faultsAnswered += 1 } }
            return ("page group response delivered to 01:00.1: \(answered)", answered)
        }
        switch vf0.function.resume(pending) {
        case .completed:
            let got = vm1RAM.bytes(atGPA: vm1RAM.page(7) + 8, count: 4)
            tally("vm1") { $0.completed += 1 }
            record("vf0", "retries the DMA", "landed at GPA \(hex(vm1RAM.page(7) + 8)): vm1's RAM reads \(show(got))", got == bytes)
        case let other:
            record("vf0", "retries the DMA", "did not complete: \(other)", false)
        }
    }

    /// The guest changes a mapping; the stale translation is used until the VMM forwards the
    /// guest's invalidation.
    func invalidation() throws {
        try step("guest1", "remaps 0x40000000: page 4 → page 5, no invalidation yet") {
            _ = try vm1Table.unmap(iova: Self.vsvaIOVA, size: 4096)
            try vm1Table.map(iova: Self.vsvaIOVA, physical: vm1RAM.page(5), size: 4096, permissions: [.write, .user])
            vm1RAM.publishTables()
            let now = try? vm1Table.translate(Self.vsvaIOVA, updateAccessedDirty: false).get().output
            return ("its table now says GPA \(hex(now ?? 0))", now == vm1RAM.page(5))
        }
        let old = Array("old!".utf8), new = Array("new!".utf8)
        dmaLands("vf0", "vm1", "DMA write \(show(old)) to IOVA 0x40000020, PASID \(vf0PASID)", vf0.function, pasid: vf0PASID,
                 Self.vsvaIOVA + 0x20, old) {
            let p4 = vm1RAM.bytes(atGPA: vm1RAM.page(4) + 0x20, count: 4), p5 = vm1RAM.bytes(atGPA: vm1RAM.page(5) + 0x20, count: 4)
            return ("landed in page 4 (\(show(p4))), page 5: \(show(p5)) — the IOTLB and device TLB still hold the old translation",
                    p4 == old && p5 == [0, 0, 0, 0])
        }
        try step("vm1", "VMM forwards the guest's invalidation (VTD_S1, 1 page)") {
            let entry = UserValue([VTdStage1Invalidation(address: Self.vsvaIOVA, pageCount: 1)])
            var handled: UInt32 = 0
            try vm1.invalidate(vm1Nested.object, entries: DriverArray(type: VTdUAPI.invalidateDataVTdS1, address: entry.address,
                                                                      entryLength: UInt32(VTdStage1Invalidation.minimumLength), count: 1),
                               handled: &handled)
            withExtendedLifetime(entry) {}
            return ("\(handled) entry handled: PASID-based IOTLB and device-TLB invalidation for PASID \(vf0PASID)", handled == 1)
        }
        dmaLands("vf0", "vm1", "DMA write \(show(new)) to IOVA 0x40000030, PASID \(vf0PASID)", vf0.function, pasid: vf0PASID,
                 Self.vsvaIOVA + 0x30, new) {
            let p5 = vm1RAM.bytes(atGPA: vm1RAM.page(5) + 0x30, count: 4), p4 = vm1RAM.bytes(atGPA: vm1RAM.page(4) + 0x30, count: 4)
            return ("landed in page 5 (\(show(p5))): the new translation; page 4 at that offset: \(show(p4))",
                    p5 == new && p4 == [0, 0, 0, 0])
        }
    }

    /// vm1's quota runs out; freeing a PASID detaches it everywhere, blocks its DMA and returns
    /// the quota.
    func quotaAndFree() throws {
        try step("vm1", "guest's vIOMMU wants PASID 6") {
            let host = try layer.allocPASID(for: vm1, guestPASID: 6)
            let count = try allocator.setInfo(vm1Set).count
            return ("host PASID \(host); \(vm1Set!) holds \(count) of 2", count == 2)
        }
        refusal("vm1", "guest's vIOMMU wants PASID 7", errno: 28,
                then: { "; \(self.vm1Set!) still holds \((try? self.allocator.setInfo(self.vm1Set).count) ?? -1)" }) {
            _ = try layer.allocPASID(for: vm1, guestPASID: 7)
        }
        try step("vm1", "frees host PASID \(vf0PASID) (guest PASID \(Self.guestPASID) unbound)") {
            notes.withLock { $0.removeAll() }
            let ended = try layer.freePASID(vf0PASID, for: vm1)
            let events = notes.withLock { $0 }
            let entry = vtd.tables.pasidEntry(vf0.requesterID, pasid: vf0PASID)
            let gone = (try? allocator.entry(vf0PASID, in: vm1Set)) == nil
            return ("\(ended) attachment ended (PASID entry \(entry?.present == true ? "still present" : "cleared")); notifications: \(events.joined(separator: ", ")); PASID released: \(gone)",
                    ended == 1 && entry?.present != true && events == ["unbind", "free"] && gone)
        }
        dmaBlockedOnVTd("vf0", "vm1", "DMA write to IOVA 0x40000040 with the freed PASID \(vf0PASID)", vf0.function, pasid: vf0PASID,
                        Self.vsvaIOVA + 0x40) {
            vm1RAM.bytes(atGPA: vm1RAM.page(5) + 0x40, count: 4) == [0, 0, 0, 0]
        }
        try step("vm1", "guest's vIOMMU wants PASID 7 again") {
            let host = try layer.allocPASID(for: vm1, guestPASID: 7)
            let count = try allocator.setInfo(vm1Set).count
            return ("host PASID \(host): the freed PASID's quota came back (\(count) of 2)", count == 2)
        }
    }

    // MARK: Summary and teardown

    func summarize() {
        func pasids(_ set: IOASIDSetID?) -> [DemoPASID] {
            guard let set, let entries = try? allocator.entries(in: set) else { return [] }
            return entries.map { DemoPASID(host: $0.pasid, guest: $0.privateID) }
        }
        func row(_ actor: String, _ model: String, _ set: IOASIDSetID?, _ devices: [DemoDevice]) {
            let t = tallies[actor] ?? Tally()
            let quota: DemoQuota? = set.flatMap { try? allocator.setInfo($0) }.map { i in
                if case .limited(let n) = i.quota { DemoQuota(used: Int(i.count), limit: Int(n)) } else { DemoQuota(used: Int(i.count), limit: nil) }
            }
            recorder.summarize(DemoSummaryRow(actor: actor, model: model, set: set?.rawValue, quota: quota,
                                              pasids: pasids(set), devices: devices, dmaCompleted: t.completed,
                                              dmaBlocked: t.blocked, faultsAnswered: t.faultsAnswered))
        }
        guard allocator != nil else { return }
        row("vm1", "Intel VT-d nested: host PASIDs", vm1Set, [DemoDevice("vf0")])
        row("vm2", "ARM SMMUv3: guest CD table", vm2Set, [DemoDevice("smmu0", note: "SSIDs guest-owned"), DemoDevice("vdpa0")])
        row("vendor", "mdev parent 02:00.0", vendorSet, [DemoDevice("mdev-a", note: "vm1"), DemoDevice("mdev-b", note: "vm2")])
    }

    /// Ends both VMs and the mediated devices, frees every set and checks the capacity is back.
    func tearDown() {
        defer { withExtendedLifetime(keep) {} }
        guard let allocator, let layer else { return }
        if let mdevAID { try? vm1.unbind(mdevAID) }
        if let mdevBID { try? vm2.unbind(mdevBID) }
        for m in [mdevA, mdevB].compactMap({ $0 }) { try? mdevParent?.removeDevice(m) }
        for vm in [vm1, vm2] where layer.set(of: vm) != nil {
            _ = try? layer.freeAll(for: vm)
            try? layer.withdraw(vm)
        }
        vm1.close()
        vm2.close()
        var freed = 0
        for set in [vm1Set, vm2Set, vendorSet].compactMap({ $0 }) where (try? allocator.freeSet(set)) != nil { freed += 1 }
        let sets = [vm1Set, vm2Set, vendorSet].compactMap { $0 }.count
        let available = allocator.availableCapacity
        record("host", "shut down: unbind, free PASIDs, close contexts, free sets",
               "\(freed) of \(sets) sets freed; available capacity \(available) of \(allocator.systemCapacity)",
               freed == sets && available == allocator.systemCapacity)
    }
}
