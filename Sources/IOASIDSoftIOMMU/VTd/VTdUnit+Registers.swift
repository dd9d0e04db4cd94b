// The register interface of a VT-d unit: global command and status, the root table pointer,
// fault status and fault recording registers, and the invalidation and page request queue
// registers. Semantics follow VT-d spec chapter 10 (RW1C status bits, one-shot SRTP, IQT writes
// start queue processing).

extension VTdUnit {
    /// Reads the register at `offset` (see ``VTdRegister``). 32-bit registers read as their
    /// value zero-extended; unimplemented offsets read as zero.
    public func readRegister(_ offset: Int) -> UInt64 {
        switch offset {
        case VTdRegister.version: return 0x60
        case VTdRegister.capability: return capability.rawValue
        case VTdRegister.extendedCapability: return extendedCapability.rawValue
        default: break
        }
        return state.withLock { s in
            switch offset {
            case VTdRegister.globalStatus: return UInt64(s.globalStatus)
            case VTdRegister.rootTableAddress: return s.rootTableRegister
            case VTdRegister.faultStatus: return UInt64(Self.faultStatus(s))
            case VTdRegister.invalidationQueueHead: return s.invalidationQueueHead
            case VTdRegister.invalidationQueueTail: return s.invalidationQueueTail
            case VTdRegister.invalidationQueueAddress: return s.invalidationQueueAddress
            case VTdRegister.invalidationCompletionStatus: return UInt64(s.invalidationCompletionStatus)
            case VTdRegister.invalidationQueueErrorRecord: return s.invalidationQueueErrorRecord
            case VTdRegister.pageRequestQueueHead: return s.pageRequestQueueHead
            case VTdRegister.pageRequestQueueTail: return s.pageRequestQueueTail
            case VTdRegister.pageRequestQueueAddress: return s.pageRequestQueueAddress
            case VTdRegister.pageRequestStatus: return UInt64(s.pageRequestStatus)
            default:
                let fr = VTdRegister.faultRecording
                guard offset >= fr, offset < fr + 16 * s.faultRecords.count else { return 0 }
                let r = s.faultRecords[(offset - fr) / 16]
                switch (offset - fr) % 16 {
                case 0: return r.low
                case 8: return r.high
                case 12: return r.high >> 32
                default: return 0
                }
            }
        }
    }

    /// Writes the register at `offset` (see ``VTdRegister``). Status bits are write-1-to-clear;
    /// a write of `IQT_REG` (or clearing `FSTS_REG.IQE`) processes the invalidation queue before
    /// returning.
    public func writeRegister(_ offset: Int, _ value: UInt64) {
        var processQueue = false
        state.withLock { s in
            switch offset {
            case VTdRegister.globalCommand:
                resolutions.invalidateAll()
                let cmd = UInt32(truncatingIfNeeded: value)
                if cmd & VTdGlobalCommand.setRootTablePointer != 0 {
                    s.rootTable = s.rootTableRegister & VTdAddress.pageMask
                    s.scalableMode = s.rootTableRegister >> 10 & 3 == 1
                    s.globalStatus |= VTdGlobalCommand.setRootTablePointer
                }
                if cmd & VTdGlobalCommand.translationEnable != 0 {
                    s.globalStatus |= VTdGlobalCommand.translationEnable
                } else {
                    s.globalStatus &= ~VTdGlobalCommand.translationEnable
                }
                if cmd & VTdGlobalCommand.queuedInvalidationEnable != 0 {
                    if s.globalStatus & VTdGlobalCommand.queuedInvalidationEnable == 0 {
                        s.invalidationQueueHead = 0
                        s.globalStatus |= VTdGlobalCommand.queuedInvalidationEnable
                    }
                } else {
                    s.globalStatus &= ~VTdGlobalCommand.queuedInvalidationEnable
                }
            case VTdRegister.rootTableAddress:
                resolutions.invalidateAll()
                s.rootTableRegister = value & (VTdAddress.pageMask | 0xC00)
            case VTdRegister.faultStatus:
                let clear = UInt32(truncatingIfNeeded: value) & (VTdFaultStatus.primaryFaultOverflow
                    | VTdFaultStatus.invalidationQueueError | VTdFaultStatus.invalidationCompletionError
                    | VTdFaultStatus.invalidationTimeoutError)
                if clear & VTdFaultStatus.invalidationQueueError != 0, s.faultStatus & VTdFaultStatus.invalidationQueueError != 0 {
                    s.invalidationQueueErrorRecord = 0
                    processQueue = true
                }
                s.faultStatus &= ~clear
            case VTdRegister.invalidationQueueTail:
                s.invalidationQueueTail = value & 0x7FFE0
                processQueue = true
            case VTdRegister.invalidationQueueAddress:
                guard s.globalStatus & VTdGlobalCommand.queuedInvalidationEnable == 0 else { return }
                s.invalidationQueueAddress = value & (VTdAddress.pageMask | 0x807)
            case VTdRegister.invalidationCompletionStatus:
                if value & 1 != 0 { s.invalidationCompletionStatus &= ~1 }
            case VTdRegister.pageRequestQueueHead:
                s.pageRequestQueueHead = value & 0x7FFE0
            case VTdRegister.pageRequestQueueTail:
                s.pageRequestQueueTail = value & 0x7FFE0
            case VTdRegister.pageRequestQueueAddress:
                s.pageRequestQueueAddress = value & (VTdAddress.pageMask | 7)
            case VTdRegister.pageRequestStatus:
                s.pageRequestStatus &= ~(UInt32(truncatingIfNeeded: value) & 3)
            default:
                let fr = VTdRegister.faultRecording
                guard offset >= fr, offset < fr + 16 * s.faultRecords.count else { return }
                let i = (offset - fr) / 16
                let clearF = switch (offset - fr) % 16 {
                case 8: value >> 63 != 0
                case 12: value >> 31 & 1 != 0
                default: false
                }
                if clearF { s.faultRecords[i].high &= ~(1 << 63) }
            }
        }
        if processQueue { processInvalidationQueue() }
    }

    /// `FSTS_REG` as software reads it: PPF from the records' F bits, FRI the first pending one.
    static func faultStatus(_ s: State) -> UInt32 {
        var status = s.faultStatus
        let n = s.faultRecords.count
        for k in 0..<n {
            let i = (s.firstPendingFault + k) % n
            if s.faultRecords[i].isFault {
                status |= VTdFaultStatus.primaryPendingFault | UInt32(i) << 8
                break
            }
        }
        return status
    }

    // MARK: Typed conveniences (what software does with the registers)

    /// Points the unit at a scalable-mode root table and latches it (RTADDR with TTM = 01b,
    /// then GCMD.SRTP), as software does before enabling translation.
    public func setRootTable(_ address: UInt64) {
        writeRegister(VTdRegister.rootTableAddress, address & VTdAddress.pageMask | 1 << 10)
        writeRegister(VTdRegister.globalCommand, UInt64(currentCommand | VTdGlobalCommand.setRootTablePointer))
    }

    /// Turns DMA remapping on or off (GCMD.TE). With translation off, requests are not remapped.
    public func setTranslationEnabled(_ enabled: Bool) {
        var cmd = currentCommand & ~VTdGlobalCommand.translationEnable
        if enabled { cmd |= VTdGlobalCommand.translationEnable }
        writeRegister(VTdRegister.globalCommand, UInt64(cmd))
    }

    /// The persistent command bits (TE, QIE) as `GSTS_REG` reports them.
    var currentCommand: UInt32 {
        UInt32(truncatingIfNeeded: readRegister(VTdRegister.globalStatus))
            & (VTdGlobalCommand.translationEnable | VTdGlobalCommand.queuedInvalidationEnable)
    }

    /// Whether translation is enabled (GSTS.TES).
    public var translationEnabled: Bool { state.withLock { $0.globalStatus & VTdGlobalCommand.translationEnable != 0 } }

    /// The pending fault records, oldest first (their F bits stay set).
    public var pendingFaults: [VTdFaultRecord] {
        state.withLock { s in
            let n = s.faultRecords.count
            return (0..<n).map { s.faultRecords[(s.firstPendingFault + $0) % n] }.filter(\.isFault)
        }
    }

    /// Reads and clears every pending fault record, oldest first, and clears PFO — what a fault
    /// interrupt handler does.
    public func takeFaults() -> [VTdFaultRecord] {
        state.withLock { s in
            let n = s.faultRecords.count
            var out: [VTdFaultRecord] = []
            for k in 0..<n {
                let i = (s.firstPendingFault + k) % n
                if s.faultRecords[i].isFault {
                    out.append(s.faultRecords[i])
                    s.faultRecords[i].high &= ~(1 << 63)
                }
            }
            s.faultStatus &= ~VTdFaultStatus.primaryFaultOverflow
            return out
        }
    }

    /// Records a fault in the next fault recording register (or sets PFO when that register
    /// still holds an unread fault). Returns whether the fault interrupt should be raised.
    func record(_ record: VTdFaultRecord) -> (@Sendable () -> Void)? {
        state.withLock { s in
            let n = s.faultRecords.count
            let i = s.nextFaultIndex
            if s.faultRecords[i].isFault {
                s.faultStatus |= VTdFaultStatus.primaryFaultOverflow
                s.statistics.faultsOverflowed += 1
                return nil
            }
            if !s.faultRecords.anyPending { s.firstPendingFault = i }
            s.faultRecords[i] = record
            s.nextFaultIndex = (i + 1) % n
            s.statistics.faultsRecorded += 1
            return s.faultInterrupt
        }
    }
}
