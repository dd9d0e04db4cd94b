/* Bad user pointers given to /dev/iommu: every one is answered with EFAULT, as the kernel does,
 * and never kills the program. The same file runs on the real kernel (the oracle, built
 * statically) and under `ioasid run`; its output is the same on both.
 *
 * Pointer classes: unmapped, PROT_NONE, read-only (for a struct the call writes back), a struct
 * that straddles the end of a readable page, and a good struct whose embedded array pointer is
 * bad. Calls come from the main thread, from a signal handler whose sa_mask blocks every
 * signal, from a thread that blocks SIGSEGV and SIGBUS, and from inside the program's own
 * SIGSEGV handler. Afterwards the program's own fault handler still sees its own faults, and
 * nothing was created by a call that failed. */
#include "fixture.h"
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define IOMMUFD_TYPE ';'
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, 0x80)
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)
#define IOMMU_IOAS_ALLOW_IOVAS _IO(IOMMUFD_TYPE, 0x82)
#define IOMMU_IOAS_IOVA_RANGES _IO(IOMMUFD_TYPE, 0x84)
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)

struct destroy_arg { uint32_t size, id; };
struct ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct iova_range { uint64_t start, last; };
struct allow_iovas { uint32_t size, ioas_id, num_iovas, reserved; uint64_t allowed_iovas; };
struct iova_ranges { uint32_t size, ioas_id, num_iovas, reserved; uint64_t allowed_iovas, out_iova_alignment; };
struct ioas_map { uint32_t size, flags, ioas_id, reserved; uint64_t user_va, length, iova; };
struct ioas_unmap { uint32_t size, ioas_id; uint64_t iova, length; };

#define MAP_FIXED_IOVA 1
#define MAP_WRITEABLE 2
#define MAP_READABLE 4

static int iommu;
static long page;
static char *writable_page, *none_page, *readonly_page, *unmapped_page;

/* A struct placed so that its first `readable` bytes end the writable page and the rest falls in
 * the PROT_NONE page after it. */
static void *straddling(const void *value, size_t size, size_t readable) {
    char *at = none_page - readable;
    memcpy(at, value, readable);
    (void)size;
    return at;
}

static void *in_readonly(const void *value, size_t size) {
    CHECK(mprotect(readonly_page, page, PROT_READ | PROT_WRITE) == 0, "mprotect rw");
    memcpy(readonly_page, value, size);
    CHECK(mprotect(readonly_page, page, PROT_READ) == 0, "mprotect ro");
    return readonly_page;
}

static uint32_t ioas_alloc(void) {
    struct ioas_alloc a = {.size = sizeof a};
    CHECK(ioctl(iommu, IOMMU_IOAS_ALLOC, &a) == 0, "IOAS_ALLOC");
    return a.out_ioas_id;
}

static void destroy(uint32_t id) {
    struct destroy_arg d = {.size = sizeof d, .id = id};
    CHECK(ioctl(iommu, IOMMU_DESTROY, &d) == 0, "DESTROY %u", id);
}

static int exists(uint32_t id) {
    struct iova_ranges r = {.size = sizeof r, .ioas_id = id};
    return ioctl(iommu, IOMMU_IOAS_IOVA_RANGES, &r) == 0 || errno == EMSGSIZE;
}

/* Every bad-pointer call; `where` names the context it runs in. Returns the number of checks. */
static int bad_calls(const char *where) {
    int checks = 0;
    uint32_t ioas = ioas_alloc();

    /* The argument itself. */
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_ALLOC, unmapped_page), EFAULT); checks++;
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_ALLOC, none_page), EFAULT); checks++;
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_ALLOC, (void *)16), EFAULT); checks++;
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_ALLOC, (void *)0xffff800000000000ull), EFAULT); checks++;
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_ALLOC, (void *)0x8000000000000000ull), EFAULT); checks++;

    /* Read-only: the answer cannot be written, so nothing is created. */
    struct ioas_alloc alloc = {.size = sizeof alloc};
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_ALLOC, in_readonly(&alloc, sizeof alloc)), EFAULT); checks++;
    CHECK(!exists(ioas + 1), "%s: a failed IOAS_ALLOC created object %u", where, ioas + 1); checks++;

    /* A struct cut by the end of its page: the size is readable, the rest is not. */
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_ALLOC, straddling(&alloc, sizeof alloc, 8)), EFAULT); checks++;
    struct ioas_map map = {.size = sizeof map, .flags = MAP_READABLE | MAP_WRITEABLE, .user_va = (uintptr_t)writable_page,
                           .length = (uint64_t)page, .ioas_id = ioas};
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_MAP, straddling(&map, sizeof map, 24)), EFAULT); checks++;
    struct destroy_arg d = {.size = sizeof d, .id = ioas};
    CHECK_ERRNO(ioctl(iommu, IOMMU_DESTROY, straddling(&d, sizeof d, 4)), EFAULT); checks++;

    /* Only the size fits: a struct whose size claims more than the page holds. */
    uint32_t big = 64;
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_ALLOC, straddling(&big, 64, 4)), EFAULT); checks++;

    /* Arrays behind a good struct. */
    struct allow_iovas allow = {.size = sizeof allow, .ioas_id = ioas, .num_iovas = 1,
                                .allowed_iovas = (uintptr_t)unmapped_page};
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_ALLOW_IOVAS, &allow), EFAULT); checks++;
    allow.allowed_iovas = (uintptr_t)none_page;
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_ALLOW_IOVAS, &allow), EFAULT); checks++;
    struct iova_ranges ranges = {.size = sizeof ranges, .ioas_id = ioas, .num_iovas = 4,
                                 .allowed_iovas = (uintptr_t)readonly_page};
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_IOVA_RANGES, &ranges), EFAULT); checks++;
    ranges.num_iovas = 4;
    ranges.allowed_iovas = (uintptr_t)none_page;
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_IOVA_RANGES, &ranges), EFAULT); checks++;

    /* The memory to map: with no domain attached the kernel pins nothing yet, so a map of
     * unmapped or PROT_NONE memory succeeds (the pin, and its EFAULT, come with a domain). */
    map.user_va = (uintptr_t)unmapped_page;
    CHECK(ioctl(iommu, IOMMU_IOAS_MAP, &map) == 0, "%s: map of unmapped memory without a domain", where); checks++;
    map.user_va = (uintptr_t)none_page;
    CHECK(ioctl(iommu, IOMMU_IOAS_MAP, &map) == 0, "%s: map of PROT_NONE memory without a domain", where); checks++;

    /* A map whose answer cannot be written: the kernel maps, then fails to answer. */
    map.user_va = (uintptr_t)writable_page;
    map.flags |= MAP_FIXED_IOVA;
    map.iova = 1ull << 30;
    CHECK_ERRNO(ioctl(iommu, IOMMU_IOAS_MAP, in_readonly(&map, sizeof map)), EFAULT); checks++;
    struct ioas_unmap unmap = {.size = sizeof unmap, .ioas_id = ioas, .iova = 1ull << 30, .length = (uint64_t)page};
    CHECK(ioctl(iommu, IOMMU_IOAS_UNMAP, &unmap) == 0 && unmap.length == (uint64_t)page,
          "%s: the mapping made before the failed answer is there", where); checks++;

    destroy(ioas);
    return checks;
}

/* ---- contexts ---------------------------------------------------------------------------- */

static volatile int handler_checks;
static void from_handler(int signo) {
    (void)signo;
    handler_checks = bad_calls("signal handler");
}

static void *blocked_thread(void *unused) {
    (void)unused;
    sigset_t faults;
    sigemptyset(&faults);
    sigaddset(&faults, SIGSEGV);
    sigaddset(&faults, SIGBUS);
    CHECK(pthread_sigmask(SIG_BLOCK, &faults, NULL) == 0, "block faults");
    return (void *)(intptr_t)bad_calls("thread blocking SIGSEGV");
}

static sigjmp_buf own_fault;
static volatile int own_faults, checks_in_own_handler;
static void own_segv(int signo, siginfo_t *info, void *context) {
    (void)signo, (void)context;
    own_faults++;
    if (info->si_addr == (void *)unmapped_page) {
        if (own_faults == 1) checks_in_own_handler = bad_calls("the program's SIGSEGV handler");
        siglongjmp(own_fault, 1);
    }
    _exit(3);
}

int main(void) {
    page = sysconf(_SC_PAGESIZE);
    char *area = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(area != MAP_FAILED, "mmap");
    writable_page = area;
    none_page = area + page;
    readonly_page = area + 2 * page;
    unmapped_page = area + 3 * page;
    CHECK(mprotect(none_page, page, PROT_NONE) == 0 && mprotect(readonly_page, page, PROT_READ) == 0, "mprotect");
    CHECK(munmap(unmapped_page, page) == 0, "munmap");

    iommu = open("/dev/iommu", O_RDWR);
    CHECK(iommu >= 0, "open /dev/iommu");
    /* A parent (a test runner) may have left these blocked: unblock the ones this test sends. */
    sigset_t used;
    sigemptyset(&used);
    sigaddset(&used, SIGUSR1);
    CHECK(sigprocmask(SIG_UNBLOCK, &used, NULL) == 0, "unblock");

    OK("main thread: %d checks", bad_calls("main thread"));

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = from_handler;
    sigfillset(&action.sa_mask);
    CHECK(sigaction(SIGUSR1, &action, NULL) == 0, "sigaction SIGUSR1");
    CHECK(raise(SIGUSR1) == 0, "raise");
    CHECK(handler_checks > 0, "handler ran");
    OK("signal handler with every signal masked: %d checks", handler_checks);

    pthread_t thread;
    void *result;
    CHECK(pthread_create(&thread, NULL, blocked_thread, NULL) == 0 && pthread_join(thread, &result) == 0, "thread");
    OK("thread blocking SIGSEGV and SIGBUS: %d checks", (int)(intptr_t)result);

    /* The program's own fault handler: it sees its own faults, and may call us from inside. */
    struct sigaction segv;
    memset(&segv, 0, sizeof segv);
    segv.sa_sigaction = own_segv;
    segv.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGSEGV, &segv, NULL) == 0, "sigaction SIGSEGV");
    for (int round = 0; round < 2; round++) {
        if (sigsetjmp(own_fault, 1) == 0) {
            *(volatile char *)unmapped_page = 1;
            CHECK(0, "the program's own fault did not fault");
        }
    }
    CHECK(own_faults == 2, "the program's handler saw its 2 faults (%d)", own_faults);
    OK("the program's SIGSEGV handler: its own faults reach it; %d checks from inside it", checks_in_own_handler);
    OK("main thread after all that: %d checks", bad_calls("main thread again"));
    return 0;
}
