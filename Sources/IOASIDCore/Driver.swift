import IOASIDStructures

/// A PASID value; `nil` where an API takes `PASID?` means the whole device (requests without PASID).
public typealias PASID = UInt32

/// The flags of `IOMMU_HWPT_ALLOC`, as the core understands them.
public struct HWPTFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The HWPT may be the stage-2 parent of nested HWPTs.
    public static let nestParent = HWPTFlags(rawValue: 1 << 0)
    /// The HWPT tracks dirty pages.
    public static let dirtyTracking = HWPTFlags(rawValue: 1 << 1)
    /// `fault_id` names a fault queue for I/O page faults.
    public static let faultIDValid = HWPTFlags(rawValue: 1 << 2)
    /// The HWPT may be attached to a PASID.
    public static let pasid = HWPTFlags(rawValue: 1 << 3)
    /// Every flag the core knows.
    public static let all: HWPTFlags = [.nestParent, .dirtyTracking, .faultIDValid, .pasid]
}

/// Driver-specific data passed through from user space (`data_type`, `data_uptr`, `data_len`).
public struct DriverData: Sendable {
    /// The data type (`IOMMU_HWPT_DATA_*`, `IOMMU_VIOMMU_TYPE_*` …).
    public var type: UInt32
    /// Where the data is in user memory.
    public var address: UInt64
    /// Its length in bytes.
    public var length: UInt32
    public init(type: UInt32, address: UInt64, length: UInt32) {
        self.type = type; self.address = address; self.length = length
    }

    /// Copies the data into `T` as drivers do (`iommu_copy_struct_from_user`): shorter than
    /// `minimumLength` or longer than `T` is `EINVAL`; missing trailing bytes read as zero.
    public func load<T>(_ type: T.Type, minimumLength: Int, memory: any UserMemory) throws(IOMMUError) -> T {
        guard Int(length) >= minimumLength, Int(length) <= MemoryLayout<T>.size else { throw .invalid("driver data length out of range") }
        return try UserStructCopy.load(T.self, from: address, userSize: Int(length), memory: memory)
    }

    /// Writes `value` back into the user's data (`iommu_copy_struct_to_user`): at most the
    /// user's length; shorter than `minimumLength` or longer than `T` is `EINVAL`.
    public func store<T>(_ value: T, minimumLength: Int, memory: any UserMemory) throws(IOMMUError) {
        guard Int(length) >= minimumLength, Int(length) <= MemoryLayout<T>.size else { throw .invalid("driver data length out of range") }
        var v = value
        let r: Result<Void, IOMMUError> = withUnsafeBytes(of: &v) { b in
            do throws(IOMMUError) { try memory.copyOut(UnsafeRawBufferPointer(rebasing: b[0..<Int(length)]), to: address); return .success(()) }
            catch { return .failure(error) }
        }
        try r.get()
    }
}

/// A user array of driver entries (`IOMMU_HWPT_INVALIDATE`).
public struct DriverArray: Sendable {
    public var type: UInt32
    public var address: UInt64
    public var entryLength: UInt32
    public var count: UInt32
    public init(type: UInt32, address: UInt64, entryLength: UInt32, count: UInt32) {
        self.type = type; self.address = address; self.entryLength = entryLength; self.count = count
    }

    /// Loads entry `index` as `T` (`iommu_copy_struct_from_user_array`): an entry shorter
    /// than `minimumLength` or longer than `T` is `EINVAL`.
    public func load<T>(_ type: T.Type, at index: UInt32, minimumLength: Int, memory: any UserMemory) throws(IOMMUError) -> T {
        guard Int(entryLength) >= minimumLength, Int(entryLength) <= MemoryLayout<T>.size else { throw .invalid("entry length out of range") }
        return try UserStructCopy.load(T.self, from: address + UInt64(index) * UInt64(entryLength),
                                       userSize: Int(entryLength), memory: memory)
    }

    /// Loads every entry (`iommu_copy_struct_from_full_user_array`): the extensible-struct
    /// rules per entry (`E2BIG` for non-zero bytes past `T`), `EINVAL` for an empty array.
    public func loadAll<T>(_ type: T.Type, memory: any UserMemory) throws(IOMMUError) -> [T] {
        guard count != 0 else { throw .invalid("empty array") }
        var out: [T] = []
        out.reserveCapacity(Int(count))
        for i in 0..<count {
            out.append(try UserStructCopy.load(T.self, from: address + UInt64(i) * UInt64(entryLength),
                                               userSize: Int(entryLength), memory: memory))
        }
        return out
    }
}

/// Copies extensible structs from user memory.
public enum UserStructCopy {
    /// Loads a `T` from `userSize` bytes at `address`: zero-filled if shorter, `E2BIG` if the
    /// extra bytes of a longer struct are not all zero, `EFAULT` if unreadable.
    public static func load<T>(_ type: T.Type, from address: UInt64, userSize: Int, memory: any UserMemory) throws(IOMMUError) -> T {
        let size = MemoryLayout<T>.size
        var value = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: MemoryLayout<T>.alignment)
        defer { value.deallocate() }
        value.initializeMemory(as: UInt8.self, repeating: 0, count: max(size, 1))
        try memory.copyIn(from: address, into: UnsafeMutableRawBufferPointer(start: value, count: min(size, userSize)))
        if userSize > size {
            var rest = userSize - size
            var at = address + UInt64(size)
            var chunk = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
            while rest > 0 {
                let n = min(rest, 64)
                chunk = (0, 0, 0, 0, 0, 0, 0, 0)
                try withUnsafeMutableBytes(of: &chunk) { b throws(IOMMUError) in
                    try memory.copyIn(from: at, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<n]))
                }
                let zero = withUnsafeBytes(of: &chunk) { b in b.allSatisfy { $0 == 0 } }
                if !zero { throw .tooBig("non-zero bytes past the known struct") }
                rest -= n
                at += UInt64(n)
            }
        }
        _ = value
        return value.load(as: T.self)
    }
}

/// What `IOMMU_GET_HW_INFO` reports for a device.
public struct HardwareInfo: Sendable {
    /// `IOMMU_HW_INFO_TYPE_*` of `data`.
    public var type: UInt32
    /// The driver's info struct, as bytes.
    public var data: [UInt8]
    /// log2 of the number of PASIDs the device supports (0 without PASID).
    public var maxPASIDLog2: UInt8
    /// `IOMMU_HW_CAP_*` bits.
    public var capabilities: UInt64
    public init(type: UInt32, data: [UInt8], maxPASIDLog2: UInt8 = 0, capabilities: UInt64 = 0) {
        self.type = type; self.data = data; self.maxPASIDLog2 = maxPASIDLog2; self.capabilities = capabilities
    }
}

/// An IOMMU driver: what the core asks of the hardware model behind a device.
///
/// The test driver and, later, the software VT-d and SMMUv3 drivers implement it.
public protocol IOMMUDriver: AnyObject, Sendable {
    /// The info type reported by default, and the info for `type` (or the default when nil).
    func hardwareInfo(device: any DeviceModel, type: UInt32?) throws(IOMMUError) -> HardwareInfo
    /// Whether the device's IOMMU can track dirty pages.
    func supportsDirtyTracking(device: any DeviceModel) -> Bool
    /// Whether the guest owns the PASID table (the ARM/AMD model): page requests for a PASID
    /// with no attachment of its own go to the nested domain attached at the RID.
    var userPASIDTable: Bool { get }
    /// Allocates a paging domain for `device`.
    func allocatePagingDomain(device: any DeviceModel, flags: HWPTFlags, data: DriverData?, memory: any UserMemory) throws(IOMMUError) -> any PagingDomain
    /// Allocates a nested domain over `parent`.
    func allocateNestedDomain(device: any DeviceModel, parent: any PagingDomain, flags: HWPTFlags, data: DriverData, memory: any UserMemory) throws(IOMMUError) -> any IOMMUDomain
    /// Whether `device` can have a vIOMMU of `type` (the kernel's `get_viommu_size` being
    /// non-zero); checked before the parent HWPT is looked up. The default is no.
    func supportsVIOMMU(type: UInt32, device: any DeviceModel) -> Bool
    /// Creates the driver part of a vIOMMU of `type` over the nesting parent `parent`.
    func allocateVIOMMU(device: any DeviceModel, parent: any PagingDomain, type: UInt32, data: DriverData?, memory: any UserMemory) throws(IOMMUError) -> any VIOMMUModel
    /// Allocates an SVA domain that makes `device` translate through `addressSpace`'s page table
    /// (see `SVA.swift`); the default refuses with `EOPNOTSUPP`.
    func allocateSVADomain(device: any DeviceModel, addressSpace: any SharedAddressSpace) throws(IOMMUError) -> any IOMMUDomain
}

/// A device as the IOMMU sees it.
public protocol DeviceModel: AnyObject, Sendable {
    /// The driver of the IOMMU the device sits behind.
    var driver: any IOMMUDriver { get }
    /// The number of PASIDs the device supports; 0 when it has no PASID capability.
    var maxPASIDs: UInt32 { get }
    /// Whether a domain with a fault queue may not be attached (a PCI virtual function with PRI).
    var refusesFaultDomains: Bool { get }
    /// IOVA the IOMMU reserves for this device in every IOAS its RID is attached to through a
    /// paging HWPT (the driver's reserved regions: the VT-d interrupt window, the SMMUv3
    /// software MSI window). Mapping there is `EINVAL`; attaching while a mapping or an allowed
    /// span covers it is `EADDRINUSE`. Empty by default.
    var reservedRegions: [IOVARange] { get }
    /// Called when the core attaches `domain` at `pasid` (nil: the whole device). The driver
    /// may refuse (e.g. `EINVAL` for an incompatible domain).
    func attach(_ domain: any IOMMUDomain, pasid: PASID?, replacing: (any IOMMUDomain)?) throws(IOMMUError)
    /// Called when the core detaches the domain at `pasid`.
    func detach(pasid: PASID?)
    /// Answers a page request the device made (from the fault queue's page response).
    func pageResponse(pasid: PASID?, group: UInt32, code: UInt32)
    /// The device the IOMMU driver sees when it allocates domains or reports hardware info for
    /// this one: itself for a physical function; the parent function for a device that lives on
    /// a PASID of another (mediated, vDPA).
    var iommuDevice: any DeviceModel { get }
    /// Called (without the context lock held) after the core bound this model in `context` as
    /// `device`, so the driver knows where to report the device's page requests and events.
    func bound(to context: Context, as device: Device.ID)
    /// Called (without the context lock held) after the device left its context: unbind,
    /// `IOMMU_DESTROY`, or the context's close.
    func unbound(from context: Context, as device: Device.ID)
}

/// A device whose PASIDs other bound devices live on (the parent function of mediated devices):
/// page requests the hardware reports for such a PASID belong to the device bound on it, and are
/// reported as that device's requests without a PASID.
public protocol PASIDHostingDevice: DeviceModel {
    /// Page requests for `pasid` go to `device` of `context` from now on.
    func route(pasid: PASID, to context: Context, as device: Device.ID)
    /// Page requests for `pasid` are this device's own again.
    func unroute(pasid: PASID)
}

extension DeviceModel {
    public var iommuDevice: any DeviceModel { self }
    public var reservedRegions: [IOVARange] { [] }
    public func bound(to context: Context, as device: Device.ID) {}
    public func unbound(from context: Context, as device: Device.ID) {}
}

/// A domain (hardware page table) of a driver.
public protocol IOMMUDomain: AnyObject, Sendable {
    /// Handles one `IOMMU_HWPT_INVALIDATE` array for this domain; returns how many entries were
    /// handled (all of them on success). Paging domains refuse with `EOPNOTSUPP`.
    func invalidate(_ entries: DriverArray, memory: any UserMemory, handled: inout UInt32) throws(IOMMUError)
}

extension IOMMUDomain {
    public func invalidate(_ entries: DriverArray, memory: any UserMemory, handled: inout UInt32) throws(IOMMUError) {
        throw .notSupported("domain has no cache invalidation")
    }
}

/// Where a mapped IOVA points: the pinned pages and the byte inside them.
public struct MappedPages: Sendable {
    public let pages: Pages
    public let offset: UInt64
    public init(pages: Pages, offset: UInt64) { self.pages = pages; self.offset = offset }
}

/// A paging domain: IOVA to host pages, filled by the core from an IOAS.
public protocol PagingDomain: IOMMUDomain {
    /// The page sizes the domain supports, as a bitmap; the lowest sets the IOAS alignment.
    var pageSizes: UInt64 { get }
    /// The IOVA the domain can translate.
    var aperture: IOVARange { get }
    /// Maps `length` bytes at `iova` to `source`.
    func map(iova: UInt64, length: UInt64, source: MappedPages, readable: Bool, writable: Bool) throws(IOMMUError)
    /// Unmaps `length` bytes at `iova`.
    func unmap(iova: UInt64, length: UInt64)
    /// Where `iova` points, if mapped.
    func translate(_ iova: UInt64) -> (source: MappedPages, readable: Bool, writable: Bool)?
    /// Whether dirty tracking can be enabled.
    var supportsDirtyTracking: Bool { get }
    /// Turns dirty tracking on or off.
    func setDirtyTracking(_ enabled: Bool) throws(IOMMUError)
    /// Reports each dirty span in `[iova, iova+length)` through `mark`, clearing the bits unless `keep`.
    func readAndClearDirty(iova: UInt64, length: UInt64, keep: Bool, mark: (UInt64, UInt64) -> Void) throws(IOMMUError)
}

/// The driver part of a vIOMMU.
public protocol VIOMMUModel: AnyObject, Sendable {
    /// Output data returned to user space after allocation (written back into `data`), if any.
    func allocationOutput(memory: any UserMemory, data: DriverData?) throws(IOMMUError)
    /// Allocates a nested domain owned by this vIOMMU.
    func allocateNestedDomain(flags: HWPTFlags, data: DriverData, memory: any UserMemory) throws(IOMMUError) -> any IOMMUDomain
    /// Handles `IOMMU_HWPT_INVALIDATE` on the vIOMMU.
    func invalidate(_ entries: DriverArray, vdevices: [UInt32: VDevice], memory: any UserMemory, handled: inout UInt32) throws(IOMMUError)
    /// Validates a new vDevice.
    func vdeviceAllocated(_ vdevice: VDevice) throws(IOMMUError)
    /// Called when a vDevice goes away.
    func vdeviceDestroyed(_ vdevice: VDevice)
    /// The size of a HW queue's driver object for `type`, or `EOPNOTSUPP`.
    func checkHWQueue(type: UInt32, index: UInt32, base: UInt64, length: UInt64) throws(IOMMUError)
    /// Records a HW queue of `type` at `index`; called after the core pinned its memory.
    func hwQueueAllocated(_ queue: HWQueue) throws(IOMMUError)
    /// Called when a HW queue goes away.
    func hwQueueDestroyed(_ queue: HWQueue)
    /// mmap of the vIOMMU's region: checks `offset`/`length`.
    func mmapRegion(offset: UInt64, length: UInt64) -> (offset: UInt64, length: UInt64)?
}
