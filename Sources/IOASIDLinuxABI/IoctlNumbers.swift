// The ioctl request numbers served on `/dev/iommu`: the iommufd commands, the IOMMUFD_TEST
// command, and the VFIO type1 container commands of iommufd's VFIO compatibility, plus the
// VFIO constants those commands use.
//
// All of them are `_IO(';', nr)`: the argument size is not encoded in the request, since the
// structures carry their own `size` / `argsz` field.

/// The ioctl request numbers, with their C names.
public enum IOCTL {
    // MARK: Encoding

    #if arch(powerpc64) || arch(powerpc64le)
    // powerpc: 13 size bits, 3 direction bits, and "no direction" is 1.
    static let iocSizeBits: UInt = 13
    static let iocDirNone: UInt = 1
    #else
    // asm-generic (x86_64, aarch64, s390x, riscv64, ...): 14 size bits, 2 direction bits.
    static let iocSizeBits: UInt = 14
    static let iocDirNone: UInt = 0
    #endif
    static let iocNRShift: UInt = 0
    static let iocTypeShift: UInt = 8
    static let iocSizeShift: UInt = 16
    static let iocDirShift: UInt = 16 + iocSizeBits

    /// `_IO(type, nr)`: a request with no direction and no size. On x86_64 this is
    /// `(type << 8) | nr`.
    public static func _IO(_ type: UInt, _ nr: UInt) -> UInt {
        (iocDirNone << iocDirShift) | ((type & 0xff) << iocTypeShift) | ((nr & 0xff) << iocNRShift)
    }

    /// `_IOC_NR(request)`: the command number (low 8 bits).
    public static func _IOC_NR(_ request: UInt) -> UInt { (request >> iocNRShift) & 0xff }

    /// `_IOC_TYPE(request)`: the type byte (`';'` for iommufd and VFIO).
    public static func _IOC_TYPE(_ request: UInt) -> UInt { (request >> iocTypeShift) & 0xff }

    /// `_IOC_SIZE(request)`: the encoded argument size (0 for every request here).
    public static func _IOC_SIZE(_ request: UInt) -> UInt { (request >> iocSizeShift) & ((1 << iocSizeBits) - 1) }

    /// `_IOC_DIR(request)`: the encoded direction bits.
    public static func _IOC_DIR(_ request: UInt) -> UInt { (request >> iocDirShift) & ((1 << (32 - iocDirShift)) - 1) }

    /// The request as the kernel sees it: its `ioctl` handlers take `unsigned int cmd`, so
    /// only the low 32 bits of the C library's `unsigned long request` count.
    public static func normalized(_ request: UInt) -> UInt { request & 0xffff_ffff }

    // MARK: iommufd

    /// The ioctl type byte of iommufd, `';'`.
    public static let IOMMUFD_TYPE: UInt = 0x3b // ';'

    // The iommufd command numbers (`_IOC_NR` of the requests below).
    public static let IOMMUFD_CMD_BASE: UInt = 0x80
    public static let IOMMUFD_CMD_DESTROY: UInt = IOMMUFD_CMD_BASE
    public static let IOMMUFD_CMD_IOAS_ALLOC: UInt = 0x81
    public static let IOMMUFD_CMD_IOAS_ALLOW_IOVAS: UInt = 0x82
    public static let IOMMUFD_CMD_IOAS_COPY: UInt = 0x83
    public static let IOMMUFD_CMD_IOAS_IOVA_RANGES: UInt = 0x84
    public static let IOMMUFD_CMD_IOAS_MAP: UInt = 0x85
    public static let IOMMUFD_CMD_IOAS_UNMAP: UInt = 0x86
    public static let IOMMUFD_CMD_OPTION: UInt = 0x87
    public static let IOMMUFD_CMD_VFIO_IOAS: UInt = 0x88
    public static let IOMMUFD_CMD_HWPT_ALLOC: UInt = 0x89
    public static let IOMMUFD_CMD_GET_HW_INFO: UInt = 0x8a
    public static let IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING: UInt = 0x8b
    public static let IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP: UInt = 0x8c
    public static let IOMMUFD_CMD_HWPT_INVALIDATE: UInt = 0x8d
    public static let IOMMUFD_CMD_FAULT_QUEUE_ALLOC: UInt = 0x8e
    public static let IOMMUFD_CMD_IOAS_MAP_FILE: UInt = 0x8f
    public static let IOMMUFD_CMD_VIOMMU_ALLOC: UInt = 0x90
    public static let IOMMUFD_CMD_VDEVICE_ALLOC: UInt = 0x91
    public static let IOMMUFD_CMD_IOAS_CHANGE_PROCESS: UInt = 0x92
    public static let IOMMUFD_CMD_VEVENTQ_ALLOC: UInt = 0x93
    public static let IOMMUFD_CMD_HW_QUEUE_ALLOC: UInt = 0x94
    /// The command number of `IOMMU_TEST_CMD` (`IOMMUFD_CMD_BASE + 32`).
    public static let IOMMUFD_CMD_TEST: UInt = IOMMUFD_CMD_BASE + 32

    /// Argument `iommu_destroy`.
    public static let IOMMU_DESTROY: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY)
    /// Argument `iommu_ioas_alloc`.
    public static let IOMMU_IOAS_ALLOC: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)
    /// Argument `iommu_ioas_allow_iovas`.
    public static let IOMMU_IOAS_ALLOW_IOVAS: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS)
    /// Argument `iommu_ioas_copy`.
    public static let IOMMU_IOAS_COPY: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY)
    /// Argument `iommu_ioas_iova_ranges`.
    public static let IOMMU_IOAS_IOVA_RANGES: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES)
    /// Argument `iommu_ioas_map`.
    public static let IOMMU_IOAS_MAP: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP)
    /// Argument `iommu_ioas_unmap`.
    public static let IOMMU_IOAS_UNMAP: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP)
    /// Argument `iommu_option`.
    public static let IOMMU_OPTION: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION)
    /// Argument `iommu_vfio_ioas`.
    public static let IOMMU_VFIO_IOAS: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS)
    /// Argument `iommu_hwpt_alloc`.
    public static let IOMMU_HWPT_ALLOC: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC)
    /// Argument `iommu_hw_info`.
    public static let IOMMU_GET_HW_INFO: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO)
    /// Argument `iommu_hwpt_set_dirty_tracking`.
    public static let IOMMU_HWPT_SET_DIRTY_TRACKING: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING)
    /// Argument `iommu_hwpt_get_dirty_bitmap`.
    public static let IOMMU_HWPT_GET_DIRTY_BITMAP: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP)
    /// Argument `iommu_hwpt_invalidate`.
    public static let IOMMU_HWPT_INVALIDATE: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_INVALIDATE)
    /// Argument `iommu_fault_alloc`.
    public static let IOMMU_FAULT_QUEUE_ALLOC: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC)
    /// Argument `iommu_ioas_map_file`.
    public static let IOMMU_IOAS_MAP_FILE: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE)
    /// Argument `iommu_viommu_alloc`.
    public static let IOMMU_VIOMMU_ALLOC: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VIOMMU_ALLOC)
    /// Argument `iommu_vdevice_alloc`.
    public static let IOMMU_VDEVICE_ALLOC: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VDEVICE_ALLOC)
    /// Argument `iommu_ioas_change_process`.
    public static let IOMMU_IOAS_CHANGE_PROCESS: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_CHANGE_PROCESS)
    /// Argument `iommu_veventq_alloc`.
    public static let IOMMU_VEVENTQ_ALLOC: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VEVENTQ_ALLOC)
    /// Argument `iommu_hw_queue_alloc`.
    public static let IOMMU_HW_QUEUE_ALLOC: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HW_QUEUE_ALLOC)
    /// Argument `iommu_test_cmd` (served only with the test driver, `CONFIG_IOMMUFD_TEST`).
    public static let IOMMU_TEST_CMD: UInt = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_TEST)

    // MARK: VFIO container (type1) compatibility

    /// The ioctl type byte of VFIO, `';'` (the same as iommufd's).
    public static let VFIO_TYPE: UInt = 0x3b // ';'
    /// The first VFIO command number; VFIO commands lie below `IOMMUFD_CMD_BASE`.
    public static let VFIO_BASE: UInt = 100

    /// No argument; returns `UAPI.VFIO_API_VERSION`.
    public static let VFIO_GET_API_VERSION: UInt = _IO(VFIO_TYPE, VFIO_BASE + 0)
    /// Argument: an extension number (`UAPI.VFIO_TYPE1_IOMMU`, ...) passed by value;
    /// returns whether it is supported.
    public static let VFIO_CHECK_EXTENSION: UInt = _IO(VFIO_TYPE, VFIO_BASE + 1)
    /// Argument: the IOMMU model (`UAPI.VFIO_TYPE1_IOMMU`, ...) passed by value.
    public static let VFIO_SET_IOMMU: UInt = _IO(VFIO_TYPE, VFIO_BASE + 2)
    /// Argument `vfio_iommu_type1_info`, followed by its capability chain.
    public static let VFIO_IOMMU_GET_INFO: UInt = _IO(VFIO_TYPE, VFIO_BASE + 12)
    /// Argument `vfio_iommu_type1_dma_map`.
    public static let VFIO_IOMMU_MAP_DMA: UInt = _IO(VFIO_TYPE, VFIO_BASE + 13)
    /// Argument `vfio_iommu_type1_dma_unmap`.
    public static let VFIO_IOMMU_UNMAP_DMA: UInt = _IO(VFIO_TYPE, VFIO_BASE + 14)
    /// Dirty page tracking of type1; iommufd recognises it and refuses it.
    public static let VFIO_IOMMU_DIRTY_PAGES: UInt = _IO(VFIO_TYPE, VFIO_BASE + 17)
    /// Argument `vfio_device_bind_iommufd` (on a device cdev).
    public static let VFIO_DEVICE_BIND_IOMMUFD: UInt = _IO(VFIO_TYPE, VFIO_BASE + 18)
    /// Argument `vfio_device_attach_iommufd_pt` (on a device cdev).
    public static let VFIO_DEVICE_ATTACH_IOMMUFD_PT: UInt = _IO(VFIO_TYPE, VFIO_BASE + 19)
    /// Argument `vfio_device_detach_iommufd_pt` (on a device cdev).
    public static let VFIO_DEVICE_DETACH_IOMMUFD_PT: UInt = _IO(VFIO_TYPE, VFIO_BASE + 20)

    // MARK: VFIO groups and devices (on /dev/vfio/N and device descriptors; not in `all`,
    // whose rows are what an iommufd descriptor recognises)

    /// Argument `vfio_group_status`.
    public static let VFIO_GROUP_GET_STATUS: UInt = _IO(VFIO_TYPE, VFIO_BASE + 3)
    /// Argument: a pointer to the container's (or an iommufd's) descriptor number.
    public static let VFIO_GROUP_SET_CONTAINER: UInt = _IO(VFIO_TYPE, VFIO_BASE + 4)
    /// No argument.
    public static let VFIO_GROUP_UNSET_CONTAINER: UInt = _IO(VFIO_TYPE, VFIO_BASE + 5)
    /// Argument: the device's name, `"BDF"` or `"BDF vf_token=UUID"`; returns a descriptor.
    public static let VFIO_GROUP_GET_DEVICE_FD: UInt = _IO(VFIO_TYPE, VFIO_BASE + 6)
    /// Argument `vfio_device_info`.
    public static let VFIO_DEVICE_GET_INFO: UInt = _IO(VFIO_TYPE, VFIO_BASE + 7)
    /// Argument `vfio_region_info`.
    public static let VFIO_DEVICE_GET_REGION_INFO: UInt = _IO(VFIO_TYPE, VFIO_BASE + 8)
    /// Argument `vfio_irq_info`.
    public static let VFIO_DEVICE_GET_IRQ_INFO: UInt = _IO(VFIO_TYPE, VFIO_BASE + 9)
    /// Argument `vfio_irq_set`.
    public static let VFIO_DEVICE_SET_IRQS: UInt = _IO(VFIO_TYPE, VFIO_BASE + 10)
    /// No argument.
    public static let VFIO_DEVICE_RESET: UInt = _IO(VFIO_TYPE, VFIO_BASE + 11)
    /// Argument `vfio_pci_hot_reset_info`.
    public static let VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: UInt = _IO(VFIO_TYPE, VFIO_BASE + 12)
    /// Argument `vfio_pci_hot_reset`.
    public static let VFIO_DEVICE_PCI_HOT_RESET: UInt = _IO(VFIO_TYPE, VFIO_BASE + 13)
    /// Argument `vfio_device_ioeventfd`.
    public static let VFIO_DEVICE_IOEVENTFD: UInt = _IO(VFIO_TYPE, VFIO_BASE + 16)
    /// Argument `vfio_device_feature`.
    public static let VFIO_DEVICE_FEATURE: UInt = _IO(VFIO_TYPE, VFIO_BASE + 17)

    /// The group and device requests with their C names (for tracing).
    public static let vfioDeviceRequests: [(name: String, request: UInt)] = [
        ("VFIO_GROUP_GET_STATUS", VFIO_GROUP_GET_STATUS),
        ("VFIO_GROUP_SET_CONTAINER", VFIO_GROUP_SET_CONTAINER),
        ("VFIO_GROUP_UNSET_CONTAINER", VFIO_GROUP_UNSET_CONTAINER),
        ("VFIO_GROUP_GET_DEVICE_FD", VFIO_GROUP_GET_DEVICE_FD),
        ("VFIO_DEVICE_GET_INFO", VFIO_DEVICE_GET_INFO),
        ("VFIO_DEVICE_GET_REGION_INFO", VFIO_DEVICE_GET_REGION_INFO),
        ("VFIO_DEVICE_GET_IRQ_INFO", VFIO_DEVICE_GET_IRQ_INFO),
        ("VFIO_DEVICE_SET_IRQS", VFIO_DEVICE_SET_IRQS),
        ("VFIO_DEVICE_RESET", VFIO_DEVICE_RESET),
        ("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", VFIO_DEVICE_GET_PCI_HOT_RESET_INFO),
        ("VFIO_DEVICE_PCI_HOT_RESET", VFIO_DEVICE_PCI_HOT_RESET),
        ("VFIO_DEVICE_IOEVENTFD", VFIO_DEVICE_IOEVENTFD),
        ("VFIO_DEVICE_FEATURE", VFIO_DEVICE_FEATURE),
        ("VFIO_DEVICE_BIND_IOMMUFD", VFIO_DEVICE_BIND_IOMMUFD),
        ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", VFIO_DEVICE_ATTACH_IOMMUFD_PT),
        ("VFIO_DEVICE_DETACH_IOMMUFD_PT", VFIO_DEVICE_DETACH_IOMMUFD_PT),
    ]

    // MARK: Names

    /// Every request above with its C name, iommufd commands first.
    public static let all: [(name: String, request: UInt)] = [
        ("IOMMU_DESTROY", IOMMU_DESTROY),
        ("IOMMU_IOAS_ALLOC", IOMMU_IOAS_ALLOC),
        ("IOMMU_IOAS_ALLOW_IOVAS", IOMMU_IOAS_ALLOW_IOVAS),
        ("IOMMU_IOAS_COPY", IOMMU_IOAS_COPY),
        ("IOMMU_IOAS_IOVA_RANGES", IOMMU_IOAS_IOVA_RANGES),
        ("IOMMU_IOAS_MAP", IOMMU_IOAS_MAP),
        ("IOMMU_IOAS_UNMAP", IOMMU_IOAS_UNMAP),
        ("IOMMU_OPTION", IOMMU_OPTION),
        ("IOMMU_VFIO_IOAS", IOMMU_VFIO_IOAS),
        ("IOMMU_HWPT_ALLOC", IOMMU_HWPT_ALLOC),
        ("IOMMU_GET_HW_INFO", IOMMU_GET_HW_INFO),
        ("IOMMU_HWPT_SET_DIRTY_TRACKING", IOMMU_HWPT_SET_DIRTY_TRACKING),
        ("IOMMU_HWPT_GET_DIRTY_BITMAP", IOMMU_HWPT_GET_DIRTY_BITMAP),
        ("IOMMU_HWPT_INVALIDATE", IOMMU_HWPT_INVALIDATE),
        ("IOMMU_FAULT_QUEUE_ALLOC", IOMMU_FAULT_QUEUE_ALLOC),
        ("IOMMU_IOAS_MAP_FILE", IOMMU_IOAS_MAP_FILE),
        ("IOMMU_VIOMMU_ALLOC", IOMMU_VIOMMU_ALLOC),
        ("IOMMU_VDEVICE_ALLOC", IOMMU_VDEVICE_ALLOC),
        ("IOMMU_IOAS_CHANGE_PROCESS", IOMMU_IOAS_CHANGE_PROCESS),
        ("IOMMU_VEVENTQ_ALLOC", IOMMU_VEVENTQ_ALLOC),
        ("IOMMU_HW_QUEUE_ALLOC", IOMMU_HW_QUEUE_ALLOC),
        ("IOMMU_TEST_CMD", IOMMU_TEST_CMD),
        ("VFIO_GET_API_VERSION", VFIO_GET_API_VERSION),
        ("VFIO_CHECK_EXTENSION", VFIO_CHECK_EXTENSION),
        ("VFIO_SET_IOMMU", VFIO_SET_IOMMU),
        ("VFIO_IOMMU_GET_INFO", VFIO_IOMMU_GET_INFO),
        ("VFIO_IOMMU_MAP_DMA", VFIO_IOMMU_MAP_DMA),
        ("VFIO_IOMMU_UNMAP_DMA", VFIO_IOMMU_UNMAP_DMA),
        ("VFIO_IOMMU_DIRTY_PAGES", VFIO_IOMMU_DIRTY_PAGES),
        ("VFIO_DEVICE_BIND_IOMMUFD", VFIO_DEVICE_BIND_IOMMUFD),
        ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", VFIO_DEVICE_ATTACH_IOMMUFD_PT),
        ("VFIO_DEVICE_DETACH_IOMMUFD_PT", VFIO_DEVICE_DETACH_IOMMUFD_PT),
    ]

    private static let names: [UInt: String] = Dictionary(
        all.map { ($0.request, $0.name) }, uniquingKeysWith: { first, _ in first })

    /// The C name of `request` (compared on its low 32 bits), or nil if it is none of the
    /// requests above. For tracing.
    public static func name(of request: UInt) -> String? {
        names[normalized(request)]
    }
}

// MARK: - VFIO constants

extension UAPI {
    /// Returned by `VFIO_GET_API_VERSION`.
    public static let VFIO_API_VERSION: Int = 0

    // Extensions (`VFIO_CHECK_EXTENSION`) and IOMMU models (`VFIO_SET_IOMMU`), passed by value.
    public static let VFIO_TYPE1_IOMMU: UInt = 1
    public static let VFIO_SPAPR_TCE_IOMMU: UInt = 2
    public static let VFIO_TYPE1v2_IOMMU: UInt = 3
    /// Whether the IOMMU enforces DMA cache coherency.
    public static let VFIO_DMA_CC_IOMMU: UInt = 4
    public static let VFIO_EEH: UInt = 5
    /// The retired type1 nesting model; never supported.
    public static let __VFIO_RESERVED_TYPE1_NESTING_IOMMU: UInt = 6
    public static let VFIO_SPAPR_TCE_v2_IOMMU: UInt = 7
    /// The no-IOMMU model (unsafe; only with `CONFIG_VFIO_NOIOMMU`).
    public static let VFIO_NOIOMMU_IOMMU: UInt = 8
    /// Support for `VFIO_DMA_UNMAP_FLAG_ALL`.
    public static let VFIO_UNMAP_ALL: UInt = 9
    /// Support for `VFIO_DMA_MAP_FLAG_VADDR` / `VFIO_DMA_UNMAP_FLAG_VADDR`.
    public static let VFIO_UPDATE_VADDR: UInt = 10

    // vfio_iommu_type1_info.flags
    public static let VFIO_IOMMU_INFO_PGSIZES: UInt32 = 1 << 0
    public static let VFIO_IOMMU_INFO_CAPS: UInt32 = 1 << 1

    // vfio_info_cap_header.id in the VFIO_IOMMU_GET_INFO capability chain
    public static let VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: UInt16 = 1
    public static let VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: UInt16 = 2
    public static let VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: UInt16 = 3

    // vfio_iommu_type1_dma_map.flags
    public static let VFIO_DMA_MAP_FLAG_READ: UInt32 = 1 << 0
    public static let VFIO_DMA_MAP_FLAG_WRITE: UInt32 = 1 << 1
    public static let VFIO_DMA_MAP_FLAG_VADDR: UInt32 = 1 << 2

    // vfio_iommu_type1_dma_unmap.flags
    public static let VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: UInt32 = 1 << 0
    public static let VFIO_DMA_UNMAP_FLAG_ALL: UInt32 = 1 << 1
    public static let VFIO_DMA_UNMAP_FLAG_VADDR: UInt32 = 1 << 2

    // vfio_iommu_type1_dirty_bitmap.flags (VFIO_IOMMU_DIRTY_PAGES)
    public static let VFIO_IOMMU_DIRTY_PAGES_FLAG_START: UInt32 = 1 << 0
    public static let VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP: UInt32 = 1 << 1
    public static let VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP: UInt32 = 1 << 2
}
