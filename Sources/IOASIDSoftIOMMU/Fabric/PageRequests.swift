// The Page Request Interface (PCIe PRI): page requests from devices and the responses to them.

/// One page request message: the device asks for the page at `address` to be made accessible.
///
/// Requests form groups: every request of a group carries the same page request group index, and
/// the last one has `lastInGroup` set; the owner answers the whole group with one
/// ``PageResponse`` after it has seen the last request.
public struct PageRequest: Hashable, Sendable {
    /// The largest page request group index (the index field has 9 bits).
    public static let maxGroupIndex: UInt16 = 511

    /// The requesting function.
    public var requesterID: RequesterID
    /// The address space, if the request carries a PASID.
    public var pasid: PASID?
    /// Privileged Mode Requested (only with a PASID).
    public var privileged: Bool
    /// The untranslated address of the page (4 KiB aligned).
    public var address: UInt64
    /// The access wanted: read and/or write, with execute (only with a PASID).
    public var access: AccessPermissions
    /// The page request group index (0–511).
    public var groupIndex: UInt16
    /// Last Request in PRG: this request closes its group.
    public var lastInGroup: Bool

    /// Creates a page request; `address` is aligned down to 4 KiB.
    public init(requesterID: RequesterID, pasid: PASID? = nil, privileged: Bool = false, address: UInt64,
                access: AccessPermissions, groupIndex: UInt16, lastInGroup: Bool) {
        precondition(groupIndex <= Self.maxGroupIndex, "page request group index has 9 bits")
        self.requesterID = requesterID
        self.pasid = pasid
        self.privileged = privileged
        self.address = address & ~0xFFF
        self.access = access
        self.groupIndex = groupIndex
        self.lastInGroup = lastInGroup
    }
}

/// The PRG Response Message codes.
public enum PageResponseCode: Hashable, Sendable {
    /// The pages of the group were made resident as requested: the device retries its accesses.
    case success
    /// One or more pages cannot be made accessible: the device treats the accesses as failed.
    case invalidRequest
    /// A catastrophic error: the device stops issuing page requests (its PRI is disabled until
    /// software re-enables it).
    case responseFailure
}

/// The answer to one page request group.
public struct PageResponse: Hashable, Sendable {
    /// The function the group came from.
    public var requesterID: RequesterID
    /// The group's PASID, if its requests carried one.
    public var pasid: PASID?
    /// The group answered.
    public var groupIndex: UInt16
    /// The outcome.
    public var code: PageResponseCode

    /// Creates a page response.
    public init(requesterID: RequesterID, pasid: PASID? = nil, groupIndex: UInt16, code: PageResponseCode) {
        self.requesterID = requesterID
        self.pasid = pasid
        self.groupIndex = groupIndex
        self.code = code
    }

    /// The response to the group `request` belongs to.
    public init(answering request: PageRequest, code: PageResponseCode) {
        self.init(requesterID: request.requesterID, pasid: request.pasid, groupIndex: request.groupIndex, code: code)
    }
}
