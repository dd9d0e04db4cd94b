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
// torn. Each hardware update is an atomic compare-exchange from the value the walk read to the
// updated value, as the architectures require of a walker's update (a locked read-modify-write
// that never lands on an entry that changed under it): if another walker meanwhile changed only
// the bits this update manages (it set A first, say), the update is re-applied to the new value;
// if software changed anything else (unmapped, remapped, split, cleaned a different bit), nothing
// is written and the walk restarts from the root. So a walk never sets accessed/dirty state in an
// entry that no longer maps what it translated, and never loses one that software cleans.
//
// Nothing here allocates: the pending table-entry updates are kept in a fixed tuple, results are
// small enums. In the steady state (flags already set) a walk writes nothing and stores no
// pending update.

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
@usableFromInline
struct DirectWalkPort: PageTableWalkPort {
    @usableFromInline let memory: PhysicalMemory
    /// Entries read so far.
    @usableFromInline var reads = 0

    @inlinable init(memory: PhysicalMemory) { self.memory = memory }

    @inlinable
    mutating func read(_ address: UInt64, level: Int) -> UInt64? {
        reads += 1
        return memory.read64(address)
    }

    @inlinable
    mutating func update(_ address: UInt64, level: Int, expected: UInt64, desired: UInt64) -> PageTableEntryUpdate {
        hardwareUpdate(memory, address, expected: expected, desired: desired) ? .updated : .changed
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

/// The table-entry updates a walk makes once it succeeded: up to four (entry address, value read,
/// updated value, level), only for entries the update changes, without allocating.
@usableFromInline
struct PendingTableUpdates {
    @usableFromInline var addresses: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    @usableFromInline var old: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    @usableFromInline var new: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    @usableFromInline var levels: (Int, Int, Int, Int) = (0, 0, 0, 0)
    @usableFromInline var count = 0

    @inlinable init() {}

    @inlinable @inline(__always)
    static func store<T>(_ value: T, _ tuple: inout (T, T, T, T), _ i: Int) {
        withUnsafeMutableBytes(of: &tuple) { $0.storeBytes(of: value, toByteOffset: i &* MemoryLayout<T>.stride, as: T.self) }
    }

    @inlinable @inline(__always)
    static func load<T>(_ tuple: (T, T, T, T), _ i: Int) -> T {
        withUnsafeBytes(of: tuple) { $0.load(fromByteOffset: i &* MemoryLayout<T>.stride, as: T.self) }
    }

    /// Records that the entry at `address` (read as `old` at `level`) becomes `new`.
    @inlinable
    mutating func append(address: UInt64, old value: UInt64, new updated: UInt64, level: Int) {
        precondition(count < 4, "more than four table levels above a leaf")
        Self.store(address, &addresses, count)
        Self.store(value, &old, count)
        Self.store(updated, &new, count)
        Self.store(level, &levels, count)
        count &+= 1
    }

    /// The `i`th update, top-down.
    @inlinable
    func entry(_ i: Int) -> (address: UInt64, old: UInt64, new: UInt64, level: Int) {
        (Self.load(addresses, i), Self.load(old, i), Self.load(new, i), Self.load(levels, i))
    }
}

extension PageTableFormat {
    /// Walks the table rooted at `root` for `input` and `access`, reading through `port`.
    ///
    /// With `update`, a successful walk makes the hardware's updates (table entries first,
    /// top-down, then the leaf) through the port; a failing walk changes nothing. When an update
    /// finds that software changed an entry since the walk read it, the walk restarts from the
    /// root (see the comment at the top of this file).
    @inlinable
    func walk<Port: PageTableWalkPort>(root: UInt64, input: UInt64, access: PageAccess, update: Bool,
                                       port: inout Port) -> PageTableWalkOutcome<WalkState> {
        if let fault = inputFault(input) { return .fault(fault) }
        while true {
            var table = root
            var level = topLevel
            var state = initialWalkState
            var pending = PendingTableUpdates()
            descent: while true {
                let slot = table &+ Radix.index(input, level) &* 8
                guard let entry = port.read(slot, level: level) else { return .portFault }
                switch walkStep(entry, level: level, state: &state) {
                case .fault(let reason):
                    return .fault(PageTableFault(reason, level: architecturalLevel(level)))
                case .table(let next):
                    precondition(level > 1, "a format returned a table at the lowest level")
                    if update {
                        let updated = updatedTableEntry(entry, level: level)
                        if updated != entry { pending.append(address: slot, old: entry, new: updated, level: level) }
                    }
                    table = next
                    level &-= 1
                case .leaf(let base):
                    switch checkLeaf(entry, level: level, state: state, access: access) {
                    case .fault(let reason):
                        return .fault(PageTableFault(reason, level: architecturalLevel(level)))
                    case .allowed(let rights, let updatedLeaf):
                        if update && (pending.count != 0 || updatedLeaf != entry) {
                            switch Self.applyUpdates(pending, leaf: (slot, entry, updatedLeaf, level), port: &port) {
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

    /// Makes the updates of a successful walk, top-down: `pending` table entries, then the leaf
    /// (address, value read, updated value, level). Stops at the first that did not succeed.
    @inlinable
    static func applyUpdates<Port: PageTableWalkPort>(_ pending: PendingTableUpdates,
                                                      leaf: (address: UInt64, old: UInt64, new: UInt64, level: Int),
                                                      port: inout Port) -> PageTableEntryUpdate {
        var i = 0
        while i < pending.count {
            let e = pending.entry(i)
            let result = port.update(e.address, level: e.level, expected: e.old, desired: e.new)
            if result != .updated { return result }
            i &+= 1
        }
        if leaf.new == leaf.old { return .updated }
        return port.update(leaf.address, level: leaf.level, expected: leaf.old, desired: leaf.new)
    }
}
