// Modelled physical memory: the memory that page tables live in and devices read and write.

/// Modelled physical memory (host-physical or guest-physical): a sparse set of 4 KiB frames.
///
/// Frames that were never written read as zero. Page-table frames come from the built-in frame
/// allocator (``allocateFrame()`` / ``freeFrame(_:)``), which hands out zeroed frames from
/// `[allocatorBase, allocatorLimit)`. No syscalls are made; everything is ordinary Swift memory.
///
/// This is a reference type: several page tables (and devices) share one memory.
public final class PhysicalMemory {
    /// The size of a frame, 4 KiB.
    public static let frameSize: UInt64 = 4096
    /// 64-bit words per frame.
    static let wordsPerFrame = 512

    /// Frame number → index of the frame's first word in `storage`.
    private var frameSlots: [UInt64: Int] = [:]
    /// Backing words for all materialized frames, 512 per frame.
    private var storage: [UInt64] = []
    /// Storage slots released by freed frames, reused before `storage` grows.
    private var freeSlots: [Int] = []

    /// Frames handed out by the allocator and not yet freed.
    private var allocated: Set<UInt64> = []
    /// Freed frame numbers, reused first (LIFO).
    private var freeFrames: [UInt64] = []
    private var nextFrame: UInt64

    /// The first physical address the frame allocator hands out.
    public let allocatorBase: UInt64
    /// One past the last physical address the frame allocator may hand out.
    public let allocatorLimit: UInt64

    /// Creates an empty memory whose frame allocator serves `[allocatorBase, allocatorLimit)`.
    ///
    /// Both bounds must be 4 KiB aligned. Addresses outside that window can still be read and
    /// written (e.g. as DMA targets); they are just never allocated as frames.
    public init(allocatorBase: UInt64 = 0x1_0000_0000, allocatorLimit: UInt64 = 0x10_0000_0000) {
        precondition(allocatorBase % Self.frameSize == 0 && allocatorLimit % Self.frameSize == 0)
        precondition(allocatorBase < allocatorLimit)
        self.allocatorBase = allocatorBase
        self.allocatorLimit = allocatorLimit
        self.nextFrame = allocatorBase / Self.frameSize
    }

    /// The number of frames currently allocated by the frame allocator.
    public var allocatedFrameCount: Int { allocated.count }

    /// The number of frames that hold storage (allocated or written to).
    public var residentFrameCount: Int { frameSlots.count }

    /// Allocates a zeroed 4 KiB frame and returns its physical address, or `nil` when the
    /// allocator's window is exhausted.
    public func allocateFrame() -> UInt64? {
        let frame: UInt64
        if let reused = freeFrames.popLast() {
            frame = reused
        } else {
            guard nextFrame < allocatorLimit / Self.frameSize else { return nil }
            frame = nextFrame
            nextFrame += 1
        }
        allocated.insert(frame)
        let slot = materialize(frame)
        for i in slot..<(slot + Self.wordsPerFrame) { storage[i] = 0 }
        return frame * Self.frameSize
    }

    /// Returns a frame obtained from ``allocateFrame()`` to the allocator. Its contents are
    /// discarded (it reads as zero afterwards).
    public func freeFrame(_ address: UInt64) {
        precondition(address % Self.frameSize == 0, "frame address must be 4 KiB aligned")
        let frame = address / Self.frameSize
        precondition(allocated.remove(frame) != nil, "freeing a frame that is not allocated")
        if let slot = frameSlots.removeValue(forKey: frame) { freeSlots.append(slot) }
        freeFrames.append(frame)
    }

    /// Whether the frame containing `address` is currently allocated by the frame allocator.
    public func isAllocated(_ address: UInt64) -> Bool {
        allocated.contains(address / Self.frameSize)
    }

    /// Reads the 64-bit little-endian word at `address` (8-byte aligned). Unwritten memory is zero.
    public func read64(_ address: UInt64) -> UInt64 {
        precondition(address & 7 == 0, "unaligned 64-bit read")
        guard let slot = frameSlots[address / Self.frameSize] else { return 0 }
        return storage[slot + Int((address % Self.frameSize) / 8)]
    }

    /// Writes the 64-bit word at `address` (8-byte aligned), materializing the frame if needed.
    public func write64(_ address: UInt64, _ value: UInt64) {
        precondition(address & 7 == 0, "unaligned 64-bit write")
        let slot = materialize(address / Self.frameSize)
        storage[slot + Int((address % Self.frameSize) / 8)] = value
    }

    /// Atomically (in this single-threaded model: simply) ORs `bits` into the word at `address`,
    /// as a hardware walker does when it sets accessed/dirty flags.
    public func or64(_ address: UInt64, _ bits: UInt64) {
        let old = read64(address)
        if old & bits != bits { write64(address, old | bits) }
    }

    /// Reads one byte at `address`.
    public func read8(_ address: UInt64) -> UInt8 {
        UInt8(truncatingIfNeeded: read64(address & ~7) >> ((address & 7) * 8))
    }

    /// Writes one byte at `address`.
    public func write8(_ address: UInt64, _ value: UInt8) {
        let shift = (address & 7) * 8
        let old = read64(address & ~7)
        write64(address & ~7, (old & ~(0xFF << shift)) | (UInt64(value) << shift))
    }

    private func materialize(_ frame: UInt64) -> Int {
        if let slot = frameSlots[frame] { return slot }
        let slot: Int
        if let reused = freeSlots.popLast() {
            slot = reused
            for i in slot..<(slot + Self.wordsPerFrame) { storage[i] = 0 }
        } else {
            slot = storage.count
            storage.append(contentsOf: repeatElement(0, count: Self.wordsPerFrame))
        }
        frameSlots[frame] = slot
        return slot
    }
}
