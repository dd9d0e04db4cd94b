/* Memory the program unmaps while an IOAS still maps it (run under `ioasid run --machine vtd`).
 *
 * On the kernel the pages stay pinned: the device keeps reaching them and never the program's
 * later mappings. Under ioasid the address range stays reserved and the device's DMA there
 * ends as a DMA error. Either way: a new mapping never receives the device's writes, even one
 * the program asks for at the old address, and the program does not crash. */
#include "fixture.h"
#include "../../include/ioasid/ioasid.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iommufd_uapi.h"

#define IOVA (1ull << 20)
#define LENGTH (4 * 4096)

static int device;

static uint32_t dma_write(uint64_t iova, const void *data, uint32_t length) {
    struct ioasid_device_dma d = {.size = sizeof d, .flags = IOASID_DMA_WRITE, .length = length, .iova = iova,
                                  .data_uptr = (uintptr_t)data};
    CHECK(ioctl(device, IOASID_DEVICE_DMA, &d) == 0, "IOASID_DEVICE_DMA");
    return d.out_status;
}

int main(void) {
    int iommu = open("/dev/iommu", O_RDWR);
    CHECK(iommu >= 0, "open /dev/iommu");
    device = open("/dev/vfio/devices/vfio0", O_RDWR);
    CHECK(device >= 0, "open vfio0");
    struct bind b = {.argsz = sizeof b, .iommufd = iommu};
    CHECK(ioctl(device, VFIO_DEVICE_BIND_IOMMUFD, &b) == 0, "bind");
    struct ioas_alloc a = {.size = sizeof a};
    CHECK(ioctl(iommu, IOMMU_IOAS_ALLOC, &a) == 0, "IOAS_ALLOC");

    char *buffer = mmap(NULL, LENGTH, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(buffer != MAP_FAILED, "mmap");
    memset(buffer, 0, LENGTH);
    struct ioas_map m = {.size = sizeof m, .flags = 1 | 2 | 4, .ioas_id = a.out_ioas_id, .user_va = (uintptr_t)buffer,
                         .length = LENGTH, .iova = IOVA};
    CHECK(ioctl(iommu, IOMMU_IOAS_MAP, &m) == 0, "IOAS_MAP");
    struct attach at = {.argsz = sizeof at, .pt_id = a.out_ioas_id};
    CHECK(ioctl(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0, "attach");

    const char message[] = "from the device";
    CHECK(dma_write(IOVA + 4096, message, sizeof message) == IOASID_DMA_DONE, "DMA into the mapped buffer");
    CHECK(memcmp(buffer + 4096, message, sizeof message) == 0, "the bytes landed");
    OK("DMA lands in the mapped buffer");

    /* The program gives the memory back while the IOAS still maps it, then asks for new memory
     * at the very same address. */
    CHECK(munmap(buffer, LENGTH) == 0, "munmap");
    char *fresh = mmap(buffer, LENGTH, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(fresh != MAP_FAILED, "mmap again");
    memset(fresh, 'p', LENGTH);
    uint32_t status = dma_write(IOVA + 4096, "overwritten", 12);
    CHECK(fresh[4096] == 'p' && fresh[4096 + 11] == 'p', "the device wrote into the program's new memory (status %u)", status);
    OK("after munmap the device never reaches the program's new memory (it %s)",
       status == IOASID_DMA_DONE ? "reaches the old pages" : "gets a DMA error");

    /* Memory next to the mapped range unmaps as usual, and the IOAS unmap still works. */
    struct ioas_unmap u = {.size = sizeof u, .ioas_id = a.out_ioas_id, .iova = IOVA, .length = LENGTH};
    CHECK(ioctl(iommu, IOMMU_IOAS_UNMAP, &u) == 0 && u.length == LENGTH, "IOAS_UNMAP");
    CHECK(munmap(fresh, LENGTH) == 0, "munmap the new memory");
    OK("the IOAS unmaps what the program unmapped first");
    return 0;
}
