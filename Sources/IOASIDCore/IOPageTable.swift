import IOASIDStructures

/// One mapping of an IOAS: a span of IOVA backed by a byte slice of pinned `Pages`
/// (the kernel's `iopt_area`).
public struct Area: Sendable {
    /// The pages behind the area.
    public let pages: Pages
    /// The byte offset inside `pages` where the area's first IOVA points.
    public let pagesOffset: UInt64
    public let readable: Bool
    public let writable: Bool
    /// Accesses that pinned pages of this area (they must let go before an unmap).
    var accessPins = 0
    /// How many HW queues lock the area against unmap.
    var locks = 0
    /// Whether the area's pages are pinned for the domains of the IOAS.
    var pinnedForDomains = false
}

/// Who reserved a span of IOVA.
enum ReservedOwner: Sendable, Equatable {
    /// `IOMMU_TEST_OP_ADD_RESERVED` and other explicit reservations.
    case user
    /// A paging domain's aperture limits.
    case domain(ObjectIdentifier)
    /// A device's reserved regions (MSI windows).
    case device(ObjectID)
}

/// The IOVA space of an IOAS: areas, allowed and reserved spans, the attached domains and
/// accesses (the kernel's `io_pagetable`).
///
/// Invariants: areas never overlap; no area intersects a reserved span; every area start,
/// length and page offset is a multiple of `iovaAlignment`; every domain in `domains` maps
/// exactly the areas, with their pages pinned once.
struct IOPageTable {
    var areas = IntervalMap<Area>()
    var allowed = IntervalMap<Void>()
    /// Reserved spans; they may overlap (several owners), so they are a plain list.
    var reserved: [(range: IOVARange, owner: ReservedOwner)] = []
    /// The paging HWPTs filled from this table, in attach order.
    var domains: [HWPTPaging] = []
    /// The accesses using this table.
    var accesses: [Access] = []
    /// The required alignment of IOVA, lengths and page offsets.
    var iovaAlignment: UInt64 = 1
    /// Whether `IOMMU_OPTION_HUGE_PAGES` was turned off (forces PAGE_SIZE alignment).
    var disableLargePages = false

    init() {}

    // MARK: placement

    /// Picks IOVA for `length` bytes whose backing starts at host address `address`.
    func allocateIOVA(address: UInt64, length: UInt64, options: ContextOptions) throws(IOMMUError) -> UInt64 {
        let pageSize = options.pageSize
        guard length != 0, length < UInt64.max / 2 else { throw .overflow("length too large to place") }
        let pageOffset = address % pageSize
        var alignment = roundUpPowerOfTwo(length)
        if address != 0 { alignment = min(alignment, UInt64(1) << UInt64(address.trailingZeroBitCount)) }
        if alignment >= options.hugePageSize { alignment = options.hugePageSize }
        guard alignment >= iovaAlignment else { throw .invalid("user address is less aligned than the IOAS") }
        let areas = self.areas
        if let iova = IOVAAllocator.find(length: length, alignment: alignment, pageOffset: pageOffset,
                                         allowed: allowed, reserved: mergedReserved(),
                                         areasHoles: { areas.holes(in: $0) }, pageSize: pageSize) {
            return iova
        }
        throw .noSpace("no free IOVA of that size")
    }

    /// Checks that `length` bytes at `iova` may be mapped. It changes nothing; it is `mutating`
    /// only so that the map path's call through `IOAS.table` works on the table in place
    /// instead of on a copy (a copy retains and releases every array of the table).
    mutating func checkIOVA(_ iova: UInt64, length: UInt64) throws(IOMMUError) -> IOVARange {
        guard iova & (iovaAlignment - 1) == 0 else { throw .invalid("IOVA is not aligned to the IOAS") }
        guard let range = IOVARange(start: iova, length: length) else { throw .overflow("IOVA + length overflows") }
        if reservedIntersects(range) { throw .invalid("IOVA is reserved") }
        if areas.intersects(range) { throw .exists("IOVA is already mapped") }
        return range
    }

    /// Whether a reserved span intersects `range`.
    func reservedIntersects(_ range: IOVARange) -> Bool { reserved.contains { $0.range.overlaps(range) } }

    /// The reserved spans merged into a sorted, non-overlapping map.
    func mergedReserved() -> IntervalMap<Void> {
        var merged = IntervalMap<Void>()
        var current: IOVARange?
        for r in reserved.map(\.range).sorted(by: { $0.start < $1.start }) {
            if let c = current, r.start <= c.last &+ 1, c.last != .max {
                current = IOVARange(start: c.start, last: max(c.last, r.last))
            } else if let c = current, c.last == .max {
                current = c
            } else {
                if let c = current { merged.insert(c) }
                current = r
            }
        }
        if let c = current { merged.insert(c) }
        return merged
    }

    /// Reserves `range` for `owner`; `EADDRINUSE` if a mapping or an allowed span is there.
    mutating func reserve(_ range: IOVARange, owner: ReservedOwner) throws(IOMMUError) {
        if areas.intersects(range) || allowed.intersects(range) { throw .addressInUse("IOVA is mapped or allowed") }
        reserved.append((range, owner))
    }

    /// Removes every reserved span of `owner`.
    mutating func removeReserved(owner: ReservedOwner) {
        reserved.removeAll { $0.owner == owner }
    }

    /// The alignment all domains and accesses require.
    func requiredAlignment(pageSize: UInt64) -> UInt64 {
        var a: UInt64 = disableLargePages ? pageSize : 1
        for d in domains { a = max(a, d.domain.minimumPageSize) }
        for x in accesses where x.iovaAlignment > a { a = x.iovaAlignment }
        return a
    }

    /// Whether every area conforms to `alignment`.
    func areasConform(to alignment: UInt64, pageSize: UInt64) -> Bool {
        let mask = alignment - 1
        for a in areas.all {
            if a.range.start & mask != 0 || (a.range.last &+ 1) & mask != 0 || (a.value.pagesOffset % pageSize) & mask != 0 { return false }
        }
        return true
    }
}


@inlinable
func roundUpPowerOfTwo(_ x: UInt64) -> UInt64 {
    if x <= 1 { return 1 }
    return UInt64(1) << UInt64(64 - (x - 1).leadingZeroBitCount)
}
