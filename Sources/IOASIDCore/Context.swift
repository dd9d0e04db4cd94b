import Synchronization
import IOASIDStructures

/// One open of the IOASID framework (the kernel's `iommufd_ctx`, one per open of `/dev/iommu`).
///
/// A context owns an object table: IOAS, HWPTs, bound devices, accesses, fault queues, vIOMMUs,
/// vDevices, vEVENT queues and HW queues, each named by an `ObjectID`.
///
/// ## Locking
/// All state of a context, including every object in its table, is guarded by one lock
/// (`lock`). Every public operation takes it exactly once, so operations from several threads
/// are serialized per context, and two contexts never share a lock. Nothing calls out of the
/// framework (to signal a file descriptor, to wake a reader) while the lock is held: such work
/// is collected in `ContextState.pendingSignals` and run after unlocking.
public final class Context: @unchecked Sendable {
    let lock = Lock()
    let state: ContextState

    /// Creates a context that reads and pins user memory through `memory`.
    public init(memory: any UserMemory, options: ContextOptions = ContextOptions()) {
        state = ContextState(memory: memory, options: options)
        state.context = self
    }

    /// Runs `body` with the state locked, then delivers queued signals.
    @inline(__always)
    func locked<R>(_ body: (ContextState) throws(IOMMUError) -> R) throws(IOMMUError) -> R {
        let result: Result<R, IOMMUError> = lock.withLock {
            do throws(IOMMUError) { return .success(try body(state)) } catch { return .failure(error) }
        }
        // The flag, not the array: another thread may be appending to the array under the lock.
        if state.signalsPending.load(ordering: .relaxed) { flushSignals() }
        return try result.get()
    }

    private func flushSignals() {
        let signals: [@Sendable () -> Void] = lock.withLock {
            let s = state.pendingSignals
            state.pendingSignals.removeAll(keepingCapacity: true)
            state.signalsPending.store(false, ordering: .relaxed)
            return s
        }
        for s in signals { s() }
    }

    /// Destroys the object `id`. The corresponding ioctl is `IOMMU_DESTROY`.
    ///
    /// - Throws: `ENOENT` if there is no such object; `EBUSY` if another object depends on it.
    public func destroy(_ id: ObjectID) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in try s.destroyByUser(id) }
    }

    /// The host page size of the context.
    public var pageSize: UInt64 { state.options.pageSize }
    /// The user memory of the context.
    public var memory: any UserMemory { state.memory }

    /// The IDs and kinds of every live object, ascending; for tests and tracing.
    public var objects: [(id: ObjectID, kind: ObjectKind)] {
        lock.withLock { state.slots.compactMap { o in o.flatMap { $0.isLive ? ($0.objectID, $0.kind) : nil } } }
    }

    /// Tears the context down as the kernel does on the last close: every object is destroyed
    /// in dependency order, every pinned page is released.
    public func close() {
        // Devices tell their drivers they are unbound after the lock is released (`Device.destroyed`).
        try? locked { s throws(IOMMUError) in s.destroyAll() }
    }
}

/// Options fixed when a context is created.
public struct ContextOptions: Sendable {
    /// The host page size (the kernel's `PAGE_SIZE`).
    public var pageSize: UInt64
    /// The size of a transparent huge page (the kernel's `HPAGE_SIZE`), used to align automatic IOVA.
    public var hugePageSize: UInt64
    /// Whether the caller holds `CAP_SYS_RESOURCE` (needed to change the accounting mode).
    public var mayChangeAccounting: Bool

    public init(pageSize: UInt64 = 4096, hugePageSize: UInt64 = 2 << 20, mayChangeAccounting: Bool = true) {
        self.pageSize = pageSize
        self.hugePageSize = hugePageSize
        self.mayChangeAccounting = mayChangeAccounting
    }
}

/// How pinned pages are charged, as `IOMMU_OPTION_RLIMIT_MODE` selects.
public enum AccountingMode: Sendable, Equatable {
    /// Not charged.
    case none
    /// Charged to the user (`RLIMIT_MEMLOCK` per user; the kernel's default).
    case perUser
    /// Charged to the process (`mm->pinned_vm`).
    case perProcess
}

/// The state of one context; only touched with the context's lock held.
///
/// The lock is what makes every access exclusive, so the hot fields opt out of Swift's dynamic
/// exclusivity checks (`@exclusivity(unchecked)`), which cost more than the rest of an
/// `IOAS_ALLOC` + `DESTROY` round trip did.
public final class ContextState: @unchecked Sendable {
    weak var context: Context?
    /// Slot `i` holds the object with ID `i` (reserved or live); slot 0 is never used.
    @exclusivity(unchecked) var slots: [IOMMUObject?] = [nil]
    /// Lowest index that may be free.
    @exclusivity(unchecked) var firstFree = 1
    public let memory: any UserMemory
    public let options: ContextOptions
    public internal(set) var accountingMode: AccountingMode = .perUser
    /// Pages currently charged, per accounting mode.
    @exclusivity(unchecked) public internal(set) var chargedPages = ChargedPages()
    /// Work to run after the lock is released.
    @exclusivity(unchecked) var pendingSignals: [@Sendable () -> Void] = []
    /// Whether `pendingSignals` has work: read without the lock after unlocking.
    let signalsPending = Atomic<Bool>(false)
    /// The IOAS used by the VFIO compatibility ioctls.
    var vfioCompatIOAS: ObjectID?
    /// Driver-private state kept per context (the test driver stores its mock objects here).
    public var driverState: [ObjectIdentifier: AnyObject] = [:]
    /// Authorizes PASID attachments when set (see ``PASIDGate``); nil follows the kernel.
    public internal(set) var pasidGate: (any PASIDGate)?

    init(memory: any UserMemory, options: ContextOptions) {
        self.memory = memory
        self.options = options
        slots.reserveCapacity(64)
    }

    /// Queues `work` to run once the lock is released.
    public func afterUnlock(_ work: @escaping @Sendable () -> Void) {
        pendingSignals.append(work)
        signalsPending.store(true, ordering: .relaxed)
    }

    // MARK: object table

    /// Gives `object` the lowest free ID without publishing it (lookups do not see it yet).
    public func reserve(_ object: IOMMUObject) {
        while firstFree < slots.count, slots[firstFree] != nil { firstFree += 1 }
        let id = firstFree
        if id == slots.count { slots.append(object) } else { slots[id] = object }
        object.objectID = ObjectID(UInt32(id))
        firstFree = id + 1
    }

    /// Makes a reserved object visible.
    public func publish(_ object: IOMMUObject) { object.isLive = true }

    /// Reserves and publishes at once.
    public func insert(_ object: IOMMUObject) { reserve(object); publish(object) }

    /// Gives back a reserved (unpublished) object's ID.
    public func abort(_ object: IOMMUObject) {
        let i = Int(object.objectID.rawValue)
        guard i > 0, i < slots.count, slots[i] === object else { return }
        slots[i] = nil
        object.isLive = false
        if i < firstFree { firstFree = i }
        while slots.count > 1, slots[slots.count - 1] == nil { slots.removeLast() }
    }

    /// The live object `id`, of any kind.
    public func object(_ id: ObjectID) throws(IOMMUError) -> IOMMUObject {
        let i = Int(id.rawValue)
        guard i > 0, i < slots.count, let o = slots[i], o.isLive else { throw .noEntry("no such object") }
        return o
    }

    /// The live object `id` if it is a `T`; `ENOENT` otherwise, as the kernel's typed lookup.
    public func object<T: IOMMUObject>(_ id: ObjectID, as: T.Type) throws(IOMMUError) -> T {
        guard let o = try object(id) as? T else { throw .noEntry("object is of another type") }
        return o
    }

    /// Removes a live object the user asked to destroy.
    func destroyByUser(_ id: ObjectID) throws(IOMMUError) {
        let o = try object(id)
        guard o.users == 0 else { throw .busy("object is in use") }
        if let d = o as? Device, d.boundByDriver { throw .busy("device is owned by its driver") }
        remove(o)
    }

    /// Takes `o` out of the table and lets it release what it holds.
    public func remove(_ o: IOMMUObject) {
        let i = Int(o.objectID.rawValue)
        guard i > 0, i < slots.count, slots[i] === o else { return }
        o.isLive = false
        slots[i] = nil
        if i < firstFree { firstFree = i }
        o.destroyed(in: self)
        while slots.count > 1, slots[slots.count - 1] == nil { slots.removeLast() }
    }

    /// Destroys everything, dependents first.
    func destroyAll() {
        // Repeatedly remove objects nobody depends on; driver-owned objects release their devices.
        var progress = true
        while progress {
            progress = false
            for slot in slots.reversed() {
                guard let o = slot, o.isLive, o.users == 0 else { continue }
                if let d = o as? Device, d.boundByDriver { continue }
                remove(o)
                progress = true
            }
        }
        for slot in slots { if let o = slot, o.isLive { o.users = 0; remove(o) } }
    }

    /// Every live object of type `T`, ascending by ID.
    public func all<T: IOMMUObject>(_ type: T.Type) -> [T] {
        slots.compactMap { $0.flatMap { $0.isLive ? $0 as? T : nil } }
    }

    /// Whether the table holds no objects at all (reserved or live).
    public var isEmpty: Bool { slots.allSatisfy { $0 == nil } }
}

extension Context {
    /// Runs `body` with the context locked, for drivers that combine several steps into one
    /// atomic operation (the test driver's mock-domain command, for example). `body` must not
    /// call back into this context's public API (it would deadlock); it uses the `ContextState`
    /// methods instead.
    public func withState<R>(_ body: (ContextState) throws(IOMMUError) -> R) throws(IOMMUError) -> R {
        try locked(body)
    }
}

extension ContextState {
    /// Binds a device model (see `Context.bind`).
    public func bind(_ model: any DeviceModel, ownedByDriver: Bool) -> Device {
        let d = Device(model: model, boundByDriver: ownedByDriver)
        insert(d)
        return d
    }

    /// Attaches or replaces the page table of `device` at `pasid` (see `Context.attach`).
    public func attach(_ device: Device, pasid: PASID?, to pt: ObjectID, replace: Bool) throws(IOMMUError) -> ObjectID {
        try changePageTable(device: device, pasid: pasid, to: pt, replace: replace)
    }

    /// Detaches `device` at `pasid` (see `Context.detach`).
    public func detach(_ device: Device, pasid: PASID?) { detachHWPT(device: device, pasid: pasid) }

    /// The HWPT attached to `device` at `pasid`.
    public func attached(_ device: Device, pasid: PASID?) -> HWPT? { device.attachments[pasid] }

    /// Unbinds a device: its vDevice becomes a tombstone (its ID stays taken but names nothing),
    /// everything is detached, and the device leaves the table.
    public func unbind(_ device: Device) {
        if let v = device.vdevice, v.isLive { tombstone(v) }
        for pasid in Array(device.attachments.keys) { detachHWPT(device: device, pasid: pasid) }
        device.users = 0
        remove(device)
    }

    /// Destroys `o` but keeps its ID taken, so lookups of it fail with `ENOENT` until the user
    /// destroys the ID (which then also fails with `ENOENT`, as the kernel's tombstones do).
    public func tombstone(_ o: IOMMUObject) {
        o.isLive = false
        o.destroyed(in: self)
    }
}

/// Pages charged per accounting mode; three counters, no hashing on the pin path.
public struct ChargedPages: Sendable {
    var none: UInt64 = 0, perUser: UInt64 = 0, perProcess: UInt64 = 0
    public subscript(mode: AccountingMode, default defaultValue: UInt64 = 0) -> UInt64 {
        get {
            switch mode { case .none: none; case .perUser: perUser; case .perProcess: perProcess }
        }
        set {
            switch mode { case .none: none = newValue; case .perUser: perUser = newValue; case .perProcess: perProcess = newValue }
        }
    }
}
