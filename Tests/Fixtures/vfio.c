/* A user-space driver's first steps on a modelled VFIO device, run under `ioasid run --machine
 * vtd`: the group and container flow (type1v2 on /dev/vfio/vfio), the device's info, pread and
 * pwrite on config space and BAR 0 (built with _FORTIFY_SOURCE, so pread is __pread_chk), the
 * vectored forms, an MSI-X eventfd signalled by the device model, and the cdev flow: an
 * ioeventfd, and the bound device holding its iommufd open after the iommufd is closed.
 * Uses only the kernel's uAPI numbers, written out here so no kernel header is needed. */
#include "fixture.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#define VFIO_TYPE ';'
#define VFIO_BASE 100
#define VFIO_GET_API_VERSION _IO(VFIO_TYPE, VFIO_BASE + 0)
#define VFIO_CHECK_EXTENSION _IO(VFIO_TYPE, VFIO_BASE + 1)
#define VFIO_SET_IOMMU _IO(VFIO_TYPE, VFIO_BASE + 2)
#define VFIO_GROUP_GET_STATUS _IO(VFIO_TYPE, VFIO_BASE + 3)
#define VFIO_GROUP_SET_CONTAINER _IO(VFIO_TYPE, VFIO_BASE + 4)
#define VFIO_GROUP_GET_DEVICE_FD _IO(VFIO_TYPE, VFIO_BASE + 6)
#define VFIO_DEVICE_GET_INFO _IO(VFIO_TYPE, VFIO_BASE + 7)
#define VFIO_DEVICE_GET_REGION_INFO _IO(VFIO_TYPE, VFIO_BASE + 8)
#define VFIO_DEVICE_SET_IRQS _IO(VFIO_TYPE, VFIO_BASE + 10)
#define VFIO_DEVICE_IOEVENTFD _IO(VFIO_TYPE, VFIO_BASE + 16)
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#define VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 20)
#define IOMMU_IOAS_ALLOC _IO(VFIO_TYPE, 0x81)

struct group_status { uint32_t argsz, flags; };
struct device_info { uint32_t argsz, flags, num_regions, num_irqs, cap_offset, pad; };
struct region_info { uint32_t argsz, flags, index, cap_offset; uint64_t size, offset; };
struct irq_set { uint32_t argsz, flags, index, start, count; int32_t fd; };
struct bind { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; uint64_t token_uuid_ptr; };
struct ioeventfd { uint32_t argsz, flags; uint64_t offset, data; int32_t fd; uint32_t reserved; };
struct ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct attach_pt { uint32_t argsz, flags, pt_id, pasid; };
struct detach_pt { uint32_t argsz, flags, pasid; };

#define CONFIG ((off_t)7 << 40)

int main(void) {
    int container = open("/dev/vfio/vfio", O_RDWR);
    CHECK(container >= 0, "open /dev/vfio/vfio");
    CHECK(ioctl(container, VFIO_GET_API_VERSION) == 0, "API version 0");
    CHECK(ioctl(container, VFIO_CHECK_EXTENSION, 3) == 1, "type1v2");
    int group = open("/dev/vfio/0", O_RDWR);
    CHECK(group >= 0, "open /dev/vfio/0");
    CHECK_ERRNO(open("/dev/vfio/7", O_RDWR), ENOENT);
    struct group_status status = {sizeof status, 0};
    CHECK(ioctl(group, VFIO_GROUP_GET_STATUS, &status) == 0 && status.flags == 1, "viable, no container");
    CHECK(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) == 0, "set container");
    CHECK(ioctl(container, VFIO_SET_IOMMU, 3) == 0, "set type1v2");
    CHECK_ERRNO(ioctl(group, VFIO_GROUP_GET_DEVICE_FD, "0000:00:01.0"), ENODEV);
    int device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, "0100:00:01.0");
    CHECK(device >= 0, "device fd");
    OK("group and container\n");

    struct device_info info = {sizeof info, 0, 0, 0, 0, 0};
    CHECK(ioctl(device, VFIO_DEVICE_GET_INFO, &info) == 0, "get info");
    CHECK(info.flags == 3 && info.num_regions == 9 && info.num_irqs == 5, "PCI|RESET, 9 regions, 5 irqs");
    struct region_info region = {sizeof region, 0, 7, 0, 0, 0};
    CHECK(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &region) == 0 && region.size == 4096 && region.offset == (uint64_t)CONFIG, "config region");
    OK("device info\n");

    uint32_t ids = 0;
    CHECK(pread(device, &ids, sizeof ids, CONFIG) == 4 && ids == 0x00f01b36, "pread vendor/device: %x", ids);
    uint16_t command = 0;
    CHECK(pread64(device, &command, 2, CONFIG + 4) == 2, "pread64 COMMAND");
    command |= 4; /* bus master */
    CHECK(pwrite(device, &command, 2, CONFIG + 4) == 2, "pwrite COMMAND");
    uint32_t magic = 0;
    CHECK(pread(device, &magic, 4, 0) == 4 && magic == 0x494f4153, "pread BAR 0: %x", magic);
    uint64_t scratch = 0x1122334455667788ull, back = 0;
    struct iovec out = {&scratch, 8}, in = {&back, 8};
    CHECK(pwritev(device, &out, 1, 0x28) == 8 && preadv(device, &in, 1, 0x28) == 8 && back == scratch, "pwritev/preadv");
    CHECK_ERRNO(pread(device, &magic, 4, (off_t)9 << 40), EINVAL);
    OK("pread and pwrite\n");

    int trigger = eventfd(0, EFD_NONBLOCK);
    struct irq_set set = {sizeof set, (1 << 2) | (1 << 5), 2, 0, 1, trigger};
    CHECK(ioctl(device, VFIO_DEVICE_SET_IRQS, &set) == 0, "MSI-X vector 0");
    uint32_t zero = 0, length = 1;
    CHECK(pwrite(device, &zero, 4, 0x1c) == 4 && pwrite(device, &length, 4, 0x10) == 4, "program");
    uint32_t doorbell = 1; /* a DMA read; IOVA 0 is unmapped: no data, then the completion interrupt */
    CHECK(pwrite(device, &doorbell, 4, 0x18) == 4, "doorbell");
    uint64_t count = 0;
    CHECK(read(trigger, &count, 8) == 8 && count == 1, "the MSI-X eventfd was signalled");
    uint32_t dma_status = 0;
    /* 2: the IOMMU blocked it; 4: the device (it has PRI) sent a page request instead. */
    CHECK(pread(device, &dma_status, 4, 0x20) == 4 && (dma_status == 2 || dma_status == 4), "an IOMMU fault: %u", dma_status);
    OK("msix eventfd\n");
    close(device);
    close(group);
    close(container);

    int cdev = open("/dev/vfio/devices/vfio0", O_RDWR);
    int iommufd = open("/dev/iommu", O_RDWR);
    CHECK(cdev >= 0 && iommufd >= 0, "open cdev and iommufd");
    CHECK_ERRNO(pread(cdev, &ids, 4, CONFIG), EINVAL);
    struct bind bind = {sizeof bind, 0, iommufd, 0, 0};
    CHECK(ioctl(cdev, VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0, "bind");
    CHECK(pread(cdev, &ids, sizeof ids, CONFIG) == 4 && ids == 0x00f01b36, "pread after bind");
    OK("cdev\n");

    /* BAR 0 mmapped (trapped MMIO) and used with glibc's memcpy, as a driver copies a
     * descriptor: its vector loads and stores of 16, 32 and 64 bytes reach the device. Through
     * a volatile pointer so that the compiler calls glibc rather than inlining the copy. */
    void *(*volatile copy)(void *, const void *, size_t) = memcpy;
    uint8_t *bar = mmap(NULL, 0x4000, PROT_READ | PROT_WRITE, MAP_SHARED, cdev, 0);
    CHECK(bar != MAP_FAILED, "mmap BAR 0");
    uint8_t pattern[64], back64[64];
    for (int i = 0; i < 64; i++) pattern[i] = (uint8_t)(0xa0 + i);
    copy(bar + 0x28, pattern, 16);
    uint64_t scratch64 = 0;
    CHECK(pread(cdev, &scratch64, 8, 0x28) == 8 && memcmp(&scratch64, pattern, 8) == 0, "a 16-byte memcpy into the BAR: %llx",
          (unsigned long long)scratch64);
    copy(back64, bar, 64);
    uint32_t magic64 = 0;
    memcpy(&magic64, back64, 4);
    CHECK(magic64 == 0x494f4153 && memcmp(back64 + 0x28, pattern, 8) == 0, "a 64-byte memcpy out of the BAR: %x", magic64);
    copy(back64, bar + 0x20, 32);
    CHECK(memcmp(back64 + 8, pattern, 8) == 0, "a 32-byte memcpy out of the BAR");
    CHECK(munmap(bar, 0x4000) == 0, "munmap BAR 0");
    OK("memcpy to and from a mapped BAR\n");

    /* An ioeventfd: signalling the eventfd writes the value to BAR 0's scratch register. */
    int kick = eventfd(0, 0);
    uint64_t cleared = 0;
    CHECK(pwrite(cdev, &cleared, 8, 0x28) == 8, "clear the scratch register");
    struct ioeventfd ioeventfd = {sizeof ioeventfd, 4 /* 32-bit */, 0x28, 0xfeedf00d, kick, 0};
    CHECK(ioctl(cdev, VFIO_DEVICE_IOEVENTFD, &ioeventfd) == 0, "ioeventfd");
    CHECK_ERRNO(ioctl(cdev, VFIO_DEVICE_IOEVENTFD, &ioeventfd), EEXIST);
    uint64_t one = 1;
    CHECK(write(kick, &one, 8) == 8, "signal the ioeventfd");
    uint32_t scratch32 = 0;
    for (int i = 0; i < 400 && scratch32 != 0xfeedf00d; i++) {
        usleep(5000);
        CHECK(pread(cdev, &scratch32, 4, 0x28) == 4, "pread the scratch register");
    }
    CHECK(scratch32 == 0xfeedf00d, "the device saw the ioeventfd's write: %x", scratch32);
    ioeventfd.fd = -1;
    CHECK(ioctl(cdev, VFIO_DEVICE_IOEVENTFD, &ioeventfd) == 0, "remove the ioeventfd");
    CHECK_ERRNO(ioctl(cdev, VFIO_DEVICE_IOEVENTFD, &ioeventfd), ENODEV);
    close(kick);
    OK("ioeventfd\n");

    /* The bound device holds the iommufd open (as the kernel's does): after close(iommufd) the
     * device is still attached, detaches, and the context goes when the device is closed. */
    struct ioas_alloc ioas = {sizeof ioas, 0, 0};
    CHECK(ioctl(iommufd, IOMMU_IOAS_ALLOC, &ioas) == 0, "IOAS");
    struct attach_pt attach = {sizeof attach, 0, ioas.out_ioas_id, 0};
    CHECK(ioctl(cdev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) == 0, "attach");
    CHECK(close(iommufd) == 0, "close the iommufd");
    struct detach_pt detach = {sizeof detach, 0, 0};
    CHECK(ioctl(cdev, VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach) == 0, "detach after the iommufd was closed");
    attach.pt_id = ioas.out_ioas_id;
    CHECK(ioctl(cdev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) == 0, "attach again to the IOAS");
    CHECK(close(cdev) == 0, "close the device");
    OK("the device held the iommufd\n");
    return 0;
}
