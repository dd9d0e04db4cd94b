/* Descriptor ownership: whatever path a /dev/iommu descriptor takes, calls on its number reach
 * the file the kernel would call — the iommufd while it is open, whatever the kernel put there
 * since — and other /dev/iommu descriptors keep working. The same file runs on the real kernel
 * (the oracle, built statically) and under `ioasid run`.
 *
 * Paths: a raw close or close_range system call (the number is then handed out again by open,
 * pipe, eventfd, memfd_create, dup); close_range with and without CLOSE_RANGE_UNSHARE, with
 * CLOSE_RANGE_CLOEXEC, closefrom, dup2/dup3 over an iommufd; a vfork child and a posix_spawn
 * child that rearrange their copy of the descriptor table; fork while another thread is inside
 * an ioctl; a close racing an ioctl in another thread; poll on a reused number; a fault queue
 * moved to another number by dup and close while a second queue takes its old one.
 *
 * Facts used (from the kernel): an unknown ioctl on /dev/iommu fails with ENOTTY; /dev/iommu
 * has no read or write, which fail with EINVAL; it has no poll method, so it polls readable and
 * writable; an 8-byte read of an eventfd whose count is 3 returns 3; IOMMU_IOAS_ALLOC on an open
 * iommufd succeeds; any call on a closed number fails with EBADF. */
#include "fixture.h"
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define UNKNOWN_IOCTL _IO(';', 0x7f)
#define IOMMU_DESTROY _IO(';', 0x80)
#define IOMMU_IOAS_ALLOC _IO(';', 0x81)
struct destroy_arg { uint32_t size, id; };
struct ioas_alloc { uint32_t size, flags, out_ioas_id; };

extern char **environ;

static int open_iommu(void) {
    int fd = open("/dev/iommu", O_RDWR);
    CHECK(fd >= 0, "open /dev/iommu");
    return fd;
}

/* Whether `fd` is answered as /dev/iommu. */
static void check_iommu(int fd) {
    CHECK_ERRNO(ioctl(fd, UNKNOWN_IOCTL), ENOTTY);
    uint64_t value = 1;
    CHECK_ERRNO(write(fd, &value, sizeof value), EINVAL);
    CHECK_ERRNO(read(fd, &value, sizeof value), EINVAL);
}

static void check_closed(int fd) {
    CHECK_ERRNO(ioctl(fd, UNKNOWN_IOCTL), EBADF);
    char byte;
    CHECK_ERRNO(read(fd, &byte, 1), EBADF);
    CHECK_ERRNO(fcntl(fd, F_GETFD), EBADF);
}

/* A regular file holding "hello", open for reading and writing. */
static int hello_file(void) {
    char path[] = "/tmp/ioasid-fds-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    unlink(path);
    CHECK(write(fd, "hello", 5) == 5 && lseek(fd, 0, SEEK_SET) == 0, "write the file");
    return fd;
}

static void check_hello(int fd) {
    char text[8] = {0};
    CHECK(pread(fd, text, sizeof text, 0) == 5 && memcmp(text, "hello", 5) == 0, "fd %d reads the file", fd);
    CHECK(lseek(fd, 0, SEEK_SET) == 0, "lseek");
    CHECK(read(fd, text, sizeof text) == 5 && memcmp(text, "hello", 5) == 0, "fd %d: read() reads the file", fd);
    CHECK_ERRNO(ioctl(fd, UNKNOWN_IOCTL), ENOTTY);
}

static void check_pipe(int in, int out) {
    char byte = 'x';
    CHECK(write(out, &byte, 1) == 1, "write to pipe fd %d", out);
    byte = 0;
    CHECK(read(in, &byte, 1) == 1 && byte == 'x', "read from pipe fd %d", in);
}

static void check_readiness(int fd, short expected) {
    struct pollfd one = {.fd = fd, .events = POLLIN | POLLOUT};
    CHECK(poll(&one, 1, 0) >= 0, "poll");
    CHECK((one.revents & (POLLIN | POLLOUT)) == expected, "fd %d polls 0x%x, expected 0x%x", fd, one.revents, expected);
}

/* ---- 1. raw close system calls ------------------------------------------------------------ */

static void raw_close(int keeper) {
    int fd = open_iommu();
    CHECK(syscall(SYS_close, fd) == 0, "raw close");
    check_closed(fd);
    int file = hello_file();
    CHECK(file == fd, "the file got the closed number (%d, %d)", file, fd);
    check_hello(file);
    close(file);

    fd = open_iommu();
    CHECK(syscall(SYS_close, fd) == 0, "raw close");
    int pipe_fds[2];
    CHECK(pipe(pipe_fds) == 0 && pipe_fds[0] == fd, "pipe got the closed number");
    check_pipe(pipe_fds[0], pipe_fds[1]);
    close(pipe_fds[0]);
    close(pipe_fds[1]);

    fd = open_iommu();
    CHECK(syscall(SYS_close, fd) == 0, "raw close");
    int counter = eventfd(3, 0);
    CHECK(counter == fd, "eventfd got the closed number");
    uint64_t value = 0;
    CHECK(read(counter, &value, sizeof value) == 8 && value == 3, "eventfd reads its count");
    close(counter);

    fd = open_iommu();
    CHECK(syscall(SYS_close, fd) == 0, "raw close");
    int memory = memfd_create("fds", 0);
    CHECK(memory == fd, "memfd_create got the closed number");
    CHECK(write(memory, "hello", 5) == 5, "write the memfd");
    check_hello(memory);
    close(memory);

    /* dup of a foreign descriptor onto the lowest number. */
    int plain = hello_file();
    fd = open_iommu();
    CHECK(syscall(SYS_close, fd) == 0, "raw close");
    int copy = dup(plain);
    CHECK(copy == fd, "dup got the closed number");
    check_hello(copy);
    close(copy);
    close(plain);

    /* close_range as a raw system call, with and without CLOSE_RANGE_UNSHARE. */
    for (int flags = 0; flags <= (int)CLOSE_RANGE_UNSHARE; flags += (int)CLOSE_RANGE_UNSHARE) {
        int first = open_iommu(), second = open_iommu();
        CHECK(second == first + 1, "adjacent numbers");
        CHECK(syscall(SYS_close_range, first, second, flags) == 0, "raw close_range flags %d", flags);
        check_closed(first);
        check_closed(second);
        int a = hello_file(), b = hello_file();
        CHECK(a == first && b == second, "files got the closed numbers");
        check_hello(a);
        check_hello(b);
        close(a);
        close(b);
    }

    /* The closed number given back to /dev/iommu itself, then closed normally. */
    fd = open_iommu();
    CHECK(syscall(SYS_close, fd) == 0, "raw close");
    int again = open_iommu();
    CHECK(again == fd, "a new /dev/iommu on the closed number");
    check_iommu(again);
    CHECK(close(again) == 0, "close");
    check_closed(again);

    check_iommu(keeper);
    OK("a number closed by a raw system call is the kernel's again");
}

/* ---- 2. close_range, closefrom, dup2/dup3 over an iommufd ----------------------------------- */

static void ranges(int keeper) {
    CHECK(dup2(keeper, 200) == 200 && dup2(keeper, 201) == 201 && dup2(keeper, 202) == 202, "dup2");
    CHECK(close_range(200, 201, CLOSE_RANGE_UNSHARE) == 0, "close_range UNSHARE");
    check_closed(200);
    check_closed(201);
    check_iommu(202);
    CHECK(close_range(202, 202, CLOSE_RANGE_CLOEXEC) == 0, "close_range CLOEXEC");
    CHECK(fcntl(202, F_GETFD) == FD_CLOEXEC, "close-on-exec set");
    check_iommu(202);
    CHECK(close_range(202, 202, 0) == 0, "close_range");
    check_closed(202);
    int file = hello_file();
    CHECK(dup2(file, 200) == 200, "dup2 a file onto a number close_range freed");
    check_hello(200);
    close(200);
    close(file);

    CHECK(dup2(keeper, 300) == 300 && dup2(keeper, 301) == 301 && dup2(keeper, 400) == 400, "dup2");
    closefrom(300);
    check_closed(300);
    check_closed(301);
    check_closed(400);
    check_iommu(keeper);

    /* dup2 and dup3 of foreign files over iommufds: the number is the file's. */
    int victim = open_iommu(), other = open_iommu();
    file = hello_file();
    CHECK(dup2(file, victim) == victim, "dup2 over an iommufd");
    check_hello(victim);
    CHECK(dup3(file, other, O_CLOEXEC) == other, "dup3 over an iommufd");
    check_hello(other);
    /* ... and an iommufd over a file and over another iommufd. */
    int third = open_iommu();
    CHECK(dup2(keeper, victim) == victim, "dup2 an iommufd over a file");
    check_iommu(victim);
    CHECK(dup2(victim, third) == third, "dup2 an iommufd over an iommufd");
    check_iommu(third);
    int duplicate = fcntl(third, F_DUPFD, 500);
    CHECK(duplicate >= 500, "F_DUPFD");
    check_iommu(duplicate);
    close(duplicate);
    check_closed(duplicate);
    close(victim);
    close(other);
    close(third);
    close(file);
    check_iommu(keeper);
    OK("close_range, closefrom, dup2 and dup3 over an iommufd");
}

/* ---- 3. vfork and posix_spawn children ------------------------------------------------------- */

static void children(int keeper, const char *self) {
    int pipe_fds[2];
    CHECK(pipe(pipe_fds) == 0, "pipe");
    int input = 150, output = 151, engine = 152;
    CHECK(dup2(pipe_fds[0], input) == input && dup2(pipe_fds[1], output) == output, "pipe numbers");
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    CHECK(dup2(keeper, engine) == engine, "an iommufd at 152");

    pid_t child = vfork();
    CHECK(child >= 0, "vfork");
    if (child == 0) {
        /* The child's table is its own: what it does here changes nothing in the parent's. */
        if (dup2(engine, input) != input) _exit(2);
        if (close(engine) != 0) _exit(3);
        if (dup2(output, engine) != engine) _exit(4);
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0) _exit(5);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "vfork child: status 0x%x", status);
    check_pipe(input, output);
    check_iommu(engine);
    check_iommu(keeper);
    OK("a vfork child's dup2 and close leave the parent's descriptors alone");

    posix_spawn_file_actions_t actions;
    CHECK(posix_spawn_file_actions_init(&actions) == 0, "file actions");
    posix_spawn_file_actions_adddup2(&actions, engine, input);
    posix_spawn_file_actions_addclose(&actions, engine);
    posix_spawn_file_actions_adddup2(&actions, output, engine);
    char *argv[] = {(char *)self, (char *)"exit", NULL};
    CHECK(posix_spawn(&child, self, &actions, NULL, argv, environ) == 0, "posix_spawn");
    posix_spawn_file_actions_destroy(&actions);
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "spawned child");
    check_pipe(input, output);
    check_iommu(engine);
    check_iommu(keeper);
    OK("a posix_spawn child's file actions leave the parent's descriptors alone");
    close(input);
    close(output);
    close(engine);
}

/* ---- 4. fork while another thread is inside an ioctl ------------------------------------------ */

static atomic_int stop;

static void *allocate_loop(void *argument) {
    int fd = (int)(intptr_t)argument;
    while (!atomic_load(&stop)) {
        struct ioas_alloc alloc = {.size = sizeof alloc};
        CHECK(ioctl(fd, IOMMU_IOAS_ALLOC, &alloc) == 0, "IOAS_ALLOC in a thread");
        struct destroy_arg destroy = {.size = sizeof destroy, .id = alloc.out_ioas_id};
        CHECK(ioctl(fd, IOMMU_DESTROY, &destroy) == 0, "DESTROY in a thread");
    }
    return NULL;
}

static void fork_during_ioctl(int keeper) {
    int busy = open_iommu();
    atomic_store(&stop, 0);
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, allocate_loop, (void *)(intptr_t)busy) == 0, "pthread_create");
    for (int round = 0; round < 100; round++) {
        pid_t child = fork();
        CHECK(child >= 0, "fork");
        if (child == 0) {
            alarm(10); /* a hang ends as SIGALRM, which the parent reports */
            struct ioas_alloc alloc = {.size = sizeof alloc};
            if (ioctl(keeper, IOMMU_IOAS_ALLOC, &alloc) != 0) _exit(2);
            if (close(busy) != 0) _exit(3);
            int fd = open("/dev/iommu", O_RDWR);
            if (fd < 0) _exit(4);
            if (ioctl(fd, IOMMU_IOAS_ALLOC, &alloc) != 0) _exit(5);
            if (close(fd) != 0 || close(keeper) != 0) _exit(6);
            _exit(0);
        }
        int status = 0;
        CHECK(waitpid(child, &status, 0) == child, "waitpid");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d ended with 0x%x (a signal %d)", round, status,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    close(busy);
    check_iommu(keeper);
    OK("fork while another thread is inside an ioctl");
}

/* ---- 5. close racing an ioctl ------------------------------------------------------------------ */

static atomic_int racing_fd, racing_started, racing_bad_errno;

static void *racing_ioctls(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        int fd = atomic_load(&racing_fd);
        struct ioas_alloc alloc = {.size = sizeof alloc};
        atomic_store(&racing_started, 1);
        if (ioctl(fd, IOMMU_IOAS_ALLOC, &alloc) != 0 && errno != EBADF) atomic_store(&racing_bad_errno, errno);
    }
    return NULL;
}

static void close_racing_ioctl(void) {
    atomic_store(&stop, 0);
    atomic_store(&racing_bad_errno, 0);
    atomic_store(&racing_fd, -1);
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, racing_ioctls, NULL) == 0, "pthread_create");
    for (int round = 0; round < 2000 && atomic_load(&racing_bad_errno) == 0; round++) {
        int fd = open_iommu();
        atomic_store(&racing_started, 0);
        atomic_store(&racing_fd, fd);
        while (!atomic_load(&racing_started)) {}
        for (volatile int spin = 0; spin < (round % 64) * 50; spin++) {}
        CHECK(close(fd) == 0, "close");
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    int bad = atomic_load(&racing_bad_errno);
    CHECK(bad == 0, "an ioctl racing close failed with errno %d (%s)", bad, strerror(bad));
    OK("an ioctl racing close answers success or EBADF");
}

/* ---- 6. readiness follows the number ------------------------------------------------------------ */

static void readiness(void) {
    int fd = open_iommu();
    check_readiness(fd, POLLIN | POLLOUT);
    int pipe_fds[2];
    CHECK(pipe(pipe_fds) == 0, "pipe");
    CHECK(dup2(pipe_fds[0], fd) == fd, "dup2 an empty pipe over an iommufd");
    check_readiness(fd, 0);
    CHECK(dup2(pipe_fds[1], fd) == fd, "dup2 the pipe's write end");
    check_readiness(fd, POLLOUT);
    close(fd);
    fd = open_iommu();
    CHECK(syscall(SYS_close, fd) == 0, "raw close");
    int counter = eventfd(0, 0);
    CHECK(counter == fd, "eventfd got the number");
    check_readiness(counter, POLLOUT);
    close(counter);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    OK("poll follows the descriptor on a reused number");
}

/* ---- 7. a fault queue's readiness follows the queue, not its first number -------------------- */

#define IOMMU_HWPT_ALLOC _IO(';', 0x89)
#define IOMMU_FAULT_QUEUE_ALLOC _IO(';', 0x8e)
#define IOMMU_TEST_CMD _IO(';', 0xa0)
enum { TEST_OP_MOCK_DOMAIN = 2, TEST_OP_MOCK_DOMAIN_REPLACE = 10, TEST_OP_TRIGGER_IOPF = 15 };
enum { HWPT_ALLOC_NEST_PARENT = 1 << 0, HWPT_FAULT_ID_VALID = 1 << 2, HWPT_DATA_SELFTEST = 0xdead };
struct hwpt_alloc {
    uint32_t size, flags, dev_id, pt_id, out_hwpt_id, reserved, data_type, data_len;
    uint64_t data_uptr;
    uint32_t fault_id, reserved2;
};
struct fault_alloc { uint32_t size, flags, out_fault_id, out_fault_fd; };
struct test_cmd {
    uint32_t size, op, id, reserved;
    union {
        struct { uint32_t out_stdev_id, out_hwpt_id, out_idev_id; } mock_domain;
        struct { uint32_t pt_id; } replace;
        struct { uint32_t dev_id, pasid, grpid, perm; uint64_t addr; } trigger_iopf;
        uint64_t raw[6];
    };
    uint32_t last;
};
struct pgfault { uint32_t flags, dev_id, pasid, grpid, perm, reserved; uint64_t addr; uint32_t length, cookie; };
struct page_response { uint32_t cookie, code; };

static int fault_queue(int iommu, uint32_t *id) {
    struct fault_alloc fault = {.size = sizeof fault};
    CHECK(ioctl(iommu, IOMMU_FAULT_QUEUE_ALLOC, &fault) == 0, "IOMMU_FAULT_QUEUE_ALLOC");
    if (id != NULL) *id = fault.out_fault_id;
    return (int)fault.out_fault_fd;
}

static int readable(int fd) {
    struct pollfd entry = {.fd = fd, .events = POLLIN};
    CHECK(poll(&entry, 1, 0) >= 0, "poll");
    return (entry.revents & POLLIN) != 0;
}

static void queue_readiness(void) {
    int iommu = open_iommu();
    struct ioas_alloc ioas = {.size = sizeof ioas};
    CHECK(ioctl(iommu, IOMMU_IOAS_ALLOC, &ioas) == 0, "IOAS_ALLOC");
    struct test_cmd mock = {.size = sizeof mock, .op = TEST_OP_MOCK_DOMAIN, .id = ioas.out_ioas_id};
    CHECK(ioctl(iommu, IOMMU_TEST_CMD, &mock) == 0, "IOMMU_TEST_OP_MOCK_DOMAIN");
    uint32_t device = mock.mock_domain.out_idev_id;
    struct hwpt_alloc parent = {.size = sizeof parent, .flags = HWPT_ALLOC_NEST_PARENT, .dev_id = device,
                                .pt_id = ioas.out_ioas_id};
    CHECK(ioctl(iommu, IOMMU_HWPT_ALLOC, &parent) == 0, "a nesting parent HWPT");
    uint32_t fault_id = 0;
    int first = fault_queue(iommu, &fault_id);
    uint32_t selftest_data[2] = {0xbadbeef, 0};
    struct hwpt_alloc iopf = {.size = sizeof iopf, .flags = HWPT_FAULT_ID_VALID, .dev_id = device,
                              .pt_id = parent.out_hwpt_id, .data_type = HWPT_DATA_SELFTEST,
                              .data_len = sizeof selftest_data, .data_uptr = (uintptr_t)selftest_data,
                              .fault_id = fault_id};
    CHECK(ioctl(iommu, IOMMU_HWPT_ALLOC, &iopf) == 0, "an IOPF-capable nested HWPT");
    struct test_cmd replace = {.size = sizeof replace, .op = TEST_OP_MOCK_DOMAIN_REPLACE,
                               .id = mock.mock_domain.out_stdev_id, .replace = {.pt_id = iopf.out_hwpt_id}};
    CHECK(ioctl(iommu, IOMMU_TEST_CMD, &replace) == 0, "attach the device to the IOPF HWPT");

    /* The queue moves to another number, and a second queue takes the number it had. */
    int moved = dup(first);
    CHECK(moved > first, "dup the fault queue");
    CHECK(close(first) == 0, "close the queue's first number");
    int second = fault_queue(iommu, NULL);
    CHECK(second == first, "the second queue got the first one's number (%d, not %d)", second, first);
    CHECK(!readable(moved) && !readable(second), "both queues start empty");

    struct test_cmd trigger = {.size = sizeof trigger, .op = TEST_OP_TRIGGER_IOPF,
                               .trigger_iopf = {.dev_id = device, .pasid = 1, .grpid = 2, .perm = 3, .addr = 0xdeadbeaf}};
    CHECK(ioctl(iommu, IOMMU_TEST_CMD, &trigger) == 0, "IOMMU_TEST_OP_TRIGGER_IOPF");
    CHECK(readable(moved), "the fault reached the queue's new number");
    CHECK(!readable(second), "the queue now on the old number stays empty");
    struct pgfault record;
    CHECK(read(moved, &record, sizeof record) == (ssize_t)sizeof record, "read the fault record");
    CHECK(record.addr == 0xdeadbeaf / 4096 * 4096 || record.addr == 0xdeadbeaf, "the record's address (0x%llx)",
          (unsigned long long)record.addr);
    struct page_response response = {.cookie = record.cookie, .code = 0};
    CHECK(write(moved, &response, sizeof response) == (ssize_t)sizeof response, "write the page response");
    CHECK(!readable(moved), "the queue is empty again");

    CHECK(close(second) == 0 && close(moved) == 0, "close the queues");
    close(iommu);
    OK("a fault queue's readiness follows the queue through dup, close and a reused number");
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "exit") == 0) return 0;
    const char *self = "/proc/self/exe";
    char path[4096];
    ssize_t length = readlink(self, path, sizeof path - 1);
    CHECK(length > 0, "readlink /proc/self/exe");
    path[length] = '\0';

    int keeper = open_iommu();
    check_iommu(keeper);
    raw_close(keeper);
    ranges(keeper);
    children(keeper, path);
    fork_during_ioctl(keeper);
    close_racing_ioctl();
    readiness();
    queue_readiness();
    CHECK(close(keeper) == 0, "close");
    check_closed(keeper);
    printf("fds ok\n");
    return 0;
}
