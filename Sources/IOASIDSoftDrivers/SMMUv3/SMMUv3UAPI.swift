// The parts of the iommufd user API (include/uapi/linux/iommufd.h) the SMMUv3 driver decodes
// and produces, as small Swift mirrors of their C layouts. The test suite checks them against
// the checked layouts of the ABI target (`IOASIDLinuxABI/Structs.swift`).

/// Constants of the iommufd user API for Arm SMMUv3.
public enum SMMUv3UAPI {
    /// `IOMMU_HW_INFO_TYPE_ARM_SMMUV3`.
    public static let hwInfoType: UInt32 = 2
    /// `IOMMU_HWPT_DATA_ARM_SMMUV3`.
    public static let hwptDataType: UInt32 = 2
    /// `IOMMU_VIOMMU_TYPE_ARM_SMMUV3`.
    public static let viommuType: UInt32 = 1
    /// `IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3`.
    public static let invalidateDataType: UInt32 = 1
    /// `IOMMU_VEVENTQ_TYPE_ARM_SMMUV3`.
    public static let veventqType: UInt32 = 1
    /// `IOMMU_HW_CAP_PCI_PASID_EXEC`.
    public static let capabilityPASIDExecute: UInt64 = 1 << 1
    /// `IOMMU_HW_CAP_PCI_PASID_PRIV`.
    public static let capabilityPASIDPrivileged: UInt64 = 1 << 2
    /// `IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED`.
    public static let capabilityATSNotSupported: UInt64 = 1 << 3
    /// `IOMMU_PGFAULT_PERM_READ`.
    public static let faultRead: UInt32 = 1 << 0
    /// `IOMMU_PGFAULT_PERM_WRITE`.
    public static let faultWrite: UInt32 = 1 << 1
    /// `IOMMU_PGFAULT_PERM_EXEC`.
    public static let faultExecute: UInt32 = 1 << 2
    /// `IOMMU_PGFAULT_PERM_PRIV`.
    public static let faultPrivileged: UInt32 = 1 << 3
    /// `IOMMUFD_PAGE_RESP_SUCCESS`.
    public static let pageResponseSuccess: UInt32 = 0
}

/// `struct iommu_hw_info_arm_smmuv3`: the SMMU's ID registers as `IOMMU_GET_HW_INFO` reports
/// them (40 bytes).
public struct SMMUv3HardwareInfoData: Sendable {
    /// `flags`: zero.
    public var flags: UInt32 = 0
    /// `__reserved`.
    public var reserved: UInt32 = 0
    /// `idr[6]`: `SMMU_IDR0` … `SMMU_IDR5`.
    public var idr: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0, 0, 0)
    /// `iidr`: `SMMU_IIDR`.
    public var iidr: UInt32 = 0
    /// `aidr`: `SMMU_AIDR`.
    public var aidr: UInt32 = 0
    /// A zeroed record.
    public init() {}

    /// The record as little-endian bytes.
    public var bytes: [UInt8] {
        var v = self
        return withUnsafeBytes(of: &v) { Array($0) }
    }
}

/// `struct iommu_hwpt_arm_smmuv3`: the guest's STE words 0 and 1 (`IOMMU_HWPT_DATA_ARM_SMMUV3`).
public struct SMMUv3HWPTData: Sendable {
    /// `ste[2]`, little-endian.
    public var ste: (UInt64, UInt64) = (0, 0)
    /// A zeroed record.
    public init() {}
    /// The record for `words`.
    public init(_ word0: UInt64, _ word1: UInt64) { ste = (word0, word1) }
}

/// `struct iommu_viommu_arm_smmuv3_invalidate`: one SMMUv3 command
/// (`IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3`).
public struct SMMUv3InvalidateEntry: Sendable {
    /// `cmd[2]`, little-endian.
    public var cmd: (UInt64, UInt64) = (0, 0)
    /// A zeroed record.
    public init() {}
    /// The record for `words`.
    public init(_ word0: UInt64, _ word1: UInt64) { cmd = (word0, word1) }
}

/// `struct iommu_vevent_arm_smmuv3`: one event record with the virtual StreamID
/// (`IOMMU_VEVENTQ_TYPE_ARM_SMMUV3`).
public struct SMMUv3VEventData: Sendable {
    /// `evt[4]`, little-endian.
    public var evt: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    /// A zeroed record.
    public init() {}

    /// The record as bytes.
    public var bytes: [UInt8] {
        var v = self
        return withUnsafeBytes(of: &v) { Array($0) }
    }

    /// Decodes a record from the bytes of a vEVENT.
    public init?(bytes: [UInt8]) {
        guard bytes.count == MemoryLayout<SMMUv3VEventData>.size else { return nil }
        var v = SMMUv3VEventData()
        withUnsafeMutableBytes(of: &v) { $0.copyBytes(from: bytes) }
        self = v
    }
}
