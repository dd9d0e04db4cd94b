import IOASIDProcessMemory
import CIOASIDSys
import IOASIDCore
import IOASIDSets
import IOASIDStructures
import IOASIDTestDriver
import Synchronization

/// One open of `/dev/iommu`: a core context plus the ABI codec in front of it.
///
/// Every handler decodes its struct, calls the public Swift API (`Context`, `TestDriver`) and
/// encodes the answer; the semantics live in the core.
public final class IOMMUFile: LinuxFile, @unchecked Sendable {
    public let host: any DescriptorHost
    public let configuration: EngineConfiguration
    /// The context behind this open.
    public let context: Context
    /// The test driver, when enabled.
    public let testDriver: TestDriver?
    /// Regions handed out by mmap (owner vIOMMU ID and address), so destroy sees them.
    let mappedRegions = Mutex<[(owner: UInt32, address: UInt, length: Int)]>([])
    /// Counts and times the calls and keeps snapshots for a report, when one is being made.
    /// Set by the front door right after creating the file, before its descriptor is handed out.
    @exclusivity(unchecked) public var recorder: ContextRecorder?

    public init(host: any DescriptorHost, configuration: EngineConfiguration, memory: any UserMemory = ProcessMemory.shared) {
        self.host = host
        self.configuration = configuration
        // IOMMU_OPTION_RLIMIT_MODE may be set only with CAP_SYS_RESOURCE (24), as in the kernel.
        context = Context(memory: memory, options: ContextOptions(mayChangeAccounting: configuration.privileged || ioasid_sys_has_capability(24) != 0))
        testDriver = configuration.testDriver ? TestDriver(context: context) : nil
    }

    public func ioctl(request: UInt, argument: UnsafeMutableRawPointer?) -> Int {
        var untraced: TraceLine? = nil
        guard let recorder else { return dispatch(request: request, argument: argument, trace: &untraced) }
        return recorder.measure(request: request) { dispatch(request: request, argument: argument, trace: &untraced) }
    }

    public func ioctl(request: UInt, argument: UnsafeMutableRawPointer?, trace: inout TraceLine?) -> Int {
        guard let recorder else { return dispatch(request: request, argument: argument, trace: &trace) }
        var line = trace
        defer { trace = line }
        return recorder.measure(request: request) { dispatch(request: request, argument: argument, trace: &line) }
    }

    public var traceKind: String { "iommu" }

    public func mmap(address: UnsafeMutableRawPointer?, length: Int, protection: Int32, flags: Int32, offset: Int) -> Int {
        mapRegion(address: address, length: length, protection: protection, flags: flags, offset: offset)
    }

    /// Runs once the context has closed (set by the front door, like `recorder`).
    @exclusivity(unchecked) public var onContextClosed: (@Sendable () -> Void)?

    /// What keeps the context open, as what holds the kernel's iommufd file keeps it: the
    /// descriptors (one hold for all of them), each VFIO device bound to it, each VFIO group
    /// whose container it is, and each queue or access descriptor it handed out. The context
    /// closes — every object destroyed, every pin let go — when the last hold goes, so a VMM
    /// that closes `/dev/iommu` after binding its devices keeps their mappings.
    private let holds = Atomic<Int>(1)

    /// Takes a hold on the context, unless it has closed already (its descriptors were closed
    /// while the caller looked it up, and nothing else held it): then false.
    public func hold() -> Bool {
        var current = holds.load(ordering: .relaxed)
        while current > 0 {
            let (exchanged, original) = holds.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Gives back a hold taken with `hold()`; the last one closes the context.
    public func letGo() {
        guard holds.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        recorder?.closing(context)
        context.close()
        releaseIOASIDSet()
        onContextClosed?()
    }

    /// Whether the context is still open (some hold remains).
    public var isOpen: Bool { holds.load(ordering: .acquiring) > 0 }

    /// The last descriptor is gone: the descriptors' hold goes.
    public func release() { letGo() }

    /// Gives a new queue object its descriptor; the open descriptor holds the object (destroy
    /// is `EBUSY` until it is closed). Without a descriptor the object is destroyed again.
    func install(_ file: QueueFile, for queue: IOMMUObject) throws(IOMMUError) -> Int32 {
        guard hold() else {
            try? context.destroy(queue.objectID)
            throw .badDescriptor("the iommufd was closed")
        }
        file.holdsOwner = true
        let fd = host.install(file)
        guard fd >= 0 else {
            file.holdsOwner = false
            try? context.destroy(queue.objectID)
            letGo()
            throw .noMemory("no descriptor for the queue")
        }
        file.fd = fd
        context.retainQueue(queue, true)
        return fd
    }

    // MARK: - handlers

    static let destroy: IoctlOp.Handler = { f, u throws(IOMMUError) in
        let c = u.load(iommu_destroy.self)
        try f.context.destroy(ObjectID(c.id))
        return 0
    }

    static let ioasAlloc: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_ioas_alloc.self)
        guard c.flags == 0 else { throw .notSupported("flags must be zero") }
        let id = try f.context.allocateIOAS()
        c.out_ioas_id = id.rawValue
        try u.respond(c) { try? f.context.destroy(id.object) }
        return 0
    }

    static let allowIOVAs: IoctlOp.Handler = { f, u throws(IOMMUError) in
        let c = u.load(iommu_ioas_allow_iovas.self)
        guard c.__reserved == 0 else { throw .notSupported("reserved field set") }
        // As the kernel: the IOAS is looked up before the array is read, and each span is
        // checked as it is read (a bad span stops the load before a later unreadable one).
        try f.context.checkIOAS(IOAS.ID(c.ioas_id))
        var ranges: [IOVARange] = []
        for i in 0..<UInt64(c.num_iovas) {
            var r = iommu_iova_range()
            try withUnsafeMutableBytes(of: &r) { b throws(IOMMUError) in
                try f.context.memory.copyIn(from: c.allowed_iovas + i * 16, into: b)
            }
            guard r.start < r.last else { throw .invalid("allowed span start >= last") }
            let range = IOVARange(start: r.start, last: r.last)
            guard !ranges.contains(where: { $0.overlaps(range) }) else { throw .invalid("allowed spans overlap") }
            ranges.append(range)
        }
        try f.context.allowIOVAs(IOAS.ID(c.ioas_id), ranges)
        return 0
    }

    static let ioasCopy: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_ioas_copy.self)
        guard c.flags & ~UInt32(7) == 0 else { throw .notSupported("unknown flags") }
        guard c.length < .max, c.src_iova < .max, c.dst_iova < .max else { throw .overflow("value too large") }
        guard c.flags & 6 != 0 else { throw .invalid("mapping must be readable or writeable") }
        let fixed = c.flags & 1 != 0
        c.dst_iova = try f.context.copy(from: IOAS.ID(c.src_ioas_id), sourceIOVA: c.src_iova, to: IOAS.ID(c.dst_ioas_id),
                                        destinationIOVA: fixed ? c.dst_iova : nil, length: c.length,
                                        access: MapAccess(rawValue: c.flags & 6))
        try u.respond(c)
        return 0
    }

    static let iovaRanges: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_ioas_iova_ranges.self)
        guard c.__reserved == 0 else { throw .notSupported("reserved field set") }
        let (ranges, alignment) = try f.context.iovaRanges(IOAS.ID(c.ioas_id))
        let capacity = Int(c.num_iovas)
        for (i, r) in ranges.enumerated() where i < capacity {
            var e = iommu_iova_range()
            e.start = r.start
            e.last = r.last
            try withUnsafeBytes(of: &e) { b throws(IOMMUError) in
                try f.context.memory.copyOut(b, to: c.allowed_iovas + UInt64(i) * 16)
            }
        }
        c.num_iovas = UInt32(ranges.count)
        c.out_iova_alignment = alignment
        try u.respond(c)
        if ranges.count > capacity { throw .messageSize("more ranges than the array holds") }
        return 0
    }

    static let ioasMap: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_ioas_map.self)
        guard c.flags & ~UInt32(7) == 0, c.__reserved == 0 else { throw .notSupported("unknown flags or reserved field set") }
        guard c.iova < .max, c.length < .max else { throw .overflow("value too large") }
        guard c.flags & 6 != 0 else { throw .invalid("mapping must be readable or writeable") }
        c.iova = try f.context.map(IOAS.ID(c.ioas_id), source: .user(address: c.user_va), length: c.length,
                                   iova: c.flags & 1 != 0 ? c.iova : nil, access: MapAccess(rawValue: c.flags & 6))
        try u.respond(c)
        return 0
    }

    static let ioasMapFile: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_ioas_map_file.self)
        guard c.flags & ~UInt32(7) == 0 else { throw .notSupported("unknown flags") }
        guard c.iova < .max, c.length < .max else { throw .overflow("value too large") }
        guard c.flags & 6 != 0 else { throw .invalid("mapping must be readable or writeable") }
        c.iova = try f.context.map(IOAS.ID(c.ioas_id), source: .file(fd: c.fd, offset: c.start), length: c.length,
                                   iova: c.flags & 1 != 0 ? c.iova : nil, access: MapAccess(rawValue: c.flags & 6))
        try u.respond(c)
        return 0
    }

    static let ioasUnmap: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_ioas_unmap.self)
        if c.iova == 0 && c.length == .max {
            c.length = try f.context.unmapAll(IOAS.ID(c.ioas_id))
        } else {
            guard c.iova < .max, c.length < .max else {
                try f.context.checkIOAS(IOAS.ID(c.ioas_id))  // the kernel looks the IOAS up first
                throw .overflow("value too large")
            }
            c.length = try f.context.unmap(IOAS.ID(c.ioas_id), iova: c.iova, length: c.length)
        }
        try u.respond(c)
        return 0
    }

    static let option: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_option.self)
        guard c.__reserved == 0 else { throw .notSupported("reserved field set") }
        switch c.option_id {
        case 0: // RLIMIT_MODE
            guard c.object_id == 0 else { throw .notSupported("RLIMIT_MODE takes no object") }
            switch c.op {
            case 1: c.val64 = f.context.accountingMode == .perProcess ? 1 : 0
            case 0:
                guard c.val64 <= 1 else {
                    try f.context.setAccountingMode(f.context.accountingMode) // EPERM/EBUSY first, as the kernel
                    throw .invalid("unknown accounting mode")
                }
                try f.context.setAccountingMode(c.val64 == 1 ? .perProcess : .perUser)
            default: throw .notSupported("unknown option op")
            }
        case 1: // HUGE_PAGES
            let ioas = IOAS.ID(c.object_id)
            switch c.op {
            case 1: c.val64 = try f.context.hugePages(ioas) ? 1 : 0
            case 0:
                _ = try f.context.hugePages(ioas)
                guard c.val64 <= 1 else { throw .invalid("value must be 0 or 1") }
                try f.context.setHugePages(ioas, c.val64 == 1)
            default:
                _ = try f.context.hugePages(ioas)
                throw .notSupported("unknown option op")
            }
        default:
            throw .notSupported("unknown option")
        }
        // Only val64 goes back, as in the kernel (a copy to user: an injection point).
        try u.prepareResponse()
        u.buffer.storeBytes(of: c, as: iommu_option.self)
        try u.respond(bytes: 8, at: 16)
        return 0
    }

    static let hwptAlloc: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_hwpt_alloc.self)
        guard c.__reserved == 0 else { throw .notSupported("reserved field set") }
        let data = c.data_type == 0 && c.data_len == 0 ? nil : DriverData(type: c.data_type, address: c.data_uptr, length: c.data_len)
        let flags = HWPTFlags(rawValue: c.flags)
        let id = try f.context.allocateHWPT(device: Device.ID(c.dev_id), parent: ObjectID(c.pt_id), flags: flags, data: data,
                                            faultQueue: flags.contains(.faultIDValid) ? ObjectID(c.fault_id) : nil)
        c.out_hwpt_id = id.rawValue
        try u.respond(c) { try? f.context.destroy(id.object) }
        return 0
    }

    static let hwInfo: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_hw_info.self)
        guard c.flags & ~UInt32(1) == 0 else { throw .notSupported("unknown flags") }
        guard c.__reserved == (0, 0, 0) else { throw .notSupported("reserved field set") }
        let info = try f.context.hardwareInfo(Device.ID(c.dev_id), type: c.flags & 1 != 0 ? c.in_data_type : nil)
        let copy = min(Int(c.data_len), info.data.count)
        if copy > 0 { try f.context.memory.copyOut(bytes: Array(info.data[0..<copy]), to: c.data_uptr) }
        // Clear the rest of the caller's buffer in fixed chunks (its length is the caller's).
        var at = c.data_uptr + UInt64(copy)
        var rest = Int(c.data_len) - copy
        var zeros: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        while rest > 0 {
            let n = min(rest, 64)
            try withUnsafeBytes(of: &zeros) { b throws(IOMMUError) in try f.context.memory.copyOut(UnsafeRawBufferPointer(rebasing: b[0..<n]), to: at) }
            at += UInt64(n)
            rest -= n
        }
        c.data_len = UInt32(info.data.count)
        c.out_data_type = info.type
        c.out_capabilities = info.capabilities
        c.out_max_pasid_log2 = info.maxPASIDLog2
        try u.respond(c)
        return 0
    }

    static let setDirtyTracking: IoctlOp.Handler = { f, u throws(IOMMUError) in
        let c = u.load(iommu_hwpt_set_dirty_tracking.self)
        guard c.flags & ~UInt32(1) == 0 else { throw .notSupported("unknown flags") }
        try f.context.setDirtyTracking(HWPT.ID(c.hwpt_id), enabled: c.flags & 1 != 0)
        return 0
    }

    static let dirtyBitmap: IoctlOp.Handler = { f, u throws(IOMMUError) in
        let c = u.load(iommu_hwpt_get_dirty_bitmap.self)
        guard c.flags & ~UInt32(1) == 0, c.__reserved == 0 else { throw .notSupported("unknown flags or reserved field set") }
        let memory = f.context.memory
        // Bits go out best effort, as the kernel sets them: a bitmap byte that cannot be
        // read or written is skipped.
        try f.context.readDirty(HWPT.ID(c.hwpt_id), iova: c.iova, length: c.length, pageSize: c.page_size, keep: c.flags & 1 != 0) { unit in
            let at = c.data &+ (unit / 8)
            var byte: UInt8 = 0
            guard (try? withUnsafeMutableBytes(of: &byte, { b throws(IOMMUError) in try memory.copyIn(from: at, into: b) })) != nil else { return }
            byte |= 1 << UInt8(unit % 8)
            _ = try? withUnsafeBytes(of: &byte) { b throws(IOMMUError) in try memory.copyOut(b, to: at) }
        }
        return 0
    }

    static let hwptInvalidate: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_hwpt_invalidate.self)
        var done: UInt32 = 0
        var failure: IOMMUError?
        if c.__reserved != 0 {
            failure = .notSupported("reserved field set")
        } else if c.entry_num != 0, c.data_uptr == 0 || c.entry_len == 0 || c.entry_len > 4096 || c.entry_num > 1 << 19 {
            failure = .invalid("bad invalidation array")
        } else {
            do throws(IOMMUError) {
                try f.context.invalidate(ObjectID(c.hwpt_id),
                                         entries: DriverArray(type: c.data_type, address: c.data_uptr, entryLength: c.entry_len, count: c.entry_num),
                                         handled: &done)
            } catch { failure = error }
        }
        c.entry_num = done
        try u.respond(c)
        if let failure { throw failure }
        return 0
    }

    static let faultAlloc: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_fault_alloc.self)
        guard c.flags == 0 else { throw .notSupported("flags must be zero") }
        let file = QueueFile(owner: f)
        let queue = try f.context.allocateFaultQueue { [weak file] readable in file?.setReadable(readable) }
        file.queue = .fault(queue)
        do throws(IOMMUError) { try u.prepareResponse() } catch {
            try? f.context.destroy(queue.objectID)
            throw error
        }
        let fd = try f.install(file, for: queue)
        c.out_fault_id = queue.objectID.rawValue
        c.out_fault_fd = UInt32(bitPattern: fd)
        try u.respondPrepared(c)
        return 0
    }

    static let viommuAlloc: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_viommu_alloc.self)
        guard c.flags == 0 else { throw .notSupported("flags must be zero") }
        let data = c.data_len == 0 ? nil : DriverData(type: c.type, address: c.data_uptr, length: c.data_len)
        let id = try f.context.allocateVIOMMU(device: Device.ID(c.dev_id), parent: HWPT.ID(c.hwpt_id), type: c.type, data: data)
        c.out_viommu_id = id.rawValue
        try u.respond(c) { try? f.context.destroy(id.object) }
        return 0
    }

    static let vdeviceAlloc: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_vdevice_alloc.self)
        let id = try f.context.allocateVDevice(viommu: VIOMMU.ID(ObjectID(c.viommu_id)), device: Device.ID(c.dev_id), virtualID: c.virt_id)
        c.out_vdevice_id = id.rawValue
        try u.respond(c) { try? f.context.destroy(id) }
        return 0
    }

    static let changeProcess: IoctlOp.Handler = { f, u throws(IOMMUError) in
        let c = u.load(iommu_ioas_change_process.self)
        guard c.__reserved == 0 else { throw .notSupported("reserved field set") }
        try f.context.changeProcess()
        return 0
    }

    static let veventqAlloc: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_veventq_alloc.self)
        guard c.flags == 0, c.__reserved == 0 else { throw .notSupported("flags or reserved field set") }
        let file = QueueFile(owner: f)
        let queue = try f.context.allocateVEventQueue(viommu: VIOMMU.ID(ObjectID(c.viommu_id)), type: c.type, depth: c.veventq_depth) { [weak file] readable in
            file?.setReadable(readable)
        }
        file.queue = .vevent(queue)
        do throws(IOMMUError) { try u.prepareResponse() } catch {
            try? f.context.destroy(queue.objectID)
            throw error
        }
        let fd = try f.install(file, for: queue)
        c.out_veventq_id = queue.objectID.rawValue
        c.out_veventq_fd = UInt32(bitPattern: fd)
        try u.respondPrepared(c)
        return 0
    }

    static let hwQueueAlloc: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_hw_queue_alloc.self)
        guard c.flags == 0 else { throw .notSupported("flags must be zero") }
        let id = try f.context.allocateHWQueue(viommu: VIOMMU.ID(ObjectID(c.viommu_id)), type: c.type, index: c.index,
                                               base: c.nesting_parent_iova, length: c.length)
        c.out_hw_queue_id = id.rawValue
        try u.respond(c) { try? f.context.destroy(id) }
        return 0
    }

    static let vfioIOAS: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(iommu_vfio_ioas.self)
        guard c.__reserved == 0 else { throw .notSupported("reserved field set") }
        switch c.op {
        case 0:
            c.ioas_id = try f.context.compatibilityIOAS(create: false).rawValue
            try u.respond(c)
        case 1: try f.context.setCompatibilityIOAS(IOAS.ID(c.ioas_id))
        case 2: f.context.clearCompatibilityIOAS()
        default: throw .notSupported("unknown op")
        }
        return 0
    }
}
