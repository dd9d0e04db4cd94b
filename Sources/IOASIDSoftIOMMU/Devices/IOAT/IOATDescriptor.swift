// An I/OAT DMA descriptor: 64 bytes, 64-byte aligned, little endian.
//
//   0x00  size (32 bits)          bytes to move
//   0x04  control (32 bits)       bit 0 interrupt enable, 1 source snoop disable, 2 destination
//                                 snoop disable, 3 completion write, 4 fence, 5 null, 6 source
//                                 page break, 7 destination page break, 8 bundle, 9 destination
//                                 DCA, 10 hint; bits 31:24 the operation (0x00 copy)
//   0x08  source address
//   0x10  destination address
//   0x18  next descriptor address
//   0x20  operation-specific / reserved (0x20, 0x28), software's own (0x30, 0x38)

/// A decoded I/OAT descriptor (the fields a copy uses).
public struct IOATDescriptor: Hashable, Sendable {
    /// The size of a descriptor in bytes.
    public static let size = 64

    /// The operation code of a memory copy (also of a null descriptor).
    public static let copyOperation: UInt8 = 0x00

    /// Control bit: interrupt when this descriptor completes.
    public static let interruptEnable: UInt32 = 1 << 0
    /// Control bit: write a completion (CHANSTS) to CHANCMP when this descriptor completes.
    public static let completionWrite: UInt32 = 1 << 3
    /// Control bit: fence (later descriptors wait for this one's writes).
    public static let fence: UInt32 = 1 << 4
    /// Control bit: a null descriptor, which moves no data.
    public static let null: UInt32 = 1 << 5

    /// Bytes to move.
    public var transferSize: UInt32
    /// The control word.
    public var control: UInt32
    /// The source address (an IOVA).
    public var source: UInt64
    /// The destination address (an IOVA).
    public var destination: UInt64
    /// The next descriptor's address (an IOVA).
    public var next: UInt64

    /// The operation (control bits 31:24).
    public var operation: UInt8 { UInt8(truncatingIfNeeded: control >> 24) }
    /// Whether the descriptor asks for an interrupt on completion.
    public var interrupts: Bool { control & Self.interruptEnable != 0 }
    /// Whether the descriptor asks for a completion write.
    public var writesCompletion: Bool { control & Self.completionWrite != 0 }
    /// Whether this is a null descriptor.
    public var isNull: Bool { control & Self.null != 0 }

    /// A descriptor from its fields.
    public init(transferSize: UInt32, control: UInt32, source: UInt64, destination: UInt64, next: UInt64) {
        self.transferSize = transferSize
        self.control = control
        self.source = source
        self.destination = destination
        self.next = next
    }

    /// Decodes the first 32 bytes of a descriptor's image.
    public init(_ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count >= 32, "a descriptor's used fields are 32 bytes")
        transferSize = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        control = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        source = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        destination = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        next = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
    }

    /// The 64-byte image of the descriptor (reserved and software fields zero).
    public var bytes: [UInt8] {
        var image = [UInt8](repeating: 0, count: Self.size)
        image.withUnsafeMutableBytes { b in
            b.storeBytes(of: transferSize.littleEndian, toByteOffset: 0, as: UInt32.self)
            b.storeBytes(of: control.littleEndian, toByteOffset: 4, as: UInt32.self)
            b.storeBytes(of: source.littleEndian, toByteOffset: 8, as: UInt64.self)
            b.storeBytes(of: destination.littleEndian, toByteOffset: 16, as: UInt64.self)
            b.storeBytes(of: next.littleEndian, toByteOffset: 24, as: UInt64.self)
        }
        return image
    }

    /// A memory copy of `size` bytes, asking for an interrupt and/or a completion write.
    public static func copy(size: UInt32, from source: UInt64, to destination: UInt64, next: UInt64,
                            interrupt: Bool = false, completionWrite: Bool = false) -> IOATDescriptor {
        IOATDescriptor(transferSize: size, control: (interrupt ? interruptEnable : 0) | (completionWrite ? Self.completionWrite : 0),
                       source: source, destination: destination, next: next)
    }
}
