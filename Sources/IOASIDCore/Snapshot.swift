import IOASIDStructures

// A read-only picture of a context: every live object and how they connect, each IOAS's
// IOVA space, and the pinned-page accounting, as plain values that outlive the context.
// Taken under the context lock in one pass, so the picture is consistent; nothing in it
// refers back to a live object. Used by reports and tests; never on a hot path.

/// The state of one context at one moment, as plain values (``Context/snapshot()``).
public struct ContextSnapshot: Sendable, Equatable {
    /// An area of an IOAS: a span of IOVA and the memory behind it.
    public struct Area: Sendable, Equatable {
        /// The IOVA the area covers.
        public var iova: IOVARange
        /// The host (user) address the first IOVA translates to.
        public var userAddress: UInt64
        public var readable: Bool
        public var writable: Bool
        /// Whether the memory comes from a file (`IOMMU_IOAS_MAP_FILE`) rather than user memory.
        public var fromFile: Bool
        public init(iova: IOVARange, userAddress: UInt64, readable: Bool, writable: Bool, fromFile: Bool) {
            self.iova = iova
            self.userAddress = userAddress
            self.readable = readable
            self.writable = writable
            self.fromFile = fromFile
        }
    }

    /// A reserved span of an IOAS and who reserved it.
    public struct Reserved: Sendable, Equatable {
        public enum Owner: Sendable, Equatable {
            /// An explicit reservation (the test driver's `ADD_RESERVED`).
            case user
            /// Outside the aperture of an attached domain.
            case domain
            /// A device's reserved region (an MSI window), by device ID.
            case device(UInt32)
        }
        public var range: IOVARange
        public var owner: Owner
        public init(range: IOVARange, owner: Owner) { self.range = range; self.owner = owner }
    }

    /// An I/O address space.
    public struct IOAS: Sendable, Equatable {
        public var id: UInt32
        /// Areas, ascending by IOVA.
        public var areas: [Area]
        /// Spans automatic IOVA is restricted to (empty: no restriction).
        public var allowed: [IOVARange]
        /// Reserved spans, as recorded (they may overlap).
        public var reserved: [Reserved]
        /// The spans usable for mapping: the holes between the merged reserved spans
        /// (what `IOMMU_IOAS_IOVA_RANGES` reports).
        public var usable: [IOVARange]
        /// The alignment IOVA, lengths and offsets must have.
        public var iovaAlignment: UInt64
        public init(id: UInt32, areas: [Area] = [], allowed: [IOVARange] = [], reserved: [Reserved] = [],
                    usable: [IOVARange] = [.all], iovaAlignment: UInt64 = 1) {
            self.id = id
            self.areas = areas
            self.allowed = allowed
            self.reserved = reserved
            self.usable = usable
            self.iovaAlignment = iovaAlignment
        }
    }

    /// A hardware page table.
    public struct HWPT: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            /// Filled from IOAS `ioas`.
            case paging(ioas: UInt32)
            /// A guest stage-1 table over paging HWPT `parent`, through vIOMMU `viommu` if any.
            case nested(parent: UInt32, viommu: UInt32?)
            /// An SVA bind: the device shares process `pid`'s page table.
            case sva(pid: Int32)
        }
        public var id: UInt32
        public var kind: Kind
        /// Created by attaching a device straight to an IOAS.
        public var isAutoDomain: Bool
        public var isNestParent: Bool
        public var pasidCompatible: Bool
        public var dirtyTracking: Bool
        /// The fault queue the HWPT's page faults go to.
        public var faultQueue: UInt32?
        public init(id: UInt32, kind: Kind, isAutoDomain: Bool = false, isNestParent: Bool = false,
                    pasidCompatible: Bool = false, dirtyTracking: Bool = false, faultQueue: UInt32? = nil) {
            self.id = id
            self.kind = kind
            self.isAutoDomain = isAutoDomain
            self.isNestParent = isNestParent
            self.pasidCompatible = pasidCompatible
            self.dirtyTracking = dirtyTracking
            self.faultQueue = faultQueue
        }
    }

    /// What is attached to a device at one PASID (nil: the whole device, by RID).
    public struct Attachment: Sendable, Equatable {
        public var pasid: PASID?
        public var hwpt: UInt32
        public init(pasid: PASID?, hwpt: UInt32) { self.pasid = pasid; self.hwpt = hwpt }
    }

    /// A bound device.
    public struct Device: Sendable, Equatable {
        public var id: UInt32
        /// The device model's type name (what kind of device it is).
        public var model: String
        /// Bound by a driver that owns its lifetime (the test driver's mock devices).
        public var boundByDriver: Bool
        /// Attachments, the RID first, then ascending by PASID.
        public var attachments: [Attachment]
        public init(id: UInt32, model: String, boundByDriver: Bool = false, attachments: [Attachment] = []) {
            self.id = id
            self.model = model
            self.boundByDriver = boundByDriver
            self.attachments = attachments
        }
    }

    /// An in-process user of an IOAS.
    public struct Access: Sendable, Equatable {
        public var id: UInt32
        public var ioas: UInt32?
        /// Spans it pinned.
        public var pinned: [IOVARange]
        public init(id: UInt32, ioas: UInt32?, pinned: [IOVARange] = []) { self.id = id; self.ioas = ioas; self.pinned = pinned }
    }

    /// A vIOMMU.
    public struct VIOMMU: Sendable, Equatable {
        public var id: UInt32
        public var type: UInt32
        /// The nesting-parent paging HWPT.
        public var parent: UInt32
        public init(id: UInt32, type: UInt32, parent: UInt32) { self.id = id; self.type = type; self.parent = parent }
    }

    /// A device as a vIOMMU's guest sees it.
    public struct VDevice: Sendable, Equatable {
        public var id: UInt32
        public var viommu: UInt32
        public var device: UInt32
        public var virtualID: UInt64
        public init(id: UInt32, viommu: UInt32, device: UInt32, virtualID: UInt64) {
            self.id = id; self.viommu = viommu; self.device = device; self.virtualID = virtualID
        }
    }

    /// A fault queue, or a vIOMMU's event queue (`viommu` set).
    public struct Queue: Sendable, Equatable {
        public var id: UInt32
        /// The vIOMMU of a vEVENT queue; nil for a fault queue.
        public var viommu: UInt32?
        /// Records (fault groups, events) not yet read.
        public var pending: Int
        /// Fault groups read and not yet answered (0 for an event queue).
        public var awaitingResponse: Int
        public init(id: UInt32, viommu: UInt32? = nil, pending: Int = 0, awaitingResponse: Int = 0) {
            self.id = id; self.viommu = viommu; self.pending = pending; self.awaitingResponse = awaitingResponse
        }
    }

    /// A HW queue of a vIOMMU.
    public struct HWQueue: Sendable, Equatable {
        public var id: UInt32
        public var viommu: UInt32
        public var index: UInt32
        public var base: UInt64
        public var length: UInt64
        public init(id: UInt32, viommu: UInt32, index: UInt32, base: UInt64, length: UInt64) {
            self.id = id; self.viommu = viommu; self.index = index; self.base = base; self.length = length
        }
    }

    /// An object of another kind (a driver's private object).
    public struct Other: Sendable, Equatable {
        public var id: UInt32
        public var kind: String
        public init(id: UInt32, kind: String) { self.id = id; self.kind = kind }
    }

    public var ioas: [IOAS] = []
    public var hwpts: [HWPT] = []
    public var devices: [Device] = []
    public var accesses: [Access] = []
    public var viommus: [VIOMMU] = []
    public var vdevices: [VDevice] = []
    public var faultQueues: [Queue] = []
    public var eventQueues: [Queue] = []
    public var hwQueues: [HWQueue] = []
    public var others: [Other] = []
    /// The accounting mode pinned pages are charged to.
    public var accountingMode: AccountingMode = .perUser
    /// Pages charged, per accounting mode.
    public var chargedPages: ChargedPages = ChargedPages()
    /// Distinct host pages pinned by the context's areas and accesses (pages shared by
    /// several areas, e.g. after `IOMMU_IOAS_COPY`, count once).
    public var pinnedPages: UInt64 = 0
    /// The host page size.
    public var pageSize: UInt64 = 4096

    public init() {}

    /// How many objects the snapshot holds.
    public var objectCount: Int {
        ioas.count + hwpts.count + devices.count + accesses.count + viommus.count + vdevices.count
            + faultQueues.count + eventQueues.count + hwQueues.count + others.count
    }

    /// A measure of how much the context held: objects, areas and attachments. A report keeps
    /// the last snapshot where this was largest.
    public var weight: Int {
        objectCount + ioas.reduce(0) { $0 + $1.areas.count } + devices.reduce(0) { $0 + $1.attachments.count }
    }
}

extension ChargedPages: Equatable {
    public static func == (a: ChargedPages, b: ChargedPages) -> Bool {
        a.none == b.none && a.perUser == b.perUser && a.perProcess == b.perProcess
    }

    /// The given counts, for hand-built snapshots.
    public init(perUser: UInt64, perProcess: UInt64 = 0, notCharged: UInt64 = 0) {
        self.init()
        self.perUser = perUser
        self.perProcess = perProcess
        self.none = notCharged
    }
}

extension Context {
    /// A consistent, read-only picture of the context: live objects, their connections, each
    /// IOAS's IOVA space and the pinned-page accounting. Takes the context lock once.
    ///
    /// Complexity: O(objects + areas + reserved spans); it allocates, so it is not for hot paths.
    public func snapshot() -> ContextSnapshot {
        lock.withLock { state.snapshot() }
    }
}

extension ContextState {
    func snapshot() -> ContextSnapshot {
        var s = ContextSnapshot()
        s.accountingMode = accountingMode
        s.chargedPages = chargedPages
        s.pageSize = options.pageSize
        var pinnedPages: [ObjectIdentifier: Pages] = [:]
        for case let o? in slots where o.isLive {
            let id = o.objectID.rawValue
            switch o {
            case let ioas as IOASIDCore.IOAS:
                let t = ioas.table
                var areas: [ContextSnapshot.Area] = []
                for entry in t.areas.all {
                    let a = entry.value
                    pinnedPages[ObjectIdentifier(a.pages)] = a.pages
                    var fromFile = false
                    if case .file = a.pages.source { fromFile = true }
                    areas.append(.init(iova: entry.range, userAddress: a.pages.hostAddress(a.pagesOffset),
                                       readable: a.readable, writable: a.writable, fromFile: fromFile))
                }
                let reserved = t.reserved.map { r -> ContextSnapshot.Reserved in
                    switch r.owner {
                    case .user: .init(range: r.range, owner: .user)
                    case .domain: .init(range: r.range, owner: .domain)
                    case .device(let d): .init(range: r.range, owner: .device(d.rawValue))
                    }
                }
                s.ioas.append(.init(id: id, areas: areas, allowed: t.allowed.all.map(\.range), reserved: reserved,
                                    usable: t.mergedReserved().holes(in: .all), iovaAlignment: t.iovaAlignment))
            case let h as HWPTPaging:
                s.hwpts.append(.init(id: id, kind: .paging(ioas: h.ioas.objectID.rawValue), isAutoDomain: h.isAutoDomain,
                                     isNestParent: h.isNestParent, pasidCompatible: h.pasidCompatible,
                                     dirtyTracking: h.dirtyTrackingRequested, faultQueue: h.fault?.objectID.rawValue))
            case let h as HWPTNested:
                s.hwpts.append(.init(id: id, kind: .nested(parent: h.parent.objectID.rawValue, viommu: h.viommu?.objectID.rawValue),
                                     pasidCompatible: h.pasidCompatible, faultQueue: h.fault?.objectID.rawValue))
            case let h as HWPTSVA:
                s.hwpts.append(.init(id: id, kind: .sva(pid: h.addressSpace.pid), pasidCompatible: true,
                                     faultQueue: h.fault?.objectID.rawValue))
            case let d as IOASIDCore.Device:
                let attachments = d.attachments
                    .map { ContextSnapshot.Attachment(pasid: $0.key, hwpt: $0.value.objectID.rawValue) }
                    .sorted { ($0.pasid.map { Int64($0) } ?? -1) < ($1.pasid.map { Int64($0) } ?? -1) }
                s.devices.append(.init(id: id, model: String(describing: type(of: d.model)),
                                       boundByDriver: d.boundByDriver, attachments: attachments))
            case let a as IOASIDCore.Access:
                s.accesses.append(.init(id: id, ioas: a.ioas?.objectID.rawValue,
                                        pinned: a.pins.compactMap { IOVARange(start: $0.iova, length: $0.length) }))
            case let v as IOASIDCore.VIOMMU:
                s.viommus.append(.init(id: id, type: v.type, parent: v.parent.objectID.rawValue))
            case let v as IOASIDCore.VDevice:
                s.vdevices.append(.init(id: id, viommu: v.viommu.objectID.rawValue, device: v.device.objectID.rawValue,
                                        virtualID: v.virtualID))
            case let q as FaultQueue:
                s.faultQueues.append(.init(id: id, pending: q.deliver.count, awaitingResponse: q.awaiting.count))
            case let q as VEventQueue:
                s.eventQueues.append(.init(id: id, viommu: q.viommu.objectID.rawValue, pending: q.deliver.count))
            case let q as IOASIDCore.HWQueue:
                s.hwQueues.append(.init(id: id, viommu: q.viommu.objectID.rawValue, index: q.index, base: q.base, length: q.length))
            default:
                s.others.append(.init(id: id, kind: o.kind.description))
            }
        }
        s.pinnedPages = pinnedPages.values.reduce(0) { $0 + $1.pinnedPageCount }
        return s
    }
}
