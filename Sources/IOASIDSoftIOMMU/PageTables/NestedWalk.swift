// The nested (two-dimensional) walk: a guest-owned stage-1 table (IOVA → GPA) over a
// host-owned stage-2 table (GPA → HPA), generic over both formats (x86 first stage over VT-d
// second stage, Arm stage 1 over Arm stage 2, or any other pairing).
//
// The stage-1 tables live in guest-physical memory. Every stage-1 table access — the root and
// each table pointer — is a GPA, translated through stage 2 (a read, which must be allowed at
// stage 2) before the entry is read from host memory; then the stage-1 output is translated
// through stage 2 for the access itself. A 4-level stage 1 over a 4-level stage 2 therefore reads
// up to 4 × (4 + 1) + 4 = 24 entries. When the stage-1 walk succeeds, its hardware updates
// (accessed/dirty, AF, dirty state) are writes through stage 2: the stage-2 leaf mapping the
// stage-1 table page must allow writes, and gets its own accessed/dirty state updated — as
// hardware does. They happen before the final stage-2 translation, so a fault there leaves them
// made. Nothing here allocates.

/// A successful nested translation.
public struct NestedTranslation: Hashable, Sendable {
    /// The host-physical address.
    public var output: UInt64
    /// The guest-physical address stage 1 produced.
    public var guestPhysical: UInt64
    /// The accesses both stages allow.
    public var rights: AccessRights
    /// Stage 1's translation (IOVA → GPA).
    public var stage1: PageTranslation
    /// Stage 2's translation of the output (GPA → HPA).
    public var stage2: PageTranslation
    /// The table entries read (stage-2 entries for every stage-1 table access and for the output,
    /// plus the stage-1 entries).
    public var tableReads: Int

    /// Creates a translation.
    public init(output: UInt64, guestPhysical: UInt64, rights: AccessRights, stage1: PageTranslation,
                stage2: PageTranslation, tableReads: Int) {
        self.output = output
        self.guestPhysical = guestPhysical
        self.rights = rights
        self.stage1 = stage1
        self.stage2 = stage2
        self.tableReads = tableReads
    }
}

/// Why a nested translation failed: which stage, at which level, and why.
public struct NestedFault: Error, Hashable, Sendable, CustomStringConvertible {
    /// The stage that faulted.
    public enum Stage: Hashable, Sendable {
        /// The guest's stage-1 table.
        case stage1
        /// The host's stage-2 table.
        case stage2
    }

    /// The stage that faulted.
    public var stage: Stage
    /// The fault, with its level in the faulting stage's numbering.
    public var fault: PageTableFault
    /// For a stage-2 fault: the guest-physical address whose translation failed (a stage-1 table
    /// entry's address, or the stage-1 output). Nil for a stage-1 fault.
    public var guestPhysical: UInt64?
    /// For a stage-2 fault on a stage-1 table access: the stage-1 level (in stage 1's numbering)
    /// whose table was being read or updated. Nil otherwise.
    public var stage1TableLevel: Int?
    /// The table entries read before the fault.
    public var tableReads: Int

    /// Creates a fault.
    public init(stage: Stage, fault: PageTableFault, guestPhysical: UInt64?, stage1TableLevel: Int?, tableReads: Int) {
        self.stage = stage
        self.fault = fault
        self.guestPhysical = guestPhysical
        self.stage1TableLevel = stage1TableLevel
        self.tableReads = tableReads
    }

    /// Whether stage 2 faulted while the walker accessed a stage-1 table.
    public var isStage1TableAccess: Bool { stage1TableLevel != nil }

    /// E.g. `stage2 translation at level 1 (stage-1 table at level 4, GPA 0x…)`.
    public var description: String {
        var s = "\(stage) \(fault)"
        if let level = stage1TableLevel { s += " (stage-1 table at level \(level))" }
        if let gpa = guestPhysical { s += " GPA 0x\(String(gpa, radix: 16))" }
        return s
    }
}

/// A stage-1 table over a stage-2 table, translated as the IOMMU's nested walker does.
///
/// The stage-1 root and every pointer in stage-1 entries are guest-physical addresses; host
/// memory (``PageTable/memory`` of `stage2`) holds both the stage-2 tables and the guest's memory,
/// including its stage-1 tables, at the host addresses stage 2 maps them to.
public struct NestedPageTable<Stage1: PageTableFormat, Stage2: PageTableFormat> {
    /// The stage-1 format (the guest's configuration: levels, address sizes, A/D enablement).
    public var stage1: Stage1
    /// The guest-physical address of the stage-1 root table.
    public var stage1Root: UInt64
    /// The host's stage-2 table.
    public let stage2: PageTable<Stage2>

    /// Creates a nested translation of the stage-1 table at guest-physical `stage1Root`.
    public init(stage1: Stage1, stage1Root: UInt64, stage2: PageTable<Stage2>) {
        self.stage1 = stage1
        self.stage1Root = stage1Root
        self.stage2 = stage2
    }

    /// Translates `iova` for `access` through both stages.
    ///
    /// With `updateAccessedDirty`, each successful stage makes its hardware updates: stage 2 for
    /// the stage-1 table reads and for the output, stage 1 (through stage 2, as writes) once its
    /// walk succeeded. Allocates nothing.
    @inlinable
    public func translate(_ iova: UInt64, access: PageAccess = .read,
                          updateAccessedDirty: Bool = true) -> Result<NestedTranslation, NestedFault> {
        var port = NestedWalkPort(stage2: stage2.format, root: stage2.root, memory: stage2.memory,
                                  update: updateAccessedDirty)
        let first = stage1.walk(root: stage1Root, input: iova, access: access, update: updateAccessedDirty, port: &port)
        let t1: PageTranslation
        switch first {
        case .translated(let t, _, _, _):
            t1 = t
        case .fault(let f):
            return .failure(NestedFault(stage: .stage1, fault: f, guestPhysical: nil, stage1TableLevel: nil,
                                        tableReads: port.reads))
        case .portFault:
            return .failure(NestedFault(stage: .stage2, fault: port.fault, guestPhysical: port.faultAddress,
                                        stage1TableLevel: stage1.architecturalLevel(port.faultLevel),
                                        tableReads: port.reads))
        }
        let second = stage2.format.walk(root: stage2.root, input: t1.output, access: access,
                                        update: updateAccessedDirty, port: &port.direct)
        let reads = port.reads
        switch second {
        case .translated(let t2, _, _, _):
            return .success(NestedTranslation(output: t2.output, guestPhysical: t1.output,
                                              rights: t1.rights.intersection(t2.rights),
                                              stage1: t1, stage2: t2, tableReads: reads))
        case .fault(let f):
            return .failure(NestedFault(stage: .stage2, fault: f, guestPhysical: t1.output, stage1TableLevel: nil,
                                        tableReads: reads))
        case .portFault:
            preconditionFailure("the direct port never faults")
        }
    }
}

/// How a stage-1 table entry was reached: its host address and the stage-2 leaf that mapped it.
@usableFromInline
struct StageTwoTableAccess<State> {
    /// The host-physical address of the stage-1 entry.
    @usableFromInline var host: UInt64
    /// Where the stage-2 leaf mapping it lives.
    @usableFromInline var leafSlot: UInt64
    /// The stage-2 leaf's engine level.
    @usableFromInline var leafLevel: Int
    /// What the stage-2 table entries above that leaf accumulated.
    @usableFromInline var state: State

    @inlinable
    init(host: UInt64, leafSlot: UInt64, leafLevel: Int, state: State) {
        self.host = host
        self.leafSlot = leafSlot
        self.leafLevel = leafLevel
        self.state = state
    }
}

/// The port of the stage-1 walk: each table access is translated through stage 2 first.
@usableFromInline
struct NestedWalkPort<Stage2: PageTableFormat>: PageTableWalkPort {
    @usableFromInline let stage2: Stage2
    @usableFromInline let root: UInt64
    /// Host memory, where both stages' tables are read: every read goes through it.
    @usableFromInline var direct: DirectWalkPort
    @usableFromInline let update: Bool
    /// Entries read: stage-2 entries and stage-1 entries.
    @inlinable var reads: Int { direct.reads }
    /// The stage-2 translation of each stage-1 level's entry, by stage-1 engine level 1 … 5.
    @usableFromInline var accesses: (StageTwoTableAccess<Stage2.WalkState>, StageTwoTableAccess<Stage2.WalkState>,
                                     StageTwoTableAccess<Stage2.WalkState>, StageTwoTableAccess<Stage2.WalkState>,
                                     StageTwoTableAccess<Stage2.WalkState>)
    /// The stage-2 fault, when a method returned nil / false.
    @usableFromInline var fault = PageTableFault(.translation, level: 0)
    /// The guest-physical address whose stage-2 translation faulted.
    @usableFromInline var faultAddress: UInt64 = 0
    /// The stage-1 engine level whose table access faulted.
    @usableFromInline var faultLevel = 0

    @inlinable
    init(stage2: Stage2, root: UInt64, memory: PhysicalMemory, update: Bool) {
        self.stage2 = stage2
        self.root = root
        self.direct = DirectWalkPort(memory: memory)
        self.update = update
        let empty = StageTwoTableAccess(host: 0, leafSlot: 0, leafLevel: 0, state: stage2.initialWalkState)
        accesses = (empty, empty, empty, empty, empty)
    }

    @inlinable
    func access(at level: Int) -> StageTwoTableAccess<Stage2.WalkState> {
        switch level {
        case 1: accesses.0
        case 2: accesses.1
        case 3: accesses.2
        case 4: accesses.3
        default: accesses.4
        }
    }

    @inlinable
    mutating func record(_ access: StageTwoTableAccess<Stage2.WalkState>, at level: Int) {
        switch level {
        case 1: accesses.0 = access
        case 2: accesses.1 = access
        case 3: accesses.2 = access
        case 4: accesses.3 = access
        default: accesses.4 = access
        }
    }

    /// Translates the stage-1 entry's guest-physical address through stage 2 (a read), then reads it.
    @inlinable @inline(__always)
    mutating func read(_ address: UInt64, level: Int) -> UInt64? {
        let outcome = stage2.walk(root: root, input: address, access: .read, update: update, port: &direct)
        switch outcome {
        case .translated(let t, let leafSlot, let leafLevel, let state):
            record(StageTwoTableAccess(host: t.output, leafSlot: leafSlot, leafLevel: leafLevel, state: state), at: level)
            return direct.read(t.output, level: level)
        case .fault(let f):
            fault = f
            faultAddress = address
            faultLevel = level
            return nil
        case .portFault:
            preconditionFailure("the direct port never faults")
        }
    }

    /// The stage-1 walker's update of an entry is a write through stage 2: the stage-2 leaf that
    /// mapped the entry's page must still map it and allow writes, and records its own
    /// accessed/dirty state; then the stage-1 entry is updated in host memory. Both are atomic
    /// updates from the values read (``hardwareUpdate(_:_:expected:desired:)``): if software
    /// changed either entry meanwhile, nothing more is written and the stage-1 walk restarts.
    @inlinable
    mutating func update(_ address: UInt64, level: Int, expected: UInt64, desired: UInt64) -> PageTableEntryUpdate {
        let a = access(at: level)
        let leaf = direct.load(a.leafSlot)
        var scratch = a.state
        guard case .leaf(let base) = stage2.walkStep(leaf, level: a.leafLevel, state: &scratch),
              base == a.host & ~(Radix.span(a.leafLevel) &- 1) else { return .changed }
        switch stage2.checkLeaf(leaf, level: a.leafLevel, state: a.state, access: .write) {
        case .fault(let reason):
            fault = PageTableFault(reason, level: stage2.architecturalLevel(a.leafLevel))
            faultAddress = address
            faultLevel = level
            return .failed
        case .allowed(_, let updatedLeaf):
            if updatedLeaf != leaf && direct.update(a.leafSlot, level: a.leafLevel, expected: leaf, desired: updatedLeaf) != .updated {
                return .changed
            }
        }
        return direct.update(a.host, level: level, expected: expected, desired: desired)
    }
}
