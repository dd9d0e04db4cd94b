// A VT-d remapping unit in scalable mode: the hardware side of DMA remapping.
//
// What the unit does for one request (`translate`):
//
//   requester ID ─► context cache ─(miss)─► root entry ─► context entry
//                ─► PASID cache (RID, PASID or RID_PASID) ─(miss)─► PASID dir entry ─► PASID entry
//                ─► IOTLB (tag: DID, PASID unless second-stage, privilege) ─(miss)─► walk by PGTT
//                ─► fault: fault recording register (unless FPD) and a FaultRecord to the device
//
// Caches and their tags (and the invalidation descriptors that remove entries, see
// `VTdUnit+Invalidation.swift`):
//   - context cache: by requester ID (present entries only);
//   - PASID cache: by requester ID and PASID, remembering the entry's DID;
//   - IOTLB (`iotlb`): second-stage translations tagged (DID, no PASID) — shared by every PASID
//     of the domain — and first-stage and pass-through translations tagged (DID, PASID);
//   - nested IOTLB (`nestedIOTLB`): combined first+second-stage translations tagged (DID,
//     PASID). A separate structure because a page-selective IOTLB invalidation names a
//     second-stage (guest-physical) range, which cannot be matched against the first-stage input
//     of a combined entry: such an invalidation drops every combined entry of the DID;
//   - device TLBs are the devices' ATCs; the unit answers ATS translation requests and sends
//     ATC invalidations to the device's endpoint.
// Not-present and faulting entries are never cached (CAP.CM = 0). Paging-structure caches are
// not modelled, so IH (leaf-only) only matters to the entries the caches hold.
//
// Locks. `state` (a pthread-based `Locked`, which ThreadSanitizer models) guards the
// registers, the context and PASID caches, fault records and the endpoint table; it is never
// held while calling a device or running a walk. The
// IOTLBs are lock-free translation caches (per-set seqlocks), and `resolutions` (a lock-free
// `ResolutionCache`, filled under `state`) holds the IOTLB tag of recently resolved requesters:
// a request whose resolution and translation are cached takes no lock at all. `queueLock` serializes
// invalidation-queue processing; it is taken before `state` and may be held while calling a
// device (ATC invalidation, page group response). Interrupt callbacks run with no lock held.
//
// Exactness. A walk takes a fill ticket first and inserts only if no invalidation started in
// between; an invalidation holds each cache set it clears. So once an invalidation descriptor
// (and the wait descriptor after it) completed, no translate call that starts afterwards sees an
// entry it covered. A wait descriptor after any cache invalidation also drains every connected
// device's DMA (`DeviceEndpoint.drainDMA`), so an access that looked up an entry before it was
// removed has landed before the wait completes.

import IOASIDStructures

/// Register offsets of the VT-d register file (VT-d spec §10.4) that the model implements.
public enum VTdRegister {
    /// `VER_REG` (32-bit): architecture version, 6.0 here.
    public static let version = 0x00
    /// `CAP_REG` (64-bit, read-only).
    public static let capability = 0x08
    /// `ECAP_REG` (64-bit, read-only).
    public static let extendedCapability = 0x10
    /// `GCMD_REG` (32-bit, write): TE, SRTP, WBF, QIE.
    public static let globalCommand = 0x18
    /// `GSTS_REG` (32-bit, read): TES, RTPS, WBFS, QIES.
    public static let globalStatus = 0x1C
    /// `RTADDR_REG` (64-bit): root table address (63:12) and translation table mode (11:10).
    public static let rootTableAddress = 0x20
    /// `FSTS_REG` (32-bit): PFO, PPF, IQE, ICE, ITE (write 1 to clear), FRI.
    public static let faultStatus = 0x34
    /// `IQH_REG` (64-bit, read-only): the byte offset (18:4) of the next descriptor hardware reads.
    public static let invalidationQueueHead = 0x80
    /// `IQT_REG` (64-bit): the byte offset (18:4) of the next descriptor software writes;
    /// writing it makes hardware process the descriptors up to it.
    public static let invalidationQueueTail = 0x88
    /// `IQA_REG` (64-bit): queue base (63:12), DW (11, 256-bit descriptors) and QS (2:0, 2^QS pages).
    public static let invalidationQueueAddress = 0x90
    /// `ICS_REG` (32-bit): IWC (bit 0), invalidation wait descriptor complete; write 1 to clear.
    public static let invalidationCompletionStatus = 0x9C
    /// `IQER_REG` (64-bit, read-only): IQEI (3:0), the invalidation queue error information.
    public static let invalidationQueueErrorRecord = 0xB0
    /// `PQH_REG` (64-bit): the byte offset (18:5) of the next page request software reads.
    public static let pageRequestQueueHead = 0xC0
    /// `PQT_REG` (64-bit, read-only): the byte offset (18:5) hardware writes the next request at.
    public static let pageRequestQueueTail = 0xC8
    /// `PQA_REG` (64-bit): page request queue base (63:12) and PQS (2:0, 2^PQS pages).
    public static let pageRequestQueueAddress = 0xD0
    /// `PRS_REG` (32-bit): PPR (bit 0) pending page request, PRO (bit 1) overflow; write 1 to clear.
    public static let pageRequestStatus = 0xDC
    /// The first fault recording register (CAP.FRO); register `i` is 16 bytes at `+ 16 * i`.
    public static let faultRecording = VTdConfiguration.faultRecordingOffset
}

/// Bits of `GCMD_REG` / `GSTS_REG`.
public enum VTdGlobalCommand {
    /// TE / TES (bit 31): translation enable.
    public static let translationEnable: UInt32 = 1 << 31
    /// SRTP / RTPS (bit 30): set (latch) the root table pointer.
    public static let setRootTablePointer: UInt32 = 1 << 30
    /// WBF / WBFS (bit 27): write buffer flush.
    public static let writeBufferFlush: UInt32 = 1 << 27
    /// QIE / QIES (bit 26): queued invalidation enable.
    public static let queuedInvalidationEnable: UInt32 = 1 << 26
}

/// A VT-d remapping unit (DMAR unit) in scalable mode, with its caches, invalidation queue,
/// fault recording registers and page request queue, translating the DMA of the devices
/// behind it. See the comment at the top of VTdUnit.swift for the caches and the locks.
///
/// Software programs it as the Linux intel driver programs hardware: through the registers
/// (``readRegister(_:)`` / ``writeRegister(_:_:)``) and the tables in ``memory``; the software
/// helpers ``VTdInvalidationQueue``, ``VTdPageRequestQueue`` and ``VTdHostTables`` do the usual
/// steps. Devices reach it through ``TranslationAgent``.
public final class VTdUnit: TranslationAgent, @unchecked Sendable {
    /// The host-physical memory: tables, queues and DMA targets.
    public let memory: PhysicalMemory
    /// What the unit supports.
    public let configuration: VTdConfiguration
    /// The Capability Register value.
    public let capability: VTdCapability
    /// The Extended Capability Register value.
    public let extendedCapability: VTdExtendedCapability
    /// The IOTLB for second-stage, first-stage and pass-through translations.
    public let iotlb: TranslationCache
    /// The IOTLB for combined (nested) translations.
    public let nestedIOTLB: TranslationCache
    /// The lock-free front of the context and PASID caches for the DMA hot path.
    let resolutions = ResolutionCache()

    /// A weak reference to a connected device.
    struct WeakEndpoint { weak var endpoint: (any DeviceEndpoint)? }

    /// A PASID-cache entry: the PASID table entry, the FPD of its directory entry, and the
    /// page-table formats the entry selects (built once, on the miss).
    struct CachedPASID {
        var entry: VTdPASIDEntry
        var directoryFaultsDisabled: Bool
        var firstStage: X86FirstStageFormat
        var secondStage: VTdSecondStageFormat
    }

    /// Everything `state` guards.
    struct State {
        var globalStatus: UInt32 = 0
        var rootTableRegister: UInt64 = 0
        /// The root table pointer latched by SRTP, with its translation table mode.
        var rootTable: UInt64 = 0
        var scalableMode = false
        /// PFO, IQE, ICE, ITE (PPF and FRI are computed from the records).
        var faultStatus: UInt32 = 0
        var faultRecords: FaultRecordFile
        var nextFaultIndex = 0
        var firstPendingFault = 0
        var invalidationQueueAddress: UInt64 = 0
        var invalidationQueueHead: UInt64 = 0
        var invalidationQueueTail: UInt64 = 0
        var invalidationCompletionStatus: UInt32 = 0
        var invalidationQueueErrorRecord: UInt64 = 0
        var pageRequestQueueAddress: UInt64 = 0
        var pageRequestQueueHead: UInt64 = 0
        var pageRequestQueueTail: UInt64 = 0
        var pageRequestStatus: UInt32 = 0
        var contextCache: [UInt16: VTdContextEntry] = [:]
        var pasidCache: [UInt64: CachedPASID] = [:]
        var endpoints: [UInt16: WeakEndpoint] = [:]
        var faultInterrupt: (@Sendable () -> Void)?
        var pageRequestInterrupt: (@Sendable () -> Void)?
        var statistics = VTdStatistics()
    }

    /// Formats for resolutions that use no table of that stage (never walked).
    let defaultFirstStage = X86FirstStageFormat()
    let defaultSecondStage: VTdSecondStageFormat

    let state: Locked<State>
    /// Serializes invalidation-queue processing (taken before `state`). Holds whether a cache
    /// invalidation was executed since the last wait descriptor: the next wait drains DMA first.
    let queueLock = Locked<Bool>(false)

    /// Creates a unit over `memory` with `configuration`, its IOTLBs of geometry `iotlb`.
    /// Translation is disabled until software sets a root table and TE.
    public init(memory: PhysicalMemory, configuration: VTdConfiguration = VTdConfiguration(),
                iotlb: TranslationCache.Configuration = .iotlb) {
        precondition((1...256).contains(configuration.faultRecordingRegisters), "1 … 256 fault recording registers")
        self.memory = memory
        self.configuration = configuration
        capability = configuration.capability
        extendedCapability = configuration.extendedCapability
        self.iotlb = TranslationCache(iotlb)
        nestedIOTLB = TranslationCache(iotlb)
        defaultSecondStage = VTdSecondStageFormat(addressWidth: 48, hostAddressWidth: configuration.hostAddressWidth)
        let records = UnsafeMutablePointer<VTdFaultRecord>.allocate(capacity: configuration.faultRecordingRegisters)
        records.initialize(repeating: VTdFaultRecord(low: 0, high: 0), count: configuration.faultRecordingRegisters)
        state = Locked(State(faultRecords: FaultRecordFile(base: records, count: configuration.faultRecordingRegisters)))
    }

    deinit {
        state.withLock { $0.faultRecords.base.deallocate() }
    }

    /// The fault recording registers: fixed storage (recording a fault never allocates), only
    /// touched with `state` locked.
    struct FaultRecordFile {
        let base: UnsafeMutablePointer<VTdFaultRecord>
        let count: Int
        subscript(i: Int) -> VTdFaultRecord {
            get { base[i] }
            nonmutating set { base[i] = newValue }
        }
        /// Whether any register holds a fault.
        var anyPending: Bool {
            for i in 0..<count where base[i].isFault { return true }
            return false
        }
    }

    // MARK: Interrupts and statistics

    /// Called (with no lock held) whenever the unit records a fault: the fault event interrupt.
    public func setFaultInterrupt(_ handler: (@Sendable () -> Void)?) {
        state.withLock { $0.faultInterrupt = handler }
    }

    /// Called (with no lock held) whenever the unit writes a page request into the page request
    /// queue: the page request event interrupt.
    public func setPageRequestInterrupt(_ handler: (@Sendable () -> Void)?) {
        state.withLock { $0.pageRequestInterrupt = handler }
    }

    /// Counters of the unit's structure caches and walks.
    public var statistics: VTdStatistics { state.withLock { $0.statistics } }

    // MARK: Devices

    /// Connects a device so ATC invalidations and page group responses reach it (weakly held).
    public func connect(_ endpoint: any DeviceEndpoint) {
        state.withLock { $0.endpoints[endpoint.requesterID.rawValue] = WeakEndpoint(endpoint: endpoint) }
    }

    func endpoint(_ rid: UInt16) -> (any DeviceEndpoint)? {
        state.withLock { $0.endpoints[rid]?.endpoint }
    }

    /// Waits until every connected device has finished the DMA it began before the call (see
    /// ``DeviceEndpoint/drainDMA()``). Called with `queueLock` held and `state` not held.
    func drainConnectedDevices() {
        let devices: [any DeviceEndpoint] = state.withLock { s in s.endpoints.values.compactMap { $0.endpoint } }
        for d in devices { d.drainDMA() }
    }
}

/// Counters of a unit's context and PASID caches and table walks (the IOTLBs count their own).
public struct VTdStatistics: Hashable, Sendable {
    /// Context-cache hits and misses.
    public var contextHits: UInt64 = 0, contextMisses: UInt64 = 0
    /// PASID-cache hits and misses.
    public var pasidHits: UInt64 = 0, pasidMisses: UInt64 = 0
    /// Page-table walks (IOTLB misses that walked).
    public var walks: UInt64 = 0
    /// Faults recorded into fault recording registers, and faults dropped by overflow (PFO).
    public var faultsRecorded: UInt64 = 0, faultsOverflowed: UInt64 = 0
    /// Page requests queued, and those that found the queue full.
    public var pageRequests: UInt64 = 0, pageRequestOverflows: UInt64 = 0
    /// Creates zero counters.
    public init() {}
}
