/*
 * checksum.c — a user-space driver for the checksum engine of Examples/custom-device, written as
 * for real hardware: plain libc and the kernel's VFIO and iommufd uAPI, nothing of ioasid's.
 *
 *   ioasid run --engine .build/debug/libCustomDeviceEngine.so --machine vtd:csum -- ./checksum [BDF]
 *
 * It finds the device in sysfs by its IDs (1b36:00f1; or takes its PCI address), finds its VFIO
 * cdev under BDF/vfio-dev/, binds it to /dev/iommu, maps a buffer into an IOAS, attaches, maps
 * BAR 0 and drives the registers with plain loads and stores, with an MSI-X eventfd. Then it
 * checks that the device's DMA is the IOMMU's: an unmapped IOVA, a read-only page and bus
 * mastering off each end the command with an error status — and for the first two with the
 * IOMMU's fault record in the device's fault registers — and the program goes on.
 *
 * The uAPI numbers and structures (Linux 7.2 include/uapi/linux/{vfio,iommufd}.h) are written
 * out below so that the program builds with older installed kernel headers too.
 * Prints "ok <check>" per check and "checksum: all checks passed"; exit status 1 on a failure.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- uAPI: VFIO (';', 100 + n) and iommufd (';', 0x80 + n) ---- */
#define UAPI_TYPE ';'
#define VFIO_DEVICE_GET_REGION_INFO _IO(UAPI_TYPE, 100 + 8)
#define VFIO_DEVICE_SET_IRQS _IO(UAPI_TYPE, 100 + 10)
#define VFIO_DEVICE_BIND_IOMMUFD _IO(UAPI_TYPE, 100 + 18)
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(UAPI_TYPE, 100 + 19)
#define IOMMU_IOAS_ALLOC _IO(UAPI_TYPE, 0x81)
#define IOMMU_IOAS_MAP _IO(UAPI_TYPE, 0x85)
#define VFIO_REGION_INFO_FLAG_MMAP (1u << 2)
#define VFIO_PCI_BAR0_REGION_INDEX 0
#define VFIO_PCI_CONFIG_REGION_INDEX 7
#define VFIO_PCI_MSIX_IRQ_INDEX 2
#define VFIO_IRQ_SET_DATA_EVENTFD (1u << 2)
#define VFIO_IRQ_SET_ACTION_TRIGGER (1u << 5)
#define IOMMU_IOAS_MAP_FIXED_IOVA (1u << 0)
#define IOMMU_IOAS_MAP_WRITEABLE (1u << 1)
#define IOMMU_IOAS_MAP_READABLE (1u << 2)

struct vfio_region_info { uint32_t argsz, flags, index, cap_offset; uint64_t size, offset; };
struct vfio_irq_set_eventfd { uint32_t argsz, flags, index, start, count; int32_t fd; };
struct vfio_device_bind_iommufd { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; };
struct vfio_device_attach_iommufd_pt { uint32_t argsz, flags, pt_id; };
struct iommu_ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct iommu_ioas_map { uint32_t size, flags, ioas_id, reserved; uint64_t user_va, length, iova; };

/* ---- the device (Examples/custom-device/ChecksumDevice/ChecksumDevice.swift) ---- */
enum {
    REG_ID = 0x00, REG_SOURCE = 0x08, REG_LENGTH = 0x10, REG_RESULT_ADDRESS = 0x18, REG_DOORBELL = 0x20,
    REG_STATUS = 0x28, REG_RESULT = 0x30, REG_FAULT_ADDRESS = 0x38, REG_FAULT_INFO = 0x40, REG_INTERRUPT_ENABLE = 0x48,
};
#define ID_VALUE 0x000000014353554dull
#define STATUS_DONE 1ull
#define STATUS_ERROR 2ull
enum { ERROR_SOURCE_FAULT = 1, ERROR_RESULT_FAULT = 2, ERROR_BUS_MASTER = 3 };
enum { FAULT_TRANSLATION = 1, FAULT_PERMISSION = 2 };

#define DATA_IOVA 0x100000ull          /* 64 KiB of data, readable and writable by the device */
#define DATA_SIZE 0x10000ull
#define READ_ONLY_IOVA 0x200000ull     /* one page the device may read but not write */
#define UNMAPPED_IOVA 0x40000000ull

static void fail(const char *what) {
    if (errno != 0) fprintf(stderr, "FAIL %s (errno %d %s)\n", what, errno, strerror(errno));
    else fprintf(stderr, "FAIL %s\n", what);
    exit(1);
}
/* errno is cleared first, so a failed check that made no call reports none. */
#define CHECK(condition, what) do { errno = 0; if (!(condition)) fail(what); } while (0)

static volatile uint64_t *bar;
static uint64_t reg(unsigned offset) { return bar[offset / 8]; }
static void set(unsigned offset, uint64_t value) { bar[offset / 8] = value; }

/* 64-bit FNV-1a, as the device computes it. */
static uint64_t fnv1a(const unsigned char *data, size_t length) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < length; i++) h = (h ^ data[i]) * 0x100000001b3ull;
    return h;
}

static int read_id(const char *bdf, const char *file, unsigned *value) {
    char path[128];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/%s", bdf, file);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    int ok = fscanf(f, "%x", value) == 1;
    fclose(f);
    return ok ? 0 : -1;
}

/* The device's PCI address: the argument, else the first 1b36:00f1 among the modelled machine's
 * slots (ioasid puts them in PCI domain 0100, slots 1 to 31). */
static void find_device(int argc, char **argv, char *bdf, size_t size) {
    if (argc > 1) { snprintf(bdf, size, "%s", argv[1]); return; }
    for (int slot = 1; slot < 32; slot++) {
        unsigned vendor, device;
        snprintf(bdf, size, "0100:00:%02x.0", slot);
        if (read_id(bdf, "vendor", &vendor) == 0 && read_id(bdf, "device", &device) == 0 &&
            vendor == 0x1b36 && device == 0x00f1) return;
    }
    errno = ENODEV;
    fail("no checksum engine (1b36:00f1) in sysfs");
}

/* The cdev name under BDF/vfio-dev/, as the kernel's VFIO selftests find it. */
static void find_cdev(const char *bdf, char *name, size_t size) {
    char folder[128];
    snprintf(folder, sizeof folder, "/sys/bus/pci/devices/%s/vfio-dev", bdf);
    DIR *dir = opendir(folder);
    CHECK(dir != NULL, "opendir BDF/vfio-dev");
    name[0] = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;)
        if (strncmp(entry->d_name, "vfio", 4) == 0) snprintf(name, size, "%s", entry->d_name);
    closedir(dir);
    CHECK(name[0] != 0, "a vfioN entry under BDF/vfio-dev");
}

/* Rings the doorbell and returns STATUS (the device runs the command within the store). */
static uint64_t run(uint64_t source, uint64_t length, uint64_t result_address) {
    set(REG_SOURCE, source);
    set(REG_LENGTH, length);
    set(REG_RESULT_ADDRESS, result_address);
    set(REG_DOORBELL, 1);
    return reg(REG_STATUS);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char bdf[32], cdev[256], path[300];
    find_device(argc, argv, bdf, sizeof bdf);
    unsigned bus, slot, function;
    CHECK(sscanf(bdf, "%*x:%x:%x.%x", &bus, &slot, &function) == 3, "parse the PCI address");
    uint16_t requester_id = (uint16_t)(bus << 8 | slot << 3 | function);
    find_cdev(bdf, cdev, sizeof cdev);
    printf("ok found the checksum engine at %s, VFIO cdev %s\n", bdf, cdev);

    /* Bind the device to an iommufd, map memory into an IOAS, attach. */
    snprintf(path, sizeof path, "/dev/vfio/devices/%s", cdev);
    int device = open(path, O_RDWR | O_CLOEXEC);
    CHECK(device >= 0, "open the VFIO cdev");
    int iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
    CHECK(iommufd >= 0, "open /dev/iommu");
    struct vfio_device_bind_iommufd bind = { sizeof bind, 0, iommufd, 0 };
    CHECK(ioctl(device, VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0, "VFIO_DEVICE_BIND_IOMMUFD");
    struct iommu_ioas_alloc alloc = { sizeof alloc, 0, 0 };
    CHECK(ioctl(iommufd, IOMMU_IOAS_ALLOC, &alloc) == 0, "IOMMU_IOAS_ALLOC");
    unsigned char *data = mmap(NULL, DATA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *read_only = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(data != MAP_FAILED && read_only != MAP_FAILED, "mmap the buffers");
    for (size_t i = 0; i < DATA_SIZE; i++) data[i] = (unsigned char)(i * 131 + 7) ^ (unsigned char)(i >> 8);
    memset(read_only, 0, 4096);
    struct iommu_ioas_map map = { sizeof map, IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
                                  alloc.out_ioas_id, 0, (uintptr_t)data, DATA_SIZE, DATA_IOVA };
    CHECK(ioctl(iommufd, IOMMU_IOAS_MAP, &map) == 0, "IOMMU_IOAS_MAP the data");
    struct iommu_ioas_map map_ro = { sizeof map_ro, IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
                                     alloc.out_ioas_id, 0, (uintptr_t)read_only, 4096, READ_ONLY_IOVA };
    CHECK(ioctl(iommufd, IOMMU_IOAS_MAP, &map_ro) == 0, "IOMMU_IOAS_MAP a read-only page");
    struct vfio_device_attach_iommufd_pt attach = { sizeof attach, 0, alloc.out_ioas_id };
    CHECK(ioctl(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) == 0, "VFIO_DEVICE_ATTACH_IOMMUFD_PT");
    printf("ok bound to /dev/iommu, IOAS %u: 64 KiB at IOVA 0x%llx, a read-only page at 0x%llx\n",
           alloc.out_ioas_id, DATA_IOVA, READ_ONLY_IOVA);

    /* Config space: memory decoding and bus mastering on (COMMAND bits 1 and 2). */
    struct vfio_region_info config = { sizeof config, 0, VFIO_PCI_CONFIG_REGION_INDEX, 0, 0, 0 };
    CHECK(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &config) == 0, "config region info");
    uint16_t command;
    CHECK(pread(device, &command, 2, (off_t)config.offset + 4) == 2, "read COMMAND");
    command |= 0x6;
    CHECK(pwrite(device, &command, 2, (off_t)config.offset + 4) == 2, "write COMMAND");

    /* BAR 0, mapped; plain loads and stores reach the device. */
    struct vfio_region_info region = { sizeof region, 0, VFIO_PCI_BAR0_REGION_INDEX, 0, 0, 0 };
    CHECK(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &region) == 0, "BAR 0 region info");
    CHECK(region.size == 4096 && (region.flags & VFIO_REGION_INFO_FLAG_MMAP), "BAR 0: 4 KiB, mappable");
    void *mapped = mmap(NULL, region.size, PROT_READ | PROT_WRITE, MAP_SHARED, device, (off_t)region.offset);
    CHECK(mapped != MAP_FAILED, "mmap BAR 0");
    bar = mapped;
    CHECK(reg(REG_ID) == ID_VALUE, "the ID register");
    printf("ok BAR 0 mapped, ID 0x%016" PRIx64 "\n", reg(REG_ID));

    /* MSI-X vector 0 to an eventfd. */
    int event = eventfd(0, EFD_CLOEXEC);
    CHECK(event >= 0, "eventfd");
    struct vfio_irq_set_eventfd irq = { sizeof irq, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                                        VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, event };
    CHECK(ioctl(device, VFIO_DEVICE_SET_IRQS, &irq) == 0, "VFIO_DEVICE_SET_IRQS (MSI-X vector 0)");
    set(REG_INTERRUPT_ENABLE, 1);

    /* 1. A checksum over 40000 bytes (ten pages, not page aligned), the result also by DMA. */
    const uint64_t length = 40000, result_offset = 0xf000;
    uint64_t status = run(DATA_IOVA + 100, length, DATA_IOVA + result_offset);
    uint64_t expected = fnv1a(data + 100, length), written;
    memcpy(&written, data + result_offset, 8);
    printf("device checksum 0x%016" PRIx64 ", computed 0x%016" PRIx64 ", in memory 0x%016" PRIx64 "\n",
           reg(REG_RESULT), expected, written);
    CHECK(status == STATUS_DONE, "STATUS is DONE");
    CHECK(reg(REG_RESULT) == expected, "RESULT is the checksum computed here");
    CHECK(written == expected, "the device wrote the checksum to memory by DMA");
    struct pollfd ready = { event, POLLIN, 0 };
    uint64_t count = 0;
    CHECK(poll(&ready, 1, 5000) == 1 && read(event, &count, 8) == 8 && count == 1, "one MSI-X interrupt");
    printf("ok checksum of 40000 bytes at IOVA 0x%llx matches, written back by DMA, MSI-X signalled\n", DATA_IOVA + 100);

    /* 2. An unmapped IOVA: an error status and the IOMMU's fault record, nothing else. */
    status = run(UNMAPPED_IOVA, 256, 0);
    uint64_t info = reg(REG_FAULT_INFO);
    printf("unmapped source: status 0x%" PRIx64 ", fault address 0x%" PRIx64 ", fault info 0x%" PRIx64 "\n",
           status, reg(REG_FAULT_ADDRESS), info);
    CHECK(status == (STATUS_DONE | STATUS_ERROR | ERROR_SOURCE_FAULT << 8), "STATUS: source fault");
    CHECK(reg(REG_FAULT_ADDRESS) == UNMAPPED_IOVA, "the fault record names the IOVA");
    CHECK((info & 0xffff) == requester_id && !(info >> 16 & 1) && (info >> 24) == FAULT_TRANSLATION,
          "the fault record: this requester, a read, not translated");
    CHECK(poll(&ready, 1, 5000) == 1 && read(event, &count, 8) == 8, "an interrupt for the failed command");
    printf("ok DMA from an unmapped IOVA: error status and the IOMMU's fault record\n");

    /* 3. Data that runs past the end of the mapping: the fault is at the first unmapped page. */
    status = run(DATA_IOVA + DATA_SIZE - 100, 200, 0);
    CHECK(status == (STATUS_DONE | STATUS_ERROR | ERROR_SOURCE_FAULT << 8), "STATUS: source fault");
    CHECK(reg(REG_FAULT_ADDRESS) == DATA_IOVA + DATA_SIZE, "the fault is at the end of the mapping");
    printf("ok DMA across the end of the mapping faults at IOVA 0x%llx\n", DATA_IOVA + DATA_SIZE);

    /* 4. The result into a page the IOAS maps read-only: a write permission fault. */
    status = run(DATA_IOVA, 64, READ_ONLY_IOVA + 8);
    info = reg(REG_FAULT_INFO);
    CHECK(status == (STATUS_DONE | STATUS_ERROR | ERROR_RESULT_FAULT << 8), "STATUS: result fault");
    CHECK(reg(REG_FAULT_ADDRESS) == READ_ONLY_IOVA + 8 && (info >> 16 & 1) && (info >> 24) == FAULT_PERMISSION,
          "the fault record: a write, not permitted");
    CHECK(reg(REG_RESULT) == fnv1a(data, 64), "the checksum itself was computed");
    uint64_t untouched;
    memcpy(&untouched, read_only + 8, 8);
    CHECK(untouched == 0, "the read-only page is unchanged");
    printf("ok result to a read-only page: write permission fault, memory unchanged\n");

    /* 5. Bus mastering off: the device issues no DMA at all. */
    command &= (uint16_t)~0x4;
    CHECK(pwrite(device, &command, 2, (off_t)config.offset + 4) == 2, "clear bus master");
    status = run(DATA_IOVA, 64, 0);
    CHECK(status == (STATUS_DONE | STATUS_ERROR | ERROR_BUS_MASTER << 8), "STATUS: bus master disabled");
    printf("ok with bus mastering off the device issues no DMA\n");

    munmap(mapped, region.size);
    close(event);
    close(device);
    close(iommufd);
    printf("checksum: all checks passed\n");
    return 0;
}
