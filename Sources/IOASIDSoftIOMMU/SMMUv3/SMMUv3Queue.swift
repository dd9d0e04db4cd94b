// The circular queues of the SMMUv3 (§3.5, §3.21.2): the command queue software produces into,
// and the event and PRI queues the SMMU produces into. Each lives in memory at a base address
// with 2^LOG2SIZE entries; PROD and CONS registers hold an index and a wrap bit one above it.

/// A queue's base register and index registers, with the circular-index arithmetic.
public struct SMMUv3QueueState: Hashable, Sendable {
    /// The raw base register (`ADDR` [51:5], `LOG2SIZE` [4:0], `RA`/`WA` [62]).
    public var base: UInt64 = 0
    /// The producer index register (index, wrap bit, and `OVFLG` [31] for the output queues).
    public var prod: UInt32 = 0
    /// The consumer index register (index, wrap bit, and `ERR` [30:24] / `OVACKFLG` [31]).
    public var cons: UInt32 = 0
    /// The size of one entry in bytes.
    public let entrySize: UInt64
    /// The largest `LOG2SIZE` the SMMU supports (`IDR1.CMDQS` / `EVTQS` / `PRIQS`).
    public let maxLog2Size: Int

    /// A queue of `entrySize`-byte entries supporting up to `2^maxLog2Size` entries.
    public init(entrySize: UInt64, maxLog2Size: Int) {
        self.entrySize = entrySize
        self.maxLog2Size = maxLog2Size
    }

    /// `LOG2SIZE`, capped at the maximum the SMMU supports.
    public var log2Size: Int { min(Int(base & 0x1F), maxLog2Size) }
    /// The number of entries.
    public var capacity: UInt32 { 1 << UInt32(log2Size) }
    /// The queue's first byte (`ADDR` aligned down to the queue size, as the SMMU treats it).
    public var address: UInt64 {
        let bytes = UInt64(capacity) * entrySize
        return base & SMMUv3Field.mask(51, 5) & ~(max(bytes, 32) - 1)
    }

    /// The index-and-wrap bits of a PROD or CONS value.
    @inline(__always)
    func position(_ value: UInt32) -> UInt32 { value & ((capacity << 1) - 1) }
    /// The index part of a PROD or CONS value.
    @inline(__always)
    func index(_ value: UInt32) -> UInt32 { value & (capacity - 1) }
    /// The position after `value`, wrapping.
    @inline(__always)
    func advanced(_ value: UInt32) -> UInt32 { (position(value) + 1) & ((capacity << 1) - 1) }

    /// Whether the queue holds no entries.
    public var isEmpty: Bool { position(prod) == position(cons) }
    /// Whether every slot holds an entry.
    public var isFull: Bool { index(prod) == index(cons) && position(prod) != position(cons) }
    /// The address of the slot at `value`'s index.
    public func slot(_ value: UInt32) -> UInt64 { address + UInt64(index(value)) * entrySize }
}
