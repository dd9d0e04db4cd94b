import Synchronization
import IOASIDCore
import IOASIDStructures

/// Constants of the kernel's test driver (`iommufd_test.h`), as this driver uses them.
public enum Mock {
    /// The mock domain's page size (`MOCK_PAGE_SIZE`).
    public static let pageSize: UInt64 = 2048
    /// The huge variant's page size (`MOCK_HUGE_PAGE_SIZE`).
    public static let hugePageSize: UInt64 = 512 * 2048
    /// The default mock domain's aperture.
    public static let aperture = IOVARange(start: 1 << 24, last: (1 << 31) - 1)
    /// The width of the IOVA the huge variant translates (56 bits).
    public static let hugeAperture = IOVARange(start: 0, last: (1 << 56) - 1)
    /// `IOMMU_HW_INFO_TYPE_SELFTEST`.
    public static let hwInfoType: UInt32 = 0xfeed_beef
    /// `IOMMU_HW_INFO_SELFTEST_REGVAL`.
    public static let hwInfoRegister: UInt32 = 0xdead_beef
    /// `IOMMU_HWPT_DATA_SELFTEST`.
    public static let hwptDataType: UInt32 = 0xdead
    /// `IOMMU_HWPT_INVALIDATE_DATA_SELFTEST` and its deliberately invalid twin.
    public static let hwptInvalidateType: UInt32 = 0xdead_beef
    /// `IOMMU_VIOMMU_TYPE_SELFTEST` (also the vIOMMU invalidation and HW queue type).
    public static let viommuType: UInt32 = 0xdead_beef
    /// `IOMMU_VEVENTQ_TYPE_SELFTEST`.
    public static let veventqType: UInt32 = 0xbeef_beef
    /// `IOMMU_TEST_IOTLB_DEFAULT` and `IOMMU_TEST_DEV_CACHE_DEFAULT`.
    public static let iotlbDefault: UInt32 = 0xbad_beef
    public static let deviceCacheDefault: UInt32 = 0xba_ddad
    /// Entries of the mock nested IOTLB and of the mock device cache.
    public static let iotlbCount = 4
    public static let deviceCacheCount = 4
    /// `MOCK_PASID_WIDTH`.
    public static let pasidWidth: UInt32 = 20
    /// `IOMMU_TEST_HW_QUEUE_MAX`.
    public static let hwQueueMax: UInt32 = 2
    /// Device flags (`MOCK_FLAGS_DEVICE_*`).
    public static let deviceNoDirty: UInt32 = 1 << 0
    public static let devicePASID: UInt32 = 1 << 2
}

/// The mock IOMMU: one for the whole process, as the kernel's test driver has one.
public final class MockIOMMU: IOMMUDriver, @unchecked Sendable {
    public static let shared = MockIOMMU()

    /// The mock IOMMU models the guest-owned PASID table, as the kernel's does.
    public var userPASIDTable: Bool { true }

    public func hardwareInfo(device: any DeviceModel, type: UInt32?) throws(IOMMUError) -> HardwareInfo {
        if let t = type, t != 0, t != Mock.hwInfoType { throw .notSupported("unknown info type") }
        var data = [UInt8](repeating: 0, count: 8)
        withUnsafeBytes(of: Mock.hwInfoRegister.littleEndian) { data.replaceSubrange(4..<8, with: $0) }
        return HardwareInfo(type: Mock.hwInfoType, data: data, capabilities: 1 << 3) // ATS not supported: not a PCI device
    }

    public func supportsDirtyTracking(device: any DeviceModel) -> Bool {
        guard let d = device as? MockDevice else { return false }
        return d.flags & Mock.deviceNoDirty == 0
    }

    public func allocatePagingDomain(device: any DeviceModel, flags: HWPTFlags, data: DriverData?, memory: any UserMemory) throws(IOMMUError) -> any PagingDomain {
        guard let d = device as? MockDevice else { throw .invalid("not a mock device") }
        guard flags.isSubset(of: [.dirtyTracking, .nestParent, .pasid]) else { throw .notSupported("flags") }
        if flags.contains(.dirtyTracking), d.flags & Mock.deviceNoDirty != 0 { throw .notSupported("device cannot track dirty pages") }
        var type: UInt32 = 0
        if let data {
            guard data.type == Mock.hwptDataType else { throw .notSupported("data type") }
            let cfg = try data.load(HWPTSelftestData.self, minimumLength: 4, memory: memory)
            type = cfg.pagetableType
        }
        guard type <= 1 else { throw .notSupported("page table type") }
        return MockPagingDomain(huge: type == 1, dirtyCapable: flags.contains(.dirtyTracking))
    }

    public func allocateNestedDomain(device: any DeviceModel, parent: any PagingDomain, flags: HWPTFlags, data: DriverData, memory: any UserMemory) throws(IOMMUError) -> any IOMMUDomain {
        guard flags.isSubset(of: [.pasid]) else { throw .notSupported("flags") }
        guard parent is MockPagingDomain else { throw .invalid("parent is not a mock domain") }
        return try MockNestedDomain.make(data: data, memory: memory, viommu: nil)
    }

    public func supportsVIOMMU(type: UInt32, device: any DeviceModel) -> Bool { type == Mock.viommuType }

    public func allocateVIOMMU(device: any DeviceModel, parent: any PagingDomain, type: UInt32, data: DriverData?, memory: any UserMemory) throws(IOMMUError) -> any VIOMMUModel {
        guard type == Mock.viommuType else { throw .notSupported("vIOMMU type") }
        guard let p = parent as? MockPagingDomain else { throw .invalid("parent is not a mock domain") }
        return MockVIOMMU(parent: p, hasData: data != nil)
    }
}

/// The layout of `struct iommu_hwpt_selftest`.
struct HWPTSelftestData { var iotlb: UInt32 = 0; var pagetableType: UInt32 = 0 }

/// A mock device (`iommufd_mock%u`): no PASID unless `MOCK_FLAGS_DEVICE_PASID`, a small cache
/// the vIOMMU invalidates, and the kernel driver's fake error on PASID 1024.
public final class MockDevice: DeviceModel, @unchecked Sendable {
    public let flags: UInt32
    public var driver: any IOMMUDriver { MockIOMMU.shared }
    public var maxPASIDs: UInt32 { flags & Mock.devicePASID != 0 ? 1 << Mock.pasidWidth : 0 }
    public var refusesFaultDomains: Bool { false }
    /// The device cache entries (`mdev->cache`).
    public var cache = [UInt32](repeating: Mock.deviceCacheDefault, count: Mock.deviceCacheCount)
    /// The vIOMMU of the nested domain attached at the RID, and the device's virtual ID there.
    var viommu: MockVIOMMU?
    var virtualID: UInt64 = 0
    var pasid1024FakeError = false
    /// Page responses received, newest last (group, code).
    public private(set) var responses: [(pasid: PASID?, group: UInt32, code: UInt32)] = []
    /// Answers the core for the vDevice lookups the attach needs.
    var vdeviceLookup: ((MockVIOMMU) -> UInt64?)?

    public init(flags: UInt32) { self.flags = flags }

    public func attach(_ domain: any IOMMUDomain, pasid: PASID?, replacing: (any IOMMUDomain)?) throws(IOMMUError) {
        if let p = domain as? MockPagingDomain, p.dirtyCapable, flags & Mock.deviceNoDirty != 0 {
            throw .invalid("device cannot track dirty pages")
        }
        if let pasid {
            if pasid == 1024 {
                if pasid1024FakeError { pasid1024FakeError = false; throw .noMemory("fake failure on PASID 1024") }
                pasid1024FakeError = true
            }
            return
        }
        var newVIOMMU: MockVIOMMU? = nil
        var vid: UInt64 = 0
        if let n = domain as? MockNestedDomain, let v = n.viommu {
            guard let id = vdeviceLookup?(v) else { throw .noEntry("device has no vDevice in the vIOMMU") }
            newVIOMMU = v
            vid = id
        }
        viommu = newVIOMMU
        virtualID = vid
    }

    public func detach(pasid: PASID?) {
        if pasid == 1024 { pasid1024FakeError = false }
        if pasid == nil { viommu = nil; virtualID = 0 }
    }

    public func pageResponse(pasid: PASID?, group: UInt32, code: UInt32) {
        responses.append((pasid, group, code))
    }
}

/// A mock paging domain: 2 KiB pages in the mock aperture, or the huge variant.
public final class MockPagingDomain: PagingDomain, @unchecked Sendable {
    public let huge: Bool
    public let dirtyCapable: Bool
    public var dirtyTracking = false
    struct Extent: Sendable { var source: MappedPages; var readable: Bool; var writable: Bool }
    /// Only touched under the lock of the context the domain belongs to (the core's map and
    /// unmap, the test commands), so no dynamic exclusivity checks.
    @exclusivity(unchecked) var extents = IntervalMap<Extent>()
    /// Dirty page-table entries: start IOVA → entry size. The huge variant maps aligned 1 MiB
    /// blocks with one entry, so a write dirties the whole block, as the kernel's page table does.
    @exclusivity(unchecked) var dirty: [UInt64: UInt64] = [:]

    init(huge: Bool, dirtyCapable: Bool) {
        self.huge = huge
        self.dirtyCapable = dirtyCapable
    }

    public var pageSizes: UInt64 { huge ? Mock.hugePageSize | 4096 : ~(Mock.pageSize - 1) }
    public var aperture: IOVARange { huge ? Mock.hugeAperture : Mock.aperture }
    public var supportsDirtyTracking: Bool { dirtyCapable }

    public func map(iova: UInt64, length: UInt64, source: MappedPages, readable: Bool, writable: Bool) throws(IOMMUError) {
        guard let r = IOVARange(start: iova, length: length), aperture.contains(r) else { throw .invalid("outside the aperture") }
        guard extents.insert(r, Extent(source: source, readable: readable, writable: writable)) else { throw .exists("already mapped") }
    }

    public func unmap(iova: UInt64, length: UInt64) {
        guard let r = IOVARange(start: iova, length: length) else { return }
        if let i = extents.firstIndex(overlapping: r), extents[i].range == r {
            // What the core does: one whole extent.
            extents.remove(at: i)
        }
        while let i = extents.firstIndex(overlapping: r) {
            let e = extents.remove(at: i)
            // Keep the parts outside the span (callers unmap whole areas, so this is rare).
            if e.range.start < r.start {
                extents.insert(IOVARange(start: e.range.start, last: r.start - 1), e.value)
            }
            if e.range.last > r.last {
                var v = e.value
                v.source = MappedPages(pages: v.source.pages, offset: v.source.offset + (r.last + 1 - e.range.start))
                extents.insert(IOVARange(start: r.last + 1, last: e.range.last), v)
            }
        }
        if !dirty.isEmpty {
            for (start, size) in dirty where start <= r.last && start &+ size &- 1 >= r.start { dirty.removeValue(forKey: start) }
        }
    }

    public func translate(_ iova: UInt64) -> (source: MappedPages, readable: Bool, writable: Bool)? {
        guard let e = extents.entry(containing: iova) else { return nil }
        return (MappedPages(pages: e.value.source.pages, offset: e.value.source.offset + (iova - e.range.start)), e.value.readable, e.value.writable)
    }

    public func setDirtyTracking(_ enabled: Bool) throws(IOMMUError) {
        if enabled && !dirtyCapable { throw .invalid("domain cannot track dirty pages") }
        dirtyTracking = enabled
    }

    public func readAndClearDirty(iova: UInt64, length: UInt64, keep: Bool, mark: (UInt64, UInt64) -> Void) throws(IOMMUError) {
        guard !dirty.isEmpty, let r = IOVARange(start: iova, length: length) else { return }
        for (start, size) in dirty.sorted(by: { $0.key < $1.key }) where start <= r.last && start &+ size &- 1 >= r.start {
            let s = max(start, r.start), l = min(start &+ size &- 1, r.last)
            mark(s, l - s + 1)
            if !keep { dirty.removeValue(forKey: start) }
        }
    }

    /// The page-table entry holding `iova`: a 1 MiB block in the huge variant when the mapping
    /// covers the aligned block and its memory is aligned alike, else one smallest page.
    func entry(containing iova: UInt64) -> (start: UInt64, size: UInt64)? {
        guard let e = extents.entry(containing: iova) else { return nil }
        if huge {
            let block = iova & ~(Mock.hugePageSize - 1)
            let host = e.value.source.pages.hostAddress(e.value.source.offset + (block &- e.range.start))
            if block >= e.range.start, block + Mock.hugePageSize - 1 <= e.range.last, host % Mock.hugePageSize == 0 {
                return (block, Mock.hugePageSize)
            }
            return (iova & ~4095, 4096)
        }
        return (iova & ~(Mock.pageSize - 1), Mock.pageSize)
    }

    /// Marks the entry holding `iova` dirty, as a device write would (`IOMMU_TEST_OP_DIRTY`).
    public func setDirty(_ iova: UInt64) {
        if let e = entry(containing: iova) { dirty[e.start] = e.size }
    }
}

/// A mock nested domain: a four-entry "IOTLB" that invalidations clear.
public final class MockNestedDomain: IOMMUDomain, @unchecked Sendable {
    public var iotlb: [UInt32]
    weak var viommu: MockVIOMMU?

    init(iotlb: UInt32, viommu: MockVIOMMU?) {
        self.iotlb = Array(repeating: iotlb, count: Mock.iotlbCount)
        self.viommu = viommu
    }

    static func make(data: DriverData, memory: any UserMemory, viommu: MockVIOMMU?) throws(IOMMUError) -> MockNestedDomain {
        guard data.type == Mock.hwptDataType else { throw .notSupported("data type") }
        let cfg = try data.load(HWPTSelftestData.self, minimumLength: 4, memory: memory)
        return MockNestedDomain(iotlb: cfg.iotlb, viommu: viommu)
    }

    public func invalidate(_ entries: DriverArray, memory: any UserMemory, handled: inout UInt32) throws(IOMMUError) {
        guard entries.type == Mock.hwptInvalidateType else { throw .invalid("invalidation type") }
        struct Entry { var flags: UInt32; var iotlbID: UInt32 }
        for i in 0..<entries.count {
            let e = try entries.load(Entry.self, at: i, minimumLength: 8, memory: memory)
            guard e.flags & ~1 == 0 else { throw .notSupported("invalidation flags") }
            guard e.iotlbID < UInt32(Mock.iotlbCount) else { throw .invalid("IOTLB entry out of range") }
            if e.flags & 1 != 0 { for j in iotlb.indices { iotlb[j] = 0 } } else { iotlb[Int(e.iotlbID)] = 0 }
            handled += 1
        }
    }
}

/// The mock vIOMMU: invalidates mock device caches by virtual device ID, owns an mmap region
/// and up to two HW queues that must be allocated in order.
public final class MockVIOMMU: VIOMMUModel, @unchecked Sendable {
    let parent: MockPagingDomain
    /// Whether allocation carried data (and so the mmap region exists).
    let hasData: Bool
    var queues: [HWQueue?] = [nil, nil]
    /// The two pages user space can mmap, and the loopback value in the first word.
    public var region: UnsafeMutableRawPointer?
    public var mmapOffset: UInt64 = 0
    var vdevices: [UInt64: VDevice] = [:]
    static let nextOffset = Mutex<UInt64>(0x10000)

    init(parent: MockPagingDomain, hasData: Bool) {
        self.parent = parent
        self.hasData = hasData
    }

    deinit { region?.deallocate() }

    /// The layout of `struct iommu_viommu_selftest`.
    struct Data { var inData: UInt32; var outData: UInt32; var mmapOffset: UInt64; var mmapLength: UInt64 }

    public func allocationOutput(memory: any UserMemory, data: DriverData?) throws(IOMMUError) {
        guard let data, data.length > 0 else { return }
        var d = try data.load(Data.self, minimumLength: 8, memory: memory)
        let page = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 4096)
        page.initializeMemory(as: UInt8.self, repeating: 0, count: 8192)
        page.storeBytes(of: d.inData, as: UInt32.self)
        region = page
        mmapOffset = MockVIOMMU.nextOffset.withLock { o in let v = o; o += 0x10000; return v }
        d.outData = d.inData
        d.mmapOffset = mmapOffset
        d.mmapLength = 8192
        try data.store(d, minimumLength: 8, memory: memory)
    }

    public func allocateNestedDomain(flags: HWPTFlags, data: DriverData, memory: any UserMemory) throws(IOMMUError) -> any IOMMUDomain {
        guard flags.isSubset(of: [.pasid]) else { throw .notSupported("flags") }
        return try MockNestedDomain.make(data: data, memory: memory, viommu: self)
    }

    public func invalidate(_ entries: DriverArray, vdevices: [UInt32: VDevice], memory: any UserMemory, handled: inout UInt32) throws(IOMMUError) {
        if entries.count == 0 && entries.type == Mock.viommuType { return }
        guard entries.type == Mock.viommuType else { throw .invalid("invalidation type") }
        struct Entry { var flags: UInt32; var vdevID: UInt32; var cacheID: UInt32 }
        // The whole array is copied first, with the extensible-struct rules per entry.
        for e in try entries.loadAll(Entry.self, memory: memory) {
            guard e.flags & ~1 == 0 else { throw .notSupported("invalidation flags") }
            guard e.cacheID < UInt32(Mock.deviceCacheCount) else { throw .invalid("cache entry out of range") }
            guard let v = self.vdevices[UInt64(e.vdevID)], let dev = v.device.model as? MockDevice else { throw .invalid("no such virtual device") }
            if e.flags & 1 != 0 { for j in dev.cache.indices { dev.cache[j] = 0 } } else { dev.cache[Int(e.cacheID)] = 0 }
            handled += 1
        }
    }

    public func vdeviceAllocated(_ vdevice: VDevice) throws(IOMMUError) { vdevices[vdevice.virtualID] = vdevice }
    public func vdeviceDestroyed(_ vdevice: VDevice) {
        if vdevices[vdevice.virtualID] === vdevice { vdevices.removeValue(forKey: vdevice.virtualID) }
    }

    public func checkHWQueue(type: UInt32, index: UInt32, base: UInt64, length: UInt64) throws(IOMMUError) {
        guard type == Mock.viommuType else { throw .notSupported("HW queue type") }
    }

    public func hwQueueAllocated(_ queue: HWQueue) throws(IOMMUError) {
        guard queue.index < Mock.hwQueueMax else { throw .invalid("queue index out of range") }
        if queues[Int(queue.index)] != nil { throw .exists("queue index in use") }
        if queue.index > 0 {
            guard let prev = queues[Int(queue.index) - 1] else { throw .ioError("previous queue missing") }
            prev.retain()
        }
        // The core must translate the base like the parent domain does.
        guard let t = parent.translate(queue.base), t.source.pages.hostAddress(t.source.offset) == queue.hostAddress else {
            throw .fault("queue base does not translate through the parent")
        }
        queues[Int(queue.index)] = queue
    }

    public func hwQueueDestroyed(_ queue: HWQueue) {
        guard queue.index < Mock.hwQueueMax, queues[Int(queue.index)] === queue else { return }
        queues[Int(queue.index)] = nil
        if queue.index > 0, let prev = queues[Int(queue.index) - 1] { prev.release() }
    }

    public func mmapRegion(offset: UInt64, length: UInt64) -> (offset: UInt64, length: UInt64)? {
        guard region != nil, offset == mmapOffset, length == 8192 else { return nil }
        return (offset, length)
    }
}
