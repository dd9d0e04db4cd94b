/* Checks the preload against fake_engine.so (see fake_engine.h): results, errno values, buffers
 * and mmap addresses travel unchanged between the program and the engine, and the engine hears
 * of every dup and close of its descriptors.
 *
 * `contract` runs the checks; `contract missing-engine` expects IOASID_ENGINE to name no library. */
#include "fixture.h"
#include "fake_engine.h"
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static long live(int query) {
    return ioctl(query, FAKE_LIVE);
}

static int missing_engine(void) {
    CHECK_ERRNO(open("/dev/iommu", O_RDWR), ENXIO);
    CHECK_ERRNO(openat(AT_FDCWD, "/dev/iommu", O_RDWR), ENXIO);
    int null = open("/dev/null", O_RDONLY);
    CHECK(null >= 0 && close(null) == 0, "other files still open");
    printf("missing engine ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "missing-engine") == 0) return missing_engine();

    int query = open("/dev/iommu", O_RDWR);
    CHECK(query >= 0, "open");
    CHECK(live(query) == 1, "one live fd");
    int echoed = -1;
    CHECK(ioctl(query, FAKE_ECHO, &echoed) == 77 && echoed == query, "ioctl result and argument");
    CHECK_ERRNO(ioctl(query, FAKE_ERRNO(EPROTO)), EPROTO);
    CHECK_ERRNO(ioctl(query, FAKE_ERRNO(4095)), 4095);
    CHECK_ERRNO(open("/dev/iommu", O_RDWR | O_EXCL), EACCES);
    OK("open and ioctl");

    char buffer[16] = {0};
    CHECK(read(query, buffer, sizeof buffer) == 16 && buffer[0] == FAKE_READ_BYTE && buffer[15] == FAKE_READ_BYTE, "read");
    CHECK(write(query, buffer, 10) == 5, "write");
    OK("read and write");

    CHECK(mmap(NULL, 4096, PROT_READ, MAP_SHARED, query, 8192) == (void *)(FAKE_MMAP_BASE + 8192), "mmap");
    CHECK(mmap64(NULL, 4096, PROT_READ, MAP_SHARED, query, 4096) == (void *)(FAKE_MMAP_BASE + 4096), "mmap64");
    CHECK(mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_SHARED, query, 0) == MAP_FAILED && errno == EPERM, "mmap error");
    void *anonymous = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, query, 0);
    CHECK(anonymous != MAP_FAILED && (long)anonymous != FAKE_MMAP_BASE, "MAP_ANONYMOUS ignores the fd");
    munmap(anonymous, 4096);
    OK("mmap");

    int fd = open("/dev/iommu", O_RDWR);
    CHECK(fd >= 0 && live(query) == 2, "second open");
    int copy = dup(fd);
    CHECK(copy >= 0 && live(query) == 3 && ioctl(query, FAKE_LAST_DUP) == (((long)fd << 20) | copy), "dup tells the engine");
    CHECK(dup2(fd, 50) == 50 && live(query) == 4 && ioctl(query, FAKE_LAST_DUP) == (((long)fd << 20) | 50), "dup2");
    CHECK(dup3(fd, 51, O_CLOEXEC) == 51 && live(query) == 5, "dup3");
    int duplicated = fcntl(fd, F_DUPFD_CLOEXEC, 60);
    CHECK(duplicated >= 60 && live(query) == 6, "F_DUPFD_CLOEXEC");
    int duplicated2 = fcntl64(fd, F_DUPFD, 70);
    CHECK(duplicated2 >= 70 && live(query) == 7, "fcntl64 F_DUPFD");
    CHECK(fcntl(fd, F_GETFD) == 0 && live(query) == 7, "F_GETFD does not duplicate");
    CHECK(close(fd) == 0 && live(query) == 6, "close tells the engine");
    int pipe_fds[2];
    CHECK(pipe(pipe_fds) == 0, "pipe");
    CHECK(dup2(pipe_fds[0], 50) == 50 && live(query) == 5, "dup2 over an engine fd tells the engine");
    CHECK(ioctl(50, FAKE_ECHO, &echoed) == -1 && errno == ENOTTY, "fd 50 is a pipe again");
    CHECK(dup2(copy, copy) == copy && live(query) == 5, "dup2 onto itself changes nothing");
    CHECK(close_range(51, 51, 0) == 0 && live(query) == 4, "close_range tells the engine");
    CHECK(close_range(duplicated, duplicated, CLOSE_RANGE_CLOEXEC) == 0 && live(query) == 4, "CLOSE_RANGE_CLOEXEC closes nothing");
    CHECK(ioctl(duplicated, FAKE_ECHO, &echoed) == 77 && echoed == duplicated, "still the engine's");
    CHECK(close(copy) == 0 && close(duplicated) == 0 && close(duplicated2) == 0 && live(query) == 1, "close the rest");
    OK("dup and close bookkeeping");

    int installed = (int)ioctl(query, FAKE_INSTALL);
    CHECK(installed >= 0 && live(query) == 2, "the engine installs an fd");
    CHECK(ioctl(installed, FAKE_ECHO, &echoed) == 77 && echoed == installed, "an installed fd reaches the engine");
    struct pollfd events = {.fd = installed, .events = POLLIN};
    CHECK(poll(&events, 1, 0) == 0, "an installed eventfd polls as the engine set it");
    CHECK(close(installed) == 0 && live(query) == 1, "close an installed fd");
    OK("ioasid_preload_claim");

    int numbers[] = {5000, 65535, 65536, 100000, 1 << 30, 0x7fffffff};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        int number = numbers[i];
        CHECK(ioctl(query, FAKE_CLAIM, &number) == 0, "claim %d", number);
        CHECK(ioctl(number, FAKE_ECHO, &echoed) == 77 && echoed == number, "claimed %d reaches the engine", number);
        CHECK_ERRNO(close(number), EBADF); /* the engine forgets it; the kernel has no such fd */
        CHECK_ERRNO(ioctl(number, FAKE_ECHO, &echoed), EBADF);
    }
    CHECK(live(query) == 1, "all claims forgotten");
    OK("table for large fds");

    CHECK(close(query) == 0, "close");
    CHECK_ERRNO(ioctl(query, FAKE_LIVE), EBADF);
    printf("contract ok\n");
    return 0;
}
