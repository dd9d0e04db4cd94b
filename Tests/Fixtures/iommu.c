/* Opens /dev/iommu under `ioasid run` and checks that calls on the descriptor reach the engine,
 * that descriptor bookkeeping (dup, dup2, dup3, F_DUPFD, close, close_range, fork) follows the
 * kernel's rules, and that foreign descriptors stay untouched.
 *
 * Facts used (stable whatever the engine implements later): an unknown ioctl such as
 * _IO(';', 0x7f) fails with ENOTTY; /dev/iommu has no read or write, which fail with EINVAL
 * (on a plain eventfd an 8-byte write would succeed and an 8-byte read would fail with EAGAIN);
 * a kernel file without a poll method polls readable and writable. */
#include "fixture.h"
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

#define UNKNOWN_IOCTL _IO(';', 0x7f)

/* Whether `fd` is served by the engine as a /dev/iommu file. */
static void check_engine_fd(int fd, const char *what) {
    CHECK_ERRNO(ioctl(fd, UNKNOWN_IOCTL), ENOTTY);
    uint64_t value = 1;
    CHECK_ERRNO(write(fd, &value, sizeof value), EINVAL);
    CHECK_ERRNO(read(fd, &value, sizeof value), EINVAL);
    (void)what;
}

static void check_closed(int fd) {
    CHECK_ERRNO(ioctl(fd, UNKNOWN_IOCTL), EBADF);
    CHECK_ERRNO(fcntl(fd, F_GETFD), EBADF);
}

static void check_pipe(int in, int out) {
    char byte = 'x';
    CHECK(write(out, &byte, 1) == 1 && read(in, &byte, 1) == 1 && byte == 'x', "pipe works");
}

static void *churn(void *unused) {
    (void)unused;
    for (int round = 0; round < 200; round++) {
        int fd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
        CHECK(fd >= 0, "open in a thread");
        int copy = dup(fd);
        CHECK(copy >= 0, "dup in a thread");
        CHECK_ERRNO(ioctl(fd, UNKNOWN_IOCTL), ENOTTY);
        CHECK(close(fd) == 0, "close in a thread");
        CHECK_ERRNO(ioctl(copy, UNKNOWN_IOCTL), ENOTTY);
        CHECK(close(copy) == 0, "close copy in a thread");
    }
    return NULL;
}

int main(void) {
    CHECK(mapped("libIOASIDEngine") == 0, "the engine is not loaded before the first open");
    errno = 12345;
    int fd = open("/dev/iommu", O_RDWR);
    CHECK(fd >= 0, "open /dev/iommu");
    CHECK(errno == 12345, "a successful open leaves errno alone");
    CHECK(mapped("libIOASIDEngine") == 1, "the engine is loaded after the first open");
    CHECK(!(fcntl(fd, F_GETFD) & FD_CLOEXEC), "no O_CLOEXEC, no FD_CLOEXEC");
    check_engine_fd(fd, "fd");
    OK("open and ioctl reach the engine");

    struct pollfd events = {.fd = fd, .events = POLLIN | POLLOUT};
    CHECK(poll(&events, 1, 0) == 1 && (events.revents & (POLLIN | POLLOUT)) == (POLLIN | POLLOUT), "poll: readable and writable");
    OK("poll");

    void *mapping = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(mapping == MAP_FAILED && errno != EBADF, "mmap of an unknown offset fails");
    OK("mmap");

    /* The kernel answers these for every file before the driver: the flags change. */
    CHECK(ioctl(fd, FIOCLEX) == 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC), "FIOCLEX sets close-on-exec");
    CHECK(ioctl(fd, FIONCLEX) == 0 && !(fcntl(fd, F_GETFD) & FD_CLOEXEC), "FIONCLEX clears it");
    int on = 1, off = 0;
    CHECK(ioctl(fd, FIONBIO, &on) == 0 && (fcntl(fd, F_GETFL) & O_NONBLOCK), "FIONBIO on");
    CHECK(ioctl(fd, FIONBIO, &off) == 0 && !(fcntl(fd, F_GETFL) & O_NONBLOCK), "FIONBIO off");
    CHECK_ERRNO(ioctl(fd, FIONBIO, (int *)8), EFAULT);
    CHECK(ioctl(fd, FIOASYNC, &off) == 0, "FIOASYNC off: no change");
    CHECK_ERRNO(ioctl(fd, FIOASYNC, &on), ENOTTY); /* no fasync on /dev/iommu */
    CHECK_ERRNO(ioctl(fd, FIONREAD, &on), ENOTTY); /* FIONREAD of a char device is the driver's */
    check_engine_fd(fd, "fd after the file-level requests");
    OK("file-level ioctls");

    volatile int flags = O_RDWR | O_CLOEXEC;
    int others[] = {
        open("/dev/iommu", flags), open64("/dev/iommu", flags), openat(AT_FDCWD, "/dev/iommu", flags),
        openat64(AT_FDCWD, "/dev/iommu", flags), __open_2("/dev/iommu", flags), __open64_2("/dev/iommu", flags),
        __openat_2(AT_FDCWD, "/dev/iommu", flags), __openat64_2(AT_FDCWD, "/dev/iommu", flags),
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        CHECK(others[i] >= 0, "open variant %zu", i);
        CHECK(fcntl(others[i], F_GETFD) & FD_CLOEXEC, "O_CLOEXEC gives FD_CLOEXEC");
        check_engine_fd(others[i], "variant");
    }
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) CHECK(close(others[i]) == 0, "close variant");
    OK("open variants");

    int copy = dup(fd);
    CHECK(copy >= 0 && copy != fd, "dup");
    CHECK(close(fd) == 0, "close the original");
    check_closed(fd);
    check_engine_fd(copy, "dup after closing the original");
    OK("dup outlives the original");

    int pipe_fds[2];
    CHECK(pipe(pipe_fds) == 0, "pipe");
    int target = dup(pipe_fds[1]);
    CHECK(dup2(copy, target) == target, "dup2 over a foreign fd");
    check_engine_fd(target, "dup2 target");
    CHECK(dup2(pipe_fds[1], target) == target, "dup2 a foreign fd over an engine fd");
    check_pipe(pipe_fds[0], target);
    CHECK(dup2(copy, copy) == copy, "dup2 onto itself");
    check_engine_fd(copy, "after dup2 onto itself");
    int third = dup3(copy, 77, O_CLOEXEC);
    CHECK(third == 77 && (fcntl(77, F_GETFD) & FD_CLOEXEC), "dup3 O_CLOEXEC");
    check_engine_fd(77, "dup3");
    int fourth = fcntl(copy, F_DUPFD_CLOEXEC, 100);
    CHECK(fourth >= 100 && (fcntl(fourth, F_GETFD) & FD_CLOEXEC), "F_DUPFD_CLOEXEC");
    check_engine_fd(fourth, "F_DUPFD_CLOEXEC");
    int fifth = fcntl(copy, F_DUPFD, 110);
    CHECK(fifth >= 110, "F_DUPFD");
    check_engine_fd(fifth, "F_DUPFD");
    CHECK(close(77) == 0 && close(fourth) == 0 && close(fifth) == 0 && close(target) == 0, "close copies");
    check_closed(77);
    check_engine_fd(copy, "the last copy");
    OK("dup2, dup3, F_DUPFD");

    if (raise_fd_limit(70001)) {
        CHECK(dup2(copy, 70000) == 70000, "dup2 to 70000");
        check_engine_fd(70000, "fd 70000");
        CHECK(close(70000) == 0, "close 70000");
        check_closed(70000);
        OK("large fd");
    }

    pid_t child = fork();
    CHECK(child >= 0, "fork");
    if (child == 0) {
        check_engine_fd(copy, "in the child");
        int own = open("/dev/iommu", O_RDWR);
        CHECK(own >= 0, "open in the child");
        check_engine_fd(own, "child's own");
        _exit(close(own) == 0 && close(copy) == 0 ? 0 : 1);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child passed");
    check_engine_fd(copy, "in the parent after the child closed its copy");
    OK("fork");

    int range_a = dup2(copy, 120), range_b = dup2(copy, 121);
    CHECK(range_a == 120 && range_b == 121, "fds for close_range");
    CHECK(close_range(120, 121, 0) == 0, "close_range");
    check_closed(120);
    check_closed(121);
    check_engine_fd(copy, "after close_range");
    OK("close_range");

    pthread_t threads[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&threads[i], NULL, churn, NULL) == 0, "pthread_create");
    for (int round = 0; round < 2000; round++) check_pipe(pipe_fds[0], pipe_fds[1]);
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
    OK("threads");

    CHECK(close(copy) == 0, "close the last copy");
    check_closed(copy);
    check_pipe(pipe_fds[0], pipe_fds[1]);
    OK("close");
    printf("iommu ok\n");
    return 0;
}
