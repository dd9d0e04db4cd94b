// The hardware walk, shared by every format and by both stages of a nested walk.
//
// The walk reads one entry per level through a *port*: the direct port reads physical memory;
// the nested walker's port first translates each stage-1 table address (a guest-physical
// address) through stage 2. The format decides what each entry means (`walkStep`) and whether
// the leaf allows the access (`checkLeaf`). Hardware updates (x86 / VT-d accessed and dirty
// flags, Arm AF and dirty state) are made only when the whole walk succeeded, top-down, through
// the port — so under nesting they are writes through stage 2.
//
// Concurrency. Walks run on any number of threads, lock-free, while software changes the tables
// (``PageTable`` serializes its writers and defers freeing table frames; see there). Every entry
// is read with one atomic load, so a walk sees each entry either before or after a change, never
// torn. The architectures make a walker's accessed/dirty update an atomic read-modify-write of
// the entry; here each one is a compare-exchange from the value the walk read to the updated
// value (making it conditional on the entry still being the one the walk used is this model's
// choice): if another walker meanwhile changed only the bits this update manages (it set A
// first, say), the update is re-applied to the new value; if software changed any other bit
// (unmapped, remapped, split the leaf), nothing is written and the walk restarts from the root.
// So a walk never sets accessed/dirty state in an entry that no longer maps what it translated,
// and never loses dirty state that software cleans concurrently.
//
// Nothing here allocates: the pending table-entry updates are kept in uninitialised stack space,
// results are small enums. In the steady state (flags already set) a walk writes nothing and
// records no pending update.

import Synchronization

/// How a walker's update of one entry went.
@usableFromInline
enum PageTableEntryUpdate: Equatable {
    /// The entry still held what the walk read (apart from bits the update itself manages, which
    /// another walker may have set), and now holds the update.
    case updated
    /// Software changed the entry after the walk read it: nothing was written, the walk restarts.
    case changed
    /// The port could not make the write (it records why); the walk fails with a port fault.
    case failed
}

/// How a walk reaches the memory its tables live in.
@usableFromInline
protocol PageTableWalkPort {
    /// Reads the entry at `address` (an address in the space the table pointers live in) for
    /// engine level `level`; nil if the port could not reach it (it records why).
    mutating func read(_ address: UInt64, level: Int) -> UInt64?
    /// Makes the hardware update of the entry at `address`, which the walk read at `level` as
    /// `expected`, to `desired` (see ``hardwareUpdate(_:_:expected:desired:)``).
    mutating func update(_ address: UInt64, level: Int, expected: UInt64, desired: UInt64) -> PageTableEntryUpdate
}

/// Makes a walker's atomic update of the entry at `address` in `memory` from `expected` (the
/// value the walk read) to `desired`, and returns whether it did.
///
/// A compare-exchange loop: when the entry differs from `expected` only in the bits this update
/// sets or clears (another walker's update of the same flags, or software cleaning the dirty
/// state this update sets again), the update is applied to the current value; when it differs in
/// any other bit, software changed the entry and nothing is written (the caller restarts the
/// walk). Setting and clearing bits are alike here: Arm stage-1 dirty state clears AP[2], and
/// does so atomically against software setting it again (dirty read-and-clear).
@inlinable
func hardwareUpdate(_ memory: PhysicalMemory, _ address: UInt64, expected: UInt64, desired: UInt64) -> Bool {
    let set = desired & ~expected, clear = expected & ~desired
    let unmanaged = ~(set | clear)
    var current = expected
    while true {
        let (exchanged, seen) = memory.compareExchange64(address, expected: current, desired: (current | set) & ~clear)
        if exchanged { return true }
        if seen & unmanaged != expected & unmanaged { return false }
        current = seen
    }
}

/// The port of a single-stage walk: tables are in `memory` at the addresses the entries hold.
///
/// The port keeps what `PhysicalMemory.read64`'s fast path needs (the allocator window's base,
/// size and words) so a read in the window is a bounds check and one atomic load, with no call
/// and no reference counting; other addresses go through `read64`. It does not retain `memory`:
/// whoever walks holds it for the walk. (A retain and release per walk are two locked
/// instructions, which on x86 also keep the CPU from overlapping the loads of consecutive walks.)
@usableFromInline
struct DirectWalkPort: PageTableWalkPort {
    @usableFromInline let memory: Unmanaged<PhysicalMemory>
    @usableFromInline let windowBase: UInt64
    @usableFromInline let windowSize: UInt64
    @usableFromInline let window: UnsafeMutablePointer<Atomic<UInt64>>
    /// Entries read so far.
    @usableFromInline var reads = 0

    @inlinable init(memory: PhysicalMemory) {
        self.memory = .passUnretained(memory)
        windowBase = memory.allocatorBase
        windowSize = memory.windowSize
        window = memory.windowWords
    }

    /// The word at `address` (8-byte aligned: a table address plus 8 × an index), with acquire
    /// ordering, as `PhysicalMemory.read64` reads it.
    @inlinable @inline(__always)
    func load(_ address: UInt64) -> UInt64 {
        let offset = address &- windowBase
        if offset < windowSize { return window[Int(truncatingIfNeeded: offset &>> 3)].load(ordering: .acquiring) }
        return memory._withUnsafeGuaranteedRef { $0.read64(address) }
    }

    @inlinable @inline(__always)
    mutating func read(_ address: UInt64, level: Int) -> UInt64? {
        reads &+= 1
        return load(address)
    }

    @inlinable
    mutating func update(_ address: UInt64, level: Int, expected: UInt64, desired: UInt64) -> PageTableEntryUpdate {
        memory._withUnsafeGuaranteedRef { hardwareUpdate($0, address, expected: expected, desired: desired) } ? .updated : .changed
    }
}

/// The outcome of a walk.
@usableFromInline
enum PageTableWalkOutcome<State> {
    /// The walk succeeded. `leafSlot` is where the leaf lives (in the port's address space),
    /// `leafLevel` its engine level, `state` what the table entries above it accumulated.
    case translated(PageTranslation, leafSlot: UInt64, leafLevel: Int, state: State)
    /// The format faulted.
    case fault(PageTableFault)
    /// The port could not read or update an entry; it holds the reason.
    case portFault
}

/// One hardware update a successful walk makes: the entry at `address`, read as `old` at
/// engine level `level`, becomes `new`.
@usableFromInline
struct PendingTableUpdate {
    @usableFromInline var address: UInt64
    @usableFromInline var old: UInt64
    @usableFromInline var new: UInt64
    @usableFromInline var level: Int
    @inlinable init(address: UInt64, old: UInt64, new: UInt64, level: Int) {
        self.address = address
        self.old = old
        self.new = new
        self.level = level
    }
}

extension PageTableFormat {
    /// Walks the table rooted at `root` for `input` and `access`, reading through `port`.
    ///
    /// With `update`, a successful walk makes the hardware's updates (table entries first,
    /// top-down, then the leaf) through the port; a failing walk changes nothing. When an update
    /// finds that software changed an entry since the walk read it, the walk restarts from the
    /// root (see the comment at the top of this file).
    @inlinable @inline(__always)
    func walk<Port: PageTableWalkPort>(root: UInt64, input: UInt64, access: PageAccess, update: Bool,
                                       port: inout Port) -> PageTableWalkOutcome<WalkState> {
        if let fault = inputFault(input) { return .fault(fault) }
        // The pending table-entry updates live in uninitialised stack space: in the steady state
        // there are none, and zeroing a tuple for them would cost more than the rest of a level.
        return withUnsafeTemporaryAllocation(of: PendingTableUpdate.self, capacity: 4) { pending in
            while true {
                var table = root
                var level = topLevel
                var state = initialWalkState
                var pendingCount = 0
                descent: while true {
                    let slot = table &+ Radix.index(input, level) &* 8
                    guard let entry = port.read(slot, level: level) else { return .portFault }
                    switch walkStep(entry, level: level, state: &state) {
                    case .fault(let reason):
                        return .fault(PageTableFault(reason, level: architecturalLevel(level)))
                    case .table(let next):
                        precondition(level > 1 && pendingCount < 4, "a format returned a table at the lowest level or above level 5")
                        if update {
                            let updated = updatedTableEntry(entry, level: level)
                            if updated != entry {
                                (pending.baseAddress.unsafelyUnwrapped + pendingCount)
                                    .initialize(to: PendingTableUpdate(address: slot, old: entry, new: updated, level: level))
                                pendingCount &+= 1
                            }
                        }
                        table = next
                        level &-= 1
                    case .leaf(let base):
                        switch checkLeaf(entry, level: level, state: state, access: access) {
                        case .fault(let reason):
                            return .fault(PageTableFault(reason, level: architecturalLevel(level)))
                        case .allowed(let rights, let updatedLeaf):
                            if update && (pendingCount != 0 || updatedLeaf != entry) {
                                let leaf = PendingTableUpdate(address: slot, old: entry, new: updatedLeaf, level: level)
                                switch Self.applyUpdates(UnsafeBufferPointer(rebasing: pending[..<pendingCount]), leaf: leaf,
                                                         port: &port) {
                                case .updated: break
                                case .changed: break descent
                                case .failed: return .portFault
                                }
                            }
                            let size = Radix.span(level)
                            let translation = PageTranslation(output: base | (input & (size &- 1)), rights: rights,
                                                              pageSize: size, level: architecturalLevel(level))
                            return .translated(translation, leafSlot: slot, leafLevel: level, state: state)
                        }
                    }
                }
            }
        }
    }

    /// Makes the updates of a successful walk, top-down: the `pending` table entries, then the
    /// leaf. Stops at the first that did not succeed.
    @inlinable @inline(never)
    static func applyUpdates<Port: PageTableWalkPort>(_ pending: UnsafeBufferPointer<PendingTableUpdate>,
                                                      leaf: PendingTableUpdate, port: inout Port) -> PageTableEntryUpdate {
        for e in pending {
            let result = port.update(e.address, level: e.level, expected: e.old, desired: e.new)
            if result != .updated { return result }
        }
        if leaf.new == leaf.old { return .updated }
        return port.update(leaf.address, level: leaf.level, expected: leaf.old, desired: leaf.new)
    }
}
