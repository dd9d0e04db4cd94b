/* The kernel's pin rules on memory that already passed them once (run under `ioasid run
 * --machine vtd`, a device attached, so every IOAS_MAP pins).
 *
 * ioasid remembers memory that passed the pin check and answers later maps of it with a touch
 * of each page instead of asking the kernel again, until the program's mappings change. Each
 * step here changes the memory under an address that was mapped before and expects the
 * kernel's answer: secret memory (mapped over it with mmap, or moved there with mremap) is
 * never pinned, whatever the CPU may do with it; read-only, PROT_NONE and unmapped memory are
 * EFAULT however they came about, even through calls the preload does not see. */
#include "fixture.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "iommufd_uapi.h"

#define IOVA (1ull << 20)
#define LENGTH (4 * 4096)

static int iommu;
static uint32_t ioas;

/* IOAS_MAP of `buffer`, readable and writeable, at IOVA: 0 or the errno. Unmaps again. */
static int map_writeable(void *buffer) {
    struct ioas_map m = {.size = sizeof m, .flags = 1 | 2 | 4, .ioas_id = ioas, .user_va = (uintptr_t)buffer,
                         .length = LENGTH, .iova = IOVA};
    if (ioctl(iommu, IOMMU_IOAS_MAP, &m) != 0) return errno;
    struct ioas_unmap u = {.size = sizeof u, .ioas_id = ioas, .iova = IOVA, .length = LENGTH};
    CHECK(ioctl(iommu, IOMMU_IOAS_UNMAP, &u) == 0 && u.length == LENGTH, "IOAS_UNMAP");
    return 0;
}

static void *anonymous_at(void *address) {
    void *p = mmap(address, LENGTH, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (address ? MAP_FIXED : 0), -1, 0);
    CHECK(p != MAP_FAILED, "mmap");
    return p;
}

int main(void) {
    iommu = open("/dev/iommu", O_RDWR);
    CHECK(iommu >= 0, "open /dev/iommu");
    int device = open("/dev/vfio/devices/vfio0", O_RDWR);
    CHECK(device >= 0, "open vfio0");
    struct bind b = {.argsz = sizeof b, .iommufd = iommu};
    CHECK(ioctl(device, VFIO_DEVICE_BIND_IOMMUFD, &b) == 0, "bind");
    struct ioas_alloc a = {.size = sizeof a};
    CHECK(ioctl(iommu, IOMMU_IOAS_ALLOC, &a) == 0, "IOAS_ALLOC");
    ioas = a.out_ioas_id;
    struct attach at = {.argsz = sizeof at, .pt_id = ioas};
    CHECK(ioctl(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0, "attach");

    char *buffer = anonymous_at(NULL);
    CHECK(map_writeable(buffer) == 0, "first map");
    CHECK(map_writeable(buffer) == 0, "second map");
    OK("memory maps again and again");

    /* Through calls the preload does not see: the touch of each page finds them out. */
    CHECK(mprotect(buffer + 4096, 4096, PROT_READ) == 0, "mprotect");
    int e = map_writeable(buffer);
    CHECK(e == EFAULT, "read-only page in a writeable map: %d", e);
    CHECK(mprotect(buffer + 4096, 4096, PROT_NONE) == 0, "mprotect");
    e = map_writeable(buffer);
    CHECK(e == EFAULT, "PROT_NONE page: %d", e);
    CHECK(mprotect(buffer + 4096, 4096, PROT_READ | PROT_WRITE) == 0, "mprotect");
    CHECK(map_writeable(buffer) == 0, "writeable again");
    CHECK(syscall(SYS_munmap, buffer + 2 * 4096, 4096) == 0, "raw munmap");
    e = map_writeable(buffer);
    CHECK(e == EFAULT, "unmapped page: %d", e);
    anonymous_at(buffer);
    CHECK(map_writeable(buffer) == 0, "mapped again");
    OK("read-only, PROT_NONE and unmapped pages are EFAULT, however they came about");

    /* Secret memory: the CPU may use it, the kernel never pins it. */
    int secret = (int)syscall(447 /* memfd_secret */, 0);
    if (secret < 0) {
        OK("secret memory skipped: memfd_secret is not available (%s)", strerror(errno));
        return 0;
    }
    CHECK(ftruncate(secret, 2 * LENGTH) == 0, "ftruncate");
    char *over = mmap(buffer, LENGTH, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, secret, 0);
    CHECK(over == buffer, "mmap secret memory over the buffer");
    memset(over, 's', LENGTH);
    e = map_writeable(buffer);
    CHECK(e == EFAULT, "secret memory mapped over memory that passed before: %d", e);
    OK("secret memory mapped over remembered memory is EFAULT");

    char *elsewhere = mmap(NULL, LENGTH, PROT_READ | PROT_WRITE, MAP_SHARED, secret, LENGTH);
    CHECK(elsewhere != MAP_FAILED, "mmap secret memory");
    elsewhere[0] = 's';
    anonymous_at(buffer);
    CHECK(map_writeable(buffer) == 0, "ordinary memory again");
    CHECK(map_writeable(buffer) == 0, "and again");
    char *moved = mremap(elsewhere, LENGTH, LENGTH, MREMAP_MAYMOVE | MREMAP_FIXED, buffer);
    CHECK(moved == buffer, "mremap secret memory onto the buffer");
    CHECK(moved[0] == 's', "the secret page moved");
    e = map_writeable(buffer);
    CHECK(e == EFAULT, "secret memory moved over memory that passed before: %d", e);
    OK("secret memory moved over remembered memory is EFAULT");
    return 0;
}
