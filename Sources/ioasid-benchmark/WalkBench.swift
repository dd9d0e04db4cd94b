// Section 8 of ioasid-benchmark: the software IOMMU's page-table walks (what an IOTLB miss
// costs) and the memory its page tables take per mapped GiB.
//
//   - single-stage 4-level walks (x86 first stage, VT-d second stage, Arm stage 1) and nested
//     2D walks (x86 first stage over VT-d second stage, Arm stage 1 over stage 2: 4 + 4 levels,
//     24 table reads), each through the public `translate` of `PageTable` / `NestedPageTable`,
//     with every architectural check and A/D updates on (`updateAccessedDirty: true`; in the
//     steady state the flags are already set, so no entry is written);
//   - two same-run baselines, each the same number of dependent loads through the same table
//     words in the same order (the walk with everything but the loads taken out):
//       * "read64 chase": through `PhysicalMemory.read64`, masking the next address out of each
//         entry;
//       * "array chase": through a plain `UnsafeMutablePointer<UInt64>` copy of the same memory
//         (same offsets, so the same cache-line and page layout), no bounds checks, no atomics;
//   - page-table bytes per mapped GiB per format with 4 KiB pages, 2 MiB blocks and 1 GiB pages,
//     against the leaf-entry floor (8 bytes per leaf);
//   - mallocs per walk: `walkBenchSingleWalk()` and `walkBenchNestedWalk()` are counted in
//     section 4's child.

import Glibc
import IOASIDSoftIOMMU

/// Bits 47:12: the next-table / output address in every format here (Arm's DBM, bit 51, and
/// x86's XD, bit 63, are outside; the addresses used have bits 51:48 clear).
private let chaseAddressMask: UInt64 = 0x0000_FFFF_FFFF_F000
/// Walks per timed call.
private let walkBatch = 256
/// Precomputed input addresses (a power of two).
private let walkAddressCount = 4096

/// The index into the table at engine height `level` (1 = the 4 KiB leaves) for `input`.
@inline(__always) private func chaseIndex(_ input: UInt64, _ level: Int) -> UInt64 {
    (input >> UInt64(3 + 9 * level)) & 511
}

/// A plain (non-atomic, unchecked) copy of chosen frames of a `PhysicalMemory`, at the same
/// offsets from `base`: the pointer-chasing baseline with the tables' exact layout.
private final class PlainCopy {
    let base: UInt64
    let length: Int
    let words: UnsafeMutablePointer<UInt64>

    init(base: UInt64, length: UInt64) {
        self.base = base
        self.length = Int(length)
        guard let p = reportedMmap(Int(length), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE),
              p != MAP_FAILED else { fail("mmap of the plain copy failed") }
        words = p.bindMemory(to: UInt64.self, capacity: Int(length / 8))
    }

    deinit { reportedMunmap(words, length) }

    /// Copies the frame at physical `frame` (which must lie in the copy's span).
    func copy(frame: UInt64, from memory: PhysicalMemory) {
        precondition(frame >= base && frame - base + 4096 <= UInt64(length))
        let first = Int((frame - base) >> 3)
        for i in 0..<512 { words[first + i] = memory.read64(frame + UInt64(i) * 8) }
    }
}

/// How a baseline chase loads a word: a small value type, so each chase is specialised for it.
private protocol ChaseLoader {
    func load(_ address: UInt64) -> UInt64
}

/// Loads through `PhysicalMemory.read64` (bounds check, atomic acquire load).
private struct Read64Loader: ChaseLoader {
    let memory: PhysicalMemory
    @inline(__always) func load(_ address: UInt64) -> UInt64 { memory.read64(address) }
}

/// Loads from a ``PlainCopy``: an unchecked plain load.
private struct PlainLoader: ChaseLoader {
    let base: UInt64
    let words: UnsafeMutablePointer<UInt64>
    init(_ copy: PlainCopy) {
        base = copy.base
        words = copy.words
    }
    @inline(__always) func load(_ address: UInt64) -> UInt64 { words[Int(truncatingIfNeeded: (address &- base) >> 3)] }
}

/// `count` random 8-byte-aligned addresses in `[base, base + size)`, from a fixed seed.
private func randomAddresses(base: UInt64, size: UInt64, seed: UInt64) -> UnsafeMutablePointer<UInt64> {
    let p = UnsafeMutablePointer<UInt64>.allocate(capacity: walkAddressCount)
    var state = seed
    for i in 0..<walkAddressCount {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        p[i] = base + ((state >> 16) % size) & ~7
    }
    return p
}

/// A set-up walk benchmark: the walk and its two baselines.
private protocol WalkRig {
    /// `walkAddressCount` input addresses, all mapped.
    var addresses: UnsafeMutablePointer<UInt64> { get }
    /// One walk of `input`, with every check and A/D updates; returns the output address.
    func walk(_ input: UInt64) -> UInt64
    /// The walk's loads for `input` through `PhysicalMemory.read64`, nothing else.
    func read64Chase(_ input: UInt64) -> UInt64
    /// The walk's loads for `input` through a plain copy of the memory, nothing else.
    func arrayChase(_ input: UInt64) -> UInt64
}

// MARK: - single-stage walks

/// One table of format `F` with `size` bytes mapped in 4 KiB pages (the output is offset by
/// 4 KiB from 2 MiB alignment, so no larger leaf is possible and every walk reads 4 entries).
private struct SingleStageRig<F: PageTableFormat>: WalkRig {
    static var iovaBase: UInt64 { 0x7F00_0000_0000 }
    let memory: PhysicalMemory
    let table: PageTable<F>
    let plain: PlainCopy
    let addresses: UnsafeMutablePointer<UInt64>
    let root: UInt64
    let top: Int

    init(format: F, permissions: F.Permissions, size: UInt64) {
        memory = PhysicalMemory(allocatorBase: 0x1_0000_0000, allocatorLimit: 0x1_0400_0000)
        table = try! PageTable(memory: memory, format: format)
        try! table.map(iova: Self.iovaBase, physical: 0x40_0000_1000, size: size, permissions: permissions)
        root = table.root
        top = format.topLevel
        addresses = randomAddresses(base: Self.iovaBase, size: size, seed: 7)
        plain = PlainCopy(base: memory.allocatorBase, length: memory.allocatorLimit - memory.allocatorBase)
        for frame in stride(from: memory.allocatorBase, to: memory.allocatorLimit, by: 4096) where memory.isAllocated(frame) {
            plain.copy(frame: frame, from: memory)
        }
        // The first walks set A (and D for writes); after them the steady state writes nothing.
        for i in 0..<walkAddressCount { _ = table.translate(addresses[i], access: .write) }
        for frame in stride(from: memory.allocatorBase, to: memory.allocatorLimit, by: 4096) where memory.isAllocated(frame) {
            plain.copy(frame: frame, from: memory)
        }
    }

    /// One walk, with every check and A/D updates.
    @inline(__always) func walk(_ input: UInt64) -> UInt64 {
        switch table.translate(input, access: .write, updateAccessedDirty: true) {
        case .success(let t): t.output
        case .failure: fail("walk bench: unexpected fault")
        }
    }

    /// The walk's loads with `loader`, nothing else.
    @inline(__always) func chase<L: ChaseLoader>(_ input: UInt64, _ loader: L) -> UInt64 {
        var t = root
        var level = top
        while level > 1 {
            t = loader.load(t &+ chaseIndex(input, level) &* 8) & chaseAddressMask
            level -= 1
        }
        return loader.load(t &+ chaseIndex(input, 1) &* 8)
    }

    @inline(__always) func read64Chase(_ input: UInt64) -> UInt64 { chase(input, Read64Loader(memory: memory)) }
    @inline(__always) func arrayChase(_ input: UInt64) -> UInt64 { chase(input, PlainLoader(plain)) }
}

// MARK: - nested walks

/// A guest stage-1 table of format `S1` (mapping `size` bytes of IOVA in 4 KiB pages) over a
/// host stage-2 table of format `S2` that maps guest-physical `[0, 2 GiB)` to `hostBase + gpa`
/// in 4 KiB pages. The guest's table frames live in guest-physical `[1 MiB, 64 MiB)`; they are
/// copied to their host location once the guest has written them (the guest's own view is then
/// unused). Every walk reads 4 × (4 + 1) + 4 = 24 entries.
private struct NestedRig<S1: PageTableFormat, S2: PageTableFormat>: WalkRig {
    static var iovaBase: UInt64 { 0x7F00_0000_0000 }
    static var hostBase: UInt64 { 0x1_0400_1000 }  // 4 GiB + 64 MiB + 4 KiB: 4 KiB stage-2 leaves
    let host: PhysicalMemory
    let stage1: PageTable<S1>
    let stage2: PageTable<S2>
    let nested: NestedPageTable<S1, S2>
    let plain: PlainCopy
    let addresses: UnsafeMutablePointer<UInt64>
    let s1Root: UInt64, s1Top: Int, s2Root: UInt64, s2Top: Int

    init(stage1 f1: S1, permissions p1: S1.Permissions, stage2 f2: S2, permissions p2: S2.Permissions, size: UInt64) {
        host = PhysicalMemory(allocatorBase: 0x1_0000_0000, allocatorLimit: 0x2_0000_0000)
        let guest = PhysicalMemory(allocatorBase: 0x10_0000, allocatorLimit: 0x400_0000)
        stage2 = try! PageTable(memory: host, format: f2)
        try! stage2.map(iova: 0, physical: Self.hostBase, size: 2 << 30, permissions: p2)
        stage1 = try! PageTable(memory: guest, format: f1)
        try! stage1.map(iova: Self.iovaBase, physical: 0x2000_1000, size: size, permissions: p1)
        var guestFrames: [UInt64] = []
        for frame in stride(from: guest.allocatorBase, to: guest.allocatorLimit, by: 4096) where guest.isAllocated(frame) {
            guestFrames.append(frame)
            for offset in stride(from: UInt64(0), to: 4096, by: 8) {
                host.write64(Self.hostBase + frame + offset, guest.read64(frame + offset))
            }
        }
        nested = NestedPageTable(stage1: f1, stage1Root: stage1.root, stage2: stage2)
        s1Root = stage1.root
        s1Top = f1.topLevel
        s2Root = stage2.root
        s2Top = f2.topLevel
        addresses = randomAddresses(base: Self.iovaBase, size: size, seed: 11)
        for i in 0..<walkAddressCount { _ = nested.translate(addresses[i], access: .write) }
        plain = PlainCopy(base: host.allocatorBase, length: Self.hostBase + 0x400_0000 - host.allocatorBase)
        for frame in stride(from: host.allocatorBase, to: host.allocatorLimit, by: 4096) where host.isAllocated(frame) {
            plain.copy(frame: frame, from: host)
        }
        for frame in guestFrames { plain.copy(frame: Self.hostBase + frame, from: host) }
        guard case .success(let t) = nested.translate(addresses[0], access: .write), t.tableReads == 24 else {
            fail("nested walk bench: expected a 24-read walk")
        }
    }

    /// One 2D walk, with every check at both stages and A/D updates.
    @inline(__always) func walk(_ input: UInt64) -> UInt64 {
        switch nested.translate(input, access: .write, updateAccessedDirty: true) {
        case .success(let t): t.output
        case .failure: fail("nested walk bench: unexpected fault")
        }
    }

    /// Guest-physical `gpa` through stage 2 with `loader`: 4 dependent loads.
    @inline(__always) func chaseStage2<L: ChaseLoader>(_ gpa: UInt64, _ loader: L) -> UInt64 {
        var t = s2Root
        var level = s2Top
        while level > 1 {
            t = loader.load(t &+ chaseIndex(gpa, level) &* 8) & chaseAddressMask
            level -= 1
        }
        return (loader.load(t &+ chaseIndex(gpa, 1) &* 8) & chaseAddressMask) | (gpa & 0xFFF)
    }

    /// The 24 loads of the 2D walk with `loader`, nothing else.
    @inline(__always) func chase<L: ChaseLoader>(_ input: UInt64, _ loader: L) -> UInt64 {
        var table = s1Root
        var level = s1Top
        while true {
            let entry = loader.load(chaseStage2(table &+ chaseIndex(input, level) &* 8, loader))
            table = entry & chaseAddressMask
            if level == 1 { break }
            level -= 1
        }
        return chaseStage2(table | (input & 0xFFF), loader)
    }

    @inline(__always) func read64Chase(_ input: UInt64) -> UInt64 { chase(input, Read64Loader(memory: host)) }
    @inline(__always) func arrayChase(_ input: UInt64) -> UInt64 { chase(input, PlainLoader(plain)) }
}

// MARK: - timing

/// Zero, from a source the optimizer cannot see through: `input &+ (previous & chainMask)` makes
/// each walk's input depend on the previous walk's output without changing it.
private let chainMask = UInt64(truncatingIfNeeded: getpid()) >> 40

/// One row's figures: the walk and the array chase (paired), and the walk and the read64 chase
/// (paired), in one mode.
private struct WalkTiming {
    var walk: Stats
    var array: Stats
    var overArray: Stats
    var read64: Stats
    var overRead64: Stats
}

/// Walk vs both baselines for one rig, in batches of `walkBatch`. `dependent`: each input
/// depends on the previous output (latency: one chain of dependent loads, as in a
/// pointer-chasing loop); otherwise consecutive walks are independent and may overlap in the
/// CPU (throughput). Generic, so each rig's loops are specialised: no closure call per walk.
private func timeWalks<R: WalkRig>(_ rig: R, dependent: Bool) -> WalkTiming {
    var position = 0
    let mask = dependent ? chainMask : 0
    @inline(__always) func batch(_ body: (UInt64) -> UInt64) {
        var acc: UInt64 = 0, previous: UInt64 = 0
        let start = position
        position = (start &+ walkBatch) & (walkAddressCount - 1)
        // Two loops, not a select inside one: a conditional move would make every input depend
        // on the previous output in both modes.
        if dependent {
            for i in 0..<walkBatch {
                previous = body(rig.addresses[(start &+ i) & (walkAddressCount - 1)] &+ (previous & mask))
                acc &+= previous
            }
        } else {
            for i in 0..<walkBatch { acc &+= body(rig.addresses[(start &+ i) & (walkAddressCount - 1)]) }
        }
        softIOMMUBlackHole(acc)
    }
    func walks() { batch { rig.walk($0) } }
    func arrayChases() { batch { rig.arrayChase($0) } }
    func read64Chases() { batch { rig.read64Chase($0) } }
    let n = calibrate { walks(); arrayChases() }
    let vsArray = paired(iterations: n, op: walks, baseline: arrayChases)
    let vsRead64 = paired(iterations: n, op: walks, baseline: read64Chases)
    let b = Double(walkBatch)
    func perWalk(_ s: Stats) -> Stats { Stats(s.samples.map { $0 / b }) }
    return WalkTiming(walk: perWalk(Stats(vsArray.op.samples + vsRead64.op.samples)), array: perWalk(vsArray.base),
                      overArray: vsArray.ratio, read64: perWalk(vsRead64.base), overRead64: vsRead64.ratio)
}

/// The table rows for one rig: dependent walks (the goal's figure) and independent walks.
private func walkRows<R: WalkRig>(_ name: String, reads: Int, _ rig: R) -> [[String]] {
    let d = timeWalks(rig, dependent: true)
    let i = timeWalks(rig, dependent: false)
    return [
        [name, String(reads), fmt(d.walk.median), "\(fmt(d.walk.min))..\(fmt(d.walk.max))", fmt(d.array.median),
         fmt(d.overArray.median, 2), fmt(d.read64.median), fmt(d.overRead64.median, 2), d.overArray.median <= 4 ? "yes" : "NO"],
        ["  (independent walks)", "", fmt(i.walk.median), "\(fmt(i.walk.min))..\(fmt(i.walk.max))", fmt(i.array.median),
         fmt(i.overArray.median, 2), fmt(i.read64.median), fmt(i.overRead64.median, 2), ""],
    ]
}

// MARK: - malloc counting (section 4's child)

/// A closure doing one x86 4-level walk, for section 4's malloc counting.
func walkBenchSingleWalk() -> () -> Void {
    let rig = SingleStageRig(format: X86FirstStageFormat(), permissions: [.write], size: 64 << 20)
    var i = 0
    return {
        i = (i + 1) & (walkAddressCount - 1)
        softIOMMUBlackHole(rig.walk(rig.addresses[i]))
    }
}

/// A closure doing one x86-over-VT-d nested walk (24 reads), for section 4's malloc counting.
func walkBenchNestedWalk() -> () -> Void {
    let rig = NestedRig(stage1: X86FirstStageFormat(), permissions: [.write],
                        stage2: VTdSecondStageFormat(accessedDirtyEnabled: true), permissions: .readWrite, size: 64 << 20)
    var i = 0
    return {
        i = (i + 1) & (walkAddressCount - 1)
        softIOMMUBlackHole(rig.walk(rig.addresses[i]))
    }
}

// MARK: - page-table memory

/// Table bytes and leaves after mapping 1 GiB at a 1 GiB-aligned IOVA, with the output aligned
/// so that `map` picks `leaf` (4 KiB, 2 MiB or 1 GiB) everywhere; nil if the format has no leaf
/// of that size.
private func tableMemory<F: PageTableFormat>(_ format: F, _ permissions: F.Permissions, leaf: UInt64) -> (bytes: Int, leaves: Int)? {
    let level = leaf == 4096 ? 1 : leaf == 2 << 20 ? 2 : 3
    guard format.mayMapLeaf(atLevel: level) else { return nil }
    let memory = PhysicalMemory(allocatorBase: 0x1_0000_0000, allocatorLimit: 0x1_0400_0000)
    let table = try! PageTable(memory: memory, format: format)
    // 1 GiB-aligned output for 1 GiB pages; 2 MiB- (not 1 GiB-) aligned for 2 MiB; 4 KiB otherwise.
    let physical: UInt64 = 0x40_0000_0000 + (leaf == 4096 ? 0x1000 : leaf == 2 << 20 ? 0x20_0000 : 0)
    try! table.map(iova: 0x40_0000_0000, physical: physical, size: 1 << 30, permissions: permissions)
    var leaves = 0
    table.forEachMapping { m in
        if m.size != leaf { fail("page-table memory: expected \(leaf)-byte leaves, got \(m.size)") }
        leaves += 1
    }
    return (table.tableFrameCount * 4096, leaves)
}

private func memoryRows<F: PageTableFormat>(_ name: String, _ format: F, _ permissions: F.Permissions) -> [[String]] {
    [(UInt64(4096), "4 KiB"), (UInt64(2 << 20), "2 MiB"), (UInt64(1 << 30), "1 GiB")].map { leaf, label in
        guard let m = tableMemory(format, permissions, leaf: leaf) else { return [name, label, "-", "-", "-", "(no such leaf)"] }
        let floor = m.leaves * 8
        return [name, label, String(m.leaves), String(m.bytes), String(floor), fmt(Double(m.bytes) / Double(floor), 2)]
    }
}

// MARK: - the section

@MainActor
func walkSection() {
    print("== 8. software IOMMU: page-table walks on an IOTLB miss vs pointer chasing; page-table memory per GiB ==")
    let size: UInt64 = 1 << 30
    var rows: [[String]] = []
    do {
        let r = SingleStageRig(format: X86FirstStageFormat(), permissions: [.write], size: size)
        rows += walkRows("x86 first stage, 4-level", reads: 4, r)
    }
    do {
        let r = SingleStageRig(format: VTdSecondStageFormat(accessedDirtyEnabled: true), permissions: .readWrite, size: size)
        rows += walkRows("VT-d second stage, 4-level", reads: 4, r)
    }
    do {
        let r = SingleStageRig(format: ArmStage1Format(hardwareAccessFlag: true, hardwareDirtyState: true),
                               permissions: [.write], size: size)
        rows += walkRows("Arm stage 1, 4-level", reads: 4, r)
    }
    do {
        let r = NestedRig(stage1: X86FirstStageFormat(), permissions: [.write],
                          stage2: VTdSecondStageFormat(accessedDirtyEnabled: true), permissions: .readWrite, size: size)
        rows += walkRows("nested x86 S1 over VT-d S2", reads: 24, r)
    }
    do {
        let r = NestedRig(stage1: ArmStage1Format(hardwareAccessFlag: true, hardwareDirtyState: true), permissions: [.write],
                          stage2: try! ArmStage2Format(hardwareAccessFlag: true, hardwareDirtyState: true),
                          permissions: [.read, .write], size: size)
        rows += walkRows("nested Arm S1 over Arm S2", reads: 24, r)
    }
    printTable(["walk (write, A/D on, 4 KiB leaves)", "reads", "ns/walk", "spread", "array chase ns", "× array",
                "read64 chase ns", "× read64", "goal ≤ 4× array"], rows)
    print("(1 GiB mapped in 4 KiB pages; \(walkAddressCount) random addresses in it, batches of \(walkBatch); baselines: the same")
    print(" loads in the same order through a plain copy of the memory (array) / PhysicalMemory.read64, paired run by run.")
    print(" First row of each: every input depends on the previous output, one chain of dependent loads as in a")
    print(" pointer-chasing loop (latency); second row: independent walks the CPU may overlap (throughput).)")
    print("")

    var memory: [[String]] = []
    memory += memoryRows("x86 first stage", X86FirstStageFormat(), [.write])
    memory += memoryRows("VT-d second stage", VTdSecondStageFormat(), .readWrite)
    memory += memoryRows("Arm stage 1", ArmStage1Format(), [.write])
    memory += memoryRows("Arm stage 2", try! ArmStage2Format(), [.read, .write])
    printTable(["page-table memory per mapped GiB", "leaf", "leaves", "table bytes", "floor (8 B/leaf)", "× floor"], memory)
    print("(table frames x 4 KiB after mapping 1 GiB at a 1 GiB-aligned IOVA, 4-level tables)")
    print("")
}
