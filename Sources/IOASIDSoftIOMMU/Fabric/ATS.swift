// Address Translation Services (PCIe ATS): translation requests from a device's address
// translation cache (ATC), and invalidations of it.

import IOASIDStructures

/// An ATS Translation Request: the device asks the IOMMU to translate one untranslated address so
/// that it can cache the result in its ATC and send translated requests.
public struct ATSTranslationRequest: Hashable, Sendable {
    /// The requesting function.
    public var requesterID: RequesterID
    /// The address space, if any.
    public var pasid: PASID?
    /// Privileged Mode Requested (with a PASID).
    public var privileged: Bool
    /// The untranslated address.
    public var address: UInt64
    /// The rights wanted: `.read` alone is the No Write (NW) flag; `.execute` is Execute Requested.
    public var access: AccessPermissions

    /// Creates a translation request.
    public init(requesterID: RequesterID, pasid: PASID? = nil, privileged: Bool = false, address: UInt64,
                access: AccessPermissions = .readWrite) {
        self.requesterID = requesterID
        self.pasid = pasid
        self.privileged = privileged
        self.address = address
        self.access = access
    }
}

/// The completion of an ATS translation request.
public enum ATSCompletion: Hashable, Sendable {
    /// Success. The translation may grant fewer rights than asked, or none (R = W = 0): the page
    /// is not accessible now, and a device with PRI may ask for it with a page request. The
    /// device may cache the translation for its whole range.
    case translated(Translation)
    /// Unsupported Request: the IOMMU does not translate for this requester (ATS not enabled for
    /// it); the device must not use ATS.
    case unsupportedRequest
    /// Completer Abort: the request could not be completed (for instance a malformed context).
    case completerAbort
}

/// An ATS Invalidate Request from the IOMMU to a device's ATC.
public struct ATCInvalidation: Hashable, Sendable {
    /// The untranslated addresses whose translations must go (the whole space for "all").
    public var range: IOVARange
    /// The PASID whose translations must go; nil: every translation of the range, with or
    /// without a PASID (an ATC may always invalidate more than asked).
    public var pasid: PASID?
    /// Global Invalidate: with a PASID, also the translations of every other PASID (the global ones).
    public var global: Bool
    /// The invalidation tag (ITag, 0–31) the completion echoes.
    public var tag: UInt8

    /// Creates an invalidation of `range`.
    public init(range: IOVARange, pasid: PASID? = nil, global: Bool = false, tag: UInt8 = 0) {
        precondition(tag < 32, "ITag has 5 bits")
        self.range = range
        self.pasid = pasid
        self.global = global
        self.tag = tag
    }

    /// An invalidation of every translation.
    public static func all(tag: UInt8 = 0) -> ATCInvalidation { ATCInvalidation(range: .all, tag: tag) }
}

/// The Invalidate Completion a device returns when its ATC holds none of the invalidated
/// translations any more and no request using them is in flight.
public struct ATCInvalidationCompletion: Hashable, Sendable {
    /// The device that completed.
    public var requesterID: RequesterID
    /// The tag of the completed invalidation.
    public var tag: UInt8

    /// Creates a completion.
    public init(requesterID: RequesterID, tag: UInt8) {
        self.requesterID = requesterID
        self.tag = tag
    }
}
