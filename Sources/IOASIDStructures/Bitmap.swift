/// A fixed-size bitmap of 64-bit words, as used for dirty tracking.
public struct Bitmap: Sendable, Equatable {
    public internal(set) var words: [UInt64]
    /// The number of bits.
    public let count: Int

    /// Creates a bitmap of `count` clear bits.
    public init(count: Int) {
        self.count = count
        words = Array(repeating: 0, count: (count + 63) / 64)
    }

    /// Reads or writes bit `i`.
    @inline(__always)
    public subscript(i: Int) -> Bool {
        get { words[i >> 6] & (1 << UInt64(i & 63)) != 0 }
        set {
            if newValue { words[i >> 6] |= 1 << UInt64(i & 63) } else { words[i >> 6] &= ~(1 << UInt64(i & 63)) }
        }
    }

    /// The number of set bits.
    public var nonzeroBitCount: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// Traps unless the storage holds exactly the words `count` bits need and no bit at or past
    /// `count` is set. For tests.
    func _checkInvariants() {
        precondition(count >= 0 && words.count == (count + 63) / 64, "\(words.count) words for \(count) bits")
        if count % 64 != 0, let last = words.last {
            precondition(last >> UInt64(count % 64) == 0, "a bit past count is set")
        }
    }
}
