/* Descriptors across execve, run under `ioasid run --machine vtd` (see PreloadTests.swift), the
 * way a launcher hands QEMU its `-device vfio-pci,fd=N` and `-object iommufd,fd=N`:
 *
 *   exec           opens the VFIO cdev and /dev/iommu at fixed numbers (plus one /dev/iommu
 *                  with O_CLOEXEC and an eventfd of its own), then execv()s itself as `exec child`
 *   exec child     the handed descriptors are the nodes again (fstat, bind, IOAS_ALLOC), the
 *                  close-on-exec one is gone, its own eventfd is untouched, and the hand-over
 *                  variable is not left in its environment
 *   exec forged    execs itself (raw execve, past the interposer) with IOASID_INHERITED_FDS
 *                  naming descriptor 0 (/dev/null): the child consumes the variable and leaves
 *                  descriptor 0 alone */
#include "fixture.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define VFIO_DEVICE_BIND_IOMMUFD _IO(';', 100 + 18)
#define IOMMU_IOAS_ALLOC _IO(';', 0x81)
struct bind { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; uint64_t token_uuid_ptr; };
struct ioas_alloc { uint32_t size, flags, out_ioas_id; };

enum { CDEV = 20, IOMMUFD = 21, OWN_EVENTFD = 22 };

static void expect_node(int fd, unsigned major_number, unsigned minor_number) {
    struct stat st;
    CHECK(fstat(fd, &st) == 0, "fstat %d", fd);
    CHECK(S_ISCHR(st.st_mode) && major(st.st_rdev) == major_number && minor(st.st_rdev) == minor_number,
          "fd %d is char %u:%u, expected %u:%u", fd, major(st.st_rdev), minor(st.st_rdev), major_number, minor_number);
}

static void place(const char *path, int flags, int number) {
    int fd = open(path, flags);
    CHECK(fd >= 0, "open %s", path);
    CHECK(dup2(fd, number) == number, "dup2 %s to %d", path, number);
    CHECK(close(fd) == 0, "close");
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "forged") == 0) {
        char *child[] = {argv[0], "forged-child", NULL};
        extern char **environ;
        char *environment[256];
        size_t count = 0;
        for (char **entry = environ; *entry != NULL && count < 254; entry++) environment[count++] = *entry;
        environment[count++] = "IOASID_INHERITED_FDS=0:10:257";
        environment[count] = NULL;
        syscall(SYS_execve, argv[0], child, environment);
        CHECK(0, "execve");
    }
    if (argc >= 2 && strcmp(argv[1], "forged-child") == 0) {
        CHECK(getenv("IOASID_INHERITED_FDS") == NULL, "the variable is consumed");
        struct stat st;
        CHECK(fstat(0, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1, "stdin is still /dev/null");
        OK("a listed descriptor that is no eventfd is left alone");
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "child") == 0) {
        CHECK(getenv("IOASID_INHERITED_FDS") == NULL, "the variable is consumed");
        expect_node(CDEV, 241, 0);
        expect_node(IOMMUFD, 10, 257);
        OK("handed descriptors are the nodes again");
        int cloexec = atoi(argv[2]);
        CHECK_ERRNO(fcntl(cloexec, F_GETFD), EBADF);
        struct stat st;
        CHECK(fstat(OWN_EVENTFD, &st) == 0 && !S_ISCHR(st.st_mode), "the program's eventfd is no node");
        uint64_t value = 0;
        CHECK(read(OWN_EVENTFD, &value, sizeof value) == sizeof value && value == 7, "the program's eventfd keeps its count");
        OK("close-on-exec and foreign descriptors");
        struct ioas_alloc alloc = {sizeof alloc, 0, 0};
        CHECK(ioctl(IOMMUFD, IOMMU_IOAS_ALLOC, &alloc) == 0 && alloc.out_ioas_id != 0, "IOAS_ALLOC on the handed iommufd");
        struct bind bind = {sizeof bind, 0, IOMMUFD, 0, 0};
        CHECK(ioctl(CDEV, VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0, "bind the handed cdev to the handed iommufd");
        OK("bind after exec");
        return 0;
    }
    place("/dev/vfio/devices/vfio0", O_RDWR, CDEV);
    place("/dev/iommu", O_RDWR, IOMMUFD);
    int cloexec = open("/dev/iommu", O_RDWR | O_CLOEXEC);
    CHECK(cloexec >= 0, "open /dev/iommu O_CLOEXEC");
    int own = eventfd(7, 0);
    CHECK(own >= 0 && dup2(own, OWN_EVENTFD) == OWN_EVENTFD, "an eventfd of the program's own");
    char number[16];
    snprintf(number, sizeof number, "%d", cloexec);
    char *child[] = {argv[0], "child", number, NULL};
    execv(argv[0], child);
    CHECK(0, "execv");
}
