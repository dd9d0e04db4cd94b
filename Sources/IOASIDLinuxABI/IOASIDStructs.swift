// The IOASID layer's own ioctls (include/ioasid/ioasid.h): host PASID allocation from IOASID
// sets, and SVA bind. Layouts are checked against that header by IOASIDHeaderTests.

/// Request numbers and flags of include/ioasid/ioasid.h.
public enum IOASIDUAPI {
    /// The ioctl type byte, shared with iommufd (`';'`).
    public static let IOASID_TYPE: UInt = IOCTL.IOMMUFD_TYPE
    /// The first command number; the kernel's iommufd uses 0x80…0xa0.
    public static let IOASID_CMD_BASE: UInt = 0xc0
    public static let IOASID_SET_ALLOC: UInt = IOCTL._IO(IOASID_TYPE, IOASID_CMD_BASE + 0)
    public static let IOASID_SET_INFO: UInt = IOCTL._IO(IOASID_TYPE, IOASID_CMD_BASE + 1)
    public static let IOASID_PASID_ALLOC: UInt = IOCTL._IO(IOASID_TYPE, IOASID_CMD_BASE + 2)
    public static let IOASID_PASID_FREE: UInt = IOCTL._IO(IOASID_TYPE, IOASID_CMD_BASE + 3)
    public static let IOASID_SVA_BIND: UInt = IOCTL._IO(IOASID_TYPE, IOASID_CMD_BASE + 4)
    public static let IOASID_SVA_UNBIND: UInt = IOCTL._IO(IOASID_TYPE, IOASID_CMD_BASE + 5)

    /// `enum ioasid_set_flags`.
    public static let IOASID_SET_UNLIMITED: UInt32 = 1 << 0
    public static let IOASID_SET_OWNER_VM: UInt32 = 1 << 1
    /// `enum ioasid_pasid_alloc_flags`.
    public static let IOASID_PASID_ALLOC_GUEST_ID: UInt32 = 1 << 0
    /// `enum ioasid_sva_bind_flags`.
    public static let IOASID_SVA_BIND_PASID: UInt32 = 1 << 0
    public static let IOASID_SVA_BIND_FAULT_ID_VALID: UInt32 = 1 << 1

    /// The first command number of the requests on a device cdev.
    public static let IOASID_DEVICE_CMD_BASE: UInt = 0xd0
    public static let IOASID_DEVICE_DMA: UInt = IOCTL._IO(IOASID_TYPE, IOASID_DEVICE_CMD_BASE + 0)
    /// `enum ioasid_device_dma_flags`.
    public static let IOASID_DMA_WRITE: UInt32 = 1 << 0
    public static let IOASID_DMA_PASID: UInt32 = 1 << 1
    public static let IOASID_DMA_RESUME: UInt32 = 1 << 2
    /// `enum ioasid_device_dma_status`.
    public static let IOASID_DMA_DONE: UInt32 = 0
    public static let IOASID_DMA_PAGE_REQUEST: UInt32 = 1
    public static let IOASID_DMA_FAULT: UInt32 = 2

    /// Every request with its C name, for tests and tools.
    public static let allRequests: [(name: String, request: UInt)] = [
        ("IOASID_SET_ALLOC", IOASID_SET_ALLOC), ("IOASID_SET_INFO", IOASID_SET_INFO),
        ("IOASID_PASID_ALLOC", IOASID_PASID_ALLOC), ("IOASID_PASID_FREE", IOASID_PASID_FREE),
        ("IOASID_SVA_BIND", IOASID_SVA_BIND), ("IOASID_SVA_UNBIND", IOASID_SVA_UNBIND),
        ("IOASID_DEVICE_DMA", IOASID_DEVICE_DMA),
    ]
    /// Every struct of the header.
    public static let structTypes: [any UAPIStruct.Type] = [
        ioasid_set_alloc.self, ioasid_set_info.self, ioasid_pasid_alloc.self, ioasid_pasid_free.self,
        ioasid_sva_bind.self, ioasid_sva_unbind.self,
        ioasid_device_dma.self,
    ]
}

/// Creates an IOASID set this file acts for. The corresponding ioctl is `IOASID_SET_ALLOC`.
public struct ioasid_set_alloc: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var quota: UInt32 = 0
    public var out_set_id: UInt32 = 0
    public var vm_id: UInt64 = 0

    public init() {}
    public static var cName: String { "ioasid_set_alloc" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size), uapiField("flags", \.flags), uapiField("quota", \.quota),
        uapiField("out_set_id", \.out_set_id), uapiField("vm_id", \.vm_id),
    ]
}

/// Reports the set this file acts for. The corresponding ioctl is `IOASID_SET_INFO`.
public struct ioasid_set_info: UAPIStruct {
    public var size: UInt32 = 0
    public var out_flags: UInt32 = 0
    public var out_set_id: UInt32 = 0
    public var out_quota: UInt32 = 0
    public var out_count: UInt32 = 0
    public var out_pasid_bits: UInt32 = 0
    public var out_available: UInt64 = 0

    public init() {}
    public static var cName: String { "ioasid_set_info" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size), uapiField("out_flags", \.out_flags), uapiField("out_set_id", \.out_set_id),
        uapiField("out_quota", \.out_quota), uapiField("out_count", \.out_count),
        uapiField("out_pasid_bits", \.out_pasid_bits), uapiField("out_available", \.out_available),
    ]
}

/// Allocates a PASID to this file's set. The corresponding ioctl is `IOASID_PASID_ALLOC`.
public struct ioasid_pasid_alloc: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var min: UInt32 = 0
    public var max: UInt32 = 0
    public var guest_pasid: UInt32 = 0
    public var out_pasid: UInt32 = 0

    public init() {}
    public static var cName: String { "ioasid_pasid_alloc" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size), uapiField("flags", \.flags), uapiField("min", \.min), uapiField("max", \.max),
        uapiField("guest_pasid", \.guest_pasid), uapiField("out_pasid", \.out_pasid),
    ]
}

/// Frees a PASID of this file's set. The corresponding ioctl is `IOASID_PASID_FREE`.
public struct ioasid_pasid_free: UAPIStruct {
    public var size: UInt32 = 0
    public var pasid: UInt32 = 0

    public init() {}
    public static var cName: String { "ioasid_pasid_free" }
    public static let layoutFields: [UAPIField] = [uapiField("size", \.size), uapiField("pasid", \.pasid)]
}

/// Binds a process address space to a device at the process's PASID. The corresponding ioctl is
/// `IOASID_SVA_BIND`.
public struct ioasid_sva_bind: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var dev_id: UInt32 = 0
    public var pid: Int32 = 0
    public var fault_id: UInt32 = 0
    public var pasid: UInt32 = 0
    public var out_pasid: UInt32 = 0
    public var __reserved: UInt32 = 0

    public init() {}
    public static var cName: String { "ioasid_sva_bind" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size), uapiField("flags", \.flags), uapiField("dev_id", \.dev_id), uapiField("pid", \.pid),
        uapiField("fault_id", \.fault_id), uapiField("pasid", \.pasid), uapiField("out_pasid", \.out_pasid),
        uapiField("__reserved", \.__reserved),
    ]
}

/// Ends the SVA bind of a device at a PASID. The corresponding ioctl is `IOASID_SVA_UNBIND`.
public struct ioasid_sva_unbind: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var dev_id: UInt32 = 0
    public var pasid: UInt32 = 0

    public init() {}
    public static var cName: String { "ioasid_sva_unbind" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size), uapiField("flags", \.flags), uapiField("dev_id", \.dev_id), uapiField("pasid", \.pasid),
    ]
}
/// Makes a modelled device issue DMA. The corresponding ioctl is `IOASID_DEVICE_DMA` (on a device cdev).
public struct ioasid_device_dma: UAPIStruct {
    public var size: UInt32 = 0
    public var flags: UInt32 = 0
    public var pasid: UInt32 = 0
    public var length: UInt32 = 0
    public var iova: UInt64 = 0
    public var data_uptr: UInt64 = 0
    public var out_status: UInt32 = 0
    public var __reserved: UInt32 = 0

    public init() {}
    public static var cName: String { "ioasid_device_dma" }
    public static let layoutFields: [UAPIField] = [
        uapiField("size", \.size), uapiField("flags", \.flags), uapiField("pasid", \.pasid), uapiField("length", \.length),
        uapiField("iova", \.iova), uapiField("data_uptr", \.data_uptr), uapiField("out_status", \.out_status),
        uapiField("__reserved", \.__reserved),
    ]
}
