import IOASIDCore
import IOASIDStructures

/// The handle user space gets for a mock device (`IOMMUFD_OBJ_SELFTEST`): destroying it
/// detaches and unbinds the device.
public final class MockDeviceHandle: IOMMUObject, @unchecked Sendable {
    public let device: Device
    public let mock: MockDevice

    init(device: Device, mock: MockDevice) {
        self.device = device
        self.mock = mock
        super.init(kind: .driver)
    }

    override public func destroyed(in state: ContextState) {
        state.detach(device, pasid: nil)
        state.unbind(device)
    }
}

/// A test-driver access (`IOMMU_TEST_OP_CREATE_ACCESS`): pins and reads through an IOAS and
/// unpins whatever an unmap asks for.
public final class MockAccess: AccessOwner, @unchecked Sendable {
    public internal(set) var access: Access!
    struct Item { let id: UInt32; let iova: UInt64; let length: UInt64 }
    var items: [Item] = []
    var nextID: UInt32 = 0
    weak var context: Context?

    public func unmapRequested(_ access: Access, iova: UInt64, length: UInt64, state: ContextState) {
        let last = length == .max ? UInt64.max : iova &+ length &- 1
        items.removeAll { item in
            let itemLast = item.iova + item.length - 1
            if iova > itemLast || last < item.iova { return false }
            state.unpin(access: access, iova: item.iova, length: item.length)
            return true
        }
    }
}

/// The commands of the kernel's `IOMMU_TEST_CMD`, as Swift calls. The ABI layer decodes the
/// ioctl into these; Swift tests call them directly.
public struct TestDriver: Sendable {
    public let context: Context
    public init(context: Context) { self.context = context }

    /// Creates a mock device with `flags`, binds it and attaches it to `pt` (an IOAS or a HWPT).
    /// Returns the handle's ID, the HWPT attached and the bound device.
    public func mockDomain(_ pt: ObjectID, flags: UInt32 = 0) throws(IOMMUError) -> (handle: ObjectID, hwpt: ObjectID, device: Device.ID) {
        guard flags & ~(Mock.deviceNoDirty | Mock.devicePASID) == 0 else { throw .invalid("unknown mock device flags") }
        return try context.withState { s throws(IOMMUError) in
            let mock = MockDevice(flags: flags)
            let handleReservation = Placeholder()
            s.reserve(handleReservation)
            let device = s.bind(mock, ownedByDriver: true)
            mock.vdeviceLookup = { v in v.vdevices.first { $0.value.device === device }?.key }
            let hwpt: ObjectID
            do throws(IOMMUError) { hwpt = try s.attach(device, pasid: nil, to: pt, replace: false) } catch {
                s.unbind(device)
                s.abort(handleReservation)
                throw error
            }
            s.abort(handleReservation)
            let handle = MockDeviceHandle(device: device, mock: mock)
            s.reserve(handle)
            s.publish(handle)
            return (handle.objectID, hwpt, device.id)
        }
    }

    private final class Placeholder: IOMMUObject, @unchecked Sendable { init() { super.init(kind: .driver) } }

    func handle(_ s: ContextState, _ id: ObjectID) throws(IOMMUError) -> MockDeviceHandle {
        let o = try s.object(id)
        guard let h = o as? MockDeviceHandle else {
            throw .noEntry("not a mock device")
        }
        return h
    }

    /// Replaces the HWPT of a mock device's RID with `pt`; returns the HWPT now attached.
    public func mockDomainReplace(_ handle: ObjectID, with pt: ObjectID) throws(IOMMUError) -> ObjectID {
        try context.withState { s throws(IOMMUError) in
            let h = try self.handle(s, handle)
            return try s.attach(h.device, pasid: nil, to: pt, replace: true)
        }
    }

    /// Attaches, replaces or detaches a PASID of a mock device. PASID 0 is the kernel's
    /// `IOMMU_NO_PASID`: the device itself (its RID), as the test driver's commands pass it on.
    public func pasidAttach(_ handle: ObjectID, pasid: PASID, to pt: ObjectID) throws(IOMMUError) -> ObjectID {
        try context.withState { s throws(IOMMUError) in
            try s.attach(try self.handle(s, handle).device, pasid: Self.devicePASID(pasid), to: pt, replace: false)
        }
    }
    public func pasidReplace(_ handle: ObjectID, pasid: PASID, with pt: ObjectID) throws(IOMMUError) -> ObjectID {
        try context.withState { s throws(IOMMUError) in
            try s.attach(try self.handle(s, handle).device, pasid: Self.devicePASID(pasid), to: pt, replace: true)
        }
    }
    public func pasidDetach(_ handle: ObjectID, pasid: PASID) throws(IOMMUError) {
        try context.withState { s throws(IOMMUError) in s.detach(try self.handle(s, handle).device, pasid: Self.devicePASID(pasid)) }
    }

    /// The attachment point a test command's PASID names: nil (the RID) for `IOMMU_NO_PASID`.
    private static func devicePASID(_ pasid: PASID) -> PASID? { pasid == 0 ? nil : pasid }
    /// Checks what is attached at a PASID: `hwpt` 0 means "nothing".
    public func pasidCheck(_ handle: ObjectID, pasid: PASID, hwpt: ObjectID) throws(IOMMUError) {
        try context.withState { s throws(IOMMUError) in
            let h = try self.handle(s, handle)
            let attached = s.attached(h.device, pasid: Self.devicePASID(pasid))
            if hwpt.rawValue == 0 {
                if attached != nil { throw .invalid("PASID is attached") }
                return
            }
            let o = try s.object(hwpt)
            guard let want = o as? HWPT else { throw .invalid("not a HWPT") }
            if attached !== want { throw .invalid("PASID is attached elsewhere") }
        }
    }

    /// Checks that each mock page of `[iova, iova+length)` in a mock paging HWPT maps the page of
    /// user memory at `address`.
    public func checkMap(_ hwpt: ObjectID, iova: UInt64, length: UInt64, address: UInt64) throws(IOMMUError) {
        try context.withState { s throws(IOMMUError) in
            let h = try s.object(hwpt, as: HWPTPaging.self)
            guard let mock = h.domain as? MockPagingDomain else { throw .invalid("not a mock domain") }
            let page = mock.minimumPageSize
            guard iova % page == 0, length % page == 0, address % page == 0,
                  !address.addingReportingOverflow(length).overflow else { throw .invalid("check is not page aligned") }
            var offset: UInt64 = 0
            var cachedFile: (start: UInt64, last: UInt64, identity: PageIdentity)? = nil
            while offset < length {
                guard let t = mock.translate(iova + offset) else { throw .invalid("IOVA not mapped") }
                let user = address + offset
                switch t.source.pages.source {
                case .user:
                    if t.source.pages.hostAddress(t.source.offset) != user {
                        // The same physical page may be visible at two addresses (a shared file).
                        let a = try s.memory.identity(of: user)
                        let b = try s.memory.identity(of: t.source.pages.hostAddress(t.source.offset))
                        if case .address = a { throw .invalid("IOVA maps another page") }
                        if a != b { throw .invalid("IOVA maps another page") }
                    }
                case .file:
                    let pageSize = s.options.pageSize
                    guard case .file(let f, let o) = t.source.pages.identity(ofByte: t.source.offset) else { throw .invalid("IOVA maps another page") }
                    if cachedFile == nil || user < cachedFile!.start || user > cachedFile!.last {
                        let pageStart = user & ~(pageSize - 1)
                        cachedFile = (pageStart, pageStart + pageSize - 1, try s.memory.identity(of: pageStart))
                    }
                    guard case .file(let uf, let uo) = cachedFile!.identity, uf == f,
                          uo == o & ~(pageSize - 1), user % pageSize == o % pageSize else { throw .invalid("IOVA maps another page") }
                }
                offset += page
            }
        }
    }

    /// Checks that every page of `[address, address+length)` is pinned `refs` times.
    public func checkRefs(address: UInt64, length: UInt64, refs: UInt32) throws(IOMMUError) {
        let pageSize = context.pageSize
        guard length % pageSize == 0, address % pageSize == 0, !address.addingReportingOverflow(length).overflow else {
            throw .invalid("check is not page aligned")
        }
        var p = address
        while p < address + length {
            let identity = try context.memory.identity(of: p)
            if PinRegistry.shared.pinCount(address: p, identity: identity) != Int(refs) { throw .ioError("pin count differs") }
            p += pageSize
        }
    }

    /// Checks one entry of a mock nested HWPT's IOTLB.
    public func checkIOTLB(_ hwpt: ObjectID, entry: UInt32, value: UInt32) throws(IOMMUError) {
        try context.withState { s throws(IOMMUError) in
            let h = try s.object(hwpt, as: HWPTNested.self)
            guard let n = h.baseDomain as? MockNestedDomain else { throw .invalid("not a mock nested domain") }
            if entry >= UInt32(Mock.iotlbCount) || n.iotlb[Int(entry)] != value { throw .invalid("IOTLB entry differs") }
        }
    }

    /// Checks one entry of a mock device's cache.
    public func checkDeviceCache(_ device: Device.ID, entry: UInt32, value: UInt32) throws(IOMMUError) {
        try context.withState { s throws(IOMMUError) in
            let d = try s.object(device.object, as: Device.self)
            guard let m = d.model as? MockDevice else { throw .invalid("not a mock device") }
            if entry >= UInt32(Mock.deviceCacheCount) || m.cache[Int(entry)] != value { throw .invalid("cache entry differs") }
        }
    }

    /// Marks the mock pages whose bits are set in the user bitmap at `bitmap` dirty; returns how many.
    public func setDirty(_ hwpt: ObjectID, iova: UInt64, length: UInt64, pageSize: UInt64, bitmap: UInt64) throws(IOMMUError) -> UInt64 {
        guard pageSize != 0, length != 0, iova % pageSize == 0, length % pageSize == 0, bitmap != 0 else { throw .invalid("bad dirty request") }
        let count = length / pageSize
        guard count <= 16 << 20 * 8 else { throw .overflow("bitmap too large") }
        return try context.withState { s throws(IOMMUError) in
            let h = try s.object(hwpt, as: HWPTPaging.self)
            guard let mock = h.domain as? MockPagingDomain else { throw .invalid("not a mock domain") }
            guard mock.dirtyTracking else { throw .invalid("dirty tracking is off") }
            let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: Int((count + 7) / 8), alignment: 8)
            defer { bytes.deallocate() }
            try s.memory.copyIn(from: bitmap, into: bytes)
            var n: UInt64 = 0
            for i in 0..<count where bytes[Int(i / 8)] & (1 << (i % 8)) != 0 {
                mock.setDirty(iova + i * pageSize)
                n += 1
            }
            return n
        }
    }

    /// Raises an I/O page fault from a mock device.
    public func triggerIOPF(device: Device.ID, pasid: PASID, group: UInt32, permissions: UInt32, address: UInt64) throws(IOMMUError) {
        _ = try context.withState { s throws(IOMMUError) in
            let d = try s.object(device.object, as: Device.self)
            guard d.model is MockDevice else { throw .invalid("not a mock device") }
            return 0
        }
        // With no fault-capable domain attached the kernel drops the fault and returns success.
        try? context.reportPageFault(device: device, pasid: pasid == 0 ? nil : pasid, group: group,
                                     permissions: permissions, address: address, last: true)
    }

    /// Raises a vEVENT from a mock device through the vIOMMU of its nested domain.
    public func triggerVEvent(device: Device.ID) throws(IOMMUError) {
        let target: (VIOMMU, UInt32)? = try context.withState { s throws(IOMMUError) in
            let d = try s.object(device.object, as: Device.self)
            guard let m = d.model as? MockDevice, let v = m.viommu, m.virtualID != 0,
                  let vd = v.vdevices[m.virtualID] else { return nil }
            return (vd.viommu, UInt32(truncatingIfNeeded: m.virtualID))
        }
        guard let (viommu, vid) = target else { throw .noEntry("device has no vDevice") }
        var data = [UInt8](repeating: 0, count: 4)
        withUnsafeBytes(of: vid.littleEndian) { data.replaceSubrange(0..<4, with: $0) }
        context.reportVEvent(viommu: viommu, type: Mock.veventqType, data: data)
    }

    /// Creates a mock access on `ioas`.
    public func createAccess(_ ioas: IOAS.ID, flags: UInt32) throws(IOMMUError) -> MockAccess {
        guard flags & ~1 == 0 else { throw .notSupported("unknown access flags") }
        let owner = MockAccess()
        owner.context = context
        owner.access = try context.createAccess(owner: owner, ioas: ioas, pinsPages: flags & 1 != 0)
        return owner
    }

    /// Pins pages through a mock access; returns the item ID. When `address` is non-zero the
    /// pinned pages must be the user pages there (`EBADE` otherwise).
    public func accessPages(_ owner: MockAccess, iova: UInt64, length: UInt64, address: UInt64, flags: UInt32) throws(IOMMUError) -> UInt32 {
        guard length <= 16 << 20 else { throw .noMemory("too long") }
        guard flags & ~(1 | 1 << 16) == 0 else { throw .notSupported("unknown flags") }
        guard owner.access.pinsPages else { throw .notSupported("access does not pin pages") }
        let hosts = try context.pinPages(owner.access, iova: iova, length: length, write: flags & 1 != 0)
        if address != 0 {
            let pageSize = context.pageSize
            var user = address - (iova % pageSize)
            for h in hosts {
                let ok: Bool
                if h == user { ok = true } else {
                    let a = try? context.memory.identity(of: user), b = try? context.memory.identity(of: h)
                    ok = a != nil && a == b && a != .address(user)
                }
                if !ok {
                    context.unpinPages(owner.access, iova: iova, length: length)
                    throw .badExchange("pinned pages differ from the user pages")
                }
                user += pageSize
            }
        }
        // The items change under the context lock, where unmap notifications change them too.
        return try context.withState { _ throws(IOMMUError) in
            let id = owner.nextID
            owner.nextID += 1
            owner.items.append(.init(id: id, iova: iova, length: length))
            return id
        }
    }

    /// Unpins an item made by `accessPages`.
    public func destroyAccessPages(_ owner: MockAccess, item: UInt32) throws(IOMMUError) {
        try context.withState { s throws(IOMMUError) in
            guard let i = owner.items.firstIndex(where: { $0.id == item }) else { throw .noEntry("no such item") }
            let it = owner.items.remove(at: i)
            s.unpin(access: owner.access, iova: it.iova, length: it.length)
        }
    }

    /// Reads or writes through a mock access between IOVA and user memory at `address`.
    public func accessRW(_ owner: MockAccess, iova: UInt64, length: UInt64, address: UInt64, flags: UInt32) throws(IOMMUError) {
        guard length <= 16 << 20 else { throw .noMemory("too long") }
        guard flags & ~(1 | 1 << 2 | 1 << 16) == 0 else { throw .notSupported("unknown flags") }
        let write = flags & 1 != 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(length), alignment: 8)
        defer { buffer.deallocate() }
        if write { try context.memory.copyIn(from: address, into: buffer) }
        try context.accessRW(owner.access, iova: iova, buffer: buffer, write: write)
        if !write { try context.memory.copyOut(UnsafeRawBufferPointer(buffer), to: address) }
    }

    /// Moves a mock access to another IOAS.
    public func accessReplaceIOAS(_ owner: MockAccess, ioas: IOAS.ID) throws(IOMMUError) {
        try context.replaceIOAS(of: owner.access, with: ioas)
    }

    /// Closes a mock access (its file was closed): unpins everything and destroys it.
    public func closeAccess(_ owner: MockAccess) {
        _ = try? context.withState { s throws(IOMMUError) in
            if let a = owner.access { owner.unmapRequested(a, iova: 0, length: .max, state: s) }
            return 0
        }
        if let a = owner.access { context.destroyAccess(a) }
    }
}

