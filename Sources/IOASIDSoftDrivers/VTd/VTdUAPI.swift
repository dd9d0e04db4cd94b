// The VT-d parts of the iommufd user API the driver decodes and encodes (include/uapi/linux/
// iommufd.h): its own small mirrors, checked against the ABI target's layouts by a test.

/// Constants of the VT-d user API.
public enum VTdUAPI {
    /// `IOMMU_HW_INFO_TYPE_DEFAULT`: whatever the driver reports by default.
    public static let hwInfoTypeDefault: UInt32 = 0
    /// `IOMMU_HW_INFO_TYPE_INTEL_VTD`.
    public static let hwInfoTypeVTd: UInt32 = 1
    /// `IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17`: read-only mappings are not allowed on a nesting
    /// parent (the driver maps them writeable), reported as the Linux driver always does.
    public static let hwInfoErrata772415: UInt32 = 1 << 0
    /// `IOMMU_HWPT_DATA_VTD_S1`.
    public static let hwptDataVTdS1: UInt32 = 1
    /// `IOMMU_VTD_S1_SRE` (`iommu_hwpt_vtd_s1.flags`): supervisor requests.
    public static let s1SupervisorRequests: UInt64 = 1 << 0
    /// `IOMMU_VTD_S1_EAFE`: extended accessed flag.
    public static let s1ExtendedAccessedFlag: UInt64 = 1 << 1
    /// `IOMMU_VTD_S1_WPE`: write protect (with SRE).
    public static let s1WriteProtect: UInt64 = 1 << 2
    /// `IOMMU_HWPT_INVALIDATE_DATA_VTD_S1`.
    public static let invalidateDataVTdS1: UInt32 = 0
    /// `IOMMU_VTD_INV_FLAGS_LEAF`.
    public static let invalidateLeaf: UInt32 = 1 << 0
    /// `IOMMU_HW_CAP_PCI_PASID_EXEC`: the PASID capability allows execute requests.
    public static let capPASIDExec: UInt64 = 1 << 1
    /// `IOMMU_HW_CAP_PCI_PASID_PRIV`: the PASID capability allows privileged requests.
    public static let capPASIDPriv: UInt64 = 1 << 2
    /// `IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED`: the device cannot use ATS.
    public static let capATSNotSupported: UInt64 = 1 << 3
    /// `IOMMU_PGFAULT_PERM_READ` (`iommu_hwpt_pgfault.perm`).
    public static let faultPermRead: UInt32 = 1 << 0
    /// `IOMMU_PGFAULT_PERM_WRITE`.
    public static let faultPermWrite: UInt32 = 1 << 1
    /// `IOMMU_PGFAULT_PERM_EXEC`.
    public static let faultPermExec: UInt32 = 1 << 2
    /// `IOMMU_PGFAULT_PERM_PRIV`.
    public static let faultPermPriv: UInt32 = 1 << 3
}

/// `struct iommu_hw_info_vtd`: what `IOMMU_GET_HW_INFO` returns for a VT-d device.
public struct VTdHWInfo: Equatable, Sendable {
    /// `flags`: `IOMMU_HW_INFO_VTD_*`.
    public var flags: UInt32 = 0
    /// `__reserved`.
    public var reserved: UInt32 = 0
    /// `cap_reg`: the Capability Register.
    public var capabilityRegister: UInt64 = 0
    /// `ecap_reg`: the Extended Capability Register.
    public var extendedCapabilityRegister: UInt64 = 0

    /// Creates the info.
    public init(flags: UInt32 = 0, capabilityRegister: UInt64 = 0, extendedCapabilityRegister: UInt64 = 0) {
        self.flags = flags
        self.capabilityRegister = capabilityRegister
        self.extendedCapabilityRegister = extendedCapabilityRegister
    }

    /// The 24 little-endian bytes of the C struct.
    public var bytes: [UInt8] {
        var v = self
        v.flags = v.flags.littleEndian
        v.capabilityRegister = v.capabilityRegister.littleEndian
        v.extendedCapabilityRegister = v.extendedCapabilityRegister.littleEndian
        return withUnsafeBytes(of: &v) { Array($0) }
    }

    /// Decodes the C struct's bytes (at least 24).
    public init?(bytes: [UInt8]) {
        guard bytes.count >= MemoryLayout<VTdHWInfo>.size else { return nil }
        var v = VTdHWInfo()
        withUnsafeMutableBytes(of: &v) { $0.copyBytes(from: bytes.prefix(MemoryLayout<VTdHWInfo>.size)) }
        flags = UInt32(littleEndian: v.flags)
        reserved = UInt32(littleEndian: v.reserved)
        capabilityRegister = UInt64(littleEndian: v.capabilityRegister)
        extendedCapabilityRegister = UInt64(littleEndian: v.extendedCapabilityRegister)
    }
}

/// `struct iommu_hwpt_vtd_s1`: the guest's stage-1 table for a nested HWPT (`IOMMU_HWPT_DATA_VTD_S1`).
public struct VTdStage1Data: Equatable, Sendable {
    /// `flags`: `IOMMU_VTD_S1_SRE | _EAFE | _WPE`.
    public var flags: UInt64 = 0
    /// `pgtbl_addr`: the guest-physical address of the stage-1 root table.
    public var pageTableAddress: UInt64 = 0
    /// `addr_width`: 48 (4-level) or 57 (5-level).
    public var addressWidth: UInt32 = 0
    /// `__reserved`.
    public var reserved: UInt32 = 0

    /// Creates the data.
    public init(flags: UInt64 = 0, pageTableAddress: UInt64 = 0, addressWidth: UInt32 = 48) {
        self.flags = flags
        self.pageTableAddress = pageTableAddress
        self.addressWidth = addressWidth
    }

    /// `offsetofend(struct iommu_hwpt_vtd_s1, __reserved)`: the minimum length accepted.
    public static let minimumLength = 24
}

/// `struct iommu_hwpt_vtd_s1_invalidate`: one entry of `IOMMU_HWPT_INVALIDATE` for a VT-d
/// nested HWPT (`IOMMU_HWPT_INVALIDATE_DATA_VTD_S1`).
public struct VTdStage1Invalidation: Equatable, Sendable {
    /// `addr`: the first IOVA, 4 KiB aligned.
    public var address: UInt64 = 0
    /// `npages`: the number of 4 KiB pages; `UInt64.max` with `addr` 0 means everything.
    public var pageCount: UInt64 = 0
    /// `flags`: `IOMMU_VTD_INV_FLAGS_LEAF`.
    public var flags: UInt32 = 0
    /// `__reserved`.
    public var reserved: UInt32 = 0

    /// Creates an entry.
    public init(address: UInt64 = 0, pageCount: UInt64 = 0, flags: UInt32 = 0) {
        self.address = address
        self.pageCount = pageCount
        self.flags = flags
    }

    /// `offsetofend(struct iommu_hwpt_vtd_s1_invalidate, __reserved)`.
    public static let minimumLength = 24
}
