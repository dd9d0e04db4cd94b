import IOASIDStructures

/// An I/O address space: areas of IOVA mapped to user memory, with allowed and reserved spans,
/// and the paging HWPTs that mirror it (the kernel's `iommufd_ioas`).
public final class IOAS: IOMMUObject, @unchecked Sendable {
    /// The typed ID of this kind of object.
    public typealias ID = TypedID<IOAS>

    @exclusivity(unchecked) var table = IOPageTable()
    /// Paging HWPTs allocated on this IOAS (auto domains included), in creation order.
    @exclusivity(unchecked) var hwpts: [HWPTPaging] = []

    init() { super.init(kind: .ioas) }

    public var id: ID { ID(objectID) }

    override public func destroyed(in state: ContextState) {
        _ = try? state.unmap(self, range: .all, all: true)
    }
}

/// What a map request maps.
public enum MapSource: Sendable {
    /// User memory at an address.
    case user(address: UInt64)
    /// A file (`memfd`, …) from a byte offset.
    case file(fd: Int32, offset: UInt64)
}

/// Permissions of a mapping (`IOMMU_IOAS_MAP_READABLE` / `WRITEABLE`).
public struct MapAccess: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let write = MapAccess(rawValue: 1 << 1)
    public static let read = MapAccess(rawValue: 1 << 2)
    public static let readWrite: MapAccess = [.read, .write]
}

extension Context {
    /// Creates an empty IOAS. The corresponding ioctl is `IOMMU_IOAS_ALLOC`.
    public func allocateIOAS() throws(IOMMUError) -> IOAS.ID {
        try locked { s throws(IOMMUError) in
            try FaultInjection.check(.allocation(.ioas))
            let ioas = IOAS()
            s.insert(ioas)
            return ioas.id
        }
    }

    /// Maps `length` bytes of `source` into `ioas`, at `iova` or at IOVA the framework picks
    /// when `iova` is nil; returns the IOVA. The corresponding ioctls are `IOMMU_IOAS_MAP` and
    /// `IOMMU_IOAS_MAP_FILE`.
    ///
    /// - Throws: `EINVAL` for a zero or misaligned length or IOVA, or a reserved IOVA;
    ///   `EEXIST` if IOVA is mapped; `ENOSPC` if no IOVA is free; `EFAULT` for unmapped user
    ///   memory (pinned when a domain is attached); `EOVERFLOW`; `ENOENT` for no such IOAS.
    public func map(_ ioas: IOAS.ID, source: MapSource, length: UInt64, iova: UInt64?, access: MapAccess) throws(IOMMUError) -> UInt64 {
        guard !access.isEmpty else { throw .invalid("mapping must be readable or writeable") }
        return try locked { s throws(IOMMUError) in
            let target = try s.object(ioas.object, as: IOAS.self)
            try FaultInjection.check(.allocation(nil))  // the pages and the area
            let pages: Pages, offset: UInt64
            let pageSize = s.options.pageSize
            switch source {
            case .user(let address):
                guard length != 0 else { throw .invalid("zero length") }
                // The kernel's check_add_overflow(uptr, length): the end itself must fit.
                guard !address.addingReportingOverflow(length).overflow, let r = IOVARange(start: address, length: length) else {
                    throw .overflow("user address + length overflows")
                }
                let base = address & ~(pageSize - 1)
                let end = alignUp(r.last, pageSize)
                pages = Pages(base: base, byteLength: end &- base, writable: access.contains(.write), source: .user,
                              pageSize: pageSize, memory: s.memory)
                offset = address - base
            case .file(let fd, let start):
                // In the kernel's order: the span, the descriptor, then the IOVA (derived from
                // the file offset), and only then anything that needs the file's pages.
                guard length != 0 else { throw .invalid("zero length") }
                guard IOVARange(start: start, length: length) != nil else { throw .overflow("offset + length overflows") }
                let base = start & ~(pageSize - 1)
                let (file, size) = try s.memory.fileInfo(fd: fd)
                // The kernel's iopt_alloc_pages: the page count must not overflow.
                guard length <= UInt64.max - pageSize else { throw .invalid("length too large") }
                // Whole pages from `base`; a span ending in the last page of the address space
                // wraps to a length no mapping can have, and mapFile refuses it.
                let mapLength = alignUp(start &+ length &- 1, pageSize) &- base
                if DMABufRegistry.shared.isBuffer(file) {
                    // A DMA-buf's span is checked when it is imported; a file's when it is pinned.
                    guard start + length <= size else { throw .invalid("span passes the end of the DMA-buf") }
                    if DMABufRegistry.shared.isRevoked(file) { throw .noDevice("DMA-buf is revoked") }
                }
                let placed = try s.placeIOVA(target, firstAddress: start, length: length, iova: iova)
                let mapping = try s.memory.mapFile(fd: fd, offset: base, length: mapLength, writable: access.contains(.write))
                pages = Pages(base: mapping.base, byteLength: mapLength, writable: access.contains(.write),
                              source: .file(mapping), pageSize: pageSize, memory: s.memory)
                try s.placeArea(target, pages: pages, offset: start - base, length: length, at: placed, access: access)
                return placed
            }
            return try s.insertArea(target, pages: pages, offset: offset, length: length, iova: iova, access: access)
        }
    }

    /// Maps the IOVA `[sourceIOVA, sourceIOVA+length)` of `source` into `destination` too,
    /// sharing the pinned pages. The corresponding ioctl is `IOMMU_IOAS_COPY`.
    ///
    /// - Throws: `ENOENT` if the source span is not fully mapped by contiguous areas.
    public func copy(from source: IOAS.ID, sourceIOVA: UInt64, to destination: IOAS.ID, destinationIOVA: UInt64?,
                     length: UInt64, access: MapAccess) throws(IOMMUError) -> UInt64 {
        guard !access.isEmpty else { throw .invalid("mapping must be readable or writeable") }
        return try locked { s throws(IOMMUError) in
            let src = try s.object(source.object, as: IOAS.self)
            guard length != 0 else { throw .invalid("zero length") }
            guard let range = IOVARange(start: sourceIOVA, length: length) else { throw .overflow("IOVA + length overflows") }
            let slices = try src.table.contiguousSlices(range)
            let dst = try s.object(destination.object, as: IOAS.self)
            try FaultInjection.check(.allocation(nil))  // the new areas
            return try s.insertAreas(dst, slices: slices, length: length, iova: destinationIOVA, access: access)
        }
    }

    /// Unmaps every area inside `[iova, iova+length)`; returns the number of bytes unmapped.
    /// The corresponding ioctl is `IOMMU_IOAS_UNMAP`.
    ///
    /// - Throws: `ENOENT` if an area would be split or nothing is mapped there; `EBUSY` if a
    ///   HW queue locks an area; `EDEADLOCK` if an access does not let go of its pages.
    ///
    /// - Parameters:
    ///   - ioas: the IOAS.
    ///   - iova: the first address of the span.
    ///   - length: the span's length in bytes.
    ///   - requireMapped: when false, a span with nothing mapped returns 0 instead of
    ///     `ENOENT` (the VFIO type1 semantics).
    public func unmap(_ ioas: IOAS.ID, iova: UInt64, length: UInt64, requireMapped: Bool = true) throws(IOMMUError) -> UInt64 {
        try locked { s throws(IOMMUError) in
            let target = try s.object(ioas.object, as: IOAS.self)
            guard length != 0 else { throw .invalid("zero length") }
            guard let range = IOVARange(start: iova, length: length) else { throw .overflow("IOVA + length overflows") }
            let n = try s.unmap(target, range: range, all: false)
            if n == 0 && requireMapped { throw .noEntry("nothing mapped there") }
            return n
        }
    }

    /// Unmaps everything in `ioas`; returns the bytes unmapped (0 is fine).
    public func unmapAll(_ ioas: IOAS.ID) throws(IOMMUError) -> UInt64 {
        try locked { s throws(IOMMUError) in
            try s.unmap(try s.object(ioas.object, as: IOAS.self), range: .all, all: true)
        }
    }

    /// The spans of IOVA usable for mapping (the holes between reserved spans) and the required
    /// alignment. The corresponding ioctl is `IOMMU_IOAS_IOVA_RANGES`.
    public func iovaRanges(_ ioas: IOAS.ID) throws(IOMMUError) -> (ranges: [IOVARange], alignment: UInt64) {
        try locked { s throws(IOMMUError) in
            let t = try s.object(ioas.object, as: IOAS.self).table
            return (t.mergedReserved().holes(in: .all), t.iovaAlignment)
        }
    }

    /// Restricts automatic IOVA to `ranges` (empty: no restriction). The corresponding ioctl
    /// is `IOMMU_IOAS_ALLOW_IOVAS`.
    ///
    /// - Throws: `EINVAL` for a span with start >= last or overlapping spans; `EADDRINUSE` if a
    ///   span is reserved.
    /// Throws `ENOENT` unless `ioas` names an IOAS of this context (for callers that must
    /// look the IOAS up before they read anything else, as the kernel's ioctls do).
    public func checkIOAS(_ ioas: IOAS.ID) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in _ = try s.object(ioas.object, as: IOAS.self) }
    }

    public func allowIOVAs(_ ioas: IOAS.ID, _ ranges: [IOVARange]) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            let target = try s.object(ioas.object, as: IOAS.self)
            var allowed = IntervalMap<Void>()
            for r in ranges {
                guard r.start < r.last else { throw .invalid("allowed span start >= last") }
                guard allowed.insert(r) else { throw .invalid("allowed spans overlap") }
            }
            for a in allowed.all where target.table.reservedIntersects(a.range) {
                throw .addressInUse("allowed span is reserved")
            }
            target.table.allowed = allowed
        }
    }

    /// Reserves `range` of `ioas` as the test driver's `IOMMU_TEST_OP_ADD_RESERVED` does.
    public func addReserved(_ ioas: IOAS.ID, _ range: IOVARange) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            try s.object(ioas.object, as: IOAS.self).table.reserve(range, owner: .user)
        }
    }

    /// The areas of `ioas`; for tests and tools.
    public func areas(_ ioas: IOAS.ID) throws(IOMMUError) -> [(range: IOVARange, area: Area)] {
        try locked { s throws(IOMMUError) in
            try s.object(ioas.object, as: IOAS.self).table.areas.all.map { ($0.range, $0.value) }
        }
    }
}

@inlinable
func alignUp(_ lastByte: UInt64, _ pageSize: UInt64) -> UInt64 {
    // One past the page holding `lastByte`.
    (lastByte & ~(pageSize - 1)) &+ pageSize
}

/// A slice of pinned pages taken from an area, for `IOAS_COPY`.
struct PagesSlice {
    let pages: Pages
    let offset: UInt64
    let length: UInt64
}

extension IOPageTable {
    /// The slices of pages behind `range`, which must be covered by adjacent areas; `ENOENT` if not.
    func contiguousSlices(_ range: IOVARange) throws(IOMMUError) -> [PagesSlice] {
        var result: [PagesSlice] = []
        var cursor = range.start
        guard var i = areas.index(containing: cursor) else { throw .noEntry("source IOVA is not mapped") }
        while true {
            let e = areas[i]
            let last = min(range.last, e.range.last)
            result.append(PagesSlice(pages: e.value.pages, offset: e.value.pagesOffset + (cursor - e.range.start),
                                     length: last - cursor + 1))
            if last == range.last { return result }
            cursor = last + 1
            i += 1
            guard i < areas.count, areas[i].range.start == cursor else { throw .noEntry("source span has a hole") }
        }
    }
}

extension ContextState {
    /// Places one new area over `pages` and fills the domains (the map fast path: no array
    /// is built, nothing is copied).
    func insertArea(_ ioas: IOAS, pages: Pages, offset: UInt64, length: UInt64, iova: UInt64?, access: MapAccess) throws(IOMMUError) -> UInt64 {
        let start = try placeIOVA(ioas, firstAddress: pages.placementAddress(at: offset), length: length, iova: iova)
        try placeArea(ioas, pages: pages, offset: offset, length: length, at: start, access: access)
        return start
    }

    /// Places areas for `slices` back to back at `iova` (or picked IOVA), pins and fills
    /// domains; undoes everything on failure.
    func insertAreas(_ ioas: IOAS, slices: [PagesSlice], length: UInt64, iova: UInt64?, access: MapAccess) throws(IOMMUError) -> UInt64 {
        let start = try placeIOVA(ioas, firstAddress: slices[0].pages.placementAddress(at: slices[0].offset), length: length, iova: iova)
        var cursor = start
        do throws(IOMMUError) {
            for slice in slices {
                try placeArea(ioas, pages: slice.pages, offset: slice.offset, length: slice.length, at: cursor, access: access)
                cursor = cursor &+ slice.length
            }
        } catch {
            var at = start
            while at != cursor, let i = ioas.table.areas.index(containing: at) {
                let next = ioas.table.areas[i].range.last &+ 1
                removeArea(ioas, at: at)
                at = next
            }
            throw error
        }
        return start
    }

    /// Checks or picks the IOVA of a new mapping.
    func placeIOVA(_ ioas: IOAS, firstAddress: UInt64, length: UInt64, iova: UInt64?) throws(IOMMUError) -> UInt64 {
        guard length & (ioas.table.iovaAlignment - 1) == 0, length != 0 else { throw .invalid("length is not aligned to the IOAS") }
        if let iova {
            _ = try ioas.table.checkIOVA(iova, length: length)
            return iova
        }
        return try ioas.table.allocateIOVA(address: firstAddress, length: length, options: options)
    }

    /// Inserts one area and fills the domains; removes it again on failure.
    func placeArea(_ ioas: IOAS, pages: Pages, offset: UInt64, length: UInt64, at start: UInt64, access: MapAccess) throws(IOMMUError) {
        if access.contains(.write) && !pages.writable { throw .notPermitted("pages are not writeable") }
        guard (offset % options.pageSize) & (ioas.table.iovaAlignment - 1) == 0 else {
            throw .invalid("page offset is not aligned to the IOAS")
        }
        guard let range = IOVARange(start: start, length: length) else { throw .overflow("IOVA overflows") }
        let readable = access.contains(.read), writable = access.contains(.write)
        let area = Area(pages: pages, pagesOffset: offset, readable: readable, writable: writable)
        guard let i = ioas.table.areas.insertReturningIndex(range, area) else { throw .exists("IOVA is already mapped") }
        pages.areaCount += 1
        if !ioas.table.domains.isEmpty {
            do throws(IOMMUError) {
                try fillDomains(ioas, index: i, range: range, pages: pages, offset: offset, readable: readable, writable: writable)
            } catch {
                removeArea(ioas, index: i)
                throw error
            }
        }
    }

    /// Pins the area at index `i` (whose span, pages and permissions the caller passes along, so
    /// nothing is looked up or copied again) and maps it into every domain of the IOAS.
    func fillDomains(_ ioas: IOAS, index i: Int, range: IOVARange, pages: Pages, offset: UInt64,
                     readable: Bool, writable: Bool) throws(IOMMUError) {
        let length = range.last - range.start + 1
        try pages.pin(offset: offset, length: length, state: self)
        ioas.table.areas[i].value.pinnedForDomains = true
        let domains = ioas.table.domains
        for (mapped, hwpt) in domains.enumerated() {
            do throws(IOMMUError) {
                try hwpt.domain.map(iova: range.start, length: length, source: MappedPages(pages: pages, offset: offset),
                                    readable: readable, writable: writable)
            } catch {
                for d in domains.prefix(mapped) { d.domain.unmap(iova: range.start, length: length) }
                pages.unpin(offset: offset, length: length, state: self)
                ioas.table.areas[i].value.pinnedForDomains = false
                throw error
            }
        }
    }

    /// Unmaps the area at `iova` from all domains, unpins it and removes it.
    func removeArea(_ ioas: IOAS, at iova: UInt64) {
        guard let i = ioas.table.areas.index(containing: iova) else { return }
        removeArea(ioas, index: i)
    }

    /// Unmaps the area at index `i` from all domains, unpins it and removes it.
    func removeArea(_ ioas: IOAS, index i: Int) {
        let e = ioas.table.areas.remove(at: i)
        if e.value.pinnedForDomains {
            let length = e.range.last - e.range.start + 1
            for hwpt in ioas.table.domains { hwpt.domain.unmap(iova: e.range.start, length: length) }
            e.value.pages.unpin(offset: e.value.pagesOffset, length: length, state: self)
        }
        e.value.pages.areaCount -= 1
    }

    /// Unmaps whole areas inside `range`, in ascending order, as the kernel does: an area
    /// that sticks out stops the walk with `ENOENT` after the ones before it are gone.
    func unmap(_ ioas: IOAS, range: IOVARange, all: Bool) throws(IOMMUError) -> UInt64 {
        var unmapped: UInt64 = 0
        var start = range.start
        var tries = 0
        while let i = ioas.table.areas.firstIndex(overlapping: IOVARange(start: start, last: range.last)) {
            let area = ioas.table.areas[i].range
            if ioas.table.areas[i].value.locks > 0 { throw .busy("area is locked by a HW queue") }
            if area.start < range.start || area.last > range.last { throw .noEntry("unmap would split an area") }
            if ioas.table.areas[i].value.accessPins > 0 {
                tries += 1
                if tries > 100 { throw .deadlock("an access keeps its pages pinned") }
                notifyAccessesOfUnmap(ioas, range: area)
                start = area.start
                continue
            }
            tries = 0
            removeArea(ioas, index: i)
            unmapped += area.last - area.start + 1
            if area.last >= range.last { break }
            start = area.last + 1
        }
        return unmapped
    }
}

extension Context {
    /// Splits the areas of `ioas` so that each IOVA in `lasts` ends an area, sharing the pinned
    /// pages between the pieces; the VFIO type1 (v1) unmap needs it to punch holes in mappings.
    ///
    /// - Throws: `EINVAL` if a cut is not aligned to the IOAS or an area is pinned by an access
    ///   or locked by a HW queue.
    public func cutAreas(_ ioas: IOAS.ID, after lasts: [UInt64]) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            let target = try s.object(ioas.object, as: IOAS.self)
            for last in lasts { try s.splitArea(target, after: last) }
        }
    }
}

extension ContextState {
    func splitArea(_ ioas: IOAS, after last: UInt64) throws(IOMMUError) {
        guard let i = ioas.table.areas.index(containing: last) else { return }
        let e = ioas.table.areas[i]
        guard e.range.last != last else { return }
        guard (last &+ 1) & (ioas.table.iovaAlignment - 1) == 0 else { throw .invalid("cut is not aligned") }
        guard e.value.accessPins == 0, e.value.locks == 0 else { throw .invalid("area is in use") }
        let leftLength = last - e.range.start + 1
        let rightLength = e.range.last - last
        var left = Area(pages: e.value.pages, pagesOffset: e.value.pagesOffset, readable: e.value.readable, writable: e.value.writable)
        var right = Area(pages: e.value.pages, pagesOffset: e.value.pagesOffset + leftLength, readable: e.value.readable, writable: e.value.writable)
        if e.value.pinnedForDomains {
            try e.value.pages.pin(offset: left.pagesOffset, length: leftLength, state: self)
            do throws(IOMMUError) { try e.value.pages.pin(offset: right.pagesOffset, length: rightLength, state: self) } catch {
                e.value.pages.unpin(offset: left.pagesOffset, length: leftLength, state: self)
                throw error
            }
            e.value.pages.unpin(offset: e.value.pagesOffset, length: leftLength + rightLength, state: self)
            left.pinnedForDomains = true
            right.pinnedForDomains = true
        }
        ioas.table.areas.remove(at: i)
        ioas.table.areas.insert(IOVARange(start: e.range.start, last: last), left)
        ioas.table.areas.insert(IOVARange(start: last + 1, last: e.range.last), right)
        e.value.pages.areaCount += 1
    }
}
