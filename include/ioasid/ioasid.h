/*
 * ioasid.h — the IOASID layer's ioctls on a /dev/iommu file descriptor.
 *
 * These requests extend the iommufd interface of <linux/iommufd.h> with what the original
 * /dev/ioasid design wanted and upstream Linux does not have: host PASID allocation from IOASID
 * sets with quotas, and binding a process address space to a device (SVA) at a PASID of the
 * set. They use the iommufd ioctl type (';') with command numbers from 0xc0, a
 * range the kernel's iommufd does not use (the real kernel answers them with ENOTTY).
 *
 * Every argument is an extensible struct whose first member is its size, with the same rules as
 * iommufd: a smaller size than the last mandatory field is EINVAL, bytes past the known struct
 * must be zero (E2BIG otherwise). See docs/ioasid-abi.md for the semantics and errors.
 */
#ifndef IOASID_IOASID_H
#define IOASID_IOASID_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define IOASID_TYPE ';'
#define IOASID_CMD_BASE 0xc0

enum {
	IOASID_CMD_SET_ALLOC = IOASID_CMD_BASE,
	IOASID_CMD_SET_INFO,
	IOASID_CMD_PASID_ALLOC,
	IOASID_CMD_PASID_FREE,
	IOASID_CMD_SVA_BIND,
	IOASID_CMD_SVA_UNBIND,
};

/**
 * enum ioasid_set_flags - flags of struct ioasid_set_alloc and struct ioasid_set_info
 * @IOASID_SET_UNLIMITED: the set takes PASIDs from the unreserved system capacity with no quota
 *                        of its own (needs privilege: CAP_SYS_ADMIN, or `ioasid run --privileged`)
 * @IOASID_SET_OWNER_VM: the set is owned by the VM @vm_id rather than by the calling process
 */
enum ioasid_set_flags {
	IOASID_SET_UNLIMITED = 1 << 0,
	IOASID_SET_OWNER_VM = 1 << 1,
};

/**
 * struct ioasid_set_alloc - ioctl(IOASID_SET_ALLOC)
 * @size: sizeof(struct ioasid_set_alloc)
 * @flags: enum ioasid_set_flags
 * @quota: how many PASIDs the set may hold at once (carved out of the system capacity now);
 *         must be 0 with IOASID_SET_UNLIMITED
 * @out_set_id: the new set
 * @vm_id: the owning VM with IOASID_SET_OWNER_VM, else 0
 *
 * Creates an IOASID set and makes this file act for it: from now on a PASID can be attached to a
 * device of this file only if the set owns it. One set per file (EEXIST); closing the file frees
 * the set's PASIDs (detaching them) and the set, returning its quota.
 */
struct ioasid_set_alloc {
	__u32 size;
	__u32 flags;
	__u32 quota;
	__u32 out_set_id;
	__aligned_u64 vm_id;
};
#define IOASID_SET_ALLOC _IO(IOASID_TYPE, IOASID_CMD_SET_ALLOC)

/**
 * struct ioasid_set_info - ioctl(IOASID_SET_INFO)
 * @size: sizeof(struct ioasid_set_info)
 * @out_flags: enum ioasid_set_flags of the set
 * @out_set_id: the set this file acts for
 * @out_quota: its quota (0 when unlimited)
 * @out_count: PASIDs it holds now (free-pending ones included)
 * @out_pasid_bits: the system PASID width
 * @out_available: system capacity neither reserved, carved out by quotas nor held
 */
struct ioasid_set_info {
	__u32 size;
	__u32 out_flags;
	__u32 out_set_id;
	__u32 out_quota;
	__u32 out_count;
	__u32 out_pasid_bits;
	__aligned_u64 out_available;
};
#define IOASID_SET_INFO _IO(IOASID_TYPE, IOASID_CMD_SET_INFO)

/**
 * enum ioasid_pasid_alloc_flags - flags of struct ioasid_pasid_alloc
 * @IOASID_PASID_ALLOC_GUEST_ID: record @guest_pasid as the set-private ID of the new PASID (the
 *                               PASID the guest uses for it)
 */
enum ioasid_pasid_alloc_flags {
	IOASID_PASID_ALLOC_GUEST_ID = 1 << 0,
};

/**
 * struct ioasid_pasid_alloc - ioctl(IOASID_PASID_ALLOC)
 * @size: sizeof(struct ioasid_pasid_alloc)
 * @flags: enum ioasid_pasid_alloc_flags
 * @min: lowest acceptable PASID (>= 1)
 * @max: highest acceptable PASID; 0 means the system maximum
 * @guest_pasid: with IOASID_PASID_ALLOC_GUEST_ID, the guest's PASID for it
 * @out_pasid: the lowest free PASID in [min, max], now owned by this file's set
 */
struct ioasid_pasid_alloc {
	__u32 size;
	__u32 flags;
	__u32 min;
	__u32 max;
	__u32 guest_pasid;
	__u32 out_pasid;
};
#define IOASID_PASID_ALLOC _IO(IOASID_TYPE, IOASID_CMD_PASID_ALLOC)

/**
 * struct ioasid_pasid_free - ioctl(IOASID_PASID_FREE)
 * @size: sizeof(struct ioasid_pasid_free)
 * @pasid: a PASID of this file's set
 *
 * Detaches the PASID from every device it is attached to (in every file acting for the set),
 * then frees it. DMA tagged with it is blocked from then on.
 */
struct ioasid_pasid_free {
	__u32 size;
	__u32 pasid;
};
#define IOASID_PASID_FREE _IO(IOASID_TYPE, IOASID_CMD_PASID_FREE)

/**
 * enum ioasid_sva_bind_flags - flags of struct ioasid_sva_bind
 * @IOASID_SVA_BIND_PASID: use @pasid, a PASID of this file's set, as the process's PASID (when the
 *                         process has none yet; otherwise it must be the process's PASID)
 * @IOASID_SVA_BIND_FAULT_ID_VALID: @fault_id names a fault queue (IOMMU_FAULT_QUEUE_ALLOC) that
 *                                  receives the device's page requests at the PASID
 */
enum ioasid_sva_bind_flags {
	IOASID_SVA_BIND_PASID = 1 << 0,
	IOASID_SVA_BIND_FAULT_ID_VALID = 1 << 1,
};

/**
 * struct ioasid_sva_bind - ioctl(IOASID_SVA_BIND)
 * @size: sizeof(struct ioasid_sva_bind)
 * @flags: enum ioasid_sva_bind_flags
 * @dev_id: a device bound to this file (VFIO_DEVICE_BIND_IOMMUFD's out_devid)
 * @pid: the process whose address space the device shares; 0 means the calling process. Only
 *       *modelled* processes can be named: a CPU page table in the modelled IOMMU's memory that
 *       the program embedding the engine registered (see docs/ioasid-abi.md); others are ESRCH
 * @fault_id: with IOASID_SVA_BIND_FAULT_ID_VALID, the fault queue for page requests; without
 *            one the IOMMU answers them Invalid Request
 * @pasid: with IOASID_SVA_BIND_PASID, the PASID to use; else 0
 * @out_pasid: the process's PASID, which the device's DMA carries to reach the address space
 * @__reserved: must be 0
 *
 * Shares the process's page table with the device at the process's PASID (one per process,
 * allocated from this file's set on its first bind and kept until the process exits). DMA with
 * that PASID uses the process's virtual addresses and follows its mappings: once an munmap or
 * mprotect of the process returned, no DMA uses the old translation. Page requests for pages the
 * process has not mapped go to the fault queue; after the owner maps them and answers, the
 * device retries. When the process exits, every bind of it ends (DMA with the PASID is blocked
 * and reported, outstanding page requests are answered Invalid) and the PASID is freed if the
 * layer allocated it.
 */
struct ioasid_sva_bind {
	__u32 size;
	__u32 flags;
	__u32 dev_id;
	__s32 pid;
	__u32 fault_id;
	__u32 pasid;
	__u32 out_pasid;
	__u32 __reserved;
};
#define IOASID_SVA_BIND _IO(IOASID_TYPE, IOASID_CMD_SVA_BIND)

/**
 * struct ioasid_sva_unbind - ioctl(IOASID_SVA_UNBIND)
 * @size: sizeof(struct ioasid_sva_unbind)
 * @flags: must be 0
 * @dev_id: the device
 * @pasid: the PASID it is SVA-bound at (struct ioasid_sva_bind's out_pasid)
 *
 * Ends the bind: DMA with the PASID is blocked from the return on and outstanding page requests
 * are answered Invalid. The process keeps its PASID for later binds until it exits.
 */
struct ioasid_sva_unbind {
	__u32 size;
	__u32 flags;
	__u32 dev_id;
	__u32 pasid;
};
#define IOASID_SVA_UNBIND _IO(IOASID_TYPE, IOASID_CMD_SVA_UNBIND)

/*
 * Requests on a VFIO device cdev of the modelled machine (`ioasid run --machine`), from 0xd0.
 */
#define IOASID_DEVICE_CMD_BASE 0xd0

enum {
	IOASID_CMD_DEVICE_DMA = IOASID_DEVICE_CMD_BASE,
};

/**
 * enum ioasid_device_dma_flags - flags of struct ioasid_device_dma
 * @IOASID_DMA_WRITE: the device writes @length bytes from @data_uptr (else it reads into it)
 * @IOASID_DMA_PASID: the request carries @pasid
 * @IOASID_DMA_RESUME: the device's retry: continue the DMA that ended with IOASID_DMA_PAGE_REQUEST
 *                     (other fields ignored; still IOASID_DMA_PAGE_REQUEST while the response
 *                     has not arrived; EINVAL if no DMA waits)
 */
enum ioasid_device_dma_flags {
	IOASID_DMA_WRITE = 1 << 0,
	IOASID_DMA_PASID = 1 << 1,
	IOASID_DMA_RESUME = 1 << 2,
};

/**
 * enum ioasid_device_dma_status - out_status of struct ioasid_device_dma
 * @IOASID_DMA_DONE: every byte moved
 * @IOASID_DMA_PAGE_REQUEST: a page was not accessible and the device sent a page request group
 *                           (it reaches the fault queue of the HWPT, or is refused by the driver
 *                           when there is none); after the response, IOASID_DMA_RESUME retries
 * @IOASID_DMA_FAULT: the IOMMU blocked the request (unrecoverable: the IOMMU recorded a fault)
 */
enum ioasid_device_dma_status {
	IOASID_DMA_DONE = 0,
	IOASID_DMA_PAGE_REQUEST = 1,
	IOASID_DMA_FAULT = 2,
};

/**
 * struct ioasid_device_dma - ioctl(IOASID_DEVICE_DMA) on a device cdev
 * @size: sizeof(struct ioasid_device_dma)
 * @flags: enum ioasid_device_dma_flags
 * @pasid: with IOASID_DMA_PASID, the PASID the request carries
 * @length: bytes to move (at most 1 MiB)
 * @iova: the untranslated address the device uses
 * @data_uptr: the program's buffer the bytes come from or go to
 * @out_status: enum ioasid_device_dma_status
 * @__reserved: must be 0
 *
 * Makes the modelled device issue DMA through its IOMMU, as its hardware would: with ATS it asks
 * for a translation and caches it, with PRI it sends page requests for pages it may not access.
 * The ioctl fails (-1) only for bad arguments: EINVAL (flags, length, a device without PASIDs),
 * EFAULT (@data_uptr), ENODEV (a device that cannot issue DMA, e.g. a mock device).
 */
struct ioasid_device_dma {
	__u32 size;
	__u32 flags;
	__u32 pasid;
	__u32 length;
	__aligned_u64 iova;
	__aligned_u64 data_uptr;
	__u32 out_status;
	__u32 __reserved;
};
#define IOASID_DEVICE_DMA _IO(IOASID_TYPE, IOASID_CMD_DEVICE_DMA)

#endif /* IOASID_IOASID_H */
