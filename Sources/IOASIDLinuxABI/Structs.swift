// Swift mirrors of the structures exchanged through `/dev/iommu`.
//
// Every `struct` below has exactly the C name and C field names of the Linux user API
// (include/uapi/linux/iommufd.h of Linux 7.2, the IOMMUFD_TEST header, and the VFIO type1
// container structures that iommufd's VFIO compatibility serves). Fields are declared in C
// order with their natural alignment, so the Swift layout (`MemoryLayout<T>.size` and every
// field offset) equals the C layout on the 64-bit Linux targets (x86_64, aarch64, ...).
// Fixed arrays are tuples; C unions are stored as raw bytes or as one stored field.
// Where C has implicit tail padding, an explicit `__pad` field makes the Swift size equal
// `sizeof`. Such padding fields have no C name and are not listed in `layoutFields`.

/// One field of a user-API structure: its C name, byte offset and byte size.
public struct UAPIField: Sendable, Equatable, CustomStringConvertible {
    /// The C field name; members of nested structures and of unions are dotted
    /// (`header.id`, `check_map.iova`).
    public let name: String
    /// The byte offset from the start of the enclosing top-level structure.
    public let offset: Int
    /// The size of the field in bytes (0 for a C flexible array member).
    public let size: Int

    public init(name: String, offset: Int, size: Int) {
        self.name = name
        self.offset = offset
        self.size = size
    }

    /// The offset just past the field (`offsetofend` in the kernel).
    public var end: Int { offset + size }

    public var description: String { "\(name)@\(offset)+\(size)" }
}

/// A structure of the Linux user API whose Swift layout equals the C layout.
public protocol UAPIStruct: BitwiseCopyable, Sendable {
    /// The C name of the structure (`"iommu_ioas_map"`).
    static var cName: String { get }
    /// Every C field with its offset and size, in declaration order.
    static var layoutFields: [UAPIField] { get }
    /// The all-zero value.
    init()
}

extension UAPIStruct {
    /// `sizeof` of the C structure.
    public static var byteSize: Int { MemoryLayout<Self>.size }

    /// The field named `name` (a C field name as listed in `layoutFields`).
    public static func layoutField(named name: String) -> UAPIField? {
        layoutFields.first { $0.name == name }
    }

    /// Describes the stored property at `path` under the C name `name`.
    static func uapiField<T>(_ name: String, _ path: KeyPath<Self, T>) -> UAPIField {
        UAPIField(name: name, offset: MemoryLayout<Self>.offset(of: path)!, size: MemoryLayout<T>.size)
    }

    /// Describes a C flexible array member, which starts right after the fixed part.
    static func uapiFlexibleArray(_ name: String) -> UAPIField {
        UAPIField(name: name, offset: MemoryLayout<Self>.size, size: 0)
    }

    /// The fields of a nested structure stored at `path`, renamed `prefix.field` and rebased.
    static func uapiNested<N: UAPIStruct>(_ prefix: String, _ path: KeyPath<Self, N>) -> [UAPIField] {
        let base = MemoryLayout<Self>.offset(of: path)!
        return N.layoutFields.map { UAPIField(name: prefix + "." + $0.name, offset: base + $0.offset, size: $0.size) }
    }
}

// MARK: - Constants

/// The named constants of the user API, with their C names.
///
/// Each constant has the Swift type of the field it is stored in or compared with
/// (`UInt32` for most flags and type codes, `UInt16` for the `op` fields, `UInt64` for
/// 64-bit flag words and addresses). The VFIO constants are in `IoctlNumbers.swift`.
public enum UAPI {
    // enum iommufd_ioas_map_flags (iommu_ioas_map.flags, iommu_ioas_map_file.flags)
    public static let IOMMU_IOAS_MAP_FIXED_IOVA: UInt32 = 1 << 0
    public static let IOMMU_IOAS_MAP_WRITEABLE: UInt32 = 1 << 1
    public static let IOMMU_IOAS_MAP_READABLE: UInt32 = 1 << 2

    // enum iommufd_option (iommu_option.option_id)
    public static let IOMMU_OPTION_RLIMIT_MODE: UInt32 = 0
    public static let IOMMU_OPTION_HUGE_PAGES: UInt32 = 1

    // enum iommufd_option_ops (iommu_option.op)
    public static let IOMMU_OPTION_OP_SET: UInt16 = 0
    public static let IOMMU_OPTION_OP_GET: UInt16 = 1

    // enum iommufd_vfio_ioas_op (iommu_vfio_ioas.op)
    public static let IOMMU_VFIO_IOAS_GET: UInt16 = 0
    public static let IOMMU_VFIO_IOAS_SET: UInt16 = 1
    public static let IOMMU_VFIO_IOAS_CLEAR: UInt16 = 2

    // enum iommufd_hwpt_alloc_flags (iommu_hwpt_alloc.flags)
    public static let IOMMU_HWPT_ALLOC_NEST_PARENT: UInt32 = 1 << 0
    public static let IOMMU_HWPT_ALLOC_DIRTY_TRACKING: UInt32 = 1 << 1
    public static let IOMMU_HWPT_FAULT_ID_VALID: UInt32 = 1 << 2
    public static let IOMMU_HWPT_ALLOC_PASID: UInt32 = 1 << 3

    // enum iommu_hwpt_vtd_s1_flags (iommu_hwpt_vtd_s1.flags, a 64-bit field)
    public static let IOMMU_VTD_S1_SRE: UInt64 = 1 << 0
    public static let IOMMU_VTD_S1_EAFE: UInt64 = 1 << 1
    public static let IOMMU_VTD_S1_WPE: UInt64 = 1 << 2

    // enum iommu_hwpt_data_type (iommu_hwpt_alloc.data_type)
    public static let IOMMU_HWPT_DATA_NONE: UInt32 = 0
    public static let IOMMU_HWPT_DATA_VTD_S1: UInt32 = 1
    public static let IOMMU_HWPT_DATA_ARM_SMMUV3: UInt32 = 2
    public static let IOMMU_HWPT_DATA_AMD_GUEST: UInt32 = 3

    // enum iommu_hw_info_vtd_flags (iommu_hw_info_vtd.flags)
    public static let IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: UInt32 = 1 << 0

    // enum iommu_hw_info_type (iommu_hw_info.in_data_type / out_data_type)
    public static let IOMMU_HW_INFO_TYPE_NONE: UInt32 = 0
    public static let IOMMU_HW_INFO_TYPE_DEFAULT: UInt32 = 0
    public static let IOMMU_HW_INFO_TYPE_INTEL_VTD: UInt32 = 1
    public static let IOMMU_HW_INFO_TYPE_ARM_SMMUV3: UInt32 = 2
    public static let IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: UInt32 = 3
    public static let IOMMU_HW_INFO_TYPE_AMD: UInt32 = 4

    // enum iommufd_hw_capabilities (iommu_hw_info.out_capabilities, a 64-bit field)
    public static let IOMMU_HW_CAP_DIRTY_TRACKING: UInt64 = 1 << 0
    public static let IOMMU_HW_CAP_PCI_PASID_EXEC: UInt64 = 1 << 1
    public static let IOMMU_HW_CAP_PCI_PASID_PRIV: UInt64 = 1 << 2
    public static let IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: UInt64 = 1 << 3

    // enum iommufd_hw_info_flags (iommu_hw_info.flags)
    public static let IOMMU_HW_INFO_FLAG_INPUT_TYPE: UInt32 = 1 << 0

    // enum iommufd_hwpt_set_dirty_tracking_flags (iommu_hwpt_set_dirty_tracking.flags)
    public static let IOMMU_HWPT_DIRTY_TRACKING_ENABLE: UInt32 = 1

    // enum iommufd_hwpt_get_dirty_bitmap_flags (iommu_hwpt_get_dirty_bitmap.flags)
    public static let IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: UInt32 = 1

    // enum iommu_hwpt_invalidate_data_type (iommu_hwpt_invalidate.data_type)
    public static let IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: UInt32 = 0
    public static let IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: UInt32 = 1

    // enum iommu_hwpt_vtd_s1_invalidate_flags (iommu_hwpt_vtd_s1_invalidate.flags)
    public static let IOMMU_VTD_INV_FLAGS_LEAF: UInt32 = 1 << 0

    // enum iommu_hwpt_pgfault_flags (iommu_hwpt_pgfault.flags)
    public static let IOMMU_PGFAULT_FLAGS_PASID_VALID: UInt32 = 1 << 0
    public static let IOMMU_PGFAULT_FLAGS_LAST_PAGE: UInt32 = 1 << 1

    // enum iommu_hwpt_pgfault_perm (iommu_hwpt_pgfault.perm)
    public static let IOMMU_PGFAULT_PERM_READ: UInt32 = 1 << 0
    public static let IOMMU_PGFAULT_PERM_WRITE: UInt32 = 1 << 1
    public static let IOMMU_PGFAULT_PERM_EXEC: UInt32 = 1 << 2
    public static let IOMMU_PGFAULT_PERM_PRIV: UInt32 = 1 << 3

    // enum iommufd_page_response_code (iommu_hwpt_page_response.code)
    public static let IOMMUFD_PAGE_RESP_SUCCESS: UInt32 = 0
    public static let IOMMUFD_PAGE_RESP_INVALID: UInt32 = 1

    // enum iommu_viommu_type (iommu_viommu_alloc.type)
    public static let IOMMU_VIOMMU_TYPE_DEFAULT: UInt32 = 0
    public static let IOMMU_VIOMMU_TYPE_ARM_SMMUV3: UInt32 = 1
    public static let IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: UInt32 = 2

    // enum iommu_veventq_flag (iommufd_vevent_header.flags)
    public static let IOMMU_VEVENTQ_FLAG_LOST_EVENTS: UInt32 = 1 << 0

    // enum iommu_veventq_type (iommu_veventq_alloc.type)
    public static let IOMMU_VEVENTQ_TYPE_DEFAULT: UInt32 = 0
    public static let IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: UInt32 = 1
    public static let IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV: UInt32 = 2

    // enum iommu_hw_queue_type (iommu_hw_queue_alloc.type)
    public static let IOMMU_HW_QUEUE_TYPE_DEFAULT: UInt32 = 0
    public static let IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV: UInt32 = 1

    // MARK: IOMMUFD_TEST (iommufd_test.h)

    // iommu_test_cmd.op
    public static let IOMMU_TEST_OP_ADD_RESERVED: UInt32 = 1
    public static let IOMMU_TEST_OP_MOCK_DOMAIN: UInt32 = 2
    public static let IOMMU_TEST_OP_MD_CHECK_MAP: UInt32 = 3
    public static let IOMMU_TEST_OP_MD_CHECK_REFS: UInt32 = 4
    public static let IOMMU_TEST_OP_CREATE_ACCESS: UInt32 = 5
    public static let IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: UInt32 = 6
    public static let IOMMU_TEST_OP_ACCESS_PAGES: UInt32 = 7
    public static let IOMMU_TEST_OP_ACCESS_RW: UInt32 = 8
    public static let IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: UInt32 = 9
    public static let IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: UInt32 = 10
    public static let IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: UInt32 = 11
    public static let IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: UInt32 = 12
    public static let IOMMU_TEST_OP_DIRTY: UInt32 = 13
    public static let IOMMU_TEST_OP_MD_CHECK_IOTLB: UInt32 = 14
    public static let IOMMU_TEST_OP_TRIGGER_IOPF: UInt32 = 15
    public static let IOMMU_TEST_OP_DEV_CHECK_CACHE: UInt32 = 16
    public static let IOMMU_TEST_OP_TRIGGER_VEVENT: UInt32 = 17
    public static let IOMMU_TEST_OP_PASID_ATTACH: UInt32 = 18
    public static let IOMMU_TEST_OP_PASID_REPLACE: UInt32 = 19
    public static let IOMMU_TEST_OP_PASID_DETACH: UInt32 = 20
    public static let IOMMU_TEST_OP_PASID_CHECK_HWPT: UInt32 = 21
    public static let IOMMU_TEST_OP_DMABUF_GET: UInt32 = 22
    public static let IOMMU_TEST_OP_DMABUF_REVOKE: UInt32 = 23

    // iommu_hwpt_selftest.pagetable_type
    public static let MOCK_IOMMUPT_DEFAULT: UInt32 = 0
    public static let MOCK_IOMMUPT_HUGE: UInt32 = 1

    // The mock domain geometry (for MOCK_IOMMUPT_DEFAULT); IOVAs and lengths are 64-bit.
    public static let MOCK_APERTURE_START: UInt64 = 1 << 24
    public static let MOCK_APERTURE_LAST: UInt64 = (1 << 31) - 1
    public static let MOCK_PAGE_SIZE: UInt64 = 2048
    public static let MOCK_HUGE_PAGE_SIZE: UInt64 = 512 * MOCK_PAGE_SIZE

    // iommu_test_cmd.create_access.flags
    public static let MOCK_FLAGS_ACCESS_WRITE: UInt32 = 1 << 0
    public static let MOCK_FLAGS_ACCESS_SYZ: UInt32 = 1 << 16

    // iommu_test_cmd.access_rw.flags
    public static let MOCK_ACCESS_RW_WRITE: UInt32 = 1 << 0
    public static let MOCK_ACCESS_RW_SLOW_PATH: UInt32 = 1 << 2

    // iommu_test_cmd.create_access.flags
    public static let MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES: UInt32 = 1 << 0

    // iommu_test_cmd.mock_domain_flags.dev_flags
    public static let MOCK_FLAGS_DEVICE_NO_DIRTY: UInt32 = 1 << 0
    public static let MOCK_FLAGS_DEVICE_PASID: UInt32 = 1 << 2

    // Mock nested domain IOTLB entries (iommu_test_cmd.check_iotlb.id)
    public static let MOCK_NESTED_DOMAIN_IOTLB_ID_MAX: UInt32 = 3
    public static let MOCK_NESTED_DOMAIN_IOTLB_NUM: UInt32 = 4

    // Mock device cache entries (iommu_test_cmd.check_dev_cache.id)
    public static let MOCK_DEV_CACHE_ID_MAX: UInt32 = 3
    public static let MOCK_DEV_CACHE_NUM: UInt32 = 4

    /// A PASID set aside for the PASID replace test.
    public static let IOMMU_TEST_PASID_RESERVED: UInt32 = 1024

    /// The PASID width, in bits, of the mock device and mock IOMMU.
    public static let MOCK_PASID_WIDTH: UInt32 = 20

    // The selftest hardware-info type and its register value (iommu_test_hw_info.test_reg)
    public static let IOMMU_HW_INFO_TYPE_SELFTEST: UInt32 = 0xfeed_beef
    public static let IOMMU_HW_INFO_SELFTEST_REGVAL: UInt32 = 0xdead_beef

    // iommu_hwpt_alloc.data_type for iommu_hwpt_selftest
    public static let IOMMU_HWPT_DATA_SELFTEST: UInt32 = 0xdead
    public static let IOMMU_TEST_IOTLB_DEFAULT: UInt32 = 0xbad_beef
    public static let IOMMU_TEST_DEV_CACHE_DEFAULT: UInt32 = 0xba_ddad

    // iommu_hwpt_invalidate.data_type for iommu_hwpt_invalidate_selftest
    public static let IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: UInt32 = 0xdead_beef
    public static let IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID: UInt32 = 0xdad_beef

    // iommu_hwpt_invalidate_selftest.flags, iommu_viommu_invalidate_selftest.flags
    public static let IOMMU_TEST_INVALIDATE_FLAG_ALL: UInt32 = 1 << 0

    // iommu_viommu_alloc.type for iommu_viommu_selftest
    public static let IOMMU_VIOMMU_TYPE_SELFTEST: UInt32 = 0xdead_beef

    // iommu_hwpt_invalidate.data_type (on a vIOMMU) for iommu_viommu_invalidate_selftest
    public static let IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST: UInt32 = 0xdead_beef
    public static let IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID: UInt32 = 0xdad_beef

    // iommu_veventq_alloc.type for iommu_viommu_event_selftest
    public static let IOMMU_VEVENTQ_TYPE_SELFTEST: UInt32 = 0xbeef_beef

    // iommu_hw_queue_alloc.type and index limit of the mock hardware queue
    public static let IOMMU_HW_QUEUE_TYPE_SELFTEST: UInt32 = 0xdead_beef
    public static let IOMMU_TEST_HW_QUEUE_MAX: UInt32 = 2

    /// Every top-level user-API structure declared in this module.
    public static let structTypes: [any UAPIStruct.Type] = [
        iommu_destroy.self,
        iommu_ioas_alloc.self,
        iommu_iova_range.self,
        iommu_ioas_iova_ranges.self,
        iommu_ioas_allow_iovas.self,
        iommu_ioas_map.self,
        iommu_ioas_map_file.self,
        iommu_ioas_copy.self,
        iommu_ioas_unmap.self,
        iommu_option.self,
        iommu_vfio_ioas.self,
        iommu_hwpt_vtd_s1.self,
        iommu_hwpt_arm_smmuv3.self,
        iommu_hwpt_amd_guest.self,
        iommu_hwpt_alloc.self,
        iommu_hw_info_vtd.self,
        iommu_hw_info_arm_smmuv3.self,
        iommu_hw_info_tegra241_cmdqv.self,
        iommu_hw_info_amd.self,
        iommu_hw_info.self,
        iommu_hwpt_set_dirty_tracking.self,
        iommu_hwpt_get_dirty_bitmap.self,
        iommu_hwpt_vtd_s1_invalidate.self,
        iommu_viommu_arm_smmuv3_invalidate.self,
        iommu_hwpt_invalidate.self,
        iommu_hwpt_pgfault.self,
        iommu_hwpt_page_response.self,
        iommu_fault_alloc.self,
        iommu_viommu_tegra241_cmdqv.self,
        iommu_viommu_alloc.self,
        iommu_vdevice_alloc.self,
        iommu_ioas_change_process.self,
        iommufd_vevent_header.self,
        iommu_vevent_arm_smmuv3.self,
        iommu_vevent_tegra241_cmdqv.self,
        iommu_veventq_alloc.self,
        iommu_hw_queue_alloc.self,
        iommu_test_cmd.self,
        iommu_test_hw_info.self,
        iommu_hwpt_selftest.self,
        iommu_hwpt_invalidate_selftest.self,
        iommu_viommu_selftest.self,
        iommu_viommu_invalidate_selftest.self,
        iommu_viommu_event_selftest.self,
        vfio_info_cap_header.self,
        vfio_iommu_type1_info.self,
        vfio_iova_range.self,
        vfio_iommu_type1_info_cap_iova_range.self,
        vfio_iommu_type1_info_dma_avail.self,
        vfio_iommu_type1_dma_map.self,
        vfio_iommu_type1_dma_unmap.self,
        vfio_device_bind_iommufd.self,
        vfio_device_attach_iommufd_pt.self,
        vfio_device_detach_iommufd_pt.self,
    ]
}

// MARK: - iommufd.h

/// Names an object to destroy. The corresponding ioctl is `IOMMU_DESTROY`.
public struct iommu_destroy: UAPIStruct {
    public var size: UInt32 = 0
    public var id: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_destroy" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("id", \.id),
    ]
}

/// Requests a new IOAS and returns its ID. The corresponding ioctl is `IOMMU_IOAS_ALLOC`.
public struct iommu_ioas_alloc: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var out_ioas_id: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_ioas_alloc" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("out_ioas_id", \.out_ioas_id),
    ]
}

/// One inclusive IOVA range [start, last], the element of a user array.
/// The corresponding ioctls are `IOMMU_IOAS_IOVA_RANGES` and `IOMMU_IOAS_ALLOW_IOVAS`.
public struct iommu_iova_range: UAPIStruct {
    public var start: UInt64 = 0
    public var last: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_iova_range" }
    public static let layoutFields: [UAPIField] = [
        uapiField("start", \.start),
        uapiField("last", \.last),
    ]
}

/// Reports the usable IOVA ranges of an IOAS into a user array and the required alignment.
/// The corresponding ioctl is `IOMMU_IOAS_IOVA_RANGES`.
public struct iommu_ioas_iova_ranges: UAPIStruct {
    public var size: UInt32 = 0
    public var ioas_id: UInt32 = 0
    public var num_iovas: UInt32 = 0
    public var __reserved: UInt32 = 0
    /// User pointer to an array of `iommu_iova_range`.
    public var allowed_iovas: UInt64 = 0
    public var out_iova_alignment: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_ioas_iova_ranges" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("ioas_id", \.ioas_id),
        uapiField("num_iovas", \.num_iovas),
        uapiField("__reserved", \.__reserved),
        uapiField("allowed_iovas", \.allowed_iovas),
        uapiField("out_iova_alignment", \.out_iova_alignment),
    ]
}

/// Restricts automatic IOVA allocation of an IOAS to a user array of ranges.
/// The corresponding ioctl is `IOMMU_IOAS_ALLOW_IOVAS`.
public struct iommu_ioas_allow_iovas: UAPIStruct {
    public var size: UInt32 = 0
    public var ioas_id: UInt32 = 0
    public var num_iovas: UInt32 = 0
    public var __reserved: UInt32 = 0
    /// User pointer to an array of `iommu_iova_range`.
    public var allowed_iovas: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_ioas_allow_iovas" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("ioas_id", \.ioas_id),
        uapiField("num_iovas", \.num_iovas),
        uapiField("__reserved", \.__reserved),
        uapiField("allowed_iovas", \.allowed_iovas),
    ]
}

/// Maps a range of user memory into an IOAS at a fixed or allocated IOVA.
/// The corresponding ioctl is `IOMMU_IOAS_MAP`.
public struct iommu_ioas_map: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var ioas_id: UInt32 = 0
    public var __reserved: UInt32 = 0
    public var user_va: UInt64 = 0
    public var length: UInt64 = 0
    public var iova: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_ioas_map" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("ioas_id", \.ioas_id),
        uapiField("__reserved", \.__reserved),
        uapiField("user_va", \.user_va),
        uapiField("length", \.length),
        uapiField("iova", \.iova),
    ]
}

/// Maps a range of a file (memfd) into an IOAS at a fixed or allocated IOVA.
/// The corresponding ioctl is `IOMMU_IOAS_MAP_FILE`.
public struct iommu_ioas_map_file: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var ioas_id: UInt32 = 0
    public var fd: Int32 = 0
    public var start: UInt64 = 0
    public var length: UInt64 = 0
    public var iova: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_ioas_map_file" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("ioas_id", \.ioas_id),
        uapiField("fd", \.fd),
        uapiField("start", \.start),
        uapiField("length", \.length),
        uapiField("iova", \.iova),
    ]
}

/// Copies the mappings of an IOVA range of one IOAS into another IOAS.
/// The corresponding ioctl is `IOMMU_IOAS_COPY`.
public struct iommu_ioas_copy: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var dst_ioas_id: UInt32 = 0
    public var src_ioas_id: UInt32 = 0
    public var length: UInt64 = 0
    public var dst_iova: UInt64 = 0
    public var src_iova: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_ioas_copy" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("dst_ioas_id", \.dst_ioas_id),
        uapiField("src_ioas_id", \.src_ioas_id),
        uapiField("length", \.length),
        uapiField("dst_iova", \.dst_iova),
        uapiField("src_iova", \.src_iova),
    ]
}

/// Unmaps an IOVA range (or everything) from an IOAS and returns the length unmapped.
/// The corresponding ioctl is `IOMMU_IOAS_UNMAP`.
public struct iommu_ioas_unmap: UAPIStruct {
    public var size: UInt32 = 0
    public var ioas_id: UInt32 = 0
    public var iova: UInt64 = 0
    public var length: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_ioas_unmap" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("ioas_id", \.ioas_id),
        uapiField("iova", \.iova),
        uapiField("length", \.length),
    ]
}

/// Sets or gets a context-wide or per-object option value.
/// The corresponding ioctl is `IOMMU_OPTION`.
public struct iommu_option: UAPIStruct {
    public var size: UInt32 = 0
    public var option_id: UInt32 = 0
    public var op: UInt16 = 0
    public var __reserved: UInt16 = 0
    public var object_id: UInt32 = 0
    public var val64: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_option" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("option_id", \.option_id),
        uapiField("op", \.op),
        uapiField("__reserved", \.__reserved),
        uapiField("object_id", \.object_id),
        uapiField("val64", \.val64),
    ]
}

/// Gets, sets or clears the IOAS that the VFIO container compatibility uses.
/// The corresponding ioctl is `IOMMU_VFIO_IOAS`.
public struct iommu_vfio_ioas: UAPIStruct {
    public var size: UInt32 = 0
    public var ioas_id: UInt32 = 0
    public var op: UInt16 = 0
    public var __reserved: UInt16 = 0

    public init() {}
    public static var cName: String { "iommu_vfio_ioas" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("ioas_id", \.ioas_id),
        uapiField("op", \.op),
        uapiField("__reserved", \.__reserved),
    ]
}

/// Intel VT-d stage-1 page table description (`IOMMU_HWPT_DATA_VTD_S1`).
/// The corresponding ioctl is `IOMMU_HWPT_ALLOC`.
public struct iommu_hwpt_vtd_s1: UAPIStruct {
    public var flags: UInt64 = 0
    public var pgtbl_addr: UInt64 = 0
    public var addr_width: UInt32 = 0
    public var __reserved: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_hwpt_vtd_s1" }
    public static let layoutFields: [UAPIField] = [
        uapiField("flags", \.flags),
        uapiField("pgtbl_addr", \.pgtbl_addr),
        uapiField("addr_width", \.addr_width),
        uapiField("__reserved", \.__reserved),
    ]
}

/// ARM SMMUv3 nested stream table entry, little-endian words (`IOMMU_HWPT_DATA_ARM_SMMUV3`).
/// The corresponding ioctl is `IOMMU_HWPT_ALLOC`.
public struct iommu_hwpt_arm_smmuv3: UAPIStruct {
    public var ste: (UInt64, UInt64) = (0, 0)

    public init() {}
    public static var cName: String { "iommu_hwpt_arm_smmuv3" }
    public static let layoutFields: [UAPIField] = [
        uapiField("ste", \.ste),
    ]
}

/// AMD guest device table entry (`IOMMU_HWPT_DATA_AMD_GUEST`).
/// The corresponding ioctl is `IOMMU_HWPT_ALLOC`.
public struct iommu_hwpt_amd_guest: UAPIStruct {
    public var dte: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public init() {}
    public static var cName: String { "iommu_hwpt_amd_guest" }
    public static let layoutFields: [UAPIField] = [
        uapiField("dte", \.dte),
    ]
}

/// Requests a hardware page table (paging or nested) for a device and returns its ID.
/// The corresponding ioctl is `IOMMU_HWPT_ALLOC`.
public struct iommu_hwpt_alloc: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var dev_id: UInt32 = 0
    public var pt_id: UInt32 = 0
    public var out_hwpt_id: UInt32 = 0
    public var __reserved: UInt32 = 0
    public var data_type: UInt32 = 0
    public var data_len: UInt32 = 0
    public var data_uptr: UInt64 = 0
    public var fault_id: UInt32 = 0
    public var __reserved2: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_hwpt_alloc" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("dev_id", \.dev_id),
        uapiField("pt_id", \.pt_id),
        uapiField("out_hwpt_id", \.out_hwpt_id),
        uapiField("__reserved", \.__reserved),
        uapiField("data_type", \.data_type),
        uapiField("data_len", \.data_len),
        uapiField("data_uptr", \.data_uptr),
        uapiField("fault_id", \.fault_id),
        uapiField("__reserved2", \.__reserved2),
    ]
}

/// Intel VT-d hardware information (`IOMMU_HW_INFO_TYPE_INTEL_VTD`).
/// The corresponding ioctl is `IOMMU_GET_HW_INFO`.
public struct iommu_hw_info_vtd: UAPIStruct {
    public var flags: UInt32 = 0
    public var __reserved: UInt32 = 0
    public var cap_reg: UInt64 = 0
    public var ecap_reg: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_hw_info_vtd" }
    public static let layoutFields: [UAPIField] = [
        uapiField("flags", \.flags),
        uapiField("__reserved", \.__reserved),
        uapiField("cap_reg", \.cap_reg),
        uapiField("ecap_reg", \.ecap_reg),
    ]
}

/// ARM SMMUv3 ID registers (`IOMMU_HW_INFO_TYPE_ARM_SMMUV3`).
/// The corresponding ioctl is `IOMMU_GET_HW_INFO`.
public struct iommu_hw_info_arm_smmuv3: UAPIStruct {
    public var flags: UInt32 = 0
    public var __reserved: UInt32 = 0
    public var idr: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0, 0, 0)
    public var iidr: UInt32 = 0
    public var aidr: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_hw_info_arm_smmuv3" }
    public static let layoutFields: [UAPIField] = [
        uapiField("flags", \.flags),
        uapiField("__reserved", \.__reserved),
        uapiField("idr", \.idr),
        uapiField("iidr", \.iidr),
        uapiField("aidr", \.aidr),
    ]
}

/// NVIDIA Tegra241 CMDQV hardware information (`IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV`).
/// The corresponding ioctl is `IOMMU_GET_HW_INFO`.
public struct iommu_hw_info_tegra241_cmdqv: UAPIStruct {
    public var flags: UInt32 = 0
    public var version: UInt8 = 0
    public var log2vcmdqs: UInt8 = 0
    public var log2vsids: UInt8 = 0
    public var __reserved: UInt8 = 0

    public init() {}
    public static var cName: String { "iommu_hw_info_tegra241_cmdqv" }
    public static let layoutFields: [UAPIField] = [
        uapiField("flags", \.flags),
        uapiField("version", \.version),
        uapiField("log2vcmdqs", \.log2vcmdqs),
        uapiField("log2vsids", \.log2vsids),
        uapiField("__reserved", \.__reserved),
    ]
}

/// AMD IOMMU extended feature registers (`IOMMU_HW_INFO_TYPE_AMD`).
/// The corresponding ioctl is `IOMMU_GET_HW_INFO`.
public struct iommu_hw_info_amd: UAPIStruct {
    public var efr: UInt64 = 0
    public var efr2: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_hw_info_amd" }
    public static let layoutFields: [UAPIField] = [
        uapiField("efr", \.efr),
        uapiField("efr2", \.efr2),
    ]
}

/// Queries a device's IOMMU: driver-specific data into a user buffer, PASID width and
/// capability bits. The corresponding ioctl is `IOMMU_GET_HW_INFO`.
///
/// C declares `in_data_type` and `out_data_type` as an anonymous union of two `__u32`;
/// here they are one stored `data_type` with both C names as computed properties.
public struct iommu_hw_info: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var dev_id: UInt32 = 0
    public var data_len: UInt32 = 0
    public var data_uptr: UInt64 = 0
    /// The storage of the C union { in_data_type; out_data_type; }.
    public var data_type: UInt32 = 0
    public var out_max_pasid_log2: UInt8 = 0
    public var __reserved: (UInt8, UInt8, UInt8) = (0, 0, 0)
    public var out_capabilities: UInt64 = 0

    /// The requested data type (valid with `IOMMU_HW_INFO_FLAG_INPUT_TYPE`).
    public var in_data_type: UInt32 {
        get { data_type }
        set { data_type = newValue }
    }

    /// The data type reported back.
    public var out_data_type: UInt32 {
        get { data_type }
        set { data_type = newValue }
    }

    public init() {}
    public static var cName: String { "iommu_hw_info" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("dev_id", \.dev_id),
        uapiField("data_len", \.data_len),
        uapiField("data_uptr", \.data_uptr),
        uapiField("in_data_type", \.data_type),
        uapiField("out_data_type", \.data_type),
        uapiField("out_max_pasid_log2", \.out_max_pasid_log2),
        uapiField("__reserved", \.__reserved),
        uapiField("out_capabilities", \.out_capabilities),
    ]
}

/// Enables or disables dirty tracking on a hardware page table.
/// The corresponding ioctl is `IOMMU_HWPT_SET_DIRTY_TRACKING`.
public struct iommu_hwpt_set_dirty_tracking: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var hwpt_id: UInt32 = 0
    public var __reserved: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_hwpt_set_dirty_tracking" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("hwpt_id", \.hwpt_id),
        uapiField("__reserved", \.__reserved),
    ]
}

/// Reads (and by default clears) the dirty bits of an IOVA range into a user bitmap.
/// The corresponding ioctl is `IOMMU_HWPT_GET_DIRTY_BITMAP`.
public struct iommu_hwpt_get_dirty_bitmap: UAPIStruct {
    public var size: UInt32 = 0
    public var hwpt_id: UInt32 = 0
    public var flags: UInt32 = 0
    public var __reserved: UInt32 = 0
    public var iova: UInt64 = 0
    public var length: UInt64 = 0
    public var page_size: UInt64 = 0
    /// User pointer to the bitmap, one bit per `page_size`.
    public var data: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_hwpt_get_dirty_bitmap" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("hwpt_id", \.hwpt_id),
        uapiField("flags", \.flags),
        uapiField("__reserved", \.__reserved),
        uapiField("iova", \.iova),
        uapiField("length", \.length),
        uapiField("page_size", \.page_size),
        uapiField("data", \.data),
    ]
}

/// One Intel VT-d stage-1 invalidation request (`IOMMU_HWPT_INVALIDATE_DATA_VTD_S1`).
/// The corresponding ioctl is `IOMMU_HWPT_INVALIDATE`.
public struct iommu_hwpt_vtd_s1_invalidate: UAPIStruct {
    public var addr: UInt64 = 0
    public var npages: UInt64 = 0
    public var flags: UInt32 = 0
    public var __reserved: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_hwpt_vtd_s1_invalidate" }
    public static let layoutFields: [UAPIField] = [
        uapiField("addr", \.addr),
        uapiField("npages", \.npages),
        uapiField("flags", \.flags),
        uapiField("__reserved", \.__reserved),
    ]
}

/// One ARM SMMUv3 command, little-endian words (`IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3`).
/// The corresponding ioctl is `IOMMU_HWPT_INVALIDATE`.
public struct iommu_viommu_arm_smmuv3_invalidate: UAPIStruct {
    public var cmd: (UInt64, UInt64) = (0, 0)

    public init() {}
    public static var cName: String { "iommu_viommu_arm_smmuv3_invalidate" }
    public static let layoutFields: [UAPIField] = [
        uapiField("cmd", \.cmd),
    ]
}

/// Passes a user array of driver-specific invalidation entries to a HWPT or vIOMMU and
/// returns how many were handled. The corresponding ioctl is `IOMMU_HWPT_INVALIDATE`.
public struct iommu_hwpt_invalidate: UAPIStruct {
    public var size: UInt32 = 0
    public var hwpt_id: UInt32 = 0
    public var data_uptr: UInt64 = 0
    public var data_type: UInt32 = 0
    public var entry_len: UInt32 = 0
    public var entry_num: UInt32 = 0
    public var __reserved: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_hwpt_invalidate" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("hwpt_id", \.hwpt_id),
        uapiField("data_uptr", \.data_uptr),
        uapiField("data_type", \.data_type),
        uapiField("entry_len", \.entry_len),
        uapiField("entry_num", \.entry_num),
        uapiField("__reserved", \.__reserved),
    ]
}

/// One I/O page fault group entry, read from a fault queue file.
/// The corresponding ioctl is `IOMMU_FAULT_QUEUE_ALLOC` (which creates the file).
public struct iommu_hwpt_pgfault: UAPIStruct {
    public var flags: UInt32 = 0
    public var dev_id: UInt32 = 0
    public var pasid: UInt32 = 0
    public var grpid: UInt32 = 0
    public var perm: UInt32 = 0
    public var __reserved: UInt32 = 0
    public var addr: UInt64 = 0
    public var length: UInt32 = 0
    public var cookie: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_hwpt_pgfault" }
    public static let layoutFields: [UAPIField] = [
        uapiField("flags", \.flags),
        uapiField("dev_id", \.dev_id),
        uapiField("pasid", \.pasid),
        uapiField("grpid", \.grpid),
        uapiField("perm", \.perm),
        uapiField("__reserved", \.__reserved),
        uapiField("addr", \.addr),
        uapiField("length", \.length),
        uapiField("cookie", \.cookie),
    ]
}

/// One page fault response, written to a fault queue file.
/// The corresponding ioctl is `IOMMU_FAULT_QUEUE_ALLOC` (which creates the file).
public struct iommu_hwpt_page_response: UAPIStruct {
    public var cookie: UInt32 = 0
    public var code: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_hwpt_page_response" }
    public static let layoutFields: [UAPIField] = [
        uapiField("cookie", \.cookie),
        uapiField("code", \.code),
    ]
}

/// Requests a fault queue object and returns its ID and file descriptor.
/// The corresponding ioctl is `IOMMU_FAULT_QUEUE_ALLOC`.
public struct iommu_fault_alloc: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var out_fault_id: UInt32 = 0
    public var out_fault_fd: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_fault_alloc" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("out_fault_id", \.out_fault_id),
        uapiField("out_fault_fd", \.out_fault_fd),
    ]
}

/// NVIDIA Tegra241 CMDQV vIOMMU data: the mmap window of its VINTF page
/// (`IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV`). The corresponding ioctl is `IOMMU_VIOMMU_ALLOC`.
public struct iommu_viommu_tegra241_cmdqv: UAPIStruct {
    public var out_vintf_mmap_offset: UInt64 = 0
    public var out_vintf_mmap_length: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_viommu_tegra241_cmdqv" }
    public static let layoutFields: [UAPIField] = [
        uapiField("out_vintf_mmap_offset", \.out_vintf_mmap_offset),
        uapiField("out_vintf_mmap_length", \.out_vintf_mmap_length),
    ]
}

/// Requests a virtual IOMMU on top of a nesting parent HWPT and returns its ID.
/// The corresponding ioctl is `IOMMU_VIOMMU_ALLOC`.
public struct iommu_viommu_alloc: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var type: UInt32 = 0
    public var dev_id: UInt32 = 0
    public var hwpt_id: UInt32 = 0
    public var out_viommu_id: UInt32 = 0
    public var data_len: UInt32 = 0
    public var __reserved: UInt32 = 0
    public var data_uptr: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_viommu_alloc" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("type", \.type),
        uapiField("dev_id", \.dev_id),
        uapiField("hwpt_id", \.hwpt_id),
        uapiField("out_viommu_id", \.out_viommu_id),
        uapiField("data_len", \.data_len),
        uapiField("__reserved", \.__reserved),
        uapiField("data_uptr", \.data_uptr),
    ]
}

/// Binds a device to a vIOMMU under a virtual ID and returns the vDEVICE ID.
/// The corresponding ioctl is `IOMMU_VDEVICE_ALLOC`.
public struct iommu_vdevice_alloc: UAPIStruct {
    public var size: UInt32 = 0
    public var viommu_id: UInt32 = 0
    public var dev_id: UInt32 = 0
    public var out_vdevice_id: UInt32 = 0
    public var virt_id: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_vdevice_alloc" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("viommu_id", \.viommu_id),
        uapiField("dev_id", \.dev_id),
        uapiField("out_vdevice_id", \.out_vdevice_id),
        uapiField("virt_id", \.virt_id),
    ]
}

/// Moves the pinned-page accounting of all file mappings to the calling process.
/// The corresponding ioctl is `IOMMU_IOAS_CHANGE_PROCESS`.
public struct iommu_ioas_change_process: UAPIStruct {
    public var size: UInt32 = 0
    public var __reserved: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_ioas_change_process" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("__reserved", \.__reserved),
    ]
}

/// The header before each event read from a vEVENT queue file.
/// The corresponding ioctl is `IOMMU_VEVENTQ_ALLOC` (which creates the file).
public struct iommufd_vevent_header: UAPIStruct {
    public var flags: UInt32 = 0
    public var sequence: UInt32 = 0

    public init() {}
    public static var cName: String { "iommufd_vevent_header" }
    public static let layoutFields: [UAPIField] = [
        uapiField("flags", \.flags),
        uapiField("sequence", \.sequence),
    ]
}

/// One ARM SMMUv3 event record, little-endian words (`IOMMU_VEVENTQ_TYPE_ARM_SMMUV3`).
/// The corresponding ioctl is `IOMMU_VEVENTQ_ALLOC` (which creates the file).
public struct iommu_vevent_arm_smmuv3: UAPIStruct {
    public var evt: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public init() {}
    public static var cName: String { "iommu_vevent_arm_smmuv3" }
    public static let layoutFields: [UAPIField] = [
        uapiField("evt", \.evt),
    ]
}

/// One Tegra241 CMDQV error map, little-endian words (`IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV`).
/// The corresponding ioctl is `IOMMU_VEVENTQ_ALLOC` (which creates the file).
public struct iommu_vevent_tegra241_cmdqv: UAPIStruct {
    public var lvcmdq_err_map: (UInt64, UInt64) = (0, 0)

    public init() {}
    public static var cName: String { "iommu_vevent_tegra241_cmdqv" }
    public static let layoutFields: [UAPIField] = [
        uapiField("lvcmdq_err_map", \.lvcmdq_err_map),
    ]
}

/// Requests a vEVENT queue on a vIOMMU and returns its ID and file descriptor.
/// The corresponding ioctl is `IOMMU_VEVENTQ_ALLOC`.
public struct iommu_veventq_alloc: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var viommu_id: UInt32 = 0
    public var type: UInt32 = 0
    public var veventq_depth: UInt32 = 0
    public var out_veventq_id: UInt32 = 0
    public var out_veventq_fd: UInt32 = 0
    public var __reserved: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_veventq_alloc" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("viommu_id", \.viommu_id),
        uapiField("type", \.type),
        uapiField("veventq_depth", \.veventq_depth),
        uapiField("out_veventq_id", \.out_veventq_id),
        uapiField("out_veventq_fd", \.out_veventq_fd),
        uapiField("__reserved", \.__reserved),
    ]
}

/// Requests a hardware-accelerated queue of a vIOMMU backed by guest memory and returns
/// its ID. The corresponding ioctl is `IOMMU_HW_QUEUE_ALLOC`.
public struct iommu_hw_queue_alloc: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var viommu_id: UInt32 = 0
    public var type: UInt32 = 0
    public var index: UInt32 = 0
    public var out_hw_queue_id: UInt32 = 0
    public var nesting_parent_iova: UInt64 = 0
    public var length: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_hw_queue_alloc" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size),
        uapiField("flags", \.flags),
        uapiField("viommu_id", \.viommu_id),
        uapiField("type", \.type),
        uapiField("index", \.index),
        uapiField("out_hw_queue_id", \.out_hw_queue_id),
        uapiField("nesting_parent_iova", \.nesting_parent_iova),
        uapiField("length", \.length),
    ]
}

// MARK: - iommufd_test.h

/// One IOMMUFD_TEST operation (`op`) with its operation-specific arguments.
/// The corresponding ioctl is `IOMMU_TEST_CMD`.
///
/// C puts the per-operation arguments in an anonymous union of 48 bytes, 8-byte aligned, at
/// offset 16. Here the union is stored as raw bytes (`__union`, six `UInt64`) and each union
/// member is a nested struct read and written through a computed property of the C member
/// name (`cmd.check_map.iova = ...`). Writing a member stores only that member's bytes, as
/// assigning a union member does in C. C's `sizeof` is 72: `last` ends at 68 and 4 bytes of
/// implicit tail padding follow, made explicit as `__pad`.
public struct iommu_test_cmd: UAPIStruct {
    public var size: UInt32 = 0
    public var op: UInt32 = 0
    public var id: UInt32 = 0
    public var __reserved: UInt32 = 0
    /// The raw bytes of the anonymous union; use the member accessors below.
    public var __union: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0)
    public var last: UInt32 = 0
    /// Explicit form of C's implicit tail padding (not a C field).
    public var __pad: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_test_cmd" }

    /// The byte offset of the union within the structure.
    public static var unionOffset: Int { MemoryLayout<Self>.offset(of: \.__union)! }
    /// The byte size of the union (the size of its largest member).
    public static var unionSize: Int { MemoryLayout<(UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)>.size }

    /// The union members as (C member name, Swift type), in C declaration order.
    public static let unionMembers: [(name: String, type: any UAPIStruct.Type)] = [
        ("add_reserved", AddReserved.self),
        ("mock_domain", MockDomain.self),
        ("mock_domain_flags", MockDomainFlags.self),
        ("mock_domain_replace", MockDomainReplace.self),
        ("check_map", CheckMap.self),
        ("check_refs", CheckRefs.self),
        ("create_access", CreateAccess.self),
        ("destroy_access_pages", DestroyAccessPages.self),
        ("access_pages", AccessPages.self),
        ("access_rw", AccessRW.self),
        ("memory_limit", MemoryLimit.self),
        ("access_replace_ioas", AccessReplaceIOAS.self),
        ("dirty", Dirty.self),
        ("check_iotlb", CheckIOTLB.self),
        ("trigger_iopf", TriggerIOPF.self),
        ("check_dev_cache", CheckDevCache.self),
        ("trigger_vevent", TriggerVEvent.self),
        ("pasid_attach", PASIDAttach.self),
        ("pasid_replace", PASIDReplace.self),
        ("pasid_detach", PASIDDetach.self),
        ("pasid_check", PASIDCheck.self),
        ("dmabuf_get", DMABufGet.self),
        ("dmabuf_revoke", DMABufRevoke.self),
    ]

    /// The fixed fields; then each union member as a whole (`check_map`, at the union's
    /// offset, with C's `sizeof` of the member) followed by its fields as `check_map.iova` at
    /// their absolute offsets within `iommu_test_cmd`; then `last`.
    public static let layoutFields: [UAPIField] = {
        var fields = [
            uapiField("size", \.size),
            uapiField("op", \.op),
            uapiField("id", \.id),
            uapiField("__reserved", \.__reserved),
        ]
        let base = MemoryLayout<Self>.offset(of: \.__union)!
        for member in unionMembers {
            fields.append(UAPIField(name: member.name, offset: base, size: member.type.byteSize))
            for field in member.type.layoutFields {
                fields.append(UAPIField(name: member.name + "." + field.name, offset: base + field.offset, size: field.size))
            }
        }
        fields.append(uapiField("last", \.last))
        return fields
    }()

    private func loadUnion<T: UAPIStruct>(_: T.Type) -> T {
        precondition(MemoryLayout<T>.size <= Self.unionSize)
        return withUnsafeBytes(of: __union) { $0.load(as: T.self) }
    }

    private mutating func storeUnion<T: UAPIStruct>(_ value: T) {
        precondition(MemoryLayout<T>.size <= Self.unionSize)
        withUnsafeMutableBytes(of: &__union) { $0.storeBytes(of: value, as: T.self) }
    }

    /// Union member for `IOMMU_TEST_OP_ADD_RESERVED`.
    public var add_reserved: AddReserved {
        get { loadUnion(AddReserved.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_MOCK_DOMAIN`.
    public var mock_domain: MockDomain {
        get { loadUnion(MockDomain.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS`.
    public var mock_domain_flags: MockDomainFlags {
        get { loadUnion(MockDomainFlags.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`.
    public var mock_domain_replace: MockDomainReplace {
        get { loadUnion(MockDomainReplace.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_MD_CHECK_MAP`.
    public var check_map: CheckMap {
        get { loadUnion(CheckMap.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_MD_CHECK_REFS`.
    public var check_refs: CheckRefs {
        get { loadUnion(CheckRefs.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_CREATE_ACCESS`.
    public var create_access: CreateAccess {
        get { loadUnion(CreateAccess.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_DESTROY_ACCESS_PAGES`.
    public var destroy_access_pages: DestroyAccessPages {
        get { loadUnion(DestroyAccessPages.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_ACCESS_PAGES`.
    public var access_pages: AccessPages {
        get { loadUnion(AccessPages.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_ACCESS_RW`.
    public var access_rw: AccessRW {
        get { loadUnion(AccessRW.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT`.
    public var memory_limit: MemoryLimit {
        get { loadUnion(MemoryLimit.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_ACCESS_REPLACE_IOAS`.
    public var access_replace_ioas: AccessReplaceIOAS {
        get { loadUnion(AccessReplaceIOAS.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_DIRTY`.
    public var dirty: Dirty {
        get { loadUnion(Dirty.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_MD_CHECK_IOTLB`.
    public var check_iotlb: CheckIOTLB {
        get { loadUnion(CheckIOTLB.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_TRIGGER_IOPF`.
    public var trigger_iopf: TriggerIOPF {
        get { loadUnion(TriggerIOPF.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_DEV_CHECK_CACHE`.
    public var check_dev_cache: CheckDevCache {
        get { loadUnion(CheckDevCache.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_TRIGGER_VEVENT`.
    public var trigger_vevent: TriggerVEvent {
        get { loadUnion(TriggerVEvent.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_PASID_ATTACH` (`id` is the mock device ID).
    public var pasid_attach: PASIDAttach {
        get { loadUnion(PASIDAttach.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_PASID_REPLACE` (`id` is the mock device ID).
    public var pasid_replace: PASIDReplace {
        get { loadUnion(PASIDReplace.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_PASID_DETACH` (`id` is the mock device ID).
    public var pasid_detach: PASIDDetach {
        get { loadUnion(PASIDDetach.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_PASID_CHECK_HWPT` (`id` is the mock device ID).
    public var pasid_check: PASIDCheck {
        get { loadUnion(PASIDCheck.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_DMABUF_GET`.
    public var dmabuf_get: DMABufGet {
        get { loadUnion(DMABufGet.self) }
        set { storeUnion(newValue) }
    }
    /// Union member for `IOMMU_TEST_OP_DMABUF_REVOKE`.
    public var dmabuf_revoke: DMABufRevoke {
        get { loadUnion(DMABufRevoke.self) }
        set { storeUnion(newValue) }
    }

    // The union members. Their `layoutFields` offsets are relative to the union's start.

    /// Reserves an IOVA range in the IOAS `id`.
    public struct AddReserved: UAPIStruct {
        public var start: UInt64 = 0
        public var length: UInt64 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.add_reserved" }
        public static let layoutFields: [UAPIField] = [
            uapiField("start", \.start),
            uapiField("length", \.length),
        ]
    }

    /// Creates a mock device attached to the IOAS or HWPT `id`; returns its IDs.
    public struct MockDomain: UAPIStruct {
        public var out_stdev_id: UInt32 = 0
        public var out_hwpt_id: UInt32 = 0
        public var out_idev_id: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.mock_domain" }
        public static let layoutFields: [UAPIField] = [
            uapiField("out_stdev_id", \.out_stdev_id),
            uapiField("out_hwpt_id", \.out_hwpt_id),
            uapiField("out_idev_id", \.out_idev_id),
        ]
    }

    /// `MockDomain` with mock device flags (`MOCK_FLAGS_DEVICE_*`).
    public struct MockDomainFlags: UAPIStruct {
        public var out_stdev_id: UInt32 = 0
        public var out_hwpt_id: UInt32 = 0
        public var out_idev_id: UInt32 = 0
        public var dev_flags: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.mock_domain_flags" }
        public static let layoutFields: [UAPIField] = [
            uapiField("out_stdev_id", \.out_stdev_id),
            uapiField("out_hwpt_id", \.out_hwpt_id),
            uapiField("out_idev_id", \.out_idev_id),
            uapiField("dev_flags", \.dev_flags),
        ]
    }

    /// Re-attaches the mock device `id` to another IOAS or HWPT.
    public struct MockDomainReplace: UAPIStruct {
        public var pt_id: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.mock_domain_replace" }
        public static let layoutFields: [UAPIField] = [
            uapiField("pt_id", \.pt_id),
        ]
    }

    /// Checks that an IOVA range of the mock domain(s) maps the given user memory.
    public struct CheckMap: UAPIStruct {
        public var iova: UInt64 = 0
        public var length: UInt64 = 0
        public var uptr: UInt64 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.check_map" }
        public static let layoutFields: [UAPIField] = [
            uapiField("iova", \.iova),
            uapiField("length", \.length),
            uapiField("uptr", \.uptr),
        ]
    }

    /// Checks the pin reference count of a user memory range.
    /// C's `sizeof` is 24 (20 bytes of fields plus 4 of implicit tail padding, made explicit
    /// as `__pad`).
    public struct CheckRefs: UAPIStruct {
        public var length: UInt64 = 0
        public var uptr: UInt64 = 0
        public var refs: UInt32 = 0
        /// Explicit form of C's implicit tail padding (not a C field).
        public var __pad: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.check_refs" }
        public static let layoutFields: [UAPIField] = [
            uapiField("length", \.length),
            uapiField("uptr", \.uptr),
            uapiField("refs", \.refs),
        ]
    }

    /// Creates an in-kernel access on the IOAS `id`; returns its file descriptor.
    public struct CreateAccess: UAPIStruct {
        public var out_access_fd: UInt32 = 0
        public var flags: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.create_access" }
        public static let layoutFields: [UAPIField] = [
            uapiField("out_access_fd", \.out_access_fd),
            uapiField("flags", \.flags),
        ]
    }

    /// Releases pages pinned through the access `id`.
    public struct DestroyAccessPages: UAPIStruct {
        public var access_pages_id: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.destroy_access_pages" }
        public static let layoutFields: [UAPIField] = [
            uapiField("access_pages_id", \.access_pages_id),
        ]
    }

    /// Pins pages through the access `id`; returns a handle for them.
    public struct AccessPages: UAPIStruct {
        public var flags: UInt32 = 0
        public var out_access_pages_id: UInt32 = 0
        public var iova: UInt64 = 0
        public var length: UInt64 = 0
        public var uptr: UInt64 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.access_pages" }
        public static let layoutFields: [UAPIField] = [
            uapiField("flags", \.flags),
            uapiField("out_access_pages_id", \.out_access_pages_id),
            uapiField("iova", \.iova),
            uapiField("length", \.length),
            uapiField("uptr", \.uptr),
        ]
    }

    /// Reads or writes IOVA memory through the access `id`.
    /// C's `sizeof` is 32 (28 bytes of fields plus 4 of implicit tail padding, made explicit
    /// as `__pad`).
    public struct AccessRW: UAPIStruct {
        public var iova: UInt64 = 0
        public var length: UInt64 = 0
        public var uptr: UInt64 = 0
        public var flags: UInt32 = 0
        /// Explicit form of C's implicit tail padding (not a C field).
        public var __pad: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.access_rw" }
        public static let layoutFields: [UAPIField] = [
            uapiField("iova", \.iova),
            uapiField("length", \.length),
            uapiField("uptr", \.uptr),
            uapiField("flags", \.flags),
        ]
    }

    /// Sets a temporary limit on the pages the IOAS code handles per batch.
    public struct MemoryLimit: UAPIStruct {
        public var limit: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.memory_limit" }
        public static let layoutFields: [UAPIField] = [
            uapiField("limit", \.limit),
        ]
    }

    /// Moves the access `id` to another IOAS.
    public struct AccessReplaceIOAS: UAPIStruct {
        public var ioas_id: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.access_replace_ioas" }
        public static let layoutFields: [UAPIField] = [
            uapiField("ioas_id", \.ioas_id),
        ]
    }

    /// Marks pages of the mock HWPT `id` dirty from a user bitmap; returns the count set.
    /// C has 4 bytes of implicit padding between `flags` and `iova`; Swift places `iova` at
    /// the same offset (8) on its own.
    public struct Dirty: UAPIStruct {
        public var flags: UInt32 = 0
        public var iova: UInt64 = 0
        public var length: UInt64 = 0
        public var page_size: UInt64 = 0
        public var uptr: UInt64 = 0
        public var out_nr_dirty: UInt64 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.dirty" }
        public static let layoutFields: [UAPIField] = [
            uapiField("flags", \.flags),
            uapiField("iova", \.iova),
            uapiField("length", \.length),
            uapiField("page_size", \.page_size),
            uapiField("uptr", \.uptr),
            uapiField("out_nr_dirty", \.out_nr_dirty),
        ]
    }

    /// Checks one IOTLB entry value of the mock nested HWPT `id`.
    public struct CheckIOTLB: UAPIStruct {
        public var id: UInt32 = 0
        public var iotlb: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.check_iotlb" }
        public static let layoutFields: [UAPIField] = [
            uapiField("id", \.id),
            uapiField("iotlb", \.iotlb),
        ]
    }

    /// Raises an I/O page fault from a mock device.
    public struct TriggerIOPF: UAPIStruct {
        public var dev_id: UInt32 = 0
        public var pasid: UInt32 = 0
        public var grpid: UInt32 = 0
        public var perm: UInt32 = 0
        public var addr: UInt64 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.trigger_iopf" }
        public static let layoutFields: [UAPIField] = [
            uapiField("dev_id", \.dev_id),
            uapiField("pasid", \.pasid),
            uapiField("grpid", \.grpid),
            uapiField("perm", \.perm),
            uapiField("addr", \.addr),
        ]
    }

    /// Checks one cache entry value of the mock device `id`.
    public struct CheckDevCache: UAPIStruct {
        public var id: UInt32 = 0
        public var cache: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.check_dev_cache" }
        public static let layoutFields: [UAPIField] = [
            uapiField("id", \.id),
            uapiField("cache", \.cache),
        ]
    }

    /// Raises a vEVENT from a mock device.
    public struct TriggerVEvent: UAPIStruct {
        public var dev_id: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.trigger_vevent" }
        public static let layoutFields: [UAPIField] = [
            uapiField("dev_id", \.dev_id),
        ]
    }

    /// Attaches a PASID of the mock device `id` to an IOAS or HWPT.
    public struct PASIDAttach: UAPIStruct {
        public var pasid: UInt32 = 0
        public var pt_id: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.pasid_attach" }
        public static let layoutFields: [UAPIField] = [
            uapiField("pasid", \.pasid),
            uapiField("pt_id", \.pt_id),
        ]
    }

    /// Replaces the attachment of a PASID of the mock device `id`.
    public struct PASIDReplace: UAPIStruct {
        public var pasid: UInt32 = 0
        public var pt_id: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.pasid_replace" }
        public static let layoutFields: [UAPIField] = [
            uapiField("pasid", \.pasid),
            uapiField("pt_id", \.pt_id),
        ]
    }

    /// Detaches a PASID of the mock device `id`.
    public struct PASIDDetach: UAPIStruct {
        public var pasid: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.pasid_detach" }
        public static let layoutFields: [UAPIField] = [
            uapiField("pasid", \.pasid),
        ]
    }

    /// Checks which HWPT a PASID of the mock device `id` is attached to.
    public struct PASIDCheck: UAPIStruct {
        public var pasid: UInt32 = 0
        public var hwpt_id: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.pasid_check" }
        public static let layoutFields: [UAPIField] = [
            uapiField("pasid", \.pasid),
            uapiField("hwpt_id", \.hwpt_id),
        ]
    }

    /// Creates a test DMA-BUF of `length` bytes; returns its descriptor in the ioctl result.
    public struct DMABufGet: UAPIStruct {
        public var length: UInt32 = 0
        public var open_flags: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.dmabuf_get" }
        public static let layoutFields: [UAPIField] = [
            uapiField("length", \.length),
            uapiField("open_flags", \.open_flags),
        ]
    }

    /// Revokes or restores a test DMA-BUF.
    public struct DMABufRevoke: UAPIStruct {
        public var dmabuf_fd: Int32 = 0
        public var revoked: UInt32 = 0

        public init() {}
        public static var cName: String { "iommu_test_cmd.dmabuf_revoke" }
        public static let layoutFields: [UAPIField] = [
            uapiField("dmabuf_fd", \.dmabuf_fd),
            uapiField("revoked", \.revoked),
        ]
    }
}

/// Mock driver hardware information (`IOMMU_HW_INFO_TYPE_SELFTEST`).
/// The corresponding ioctl is `IOMMU_GET_HW_INFO`.
public struct iommu_test_hw_info: UAPIStruct {
    public var flags: UInt32 = 0
    public var test_reg: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_test_hw_info" }
    public static let layoutFields: [UAPIField] = [
        uapiField("flags", \.flags),
        uapiField("test_reg", \.test_reg),
    ]
}

/// Mock driver nested HWPT data: initial IOTLB value and page table kind
/// (`IOMMU_HWPT_DATA_SELFTEST`). The corresponding ioctl is `IOMMU_HWPT_ALLOC`.
public struct iommu_hwpt_selftest: UAPIStruct {
    public var iotlb: UInt32 = 0
    public var pagetable_type: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_hwpt_selftest" }
    public static let layoutFields: [UAPIField] = [
        uapiField("iotlb", \.iotlb),
        uapiField("pagetable_type", \.pagetable_type),
    ]
}

/// One mock HWPT invalidation entry (`IOMMU_HWPT_INVALIDATE_DATA_SELFTEST`).
/// The corresponding ioctl is `IOMMU_HWPT_INVALIDATE`.
public struct iommu_hwpt_invalidate_selftest: UAPIStruct {
    public var flags: UInt32 = 0
    public var iotlb_id: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_hwpt_invalidate_selftest" }
    public static let layoutFields: [UAPIField] = [
        uapiField("flags", \.flags),
        uapiField("iotlb_id", \.iotlb_id),
    ]
}

/// Mock vIOMMU data: loopback value and mmap window (`IOMMU_VIOMMU_TYPE_SELFTEST`).
/// The corresponding ioctl is `IOMMU_VIOMMU_ALLOC`.
public struct iommu_viommu_selftest: UAPIStruct {
    public var in_data: UInt32 = 0
    public var out_data: UInt32 = 0
    public var out_mmap_offset: UInt64 = 0
    public var out_mmap_length: UInt64 = 0

    public init() {}
    public static var cName: String { "iommu_viommu_selftest" }
    public static let layoutFields: [UAPIField] = [
        uapiField("in_data", \.in_data),
        uapiField("out_data", \.out_data),
        uapiField("out_mmap_offset", \.out_mmap_offset),
        uapiField("out_mmap_length", \.out_mmap_length),
    ]
}

/// One mock vIOMMU invalidation entry (`IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST`).
/// The corresponding ioctl is `IOMMU_HWPT_INVALIDATE`.
public struct iommu_viommu_invalidate_selftest: UAPIStruct {
    public var flags: UInt32 = 0
    public var vdev_id: UInt32 = 0
    public var cache_id: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_viommu_invalidate_selftest" }
    public static let layoutFields: [UAPIField] = [
        uapiField("flags", \.flags),
        uapiField("vdev_id", \.vdev_id),
        uapiField("cache_id", \.cache_id),
    ]
}

/// One mock vEVENT record (`IOMMU_VEVENTQ_TYPE_SELFTEST`), raised by
/// `IOMMU_TEST_OP_TRIGGER_VEVENT`. The corresponding ioctl is `IOMMU_VEVENTQ_ALLOC`.
public struct iommu_viommu_event_selftest: UAPIStruct {
    public var virt_id: UInt32 = 0

    public init() {}
    public static var cName: String { "iommu_viommu_event_selftest" }
    public static let layoutFields: [UAPIField] = [
        uapiField("virt_id", \.virt_id),
    ]
}

// MARK: - vfio.h (the type1 container ioctls served by iommufd)

/// The header of one capability in a VFIO info capability chain.
/// The corresponding ioctl is `VFIO_IOMMU_GET_INFO`.
public struct vfio_info_cap_header: UAPIStruct {
    public var id: UInt16 = 0
    public var version: UInt16 = 0
    /// Offset of the next capability from the start of the info structure, or 0.
    public var next: UInt32 = 0

    public init() {}
    public static var cName: String { "vfio_info_cap_header" }
    public static let layoutFields: [UAPIField] = [
        uapiField("id", \.id),
        uapiField("version", \.version),
        uapiField("next", \.next),
    ]
}

/// Reports the supported IOMMU page sizes and the offset of the capability chain.
/// The corresponding ioctl is `VFIO_IOMMU_GET_INFO`.
public struct vfio_iommu_type1_info: UAPIStruct {
    public var argsz: UInt32 = 0
    public var flags: UInt32 = 0
    public var iova_pgsizes: UInt64 = 0
    public var cap_offset: UInt32 = 0
    public var pad: UInt32 = 0

    public init() {}
    public static var cName: String { "vfio_iommu_type1_info" }
    public static let layoutFields: [UAPIField] = [
        uapiField("argsz", \.argsz),
        uapiField("flags", \.flags),
        uapiField("iova_pgsizes", \.iova_pgsizes),
        uapiField("cap_offset", \.cap_offset),
        uapiField("pad", \.pad),
    ]
}

/// One inclusive IOVA range [start, end], the element of the IOVA range capability.
/// The corresponding ioctl is `VFIO_IOMMU_GET_INFO`.
public struct vfio_iova_range: UAPIStruct {
    public var start: UInt64 = 0
    public var end: UInt64 = 0

    public init() {}
    public static var cName: String { "vfio_iova_range" }
    public static let layoutFields: [UAPIField] = [
        uapiField("start", \.start),
        uapiField("end", \.end),
    ]
}

/// The IOVA range capability (`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`): a count followed by
/// that many `vfio_iova_range`. The corresponding ioctl is `VFIO_IOMMU_GET_INFO`.
///
/// C ends with the flexible array `iova_ranges[]`, which is not stored here: the ranges
/// start at byte 16 (`MemoryLayout<Self>.size`), listed in `layoutFields` with size 0.
/// C's alignment is 8 (from the array); this struct's is 4. Sizes agree (16).
public struct vfio_iommu_type1_info_cap_iova_range: UAPIStruct {
    public var header: vfio_info_cap_header = vfio_info_cap_header()
    public var nr_iovas: UInt32 = 0
    public var reserved: UInt32 = 0

    public init() {}
    public static var cName: String { "vfio_iommu_type1_info_cap_iova_range" }
    public static let layoutFields: [UAPIField] =
        [uapiField("header", \.header)]
        + uapiNested("header", \.header)
        + [
            uapiField("nr_iovas", \.nr_iovas),
            uapiField("reserved", \.reserved),
            uapiFlexibleArray("iova_ranges"),
        ]
}

/// The DMA mapping limit capability (`VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`).
/// The corresponding ioctl is `VFIO_IOMMU_GET_INFO`.
public struct vfio_iommu_type1_info_dma_avail: UAPIStruct {
    public var header: vfio_info_cap_header = vfio_info_cap_header()
    public var avail: UInt32 = 0

    public init() {}
    public static var cName: String { "vfio_iommu_type1_info_dma_avail" }
    public static let layoutFields: [UAPIField] =
        [uapiField("header", \.header)]
        + uapiNested("header", \.header)
        + [uapiField("avail", \.avail)]
}

/// Maps user memory at a fixed IOVA in the container.
/// The corresponding ioctl is `VFIO_IOMMU_MAP_DMA`.
public struct vfio_iommu_type1_dma_map: UAPIStruct {
    public var argsz: UInt32 = 0
    public var flags: UInt32 = 0
    public var vaddr: UInt64 = 0
    public var iova: UInt64 = 0
    public var size: UInt64 = 0

    public init() {}
    public static var cName: String { "vfio_iommu_type1_dma_map" }
    public static let layoutFields: [UAPIField] = [
        uapiField("argsz", \.argsz),
        uapiField("flags", \.flags),
        uapiField("vaddr", \.vaddr),
        uapiField("iova", \.iova),
        uapiField("size", \.size),
    ]
}

/// Unmaps an IOVA range (or everything) from the container and returns the size unmapped.
/// The corresponding ioctl is `VFIO_IOMMU_UNMAP_DMA`.
///
/// C ends with the flexible array `data[]` (used only with the dirty bitmap flag), which is
/// not stored here; it starts at byte 24 and is listed in `layoutFields` with size 0.
public struct vfio_iommu_type1_dma_unmap: UAPIStruct {
    public var argsz: UInt32 = 0
    public var flags: UInt32 = 0
    public var iova: UInt64 = 0
    public var size: UInt64 = 0

    public init() {}
    public static var cName: String { "vfio_iommu_type1_dma_unmap" }
    public static let layoutFields: [UAPIField] = [
        uapiField("argsz", \.argsz),
        uapiField("flags", \.flags),
        uapiField("iova", \.iova),
        uapiField("size", \.size),
        uapiFlexibleArray("data"),
    ]
}

// MARK: - vfio.h, device cdev (/dev/vfio/devices/vfioN)

/// Binds a VFIO device cdev to an iommufd. The corresponding ioctl is `VFIO_DEVICE_BIND_IOMMUFD`.
public struct vfio_device_bind_iommufd: UAPIStruct {
    public var argsz: UInt32 = 0
    public var flags: UInt32 = 0
    public var iommufd: Int32 = 0
    public var out_devid: UInt32 = 0
    public var token_uuid_ptr: UInt64 = 0

    public init() {}
    public static var cName: String { "vfio_device_bind_iommufd" }
    public static let layoutFields: [UAPIField] = [
        uapiField("argsz", \.argsz),
        uapiField("flags", \.flags),
        uapiField("iommufd", \.iommufd),
        uapiField("out_devid", \.out_devid),
        uapiField("token_uuid_ptr", \.token_uuid_ptr),
    ]
}

/// Attaches a bound device (or one of its PASIDs) to an IOAS or HWPT. The corresponding ioctl is
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
public struct vfio_device_attach_iommufd_pt: UAPIStruct {
    public var argsz: UInt32 = 0
    public var flags: UInt32 = 0
    public var pt_id: UInt32 = 0
    public var pasid: UInt32 = 0

    public init() {}
    public static var cName: String { "vfio_device_attach_iommufd_pt" }
    public static let layoutFields: [UAPIField] = [
        uapiField("argsz", \.argsz),
        uapiField("flags", \.flags),
        uapiField("pt_id", \.pt_id),
        uapiField("pasid", \.pasid),
    ]
}

/// Detaches a bound device (or one of its PASIDs). The corresponding ioctl is
/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
public struct vfio_device_detach_iommufd_pt: UAPIStruct {
    public var argsz: UInt32 = 0
    public var flags: UInt32 = 0
    public var pasid: UInt32 = 0

    public init() {}
    public static var cName: String { "vfio_device_detach_iommufd_pt" }
    public static let layoutFields: [UAPIField] = [
        uapiField("argsz", \.argsz),
        uapiField("flags", \.flags),
        uapiField("pasid", \.pasid),
    ]
}
