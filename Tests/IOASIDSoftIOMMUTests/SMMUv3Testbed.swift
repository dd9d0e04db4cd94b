// A minimal SMMUv3 "driver" for the model's tests: a linear stream table, the three queues, and
// helpers to write STEs and CDs, submit commands and drain the event and PRI queues. Structures
// live at fixed addresses below the frame allocator's window; page tables and DMA pages come
// from the window.

import IOASIDStructures
@testable import IOASIDSoftIOMMU

final class SMMUv3Testbed: @unchecked Sendable {
    let memory: PhysicalMemory
    let smmu: SMMUv3
    /// Linear stream table of 256 STEs.
    static let streamTable: UInt64 = 0x10_0000
    static let commandQueue: UInt64 = 0x20_0000
    static let eventQueue: UInt64 = 0x21_0000
    static let priQueue: UInt64 = 0x22_0000
    /// CD tables: 64 KiB each from here (room for 1024 CDs).
    static let cdTables: UInt64 = 0x100_0000
    let queueLog2: UInt32

    init(features: SMMUv3Features = SMMUv3Features(), queueLog2: UInt32 = 6, enable: Bool = true) {
        memory = PhysicalMemory()
        // RAM for the structures (stream table, queues, CD tables): [1 MiB, 32 MiB).
        _ = try! memory.attachRAM(at: 0x10_0000, length: 0x1F0_0000)
        smmu = SMMUv3(memory: memory, features: features)
        self.queueLog2 = queueLog2
        smmu.write64(.strtabBase, Self.streamTable)
        smmu.write32(.strtabBaseCfg, 8)                       // linear, 2^8 STEs
        smmu.write64(.cmdqBase, Self.commandQueue | UInt64(queueLog2))
        smmu.write64(.eventqBase, Self.eventQueue | UInt64(queueLog2))
        smmu.write64(.priqBase, Self.priQueue | UInt64(queueLog2))
        smmu.write32(.cr2, 2)                                 // RECINVSID
        if enable {
            smmu.write32(.cr0, SMMUv3CR0.smmuEnable | SMMUv3CR0.commandQueueEnable | SMMUv3CR0.eventQueueEnable
                         | SMMUv3CR0.priQueueEnable | SMMUv3CR0.atsCheck)
        }
    }

    /// Writes the STE of `sid` (no invalidation).
    func setSTE(_ sid: UInt32, _ ste: SMMUv3StreamTableEntry) {
        ste.write(to: memory, at: Self.streamTable + UInt64(sid) * 64)
    }

    /// The address of CD table `n`.
    static func cdTable(_ n: Int) -> UInt64 { cdTables + UInt64(n) * 0x1_0000 }

    /// Writes CD `index` of CD table at `table`.
    func setCD(table: UInt64, index: UInt32, _ cd: SMMUv3ContextDescriptor) {
        cd.write(to: memory, at: table + UInt64(index) * 64)
    }

    /// Writes `commands` (and a CMD_SYNC when `sync`) into the queue and moves PROD once.
    func submit(_ commands: [SMMUv3Command], sync: Bool = true) {
        submitRaw(commands.map { $0.words } + (sync ? [SMMUv3Command.syncNone.words] : []))
    }

    /// Writes raw commands and moves PROD once.
    func submitRaw(_ words: [(UInt64, UInt64)]) {
        var prod = smmu.read32(.cmdqProd)
        let mask = (UInt32(2) << queueLog2) - 1
        for w in words {
            let slot = Self.commandQueue + UInt64(prod & ((1 << queueLog2) - 1)) * 16
            memory.write64(slot, w.0)
            memory.write64(slot + 8, w.1)
            prod = (prod + 1) & mask
        }
        smmu.write32(.cmdqProd, prod)
    }

    /// Takes every record from the event queue.
    func events() -> [SMMUv3Event] {
        var out: [SMMUv3Event] = []
        var cons = smmu.read32(.eventqCons)
        let prod = smmu.read32(.eventqProd)
        let positionMask = (UInt32(2) << queueLog2) - 1
        while cons & positionMask != prod & positionMask {
            let slot = Self.eventQueue + UInt64(cons & ((1 << queueLog2) - 1)) * 32
            out.append(SMMUv3Event(words: (0..<4).map { memory.read64(slot + UInt64($0) * 8) }))
            cons = (cons & ~positionMask) | ((cons + 1) & positionMask)
        }
        smmu.write32(.eventqCons, (cons & positionMask) | (prod & (1 << 31)))
        return out
    }

    /// Takes every entry from the PRI queue (acknowledging an overflow).
    func pageRequests() -> [SMMUv3PageRequestRecord] {
        var out: [SMMUv3PageRequestRecord] = []
        var cons = smmu.read32(.priqCons)
        let prod = smmu.read32(.priqProd)
        let positionMask = (UInt32(2) << queueLog2) - 1
        while cons & positionMask != prod & positionMask {
            let slot = Self.priQueue + UInt64(cons & ((1 << queueLog2) - 1)) * 16
            out.append(SMMUv3PageRequestRecord(word0: memory.read64(slot), word1: memory.read64(slot + 8)))
            cons = (cons & ~positionMask) | ((cons + 1) & positionMask)
        }
        smmu.write32(.priqCons, (cons & positionMask) | (prod & (1 << 31)))
        return out
    }

    /// A zeroed data page from the allocator window.
    func page() -> UInt64 { memory.allocateFrame()! }

    // MARK: Structures

    /// A stage-1 STE pointing at a CD table of 2^cdMax CDs (0: one CD).
    static func stage1STE(cdTable: UInt64, cdMax: UInt64 = 0, s1dss: UInt64 = 0, vmid: UInt16 = 0, eats: UInt64 = 0) -> SMMUv3StreamTableEntry {
        var ste = SMMUv3StreamTableEntry()
        ste.valid = true
        ste.config = .stage1
        ste.s1ContextPtr = cdTable
        ste.s1CDMax = cdMax
        ste.s1DSS = s1dss
        ste.s2VMID = vmid
        ste.eats = eats
        return ste
    }

    /// Stage-2 fields: 48-bit IPA from level 0, 48-bit PA, AArch64, recording faults.
    static func setStage2(_ ste: inout SMMUv3StreamTableEntry, root: UInt64, vmid: UInt16) {
        ste.s2VMID = vmid
        ste.s2T0SZ = 16
        ste.s2SL0 = 2
        ste.s2TG = 0
        ste.s2PS = 5
        ste.s2AA64 = true
        ste.s2R = true
        ste.s2TTB = root
    }

    /// A stage-2-only STE.
    static func stage2STE(root: UInt64, vmid: UInt16, eats: UInt64 = 0) -> SMMUv3StreamTableEntry {
        var ste = SMMUv3StreamTableEntry()
        ste.valid = true
        ste.config = .stage2
        ste.eats = eats
        setStage2(&ste, root: root, vmid: vmid)
        return ste
    }

    /// A valid CD for a 48-bit stage-1 table at `ttb0`, recording and aborting faults.
    static func cd(ttb0: UInt64, asid: UInt16, ha: Bool = false, hd: Bool = false) -> SMMUv3ContextDescriptor {
        var cd = SMMUv3ContextDescriptor()
        cd.t0SZ = 16
        cd.tg0 = 0
        cd.epd1 = true
        cd.valid = true
        cd.ips = 5
        cd.aa64 = true
        cd.record = true
        cd.abort = true
        cd.aset = true
        cd.asid = asid
        cd.ha = ha
        cd.hd = hd
        cd.ttb0 = ttb0
        return cd
    }

    /// A new stage-1 table.
    func stage1Table(ha: Bool = false, hd: Bool = false) -> ArmStage1PageTable {
        try! ArmStage1PageTable(memory: memory, format: ArmStage1Format(hardwareAccessFlag: ha, hardwareDirtyState: hd))
    }

    /// A new stage-2 table (48-bit IPA from level 0).
    func stage2Table() -> PageTable<ArmStage2Format> {
        try! PageTable(memory: memory, format: ArmStage2Format(t0sz: 16, sl0: 2))
    }
}

/// A PCI function with PASID, ATS (unless `ats` is false) and PRI, all enabled.
func makeFunction(_ sid: UInt16, on smmu: SMMUv3, ats: Bool = false, pri: Bool = false) -> PCIFunction {
    let f = PCIFunction(requesterID: RequesterID(rawValue: sid),
                        capabilities: PCIFunction.Capabilities(pasidWidth: 20, ats: ats ? .deviceTLB : nil,
                                                               pageRequestCapacity: pri ? 32 : nil),
                        iommu: smmu)
    f.enableAll()
    return f
}

extension DMAResult {
    /// The value of a completed DMA, or nil.
    var completedValue: Value? { if case .completed(let v) = self { v } else { nil } }
    /// Whether the DMA failed.
    var failed: Bool { if case .failed = self { true } else { false } }
    /// The parked operation of a DMA waiting for a page response.
    var parked: PendingDMA<Value>? { if case .waitingForPageResponse(let p) = self { p } else { nil } }
}
