import Testing
@testable import IOASIDSoftIOMMU

/// Bit-exact encodings of the VT-d registers, table entries and descriptors, against values
/// worked out by hand from the spec's bit positions (and the way the Linux intel driver composes
/// the same fields).
@Suite struct VTdEncodingTests {
    // MARK: Registers

    @Test func defaultCapabilityRegister() {
        let cap = VTdConfiguration().capability
        // ND=6, SAGAW=4-level, MGAW=47, FRO=0x40, SSLPS=3, PSI, NFR=7, MAMV=18, DWD, DRD, FS1GP, FS5LP.
        #expect(cap.rawValue == 0x11D2_078C_402F_0406)
        #expect(cap.numberOfDomains == 65536)
        #expect(cap.sagaw == 0b00100)
        #expect(cap.supportsSecondStage(levels: 4) && !cap.supportsSecondStage(levels: 3) && !cap.supportsSecondStage(levels: 5))
        #expect(cap.mgaw == 48)
        #expect(cap.faultRecordingOffset == 0x400)
        #expect(cap.secondStageLargePageSupport == 3)
        #expect(cap.pageSelectiveInvalidation)
        #expect(cap.numberOfFaultRecordingRegisters == 8)
        #expect(cap.maximumAddressMaskValue == 18)
        #expect(cap.firstStage1GiBPages && cap.firstStage5LevelPaging)
        #expect(!cap.cachingMode && !cap.requiredWriteBufferFlushing)
    }

    @Test func defaultExtendedCapabilityRegister() {
        let ecap = VTdConfiguration().extendedCapability
        #expect(ecap.rawValue == 0x0003_ED9A_A400_50C7)
        #expect(ecap.pageWalkCoherency && ecap.queuedInvalidation && ecap.deviceTLB && ecap.passThrough)
        #expect(ecap.iotlbRegisterOffset == 0x500)
        #expect(ecap.nestedTranslation && ecap.pageRequests && ecap.supervisorRequests && !ecap.executeRequests)
        #expect(ecap.pasid && ecap.pasidSizeSupported == 20)
        #expect(ecap.scalableMode && ecap.secondStageAccessedDirty && ecap.secondStageTranslation && ecap.firstStageTranslation)
        #expect(ecap.scalableModePageWalkCoherency && ecap.ridPASID && !ecap.extendedAccessedFlag)
    }

    @Test func configurationChangesFlipTheirBits() {
        var c = VTdConfiguration()
        c.secondStageLevels = [3, 4, 5]
        c.maximumGuestAddressWidth = 57
        c.nestedTranslation = false
        c.pasidBits = 0
        c.secondStageAccessedDirty = false
        c.domainIDBits = 8
        #expect(c.capability.sagaw == 0b01110)
        #expect(c.capability.mgaw == 57)
        #expect(c.capability.numberOfDomains == 256)
        #expect(!c.extendedCapability.nestedTranslation)
        #expect(!c.extendedCapability.pasid)
        #expect(!c.extendedCapability.secondStageAccessedDirty)
    }

    // MARK: Tables

    @Test func rootEntryFields() {
        var r = VTdRootEntry()
        r.lowerContextTable = 0x1_2345_6000
        r.lowerPresent = true
        r.upperContextTable = 0x7_0000_1000
        r.upperPresent = true
        #expect(r.low == 0x1_2345_6001 && r.high == 0x7_0000_1001)
        #expect(VTdContextEntry.address(root: r, devfn: 0x08) == 0x1_2345_6000 + 8 * 32)
        #expect(VTdContextEntry.address(root: r, devfn: 0x81) == 0x7_0000_1000 + 1 * 32)
        r.upperPresent = false
        #expect(VTdContextEntry.address(root: r, devfn: 0x81) == nil)
        #expect(VTdRootEntry.address(rootTable: 0x1000, bus: 3) == 0x1030)
    }

    @Test func contextEntryFields() {
        var c = VTdContextEntry()
        c.pasidDirectory = 0x1_2345_6000
        c.pasidDirectorySizeField = VTdContextEntry.directorySizeField(covering: 1 << 20)
        c.present = true
        c.deviceTLBEnable = true
        c.pasidEnable = true
        c.pageRequestEnable = true
        c.ridPASID = 0
        #expect(c.pasidDirectorySizeField == 7)
        #expect(c.words.0 == 0x1_2345_6E1D)
        #expect(c.words.1 == 0)
        #expect(c.pasidLimit == 1 << 20)
        #expect(!c.hasReservedBits)
        c.ridPASID = 0xF_FFFF
        c.ridPrivileged = true
        #expect(c.words.1 == 0x1F_FFFF)
        #expect(!c.hasReservedBits)
        c.words.0 |= 1 << 5
        #expect(c.hasReservedBits)
        #expect(VTdContextEntry.directorySizeField(covering: 1) == 0)
        #expect(VTdContextEntry.directorySizeField(covering: 1 << 13) == 0)
        #expect(VTdContextEntry.directorySizeField(covering: (1 << 13) + 1) == 1)
    }

    @Test func pasidEntrySecondStage() {
        var p = VTdPASIDEntry()
        p.secondStageTable = 0x2_0000_0000
        p.addressWidth = 2
        p.pgtt = .secondStage
        p.secondStageAccessedDirtyEnable = true
        p.domainID = 5
        p.pageWalkSnoop = true
        p.present = true
        #expect(p.words.0 == 0x2_0000_0289)
        #expect(p.words.1 == 0x80_0005)
        #expect(p.words.2 == 0)
        #expect(p.secondStageLevels == 4)
        #expect(!p.hasReservedBits)
    }

    @Test func pasidEntryNested() {
        var p = VTdPASIDEntry()
        p.firstStageTable = 0x4000_1000
        p.firstStagePagingMode = 1
        p.supervisorRequestEnable = true
        p.writeProtectEnable = true
        p.extendedAccessedFlagEnable = true
        p.secondStageTable = 0x3_0000_0000
        p.addressWidth = 2
        p.pgtt = .nested
        p.domainID = 0x1234
        p.present = true
        #expect(p.words.2 == 0x4000_1095)
        #expect(p.words.0 == 0x3_0000_00C9)
        #expect(p.words.1 == 0x1234)
        #expect(p.firstStageLevels == 5)
        #expect(p.pgtt == .nested)
        p.pgttField = 5
        #expect(p.pgtt == nil)
        p.words.4 = 1
        #expect(p.hasReservedBits)
    }

    @Test func pasidTableIndexing() {
        #expect(VTdPASIDDirectoryEntry.address(directory: 0x10000, pasid: 0x12345) == 0x10000 + (0x12345 >> 6) * 8)
        #expect(VTdPASIDEntry.address(table: 0x20000, pasid: 0x12345) == 0x20000 + 0x05 * 64)
        var d = VTdPASIDDirectoryEntry(rawValue: 0)
        d.pasidTable = 0x5_5555_5000
        d.present = true
        #expect(d.rawValue == 0x5_5555_5001)
    }

    @Test func tablesRoundTripThroughMemory() {
        let memory = PhysicalMemory()
        let frame = memory.allocateFrame()!
        var p = VTdPASIDEntry(0x1234_5009, 0xFFFF, 0xABC0_0001)
        p.words.7 = 0x77
        p.write(memory, at: frame + 64)
        #expect(VTdPASIDEntry.read(memory, at: frame + 64) == p)
        #expect(memory.read64(frame + 64 + 56) == 0x77)
        let c = VTdContextEntry(1, 2, 3, 4)
        c.write(memory, at: frame + 256)
        #expect(VTdContextEntry.read(memory, at: frame + 256) == c)
    }

    // MARK: Invalidation descriptors

    static let descriptorExamples: [(VTdInvalidation, VTdDescriptor)] = [
        // qi_desc_iotlb(did 5, addr 0x1234000, order 3, PSI) with DR/DW.
        (.iotlb(.page(5, VTdPageRange(address: 0x123_4000, mask: 3))), VTdDescriptor(0x5_00F2, 0x123_4003)),
        (.iotlb(.domain(9)), VTdDescriptor(0x9_00E2)),
        (.iotlb(.global, drainReads: false, drainWrites: false), VTdDescriptor(0x12)),
        // qi_desc_piotlb(did 7, pasid 0x12345, addr 0x40000000, order 9, ih).
        (.pasidIOTLB(.page(7, 0x12345, VTdPageRange(address: 0x4000_0000, mask: 9, invalidationHint: true))),
         VTdDescriptor(0x0001_2345_0007_0036, 0x4000_0049)),
        (.pasidIOTLB(.pasid(7, 0x12345)), VTdDescriptor(0x0001_2345_0007_0026)),
        // PASID-selective PASID-cache invalidation, did 3, pasid 9.
        (.pasidCache(.pasid(3, 9)), VTdDescriptor(0x9_0003_0017)),
        (.pasidCache(.domain(3)), VTdDescriptor(0x3_0007)),
        (.pasidCache(.global), VTdDescriptor(0x37)),
        (.contextCache(.device(domain: 0, sourceID: 0x100, functionMask: 0)), VTdDescriptor(0x100_0000_0031)),
        (.contextCache(.global), VTdDescriptor(0x11)),
        // qi_desc_dev_iotlb_pasid(sid 0x100, pfsid 0x100, pasid 5, qdep 0, addr 0, order 52).
        (.pasidDeviceTLB(sourceID: 0x100, physicalFunction: 0x100, pasid: 5, maxPending: 0, global: false,
                         range: VTdDeviceTLBRange(address: 0, order: 52)),
         VTdDescriptor(0x0100_0005_0100_0008, 0x7FFF_FFFF_FFFF_F800)),
        (.pasidDeviceTLB(sourceID: 0x100, physicalFunction: 0x100, pasid: 5, maxPending: 0, global: false,
                         range: VTdDeviceTLBRange(address: 0x10000, order: 3)),
         VTdDescriptor(0x0100_0005_0100_0008, 0x13800)),
        // qi_desc_dev_iotlb(sid 0x108, pfsid 0x108, qdep 0, addr 0x5000, mask 0).
        (.deviceTLB(sourceID: 0x108, physicalFunction: 0x108, maxPending: 0, range: VTdDeviceTLBRange(address: 0x5000, order: 0)),
         VTdDescriptor(0x0100_0108_0000_8003, 0x5000)),
        // Page group response: rid 0x108, PASID 5, success, index 0x1A.
        (.pageGroupResponse(requesterID: 0x108, pasid: 5, code: 0, groupIndex: 0x1A), VTdDescriptor(0x5_0108_0019, 0xD0)),
        (.pageGroupResponse(requesterID: 0x108, pasid: nil, code: 1, groupIndex: 2), VTdDescriptor(0x0108_1009, 0x10)),
        // Invalidation wait with status write of QI_DONE and fence.
        (.wait(statusWrite: true, statusData: 2, statusAddress: 0x8000_0040, fence: true), VTdDescriptor(0x2_0000_0065, 0x8000_0040)),
    ]

    @Test(arguments: descriptorExamples.indices)
    func descriptorEncodesAndDecodes(_ i: Int) {
        let (typed, raw) = Self.descriptorExamples[i]
        #expect(typed.descriptor == raw, "\(typed)")
        #expect(VTdInvalidation(raw) == typed, "\(raw)")
    }

    @Test func reservedFieldsAndUnknownTypesDoNotDecode() {
        #expect(VTdInvalidation(VTdDescriptor(0x4)) == nil)               // interrupt entry cache: not modelled
        #expect(VTdInvalidation(VTdDescriptor(0x0)) == nil)               // type 0
        #expect(VTdInvalidation(VTdDescriptor(0x2 | 1 << 40)) == nil)      // IOTLB with reserved bit 40
        #expect(VTdInvalidation(VTdDescriptor(0x2)) == nil)               // IOTLB granularity 00b
        #expect(VTdInvalidation(VTdDescriptor(0x6 | 1 << 4)) == nil)      // PASID-IOTLB granularity 01b
        #expect(VTdInvalidation(VTdDescriptor(0x7 | 2 << 4)) == nil)      // PASID-cache granularity 10b
        #expect(VTdInvalidation(VTdDescriptor(0x5, 0x1001)) == nil)       // wait: status address bits 1:0
    }

    @Test func pageRangeCoversLikeTheDriverComputesIt() {
        let r = VTdPageRange.covering(first: 0x1000, last: 0x2FFF)
        #expect(r.address == 0 && r.mask == 2 && r.first == 0 && r.last == 0x3FFF)
        let one = VTdPageRange.covering(first: 0x5000, last: 0x5FFF)
        #expect(one.mask == 0 && one.first == 0x5000 && one.last == 0x5FFF)
        let all = VTdPageRange.covering(first: 0, last: .max)
        #expect(all.mask == 52 && all.first == 0 && all.last == .max)
        #expect(VTdPageRange(address: 0x20_3000, mask: 9).first == 0x20_0000)
    }

    @Test func deviceTLBRangeSpans() {
        #expect(VTdDeviceTLBRange(address: 0x5000, order: 0).span == (0x5000, 0x5FFF))
        #expect(VTdDeviceTLBRange(address: 0x10000, order: 3).span == (0x10000, 0x17FFF))
        #expect(VTdDeviceTLBRange(address: 0x4020_0000, order: 9).span == (0x4020_0000, 0x403F_FFFF))
        #expect(VTdDeviceTLBRange(address: 0, order: 52).span == (0, .max))
    }

    // MARK: Faults and page requests

    @Test func faultRecordFields() {
        let f = VTdFaultRecord(reason: .pasidEntryNotPresent, sourceID: 0x100, address: 0x1234_5678, type: .read, pasid: 5)
        #expect(f.low == 0x1234_5000)
        #expect(f.high == 0xC000_0559_8000_0100)
        #expect(f.isFault && f.reason == .pasidEntryNotPresent && f.sourceID == 0x100 && f.pasid == 5)
        #expect(f.requestType == .read && !f.privileged && !f.execute)
        let w = VTdFaultRecord(reason: .writeDenied, sourceID: 0x8, address: 0x2000, type: .write, privileged: true)
        #expect(w.high == 0xA000_0085_0000_0008)
        #expect(w.pasid == nil && w.requestType == .write && w.privileged)
        let pr = VTdFaultRecord(reason: .pageRequestNotEnabled, sourceID: 1, address: 0, type: .pageRequest)
        #expect(pr.requestType == .pageRequest && pr.high >> 28 & 1 == 1)
    }

    @Test func pageRequestDescriptorFields() {
        let d = VTdPageRequestDescriptor(requesterID: 0x108, pasid: 5, address: 0x7000_1234, read: true, write: true,
                                         execute: false, privileged: false, lastInGroup: true, groupIndex: 3)
        #expect(d.descriptor.qw0 == 0x0000_0005_0108_0101)
        #expect(d.descriptor.qw1 == 0x7000_101F)
        #expect(d.requesterID == 0x108 && d.pasid == 5 && d.address == 0x7000_1000 && d.read && d.write)
        #expect(d.lastInGroup && d.groupIndex == 3 && d.type == 1)
        let n = VTdPageRequestDescriptor(requesterID: 1, pasid: nil, address: 0, read: false, write: true, execute: true,
                                         privileged: true, lastInGroup: false, groupIndex: 511)
        #expect(n.pasid == nil && n.execute && n.privileged && n.groupIndex == 511 && !n.lastInGroup)
    }
}
