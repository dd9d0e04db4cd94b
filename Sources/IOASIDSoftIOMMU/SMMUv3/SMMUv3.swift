// The SMMUv3 model: an Arm System MMU version 3 in front of a PhysicalMemory, programmed as the
// architecture specification (IHI 0070) describes, bit-exactly in memory: a stream table of STEs
// indexed by StreamID (linear or 2-level), CD tables indexed by SubstreamID (PASID), Arm
// VMSAv8-64 stage-1 and stage-2 translation tables, a command queue software produces into, and
// an event queue and a PRI queue the SMMU produces into. Devices reach memory only through it
// (`TranslationAgent`).
//
// Files of the model:
//   SMMUv3.swift                  the device: registers, interrupts, connected endpoints
//   SMMUv3Configuration.swift     STE and CD fetch, validation (ILLEGAL → C_BAD_*), config caches
//   SMMUv3Translation.swift       translation: stage 1, stage 2, nested (2D walk), the TLB, faults
//   SMMUv3CommandQueue.swift      command consumption: CFGI_*, TLBI_*, ATC_INV, PRI_RESP, CMD_SYNC
//   SMMUv3OutputQueues.swift      the event queue and the PRI queue
//   SMMUv3StreamTableEntry.swift, SMMUv3ContextDescriptor.swift, SMMUv3Command.swift,
//   SMMUv3Records.swift, SMMUv3Registers.swift, SMMUv3Queue.swift, SMMUv3Fields.swift: encodings
//
// Vocabulary. StreamID (SID) = the PCI requester ID of the device; SubstreamID (SSID) = its
// PASID. VMID tags TLB entries of a stream (STE.S2VMID), ASID those of a substream (CD.ASID).
//
// Invalidation. Commands are consumed as soon as software moves CMDQ_PROD; the effects of
// CFGI_*, TLBI_* and ATC_INV are applied when the CMD_SYNC that follows them is consumed, the
// latest point the architecture allows (§4.1.4, §4.3, §4.4): a cached configuration or
// translation stays in use until the CMD_SYNC and never after it.
//
// Locks, in the order they nest: `commandLock` (command consumption, one consumer at a time),
// then `state` (registers, queue indexes, configuration caches), then `endpoints`. The TLB is a
// `TranslationCache` and takes no lock on lookups. Nothing calls out — to a device endpoint or
// to the interrupt handler — while `state` is held; interrupts are delivered after every SMMU
// lock is released, so a handler may read and write registers (and produce commands).

import IOASIDStructures

/// The interrupts an SMMUv3 raises (the wired or MSI interrupts of §3.18).
public struct SMMUv3Interrupts: OptionSet, Hashable, Sendable {
    /// The raw bits.
    public let rawValue: UInt8
    /// Interrupts from raw bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Records were written to the event queue (or it overflowed).
    public static let eventQueue = SMMUv3Interrupts(rawValue: 1 << 0)
    /// Records were written to the PRI queue (or it overflowed).
    public static let priQueue = SMMUv3Interrupts(rawValue: 1 << 1)
    /// A global error became active (`SMMU_GERROR`, e.g. `CMDQ_ERR`).
    public static let globalError = SMMUv3Interrupts(rawValue: 1 << 2)
}

/// An Arm SMMUv3 model translating device DMA into a ``PhysicalMemory``.
///
/// Build one over the memory its structures and DMA targets live in, program it through its
/// registers as a driver does (``write32(_:_:)``, ``write64(_:_:)``, structures written into
/// ``memory``), connect devices (``PCIFunction`` connects itself), and let them issue DMA:
///
/// ```swift
/// let memory = PhysicalMemory()
/// let smmu = SMMUv3(memory: memory)
/// smmu.interruptHandler = { irq in /* drain the event / PRI queue */ }
/// smmu.write64(.strtabBase, streamTable)
/// smmu.write32(.strtabBaseCfg, 8)             // linear, 256 STEs
/// smmu.write64(.cmdqBase, commandQueue | 8)   // 256 commands
/// smmu.write32(.cr0, SMMUv3CR0.smmuEnable | SMMUv3CR0.commandQueueEnable | SMMUv3CR0.eventQueueEnable)
/// let device = PCIFunction(requesterID: RequesterID(bus: 0, device: 1, function: 0), iommu: smmu)
/// ```
///
/// Thread-safe: DMA may be issued from any number of threads while software programs the SMMU.
public final class SMMUv3: TranslationAgent, @unchecked Sendable {
    /// The memory behind the SMMU: stream table, CD tables, translation tables, queues and DMA
    /// targets (all physical addresses here are addresses of this memory).
    public let memory: PhysicalMemory
    /// What this SMMU implements.
    public let features: SMMUv3Features
    /// `SMMU_IDR0`–`SMMU_IDR5`, `SMMU_IIDR`, `SMMU_AIDR`.
    public let idRegisters: SMMUv3IDRegisters
    /// The TLB: translations tagged by VMID (`domain`), ASID (`space`, none for stage-2-only
    /// entries) and the stages they came from.
    public let tlb: TranslationCache
    /// The lock-free front of the STE and CD caches for the DMA hot path: by StreamID and
    /// SubstreamID, the VMID and ASID of the TLB tag (see ``SMMUv3/translate(_:)-(DMARequest)``).
    let resolutions = ResolutionCache()

    /// Everything `state` guards.
    struct State {
        var cr0: UInt32 = 0
        var cr1: UInt32 = 0
        var cr2: UInt32 = 0
        var gbpa: UInt32 = 0
        var irqCtrl: UInt32 = 0
        var gerror: UInt32 = 0
        var gerrorn: UInt32 = 0
        var strtabBase: UInt64 = 0
        var strtabBaseCfg: UInt32 = 0
        var cmdq: SMMUv3QueueState
        var eventq: SMMUv3QueueState
        var priq: SMMUv3QueueState
        /// Configuration caches: decoded STEs by StreamID, decoded CDs by StreamID and CD index.
        var streams: [UInt32: StreamConfig] = [:]
        var contexts: [ContextKey: ContextConfig] = [:]
        var statistics = SMMUv3Statistics()
    }

    let state: Locked<State>
    /// Serializes command consumption; holds the invalidations waiting for a CMD_SYNC.
    let commandLock = Locked(PendingInvalidations())
    let endpointTable = Locked<[UInt32: WeakEndpoint]>([:])
    private let handlerBox = Locked<(@Sendable (SMMUv3Interrupts) -> Void)?>(nil)

    final class WeakEndpoint {
        weak var endpoint: (any DeviceEndpoint)?
        init(_ e: any DeviceEndpoint) { endpoint = e }
    }

    /// Creates an SMMU over `memory` with `features` and a TLB of `tlbConfiguration`. It starts
    /// as after reset: disabled (`SMMUEN == 0`, `GBPA` bypass), queues off.
    public init(memory: PhysicalMemory, features: SMMUv3Features = SMMUv3Features(),
                tlbConfiguration: TranslationCache.Configuration = .iotlb) {
        self.memory = memory
        self.features = features
        idRegisters = features.idRegisters
        tlb = TranslationCache(tlbConfiguration)
        state = Locked(State(cmdq: SMMUv3QueueState(entrySize: 16, maxLog2Size: features.commandQueueMaxLog2),
                             eventq: SMMUv3QueueState(entrySize: SMMUv3Event.size, maxLog2Size: features.eventQueueMaxLog2),
                             priq: SMMUv3QueueState(entrySize: SMMUv3PageRequestRecord.size, maxLog2Size: features.priQueueMaxLog2)))
    }

    /// Called after every SMMU lock is released with the interrupts raised by one operation
    /// (a DMA that recorded an event, a page request, a command queue error).
    public var interruptHandler: (@Sendable (SMMUv3Interrupts) -> Void)? {
        get { handlerBox.withLock { $0 } }
        set { handlerBox.withLock { $0 = newValue } }
    }

    /// Delivers `interrupts` (nothing if empty).
    func raise(_ interrupts: SMMUv3Interrupts) {
        guard !interrupts.isEmpty, let h = interruptHandler else { return }
        h(interrupts)
    }

    // MARK: Endpoints

    /// Connects a device (by its requester ID, which is its StreamID) so that ATC invalidations
    /// and PRI responses reach it. Only a weak reference is kept.
    public func connect(_ endpoint: any DeviceEndpoint) {
        endpointTable.withLock { $0[Self.streamID(endpoint.requesterID)] = WeakEndpoint(endpoint) }
    }

    /// The endpoint with StreamID `sid`, if connected and alive.
    func endpoint(_ sid: UInt32) -> (any DeviceEndpoint)? {
        endpointTable.withLock { $0[sid]?.endpoint }
    }

    /// The StreamID of a PCI requester: its requester ID (segment 0).
    @inlinable
    public static func streamID(_ requesterID: RequesterID) -> UInt32 { UInt32(requesterID.rawValue) }

    // MARK: Registers

    /// Reads a 32-bit register.
    public func read32(_ register: SMMUv3Register) -> UInt32 {
        state.withLock { s in
            switch register {
            case .idr0, .idr1, .idr2, .idr3, .idr4, .idr5:
                idRegisters.idr[Int((register.rawValue - SMMUv3Register.idr0.rawValue) / 4)]
            case .iidr: idRegisters.iidr
            case .aidr: idRegisters.aidr
            case .cr0, .cr0ack: s.cr0
            case .cr1: s.cr1
            case .cr2: s.cr2
            case .gbpa: s.gbpa
            case .irqCtrl, .irqCtrlAck: s.irqCtrl
            case .gerror: s.gerror
            case .gerrorn: s.gerrorn
            case .strtabBase: UInt32(truncatingIfNeeded: s.strtabBase)
            case .strtabBaseCfg: s.strtabBaseCfg
            case .cmdqBase: UInt32(truncatingIfNeeded: s.cmdq.base)
            case .cmdqProd: s.cmdq.prod
            case .cmdqCons: s.cmdq.cons
            case .eventqBase: UInt32(truncatingIfNeeded: s.eventq.base)
            case .eventqProd: s.eventq.prod
            case .eventqCons: s.eventq.cons
            case .priqBase: UInt32(truncatingIfNeeded: s.priq.base)
            case .priqProd: s.priq.prod
            case .priqCons: s.priq.cons
            }
        }
    }

    /// Reads a 64-bit register (the base registers; others read as their 32-bit value).
    public func read64(_ register: SMMUv3Register) -> UInt64 {
        switch register {
        case .strtabBase: state.withLock { $0.strtabBase }
        case .cmdqBase: state.withLock { $0.cmdq.base }
        case .eventqBase: state.withLock { $0.eventq.base }
        case .priqBase: state.withLock { $0.priq.base }
        default: UInt64(read32(register))
        }
    }

    /// Writes a 64-bit register (`STRTAB_BASE`, `CMDQ_BASE`, `EVENTQ_BASE`, `PRIQ_BASE`).
    public func write64(_ register: SMMUv3Register, _ value: UInt64) {
        state.withLock { s in
            resolutions.invalidateAll()
            switch register {
            case .strtabBase: s.strtabBase = value & (SMMUv3Field.mask(51, 6) | (1 << 62))
            case .cmdqBase: s.cmdq.base = value & (SMMUv3Field.mask(51, 5) | 0x1F | (1 << 62))
            case .eventqBase: s.eventq.base = value & (SMMUv3Field.mask(51, 5) | 0x1F | (1 << 62))
            case .priqBase: s.priq.base = value & (SMMUv3Field.mask(51, 5) | 0x1F | (1 << 62))
            default: break
            }
        }
        if ![.strtabBase, .cmdqBase, .eventqBase, .priqBase].contains(register) { write32(register, UInt32(truncatingIfNeeded: value)) }
    }

    /// Writes a 32-bit register. Moving `CMDQ_PROD` (or enabling the command queue, or
    /// acknowledging a command queue error in `GERRORN`) makes the SMMU consume commands before
    /// this returns; the interrupts that raises are delivered before it returns too.
    public func write32(_ register: SMMUv3Register, _ value: UInt32) {
        var consume = false
        state.withLock { s in
            resolutions.invalidateAll()
            switch register {
            case .cr0:
                let enabling = value & SMMUv3CR0.commandQueueEnable != 0 && s.cr0 & SMMUv3CR0.commandQueueEnable == 0
                s.cr0 = value & 0x1F
                consume = enabling
            case .cr1: s.cr1 = value & 0xFFF
            case .cr2: s.cr2 = value & 0x7
            case .gbpa: s.gbpa = value & ~(1 << 31)  // the update completes at once
            case .irqCtrl: s.irqCtrl = value & 0x7
            case .gerrorn:
                s.gerrorn = value & 0x1FD
                consume = (s.gerror ^ s.gerrorn) & SMMUv3GError.commandQueueError == 0
            case .strtabBaseCfg: s.strtabBaseCfg = value & (0x3F | (0x1F << 6) | (0x3 << 16))
            case .cmdqProd:
                s.cmdq.prod = s.cmdq.position(value)
                consume = true
            case .cmdqCons:
                if s.cr0 & SMMUv3CR0.commandQueueEnable == 0 { s.cmdq.cons = s.cmdq.position(value) }
            case .eventqProd:
                if s.cr0 & SMMUv3CR0.eventQueueEnable == 0 { s.eventq.prod = value & (s.eventq.position(~0) | (1 << 31)) }
            case .eventqCons: s.eventq.cons = value & (s.eventq.position(~0) | (1 << 31))
            case .priqProd:
                if s.cr0 & SMMUv3CR0.priQueueEnable == 0 { s.priq.prod = value & (s.priq.position(~0) | (1 << 31)) }
            case .priqCons: s.priq.cons = value & (s.priq.position(~0) | (1 << 31))
            case .strtabBase, .cmdqBase, .eventqBase, .priqBase:
                break
            default:
                break  // read-only registers ignore writes
            }
        }
        if register == .strtabBase || register == .cmdqBase || register == .eventqBase || register == .priqBase {
            write64(register, UInt64(value))
        }
        if consume { consumeCommands() }
    }

    // MARK: Inspection

    /// Counters since creation.
    public var statistics: SMMUv3Statistics { state.withLock { $0.statistics } }

    /// The number of configurations cached: STEs and CDs.
    public var cachedConfigurationCount: (streams: Int, contexts: Int) {
        state.withLock { ($0.streams.count, $0.contexts.count) }
    }
}

/// Counters of an ``SMMUv3``.
public struct SMMUv3Statistics: Hashable, Sendable {
    /// STEs fetched from the stream table (configuration cache misses).
    public var steFetches = 0
    /// CDs fetched from CD tables.
    public var cdFetches = 0
    /// Translation table walks (TLB misses that walked).
    public var walks = 0
    /// Translation table descriptors read by walks (every stage, including stage-2 reads made
    /// for stage-1 table addresses and CD addresses in nested configurations).
    public var tableReads = 0
    /// Commands consumed.
    public var commands = 0
    /// CMD_SYNCs completed.
    public var syncs = 0
    /// Event records written (not counting those lost to overflow).
    public var events = 0
    /// Events lost because the event queue was full or disabled.
    public var eventsLost = 0
    /// PRI queue entries written.
    public var pageRequests = 0
    /// Page requests answered automatically (queue disabled or overflowing).
    public var pageRequestsAutoResponded = 0
}
