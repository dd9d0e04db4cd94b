/*
 * libioasid-preload.so — the interposer in front of the ioasid engine.
 *
 * Why this shim exists: unmodified C programs reach iommufd through libc — they call
 * open("/dev/iommu"), then ioctl(), read(), write(), mmap(), dup() and close() on the fd. There is
 * no kernel driver behind /dev/iommu here, so, as fakeroot and umockdev do for other kernel
 * interfaces, we interpose those libc entry points with LD_PRELOAD and send the calls on our
 * descriptors to the engine (libIOASIDEngine.so, Swift), which answers them like the kernel would.
 *
 * The shim is C and small because it is loaded into every process started under `ioasid run`,
 * including ones that never touch /dev/iommu:
 *  - A call on a foreign fd costs one bounds check and one byte load in the table of owned fds
 *    (fds below 1<<16); larger fds take one more pointer load. Then the real libc function runs.
 *  - The engine (and the Swift runtime behind it) is dlopen'ed only on the first open of
 *    /dev/iommu; path from $IOASID_ENGINE, else libIOASIDEngine.so next to this library.
 *
 * Every fd the engine hands out is a real kernel fd (an eventfd), so poll/select/epoll, fstat,
 * fork and the kernel's own dup/close bookkeeping work unchanged; the table only says which fds
 * are the engine's. The engine tells us with ioasid_preload_claim(). The engine makes its own
 * system calls through CIOASIDSys (raw syscall(2)), so it never re-enters this file.
 *
 * Ordering rule for closing: the engine forgets an fd *before* the kernel closes it, so the fd
 * number cannot be reused by a concurrent open while the engine still maps it to a file; the
 * table lets the number go only *after* the kernel closed it, so no call reaches the bare eventfd
 * in between. Whose a number is when the table may be wrong (raw closes, vfork children): below,
 * and docs/architecture.md, "Descriptors: whose a number is".
 *
 * Positioned I/O (pread, pwrite, their 64-bit and fortified names, preadv/pwritev and the v2
 * forms) goes to the engine on its descriptors: VFIO device regions are read and written at
 * offsets. Not interposed (they reach the underlying eventfd): readv/writev, fopen()'s internal
 * open, raw syscall(2), io_uring. None is used on iommufd or VFIO descriptors in practice.
 */
#undef _FORTIFY_SOURCE /* we define open() etc. ourselves; fortify would make them inline wrappers */
#define _GNU_SOURCE
#include "ioasid_preload.h"
#include "preload_internal.h"
#include "trap.h"
#include "deferral.h"
#include "ioasid_sys_pinnable.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <linux/fiemap.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define IOASID_EXPORT __attribute__((visibility("default")))

/* Declared by glibc only under _FORTIFY_SOURCE; programs built with it call these. */
IOASID_EXPORT int __open_2(const char *path, int flags);
IOASID_EXPORT int __open64_2(const char *path, int flags);
IOASID_EXPORT int __openat_2(int dirfd, const char *path, int flags);
IOASID_EXPORT int __openat64_2(int dirfd, const char *path, int flags);
IOASID_EXPORT ssize_t __pread_chk(int fd, void *buffer, size_t count, off_t offset, size_t size);
IOASID_EXPORT ssize_t __pread64_chk(int fd, void *buffer, size_t count, off64_t offset, size_t size);
extern void __chk_fail(void) __attribute__((noreturn));

/* ---------------------------------------------------------------------------------------------
 * The real libc functions, resolved with dlsym(RTLD_NEXT) in the constructor, or lazily if some
 * other library's constructor calls us first. Resolving twice is harmless (same answer).
 */

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef int (*close_fn)(int);
typedef int (*dup_fn)(int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);
typedef int (*fcntl_fn)(int, int, ...);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef void *(*mremap_fn)(void *, size_t, size_t, int, ...);
typedef int (*close_range_fn)(unsigned int, unsigned int, int);
typedef void (*closefrom_fn)(int);
typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pread_chk_fn)(int, void *, size_t, off_t, size_t);
typedef ssize_t (*preadv_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*preadv2_fn)(int, const struct iovec *, int, off_t, int);

enum real_index {
    REAL_open, REAL_open64, REAL_openat, REAL_openat64,
    REAL___open_2, REAL___open64_2, REAL___openat_2, REAL___openat64_2,
    REAL_ioctl, REAL_read, REAL_write, REAL_close, REAL_dup, REAL_dup2, REAL_dup3,
    REAL_fcntl, REAL_fcntl64, REAL_mmap, REAL_mmap64, REAL_close_range, REAL_closefrom,
    REAL_pread, REAL_pread64, REAL_pwrite, REAL_pwrite64, REAL___pread_chk, REAL___pread64_chk,
    REAL_preadv, REAL_preadv64, REAL_pwritev, REAL_pwritev64, REAL_preadv2, REAL_pwritev2,
    REAL_munmap, REAL_mremap,
    REAL_COUNT
};

static const char *const real_names[REAL_COUNT] = {
    "open", "open64", "openat", "openat64",
    "__open_2", "__open64_2", "__openat_2", "__openat64_2",
    "ioctl", "read", "write", "close", "dup", "dup2", "dup3",
    "fcntl", "fcntl64", "mmap", "mmap64", "close_range", "closefrom",
    "pread", "pread64", "pwrite", "pwrite64", "__pread_chk", "__pread64_chk",
    "preadv", "preadv64", "pwritev", "pwritev64", "preadv2", "pwritev2",
    "munmap", "mremap",
};

static _Atomic(void *) real_functions[REAL_COUNT];

static void *resolve_real(enum real_index index) {
    void *function = atomic_load_explicit(&real_functions[index], memory_order_acquire);
    if (likely(function != NULL)) return function;
    function = dlsym(RTLD_NEXT, real_names[index]);
    if (function != NULL) atomic_store_explicit(&real_functions[index], function, memory_order_release);
    return function;
}

#define REAL(name, type) ((type)resolve_real(REAL_##name))

_Atomic(void *) ioasid_real_ioctl; /* hidden: preload_internal.h */

__attribute__((constructor)) static void ioasid_preload_init(void) {
    for (int index = 0; index < REAL_COUNT; index++) resolve_real((enum real_index)index);
    atomic_store_explicit(&ioasid_real_ioctl, resolve_real(REAL_ioctl), memory_order_release);
    ioasid_preload_adopt_inherited();
}

/* Writes a diagnostic to stderr without stdio (no locks, no allocation). */
static void diagnose(const char *first, const char *second) {
    char line[1024];
    size_t length = 0;
    const char *parts[] = {"ioasid-preload: ", first, second, "\n"};
    for (size_t part = 0; part < sizeof parts / sizeof parts[0]; part++) {
        for (const char *c = parts[part]; c && *c && length < sizeof line - 1; c++) line[length++] = *c;
    }
    (void)!syscall(SYS_write, 2, line, length);
}

/* ---------------------------------------------------------------------------------------------
 * The table of owned fds: one byte per fd, non-zero when the engine owns it.
 *
 * fds below 1<<16 live in a static array (64 KiB of zero pages until touched). Larger fds live
 * in chunks of 1<<16 bytes that are mmapped the first time an fd in them is claimed and never
 * freed; a chunk pointer is published with a compare-and-swap, so claiming is lock-free and
 * async-signal-safe. Readers use relaxed loads: the engine claims an fd before the program can
 * learn its number, and the program's own synchronisation orders the rest.
 */

#define CHUNK_BITS 16
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define CHUNK_COUNT (((unsigned)INT_MAX >> CHUNK_BITS) + 1)

_Atomic unsigned char owned_low[CHUNK_SIZE]; /* hidden: preload_internal.h */
static _Atomic(_Atomic unsigned char *) owned_high[CHUNK_COUNT]; /* [0] unused: owned_low */

static _Atomic unsigned char *high_chunk(int fd, int create) {
    _Atomic(_Atomic unsigned char *) *slot = &owned_high[(unsigned)fd >> CHUNK_BITS];
    _Atomic unsigned char *chunk = atomic_load_explicit(slot, memory_order_acquire);
    if (chunk != NULL || !create) return chunk;
    void *fresh = (void *)syscall(SYS_mmap, NULL, (size_t)CHUNK_SIZE, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0L);
    if (fresh == MAP_FAILED) return NULL;
    _Atomic unsigned char *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(slot, &expected, (_Atomic unsigned char *)fresh,
                                                memory_order_acq_rel, memory_order_acquire)) {
        return (_Atomic unsigned char *)fresh;
    }
    (void)syscall(SYS_munmap, fresh, (size_t)CHUNK_SIZE); /* another thread won */
    return expected;
}

__attribute__((noinline)) int owned_slow(int fd) {
    if (fd < 0) return 0;
    _Atomic unsigned char *chunk = high_chunk(fd, 0);
    return chunk != NULL && atomic_load_explicit(&chunk[fd & (CHUNK_SIZE - 1)], memory_order_relaxed);
}

/* The fast path every interposed call on a foreign fd takes. */
static inline int owned(int fd) {
    if (likely((unsigned)fd < CHUNK_SIZE)) return atomic_load_explicit(&owned_low[fd], memory_order_relaxed);
    return owned_slow(fd);
}

/* The table's byte for `fd` (created for a large fd when `create`), or NULL. */
static _Atomic unsigned char *owned_cell(int fd, int create) {
    if (fd < 0) return NULL;
    if ((unsigned)fd < CHUNK_SIZE) return &owned_low[fd];
    _Atomic unsigned char *chunk = high_chunk(fd, create);
    return chunk == NULL ? NULL : &chunk[fd & (CHUNK_SIZE - 1)];
}

/* A claim's byte is a generation (1..255), new for every claim, so that a close can take back
 * its own claim after the kernel closed the number without taking back a newer one that the
 * engine made on the same number in between (claim_taken_back). */
static _Atomic unsigned claim_generation;

/* How many claims have been let go, process-wide: a call the kernel answered for a number that
 * was not ours when it looked knows from this whether one of ours may have been there during the
 * call and gone since (ioctl_failed). */
static _Atomic unsigned long claims_let_go;

/* Records whether `fd` is owned; 0, or -ENOMEM if a chunk for a large fd cannot be mapped. */
static int set_owned(int fd, int value) {
    if (fd < 0) return -EBADF;
    _Atomic unsigned char *cell = owned_cell(fd, value != 0);
    if (cell == NULL) return value ? -ENOMEM : 0;
    unsigned char generation = 0;
    if (value) generation = (unsigned char)(atomic_fetch_add_explicit(&claim_generation, 1, memory_order_relaxed) % 255 + 1);
    /* counted before the byte clears: whoever sees the number free also sees the count moved */
    if (!value && atomic_load_explicit(cell, memory_order_relaxed) != 0)
        atomic_fetch_add_explicit(&claims_let_go, 1, memory_order_acq_rel);
    atomic_store_explicit(cell, generation, memory_order_release);
    return 0;
}

/* Takes back the claim `generation` on `fd` unless a newer claim replaced it. */
static void claim_taken_back(int fd, unsigned char generation) {
    _Atomic unsigned char *cell = owned_cell(fd, 0);
    if (cell == NULL) return;
    atomic_fetch_add_explicit(&claims_let_go, 1, memory_order_acq_rel); /* before the byte clears */
    atomic_compare_exchange_strong_explicit(cell, &generation, 0, memory_order_acq_rel, memory_order_relaxed);
}

IOASID_EXPORT void ioasid_preload_claim(int fd, int owned_flag) {
    (void)set_owned(fd, owned_flag);
}

/* ---------------------------------------------------------------------------------------------
 * The engine: dlopen'ed on the first open of /dev/iommu, never unloaded.
 */

static struct {
    int (*open)(int flags);
    long (*ioctl)(int fd, unsigned long request, void *argument);
    ssize_t (*read)(int fd, void *buffer, size_t count);
    ssize_t (*write)(int fd, const void *buffer, size_t count);
    long (*mmap)(void *address, size_t length, int protection, int flags, int fd, long offset);
    int (*dup)(int oldfd, int newfd);
    int (*close)(int fd);
    int (*munmap)(void *address, size_t length); /* optional */
    int (*open_device)(int index, int flags);    /* optional */
    int (*open_group)(int index, int flags);     /* optional */
    int (*open_container)(int flags);            /* optional: else /dev/vfio/vfio opens as /dev/iommu */
    ssize_t (*pread)(int fd, void *buffer, size_t count, int64_t offset);         /* optional */
    ssize_t (*pwrite)(int fd, const void *buffer, size_t count, int64_t offset);  /* optional */
} engine;

static void *engine_handle; /* set once the engine is ready */

enum { ENGINE_UNLOADED = IOASID_ENGINE_UNLOADED, ENGINE_READY = IOASID_ENGINE_READY, ENGINE_FAILED = -1 };
_Atomic int ioasid_engine_state = ENGINE_UNLOADED; /* hidden: preload_internal.h */
static pthread_mutex_t engine_lock = PTHREAD_MUTEX_INITIALIZER;

static int engine_path(char *buffer, size_t size) {
    const char *configured = secure_getenv("IOASID_ENGINE");
    if (configured != NULL && configured[0] != '\0') {
        if (strlen(configured) >= size) return -1;
        strcpy(buffer, configured);
        return 0;
    }
    Dl_info info;
    if (dladdr((void *)&ioasid_preload_claim, &info) == 0 || info.dli_fname == NULL) return -1;
    const char *slash = strrchr(info.dli_fname, '/');
    size_t directory = slash ? (size_t)(slash - info.dli_fname) + 1 : 0;
    static const char name[] = "libIOASIDEngine.so";
    if (directory + sizeof name > size) return -1;
    memcpy(buffer, info.dli_fname, directory);
    memcpy(buffer + directory, name, sizeof name);
    return 0;
}

static int load_engine_locked(void) {
    char path[PATH_MAX];
    if (engine_path(path, sizeof path) != 0) {
        diagnose("cannot locate libIOASIDEngine.so; set IOASID_ENGINE", "");
        return ENGINE_FAILED;
    }
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        const char *error = dlerror();
        diagnose("cannot load the engine: ", error ? error : path);
        return ENGINE_FAILED;
    }
#define ENGINE_SYMBOL(field, name)                                          \
    do {                                                                    \
        *(void **)&engine.field = dlsym(handle, name);                      \
        if (engine.field == NULL) {                                         \
            diagnose("the engine does not export ", name);                  \
            return ENGINE_FAILED;                                           \
        }                                                                   \
    } while (0)
    ENGINE_SYMBOL(open, "ioasid_engine_open");
    ENGINE_SYMBOL(ioctl, "ioasid_engine_ioctl");
    ENGINE_SYMBOL(read, "ioasid_engine_read");
    ENGINE_SYMBOL(write, "ioasid_engine_write");
    ENGINE_SYMBOL(mmap, "ioasid_engine_mmap");
    ENGINE_SYMBOL(dup, "ioasid_engine_dup");
    ENGINE_SYMBOL(close, "ioasid_engine_close");
#undef ENGINE_SYMBOL
    *(void **)&engine.munmap = dlsym(handle, "ioasid_engine_munmap");
    *(void **)&engine.open_device = dlsym(handle, "ioasid_engine_open_device");
    *(void **)&engine.open_group = dlsym(handle, "ioasid_engine_open_group");
    *(void **)&engine.open_container = dlsym(handle, "ioasid_engine_open_container");
    *(void **)&engine.pread = dlsym(handle, "ioasid_engine_pread");
    *(void **)&engine.pwrite = dlsym(handle, "ioasid_engine_pwrite");

    ioasid_fork_gate_install(); /* fork waits for engine calls under way (preload_fork.c) */
    if (ioasid_trap_guard_copies() != 0) diagnose("cannot install the fault handler; user copies use system calls", "");
    ioasid_sys_pinnable_watch(1); /* mmap, munmap and mremap below report every change */
    engine_handle = handle;
    return ENGINE_READY;
}

/* Loads the engine once; later calls only read the state. Returns non-zero when ready. */
static int ensure_engine(void) {
    int state = atomic_load_explicit(&ioasid_engine_state, memory_order_acquire);
    if (likely(state != ENGINE_UNLOADED)) return state == ENGINE_READY;
    pthread_mutex_lock(&engine_lock);
    state = atomic_load_explicit(&ioasid_engine_state, memory_order_relaxed);
    if (state == ENGINE_UNLOADED) {
        state = load_engine_locked();
        atomic_store_explicit(&ioasid_engine_state, state, memory_order_release);
    }
    pthread_mutex_unlock(&engine_lock);
    return state == ENGINE_READY;
}

void *ioasid_preload_engine_symbol(const char *name) {
    if (!ensure_engine()) return NULL;
    return dlsym(engine_handle, name);
}

/* Turns an engine result (>= 0, or -errno) into the libc convention. */
static inline long from_engine(long result) {
    if (result < 0) {
        errno = (int)-result;
        return -1;
    }
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * Whose descriptor a number is, when the table may be wrong.
 *
 * The table is exact for descriptors that change through interposed calls. Two things can make
 * it wrong: a raw system call (syscall(SYS_close), close_range, a libc-internal close) closes one
 * of ours behind the preload's back, and a vfork child (which shares this memory, table
 * included, but has a descriptor table of its own in the kernel) rearranges its copy.
 *
 *  - Every interposed call that receives a new descriptor from the kernel (the open family, dup
 *    of a foreign descriptor, pipe, eventfd, memfd_create, socket, accept, ... in
 *    preload_fresh.c) passes it through fresh(): if the number is marked as ours, the kernel has
 *    just handed it out again, so it is not ours any more — unclaim it and drop the engine's
 *    reference. One byte load on a path that has just made a system call.
 *  - When the engine answers an error on one of ours, the number is checked (one fstat): a
 *    closed number or a file that is not an eventfd is not ours, and the call goes to the
 *    kernel, which answers for what is really there. Successful answers are not checked (that
 *    would cost a system call per engine call).
 *  - The vfork wrapper marks the calling thread while its child borrows it; in the child, calls
 *    that change descriptors leave the table and the engine alone.
 */

_Thread_local int ioasid_in_vfork_child __attribute__((tls_model("initial-exec"))); /* preload_internal.h */

/* `fd`, marked as ours, is not (the kernel closed it or gave it to something else): forget it. */
static __attribute__((noinline)) void disown(int fd) {
    if (ioasid_in_vfork_child) return; /* the child's numbers say nothing about ours */
    set_owned(fd, 0);
    if (atomic_load_explicit(&ioasid_engine_state, memory_order_acquire) == ENGINE_READY) (void)ENGINE_CALL(engine.close(fd));
}

/* A descriptor the kernel just handed out through an interposed call. */
static inline int fresh(int fd) {
    if (unlikely(ioasid_owned(fd))) disown(fd);
    return fd;
}

int ioasid_preload_fresh(int fd) { return fresh(fd); }

/* The identity every engine descriptor has to the kernel: an eventfd's inode (recorded from the
 * first one checked; kernels share one anonymous inode between eventfds). */
static _Atomic unsigned long long eventfd_device, eventfd_inode;

int ioasid_preload_fd_link_is(int fd, const char *expected) {
    char link[40] = "/proc/self/fd/", target[64];
    size_t at = strlen(link);
    char digits[12];
    size_t count = 0;
    for (unsigned value = (unsigned)fd; count == 0 || value != 0; value /= 10) digits[count++] = (char)('0' + value % 10);
    while (count > 0) link[at++] = digits[--count];
    link[at] = '\0';
    long length = syscall(SYS_readlinkat, AT_FDCWD, link, target, sizeof target - 1);
    if (length <= 0) return -1;
    target[length] = '\0';
    return strcmp(target, expected) == 0;
}

/* After the engine answered an error on `fd`: 1 when the number still holds one of ours, -1 when
 * it is closed (the answer is EBADF), 0 when it holds something else (the caller asks the
 * kernel). The mark stays (another thread may be claiming the number
 * right now, after its kernel close); it goes when the kernel hands the number out again. */
static __attribute__((noinline)) int still_ours(int fd) {
    if (ioasid_in_vfork_child) return 1;
    struct stat status;
    if (syscall(SYS_fstat, fd, &status) != 0) return -1; /* closed: EBADF (asking the kernel later could
                                                            * reach an eventfd the engine is creating) */
    unsigned long long device = (unsigned long long)status.st_dev, inode = (unsigned long long)status.st_ino;
    if (device == atomic_load_explicit(&eventfd_device, memory_order_relaxed) &&
        inode == atomic_load_explicit(&eventfd_inode, memory_order_relaxed) && inode != 0)
        return 1;
    int eventfd = ioasid_preload_fd_link_is(fd, "anon_inode:[eventfd]");
    if (eventfd == 1) {
        atomic_store_explicit(&eventfd_device, device, memory_order_relaxed);
        atomic_store_explicit(&eventfd_inode, inode, memory_order_relaxed);
        return 1;
    }
    return eventfd < 0; /* no /proc: keep the engine's answer */
}

/* Whether an engine error answer must be checked: not EAGAIN (an empty queue says it often). */
static inline int check_error(long result) {
    return unlikely(result < 0) && result != -EAGAIN && result != -EINTR;
}

/* The engine's answer `result` on `fd`, checked when it is an error: 1 to return it (EBADF in
 * place of it when the number is closed), 0 when the kernel must answer instead. */
static inline int engine_answer_stands(int fd, long *result) {
    if (likely(!check_error(*result))) return 1;
    int ours = still_ours(fd);
    if (ours < 0) *result = -EBADF;
    return ours != 0;
}

/* ---------------------------------------------------------------------------------------------
 * open and friends: the exact path "/dev/iommu" goes to the engine, and, when `ioasid run
 * --machine` configured a modelled machine (IOASID_MACHINE set), so do the VFIO nodes: the
 * device cdevs "/dev/vfio/devices/vfioN", the groups "/dev/vfio/N" and the container
 * "/dev/vfio/vfio" (an iommufd, as with the kernel's IOMMUFD_VFIO_CONTAINER). The program then
 * sees that machine's devices and no others.
 */

enum { PATH_NOT_ENGINE = -2, PATH_IOMMU = -1, PATH_CONTAINER = -3, PATH_GROUP_BASE = -16 };

/* Parses a decimal index that ends the path; -1 when malformed. */
static inline long path_index(const char *digits) {
    if (*digits < '0' || *digits > '9') return -1;
    long index = 0;
    for (; *digits >= '0' && *digits <= '9'; digits++) {
        index = index * 10 + (*digits - '0');
        if (index > 1 << 20) return -1;
    }
    return *digits == '\0' ? index : -1;
}

/* PATH_IOMMU, PATH_CONTAINER, a device index N >= 0, a group PATH_GROUP_BASE - N, or
 * PATH_NOT_ENGINE. */
static inline int engine_path_kind(const char *path) {
    if (path == NULL || path[0] != '/' || path[1] != 'd') return PATH_NOT_ENGINE;
    if (strcmp(path, "/dev/iommu") == 0) return PATH_IOMMU;
    static const char vfio[] = "/dev/vfio/";
    if (strncmp(path, vfio, sizeof vfio - 1) != 0 || getenv("IOASID_MACHINE") == NULL) return PATH_NOT_ENGINE;
    const char *rest = path + sizeof vfio - 1;
    static const char devices[] = "devices/vfio";
    if (strncmp(rest, devices, sizeof devices - 1) == 0) {
        long index = path_index(rest + sizeof devices - 1);
        return index < 0 ? PATH_NOT_ENGINE : (int)index;
    }
    if (strcmp(rest, "vfio") == 0) return PATH_CONTAINER;
    long group = path_index(rest);
    return group < 0 ? PATH_NOT_ENGINE : PATH_GROUP_BASE - (int)group;
}

/* Claims an engine descriptor for the preload's fast path, or undoes it. */
static int claim_engine_fd(int fd, int saved_errno) {
    if (set_owned(fd, 1) != 0) {
        ENGINE_CALL(engine.close(fd));
        REAL(close, close_fn)(fd);
        errno = ENOMEM;
        return -1;
    }
    errno = saved_errno;
    return fd;
}

/* Claims under way: an open of an engine node or a dup of one of ours has its descriptor in the
 * kernel's table before the preload claims it. The thread's own count says whether a wait for
 * them would wait for this very thread (a call from a signal handler that interrupted a claim). */
static _Atomic int claims_under_way;
static __thread int claims_under_way_here;

static inline void claim_begins(void) {
    claims_under_way_here++;
    atomic_fetch_add_explicit(&claims_under_way, 1, memory_order_acq_rel);
}

static inline void claim_ends(void) {
    atomic_fetch_sub_explicit(&claims_under_way, 1, memory_order_acq_rel);
    claims_under_way_here--;
}

/* Waits until `fd` is claimed or no claim is under way in another thread. A claim takes a few
 * microseconds, but its thread may be preempted on a loaded machine: yield first, then sleep in
 * short steps, and give up after two seconds (a thread stopped inside an open forever must not
 * hang this one too). */
static __attribute__((noinline)) void wait_for_claims(int fd) {
    if (claims_under_way_here != 0) return;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (unsigned round = 0; atomic_load_explicit(&claims_under_way, memory_order_acquire) != 0 && !owned(fd); round++) {
        if (round < 1000) {
            (void)syscall(SYS_sched_yield);
            continue;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= 2) return;
        struct timespec step = {.tv_sec = 0, .tv_nsec = 50 * 1000};
        (void)syscall(SYS_nanosleep, &step, NULL);
    }
}

static int open_engine_path_counted(int kind, int flags);

static int open_engine_path(int kind, int flags) {
    claim_begins();
    int fd = open_engine_path_counted(kind, flags);
    claim_ends();
    return fd;
}

static int open_engine_path_counted(int kind, int flags) {
    int saved_errno = errno; /* loading the engine may leave errno set; a successful open does not */
    if (!ensure_engine()) {
        errno = ENXIO;
        return -1;
    }
    int fd;
    if (kind == PATH_CONTAINER && engine.open_container != NULL) {
        fd = ENGINE_CALL(engine.open_container(flags));
    } else if (kind == PATH_IOMMU || kind == PATH_CONTAINER) {
        fd = ENGINE_CALL(engine.open(flags));
    } else if (kind <= PATH_GROUP_BASE) {
        if (engine.open_group == NULL) {
            errno = ENOENT;
            return -1;
        }
        fd = ENGINE_CALL(engine.open_group(PATH_GROUP_BASE - kind, flags));
    } else if (engine.open_device != NULL) {
        fd = ENGINE_CALL(engine.open_device(kind, flags));
    } else {
        errno = ENOENT;
        return -1;
    }
    if (fd < 0) return (int)from_engine(fd);
    return claim_engine_fd(fd, saved_errno);
}

/* Whether open's variadic mode argument is present (glibc's __OPEN_NEEDS_MODE). */
static inline int needs_mode(int flags) {
    return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

#define MODE_ARGUMENT(flags, last)         \
    mode_t mode = 0;                       \
    if (needs_mode(flags)) {               \
        va_list arguments;                 \
        va_start(arguments, last);         \
        mode = (mode_t)va_arg(arguments, int); \
        va_end(arguments);                 \
    }

IOASID_EXPORT int open(const char *path, int flags, ...) {
    MODE_ARGUMENT(flags, flags);
    int kind = engine_path_kind(path);
    if (unlikely(kind != PATH_NOT_ENGINE)) return open_engine_path(kind, flags);
    IOASID_REDIRECT_OPEN(AT_FDCWD, path, flags, mode);
    return fresh(REAL(open, open_fn)(path, flags, mode));
}

IOASID_EXPORT int open64(const char *path, int flags, ...) {
    MODE_ARGUMENT(flags, flags);
    int kind = engine_path_kind(path);
    if (unlikely(kind != PATH_NOT_ENGINE)) return open_engine_path(kind, flags);
    IOASID_REDIRECT_OPEN(AT_FDCWD, path, flags, mode);
    return fresh(REAL(open64, open_fn)(path, flags, mode));
}

IOASID_EXPORT int openat(int dirfd, const char *path, int flags, ...) {
    MODE_ARGUMENT(flags, flags);
    int kind = engine_path_kind(path);
    if (unlikely(kind != PATH_NOT_ENGINE)) return open_engine_path(kind, flags);
    IOASID_REDIRECT_OPEN(dirfd, path, flags, mode);
    return fresh(REAL(openat, openat_fn)(dirfd, path, flags, mode));
}

IOASID_EXPORT int openat64(int dirfd, const char *path, int flags, ...) {
    MODE_ARGUMENT(flags, flags);
    int kind = engine_path_kind(path);
    if (unlikely(kind != PATH_NOT_ENGINE)) return open_engine_path(kind, flags);
    IOASID_REDIRECT_OPEN(dirfd, path, flags, mode);
    return fresh(REAL(openat64, openat_fn)(dirfd, path, flags, mode));
}

IOASID_EXPORT int __open_2(const char *path, int flags) {
    int kind = engine_path_kind(path);
    if (unlikely(kind != PATH_NOT_ENGINE)) return open_engine_path(kind, flags);
    IOASID_REDIRECT_OPEN(AT_FDCWD, path, flags, 0);
    return fresh(REAL(__open_2, open2_fn)(path, flags));
}

IOASID_EXPORT int __open64_2(const char *path, int flags) {
    int kind = engine_path_kind(path);
    if (unlikely(kind != PATH_NOT_ENGINE)) return open_engine_path(kind, flags);
    IOASID_REDIRECT_OPEN(AT_FDCWD, path, flags, 0);
    return fresh(REAL(__open64_2, open2_fn)(path, flags));
}

IOASID_EXPORT int __openat_2(int dirfd, const char *path, int flags) {
    int kind = engine_path_kind(path);
    if (unlikely(kind != PATH_NOT_ENGINE)) return open_engine_path(kind, flags);
    IOASID_REDIRECT_OPEN(dirfd, path, flags, 0);
    return fresh(REAL(__openat_2, openat2_fn)(dirfd, path, flags));
}

IOASID_EXPORT int __openat64_2(int dirfd, const char *path, int flags) {
    int kind = engine_path_kind(path);
    if (unlikely(kind != PATH_NOT_ENGINE)) return open_engine_path(kind, flags);
    IOASID_REDIRECT_OPEN(dirfd, path, flags, 0);
    return fresh(REAL(__openat64_2, openat2_fn)(dirfd, path, flags));
}

/* ---------------------------------------------------------------------------------------------
 * Calls on an fd: the engine's fds go to the engine, everything else to libc.
 */

static inline void *variadic_pointer(va_list *arguments) {
    return va_arg(*arguments, void *);
}

/*
 * Requests the kernel answers for every file before its driver sees them (fs/ioctl.c's
 * do_vfs_ioctl): close-on-exec, non-blocking and async flags, and the generic file queries.
 * On our descriptors they go to the underlying kernel file, which changes the same flags (and
 * answers the queries as a file without those operations does).
 */
static inline int is_file_level_ioctl(unsigned long request) {
    switch ((unsigned int)request) {
    case FIOCLEX: case FIONCLEX: case FIONBIO: case FIOASYNC: case FIOQSIZE:
    case FIFREEZE: case FITHAW: case FIGETBSZ: case FS_IOC_FIEMAP:
    case FICLONE: case FICLONERANGE: case FIDEDUPERANGE:
        return 1;
    default:
        return 0;
    }
}

/* The kernel refused an ioctl on a number that was not ours when the wrapper looked. One of ours
 * may have been there all the same: another thread opened /dev/iommu (or dup'ed one of ours)
 * onto it and had not claimed it yet, or claimed it and closed it again before this thread looked
 * a second time; the kernel then answered for the eventfd behind it. The refusal changed
 * nothing, so the call is routed again: to the engine when the number is ours now, to the kernel
 * when a claim was let go during the call (it answers for what the number holds now, or EBADF),
 * and the refusal stands when nothing of ours came or went. `let_go` is claims_let_go before the
 * kernel call. Costs foreign descriptors nothing unless the kernel said ENOTTY. */
static __attribute__((noinline)) int ioctl_failed(int fd, unsigned long request, void *argument, int result,
                                                  unsigned long let_go) {
    for (int attempt = 0; errno == ENOTTY && !is_file_level_ioctl(request); attempt++) {
        if (!owned(fd) && atomic_load_explicit(&claims_under_way, memory_order_acquire) != 0) wait_for_claims(fd);
        if (owned(fd)) {
            long answer = ENGINE_CALL(engine.ioctl(fd, request, argument));
            if (!engine_answer_stands(fd, &answer)) {
                errno = ENOTTY;
                return result;
            }
            return (int)from_engine(answer);
        }
        atomic_thread_fence(memory_order_acquire); /* the count moved before the byte cleared */
        unsigned long now = atomic_load_explicit(&claims_let_go, memory_order_acquire);
        if (now == let_go || attempt == 64) return result;
        let_go = now;
        result = REAL(ioctl, ioctl_fn)(fd, request, argument);
        if (result >= 0) return result;
    }
    return result;
}

/* Every ioctl the fast path of preload_ioctl.c does not finish: ours, KVM's VFIO attribute, and
 * all of them once the engine is loaded. */
int ioasid_preload_ioctl(int fd, unsigned long request, void *argument) {
    if (unlikely(owned(fd)) && !is_file_level_ioctl(request)) {
        long result = ENGINE_CALL(engine.ioctl(fd, request, argument));
        if (engine_answer_stands(fd, &result)) return (int)from_engine(result);
    }
    if (unlikely(request == IOASID_KVM_SET_DEVICE_ATTR) && ioasid_kvm_vfio_attribute(fd, argument)) return 0;
    /* Without the engine no number can be ours: a tail call, nothing added. */
    if (likely(atomic_load_explicit(&ioasid_engine_state, memory_order_relaxed) != ENGINE_READY))
        return REAL(ioctl, ioctl_fn)(fd, request, argument);
    unsigned long let_go = atomic_load_explicit(&claims_let_go, memory_order_acquire);
    int result = REAL(ioctl, ioctl_fn)(fd, request, argument);
    if (unlikely(result < 0)) return ioctl_failed(fd, request, argument, result, let_go);
    return result;
}

#if !IOASID_FIXED_IOCTL_WRAPPER
/* Where the variadic pointer does not travel like a fixed third parameter, the exported ioctl
 * stays variadic. */
IOASID_EXPORT int ioctl(int fd, unsigned long request, ...) {
    va_list arguments;
    va_start(arguments, request);
    void *argument = variadic_pointer(&arguments);
    va_end(arguments);
    return ioasid_preload_ioctl(fd, request, argument);
}
#endif

#if defined(__TIMESIZE) && __TIMESIZE == 32 && defined(__USE_TIME_BITS64)
/* 32-bit targets with 64-bit time_t call this name instead of ioctl. */
IOASID_EXPORT int __ioctl_time64(int fd, unsigned long request, ...) {
    va_list arguments;
    va_start(arguments, request);
    void *argument = variadic_pointer(&arguments);
    va_end(arguments);
    if (unlikely(owned(fd)) && !is_file_level_ioctl(request)) {
        long result = ENGINE_CALL(engine.ioctl(fd, request, argument));
        if (engine_answer_stands(fd, &result)) return (int)from_engine(result);
    }
    static _Atomic(void *) real_ioctl_time64;
    void *real = atomic_load(&real_ioctl_time64);
    if (real == NULL) atomic_store(&real_ioctl_time64, real = dlsym(RTLD_NEXT, "__ioctl_time64"));
    return ((ioctl_fn)(real ? real : resolve_real(REAL_ioctl)))(fd, request, argument);
}
#endif

IOASID_EXPORT ssize_t read(int fd, void *buffer, size_t count) {
    if (unlikely(owned(fd))) {
        long result = ENGINE_CALL(engine.read(fd, buffer, count));
        if (engine_answer_stands(fd, &result)) return from_engine(result);
    }
    return REAL(read, read_fn)(fd, buffer, count);
}

IOASID_EXPORT ssize_t write(int fd, const void *buffer, size_t count) {
    if (unlikely(owned(fd))) {
        long result = ENGINE_CALL(engine.write(fd, buffer, count));
        if (engine_answer_stands(fd, &result)) return from_engine(result);
    }
    return REAL(write, write_fn)(fd, buffer, count);
}

/* Positioned reads and writes: VFIO device regions. */
static ssize_t engine_pread(int fd, void *buffer, size_t count, int64_t offset) {
    if (engine.pread == NULL) {
        errno = ESPIPE;
        return -1;
    }
    long result = ENGINE_CALL(engine.pread(fd, buffer, count, offset));
    if (!engine_answer_stands(fd, &result)) return syscall(SYS_pread64, fd, buffer, count, (long)offset);
    return from_engine(result);
}

static ssize_t engine_pwrite(int fd, const void *buffer, size_t count, int64_t offset) {
    if (engine.pwrite == NULL) {
        errno = ESPIPE;
        return -1;
    }
    long result = ENGINE_CALL(engine.pwrite(fd, buffer, count, offset));
    if (!engine_answer_stands(fd, &result)) return syscall(SYS_pwrite64, fd, buffer, count, (long)offset);
    return from_engine(result);
}

IOASID_EXPORT ssize_t pread(int fd, void *buffer, size_t count, off_t offset) {
    if (unlikely(owned(fd))) return engine_pread(fd, buffer, count, offset);
    return REAL(pread, pread_fn)(fd, buffer, count, offset);
}

IOASID_EXPORT ssize_t pread64(int fd, void *buffer, size_t count, off64_t offset) {
    if (unlikely(owned(fd))) return engine_pread(fd, buffer, count, offset);
    return REAL(pread64, pread_fn)(fd, buffer, count, offset);
}

IOASID_EXPORT ssize_t pwrite(int fd, const void *buffer, size_t count, off_t offset) {
    if (unlikely(owned(fd))) return engine_pwrite(fd, buffer, count, offset);
    return REAL(pwrite, pwrite_fn)(fd, buffer, count, offset);
}

IOASID_EXPORT ssize_t pwrite64(int fd, const void *buffer, size_t count, off64_t offset) {
    if (unlikely(owned(fd))) return engine_pwrite(fd, buffer, count, offset);
    return REAL(pwrite64, pwrite_fn)(fd, buffer, count, offset);
}

/* The fortified forms (programs built with _FORTIFY_SOURCE): the buffer-size check first. */
IOASID_EXPORT ssize_t __pread_chk(int fd, void *buffer, size_t count, off_t offset, size_t size) {
    if (unlikely(owned(fd))) {
        if (count > size) __chk_fail();
        return engine_pread(fd, buffer, count, offset);
    }
    return REAL(__pread_chk, pread_chk_fn)(fd, buffer, count, offset, size);
}

IOASID_EXPORT ssize_t __pread64_chk(int fd, void *buffer, size_t count, off64_t offset, size_t size) {
    if (unlikely(owned(fd))) {
        if (count > size) __chk_fail();
        return engine_pread(fd, buffer, count, offset);
    }
    return REAL(__pread64_chk, pread_chk_fn)(fd, buffer, count, offset, size);
}

/* Vectored forms: one engine call per element, stopping at a short transfer; an error after
 * some bytes moved returns the bytes, as the kernel's positioned vector I/O does. */
static ssize_t engine_vector(int fd, const struct iovec *vector, int count, int64_t offset, int is_write) {
    if (count < 0 || count > IOV_MAX || offset < 0) {
        errno = EINVAL;
        return -1;
    }
    ssize_t done = 0;
    for (int i = 0; i < count; i++) {
        ssize_t moved = is_write ? engine_pwrite(fd, vector[i].iov_base, vector[i].iov_len, offset + done)
                                 : engine_pread(fd, vector[i].iov_base, vector[i].iov_len, offset + done);
        if (moved < 0) return done > 0 ? done : -1;
        done += moved;
        if ((size_t)moved < vector[i].iov_len) break;
    }
    return done;
}

IOASID_EXPORT ssize_t preadv(int fd, const struct iovec *vector, int count, off_t offset) {
    if (unlikely(owned(fd))) return engine_vector(fd, vector, count, offset, 0);
    return REAL(preadv, preadv_fn)(fd, vector, count, offset);
}

IOASID_EXPORT ssize_t preadv64(int fd, const struct iovec *vector, int count, off64_t offset) {
    if (unlikely(owned(fd))) return engine_vector(fd, vector, count, offset, 0);
    return REAL(preadv64, preadv_fn)(fd, vector, count, offset);
}

IOASID_EXPORT ssize_t pwritev(int fd, const struct iovec *vector, int count, off_t offset) {
    if (unlikely(owned(fd))) return engine_vector(fd, vector, count, offset, 1);
    return REAL(pwritev, preadv_fn)(fd, vector, count, offset);
}

IOASID_EXPORT ssize_t pwritev64(int fd, const struct iovec *vector, int count, off64_t offset) {
    if (unlikely(owned(fd))) return engine_vector(fd, vector, count, offset, 1);
    return REAL(pwritev64, preadv_fn)(fd, vector, count, offset);
}

/* The v2 forms: offset -1 (the file position) has no meaning on these descriptors. */
IOASID_EXPORT ssize_t preadv2(int fd, const struct iovec *vector, int count, off_t offset, int flags) {
    if (unlikely(owned(fd))) {
        if (offset == -1) {
            errno = ESPIPE;
            return -1;
        }
        return engine_vector(fd, vector, count, offset, 0);
    }
    return REAL(preadv2, preadv2_fn)(fd, vector, count, offset, flags);
}

IOASID_EXPORT ssize_t pwritev2(int fd, const struct iovec *vector, int count, off_t offset, int flags) {
    if (unlikely(owned(fd))) {
        if (offset == -1) {
            errno = ESPIPE;
            return -1;
        }
        return engine_vector(fd, vector, count, offset, 1);
    }
    return REAL(pwritev2, preadv2_fn)(fd, vector, count, offset, flags);
}

/* Tells the engine an owned fd is going away (the kernel closes it next). */
static void forget(int fd) {
    if (owned(fd) && !ioasid_in_vfork_child) {
        ENGINE_CALL(engine.close(fd));
        set_owned(fd, 0);
    }
}

/* munmap: a region an engine file mapped (a vIOMMU's) is unmapped by the engine, which then
 * lets its owner go; everything else goes to libc. Before the engine is loaded this costs one
 * atomic load. */
typedef int (*munmap_fn)(void *, size_t);
static int munmap_unreported(void *address, size_t length) {
    if (unlikely(atomic_load_explicit(&ioasid_engine_state, memory_order_acquire) == ENGINE_READY) &&
        engine.munmap != NULL && ENGINE_CALL(engine.munmap(address, length)) == 1)
        return 0;
    if (ioasid_trap_forget(address, length) != 0) return -1; /* a trapped MMIO range stops trapping */
    void *real = resolve_real(REAL_munmap);
    if (real == NULL) return (int)syscall(SYS_munmap, address, length);
    return ((munmap_fn)real)(address, length);
}

/* Every change of the program's mappings is reported before and after it is made: the engine
 * remembers the memory that passed the kernel's pin check until then (ioasid_sys_pinnable.h). */
IOASID_EXPORT int munmap(void *address, size_t length) {
    ioasid_sys_mappings_changing();
    int result = munmap_unreported(address, length);
    ioasid_sys_mappings_changing();
    return result;
}

IOASID_EXPORT void *mremap(void *old_address, size_t old_size, size_t new_size, int flags, ...) {
    void *new_address = NULL;
    if (flags & MREMAP_FIXED) {
        va_list arguments;
        va_start(arguments, flags);
        new_address = va_arg(arguments, void *);
        va_end(arguments);
    }
    ioasid_sys_mappings_changing();
    mremap_fn real = REAL(mremap, mremap_fn);
    void *result = real != NULL ? real(old_address, old_size, new_size, flags, new_address)
                                : (void *)syscall(SYS_mremap, old_address, old_size, new_size, flags, new_address);
    ioasid_sys_mappings_changing();
    return result;
}

/* close of one of ours: the engine forgets the number first (a call racing the close then
 * answers EBADF, as the kernel may), the kernel closes it, and only then does the table let it
 * go, so that no call can reach the kernel's eventfd in between. */
IOASID_EXPORT int close(int fd) {
    if (unlikely(owned(fd)) && !ioasid_in_vfork_child) {
        unsigned char generation = (unsigned char)owned(fd);
        ENGINE_CALL(engine.close(fd));
        int result = REAL(close, close_fn)(fd);
        if (generation != 0) claim_taken_back(fd, generation);
        return result;
    }
    return REAL(close, close_fn)(fd);
}

/* After the kernel made `newfd` a copy of the owned `oldfd`: tell the engine and claim it. */
static int adopt(int oldfd, int newfd) {
    if (ioasid_in_vfork_child) return newfd; /* the parent's table is not the child's */
    int result = ENGINE_CALL(engine.dup(oldfd, newfd));
    if (result < 0) {
        REAL(close, close_fn)(newfd);
        errno = -result;
        return -1;
    }
    if (set_owned(newfd, 1) != 0) {
        ENGINE_CALL(engine.close(newfd));
        REAL(close, close_fn)(newfd);
        errno = ENOMEM;
        return -1;
    }
    return newfd;
}

IOASID_EXPORT int dup(int oldfd) {
    if (likely(!owned(oldfd))) return fresh(REAL(dup, dup_fn)(oldfd));
    claim_begins();
    int newfd = REAL(dup, dup_fn)(oldfd);
    if (newfd >= 0) newfd = adopt(oldfd, newfd);
    claim_ends();
    return newfd;
}

/* dup2/dup3 replace whatever `newfd` named: the engine forgets it if it was one of ours. */
static int replaced(int oldfd, int was_owned, int newfd, int result) {
    if (result < 0) return result;
    if (was_owned) return adopt(oldfd, newfd); /* the engine's dup replaces what newfd named */
    forget(newfd);
    return result;
}

IOASID_EXPORT int dup2(int oldfd, int newfd) {
    int was_owned = owned(oldfd);
    if (likely(!was_owned && !owned(newfd)) || oldfd == newfd) return REAL(dup2, dup2_fn)(oldfd, newfd);
    if (was_owned) claim_begins();
    int result = replaced(oldfd, was_owned, newfd, REAL(dup2, dup2_fn)(oldfd, newfd));
    if (was_owned) claim_ends();
    return result;
}

IOASID_EXPORT int dup3(int oldfd, int newfd, int flags) {
    int was_owned = owned(oldfd);
    if (likely(!was_owned && !owned(newfd)) || oldfd == newfd) return REAL(dup3, dup3_fn)(oldfd, newfd, flags);
    if (was_owned) claim_begins();
    int result = replaced(oldfd, was_owned, newfd, REAL(dup3, dup3_fn)(oldfd, newfd, flags));
    if (was_owned) claim_ends();
    return result;
}

static int fcntl_common(enum real_index index, int fd, int command, void *argument) {
    fcntl_fn real = (fcntl_fn)resolve_real(index);
    if (real == NULL) real = (fcntl_fn)resolve_real(REAL_fcntl);
    if (likely(!owned(fd)) || (command != F_DUPFD && command != F_DUPFD_CLOEXEC)) {
        int result = real(fd, command, argument);
        if (unlikely(command == F_DUPFD || command == F_DUPFD_CLOEXEC)) return fresh(result);
        return result;
    }
    claim_begins();
    int newfd = real(fd, command, argument);
    if (newfd >= 0) newfd = adopt(fd, newfd);
    claim_ends();
    return newfd;
}

IOASID_EXPORT int fcntl(int fd, int command, ...) {
    va_list arguments;
    va_start(arguments, command);
    void *argument = variadic_pointer(&arguments);
    va_end(arguments);
    return fcntl_common(REAL_fcntl, fd, command, argument);
}

IOASID_EXPORT int fcntl64(int fd, int command, ...) {
    va_list arguments;
    va_start(arguments, command);
    void *argument = variadic_pointer(&arguments);
    va_end(arguments);
    return fcntl_common(REAL_fcntl64, fd, command, argument);
}

static void *mmap_engine(void *address, size_t length, int protection, int flags, int fd, long offset) {
    long result = ENGINE_CALL(engine.mmap(address, length, protection, flags, fd, offset));
    if (result < 0 && result >= -4095) {
        errno = (int)-result;
        return MAP_FAILED;
    }
    return (void *)result;
}

IOASID_EXPORT void *mmap(void *address, size_t length, int protection, int flags, int fd, off_t offset) {
    void *result;
    ioasid_sys_mappings_changing(); /* reported as munmap says */
    if (unlikely(owned(fd)) && !(flags & MAP_ANONYMOUS)) {
        result = mmap_engine(address, length, protection, flags, fd, (long)offset);
    } else {
        result = REAL(mmap, mmap_fn)(address, length, protection, flags, fd, offset);
    }
    ioasid_sys_mappings_changing();
    return result;
}

IOASID_EXPORT void *mmap64(void *address, size_t length, int protection, int flags, int fd, off64_t offset) {
    void *result;
    ioasid_sys_mappings_changing();
    if (unlikely(owned(fd)) && !(flags & MAP_ANONYMOUS)) {
        result = mmap_engine(address, length, protection, flags, fd, (long)offset);
    } else {
        mmap_fn real = (mmap_fn)resolve_real(REAL_mmap64);
        if (real == NULL) real = (mmap_fn)resolve_real(REAL_mmap);
        result = real(address, length, protection, flags, fd, (off_t)offset);
    }
    ioasid_sys_mappings_changing();
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * close_range / closefrom close many fds at once; the engine forgets the owned ones first.
 */

/* The claims a range close found (their generations), so that it takes back only those. */
struct range_claims {
    int count, overflow;
    int fd[64];
    unsigned char generation[64];
};

/* Before the kernel closes the range (`claims->count` < 0 on entry: the first pass): the engine
 * forgets the owned numbers, recorded in `claims`; after it: the table lets those claims go
 * (the order of close()). A number claimed anew in between stays claimed. */
static void forget_range(unsigned int first, unsigned int last, struct range_claims *claims) {
    int engine_side = claims->count < 0;
    if (engine_side) claims->count = claims->overflow = 0;
    if (atomic_load_explicit(&ioasid_engine_state, memory_order_acquire) != ENGINE_READY || ioasid_in_vfork_child) return;
    if (last > (unsigned)INT_MAX) last = (unsigned)INT_MAX;
    for (unsigned int fd = first; fd <= last;) {
        if (fd >= CHUNK_SIZE && high_chunk((int)fd, 0) == NULL) {
            unsigned int next = (fd | (CHUNK_SIZE - 1)) + 1; /* skip the whole absent chunk */
            if (next == 0 || next <= fd) break;
            fd = next;
            continue;
        }
        unsigned char generation = (unsigned char)owned((int)fd);
        if (generation != 0 && engine_side) {
            if (claims->count < 64) {
                claims->fd[claims->count] = (int)fd;
                claims->generation[claims->count++] = generation;
            } else {
                claims->overflow = 1;
            }
            ENGINE_CALL(engine.close((int)fd));
        } else if (generation != 0) {
            int recorded = 0;
            for (int index = 0; index < claims->count; index++) {
                if (claims->fd[index] == (int)fd) {
                    claim_taken_back((int)fd, claims->generation[index]);
                    recorded = 1;
                    break;
                }
            }
            if (!recorded && claims->overflow) set_owned((int)fd, 0);
        }
        if (fd == last) break;
        fd++;
    }
}

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

IOASID_EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
    int closing = first <= last && ((unsigned)flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) == 0 &&
                  !((unsigned)flags & CLOSE_RANGE_CLOEXEC);
    struct range_claims claims = {.count = -1};
    if (closing) forget_range(first, last, &claims);
    int result;
    close_range_fn real = (close_range_fn)resolve_real(REAL_close_range);
    if (real != NULL) {
        result = real(first, last, flags);
    } else {
#ifdef SYS_close_range
        result = (int)syscall(SYS_close_range, first, last, flags);
#else
        errno = ENOSYS;
        result = -1;
#endif
    }
    if (closing && claims.count >= 0) forget_range(first, last, &claims);
    return result;
}

IOASID_EXPORT void closefrom(int lowfd) {
    if (lowfd < 0) lowfd = 0;
    struct range_claims claims = {.count = -1};
    forget_range((unsigned)lowfd, (unsigned)INT_MAX, &claims);
    closefrom_fn real = (closefrom_fn)resolve_real(REAL_closefrom);
    if (real != NULL) {
        real(lowfd);
    } else {
#ifdef SYS_close_range
        (void)syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0);
#endif
    }
    if (claims.count >= 0) forget_range((unsigned)lowfd, (unsigned)INT_MAX, &claims);
}
