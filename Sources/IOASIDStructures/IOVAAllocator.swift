/// Finds free IOVA for a mapping the caller did not place, the way the kernel's io_pagetable
/// does: within the allowed spans (or everything but the first and last page when none are
/// set), outside reserved spans and existing areas, aligned to the natural alignment of the
/// length and of the user address, and never at IOVA 0.
public enum IOVAAllocator {
    /// Returns the lowest suitable IOVA, or nil when no hole fits.
    ///
    /// - Parameters:
    ///   - length: bytes to place (non-zero).
    ///   - alignment: the required power-of-two alignment of the start.
    ///   - pageOffset: the start's offset inside an alignment unit must equal this (kept from the user address).
    ///   - allowed: spans IOVA must come from; empty means "all".
    ///   - pageSize: the host page size; IOVA 0 .. pageSize-1 and the top page are never handed out.
    ///   - reserved: spans IOVA must never come from.
    ///   - areasHoles: returns the parts of a span that no existing area covers, ascending.
    public static func find<A, B>(length: UInt64, alignment: UInt64, pageOffset: UInt64,
                                  allowed: IntervalMap<A>, reserved: IntervalMap<B>,
                                  areasHoles: (IOVARange) -> [IOVARange],
                                  pageSize: UInt64) -> UInt64? {
        let window = IOVARange(start: pageSize, last: UInt64.max - pageSize)
        var candidates: [IOVARange] = []
        if allowed.isEmpty {
            candidates = [window]
        } else {
            allowed.forEach(overlapping: window) { e in
                if let r = e.range.intersection(window) { candidates.append(r) }
            }
        }
        for span in candidates {
            guard fits(span, length: length, alignment: alignment, pageOffset: pageOffset) != nil else { continue }
            for hole in reserved.holes(in: span) {
                for free in areasHoles(hole) {
                    if let s = fits(free, length: length, alignment: alignment, pageOffset: pageOffset) { return s }
                }
            }
        }
        return nil
    }

    /// The aligned start inside `span` where `length` bytes fit, or nil.
    @inlinable
    public static func fits(_ span: IOVARange, length: UInt64, alignment: UInt64, pageOffset: UInt64) -> UInt64? {
        let (up, o) = span.start.addingReportingOverflow(alignment - 1)
        if o { return nil }
        let aligned = (up & ~(alignment - 1)) | pageOffset
        if aligned >= span.last || span.last - aligned < length - 1 { return nil }
        return aligned
    }
}
