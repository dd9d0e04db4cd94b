// The key and value words of a VT-d unit's lock-free resolution cache (``ResolutionCache``).

/// How a VT-d unit encodes a requester's resolution for its ``ResolutionCache``.
enum VTdFastResolution {
    /// How a request reaches the unit, as a key field.
    enum Kind: UInt64 {
        case untranslated = 0, translated = 1
    }

    /// The key of a request: requester, PASID (if any), privilege and execute asked for, kind.
    /// Never zero (bit 63 is set), so an empty slot matches nothing.
    @inline(__always)
    static func key(rid: UInt16, pasid: UInt32?, privileged: Bool, execute: Bool, kind: Kind) -> UInt64 {
        var k: UInt64 = 1 << 63 | kind.rawValue << 40 | UInt64(rid)
        if let pasid { k |= 1 << 37 | UInt64(pasid & 0xF_FFFF) << 16 }
        if privileged { k |= 1 << 38 }
        if execute { k |= 1 << 39 }
        return k
    }

    /// What a resolution leads to on the hot path.
    enum Mode: UInt64 {
        /// Translation disabled, or a translated request the context allows: the address as is.
        case identity = 0
        /// Second-stage translation: IOTLB tag (DID, no PASID).
        case secondStage = 1
        /// First-stage translation: IOTLB tag (DID, PASID, privilege).
        case firstStage = 2
        /// Nested translation: nested IOTLB tag (DID, PASID, privilege).
        case nested = 3
        /// Pass-through: the address as is, within the host address width.
        case passThrough = 4
    }

    /// A resolution's value word: bits 2:0 mode, 3 privileged, 31:16 DID, 51:32 PASID.
    @inline(__always)
    static func value(_ mode: Mode, domain: UInt16 = 0, pasid: UInt32 = 0, privileged: Bool = false) -> UInt64 {
        mode.rawValue | (privileged ? 8 : 0) | UInt64(domain) << 16 | UInt64(pasid & 0xF_FFFF) << 32
    }
}
