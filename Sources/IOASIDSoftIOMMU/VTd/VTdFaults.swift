// Unrecoverable fault reporting of VT-d (spec §7.2): the scalable-mode fault reason codes, the
// 128-bit fault recording register, and the fault status register fields.

/// The fault reason codes of scalable-mode DMA remapping (VT-d spec §7.2.3, appendix "Non-
/// Recoverable Fault Reason Encodings"), the FR field of a fault record.
public enum VTdFaultReasonCode: UInt8, Hashable, Sendable, CaseIterable {
    /// 0x30: the root table address is invalid.
    case invalidRootTableAddress = 0x30
    /// 0x31: translation type in RTADDR is legacy for a request with PASID.
    case legacyModeRequestWithPASID = 0x31
    /// 0x38: hardware could not read the root entry.
    case rootEntryAccess = 0x38
    /// 0x39: the root entry's present bit for the devfn half is clear.
    case rootEntryNotPresent = 0x39
    /// 0x3A: a reserved bit of the root entry is set.
    case rootEntryReserved = 0x3A
    /// 0x40: hardware could not read the context entry.
    case contextEntryAccess = 0x40
    /// 0x41: the context entry is not present.
    case contextEntryNotPresent = 0x41
    /// 0x42: a reserved bit of the context entry is set.
    case contextEntryReserved = 0x42
    /// 0x43: the context entry is invalid (e.g. a PASID directory beyond the host address width).
    case contextEntryInvalid = 0x43
    /// 0x44: a translation request or translated request from a function whose context entry
    /// has DTE clear.
    case deviceTLBNotEnabled = 0x44
    /// 0x45: a request with PASID from a function whose context entry has PASIDE clear.
    case pasidNotEnabled = 0x45
    /// 0x46: the PASID is beyond the PASID directory size of the context entry.
    case pasidTooLarge = 0x46
    /// 0x47: a page request from a function whose context entry has PRE clear.
    case pageRequestNotEnabled = 0x47
    /// 0x48: the RID_PASID field of the context entry is invalid.
    case ridPASIDInvalid = 0x48
    /// 0x50: hardware could not read the PASID directory entry.
    case pasidDirectoryEntryAccess = 0x50
    /// 0x51: the PASID directory entry is not present.
    case pasidDirectoryEntryNotPresent = 0x51
    /// 0x52: a reserved bit of the PASID directory entry is set.
    case pasidDirectoryEntryReserved = 0x52
    /// 0x58: hardware could not read the PASID table entry.
    case pasidEntryAccess = 0x58
    /// 0x59: the PASID table entry is not present — the PASID has no attachment: the request
    /// is blocked.
    case pasidEntryNotPresent = 0x59
    /// 0x5A: a reserved bit of the PASID table entry is set.
    case pasidEntryReserved = 0x5A
    /// 0x5B: the PASID table entry is invalid (reserved PGTT, AW or paging mode, or a type the
    /// unit does not support).
    case pasidEntryInvalid = 0x5B
    /// 0x5C: an execute request with ERE clear in the PASID entry.
    case executeNotEnabled = 0x5C
    /// 0x5D: a privileged (supervisor) request with SRE clear in the PASID entry.
    case supervisorNotEnabled = 0x5D
    /// 0x70: hardware could not read a first-stage paging entry.
    case firstStageEntryAccess = 0x70
    /// 0x71: a first-stage paging entry is not present.
    case firstStageEntryNotPresent = 0x71
    /// 0x72: a reserved bit of a first-stage paging entry is set.
    case firstStageEntryReserved = 0x72
    /// 0x73: hardware could not read the first-stage root (FL-PML4/PML5) entry.
    case firstStageRootAccess = 0x73
    /// 0x74: under nesting, a first-stage table address is beyond the second stage's width.
    case firstStageTableBeyondSecondStage = 0x74
    /// 0x75: under nesting, the second stage does not allow reading the first-stage root table.
    case firstStageRootReadDenied = 0x75
    /// 0x76: under nesting, the second stage does not allow reading a first-stage table.
    case firstStageTableReadDenied = 0x76
    /// 0x77: under nesting, the second stage does not allow the walker's accessed/dirty write
    /// to a first-stage entry.
    case firstStageTableWriteDenied = 0x77
    /// 0x78: hardware could not read a second-stage paging entry.
    case secondStageEntryAccess = 0x78
    /// 0x79: a second-stage paging entry is not present (R = W = 0).
    case secondStageEntryNotPresent = 0x79
    /// 0x7A: a reserved bit of a second-stage paging entry is set.
    case secondStageEntryReserved = 0x7A
    /// 0x7B: the second-stage table pointer is invalid.
    case secondStageTablePointerInvalid = 0x7B
    /// 0x80: the input address is not canonical for first-stage translation.
    case nonCanonicalAddress = 0x80
    /// 0x81: a user (non-privileged) request to a supervisor first-stage page (U/S = 0).
    case userAccessToSupervisorPage = 0x81
    /// 0x82: an execute request to a page that may not be executed.
    case executeDenied = 0x82
    /// 0x83: the input address is beyond the address width of the translation.
    case addressBeyondWidth = 0x83
    /// 0x84: a second-stage entry's output address is beyond the host address width.
    case secondStageOutputBeyondWidth = 0x84
    /// 0x85: a write (or atomic) request to a page without write permission.
    case writeDenied = 0x85
    /// 0x86: a read request to a page without read permission.
    case readDenied = 0x86
}

/// The kind of request a fault record describes (T2:T1 and AT fields).
public enum VTdFaultRequestType: Hashable, Sendable {
    /// A write request (T2 = 0, T1 = 0).
    case write
    /// A read request (T2 = 0, T1 = 1).
    case read
    /// A page request (T2 = 1, T1 = 0).
    case pageRequest
    /// An atomic request (T2 = 1, T1 = 1).
    case atomic
}

/// One primary fault record: a 128-bit fault recording register (VT-d spec §11.4.14).
///
/// Bits: 63:12 FI (faulting page), 79:64 SID, 92 T2, 94:93 AT, 95 PP, 103:96 FR,
/// 123:104 PV (PASID), 124 EXE, 125 PRIV, 126 T1, 127 F.
public struct VTdFaultRecord: Hashable, Sendable, CustomStringConvertible {
    /// Bits 63:0.
    public var low: UInt64
    /// Bits 127:64.
    public var high: UInt64

    /// Wraps a register value.
    public init(low: UInt64, high: UInt64) { self.low = low; self.high = high }

    /// Builds the record hardware writes for a fault (F = 1).
    public init(reason: VTdFaultReasonCode, sourceID: UInt16, address: UInt64, type: VTdFaultRequestType,
                addressType: UInt8 = 0, pasid: UInt32? = nil, execute: Bool = false, privileged: Bool = false) {
        low = address & VTdAddress.pageMask
        var h = UInt64(sourceID)
        let (t2, t1): (Bool, Bool) = switch type {
        case .write: (false, false)
        case .read: (false, true)
        case .pageRequest: (true, false)
        case .atomic: (true, true)
        }
        if t2 { h |= 1 << 28 }
        h |= UInt64(addressType & 3) << 29
        if let pasid { h |= 1 << 31 | UInt64(pasid & 0xF_FFFF) << 40 }
        h |= UInt64(reason.rawValue) << 32
        if execute { h |= 1 << 60 }
        if privileged { h |= 1 << 61 }
        if t1 { h |= 1 << 62 }
        h |= 1 << 63
        high = h
    }

    /// F (bit 127): the record holds a fault not yet cleared by software.
    public var isFault: Bool { high >> 63 != 0 }
    /// FI (bits 63:12): the page address of the faulting request.
    public var faultInfo: UInt64 { low & VTdAddress.pageMask }
    /// SID (bits 79:64): the requester ID.
    public var sourceID: UInt16 { UInt16(truncatingIfNeeded: high) }
    /// FR (bits 103:96): the fault reason code.
    public var reasonCode: UInt8 { UInt8(truncatingIfNeeded: high >> 32) }
    /// The fault reason, if it is one the model knows.
    public var reason: VTdFaultReasonCode? { VTdFaultReasonCode(rawValue: reasonCode) }
    /// PP (bit 95) and PV (bits 123:104): the PASID of the request, if it had one.
    public var pasid: UInt32? { high >> 31 & 1 != 0 ? UInt32(high >> 40 & 0xF_FFFF) : nil }
    /// AT (bits 94:93): the address type of the request (0 untranslated, 1 translation request,
    /// 2 translated).
    public var addressType: UInt8 { UInt8(high >> 29 & 3) }
    /// EXE (bit 124): an execute request.
    public var execute: Bool { high >> 60 & 1 != 0 }
    /// PRIV (bit 125): a privileged request.
    public var privileged: Bool { high >> 61 & 1 != 0 }
    /// The request type from T2 (bit 92) and T1 (bit 126).
    public var requestType: VTdFaultRequestType {
        switch (high >> 28 & 1 != 0, high >> 62 & 1 != 0) {
        case (false, false): .write
        case (false, true): .read
        case (true, false): .pageRequest
        case (true, true): .atomic
        }
    }

    /// E.g. `fault 0x59 SID 0x0100 PASID 5 read at 0x1000`.
    public var description: String {
        "fault 0x\(String(reasonCode, radix: 16)) SID 0x\(String(sourceID, radix: 16))"
            + (pasid.map { " PASID \($0)" } ?? "") + " \(requestType) at 0x\(String(faultInfo, radix: 16))"
    }
}

/// Fields of the Fault Status Register (`FSTS_REG`, offset 0x34).
public enum VTdFaultStatus {
    /// PFO (bit 0): primary fault overflow — a fault was dropped because the next fault
    /// recording register still held an unread fault.
    public static let primaryFaultOverflow: UInt32 = 1 << 0
    /// PPF (bit 1): primary pending fault — at least one fault recording register has F set.
    public static let primaryPendingFault: UInt32 = 1 << 1
    /// IQE (bit 4): invalidation queue error — a descriptor was invalid; the queue stopped at it.
    public static let invalidationQueueError: UInt32 = 1 << 4
    /// ICE (bit 5): invalidation completion error (a device-TLB invalidation got a bad completion).
    public static let invalidationCompletionError: UInt32 = 1 << 5
    /// ITE (bit 6): invalidation time-out error (a device did not complete a device-TLB invalidation).
    public static let invalidationTimeoutError: UInt32 = 1 << 6
    /// The FRI field (bits 15:8): the index of the fault recording register hardware records
    /// the next fault into.
    public static func faultRecordIndex(_ status: UInt32) -> Int { Int(status >> 8 & 0xFF) }
}

/// The page request descriptor hardware writes into the page request queue (VT-d spec
/// §7.5.1.1), 256 bits.
///
/// qw0: type 7:0 (= 1), PP 8, RID 31:16, PASID 51:32, ER 52, PM 53;
/// qw1: R 0, W 1, LPIG 2, PRG index 11:3, ADDR 63:12; qw2/qw3: private data (unused here).
public struct VTdPageRequestDescriptor: Hashable, Sendable {
    /// The raw descriptor.
    public var descriptor: VTdDescriptor

    /// Wraps a descriptor read from the queue.
    public init(_ descriptor: VTdDescriptor) { self.descriptor = descriptor }

    /// Encodes a page request.
    public init(requesterID: UInt16, pasid: UInt32?, address: UInt64, read: Bool, write: Bool, execute: Bool,
                privileged: Bool, lastInGroup: Bool, groupIndex: UInt16) {
        var q0: UInt64 = 1 | UInt64(requesterID) << 16
        if let pasid { q0 |= 1 << 8 | UInt64(pasid & 0xF_FFFF) << 32 }
        if execute { q0 |= 1 << 52 }
        if privileged { q0 |= 1 << 53 }
        var q1 = address & VTdAddress.pageMask | UInt64(groupIndex & 0x1FF) << 3
        if read { q1 |= 1 }
        if write { q1 |= 2 }
        if lastInGroup { q1 |= 4 }
        descriptor = VTdDescriptor(q0, q1)
    }

    /// The descriptor type (1: page request).
    public var type: UInt8 { UInt8(truncatingIfNeeded: descriptor.qw0) }
    /// RID.
    public var requesterID: UInt16 { UInt16(truncatingIfNeeded: descriptor.qw0 >> 16) }
    /// The PASID, when PP is set.
    public var pasid: UInt32? { descriptor.qw0 >> 8 & 1 != 0 ? UInt32(descriptor.qw0 >> 32 & 0xF_FFFF) : nil }
    /// ER: execute requested.
    public var execute: Bool { descriptor.qw0 >> 52 & 1 != 0 }
    /// PM: privileged mode requested.
    public var privileged: Bool { descriptor.qw0 >> 53 & 1 != 0 }
    /// R: read access requested.
    public var read: Bool { descriptor.qw1 & 1 != 0 }
    /// W: write access requested.
    public var write: Bool { descriptor.qw1 & 2 != 0 }
    /// LPIG: last page request in its group.
    public var lastInGroup: Bool { descriptor.qw1 & 4 != 0 }
    /// The page request group index.
    public var groupIndex: UInt16 { UInt16(descriptor.qw1 >> 3 & 0x1FF) }
    /// The page address.
    public var address: UInt64 { descriptor.qw1 & VTdAddress.pageMask }
}
