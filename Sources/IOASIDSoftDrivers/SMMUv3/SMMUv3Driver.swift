// The Arm SMMUv3 driver under the IOASID core (layer 3 of docs/architecture.md): what the
// kernel's arm-smmu-v3 driver does for iommufd, done to the SMMUv3 model of IOASIDSoftIOMMU
// through its registers, its in-memory structures and its queues.
//
//   SMMUv3Driver.swift        probe and reset, the command queue, interrupts (event and PRI
//                             queues), STE and CD installation, IOMMUDriver
//   SMMUv3Master.swift        a device behind the SMMU (DeviceModel): attach, detach, page responses
//   SMMUv3PagingDomain.swift  stage-1 and stage-2 paging domains (PagingDomain), dirty tracking
//   SMMUv3VIOMMU.swift        the vIOMMU (VIOMMUModel), nested domains from the guest's STE,
//                             invalidation by SMMUv3 command arrays
//   SMMUv3HostMemory.swift    host-physical layout: user pages as RAM, the structure arena
//   SMMUv3UAPI.swift          the uAPI records the driver reads and writes
//
// Locks, in nesting order: `state` (masters, stream and CD tables, the arena, ASID/VMID
// allocation, attached user memory), then `producer` (the command queue's PROD). The SMMU's own
// locks nest inside both. Interrupts: a global error (CERROR_ILL) is handled at once, on the
// thread that produced the command, without taking a driver lock; event and PRI queue records
// are handled on the driver's interrupt queue, which calls into the core (fault queue, vEVENT
// queue) — never on a DMA thread, which may hold a device's in-flight lock that an ATC
// invalidation under the core's lock waits for.

import Dispatch
import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

/// The SMMUv3 driver: one SMMUv3 model in front of host memory, and the devices behind it.
///
/// ```swift
/// let driver = SMMUv3Driver()
/// let device = driver.addDevice(requesterID: RequesterID(bus: 0, device: 2, function: 0),
///                               capabilities: .init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 32))
/// let context = Context(memory: ProcessMemory.shared)
/// let id = try device.bind(to: context)                  // the core's device object
/// let ioas = try context.allocateIOAS()
/// _ = try context.map(ioas, source: .user(address: buffer), length: 4096, iova: 0x10000, access: .readWrite)
/// _ = try context.attach(id, to: ioas.object)
/// _ = device.function.write(address: 0x10000, bytes: [1, 2, 3])   // DMA lands in `buffer`
/// ```
public final class SMMUv3Driver: IOMMUDriver, @unchecked Sendable {
    /// The SMMU.
    public let smmu: SMMUv3
    /// Host-physical memory (see SMMUv3HostMemory.swift for its layout).
    public let memory: PhysicalMemory

    /// The frame allocator window: translation tables.
    static let windowBase: UInt64 = 1 << 47
    static let windowSize: UInt64 = 1 << 30
    /// The structure arena.
    static let arenaBase: UInt64 = windowBase + windowSize
    static let arenaSize: UInt64 = 64 << 20
    /// Queue sizes (log2 entries).
    static let queueLog2: UInt32 = 8
    /// The stream table split (STEs per level-2 table: 2^8, one PCI bus).
    static let streamSplit: UInt32 = 8
    /// CDs per level-2 CD table (64 KiB leaves, `S1Fmt == 0b10`).
    static let cdLeafEntries: UInt32 = 1024

    struct State {
        var arena: StructureArena
        var user: AttachedUserMemory
        /// Level-2 stream tables by level-1 index (2-level), or the linear table at key 0.
        var streamTables: [UInt32: UInt64] = [:]
        var masters: [UInt32: SMMUv3Master] = [:]
        var asids = IDAllocator(first: 1, last: UInt32(UInt16.max))
        var vmids = IDAllocator(first: 1, last: UInt32(UInt16.max))
        /// Events no vIOMMU took (what the kernel logs), oldest first.
        var unhandledEvents: [SMMUv3Event] = []
        /// Commands the SMMU refused (CERROR_ILL) and the driver skipped, oldest first.
        var skippedCommands: [(UInt64, UInt64)] = []
        /// CMD_SYNCs that did not complete.
        var syncTimeouts = 0
    }

    let state: Locked<State>
    /// The command queue producer: its PROD shadow; held while commands are written and
    /// consumed.
    let producer = Locked<UInt32>(0)
    /// Event and PRI queue records are handled here.
    let interruptQueue = DispatchQueue(label: "ioasid.smmuv3.interrupts")

    let twoLevelStreamTable: Bool
    let streamTableBase: UInt64
    let commandQueue: UInt64
    let eventQueue: UInt64
    let priQueue: UInt64

    /// Probes and resets an SMMUv3 model with `features`, as the kernel's driver does: stream
    /// table (2-level with 256 STEs per level-2 table when `IDR1.SIDSIZE > 8`), queues of 256
    /// entries, every StreamID aborting until a device is attached, GBPA abort.
    public init(features: SMMUv3Features = SMMUv3Features()) {
        memory = PhysicalMemory(allocatorBase: Self.windowBase, allocatorLimit: Self.windowBase + Self.windowSize)
        do { _ = try memory.attachRAM(at: Self.arenaBase, length: Self.arenaSize) } catch {
            fatalError("SMMUv3Driver: cannot reserve the structure arena (\(error))")
        }
        smmu = SMMUv3(memory: memory, features: features)
        var arena = StructureArena(base: Self.arenaBase, length: Self.arenaSize)
        // IDR0 / IDR1 as the driver reads them.
        let idr0 = smmu.read32(.idr0), idr1 = smmu.read32(.idr1)
        let sidBits = UInt32(idr1 & 0x3F)
        twoLevelStreamTable = (idr0 >> 27) & 3 == 1 && sidBits > Self.streamSplit
        let l1Bytes: UInt64 = twoLevelStreamTable ? UInt64(8) << UInt64(sidBits - Self.streamSplit) : UInt64(64) << UInt64(sidBits)
        streamTableBase = arena.allocate(l1Bytes)!
        commandQueue = arena.allocate(16 << UInt64(Self.queueLog2))!
        eventQueue = arena.allocate(32 << UInt64(Self.queueLog2))!
        priQueue = arena.allocate(16 << UInt64(Self.queueLog2))!
        var initial = State(arena: arena, user: AttachedUserMemory(memory: memory))
        if !twoLevelStreamTable {
            initial.streamTables[0] = streamTableBase
            for sid in 0..<(UInt64(1) << UInt64(sidBits)) {
                Self.abortSTE.write(to: memory, at: streamTableBase + sid * 64)
            }
        }
        state = Locked(initial)
        // Reset: queues, then tables, then translation (arm_smmu_device_reset's order).
        smmu.write32(.cr0, 0)
        smmu.write32(.gbpa, 1 << 20)
        smmu.write64(.strtabBase, streamTableBase)
        let cfg: UInt32 = twoLevelStreamTable ? (1 << 16) | (Self.streamSplit << 6) | sidBits : sidBits
        smmu.write32(.strtabBaseCfg, cfg)
        smmu.write64(.cmdqBase, commandQueue | UInt64(Self.queueLog2))
        smmu.write64(.eventqBase, eventQueue | UInt64(Self.queueLog2))
        smmu.write64(.priqBase, priQueue | UInt64(Self.queueLog2))
        smmu.write32(.cr2, (1 << 2) | (1 << 1))                 // PTM, RECINVSID
        smmu.interruptHandler = { [weak self] irq in self?.interrupt(irq) }
        var enables = SMMUv3CR0.commandQueueEnable
        smmu.write32(.cr0, enables)
        issue([.cfgiAll, .tlbiNSNHAll])
        enables |= SMMUv3CR0.eventQueueEnable
        if features.pri { enables |= SMMUv3CR0.priQueueEnable }
        if features.ats { enables |= SMMUv3CR0.atsCheck }
        enables |= SMMUv3CR0.smmuEnable
        smmu.write32(.cr0, enables)
    }

    /// The features the SMMU reports.
    public var features: SMMUv3Features { smmu.features }

    /// Stage 1 and stage 2 (the kernel's `ARM_SMMU_FEAT_NESTING`).
    var nesting: Bool { features.stage1 && features.stage2 }

    // MARK: Devices

    /// Adds a PCI function with `requesterID` (its StreamID) behind the SMMU and returns the
    /// device as the core sees it. Its ``SMMUv3Master/function`` issues DMA; the driver enables
    /// its PASID capability as the kernel does at probe, ATS and PRI when a translating domain is
    /// attached.
    public func addDevice(requesterID: RequesterID, capabilities: PCIFunction.Capabilities = PCIFunction.Capabilities()) -> SMMUv3Master {
        let sid = SMMUv3.streamID(requesterID)
        let function = PCIFunction(requesterID: requesterID, capabilities: capabilities, iommu: smmu)
        let ssidBits = min(features.substreamIDBits, capabilities.pasidWidth ?? 0)
        if capabilities.pasidWidth != nil { function.control.pasid = true }
        let master = SMMUv3Master(driver: self, function: function, streamID: sid, ssidBits: ssidBits)
        state.withLock { s in
            precondition(s.masters[sid] == nil, "a device with this requester ID is already behind the SMMU")
            if twoLevelStreamTable { _ = ensureStreamTable(&s, sid: sid) }
            s.masters[sid] = master
        }
        return master
    }

    /// Removes a device: its STE aborts again and it leaves the driver. Unbind it from every
    /// context first.
    public func removeDevice(_ master: SMMUv3Master) {
        var keep: [AnyObject] = []
        defer { withExtendedLifetime(keep) {} }
        state.withLock { s in
            guard s.masters[master.streamID] === master else { return }
            keep = master.references
            master.detachAll(&s)
            s.masters.removeValue(forKey: master.streamID)
        }
    }

    /// The device with `streamID`.
    public func device(streamID: UInt32) -> SMMUv3Master? { state.withLock { $0.masters[streamID] } }

    // MARK: Stream table

    /// The abort STE (V = 1, Config = abort): what every unused StreamID has.
    static let abortSTE: SMMUv3StreamTableEntry = {
        var ste = SMMUv3StreamTableEntry()
        ste.valid = true
        ste.config = .abort
        return ste
    }()

    /// The level-2 table holding `sid`'s STE, allocated (every STE aborting) on first use.
    func ensureStreamTable(_ s: inout State, sid: UInt32) -> UInt64 {
        let index = twoLevelStreamTable ? sid >> Self.streamSplit : 0
        if let t = s.streamTables[index] { return t }
        let bytes = UInt64(64) << UInt64(Self.streamSplit)
        let table = s.arena.allocate(bytes)!
        for i in 0..<(UInt64(1) << UInt64(Self.streamSplit)) { Self.abortSTE.write(to: memory, at: table + i * 64) }
        memory.write64(streamTableBase + UInt64(index) * 8,
                       SMMUv3L1StreamTableDescriptor(span: UInt64(Self.streamSplit) + 1, l2Ptr: table).word)
        s.streamTables[index] = table
        return table
    }

    /// The address of `sid`'s STE.
    func steAddress(_ s: inout State, sid: UInt32) -> UInt64 {
        if twoLevelStreamTable {
            return ensureStreamTable(&s, sid: sid) + UInt64(sid & ((1 << Self.streamSplit) - 1)) * 64
        }
        return streamTableBase + UInt64(sid) * 64
    }

    /// Installs `ste` as `sid`'s STE: a valid STE is first made invalid (and the change
    /// synchronized), so the SMMU never fetches a mix of the old and new entries.
    func installSTE(_ s: inout State, sid: UInt32, _ ste: SMMUv3StreamTableEntry) {
        let address = steAddress(&s, sid: sid)
        let old = SMMUv3StreamTableEntry(memory: memory, at: address)
        if old == ste { return }
        if old.valid {
            memory.write64(address, old.words[0] & ~1)
            issue([.cfgiSTE(streamID: sid, leaf: true)])
        }
        ste.write(to: memory, at: address)
        issue([.cfgiSTE(streamID: sid, leaf: true)])
    }

    // MARK: Command queue

    /// Produces `commands` (and a CMD_SYNC when `sync`) and waits until the SMMU consumed them.
    /// Returns false when a CMD_SYNC did not complete.
    @discardableResult
    func issue(_ commands: [SMMUv3Command], sync: Bool = true) -> Bool {
        var words = commands.map { $0.words }
        if sync { words.append(SMMUv3Command.syncNone.words) }
        return issueRaw(words)
    }

    /// Produces raw commands (batches of at most 255, each waited for).
    @discardableResult
    func issueRaw(_ words: [(UInt64, UInt64)]) -> Bool {
        guard !words.isEmpty else { return true }
        let entries = UInt32(1) << Self.queueLog2
        let positionMask = (entries << 1) - 1
        var completed = true
        producer.withLock { prod in
            var i = 0
            while i < words.count {
                let batch = min(words.count - i, Int(entries) - 1)
                for w in words[i..<(i + batch)] {
                    let slot = commandQueue + UInt64(prod & (entries - 1)) * 16
                    memory.write64(slot, w.0)
                    memory.write64(slot + 8, w.1)
                    prod = (prod + 1) & positionMask
                }
                smmu.write32(.cmdqProd, prod)
                // The model consumes before the register write returns; anything left means
                // the queue stopped (disabled, or an error nobody acknowledged).
                if smmu.read32(.cmdqCons) & positionMask != prod { completed = false }
                i += batch
            }
        }
        if !completed { state.withLock { $0.syncTimeouts += 1 } }
        return completed
    }

    /// TLB invalidations by address for `[iova, iova + length)`: range commands (RIL) of
    /// `(NUM+1) << SCALE` pages, a single-page command for a lone page.
    static func rangeInvalidations(_ iova: UInt64, _ length: UInt64, _ make: (UInt64, SMMUv3TLBIRange) -> SMMUv3Command) -> [SMMUv3Command] {
        var commands: [SMMUv3Command] = []
        var address = iova & ~0xFFF
        var pages = ((iova & 0xFFF) + length + 0xFFF) >> 12
        while pages > 0 {
            let scale = min(pages.trailingZeroBitCount, 31)
            let num = min(pages >> UInt64(scale), 32)
            let chunk = num << UInt64(scale)
            let range = chunk == 1 ? SMMUv3TLBIRange.single : SMMUv3TLBIRange(num: UInt8(num - 1), scale: UInt8(scale), tg: 1)
            commands.append(make(address, range))
            address &+= chunk << 12
            pages -= chunk
        }
        return commands
    }

    /// The ATC invalidation of `sid` (and `ssid`) covering `[iova, iova + length)`: the
    /// naturally aligned power-of-two span of pages that contains it (everything for length 0).
    static func atcInvalidation(sid: UInt32, ssid: UInt32?, iova: UInt64, length: UInt64) -> SMMUv3Command {
        guard length > 0 else { return .atcInv(streamID: sid, substreamID: ssid, global: false, address: 0, size: 52) }
        let first = iova >> 12, last = (iova + length - 1) >> 12
        let log2Span = UInt64(64 - (first ^ last).leadingZeroBitCount)
        let start = (first & ~((1 << log2Span) - 1)) << 12
        return .atcInv(streamID: sid, substreamID: ssid, global: false, address: start, size: UInt8(min(log2Span, 52)))
    }

    // MARK: Interrupts

    /// The SMMU's interrupt line.
    func interrupt(_ irq: SMMUv3Interrupts) {
        if irq.contains(.globalError) { handleGlobalError() }
        if !irq.isDisjoint(with: [.eventQueue, .priQueue]) {
            interruptQueue.async { [weak self] in self?.drainQueues() }
        }
    }

    /// Handles active global errors: an illegal command is logged and replaced by a CMD_SYNC,
    /// and the error acknowledged, so the queue runs on (the kernel's `arm_smmu_cmdq_skip_err`).
    func handleGlobalError() {
        let gerror = smmu.read32(.gerror), gerrorn = smmu.read32(.gerrorn)
        let active = gerror ^ gerrorn
        guard active != 0 else { return }
        if active & SMMUv3GError.commandQueueError != 0 {
            let cons = smmu.read32(.cmdqCons)
            if (cons >> 24) & 0x7F == UInt32(SMMUv3CommandError.illegal.rawValue) {
                let slot = commandQueue + UInt64(cons & ((1 << Self.queueLog2) - 1)) * 16
                let bad = (memory.read64(slot), memory.read64(slot + 8))
                let sync = SMMUv3Command.syncNone.words
                memory.write64(slot, sync.0)
                memory.write64(slot + 8, sync.1)
                state.withLock { $0.skippedCommands.append(bad) }
            }
        }
        smmu.write32(.gerrorn, gerrorn ^ active)
    }

    /// Handles every record waiting in the event and PRI queues now, after the work the
    /// interrupt queue already has. Call it without holding a context lock.
    public func processInterrupts() {
        interruptQueue.sync { drainQueues() }
    }

    /// Takes the records of an output queue (its PROD/CONS registers and base), acknowledging an
    /// overflow.
    func takeRecords(prod prodRegister: SMMUv3Register, cons consRegister: SMMUv3Register, base: UInt64,
                     entrySize: UInt64) -> [[UInt64]] {
        let entries = UInt32(1) << Self.queueLog2
        let positionMask = (entries << 1) - 1
        let prod = smmu.read32(prodRegister)
        var cons = smmu.read32(consRegister) & positionMask
        var out: [[UInt64]] = []
        while cons != prod & positionMask {
            let slot = base + UInt64(cons & (entries - 1)) * entrySize
            out.append((0..<Int(entrySize / 8)).map { memory.read64(slot + UInt64($0) * 8) })
            cons = (cons + 1) & positionMask
        }
        smmu.write32(consRegister, cons | (prod & (1 << 31)))
        return out
    }

    /// Drains both output queues (on the interrupt queue).
    func drainQueues() {
        for words in takeRecords(prod: .eventqProd, cons: .eventqCons, base: eventQueue, entrySize: 32) {
            handleEvent(SMMUv3Event(words: words))
        }
        for words in takeRecords(prod: .priqProd, cons: .priqCons, base: priQueue, entrySize: 16) {
            handlePageRequest(SMMUv3PageRequestRecord(word0: words[0], word1: words[1]))
        }
    }

    /// An event: to the vIOMMU of a nested device (with its virtual StreamID) unless it is a
    /// stage-2 fault, which the host owns; otherwise kept in ``unhandledEvents``.
    func handleEvent(_ event: SMMUv3Event) {
        let forwardable: Bool
        switch event.id {
        case .badSTE, .streamDisabled, .badSubstreamID, .badCD, .translation, .addressSize, .access, .permission:
            forwardable = true
        default:
            forwardable = false
        }
        let target = state.withLock { s -> (Context, VIOMMU, UInt32)? in
            guard forwardable, let master = s.masters[event.streamID], !event.stage2,
                  let v = master.vmaster, let vdevice = v.vdevice, let context = master.binding?.context else { return nil }
            return (context, vdevice.viommu, v.virtualSID)
        }
        guard let (context, viommu, vsid) = target else {
            state.withLock { $0.unhandledEvents.append(event) }
            return
        }
        var record = event
        record.streamID = vsid
        var data = SMMUv3VEventData()
        data.evt = (record.words[0], record.words[1], record.words[2], record.words[3])
        context.reportVEvent(viommu: viommu, type: SMMUv3UAPI.veventqType, data: data.bytes)
    }

    /// A page request: to the core's fault queue of the domain attached where it belongs; a
    /// request no fault queue takes is answered Invalid Request (for the last of its group).
    func handlePageRequest(_ r: SMMUv3PageRequestRecord) {
        let master = state.withLock { $0.masters[r.streamID] }
        var permissions: UInt32 = 0
        if r.read { permissions |= SMMUv3UAPI.faultRead }
        if r.write { permissions |= SMMUv3UAPI.faultWrite }
        if r.execute { permissions |= SMMUv3UAPI.faultExecute }
        if r.privileged { permissions |= SMMUv3UAPI.faultPrivileged }
        if let master, r.last { master.noteGroup(UInt32(r.group), pasid: r.substreamID) }
        var reported = false
        if let master, let target = master.pageRequestTarget(ssid: r.substreamID) {
            do {
                try target.context.reportPageFault(device: target.device, pasid: target.pasid, group: UInt32(r.group),
                                            permissions: permissions, address: r.address, last: r.last)
                reported = true
            } catch {}
        }
        if !reported && r.last {
            master?.forgetGroup(UInt32(r.group))
            issue([.priResp(streamID: r.streamID, substreamID: r.substreamID, group: r.group, response: .denied)], sync: false)
        }
    }

    // MARK: Inspection

    /// Events the driver could hand to no vIOMMU (the kernel logs them), oldest first.
    public var unhandledEvents: [SMMUv3Event] { state.withLock { $0.unhandledEvents } }

    /// Takes ``unhandledEvents``.
    public func takeUnhandledEvents() -> [SMMUv3Event] {
        state.withLock { s in
            defer { s.unhandledEvents.removeAll() }
            return s.unhandledEvents
        }
    }

    /// Commands the SMMU refused with CERROR_ILL, which the driver replaced with CMD_SYNC.
    public var skippedCommands: [(UInt64, UInt64)] { state.withLock { $0.skippedCommands } }

    // MARK: IOMMUDriver

    /// The SMMUv3 model has the guest own the PASID table (CD table): page requests with a PASID
    /// that has no attachment go to the nested domain at the RID.
    public var userPASIDTable: Bool { true }

    /// `IOMMU_HW_INFO_TYPE_ARM_SMMUV3` with `struct iommu_hw_info_arm_smmuv3`: IDR0–IDR5, IIDR,
    /// AIDR read from the SMMU. Capabilities: ATS not supported unless both the SMMU and the
    /// device have it; PASID execute / privileged modes as the device's PASID capability says.
    ///
    /// - Throws: `EOPNOTSUPP` for another info type.
    public func hardwareInfo(device: any DeviceModel, type: UInt32?) throws(IOMMUError) -> HardwareInfo {
        if let type, type != 0, type != SMMUv3UAPI.hwInfoType { throw .notSupported("unknown hardware info type") }
        var info = SMMUv3HardwareInfoData()
        info.idr = (smmu.read32(.idr0), smmu.read32(.idr1), smmu.read32(.idr2), smmu.read32(.idr3), smmu.read32(.idr4),
                    smmu.read32(.idr5))
        info.iidr = smmu.read32(.iidr)
        info.aidr = smmu.read32(.aidr)
        var capabilities: UInt64 = 0
        if let master = device as? SMMUv3Master {
            if !master.atsSupported { capabilities |= SMMUv3UAPI.capabilityATSNotSupported }
            if master.function.capabilities.pasidWidth != nil {
                if master.function.capabilities.executePermission { capabilities |= SMMUv3UAPI.capabilityPASIDExecute }
                if master.function.capabilities.privilegedMode { capabilities |= SMMUv3UAPI.capabilityPASIDPrivileged }
            }
        } else {
            capabilities |= SMMUv3UAPI.capabilityATSNotSupported
        }
        return HardwareInfo(type: SMMUv3UAPI.hwInfoType, data: info.bytes, capabilities: capabilities)
    }

    /// Dirty tracking needs hardware dirty state (`IDR0.HTTU == 0b10`) and coherent walks.
    public func supportsDirtyTracking(device: any DeviceModel) -> Bool {
        features.hardwareDirtyState && features.hardwareAccessFlag && features.coherent && features.stage1
    }

    /// A paging domain, as `arm_smmu_domain_alloc_paging_flags`: stage 1 by default (stage 2
    /// without stage 1), stage 2 for a nesting parent, stage 1 for dirty tracking or PASID use.
    ///
    /// - Throws: `EOPNOTSUPP` for driver data, unknown flag combinations, a nesting parent
    ///   without nesting support, or stage 1 requested without it.
    public func allocatePagingDomain(device: any DeviceModel, flags: HWPTFlags, data: DriverData?,
                                     memory: any UserMemory) throws(IOMMUError) -> any PagingDomain {
        guard device.iommuDevice is SMMUv3Master else { throw .invalid("device is not behind this SMMU") }
        guard flags.isSubset(of: [.dirtyTracking, .pasid, .nestParent]) else { throw .notSupported("flags") }
        guard data == nil else { throw .notSupported("paging domains take no driver data") }
        let stage: SMMUv3PagingDomain.Stage
        switch flags {
        case []:
            stage = features.stage1 ? .stage1 : .stage2
        case [.nestParent]:
            guard nesting else { throw .notSupported("the SMMU cannot nest") }
            stage = .stage2
        case [.dirtyTracking], [.dirtyTracking, .pasid], [.pasid]:
            guard features.stage1 else { throw .notSupported("the SMMU has no stage 1") }
            stage = .stage1
        default:
            throw .notSupported("flag combination")
        }
        return try SMMUv3PagingDomain(driver: self, stage: stage, nestParent: flags.contains(.nestParent),
                                      dirtyTracking: flags.contains(.dirtyTracking))
    }

    /// Nested domains come only from a vIOMMU (`IOMMU_VIOMMU_TYPE_ARM_SMMUV3`), as with the
    /// kernel's driver.
    ///
    /// - Throws: `EOPNOTSUPP`.
    public func allocateNestedDomain(device: any DeviceModel, parent: any PagingDomain, flags: HWPTFlags, data: DriverData,
                                     memory: any UserMemory) throws(IOMMUError) -> any IOMMUDomain {
        throw .notSupported("SMMUv3 nests through a vIOMMU")
    }

    /// A vIOMMU of `IOMMU_VIOMMU_TYPE_ARM_SMMUV3` over the stage-2 nesting parent `parent`.
    ///
    /// - Throws: `EOPNOTSUPP` for another type, or when the SMMU cannot nest (stages, or neither
    ///   a coherent root complex nor stage-2 FWB); `EINVAL` when `parent` is not a stage-2 domain
    ///   of this SMMU.
    public func supportsVIOMMU(type: UInt32, device: any DeviceModel) -> Bool {
        type == SMMUv3UAPI.viommuType && nesting && (features.forcedWriteBack || features.coherent)
    }

    public func allocateVIOMMU(device: any DeviceModel, parent: any PagingDomain, type: UInt32, data: DriverData?,
                               memory: any UserMemory) throws(IOMMUError) -> any VIOMMUModel {
        guard type == SMMUv3UAPI.viommuType else { throw .notSupported("vIOMMU type") }
        guard nesting, features.forcedWriteBack || features.coherent else { throw .notSupported("the SMMU cannot nest") }
        guard let p = parent as? SMMUv3PagingDomain, p.driver === self, p.stage == .stage2 else {
            throw .invalid("parent is not a stage-2 domain of this SMMU")
        }
        return SMMUv3VIOMMU(driver: self, parent: p)
    }
}

/// Hands out IDs (ASIDs, VMIDs) from a range, lowest free first.
struct IDAllocator {
    let first: UInt32
    let last: UInt32
    var used: Set<UInt32> = []
    var next: UInt32

    init(first: UInt32, last: UInt32) {
        self.first = first
        self.last = last
        next = first
    }

    mutating func allocate() -> UInt32? {
        guard used.count < Int(last - first + 1) else { return nil }
        while used.contains(next) { next = next == last ? first : next + 1 }
        used.insert(next)
        let id = next
        next = next == last ? first : next + 1
        return id
    }

    mutating func release(_ id: UInt32) { used.remove(id) }
}
