#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import IOASIDStructures
import Testing
@testable import IOASIDSoftIOMMU

/// A VT-d unit's translation path allocates nothing: IOTLB hits, walks of every PGTT (with their
/// cache fills), ATS translation requests, and recorded faults.
///
/// The check needs the project's malloc counter: run `scripts/bench-preload.sh build /tmp/mc`
/// once, then `LD_PRELOAD=/tmp/mc/libmalloccount.so swift test --skip-build --filter
/// VTdAllocationTests`. Without the counter loaded the test only exercises the paths.
@Suite struct VTdAllocationTests {
    @Test func translationAllocatesNothing() throws {
        var c = VTdConfiguration()
        c.faultRecordingRegisters = 1
        let m = try VTdMachine(c)
        let rid = RequesterID(bus: 7, device: 0, function: 0)
        try m.tables.addDevice(rid, pasids: 64, deviceTLB: true, pageRequests: false)
        let ss = try m.secondStageTable(), fs = try m.firstStageTable()
        try ss.map(iova: 0x1000, physical: 0x10_0000, size: 64 * 0x1000, permissions: .readWrite)
        try fs.map(iova: 0x1000, physical: 0x20_0000, size: 64 * 0x1000, permissions: [.write, .user])
        // Nested: the first-stage table's frames at GPA = HPA through the second stage.
        let s1 = try m.firstStageTable(), s2 = try m.secondStageTable()
        try s1.map(iova: 0x1000, physical: 0x4000_0000, size: 64 * 0x1000, permissions: [.write, .user])
        for frame in Set(s1.entries(for: 0x1000).map { $0.address & ~0xFFF }) {
            try s2.map(iova: frame, physical: frame, size: 0x1000, permissions: .readWrite)
        }
        try s2.map(iova: 0x4000_0000, physical: 0x30_0000, size: 64 * 0x1000, permissions: .readWrite)
        try m.tables.setPASIDEntry(rid, pasid: 0, VTdMachine.secondStage(ss.root, domain: 2))
        try m.tables.setPASIDEntry(rid, pasid: 1, VTdMachine.firstStage(fs.root, domain: 3))
        try m.tables.setPASIDEntry(rid, pasid: 2, VTdMachine.nested(firstStage: s1.root, secondStage: s2.root, domain: 4))
        try m.tables.setPASIDEntry(rid, pasid: 3, VTdMachine.passThrough(domain: 1))
        let pasids: [PASID?] = [nil, PASID(1), PASID(2), PASID(3)]

        var checksum: UInt64 = 0
        func round(_ n: Int) {
            for i in 0..<n {
                let page = UInt64(i % 80) * 0x1000    // 64 mapped pages, 16 faulting ones
                let pasid = pasids[i & 3]
                let access: AccessPermissions = i % 3 == 0 ? .write : .read
                switch m.unit.translate(DMARequest(requesterID: rid, pasid: pasid, address: 0x1000 + page, access: access)) {
                case .success(let t): checksum &+= t.outputBase
                case .failure(let f): checksum &+= f.address
                }
                if i % 7 == 0, case .translated(let t) = m.unit.translate(ATSTranslationRequest(requesterID: rid, pasid: pasid,
                                                                                                address: 0x1000 + page)) {
                    checksum &+= t.outputBase
                }
                if i % 64 == 0 { m.unit.writeRegister(VTdRegister.faultRecording + 8, 1 << 63) }  // clear the record
                if i % 100 == 0 {  // walks and fills again
                    m.unit.iotlb.invalidate(.all)
                    m.unit.nestedIOTLB.invalidate(.all)
                }
            }
        }
        round(400)  // warm up: fill the structure caches (their dictionaries allocate once)

        guard let fewest = fewestMallocs(of: { round(2000) }) else {
            round(400)
            #expect(checksum != 0)
            return
        }
        #expect(fewest == 0, "allocations in 2000 VT-d translations")
        #expect(checksum != 0)
    }
}
