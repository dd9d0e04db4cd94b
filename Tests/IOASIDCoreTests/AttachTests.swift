import IOASIDCore
import IOASIDTestDriver
import Testing

@Suite("Mock domain attach, replace and detach")
struct AttachTests {
    @Test func attachToIOASReusesTheAutoDomain() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            let second = try f.driver.mockDomain(f.ioas.object)
            #expect(second.hwpt == f.hwpt, "a compatible auto domain is shared")
            #expect(try f.context.attachedHWPT(second.device)?.object == f.hwpt)
            // Pages stay pinned once, whatever the number of devices.
            #expect(pinCount(f.buffer.address) == 1)
            try f.context.destroy(second.handle)
            #expect(f.kinds().filter { $0 == .hwptPaging }.count == 1, "still used by the first device")
        }
    }

    @Test func replaceMovesTheDeviceAndFreesTheOldAutoDomain() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            let ioas2 = try f.context.allocateIOAS()
            let manual = try f.context.allocateHWPT(device: f.device, parent: ioas2.object, flags: [], data: nil)
            #expect(try f.driver.mockDomainReplace(f.handle, with: manual.object) == manual.object)
            #expect(try f.context.attachedHWPT(f.device) == manual)
            #expect(!f.context.objects.contains { $0.id == f.hwpt }, "the old auto domain is destroyed")
            // The first IOAS is no longer mirrored: its pages are unpinned.
            #expect(pinCount(f.buffer.address) == 0)
            // Replace back to the first IOAS makes a new auto domain and pins again.
            let auto = try f.driver.mockDomainReplace(f.handle, with: f.ioas.object)
            #expect(auto != manual.object)
            #expect(pinCount(f.buffer.address) == 1)
            // The manual HWPT survives, unattached, and can now be destroyed.
            try f.context.destroy(manual.object)
        }
    }

    @Test func detachAndReplaceRules() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            try f.context.detach(f.device)
            #expect(try f.context.attachedHWPT(f.device) == nil)
            #expect(!f.context.objects.contains { $0.id == f.hwpt })
            #expect(pinCount(f.buffer.address) == 0)
            try f.context.detach(f.device) // nothing attached: no-op
            expectErrno(22, "replace with nothing attached") { try f.driver.mockDomainReplace(f.handle, with: f.ioas.object) }
            let h = try f.context.attach(f.device, to: f.ioas.object)
            expectErrno(16, "attach twice to the same HWPT") { try f.context.attach(f.device, to: h.object) }
            let ioas2 = try f.context.allocateIOAS()
            let other = try f.context.allocateHWPT(device: f.device, parent: ioas2.object, flags: [], data: nil)
            // Linux 7.2 device.c: xa_insert of the device into the PASID's device array fails with
            // EBUSY whatever the HWPT; attach never overwrites (selftest pasid_attach expects EBUSY).
            expectErrno(16, "attach over another HWPT") { try f.context.attach(f.device, to: other.object) }
            expectErrno(22, "target is not a page table") { try f.context.attach(f.device, to: f.handle) }
            expectErrno(2) { try f.driver.mockDomainReplace(ObjectID(999), with: f.ioas.object) }
        }
    }
}

@Suite("PASID attach rules")
struct PASIDTests {
    @Test func pasidOnANonPASIDDeviceIsEINVAL() throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            let hwpt = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.pasid], data: nil)
            expectErrno(22) { try f.driver.pasidAttach(f.handle, pasid: 1, to: hwpt.object) }
            expectErrno(22) { try f.driver.pasidAttach(f.handle, pasid: 1, to: f.ioas.object) }
        }
    }

    @Test func hwptWithoutPASIDFlagIsEINVAL() throws {
        try PinLock.shared {
            let f = try Fixture(deviceFlags: Mock.devicePASID)
            defer { f.context.close() }
            let plain = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [], data: nil)
            expectErrno(22) { try f.driver.pasidAttach(f.handle, pasid: 7, to: plain.object) }
            expectErrno(22, "auto domains are not PASID capable") { try f.driver.pasidAttach(f.handle, pasid: 7, to: f.ioas.object) }
            try f.driver.pasidCheck(f.handle, pasid: 7, hwpt: ObjectID(0))
        }
    }

    @Test func ridAndPASIDCompatibility() throws {
        try PinLock.shared {
            let f = try Fixture(deviceFlags: Mock.devicePASID)
            defer { f.context.close() }
            let pasidHWPT = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.pasid], data: nil)
            let plain = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [], data: nil)
            // The RID holds a non-PASID auto domain: PASID attach is refused.
            expectErrno(22) { try f.driver.pasidAttach(f.handle, pasid: 3, to: pasidHWPT.object) }
            // A PASID-compatible RID domain allows it.
            _ = try f.driver.mockDomainReplace(f.handle, with: pasidHWPT.object)
            #expect(try f.driver.pasidAttach(f.handle, pasid: 3, to: pasidHWPT.object) == pasidHWPT.object)
            try f.driver.pasidCheck(f.handle, pasid: 3, hwpt: pasidHWPT.object)
            // With a PASID attached, the RID cannot go back to a non-PASID domain.
            expectErrno(22) { try f.driver.mockDomainReplace(f.handle, with: plain.object) }
            #expect(try f.context.attachedHWPT(f.device) == pasidHWPT)
            // PASID beyond the device's width.
            expectErrno(22) { try f.driver.pasidAttach(f.handle, pasid: 1 << 20, to: pasidHWPT.object) }
            expectErrno(16, "attach over an attached PASID") { try f.driver.pasidAttach(f.handle, pasid: 3, to: pasidHWPT.object) }
            // Replace / detach at the PASID.
            let pasid2 = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.pasid], data: nil)
            #expect(try f.driver.pasidReplace(f.handle, pasid: 3, with: pasid2.object) == pasid2.object)
            expectErrno(16, "in use at the PASID") { try f.context.destroy(pasid2.object) }
            try f.driver.pasidDetach(f.handle, pasid: 3)
            try f.driver.pasidCheck(f.handle, pasid: 3, hwpt: ObjectID(0))
            try f.context.destroy(pasid2.object)
            // Now the RID may take the plain domain again.
            _ = try f.driver.mockDomainReplace(f.handle, with: plain.object)
        }
    }
}

@Suite("Accounting mode")
struct AccountingTests {
    @Test func modeChangesOnlyOnAnEmptyContext() throws {
        let (c, _) = makeContext()
        defer { c.close() }
        #expect(c.accountingMode == .perUser)
        try c.setAccountingMode(.perProcess)
        #expect(c.accountingMode == .perProcess)
        let ioas = try c.allocateIOAS()
        expectErrno(16) { try c.setAccountingMode(.perUser) }
        #expect(c.accountingMode == .perProcess)
        try c.destroy(ioas.object)
        try c.setAccountingMode(.none)
        #expect(c.accountingMode == AccountingMode.none)
    }

    @Test func withoutCapabilityIsEPERM() throws {
        let (c, _) = makeContext(mayChangeAccounting: false)
        defer { c.close() }
        expectErrno(1) { try c.setAccountingMode(.perProcess) }
    }

    @Test func pinnedPagesAreChargedToTheModeAtPinTime() throws {
        try PinLock.shared {
            let (c, d) = makeContext()
            defer { c.close() }
            try c.setAccountingMode(.perProcess)
            let ioas = try c.allocateIOAS()
            _ = try d.mockDomain(ioas.object)
            let buf = UserBuffer(pages: 4)
            _ = try c.map(ioas, source: .user(address: buf.address), length: 3 * 4096, iova: nil, access: .read)
            #expect(c.chargedPages(.perProcess) == 3)
            #expect(c.chargedPages(.perUser) == 0)
            _ = try c.unmapAll(ioas)
            #expect(c.chargedPages(.perProcess) == 0)
        }
    }
}
