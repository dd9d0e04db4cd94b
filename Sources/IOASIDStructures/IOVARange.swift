/// A span of I/O virtual addresses written as its first and last address (inclusive), so a
/// span that ends at 2^64 - 1 needs no overflow tricks.
public struct IOVARange: Hashable, Sendable, CustomStringConvertible {
    /// The first address of the span.
    public var start: UInt64
    /// The last address of the span (inclusive).
    public var last: UInt64

    /// Creates the span `[start, last]`; `start <= last` is the caller's duty.
    @inlinable
    public init(start: UInt64, last: UInt64) {
        self.start = start
        self.last = last
    }

    /// Creates the span that starts at `start` and covers `length` bytes, or nil when `length`
    /// is zero or the span would pass 2^64 - 1.
    @inlinable
    public init?(start: UInt64, length: UInt64) {
        guard length != 0 else { return nil }
        let (last, overflow) = start.addingReportingOverflow(length - 1)
        guard !overflow else { return nil }
        self.start = start
        self.last = last
    }

    /// The whole 64-bit space.
    public static let all = IOVARange(start: 0, last: .max)

    /// The number of bytes covered; nil only for the whole space, whose length is 2^64.
    @inlinable
    public var length: UInt64? { last &- start == .max ? nil : last - start + 1 }

    /// Whether `address` lies in the span.
    @inlinable
    public func contains(_ address: UInt64) -> Bool { address >= start && address <= last }

    /// Whether `other` lies entirely within this span.
    @inlinable
    public func contains(_ other: IOVARange) -> Bool { other.start >= start && other.last <= last }

    /// Whether the two spans share at least one address.
    @inlinable
    public func overlaps(_ other: IOVARange) -> Bool { start <= other.last && other.start <= last }

    /// The common part of the two spans, if any.
    @inlinable
    public func intersection(_ other: IOVARange) -> IOVARange? {
        let s = Swift.max(start, other.start), l = Swift.min(last, other.last)
        return s <= l ? IOVARange(start: s, last: l) : nil
    }

    public var description: String {
        "[0x\(String(start, radix: 16)), 0x\(String(last, radix: 16))]"
    }
}
