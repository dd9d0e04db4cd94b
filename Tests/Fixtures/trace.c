/* Makes one call of each kind the trace must show, on descriptors ioasid serves, and prints
 * nothing but "trace fixture done": the test reads the trace ioasid wrote.
 *
 * Calls: open /dev/iommu; IOMMU_IOAS_ALLOC (succeeds); an unknown iommufd request (ENOTTY); an
 * IOMMU_IOAS_ALLOC whose argument pointer is 0x10 (EFAULT); an IOMMU_IOAS_MAP whose size is 8,
 * below the struct's last mandatory field (EINVAL, the size is the error); read and write on
 * /dev/iommu (EINVAL); IOMMU_FAULT_QUEUE_ALLOC, then a read of 40 bytes (one record, none
 * pending) and of 7 bytes (ESPIPE) on the queue; mmap of an unknown offset (ENXIO); dup; close.
 *
 * The structures are written out here (iommufd.h of Linux 7.2): the fixture must build without
 * the kernel's headers. */
#include "fixture.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

struct ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct ioas_map { uint32_t size, flags, ioas_id, reserved; uint64_t user_va, length, iova; };
struct fault_alloc { uint32_t size, flags, out_fault_id, out_fault_fd; };

#define IOAS_ALLOC _IO(';', 0x81)
#define IOAS_MAP _IO(';', 0x85)
#define FAULT_QUEUE_ALLOC _IO(';', 0x8e)
#define UNKNOWN_REQUEST _IO(';', 0x7f)

int main(void) {
    int fd = open("/dev/iommu", O_RDWR);
    CHECK(fd >= 0, "open /dev/iommu");

    struct ioas_alloc alloc = {.size = sizeof alloc};
    CHECK(ioctl(fd, IOAS_ALLOC, &alloc) == 0, "IOMMU_IOAS_ALLOC");
    CHECK_ERRNO(ioctl(fd, UNKNOWN_REQUEST, 0), ENOTTY);
    CHECK_ERRNO(ioctl(fd, IOAS_ALLOC, (void *)0x10), EFAULT);
    struct ioas_map map = {.size = 8, .ioas_id = alloc.out_ioas_id};
    CHECK_ERRNO(ioctl(fd, IOAS_MAP, &map), EINVAL);

    char buffer[64] = {0};
    CHECK_ERRNO(read(fd, buffer, 8), EINVAL);
    CHECK_ERRNO(write(fd, buffer, 8), EINVAL);

    struct fault_alloc fault = {.size = sizeof fault};
    CHECK(ioctl(fd, FAULT_QUEUE_ALLOC, &fault) == 0, "IOMMU_FAULT_QUEUE_ALLOC");
    int queue = (int)fault.out_fault_fd;
    CHECK(read(queue, buffer, 40) == 0, "an empty fault queue reads 0 bytes");
    CHECK_ERRNO(read(queue, buffer, 7), ESPIPE);

    CHECK(mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0x1000) == MAP_FAILED, "mmap of an unknown offset fails");

    int copy = dup(fd);
    CHECK(copy >= 0, "dup");
    CHECK(close(copy) == 0 && close(queue) == 0 && close(fd) == 0, "close");
    printf("trace fixture done\n");
    return 0;
}
