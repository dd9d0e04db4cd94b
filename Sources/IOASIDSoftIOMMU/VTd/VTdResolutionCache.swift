// The lock-free front of a VT-d unit's context and PASID caches: what the DMA hot path needs
// from a resolved requester (the PGTT, domain ID, PASID and privilege that make its IOTLB tag),
// kept in a small direct-mapped table that readers check without any lock.
//
// Each slot is four 64-bit atomic words — sequence, key, value, generation — written under a
// per-slot seqlock: a writer makes the sequence odd, stores the three words and makes it even
// again; a reader loads the sequence, the words, and the sequence again, and uses the slot only
// if both sequence loads are the same even number. Writers are serialized by the unit's `state`
// lock (a slot is filled by the slow path, which resolves under that lock).
//
// Validity. The unit's `generation` changes (under `state`) whenever something a resolution
// depends on may have changed: a context-cache or PASID-cache invalidation, a global command
// (TE, SRTP), a root table address write. A slot records the generation its resolution was made
// under and is used only while that is still the unit's generation, so one increment retires
// every slot at once. A reader that loaded a slot just before an invalidation may still use it:
// that DMA is in flight, and the invalidation wait drains it (see VTdUnit+Invalidation.swift).

import Synchronization

/// The lock-free resolution cache of a ``VTdUnit`` (see the comment at the top of the file).
final class VTdResolutionCache: @unchecked Sendable {
    /// Slots in the table (a power of two).
    static let slotCount = 64
    /// Words per slot: sequence, key, value, generation.
    private static let slotWords = 4

    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    /// The current generation; slots made under another one are dead.
    let generation = Atomic<UInt64>(1)

    init() {
        let count = Self.slotCount * Self.slotWords
        let raw = UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 64)
        words = raw.bindMemory(to: Atomic<UInt64>.self, capacity: count)
        for i in 0..<count { (words + i).initialize(to: Atomic<UInt64>(0)) }
    }

    deinit {
        UnsafeMutableRawPointer(words).deallocate()
    }

    // MARK: Keys and values

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

    // MARK: Access

    @inline(__always)
    private func slot(_ key: UInt64) -> UnsafeMutablePointer<Atomic<UInt64>> {
        let index = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 58) & (Self.slotCount - 1)
        return words + index &* Self.slotWords
    }

    /// The value cached for `key` under the current generation, or nil. Takes no lock and
    /// writes nothing.
    @inline(__always)
    func lookup(_ key: UInt64) -> UInt64? {
        let s = slot(key)
        let s1 = s[0].load(ordering: .acquiring)
        let k = s[1].load(ordering: .relaxed)
        let v = s[2].load(ordering: .relaxed)
        let g = s[3].load(ordering: .relaxed)
        atomicMemoryFence(ordering: .acquiring)
        guard s1 & 1 == 0, s[0].load(ordering: .relaxed) == s1, k == key,
              g == generation.load(ordering: .acquiring) else { return nil }
        return v
    }

    /// Caches `value` for `key`, made under `generation`. Call with the unit's `state` locked.
    func store(_ key: UInt64, value: UInt64, generation g: UInt64) {
        let s = slot(key)
        let seq = s[0].load(ordering: .relaxed)
        s[0].store(seq &+ 1, ordering: .relaxed)
        atomicMemoryFence(ordering: .releasing)
        s[1].store(key, ordering: .relaxed)
        s[2].store(value, ordering: .relaxed)
        s[3].store(g, ordering: .relaxed)
        s[0].store(seq &+ 2, ordering: .releasing)
    }

    /// Retires every slot. Call with the unit's `state` locked.
    func invalidateAll() {
        generation.wrappingAdd(1, ordering: .releasing)
    }
}
