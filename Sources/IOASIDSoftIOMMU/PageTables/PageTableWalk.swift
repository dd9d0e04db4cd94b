// The hardware walk, shared by every format and by both stages of a nested walk.
//
// The walk reads one entry per level through a *port*: the direct port reads physical memory;
// the nested walker's port first translates each stage-1 table address (a guest-physical
// address) through stage 2. The format decides what each entry means (`walkStep`) and whether
// the leaf allows the access (`checkLeaf`). Hardware updates (x86 / VT-d accessed and dirty
// flags, Arm AF and dirty state) are made only when the whole walk succeeded, top-down, through
// the port — so under nesting they are writes through stage 2.
//
// Nothing here allocates: the entries used are kept in a fixed tuple, results are small enums.

/// How a walk reaches the memory its tables live in.
@usableFromInline
protocol PageTableWalkPort {
    /// Reads the entry at `address` (an address in the space the table pointers live in) for
    /// engine level `level`; nil if the port could not reach it (it records why).
    mutating func read(_ address: UInt64, level: Int) -> UInt64?
    /// Makes the hardware update of the entry at `address` (which the walk read at `level`):
    /// sets `set` and clears `clear`, leaving other bits as they are. False if the port could not
    /// write it (it records why).
    mutating func update(_ address: UInt64, level: Int, set: UInt64, clear: UInt64) -> Bool
}

/// Makes a walker's atomic update of the entry at `address` in `memory`.
///
/// Setting bits uses ``PhysicalMemory/or64(_:_:)``. Clearing bits (Arm stage-1 dirty state clears
/// AP[2]) is a read-modify-write: exact in the current single-threaded memory, and the one place
/// that needs a compare-exchange once the memory is shared between threads.
@inlinable
func hardwareUpdate(_ memory: PhysicalMemory, _ address: UInt64, set: UInt64, clear: UInt64) {
    if clear == 0 {
        if set != 0 { memory.or64(address, set) }
    } else {
        let old = memory.read64(address)
        memory.write64(address, (old | set) & ~clear)
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
    mutating func update(_ address: UInt64, level: Int, set: UInt64, clear: UInt64) -> Bool {
        hardwareUpdate(memory, address, set: set, clear: clear)
        return true
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

/// Up to five (entry address, value, level) triples, without allocating.
@usableFromInline
struct UsedTableEntries {
    @usableFromInline var addresses: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
    @usableFromInline var values: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
    @usableFromInline var levels: (Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0)
    @usableFromInline var count = 0

    @inlinable init() {}

    @inlinable
    mutating func append(address: UInt64, value: UInt64, level: Int) {
        precondition(count < 5, "more than five table levels")
        withUnsafeMutableBytes(of: &addresses) { $0.storeBytes(of: address, toByteOffset: count * 8, as: UInt64.self) }
        withUnsafeMutableBytes(of: &values) { $0.storeBytes(of: value, toByteOffset: count * 8, as: UInt64.self) }
        withUnsafeMutableBytes(of: &levels) {
            $0.storeBytes(of: level, toByteOffset: count * MemoryLayout<Int>.stride, as: Int.self)
        }
        count += 1
    }

    @inlinable
    func entry(_ i: Int) -> (address: UInt64, value: UInt64, level: Int) {
        let a = withUnsafeBytes(of: addresses) { $0.load(fromByteOffset: i * 8, as: UInt64.self) }
        let v = withUnsafeBytes(of: values) { $0.load(fromByteOffset: i * 8, as: UInt64.self) }
        let l = withUnsafeBytes(of: levels) { $0.load(fromByteOffset: i * MemoryLayout<Int>.stride, as: Int.self) }
        return (a, v, l)
    }
}

extension PageTableFormat {
    /// Walks the table rooted at `root` for `input` and `access`, reading through `port`.
    ///
    /// With `update`, a successful walk makes the hardware's updates (table entries first,
    /// top-down, then the leaf) through the port; a failing walk changes nothing.
    @inlinable
    func walk<Port: PageTableWalkPort>(root: UInt64, input: UInt64, access: PageAccess, update: Bool,
                                       port: inout Port) -> PageTableWalkOutcome<WalkState> {
        if let fault = inputFault(input) { return .fault(fault) }
        var table = root
        var level = topLevel
        var state = initialWalkState
        var used = UsedTableEntries()
        while true {
            let slot = table &+ Radix.index(input, level) &* 8
            guard let entry = port.read(slot, level: level) else { return .portFault }
            switch walkStep(entry, level: level, state: &state) {
            case .fault(let reason):
                return .fault(PageTableFault(reason, level: architecturalLevel(level)))
            case .table(let next):
                precondition(level > 1, "a format returned a table at the lowest level")
                used.append(address: slot, value: entry, level: level)
                table = next
                level -= 1
            case .leaf(let base):
                switch checkLeaf(entry, level: level, state: state, access: access) {
                case .fault(let reason):
                    return .fault(PageTableFault(reason, level: architecturalLevel(level)))
                case .allowed(let rights, let updatedLeaf):
                    if update {
                        var i = 0
                        while i < used.count {
                            let e = used.entry(i)
                            let new = updatedTableEntry(e.value, level: e.level)
                            if new != e.value {
                                guard port.update(e.address, level: e.level, set: new & ~e.value, clear: e.value & ~new)
                                else { return .portFault }
                            }
                            i += 1
                        }
                        if updatedLeaf != entry {
                            guard port.update(slot, level: level, set: updatedLeaf & ~entry, clear: entry & ~updatedLeaf)
                            else { return .portFault }
                        }
                    }
                    let size = Radix.span(level)
                    let translation = PageTranslation(output: base | (input & (size - 1)), rights: rights,
                                                      pageSize: size, level: architecturalLevel(level))
                    return .translated(translation, leafSlot: slot, leafLevel: level, state: state)
                }
            }
        }
    }
}
