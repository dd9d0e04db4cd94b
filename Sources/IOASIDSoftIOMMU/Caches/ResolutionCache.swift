// The lock-free front of an IOMMU's configuration caches: what the DMA hot path needs from a
// resolved requester (for VT-d the PGTT, domain ID, PASID and privilege that make its IOTLB tag;
// for SMMUv3 the VMID and ASID of its TLB tag), as one 64-bit value under a 64-bit key, kept in
// a small direct-mapped table that readers check without any lock.
//
// Each slot is four 64-bit atomic words — sequence, key, value, generation — written under a
// per-slot seqlock: a writer makes the sequence odd, stores the three words and makes it even
// again; a reader loads the sequence, the words, and the sequence again, and uses the slot only
// if both sequence loads are the same even number. Writers are serialized by the unit's `state`
// lock (a slot is filled by the slow path, which resolves under that lock). Keys are never zero.
//
// Validity. The cache's `generation` changes (under the unit's `state`) whenever something a
// resolution depends on may have changed (VT-d: a context-cache or PASID-cache invalidation, a
// global command, a root table address write; SMMUv3: a configuration invalidation applied at a
// CMD_SYNC, any register write). A slot records the generation its resolution was made
// under and is used only while that is still the unit's generation, so one increment retires
// every slot at once. A reader that loaded a slot just before an invalidation may still use it:
// that DMA is in flight, and the invalidation wait drains it (see DeviceEndpoint.drainDMA).

import Synchronization

/// A lock-free resolution cache (see the comment at the top of the file).
final class ResolutionCache: @unchecked Sendable {
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
