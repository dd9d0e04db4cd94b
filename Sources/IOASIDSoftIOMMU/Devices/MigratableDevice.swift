// What a device model implements to be live-migrated through VFIO's migration interface: it can
// be stopped (no DMA, no interrupts, its internal state frozen while registers are still
// answered), and its internal state can be saved into bytes and restored from them on a second
// instance of the same model. The byte format is the model's own; it should carry a magic and a
// version so a restore can refuse a stream from another model or another version.

/// A device model whose state can be saved and restored (live migration).
public protocol MigratableDeviceModel: PCIDeviceModel {
    /// Stops (`false`) or restarts (`true`) the device. A stopped device issues no DMA and sends no
    /// interrupt; work software gives it meanwhile is held (as with bus mastering off) and done,
    /// and interrupts raised meanwhile sent, when it runs again.
    func setRunning(_ running: Bool)
    /// The device's internal state (not the PCI configuration space or MSI-X table, which the
    /// machine keeps and the VMM migrates itself).
    func saveState() -> [UInt8]
    /// Replaces the internal state by a saved one; false (and no change) if `bytes` is not a
    /// complete state of this model in a version it reads.
    func restoreState(_ bytes: [UInt8]) -> Bool
}

/// Appends little-endian fields to a saved device state.
public struct DeviceStateWriter {
    /// The bytes written so far.
    public private(set) var bytes: [UInt8] = []

    public init() {}

    /// Appends `value` in little-endian byte order.
    public mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// Appends a Boolean as one byte.
    public mutating func append(_ value: Bool) { append(UInt8(value ? 1 : 0)) }
}

/// Reads little-endian fields of a saved device state; nil past the end.
public struct DeviceStateReader {
    private let bytes: [UInt8]
    private var at = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Whether every byte has been read.
    public var atEnd: Bool { at == bytes.count }

    /// The next `T`, or nil when fewer bytes remain.
    public mutating func read<T: FixedWidthInteger>(_: T.Type = T.self) -> T? {
        let size = MemoryLayout<T>.size
        guard bytes.count - at >= size else { return nil }
        var value: T = 0
        for i in 0..<size { value |= T(truncatingIfNeeded: bytes[at + i]) << (8 * i) }
        at += size
        return value
    }

    /// The next Boolean (one byte, 0 or 1), or nil.
    public mutating func readBool() -> Bool? {
        guard let b: UInt8 = read(), b <= 1 else { return nil }
        return b == 1
    }
}
