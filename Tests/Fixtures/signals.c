/* Signal handlers that call /dev/iommu while the thread they interrupt is itself inside a call
 * on /dev/iommu. On the kernel a handler runs only when the interrupted system call returns, so
 * this always works; under ioasid it must neither deadlock nor crash, and every call must give
 * the kernel's answer. Runs unchanged on the real kernel (the oracle, built statically).
 *
 * A second thread sends SIGUSR1 (sigaction, SA_SIGINFO), SIGUSR2 (signal()) and a real-time
 * signal with a value (sigqueue) to the main thread as fast as it can, while the main thread
 * maps and unmaps; every handler allocates an IOAS, maps, unmaps and destroys it. Then the
 * handlers must have run, with their siginfo intact, and the actions read back with sigaction
 * must be the program's own. */
#include "fixture.h"
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define IOMMU_DESTROY _IO(';', 0x80)
#define IOMMU_IOAS_ALLOC _IO(';', 0x81)
#define IOMMU_IOAS_MAP _IO(';', 0x85)
#define IOMMU_IOAS_UNMAP _IO(';', 0x86)

struct destroy_arg { uint32_t size, id; };
struct ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct ioas_map { uint32_t size, flags, ioas_id, reserved; uint64_t user_va, length, iova; };
struct ioas_unmap { uint32_t size, ioas_id; uint64_t iova, length; };

static int iommu;
static char *buffer;
static _Atomic long handled[3], handler_failures, bad_values;
static _Atomic int stop;
static pthread_t main_thread;

/* One full round on a fresh IOAS; 0 or the failing step. */
static int round_trip(void) {
    struct ioas_alloc alloc = {.size = sizeof alloc};
    if (ioctl(iommu, IOMMU_IOAS_ALLOC, &alloc) != 0) return 1;
    struct ioas_map map = {.size = sizeof map, .flags = 1 | 2 | 4, .ioas_id = alloc.out_ioas_id,
                           .user_va = (uintptr_t)buffer, .length = 4096, .iova = 1 << 20};
    if (ioctl(iommu, IOMMU_IOAS_MAP, &map) != 0) return 2;
    struct ioas_unmap unmap = {.size = sizeof unmap, .ioas_id = alloc.out_ioas_id, .iova = 1 << 20, .length = 4096};
    if (ioctl(iommu, IOMMU_IOAS_UNMAP, &unmap) != 0 || unmap.length != 4096) return 3;
    struct destroy_arg destroy = {.size = sizeof destroy, .id = alloc.out_ioas_id};
    if (ioctl(iommu, IOMMU_DESTROY, &destroy) != 0) return 4;
    return 0;
}

static void in_handler(int which) {
    int saved_errno = errno;
    if (round_trip() != 0) handler_failures++;
    handled[which]++;
    errno = saved_errno;
}

static void on_usr1(int signo, siginfo_t *info, void *context) {
    (void)context;
    if (signo != SIGUSR1 || info->si_signo != SIGUSR1) bad_values++;
    in_handler(0);
}

static void on_usr2(int signo) {
    if (signo != SIGUSR2) bad_values++;
    in_handler(1);
}

static void on_rt(int signo, siginfo_t *info, void *context) {
    (void)context;
    if (signo != SIGRTMIN + 1 || info->si_code != SI_QUEUE || info->si_value.sival_int != 4242) bad_values++;
    in_handler(2);
}

/* `signals` signals, one every few microseconds (a flood would starve the main thread). */
static long signals;
static void *sender(void *unused) {
    (void)unused;
    union sigval value = {.sival_int = 4242};
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 20000};
    for (long n = 0; n < signals; n++) {
        switch (n % 3) {
        case 0: pthread_kill(main_thread, SIGUSR1); break;
        case 1: pthread_kill(main_thread, SIGUSR2); break;
        default: pthread_sigqueue(main_thread, SIGRTMIN + 1, value); break;
        }
        nanosleep(&pause, NULL);
    }
    atomic_store(&stop, 1);
    return NULL;
}

int main(int argc, char **argv) {
    signals = argc > 1 ? atol(argv[1]) : 3000;
    buffer = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    CHECK(buffer != MAP_FAILED, "mmap");
    iommu = open("/dev/iommu", O_RDWR);
    CHECK(iommu >= 0, "open /dev/iommu");
    /* A parent (a test runner) may have left these blocked: unblock the ones this test sends. */
    sigset_t used;
    sigemptyset(&used);
    sigaddset(&used, SIGUSR1);
    sigaddset(&used, SIGUSR2);
    sigaddset(&used, SIGRTMIN + 1);
    CHECK(sigprocmask(SIG_UNBLOCK, &used, NULL) == 0, "unblock");
    main_thread = pthread_self();

    struct sigaction usr1;
    memset(&usr1, 0, sizeof usr1);
    usr1.sa_sigaction = on_usr1;
    usr1.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&usr1.sa_mask);
    CHECK(sigaction(SIGUSR1, &usr1, NULL) == 0, "sigaction SIGUSR1");
    CHECK(signal(SIGUSR2, on_usr2) != SIG_ERR, "signal SIGUSR2");
    struct sigaction rt;
    memset(&rt, 0, sizeof rt);
    rt.sa_sigaction = on_rt;
    rt.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGRTMIN + 1, &rt, NULL) == 0, "sigaction SIGRTMIN+1");

    struct sigaction back;
    CHECK(sigaction(SIGUSR1, NULL, &back) == 0 && back.sa_sigaction == on_usr1 && (back.sa_flags & SA_SIGINFO), "SIGUSR1 reads back");
    CHECK(sigismember(&back.sa_mask, SIGTERM) == 1, "SIGUSR1's mask reads back");
    CHECK(sigaction(SIGUSR2, NULL, &back) == 0 && back.sa_handler == on_usr2, "SIGUSR2 reads back");
    OK("actions read back as installed");

    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, sender, NULL) == 0, "sender");
    long failures = 0, rounds = 0;
    while (!atomic_load(&stop)) {
        if (round_trip() != 0) failures++;
        rounds++;
    }
    CHECK(pthread_join(thread, NULL) == 0, "join");
    CHECK(failures == 0, "%ld failed rounds in the main thread", failures);
    CHECK(handler_failures == 0, "%ld failed rounds in handlers", (long)handler_failures);
    CHECK(bad_values == 0, "%ld handlers saw a wrong signal number or siginfo", (long)bad_values);
    CHECK(handled[0] > 0 && handled[1] > 0 && handled[2] > 0, "every handler ran (%ld %ld %ld)",
          (long)handled[0], (long)handled[1], (long)handled[2]);
    OK("handlers interrupting calls on /dev/iommu: each ran and made its calls");
    fprintf(stderr, "%ld rounds; handlers ran %ld, %ld, %ld times\n", rounds, (long)handled[0], (long)handled[1], (long)handled[2]);

    /* SA_RESETHAND: the first delivery runs the handler and resets the action. */
    struct sigaction once;
    memset(&once, 0, sizeof once);
    once.sa_sigaction = on_usr1;
    once.sa_flags = SA_SIGINFO | SA_RESETHAND;
    CHECK(sigaction(SIGUSR1, &once, NULL) == 0, "sigaction SA_RESETHAND");
    long before = handled[0];
    CHECK(raise(SIGUSR1) == 0, "raise");
    CHECK(handled[0] == before + 1, "SA_RESETHAND handler ran once");
    CHECK(sigaction(SIGUSR1, NULL, &back) == 0 && back.sa_handler == SIG_DFL, "SA_RESETHAND reset the action");
    OK("SA_RESETHAND");
    return 0;
}
