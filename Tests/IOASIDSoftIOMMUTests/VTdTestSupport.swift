import IOASIDStructures
import Synchronization
import Testing
@testable import IOASIDSoftIOMMU

/// A VT-d unit with its host software (invalidation queue, page request queue, tables) on fresh
/// memory, translation enabled; helpers to build page tables and PASID entries and to issue DMA.
final class VTdMachine: @unchecked Sendable {
    let memory: PhysicalMemory
    let unit: VTdUnit
    let queue: VTdInvalidationQueue
    let prq: VTdPageRequestQueue
    let tables: VTdHostTables

    init(_ configuration: VTdConfiguration = VTdConfiguration()) throws {
        memory = PhysicalMemory(allocatorBase: 0x1_0000_0000, allocatorLimit: 0x1_4000_0000)
        unit = VTdUnit(memory: memory, configuration: configuration)
        queue = try #require(VTdInvalidationQueue(unit: unit))
        prq = try #require(VTdPageRequestQueue(unit: unit))
        tables = try VTdHostTables(unit: unit, queue: queue)
        unit.setTranslationEnabled(true)
    }

    /// A 4-level second-stage table with A/D tracking as PASID entries with SSADE use it.
    func secondStageTable(accessedDirty: Bool = true) throws -> PageTable<VTdSecondStageFormat> {
        try PageTable(memory: memory, format: VTdSecondStageFormat(addressWidth: 48, accessedDirtyEnabled: accessedDirty))
    }

    /// A 4- or 5-level first-stage table.
    func firstStageTable(levels: Int = 4) throws -> PageTable<X86FirstStageFormat> {
        try PageTable(memory: memory, format: X86FirstStageFormat(levels: levels))
    }

    /// A present second-stage PASID entry.
    static func secondStage(_ table: UInt64, domain: UInt16, accessedDirty: Bool = true) -> VTdPASIDEntry {
        var e = VTdPASIDEntry()
        e.secondStageTable = table
        e.addressWidth = 2
        e.pgtt = .secondStage
        e.secondStageAccessedDirtyEnable = accessedDirty
        e.domainID = domain
        e.present = true
        return e
    }

    /// A present first-stage PASID entry.
    static func firstStage(_ table: UInt64, domain: UInt16, levels: Int = 4, supervisor: Bool = false) -> VTdPASIDEntry {
        var e = VTdPASIDEntry()
        e.firstStageTable = table
        e.firstStagePagingMode = levels == 5 ? 1 : 0
        e.supervisorRequestEnable = supervisor
        e.addressWidth = 2
        e.pgtt = .firstStage
        e.domainID = domain
        e.present = true
        return e
    }

    /// A present nested PASID entry.
    static func nested(firstStage: UInt64, secondStage: UInt64, domain: UInt16) -> VTdPASIDEntry {
        var e = VTdPASIDEntry()
        e.firstStageTable = firstStage
        e.secondStageTable = secondStage
        e.addressWidth = 2
        e.pgtt = .nested
        e.secondStageAccessedDirtyEnable = true
        e.domainID = domain
        e.present = true
        return e
    }

    /// A present pass-through PASID entry.
    static func passThrough(domain: UInt16) -> VTdPASIDEntry {
        var e = VTdPASIDEntry()
        e.addressWidth = 2
        e.pgtt = .passThrough
        e.domainID = domain
        e.present = true
        return e
    }

    /// Issues one untranslated request.
    func dma(_ rid: RequesterID, pasid: UInt32? = nil, _ address: UInt64, _ access: AccessPermissions = .read,
             privileged: Bool = false) -> Result<Translation, FaultRecord> {
        unit.translate(DMARequest(requesterID: rid, pasid: pasid.map { PASID($0) }, privileged: privileged, address: address,
                                  access: access))
    }

    /// The output address of a successful request, or nil.
    func output(_ rid: RequesterID, pasid: UInt32? = nil, _ address: UInt64, _ access: AccessPermissions = .read,
                privileged: Bool = false) -> UInt64? {
        if case .success(let t) = dma(rid, pasid: pasid, address, access, privileged: privileged) { return t.output(for: address) }
        return nil
    }

    /// The fault reason of a failed request, or nil.
    func faultReason(_ rid: RequesterID, pasid: UInt32? = nil, _ address: UInt64, _ access: AccessPermissions = .read,
                     privileged: Bool = false) -> FaultReason? {
        if case .failure(let f) = dma(rid, pasid: pasid, address, access, privileged: privileged) { return f.reason }
        return nil
    }
}

/// Atomics shared between a test and the threads or callbacks it starts.
final class VTdSharedCounters: Sendable {
    let generation = Atomic<Int>(0)
    let stale = Atomic<Int>(0)
    let done = Atomic<Bool>(false)
    let count = Atomic<Int>(0)
}
