/// A bitmap of bitmaps that finds the lowest clear bit at or after a position in
/// O(log₆₄ n) word operations, whatever the number of set bits.
///
/// Level 0 holds one bit per ID (1 = in use). Bit `i` of level `k + 1` is 1 exactly when word
/// `i` of level `k` is full (all 64 bits set). The top level is a single word. Padding bits past
/// `size` are kept set, so they are never returned and never keep a word from counting as full.
/// For the 2^20 IDs of a 20-bit PASID space this is 16384 + 256 + 4 + 1 words (about 130 KiB).
struct FreeIDTree: Sendable {
    private(set) var size: Int
    private var levels: [[UInt64]]

    init(size: Int) {
        precondition(size > 0)
        self.size = size
        var levels: [[UInt64]] = []
        var bits = size
        repeat {
            let words = (bits + 63) / 64
            var level = [UInt64](repeating: 0, count: words)
            let tail = bits % 64
            if tail != 0 { level[words - 1] = ~0 << UInt64(tail) }  // padding counts as used
            levels.append(level)
            bits = words
        } while bits > 1
        self.levels = levels
    }

    func contains(_ i: Int) -> Bool {
        levels[0][i >> 6] & (1 << UInt64(i & 63)) != 0
    }

    /// Marks `i` used. The caller ensures it was clear.
    mutating func insert(_ i: Int) {
        var index = i
        for k in 0..<levels.count {
            levels[k][index >> 6] |= 1 << UInt64(index & 63)
            guard levels[k][index >> 6] == ~0 else { return }
            index >>= 6
        }
    }

    /// Marks `i` free. The caller ensures it was set.
    mutating func remove(_ i: Int) {
        var index = i
        for k in 0..<levels.count {
            let wasFull = levels[k][index >> 6] == ~0
            levels[k][index >> 6] &= ~(1 << UInt64(index & 63))
            guard wasFull else { return }
            index >>= 6
        }
    }

    /// The lowest clear bit `>= from`, or nil.
    func firstClear(from: Int) -> Int? {
        guard from >= 0, from < size else { return nil }
        return search(level: 0, from: from)
    }

    /// The lowest index `>= from` at `level` whose bit is clear.
    private func search(level: Int, from: Int) -> Int? {
        let words = levels[level]
        let w = from >> 6
        guard w < words.count else { return nil }
        let masked = words[w] | ((1 << UInt64(from & 63)) &- 1)
        if masked != ~0 { return w * 64 + (~masked).trailingZeroBitCount }
        guard level + 1 < levels.count else { return nil }
        // The next word of this level that is not full is the next clear bit one level up.
        guard let next = search(level: level + 1, from: w + 1) else { return nil }
        return next * 64 + (~words[next]).trailingZeroBitCount
    }
}
