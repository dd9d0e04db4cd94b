// Nested translation (PGTT 011b): the guest's first-stage table walked two-dimensionally — the
// root pointer and every table pointer are guest-physical, translated through the second stage
// (the shared NestedWalkPort) — and the first-stage output translated through the second stage.
// Faults name the stage and, for second-stage faults during first-stage table accesses, the
// nested-specific reasons (0x74–0x77).

extension VTdUnit {
    /// Walks the nested tables of the PASID entry of `r` for `address`; the result is the combined translation of
    /// the largest page both stages map linearly (the smaller of the two pages).
    func walkNested(_ r: VTdResolution, address: UInt64, access: PageAccess) -> Result<Translation, VTdFault> {
        let e = r.entry, privileged = r.privileged
        let s1 = r.firstStage
        let s2 = r.secondStage
        var port = NestedWalkPort(stage2: s2, root: e.secondStageTable, memory: memory, update: true)
        let t1: PageTranslation
        switch s1.walk(root: e.firstStageTable, input: address, access: access, update: true, port: &port) {
        case .translated(let t, _, _, _):
            t1 = t
        case .fault(let f):
            return .failure(Self.fault(f, stage: .first))
        case .portFault:
            // Stage 2 refused a first-stage table access (a read of a table, or the walker's
            // accessed/dirty write to an entry).
            let level2 = port.fault.level
            let code: VTdFaultReasonCode
            switch port.fault.reason {
            case .addressSize: code = .firstStageTableBeyondSecondStage
            case .reservedBit: code = .secondStageEntryReserved
            case .permission(.write): code = .firstStageTableWriteDenied
            case .permission: code = port.faultLevel == s1.topLevel ? .firstStageRootReadDenied : .firstStageTableReadDenied
            case .translation, .accessFlag: code = .secondStageEntryNotPresent
            }
            return .failure(VTdFault(code, stage: .second, level: level2))
        }
        var direct = DirectWalkPort(memory: memory)
        let s2access = PageAccess(access.kind, user: false)
        switch s2.walk(root: e.secondStageTable, input: t1.output, access: s2access, update: true, port: &direct) {
        case .translated(let t2, _, _, _):
            let size = min(t1.pageSize, t2.pageSize)
            let rights = permissions(t1.rights, privileged: privileged)
                .intersection(permissions(t2.rights, privileged: true))
            return .success(Translation(inputBase: address, outputBase: t2.output, pageShift: UInt8(size.trailingZeroBitCount),
                                        permissions: rights))
        case .fault(let f):
            return .failure(Self.fault(f, stage: .second))
        case .portFault:
            return .failure(VTdFault(.secondStageEntryAccess, stage: .second))
        }
    }
}
