// DMA requests and their translations.

import IOASIDStructures

/// Access rights: what a request asks for, what a translation grants.
public struct AccessPermissions: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The bits: 1 read, 2 write, 4 execute.
    public let rawValue: UInt8
    /// The rights with bits `rawValue`.
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Read (a memory read request; ATS: the R bit).
    public static let read = AccessPermissions(rawValue: 1)
    /// Write (a memory write request; ATS: the W bit).
    public static let write = AccessPermissions(rawValue: 2)
    /// Execute (a read with the Execute-Requested bit of the PASID prefix; ATS: the Exe bit).
    public static let execute = AccessPermissions(rawValue: 4)
    /// Read and write.
    public static let readWrite: AccessPermissions = [.read, .write]
    /// Read, write and execute.
    public static let all: AccessPermissions = [.read, .write, .execute]

    /// `rwx` with dashes for missing rights.
    public var description: String {
        (contains(.read) ? "r" : "-") + (contains(.write) ? "w" : "-") + (contains(.execute) ? "x" : "-")
    }
}

/// One DMA transaction as it reaches the IOMMU.
public struct DMARequest: Hashable, Sendable {
    /// The PCIe Address Type of a memory request (translation requests are
    /// ``ATSTranslationRequest``s instead).
    public enum AddressType: Hashable, Sendable {
        /// The address is an IOVA for the IOMMU to translate.
        case untranslated
        /// The address was translated by the device's ATC; the IOMMU only checks that the device
        /// may send translated requests.
        case translated
    }

    /// Who sent it.
    public var requesterID: RequesterID
    /// The PASID prefix, if any.
    public var pasid: PASID?
    /// The Privileged Mode Requested bit of the PASID prefix (supervisor access).
    public var privileged: Bool
    /// The first byte addressed.
    public var address: UInt64
    /// What the request does: `.read`, `.write`, or `[.read, .execute]` for an instruction fetch.
    public var access: AccessPermissions
    /// The number of bytes (the request does not cross the page it starts in once translated).
    public var length: UInt64
    /// Untranslated (the usual case) or translated.
    public var addressType: AddressType

    /// Creates a request; see the properties.
    public init(requesterID: RequesterID, pasid: PASID? = nil, privileged: Bool = false, address: UInt64,
                access: AccessPermissions, length: UInt64 = 1, addressType: AddressType = .untranslated) {
        self.requesterID = requesterID
        self.pasid = pasid
        self.privileged = privileged
        self.address = address
        self.access = access
        self.length = length
        self.addressType = addressType
    }
}

/// A translation of one naturally aligned page of input addresses (an IOVA page, or a guest
/// physical page) to output addresses: what an IOMMU returns for a request, what an ATS
/// completion carries, and what the IOTLB and ATC cache.
public struct Translation: Hashable, Sendable {
    /// The first input address of the page (aligned to its size).
    public var inputBase: UInt64
    /// The output address `inputBase` translates to (aligned to the page size).
    public var outputBase: UInt64
    /// log2 of the page size: 12 for 4 KiB, 21 for 2 MiB, 30 for 1 GiB, ...
    public var pageShift: UInt8
    /// The rights granted on the page (for the privilege level the translation was made for).
    public var permissions: AccessPermissions
    /// Whether the translation is the same for every PASID of the domain (VT-d first-stage G bit,
    /// SMMUv3 nG = 0, the ATS Global bit).
    public var global: Bool

    /// Creates the translation of the page of size `1 << pageShift` containing `inputBase` to
    /// the page containing `outputBase` (both are aligned down to the page size).
    @inlinable
    public init(inputBase: UInt64, outputBase: UInt64, pageShift: UInt8 = 12,
                permissions: AccessPermissions, global: Bool = false) {
        precondition(pageShift >= 12 && pageShift < 64, "pages are 4 KiB to 2^63 bytes")
        let mask = (UInt64(1) << pageShift) - 1
        self.inputBase = inputBase & ~mask
        self.outputBase = outputBase & ~mask
        self.pageShift = pageShift
        self.permissions = permissions
        self.global = global
    }

    /// A translation from fields already checked and aligned (the caches' decoders).
    @inlinable
    init(uncheckedInputBase inputBase: UInt64, outputBase: UInt64, pageShift: UInt8, permissions: AccessPermissions, global: Bool) {
        self.inputBase = inputBase
        self.outputBase = outputBase
        self.pageShift = pageShift
        self.permissions = permissions
        self.global = global
    }

    /// A non-leaf translation for a paging-structure cache: the `1 << pageShift` bytes of input
    /// addresses at `inputBase` are translated by the table at `tableAddress` (4 KiB aligned),
    /// which is kept as ``outputBase`` unaligned to the span; ``output(for:)`` has no meaning.
    @inlinable
    public static func nextTable(_ tableAddress: UInt64, inputBase: UInt64, pageShift: UInt8,
                                 permissions: AccessPermissions = .all) -> Translation {
        precondition(tableAddress & 0xFFF == 0, "a table is 4 KiB aligned")
        var t = Translation(inputBase: inputBase, outputBase: 0, pageShift: pageShift, permissions: permissions)
        t.outputBase = tableAddress
        return t
    }

    /// The page size in bytes.
    @inlinable
    public var size: UInt64 { 1 << pageShift }
    /// The input addresses covered.
    public var inputRange: IOVARange { IOVARange(start: inputBase, last: inputBase + (size - 1)) }
    /// Whether `address` is an input address of this page.
    @inlinable
    public func contains(_ address: UInt64) -> Bool { address >> pageShift == inputBase >> pageShift }
    /// The output address of input `address` (which must be in the page).
    @inlinable
    public func output(for address: UInt64) -> UInt64 { outputBase | (address & (size - 1)) }
}
