// Identifiers that tag every DMA on the fabric: the requester ID and the PASID.

/// A PCI requester ID (bus:device.function, "BDF"): the 16-bit tag of every request a PCI
/// function sends, which the IOMMU uses to find the function's context (VT-d context entry,
/// SMMUv3 stream table entry).
public struct RequesterID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The raw 16-bit value: bus in bits 15:8, device in bits 7:3, function in bits 2:0.
    public var rawValue: UInt16

    /// Creates the requester ID with raw value `rawValue`.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Creates `bus:device.function`; `device` must be below 32 and `function` below 8.
    public init(bus: UInt8, device: UInt8, function: UInt8) {
        precondition(device < 32 && function < 8, "device is 5 bits and function 3 bits")
        rawValue = UInt16(bus) << 8 | UInt16(device) << 3 | UInt16(function)
    }

    /// The bus number.
    public var bus: UInt8 { UInt8(rawValue >> 8) }
    /// The device number (0–31).
    public var device: UInt8 { UInt8((rawValue >> 3) & 0x1F) }
    /// The function number (0–7).
    public var function: UInt8 { UInt8(rawValue & 7) }

    /// Orders by raw value.
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    /// `bb:dd.f` in hexadecimal, as lspci prints it.
    public var description: String {
        func hex(_ v: UInt8, _ width: Int) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(hex(bus, 2)):\(hex(device, 2)).\(function)"
    }
}

/// A Process Address Space ID: the 20-bit tag (PCIe PASID TLP prefix) that selects one address
/// space of a function. The type holds only valid values (below 2^20); a device's PASID
/// capability may support fewer bits (``fits(width:)``).
public struct PASID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    /// The architectural width of a PASID, 20 bits.
    public static let maxWidth = 20
    /// The largest PASID, 2^20 - 1.
    public static let max = PASID(0xF_FFFF)

    /// The value, below 2^20.
    public let rawValue: UInt32

    /// The PASID `rawValue`, or nil when it does not fit in 20 bits.
    public init?(rawValue: UInt32) {
        guard rawValue < 1 << Self.maxWidth else { return nil }
        self.rawValue = rawValue
    }

    /// The PASID `value`, which must fit in 20 bits.
    public init(_ value: UInt32) {
        precondition(value < 1 << Self.maxWidth, "a PASID has 20 bits")
        rawValue = value
    }

    /// The PASID `value` (must fit in 20 bits).
    public init(integerLiteral value: UInt32) { self.init(value) }

    /// Whether the PASID is representable in `width` bits (a PASID capability's Max PASID Width).
    public func fits(width: Int) -> Bool { width >= Self.maxWidth || rawValue < UInt32(1) << UInt32(Swift.max(0, width)) }

    /// Orders by raw value.
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    /// `PASID n` in decimal.
    public var description: String { "PASID \(rawValue)" }
}
