// Bit-field access for the SMMUv3 structures (STEs, CDs, commands, event and PRI records), all
// arrays of little-endian 64-bit words. Field positions are written as in the Arm SMMUv3
// architecture specification (IHI 0070): `[hi:lo]` of the word that holds them.

/// Reads and writes bit fields of 64-bit words.
@usableFromInline
enum SMMUv3Field {
    /// The mask of bits `[hi:lo]`.
    @inline(__always) @usableFromInline
    static func mask(_ hi: Int, _ lo: Int) -> UInt64 {
        let width = hi - lo + 1
        return (width == 64 ? ~0 : ((1 as UInt64) << UInt64(width)) - 1) << UInt64(lo)
    }

    /// Bits `[hi:lo]` of `word`, shifted down.
    @inline(__always) @usableFromInline
    static func get(_ word: UInt64, _ hi: Int, _ lo: Int) -> UInt64 {
        (word & mask(hi, lo)) >> UInt64(lo)
    }

    /// `word` with bits `[hi:lo]` replaced by `value` (which must fit).
    @inline(__always) @usableFromInline
    static func set(_ word: UInt64, _ hi: Int, _ lo: Int, _ value: UInt64) -> UInt64 {
        let m = mask(hi, lo)
        precondition(value & ~(m >> UInt64(lo)) == 0, "value does not fit the field")
        return (word & ~m) | ((value << UInt64(lo)) & m)
    }

    /// Bit `bit` of `word`.
    @inline(__always) @usableFromInline
    static func flag(_ word: UInt64, _ bit: Int) -> Bool { word & ((1 as UInt64) << UInt64(bit)) != 0 }

    /// `word` with bit `bit` set to `value`.
    @inline(__always) @usableFromInline
    static func setFlag(_ word: UInt64, _ bit: Int, _ value: Bool) -> UInt64 {
        value ? word | ((1 as UInt64) << UInt64(bit)) : word & ~((1 as UInt64) << UInt64(bit))
    }
}

/// A 512-bit SMMUv3 structure (an STE, a CD): eight little-endian 64-bit words, word 0 first.
/// Equality, hashing, the description and construction from words are the words'.
public protocol SMMUv3Structure512: Hashable, Sendable, CustomStringConvertible {
    /// The eight 64-bit words, word 0 first.
    var words: InlineArray<8, UInt64> { get set }
    /// The all-zero (invalid) structure.
    init()
}

extension SMMUv3Structure512 {
    /// The size of the structure in bytes.
    public static var size: UInt64 { 64 }

    /// A structure with the given words (missing words are zero).
    public init(words list: [UInt64]) {
        precondition(list.count <= 8)
        self.init()
        for (i, w) in list.enumerated() { words[i] = w }
    }

    public static func == (a: Self, b: Self) -> Bool {
        for i in 0..<8 where a.words[i] != b.words[i] { return false }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        for i in 0..<8 { hasher.combine(words[i]) }
    }

    public var description: String {
        (0..<8).map { "0x" + String(words[$0], radix: 16) }.joined(separator: " ")
    }
}

/// Sizes of the translation granule as the SMMUv3 structures encode them.
///
/// The CD's `TG0` and the STE's `S2TG` both use the `TCR_ELx.TG0` encoding: `0b00` 4 KiB,
/// `0b01` 64 KiB, `0b10` 16 KiB. This model implements the 4 KiB granule only
/// (`SMMU_IDR5.GRAN4K`).
public enum SMMUv3Granule: UInt64, Sendable {
    /// 4 KiB (`0b00`).
    case size4K = 0
    /// 64 KiB (`0b01`).
    case size64K = 1
    /// 16 KiB (`0b10`).
    case size16K = 2
}

/// Physical address sizes as `SMMU_IDR5.OAS`, `CD.IPS` and `STE.S2PS` encode them.
public enum SMMUv3AddressSize {
    /// The number of address bits for an encoding (`0b000` 32 … `0b110` 52), or nil when reserved.
    public static func bits(forEncoding e: UInt64) -> Int? {
        switch e {
        case 0: 32
        case 1: 36
        case 2: 40
        case 3: 42
        case 4: 44
        case 5: 48
        case 6: 52
        default: nil
        }
    }

    /// The encoding of `bits` address bits, or nil when it has none.
    public static func encoding(forBits bits: Int) -> UInt64? {
        switch bits {
        case 32: 0
        case 36: 1
        case 40: 2
        case 42: 3
        case 44: 4
        case 48: 5
        case 52: 6
        default: nil
        }
    }
}
