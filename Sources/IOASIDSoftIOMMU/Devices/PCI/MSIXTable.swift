// The MSI-X table and pending-bit array of a plugged function: the machine's, never the model's.
//
// Each table entry is 16 bytes (message address low/high, message data, vector control whose
// bit 0 masks the vector); entries come out of reset masked. The pending-bit array has one bit
// per vector, set when the function signals a masked vector and cleared when the vector is
// delivered on unmask. Only 4- and 8-byte aligned accesses reach the table, as the PCI spec
// requires of software; others read all-ones and write nothing.

/// MSI-X table and pending bits of one function.
public struct MSIXTable: Sendable {
    /// 4 words per entry: address low, address high, data, vector control.
    private var words: [UInt32]
    private var pending: [UInt64]
    /// Number of vectors.
    public let count: Int

    /// A table of `count` vectors, all masked.
    public init(count: Int) {
        self.count = count
        words = [UInt32](repeating: 0, count: count * 4)
        for v in 0..<count { words[v * 4 + 3] = 1 }
        pending = [UInt64](repeating: 0, count: (count + 63) / 64)
    }

    /// Size of the table in bytes.
    public var tableSize: UInt64 { UInt64(count) * 16 }
    /// Size of the pending-bit array in bytes (whole quadwords).
    public var pbaSize: UInt64 { UInt64(pending.count) * 8 }

    /// Whether vector `v`'s mask bit is set.
    public func isMasked(_ v: Int) -> Bool { words[v * 4 + 3] & 1 != 0 }
    /// Whether vector `v` is pending.
    public func isPending(_ v: Int) -> Bool { pending[v / 64] & (1 << UInt64(v % 64)) != 0 }
    /// The message address and data of vector `v`.
    public func message(_ v: Int) -> (address: UInt64, data: UInt32) {
        (UInt64(words[v * 4 + 1]) << 32 | UInt64(words[v * 4]), words[v * 4 + 2])
    }

    /// Sets or clears vector `v`'s pending bit.
    public mutating func setPending(_ v: Int, _ value: Bool) {
        if value { pending[v / 64] |= 1 << UInt64(v % 64) } else { pending[v / 64] &= ~(1 << UInt64(v % 64)) }
    }

    /// Sets vector `v`'s mask bit (the host's own masking, e.g. when it frees the vector).
    public mutating func setMasked(_ v: Int, _ masked: Bool) {
        words[v * 4 + 3] = (words[v * 4 + 3] & ~1) | (masked ? 1 : 0)
    }

    /// Reads the table at byte `offset` (`size` 4 or 8); nil when the access is not one the
    /// table accepts (the caller answers all-ones).
    public func readTable(_ offset: UInt64, size: Int) -> UInt64? {
        guard (size == 4 || size == 8), offset % UInt64(size) == 0, offset + UInt64(size) <= tableSize else { return nil }
        let w = Int(offset / 4)
        return size == 4 ? UInt64(words[w]) : UInt64(words[w]) | UInt64(words[w + 1]) << 32
    }

    /// Writes the table; returns the vectors whose mask bit went from set to clear (to deliver a
    /// pending message), as a range (empty when none).
    public mutating func writeTable(_ offset: UInt64, size: Int, value: UInt64) -> Range<Int> {
        guard (size == 4 || size == 8), offset % UInt64(size) == 0, offset + UInt64(size) <= tableSize else { return 0..<0 }
        let w = Int(offset / 4)
        var unmasked = 0..<0
        for i in 0..<(size / 4) {
            let word = UInt32(truncatingIfNeeded: value >> (32 * UInt64(i)))
            let index = w + i
            if index % 4 == 3 {
                let was = words[index] & 1
                words[index] = (words[index] & ~1) | (word & 1)   // only the mask bit is writable
                if was == 1 && word & 1 == 0 { unmasked = (index / 4)..<(index / 4 + 1) }
            } else {
                words[index] = word
            }
        }
        return unmasked
    }

    /// Reads the pending-bit array (read-only; `size` 4 or 8).
    public func readPBA(_ offset: UInt64, size: Int) -> UInt64? {
        guard (size == 4 || size == 8), offset % UInt64(size) == 0, offset + UInt64(size) <= pbaSize else { return nil }
        let q = pending[Int(offset / 8)]
        return size == 8 ? q : (q >> (8 * (offset % 8))) & 0xffff_ffff
    }
}
