/* A program that never opens /dev/iommu: under the preload every call must behave exactly as
 * without it, and the engine must never be loaded. Argument "preloaded" additionally checks that
 * the preload is mapped (so the run really went through it). */
#include "fixture.h"
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

int __open_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);

static void check_pipe(int in, int out, const char *what) {
    CHECK(write(out, "hello", 5) == 5, "write to %s", what);
    int pending = -1;
    CHECK(ioctl(in, FIONREAD, &pending) == 0 && pending == 5, "FIONREAD on %s gives %d", what, pending);
    char buffer[8] = {0};
    CHECK(read(in, buffer, sizeof buffer) == 5 && memcmp(buffer, "hello", 5) == 0, "read from %s", what);
}

int main(int argc, char **argv) {
    int expect_preload = argc > 1 && strcmp(argv[1], "preloaded") == 0;
    if (expect_preload) {
        CHECK(mapped("libioasid-preload.so") == 1, "the preload is mapped");
        OK("preload mapped");
    }

    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    check_pipe(fds[0], fds[1], "pipe");
    OK("pipe read/write/ioctl");

    int copy = dup(fds[0]);
    CHECK(copy >= 0, "dup");
    int copy2 = dup2(fds[1], 40);
    CHECK(copy2 == 40, "dup2");
    int copy3 = dup3(fds[1], 41, O_CLOEXEC);
    CHECK(copy3 == 41 && (fcntl(41, F_GETFD) & FD_CLOEXEC), "dup3 O_CLOEXEC");
    int copy4 = fcntl(fds[0], F_DUPFD_CLOEXEC, 50);
    CHECK(copy4 >= 50 && (fcntl(copy4, F_GETFD) & FD_CLOEXEC), "F_DUPFD_CLOEXEC");
    int copy5 = fcntl(fds[0], F_DUPFD, 60);
    CHECK(copy5 >= 60 && !(fcntl(copy5, F_GETFD) & FD_CLOEXEC), "F_DUPFD");
    CHECK(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0 && (fcntl(fds[0], F_GETFL) & O_NONBLOCK), "F_SETFL");
    check_pipe(copy, copy2, "duplicated pipe");
    CHECK(close(copy) == 0 && close(copy2) == 0 && close(copy3) == 0 && close(copy4) == 0 && close(copy5) == 0, "close copies");
    CHECK_ERRNO(close(copy), EBADF);
    CHECK_ERRNO(ioctl(copy2, FIONREAD, &(int){0}), EBADF);
    OK("dup family and close");

    /* A foreign fd above the fast table (1 << 16), if the limit allows it. */
    if (raise_fd_limit(70001)) {
        CHECK(dup2(fds[1], 70000) == 70000, "dup2 to 70000");
        check_pipe(fds[0], 70000, "pipe at fd 70000");
        CHECK(close(70000) == 0, "close 70000");
        OK("large fd");
    }

    int event = eventfd(0, EFD_NONBLOCK);
    CHECK(event >= 0, "eventfd");
    struct pollfd waiting = {.fd = event, .events = POLLIN};
    CHECK(poll(&waiting, 1, 0) == 0, "eventfd not readable yet");
    uint64_t one = 1;
    CHECK(write(event, &one, sizeof one) == sizeof one, "eventfd write");
    CHECK(poll(&waiting, 1, 0) == 1 && (waiting.revents & POLLIN), "eventfd readable");
    uint64_t value = 0;
    CHECK(read(event, &value, sizeof value) == sizeof value && value == 1, "eventfd read");
    CHECK_ERRNO(read(event, &value, sizeof value), EAGAIN);
    CHECK(close(event) == 0, "close eventfd");
    OK("eventfd poll/read/write");

    volatile int flags = O_RDONLY; /* not a constant: fortified code calls __open_2 */
    int null1 = open("/dev/null", flags);
    int null2 = openat(AT_FDCWD, "/dev/null", O_RDWR);
    int null3 = __open_2("/dev/null", flags);
    int null4 = __openat_2(AT_FDCWD, "/dev/null", flags);
    int null5 = open64("/dev/null", O_RDONLY);
    CHECK(null1 >= 0 && null2 >= 0 && null3 >= 0 && null4 >= 0 && null5 >= 0, "open /dev/null");
    CHECK(write(null2, "x", 1) == 1 && read(null1, &value, 1) == 0, "read/write /dev/null");
    char path[] = "/tmp/ioasid-passthrough-XXXXXX";
    int temp = mkstemp(path);
    CHECK(temp >= 0, "mkstemp");
    int created = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(created >= 0 && write(created, "mapped", 6) == 6, "open O_CREAT with mode");
    char *map = mmap(NULL, 6, PROT_READ, MAP_SHARED, created, 0);
    CHECK(map != MAP_FAILED && memcmp(map, "mapped", 6) == 0, "mmap a file");
    munmap(map, 6);
    void *anonymous = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(anonymous != MAP_FAILED, "anonymous mmap");
    munmap(anonymous, 4096);
    unlink(path);
    CHECK_ERRNO(open("/nonexistent/ioasid", O_RDONLY), ENOENT);
    close(null1), close(null2), close(null3), close(null4), close(null5), close(temp), close(created);
    OK("open family and mmap");

    int range[2];
    CHECK(pipe(range) == 0 && dup2(range[0], 90) == 90 && dup2(range[1], 91) == 91, "fds for close_range");
    CHECK(close_range(90, 91, 0) == 0, "close_range");
    CHECK_ERRNO(fcntl(90, F_GETFD), EBADF);
    close(range[0]), close(range[1]);
    OK("close_range");

    CHECK(mapped("libIOASIDEngine") == 0, "the engine was never loaded");
    OK("engine not loaded");
    printf("passthrough ok\n");
    return 0;
}
