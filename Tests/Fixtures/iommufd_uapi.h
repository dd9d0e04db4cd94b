/* The few iommufd and VFIO cdev requests the device fixtures use (iommufd.h and vfio.h of
 * Linux 7.2), written out so that the fixtures build without the kernel's headers. */
#ifndef IOASID_FIXTURE_IOMMUFD_UAPI_H
#define IOASID_FIXTURE_IOMMUFD_UAPI_H

#include <stdint.h>
#include <sys/ioctl.h>

#define VFIO_DEVICE_BIND_IOMMUFD _IO(';', 100 + 18)
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(';', 100 + 19)
#define IOMMU_IOAS_ALLOC _IO(';', 0x81)
#define IOMMU_IOAS_MAP _IO(';', 0x85)
#define IOMMU_IOAS_UNMAP _IO(';', 0x86)

struct bind { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; uint64_t token_uuid_ptr; };
struct attach { uint32_t argsz, flags, pt_id, pasid; };
struct ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct ioas_map { uint32_t size, flags, ioas_id, reserved; uint64_t user_va, length, iova; };
struct ioas_unmap { uint32_t size, ioas_id; uint64_t iova, length; };

#endif
