// The vocabulary every page-table format shares, and the protocol a format implements.
//
// All formats here are radix trees with 4 KiB granules: 512 eight-byte entries per table, each
// level resolving 9 bits of the input address above the 12-bit page offset. What differs between
// architectures is the *meaning of the bits* of an entry, which levels may hold leaves, how
// permissions combine down the walk, which faults exist and which bits the hardware walker
// updates. A `PageTableFormat` says exactly that and nothing else; the one radix engine
// (`PageTable.swift`, `PageTableWalk.swift`) does map, unmap, split, walk, enumeration and dirty
// tracking for every format.
//
// Levels. The engine numbers levels by height: level 1 holds the 4 KiB leaves, level 2 the
// 2 MiB entries, level 3 the 1 GiB entries, and so on up to the format's `topLevel`. Formats
// report levels to users in their architecture's own numbering (``PageTableFormat/architecturalLevel(_:)``):
// x86 and VT-d count the same way (PML4 = 4, PT = 1); Arm counts from the top (level 0 resolves
// bits 47:39, level 3 holds the pages).

/// An access to translate: a read, a write or an instruction fetch, privileged or not.
public struct PageAccess: Hashable, Sendable {
    /// What the access does.
    public enum Kind: UInt8, Hashable, Sendable {
        /// A data read.
        case read
        /// A data write.
        case write
        /// An instruction fetch (a DMA with the execute-requested attribute).
        case execute
    }

    /// Read, write or instruction fetch.
    public var kind: Kind
    /// An unprivileged access: x86 user mode, Arm EL0 or an unprivileged transaction.
    /// Privileged accesses are not checked against user/EL0 permissions.
    public var user: Bool

    /// Creates an access.
    @inlinable
    public init(_ kind: Kind, user: Bool = false) {
        self.kind = kind
        self.user = user
    }

    // Computed, not stored: a stored static is a lazily initialised global, read through an
    // accessor call on every use, and these are used on the translation path.
    /// A privileged read.
    @inlinable public static var read: PageAccess { PageAccess(.read) }
    /// A privileged write.
    @inlinable public static var write: PageAccess { PageAccess(.write) }
    /// A privileged instruction fetch.
    @inlinable public static var execute: PageAccess { PageAccess(.execute) }
}

/// The accesses a translation allows: read, write and execute, each for privileged and for
/// unprivileged (user / EL0) accesses. Stage-2 formats, which know no privilege, grant both alike
/// (except Arm stage-2 execute, which FEAT_XNX splits by privilege).
public struct AccessRights: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The raw bits.
    public let rawValue: UInt8
    /// Creates rights from raw bits.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    // The members are computed, not stored statics (lazily initialised globals read through an
    // accessor call): walks build rights from them.

    /// Privileged reads are allowed.
    @inlinable public static var read: AccessRights { AccessRights(rawValue: 1 << 0) }
    /// Privileged writes are allowed.
    @inlinable public static var write: AccessRights { AccessRights(rawValue: 1 << 1) }
    /// Privileged instruction fetches are allowed.
    @inlinable public static var execute: AccessRights { AccessRights(rawValue: 1 << 2) }
    /// Unprivileged reads are allowed.
    @inlinable public static var userRead: AccessRights { AccessRights(rawValue: 1 << 3) }
    /// Unprivileged writes are allowed.
    @inlinable public static var userWrite: AccessRights { AccessRights(rawValue: 1 << 4) }
    /// Unprivileged instruction fetches are allowed.
    @inlinable public static var userExecute: AccessRights { AccessRights(rawValue: 1 << 5) }
    /// Every access.
    @inlinable public static var all: AccessRights { AccessRights(rawValue: 0x3F) }

    /// The same read/write/execute rights for privileged and unprivileged accesses.
    @inlinable
    public static func uniform(read: Bool, write: Bool, execute: Bool) -> AccessRights {
        // Raw bits rather than set literals: literals build an array in unoptimised builds, and
        // this is on the translation path.
        var raw: UInt8 = 0
        if read { raw |= AccessRights.read.rawValue | AccessRights.userRead.rawValue }
        if write { raw |= AccessRights.write.rawValue | AccessRights.userWrite.rawValue }
        if execute { raw |= AccessRights.execute.rawValue | AccessRights.userExecute.rawValue }
        return AccessRights(rawValue: raw)
    }

    /// Whether `access` is allowed.
    @inlinable
    public func allows(_ access: PageAccess) -> Bool {
        let bit: UInt8 = 1 << (access.kind.rawValue + (access.user ? 3 : 0))
        return rawValue & bit != 0
    }

    /// `rwx/rwx` for privileged / user, `-` where not allowed.
    public var description: String {
        func c(_ r: AccessRights, _ ch: Character) -> Character { contains(r) ? ch : "-" }
        return String([c(.read, "r"), c(.write, "w"), c(.execute, "x"), "/",
                       c(.userRead, "r"), c(.userWrite, "w"), c(.userExecute, "x")])
    }
}

/// Why a walk failed, and at which level.
public struct PageTableFault: Error, Hashable, Sendable, CustomStringConvertible {
    /// The permission that was missing.
    public enum Violation: UInt8, Hashable, Sendable {
        /// A read of a location without read permission (VT-d R = 0, Arm S2AP[0] = 0).
        case read
        /// A write of a location without write permission.
        case write
        /// An instruction fetch from a location that may not be executed (NX, XN, PXN, UXN).
        case execute
        /// An unprivileged access to a location only privileged accesses may use
        /// (x86 U/S = 0, Arm AP[1] = 0 or APTable[0] = 1).
        case privilege
    }

    /// The kind of fault, named as the architectures name them.
    public enum Reason: Hashable, Sendable {
        /// The entry is not present / the descriptor is invalid (x86 P = 0, VT-d R = W = 0,
        /// Arm bit 0 = 0 or a reserved descriptor type): a translation fault.
        case translation
        /// The input address is outside what the table translates (x86 non-canonical, VT-d above
        /// the AGAW), or an Arm descriptor's output address exceeds the configured output size.
        case addressSize
        /// A reserved bit is set in an entry (x86 and VT-d reserved-field checks).
        case reservedBit
        /// Arm: the access flag of the leaf is 0 and hardware access-flag update is disabled.
        case accessFlag
        /// The leaf was reached but does not allow the access.
        case permission(Violation)
    }

    /// What went wrong.
    public var reason: Reason
    /// The level of the entry that faulted, in the architecture's own numbering
    /// (x86 / VT-d: 5 … 1; Arm: 0 … 3).
    public var level: Int

    /// Creates a fault.
    public init(_ reason: Reason, level: Int) {
        self.reason = reason
        self.level = level
    }

    /// E.g. `permission(write) at level 1`.
    public var description: String { "\(reason) at level \(level)" }
}

/// A successful single-stage translation.
public struct PageTranslation: Hashable, Sendable {
    /// The output address (physical, or guest-physical for a stage-1 table under nesting).
    public var output: UInt64
    /// The accesses the whole walk allows (table restrictions combined with the leaf's).
    public var rights: AccessRights
    /// The size of the leaf page or block that mapped the address, in bytes.
    public var pageSize: UInt64
    /// The level of the leaf, in the architecture's own numbering.
    public var level: Int

    /// Creates a translation.
    public init(output: UInt64, rights: AccessRights, pageSize: UInt64, level: Int) {
        self.output = output
        self.rights = rights
        self.pageSize = pageSize
        self.level = level
    }
}

/// Errors of map, unmap and dirty read-and-clear.
public enum PageTableError: Error, Hashable, Sendable {
    /// An address or size is not 4 KiB aligned, or the size is zero.
    case misaligned
    /// The range does not fit the input address space of the table.
    case outOfRange
    /// The output address does not fit the format's output address width.
    case physicalAddressTooLarge
    /// Part of the range is already mapped.
    case alreadyMapped
    /// The frame allocator ran out of frames.
    case outOfMemory
    /// The format cannot express these permissions (VT-d: a leaf with neither read nor write).
    case unsupportedPermissions
    /// The format configuration is one this model does not implement (e.g. Arm stage-2
    /// concatenated start-level tables).
    case unsupportedConfiguration
}

/// A leaf mapping reported by ``PageTable/forEachMapping(_:)``.
public struct PageMapping<Format: PageTableFormat> {
    /// The input address of the whole leaf (canonical form for x86).
    public var iova: UInt64
    /// The output address of the whole leaf.
    public var physical: UInt64
    /// The leaf's size in bytes.
    public var size: UInt64
    /// The leaf's level, in the architecture's own numbering.
    public var level: Int
    /// The permissions encoded in the leaf itself (table entries written by ``PageTable`` allow
    /// everything).
    public var permissions: Format.Permissions
    /// The memory attributes encoded in the leaf.
    public var attributes: Format.Attributes
    /// The raw leaf entry.
    public var entry: UInt64
}

extension PageMapping: Equatable where Format.Permissions: Equatable, Format.Attributes: Equatable {}
extension PageMapping: Hashable where Format.Permissions: Hashable, Format.Attributes: Hashable {}
extension PageMapping: Sendable where Format.Permissions: Sendable, Format.Attributes: Sendable {}

/// A dirty leaf reported by ``PageTable/readAndClearDirty(iova:size:clear:)``.
public struct DirtyRange: Hashable, Sendable {
    /// The input address of the whole leaf.
    public var iova: UInt64
    /// The leaf's size in bytes.
    public var length: UInt64
    /// Creates a range.
    public init(iova: UInt64, length: UInt64) {
        self.iova = iova
        self.length = length
    }
}

/// One entry of a walk, as reported by ``PageTable/entries(for:)``.
public struct PageTableWalkEntry: Hashable, Sendable {
    /// The level, in the architecture's own numbering.
    public var level: Int
    /// The physical address of the entry.
    public var address: UInt64
    /// The entry's value.
    public var value: UInt64
}

/// How the software side (map, unmap, enumeration) reads an entry it finds in a table.
public enum PageTableEntryKind: Hashable, Sendable {
    /// Not present / invalid: nothing is mapped below it.
    case invalid
    /// Points to a next-level table.
    case table
    /// Maps a page or block.
    case leaf
}

/// One step of a hardware walk, as decided by the format for one entry.
public enum PageTableWalkStep: Hashable, Sendable {
    /// The walk stops with this fault at the current level.
    case fault(PageTableFault.Reason)
    /// The walk continues in the table at this (output-space) address.
    case table(UInt64)
    /// The entry is a leaf mapping the naturally aligned page or block at this output address.
    case leaf(UInt64)
}

/// The format's verdict on an access once the walk reached a leaf.
public enum PageTableLeafCheck: Hashable, Sendable {
    /// The access faults.
    case fault(PageTableFault.Reason)
    /// The access is allowed with these effective rights; `updatedLeaf` is the leaf after the
    /// hardware's update for this access (accessed/dirty flags, Arm AF or dirty state), equal to
    /// the leaf when nothing changes.
    case allowed(AccessRights, updatedLeaf: UInt64)
}

/// A page-table format: the bit-exact meaning of the entries of one architecture's radix table
/// with 4 KiB granules, and its walker's rules.
///
/// A format is a small value holding its configuration (levels, address widths, which hardware
/// updates are enabled). The generic engine — ``PageTable`` for a table this process owns, and
/// the walk used by ``PageTable/translate(_:access:updateAccessedDirty:)`` and
/// ``NestedPageTable`` — specialises over it: formats are never used as existentials.
///
/// Levels in the requirements are the engine's heights (1 = 4 KiB leaves); see
/// ``architecturalLevel(_:)``.
public protocol PageTableFormat: Sendable {
    /// The permissions a leaf encodes, in the architecture's own terms.
    associatedtype Permissions: Hashable, Sendable
    /// The memory attributes a leaf encodes (memory type, shareability, …).
    associatedtype Attributes: Hashable, Sendable
    /// What a walk accumulates from table entries (hierarchical permission limits).
    associatedtype WalkState: Sendable

    /// The engine level of the root table (2 … 5).
    var topLevel: Int { get }
    /// The number of input-address bits the table translates.
    var inputAddressBits: Int { get }
    /// The number of output-address bits an entry may hold (MAXPHYADDR, HAW, Arm IPS/PS).
    var outputAddressBits: Int { get }
    /// The attributes ``PageTable/map(iova:physical:size:permissions:)`` uses.
    var defaultAttributes: Attributes { get }

    /// The architecture's number for engine level `level`.
    func architecturalLevel(_ level: Int) -> Int
    /// Whether `map` may place a leaf at `level` (superpage / block support).
    func mayMapLeaf(atLevel level: Int) -> Bool
    /// The fault for an input address the table cannot translate, or nil if it is in range.
    func inputFault(_ input: UInt64) -> PageTableFault?
    /// Whether the inclusive input range `first … last` may be mapped (x86: both canonical and in
    /// the same half; otherwise: below 2^inputAddressBits).
    func isValidInputRange(first: UInt64, last: UInt64) -> Bool
    /// The input address as users write it, from its low `inputAddressBits` bits (x86 sign-extends).
    func externalInput(_ masked: UInt64) -> UInt64

    /// Checks that `permissions` can be encoded; nil if they can.
    func validate(_ permissions: Permissions) -> PageTableError?
    /// The entry pointing to the next-level table at `table`, as `map` writes it.
    func tableEntry(_ table: UInt64, level: Int) -> UInt64
    /// The leaf at `level` mapping `output` (naturally aligned for the level).
    func leafEntry(_ output: UInt64, level: Int, permissions: Permissions, attributes: Attributes) -> UInt64
    /// How software reads `entry` at `level` (invalid, table or leaf).
    func kind(of entry: UInt64, level: Int) -> PageTableEntryKind
    /// The next-level table address in a table entry.
    func tableAddress(_ entry: UInt64, level: Int) -> UInt64
    /// The output address of the page or block a leaf maps.
    func leafAddress(_ entry: UInt64, level: Int) -> UInt64
    /// The permissions a leaf encodes.
    func permissions(ofLeaf entry: UInt64, level: Int) -> Permissions
    /// The attributes a leaf encodes.
    func attributes(ofLeaf entry: UInt64, level: Int) -> Attributes
    /// The bits (everything except the output address) shared by the 512 children when the leaf
    /// `entry` at `level` is split into a table of leaves one level down.
    func splitChildBits(_ entry: UInt64, level: Int) -> UInt64
    /// The table entry that replaces the split leaf `entry`, pointing to `table`.
    func tableEntry(replacingLeaf entry: UInt64, table: UInt64, level: Int) -> UInt64

    /// The walk state before the root entry is read.
    var initialWalkState: WalkState { get }
    /// Decodes `entry` at `level` as the hardware walker does: present/valid, reserved bits,
    /// address size; table (accumulating its limits into `state`) or leaf.
    func walkStep(_ entry: UInt64, level: Int, state: inout WalkState) -> PageTableWalkStep
    /// Checks `access` against the leaf `entry` at `level` under the accumulated `state`:
    /// access flag, then permissions; and computes the hardware update of the leaf.
    func checkLeaf(_ entry: UInt64, level: Int, state: WalkState, access: PageAccess) -> PageTableLeafCheck
    /// The table entry after the hardware used it in a successful walk (x86 / VT-d set A).
    func updatedTableEntry(_ entry: UInt64, level: Int) -> UInt64

    /// Whether the leaf is dirty (written since it was mapped or last cleaned).
    func isDirty(leaf entry: UInt64, level: Int) -> Bool
    /// The leaf with its dirty state cleared (x86 / VT-d: D = 0; Arm: writable-clean again).
    func cleaned(leaf entry: UInt64, level: Int) -> UInt64
}

// MARK: - Geometry shared by every format (4 KiB granule, 9 bits per level)

/// The radix geometry of all formats here: 4 KiB tables of 512 eight-byte entries.
///
/// Levels are 1 … 5, so the arithmetic wraps instead of checking for overflow (it is on every
/// step of a walk).
@usableFromInline
enum Radix {
    /// The bit position of the lowest input bit resolved at engine level `level`.
    @inlinable @inline(__always)
    static func shift(_ level: Int) -> UInt64 { UInt64(truncatingIfNeeded: 3 &+ 9 &* level) }
    /// The bytes one entry at `level` covers.
    @inlinable @inline(__always)
    static func span(_ level: Int) -> UInt64 { 1 &<< shift(level) }
    /// The index into the table at `level` for `input`.
    @inlinable @inline(__always)
    static func index(_ input: UInt64, _ level: Int) -> UInt64 { (input &>> shift(level)) & 511 }
    /// A mask of the low `bits` bits.
    @inlinable @inline(__always)
    static func mask(bits: Int) -> UInt64 { bits >= 64 ? ~0 : (1 << UInt64(bits)) - 1 }
    /// The number of engine levels needed to translate `bits` input bits.
    @inlinable
    static func levels(forInputBits bits: Int) -> Int { (bits &- 4) / 9 }  // ⌈(bits - 12) / 9⌉
}
