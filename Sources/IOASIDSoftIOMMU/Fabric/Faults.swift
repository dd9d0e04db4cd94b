// Unrecoverable fault records, with one reason vocabulary for the VT-d and SMMUv3 models.

/// A translation stage: first (stage 1: IOVA → GPA, guest-owned when nested) or second
/// (stage 2: GPA → HPA, host-owned).
public enum TranslationStage: UInt8, Hashable, Sendable {
    case first = 1
    case second = 2
}

/// Why the IOMMU refused a request. Each model maps its own codes onto these cases (VT-d fault
/// reasons, SMMUv3 event types); the doc of each case names the usual counterparts.
public enum FaultReason: Hashable, Sendable {
    /// The requester (or this PASID of it) is attached to a blocking domain, or translation is
    /// switched off for it (VT-d: context/PASID entry with blocked PGTT or FPD, SMMUv3: STE
    /// Config = abort, C_BAD_STE with abort).
    case blocked
    /// The request carries a PASID that has no attachment: the PASID-table entry / context
    /// descriptor is not present (VT-d: PASID entry P = 0, SMMUv3: C_BAD_SUBSTREAMID / CD.V = 0).
    case pasidNotAttached
    /// The request carries a PASID but PASIDs are not enabled for the requester, or the PASID is
    /// beyond the size of its PASID table (VT-d: PASID table size, SMMUv3: S1CDMax, C_BAD_SUBSTREAMID).
    case pasidNotSupported
    /// No valid context for the requester: root/context entry not present or malformed, or an
    /// invalid stream table entry (VT-d: root/context entry faults, SMMUv3: C_BAD_STREAMID, C_BAD_STE).
    case invalidContext
    /// The PASID-table entry or context descriptor is malformed (VT-d: PASID entry reserved
    /// field / invalid PGTT, SMMUv3: C_BAD_CD).
    case invalidPASIDEntry
    /// A translation table entry at `level` of `stage` is not present (VT-d: first/second-stage
    /// not-present faults, SMMUv3: F_TRANSLATION).
    case translation(stage: TranslationStage, level: Int)
    /// The entry at `level` of `stage` does not grant the access (read, write, execute or
    /// privilege; VT-d permission faults, SMMUv3: F_PERMISSION).
    case permission(stage: TranslationStage, level: Int)
    /// The access flag of the entry at `level` is clear and hardware does not set it
    /// (SMMUv3: F_ACCESS).
    case accessFlag(stage: TranslationStage, level: Int)
    /// An input or output address is wider than `stage` supports, or an entry at `level` points
    /// beyond the output address size (VT-d: address beyond the domain width, SMMUv3: F_ADDR_SIZE).
    case addressSize(stage: TranslationStage, level: Int)
    /// The entry at `level` of `stage` has a reserved bit set or an invalid encoding (VT-d:
    /// reserved-field faults, SMMUv3: F_TRANSLATION for invalid descriptors).
    case reservedBit(stage: TranslationStage, level: Int)
    /// A translated request (or ATS translation request) came from a requester that may not use
    /// ATS (VT-d: device-TLB not enabled in the context, SMMUv3: STE.EATS = 0, F_TRANSL_FORBIDDEN).
    case translatedRequestBlocked

    /// The stage the fault happened in, if it happened in a table walk.
    public var stage: TranslationStage? {
        switch self {
        case .translation(let s, _), .permission(let s, _), .accessFlag(let s, _), .addressSize(let s, _),
             .reservedBit(let s, _): s
        default: nil
        }
    }

    /// The level of the entry that faulted, if it happened in a table walk.
    public var level: Int? {
        switch self {
        case .translation(_, let l), .permission(_, let l), .accessFlag(_, let l), .addressSize(_, let l),
             .reservedBit(_, let l): l
        default: nil
        }
    }
}

/// A fault the IOMMU records for a request it refused (VT-d fault record, SMMUv3 event record).
public struct FaultRecord: Error, Hashable, Sendable {
    /// The requester.
    public var requesterID: RequesterID
    /// The request's PASID, if any.
    public var pasid: PASID?
    /// Whether the request was privileged.
    public var privileged: Bool
    /// The faulting (input) address.
    public var address: UInt64
    /// The access the request made.
    public var access: AccessPermissions
    /// Why it was refused.
    public var reason: FaultReason
    /// Whether the requester may resolve it with a page request (PRI) and retry: the domain
    /// allows I/O page faults and the reason is a translation, permission or access-flag fault.
    public var recoverable: Bool

    /// The fault of `request` for `reason`.
    public init(_ request: DMARequest, reason: FaultReason, recoverable: Bool = false) {
        requesterID = request.requesterID
        pasid = request.pasid
        privileged = request.privileged
        address = request.address
        access = request.access
        self.reason = reason
        self.recoverable = recoverable
    }
}
