/// A set of non-overlapping IOVA spans, each carrying a value, kept sorted by start.
///
/// Backed by one contiguous array: lookups are binary searches (O(log n)); insertion and
/// removal move the tail (O(n)) but reuse the array's capacity, so a steady state of inserts
/// and removals allocates nothing. Areas of an IOAS, reserved spans and allowed spans are all
/// small sets in practice (tens to thousands), where this layout beats a tree.
public struct IntervalMap<Value>: Sendable where Value: Sendable {
    /// One span and its value.
    public struct Entry: Sendable {
        public var range: IOVARange
        public var value: Value
        @inlinable public init(range: IOVARange, value: Value) { self.range = range; self.value = value }
    }

    @usableFromInline var entries: [Entry] = []

    @inlinable public init() {}

    /// The number of spans.
    @inlinable public var count: Int { entries.count }
    /// Whether there are no spans.
    @inlinable public var isEmpty: Bool { entries.isEmpty }
    /// All spans in ascending order.
    @inlinable public var all: [Entry] { entries }

    /// Reserves room for `n` spans.
    @inlinable public mutating func reserveCapacity(_ n: Int) { entries.reserveCapacity(n) }

    /// The index of the first entry whose last address is >= `address`. O(log n).
    @inlinable
    public func firstIndex(endingAtOrAfter address: UInt64) -> Int {
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if entries[mid].range.last < address { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The index of the first span that overlaps `range`, or nil.
    @inlinable
    public func firstIndex(overlapping range: IOVARange) -> Int? {
        let i = firstIndex(endingAtOrAfter: range.start)
        guard i < entries.count, entries[i].range.start <= range.last else { return nil }
        return i
    }

    /// Whether any span overlaps `range`.
    @inlinable
    public func intersects(_ range: IOVARange) -> Bool { firstIndex(overlapping: range) != nil }

    /// The entry containing `address`, or nil.
    @inlinable
    public func entry(containing address: UInt64) -> Entry? {
        let i = firstIndex(endingAtOrAfter: address)
        guard i < entries.count, entries[i].range.start <= address else { return nil }
        return entries[i]
    }

    /// The index of the entry containing `address`, or nil.
    @inlinable
    public func index(containing address: UInt64) -> Int? {
        let i = firstIndex(endingAtOrAfter: address)
        guard i < entries.count, entries[i].range.start <= address else { return nil }
        return i
    }

    /// Accesses entry `i` (ascending order).
    @inlinable
    public subscript(i: Int) -> Entry {
        _read { yield entries[i] }
        _modify { yield &entries[i] }
    }

    /// Inserts a span that must not overlap any other; returns false (and changes nothing) if it does.
    @inlinable @discardableResult
    public mutating func insert(_ range: IOVARange, _ value: Value) -> Bool {
        insertReturningIndex(range, value) != nil
    }

    /// Inserts a span that must not overlap any other and returns its index; nil (and nothing
    /// changed) if it overlaps.
    @inlinable
    public mutating func insertReturningIndex(_ range: IOVARange, _ value: Value) -> Int? {
        let i = firstIndex(endingAtOrAfter: range.start)
        if i < entries.count, entries[i].range.start <= range.last { return nil }
        if i == entries.count { entries.append(Entry(range: range, value: value)) } else { entries.insert(Entry(range: range, value: value), at: i) }
        return i
    }

    /// Removes the entry at index `i` and returns it.
    @inlinable @discardableResult
    public mutating func remove(at i: Int) -> Entry {
        if i == entries.count - 1 { return entries.removeLast() }
        return entries.remove(at: i)
    }

    /// Removes every entry, keeping capacity.
    @inlinable public mutating func removeAll() { entries.removeAll(keepingCapacity: true) }

    /// Calls `body` with each entry that overlaps `range`, in ascending order.
    @inlinable
    public func forEach(overlapping range: IOVARange, _ body: (Entry) throws -> Void) rethrows {
        var i = firstIndex(endingAtOrAfter: range.start)
        while i < entries.count, entries[i].range.start <= range.last {
            try body(entries[i])
            i += 1
        }
    }

    /// The gaps between spans within `window`, in ascending order.
    public func holes(in window: IOVARange) -> [IOVARange] {
        var result: [IOVARange] = []
        var cursor = window.start
        var done = false
        forEach(overlapping: window) { e in
            guard !done else { return }
            if e.range.start > cursor { result.append(IOVARange(start: cursor, last: e.range.start - 1)) }
            if e.range.last >= window.last { done = true; return }
            cursor = e.range.last + 1
        }
        if !done { result.append(IOVARange(start: cursor, last: window.last)) }
        return result
    }

    /// Traps unless the entries are well-formed spans (`start <= last`), sorted by start and
    /// pairwise disjoint. For tests, which call it after every operation.
    func _checkInvariants() {
        for i in entries.indices {
            precondition(entries[i].range.start <= entries[i].range.last, "entry \(i) has start > last")
            if i > 0 {
                precondition(entries[i - 1].range.last < entries[i].range.start, "entries \(i - 1) and \(i) overlap or are out of order")
            }
        }
    }
}

extension IntervalMap where Value == Void {
    /// Inserts a span without a value.
    @discardableResult
    public mutating func insert(_ range: IOVARange) -> Bool { insert(range, ()) }
}
