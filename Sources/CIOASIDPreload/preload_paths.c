/*
 * The path half of the preload: what a program sees when it looks at ioasid's device nodes and
 * the modelled machine's sysfs, without opening anything.
 *
 * Why: a VMM or user-space driver checks before it opens — stat("/dev/iommu"), access(),
 * the sysfs view of a PCI device (vendor, device, class, config, iommu_group, driver, the
 * vfio-dev/vfioN folder, SR-IOV), then stat of /dev/vfio/devices/vfioN to compare the numbers
 * with sysfs. There is no kernel driver behind any of it here.
 *
 * Two kinds of paths:
 *  - "/dev/iommu": always ioasid's (also without a machine). stat/lstat/statx report a character
 *    device 10:257 (IOASID_IOMMU_MINOR below; the numbers are DeviceNumbers in
 *    Sources/IOASIDSoftDrivers/MachineTopology.swift); access() says it exists and is readable
 *    and writable. The engine is not loaded for this.
 *  - The modelled machine's view (only when IOASID_MACHINE is set): "/dev/vfio" and everything
 *    under it, "/sys/bus/pci/devices/0100:*", "/sys/devices/pci0100:*",
 *    "/sys/bus/pci/drivers/vfio-pci/0100:*", and "/sys/kernel/iommu_groups/<N>" for the groups
 *    the machine has. These are redirected into the engine's testbed folder (SysfsView in the
 *    engine), where they exist as real folders, files, symbolic links and (when mknod is
 *    permitted) device nodes; the real libc function then runs on the folder's path. realpath()
 *    results are translated back. open() of "config" and "sriov_numvfs" goes to the engine
 *    (a live snapshot; a write that creates or removes VFs). stat() of a node under /dev/vfio
 *    reports the character device whatever the folder holds.
 *
 * Fault injection (only when IOASID_FAULT_INJECTION is on, `ioasid run --fault-injection`): the
 * kernel's files as the selftests use them. open() of the calling thread's fail-nth
 * ("/proc/self/task/TID/fail-nth", "/proc/PID/task/TID/fail-nth", "/proc/thread-self/fail-nth",
 * and "/proc/self/fail-nth" from the main thread) goes to the engine (a per-thread countdown of
 * its injection points); another thread's is refused with EPERM. "/sys/kernel/debug" itself and
 * its "fail*" folders are redirected into a folder of the engine that holds the knobs
 * (failslab, fail_page_alloc, fail_usercopy), so opendir/readdir and openat relative to it work.
 *
 * fstat() (and fstatat/statx with AT_EMPTY_PATH) on a descriptor the engine returned for a
 * device node reports that node (the engine remembers what each was opened as).
 *
 * Cost for everything else: each wrapper first tests two bytes of the path (absolute, under
 * /d… or /s…) or the owned-fd byte of the descriptor, then calls the real libc function.
 * Relative paths are never ours (a program that chdir()s into the view is not supported).
 *
 * Not covered: scandir(), ftw/nftw(), glob() and other libc functions that reach the file
 * system through glibc's internal symbols; stdio writes to an engine attribute through a
 * FILE that was not made by fopen() (e.g. a shell's `echo N > sriov_numvfs`: the shell's
 * stdio writes bypass the interposer).
 */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE
#include "preload_internal.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define IOASID_EXPORT __attribute__((visibility("default")))

/* The PCI domain of every modelled device, and the address of device `index` (its place in the
 * machine specification): domain 0x0100, bus 0, device index + 1, function 0. The C twin of
 * PCIAddress.modelled(index:) in MachineTopology.swift. `buffer` holds at least 13 bytes. */
#define IOASID_MODELLED_DOMAIN "0100"
IOASID_HIDDEN void modelled_bdf(int index, char *buffer) {
    static const char digits[] = "0123456789abcdef";
    int device = index + 1;
    memcpy(buffer, IOASID_MODELLED_DOMAIN ":00:", 8);
    buffer[8] = digits[(device >> 4) & 0xf];
    buffer[9] = digits[device & 0xf];
    buffer[10] = '.';
    buffer[11] = '0';
    buffer[12] = '\0';
}

/* ---------------------------------------------------------------------------------------------
 * The real functions, looked up on first use.
 */

static void *real_symbol(_Atomic(void *) *slot, const char *name) {
    void *function = atomic_load_explicit(slot, memory_order_acquire);
    if (likely(function != NULL)) return function;
    function = dlsym(RTLD_NEXT, name);
    if (function != NULL) atomic_store_explicit(slot, function, memory_order_release);
    return function;
}

#define REAL_FN(name, type)                                            \
    static type real_##name(void) {                                    \
        static _Atomic(void *) slot;                                   \
        return (type)real_symbol(&slot, #name);                        \
    }

typedef int (*stat_fn)(const char *, struct stat *);
typedef int (*fstat_fn)(int, struct stat *);
typedef int (*fstatat_fn)(int, const char *, struct stat *, int);
typedef int (*xstat_fn)(int, const char *, struct stat *);
typedef int (*fxstat_fn)(int, int, struct stat *);
typedef int (*fxstatat_fn)(int, int, const char *, struct stat *, int);
typedef int (*statx_fn)(int, const char *, int, unsigned, struct statx *);
typedef int (*access_fn)(const char *, int);
typedef int (*faccessat_fn)(int, const char *, int, int);
typedef ssize_t (*readlink_fn)(const char *, char *, size_t);
typedef ssize_t (*readlinkat_fn)(int, const char *, char *, size_t);
typedef ssize_t (*readlink_chk_fn)(const char *, char *, size_t, size_t);
typedef ssize_t (*readlinkat_chk_fn)(int, const char *, char *, size_t, size_t);
typedef char *(*realpath_fn)(const char *, char *);
typedef char *(*realpath_chk_fn)(const char *, char *, size_t);
typedef char *(*canonicalize_fn)(const char *);
typedef DIR *(*opendir_fn)(const char *);
typedef FILE *(*fopen_fn)(const char *, const char *);
typedef int (*openat_fn)(int, const char *, int, ...);

REAL_FN(stat, stat_fn)
REAL_FN(stat64, stat_fn)
REAL_FN(lstat, stat_fn)
REAL_FN(lstat64, stat_fn)
REAL_FN(fstat, fstat_fn)
REAL_FN(fstat64, fstat_fn)
REAL_FN(fstatat, fstatat_fn)
REAL_FN(fstatat64, fstatat_fn)
REAL_FN(__xstat, xstat_fn)
REAL_FN(__xstat64, xstat_fn)
REAL_FN(__lxstat, xstat_fn)
REAL_FN(__lxstat64, xstat_fn)
REAL_FN(__fxstat, fxstat_fn)
REAL_FN(__fxstat64, fxstat_fn)
REAL_FN(__fxstatat, fxstatat_fn)
REAL_FN(__fxstatat64, fxstatat_fn)
REAL_FN(statx, statx_fn)
REAL_FN(access, access_fn)
REAL_FN(euidaccess, access_fn)
REAL_FN(eaccess, access_fn)
REAL_FN(faccessat, faccessat_fn)
REAL_FN(readlink, readlink_fn)
REAL_FN(readlinkat, readlinkat_fn)
REAL_FN(__readlink_chk, readlink_chk_fn)
REAL_FN(__readlinkat_chk, readlinkat_chk_fn)
REAL_FN(realpath, realpath_fn)
REAL_FN(__realpath_chk, realpath_chk_fn)
REAL_FN(canonicalize_file_name, canonicalize_fn)
REAL_FN(opendir, opendir_fn)
REAL_FN(fopen, fopen_fn)
REAL_FN(fopen64, fopen_fn)
REAL_FN(openat, openat_fn)

/* ---------------------------------------------------------------------------------------------
 * Classifying a path.
 */

enum path_class {
    PATH_FOREIGN = 0, /* not ours: the real function runs on the path as given */
    PATH_IOMMU_NODE,  /* "/dev/iommu" */
    PATH_VIEW,        /* the machine's view: the real function runs on the testbed path */
};

static pthread_mutex_t testbed_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int testbed_state; /* 0 not asked yet, 1 ready, -1 none */
static char testbed_root[PATH_MAX];
static size_t testbed_length;

/* Whether a modelled machine is configured (IOASID_MACHINE non-empty). */
static int machine_configured(void) {
    const char *spec = getenv("IOASID_MACHINE");
    return spec != NULL && spec[0] != '\0';
}

/* The testbed folder (loads the engine on first use); NULL when there is none. */
static const char *testbed(void) {
    int state = atomic_load_explicit(&testbed_state, memory_order_acquire);
    if (likely(state == 1)) return testbed_root;
    if (state == -1) return NULL;
    pthread_mutex_lock(&testbed_lock);
    state = atomic_load_explicit(&testbed_state, memory_order_relaxed);
    if (state == 0) {
        int saved_errno = errno;
        const char *(*make)(void) = (const char *(*)(void))ioasid_preload_engine_symbol("ioasid_engine_testbed");
        const char *root = make != NULL ? make() : NULL;
        size_t length = root != NULL ? strlen(root) : 0;
        if (root != NULL && length > 0 && length < sizeof testbed_root) {
            memcpy(testbed_root, root, length + 1);
            testbed_length = length;
            state = 1;
        } else {
            state = -1;
        }
        errno = saved_errno;
        atomic_store_explicit(&testbed_state, state, memory_order_release);
    }
    pthread_mutex_unlock(&testbed_lock);
    return state == 1 ? testbed_root : NULL;
}

static int starts_with(const char *path, const char *prefix, size_t length) {
    return strncmp(path, prefix, length) == 0;
}
#define STARTS_WITH(path, literal) starts_with((path), (literal), sizeof(literal) - 1)

/* Whether "MAJ:MIN" (udev's /dev/char/ link name) names one of our nodes. */
static int is_our_char_link(const char *name) {
    unsigned long major_number = 0;
    const char *c = name;
    for (; *c >= '0' && *c <= '9' && major_number < 4096; c++) major_number = major_number * 10 + (unsigned long)(*c - '0');
    if (c == name || *c != ':') return 0;
    if (major_number == IOASID_CDEV_MAJOR || major_number == IOASID_GROUP_MAJOR) return 1;
    return major_number == IOASID_MISC_MAJOR &&
           (strcmp(c + 1, "196") == 0 || strcmp(c + 1, "257") == 0); /* vfio/vfio, iommu */
}

/* Whether `path` (absolute) lies in the machine's view. */
static int in_view(const char *path) {
    if (path[1] == 'd') {
        if (STARTS_WITH(path, "/dev/char/")) return is_our_char_link(path + sizeof("/dev/char/") - 1);
        if (!STARTS_WITH(path, "/dev/vfio")) return 0;
        return path[9] == '\0' || path[9] == '/';
    }
    if (!STARTS_WITH(path, "/sys/")) return 0;
    const char *rest = path + 5;
    if (STARTS_WITH(rest, "bus/pci/devices/" IOASID_MODELLED_DOMAIN ":")) return 1;
    if (STARTS_WITH(rest, "devices/pci" IOASID_MODELLED_DOMAIN ":")) return 1;
    if (STARTS_WITH(rest, "bus/pci/drivers/vfio-pci/" IOASID_MODELLED_DOMAIN ":")) return 1;
    /* The host's Intel IOMMU debugfs describes none of the modelled devices: hidden (the view
     * has no such folder), so programs take their "no debugfs" path. */
    if (STARTS_WITH(rest, "kernel/debug/iommu")) return rest[18] == '\0' || rest[18] == '/';
    if (STARTS_WITH(rest, "kernel/iommu_groups/")) {
        const char *digits = rest + sizeof("kernel/iommu_groups/") - 1;
        return *digits >= '0' && *digits <= '9'; /* ours only if the testbed has it: see classify */
    }
    return 0;
}

/* Whether IOASID_FAULT_INJECTION is on (read each time: only asked for the rare fault paths). */
static int fault_injection_on(void) {
    const char *value = getenv("IOASID_FAULT_INJECTION");
    return value != NULL && value[0] != '\0' && strcmp(value, "0") != 0 && strcmp(value, "no") != 0 &&
           strcmp(value, "off") != 0 && strcmp(value, "false") != 0;
}

/* Whether `path` is "/sys/kernel/debug" (with or without a trailing slash) or lies in one of its
 * "fail*" folders: the fault-injection knobs. */
static int is_fault_debugfs(const char *path) {
    if (!STARTS_WITH(path, "/sys/kernel/debug")) return 0;
    const char *rest = path + sizeof("/sys/kernel/debug") - 1;
    if (rest[0] == '\0' || (rest[0] == '/' && rest[1] == '\0')) return 1;
    return rest[0] == '/' && strncmp(rest + 1, "fail", 4) == 0;
}

/* The engine's fault-injection folder; NULL when fault injection is off. */
static const char *fault_debugfs_root(void) {
    static _Atomic(const char *) root;
    const char *known = atomic_load_explicit(&root, memory_order_acquire);
    if (known != NULL) return known;
    const char *(*make)(void) = (const char *(*)(void))ioasid_preload_engine_symbol("ioasid_engine_fault_debugfs");
    int saved_errno = errno;
    known = make != NULL ? make() : NULL;
    errno = saved_errno;
    if (known != NULL) atomic_store_explicit(&root, known, memory_order_release);
    return known;
}

/* Classifies `path`; for PATH_VIEW writes the testbed path into `out` (PATH_MAX bytes). */
static enum path_class classify(const char *path, char *out) {
    if (likely(!ioasid_path_maybe_ours(path))) return PATH_FOREIGN;
    if (path[1] == 'd' && strcmp(path, "/dev/iommu") == 0) return PATH_IOMMU_NODE;
    if (path[1] == 's' && is_fault_debugfs(path) && fault_injection_on()) {
        const char *root = fault_debugfs_root();
        const char *rest = path + sizeof("/sys/kernel/debug") - 1;
        size_t root_length = root != NULL ? strlen(root) : 0;
        if (root == NULL || root_length + strlen(rest) >= PATH_MAX) return PATH_FOREIGN;
        memcpy(out, root, root_length);
        memcpy(out + root_length, rest, strlen(rest) + 1);
        return PATH_VIEW;
    }
    if (!in_view(path) || !machine_configured()) return PATH_FOREIGN;
    const char *root = testbed();
    size_t length = strlen(path);
    if (root == NULL || testbed_length + length >= PATH_MAX) return PATH_FOREIGN;
    memcpy(out, root, testbed_length);
    memcpy(out + testbed_length, path, length + 1);
    if (path[1] == 's' && STARTS_WITH(path, "/sys/kernel/iommu_groups/")) {
        /* A group number the machine does not have stays the real machine's. */
        char group[PATH_MAX];
        const char *end = path + sizeof("/sys/kernel/iommu_groups/") - 1;
        while (*end >= '0' && *end <= '9') end++;
        size_t prefix = testbed_length + (size_t)(end - path);
        memcpy(group, out, prefix);
        group[prefix] = '\0';
        struct stat ignored;
        if (syscall(SYS_newfstatat, AT_FDCWD, group, &ignored, AT_SYMLINK_NOFOLLOW) != 0) return PATH_FOREIGN;
    }
    return PATH_VIEW;
}

/* The character device a node path of the view names: 1 and the numbers, or 0. */
static int view_node(const char *path, unsigned *major, unsigned *minor, mode_t *permissions) {
    if (STARTS_WITH(path, "/dev/char/")) {
        if (sscanf(path + sizeof("/dev/char/") - 1, "%u:%u", major, minor) != 2) return 0;
        *permissions = *major == IOASID_MISC_MAJOR ? (*minor == IOASID_VFIO_CONTAINER_MINOR ? 0666 : 0660) : 0600;
        return 1;
    }
    if (!STARTS_WITH(path, "/dev/vfio/")) return 0;
    const char *name = path + sizeof("/dev/vfio/") - 1;
    unsigned kind_major = IOASID_GROUP_MAJOR;
    if (strcmp(name, "vfio") == 0) {
        *major = IOASID_MISC_MAJOR;
        *minor = IOASID_VFIO_CONTAINER_MINOR;
        *permissions = 0666;
        return 1;
    }
    if (STARTS_WITH(name, "devices/vfio")) {
        name += sizeof("devices/vfio") - 1;
        kind_major = IOASID_CDEV_MAJOR;
    }
    if (*name < '0' || *name > '9') return 0;
    unsigned long number = 0;
    for (; *name >= '0' && *name <= '9'; name++) {
        number = number * 10 + (unsigned long)(*name - '0');
        if (number > (1ul << 20)) return 0;
    }
    if (*name != '\0') return 0;
    *major = kind_major;
    *minor = (unsigned)number;
    *permissions = 0600;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * stat and friends.
 */

static void make_char_device(struct stat *st, unsigned major, unsigned minor, mode_t permissions) {
    st->st_mode = S_IFCHR | permissions;
    st->st_rdev = makedev(major, minor);
    st->st_size = 0;
    st->st_blocks = 0;
}

/* stat of "/dev/iommu": /dev/null's metadata (the same devtmpfs, owner and times) with the
 * node's type, numbers and permissions (the kernel's 0660). */
static int stat_iommu_node(struct stat *st) {
    if (syscall(SYS_newfstatat, AT_FDCWD, "/dev/null", st, 0) != 0) {
        memset(st, 0, sizeof *st);
        st->st_nlink = 1;
        st->st_blksize = 4096;
    }
    st->st_ino = 0x10000u + IOASID_IOMMU_MINOR; /* a number of its own */
    make_char_device(st, IOASID_MISC_MAJOR, IOASID_IOMMU_MINOR, 0660);
    return 0;
}

/* stat of a view path: the testbed entry, with the node numbers for /dev/vfio nodes. */
static int stat_view(const char *path, const char *redirected, struct stat *st, int flags) {
    if (syscall(SYS_newfstatat, AT_FDCWD, redirected, st, flags) != 0) return -1;
    unsigned major, minor;
    mode_t permissions;
    if (!S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode) && view_node(path, &major, &minor, &permissions))
        make_char_device(st, major, minor, permissions);
    return 0;
}

/* 1 and *st filled when `path` is ours, else 0 (the caller runs the real function). */
static int stat_ours(const char *path, struct stat *st, int flags, int *result) {
    char redirected[PATH_MAX];
    switch (classify(path, redirected)) {
    case PATH_FOREIGN: return 0;
    case PATH_IOMMU_NODE: *result = stat_iommu_node(st); return 1;
    case PATH_VIEW: *result = stat_view(path, redirected, st, flags); return 1;
    }
    return 0;
}

/* After a successful fstat of an engine fd: the node it was opened as, if any. */
static void patch_owned(int fd, struct stat *st) {
    static _Atomic(void *) node_slot;
    int (*node)(int, unsigned *, unsigned *) = atomic_load_explicit(&node_slot, memory_order_acquire);
    if (node == NULL) {
        node = (int (*)(int, unsigned *, unsigned *))ioasid_preload_engine_symbol("ioasid_engine_node");
        if (node == NULL) return;
        atomic_store_explicit(&node_slot, (void *)node, memory_order_release);
    }
    unsigned major = 0, minor = 0;
    if (node(fd, &major, &minor) == 1) {
        mode_t permissions = major == IOASID_MISC_MAJOR ? (minor == IOASID_VFIO_CONTAINER_MINOR ? 0666 : 0660) : 0600;
        make_char_device(st, major, minor, permissions);
    }
}

/* The 64-bit targets this supports (x86-64, AArch64) have one layout for struct stat and
 * struct stat64, which is the kernel's; the *64 names only differ in type. */
_Static_assert(sizeof(struct stat) == sizeof(struct stat64), "struct stat and stat64 share a layout");

#define PATH_STAT(name, type, stat_flags)                                         \
    IOASID_EXPORT int name(const char *path, type *st) {                          \
        int result;                                                               \
        if (unlikely(ioasid_path_maybe_ours(path)) &&                             \
            stat_ours(path, (struct stat *)st, stat_flags, &result))              \
            return result;                                                        \
        return real_##name()(path, (struct stat *)st);                            \
    }

PATH_STAT(stat, struct stat, 0)
PATH_STAT(stat64, struct stat64, 0)
PATH_STAT(lstat, struct stat, AT_SYMLINK_NOFOLLOW)
PATH_STAT(lstat64, struct stat64, AT_SYMLINK_NOFOLLOW)

#define FD_STAT(name, type)                                                       \
    IOASID_EXPORT int name(int fd, type *st) {                                    \
        int result = real_##name()(fd, (struct stat *)st);                        \
        if (unlikely(ioasid_owned(fd)) && result == 0) patch_owned(fd, (struct stat *)st); \
        return result;                                                            \
    }

FD_STAT(fstat, struct stat)
FD_STAT(fstat64, struct stat64)

#define AT_STAT(name, type)                                                                    \
    IOASID_EXPORT int name(int dirfd, const char *path, type *st, int flags) {                 \
        int result;                                                                            \
        if (unlikely(ioasid_path_maybe_ours(path)) &&                                          \
            stat_ours(path, (struct stat *)st, flags & AT_SYMLINK_NOFOLLOW, &result))          \
            return result;                                                                     \
        result = real_##name()(dirfd, path, (struct stat *)st, flags);                         \
        if (unlikely(ioasid_owned(dirfd)) && result == 0 && path != NULL && path[0] == '\0')   \
            patch_owned(dirfd, (struct stat *)st);                                             \
        return result;                                                                         \
    }

AT_STAT(fstatat, struct stat)
AT_STAT(fstatat64, struct stat64)

/* glibc before 2.33 had stat() etc. as inline wrappers around these; older binaries call them. */
#define XSTAT(name, stat_flags)                                                   \
    IOASID_EXPORT int name(int version, const char *path, struct stat *st) {      \
        int result;                                                               \
        if (unlikely(ioasid_path_maybe_ours(path)) && stat_ours(path, st, stat_flags, &result)) \
            return result;                                                        \
        return real_##name()(version, path, st);                                  \
    }

XSTAT(__xstat, 0)
XSTAT(__xstat64, 0)
XSTAT(__lxstat, AT_SYMLINK_NOFOLLOW)
XSTAT(__lxstat64, AT_SYMLINK_NOFOLLOW)

#define FXSTAT(name)                                                              \
    IOASID_EXPORT int name(int version, int fd, struct stat *st) {                \
        int result = real_##name()(version, fd, st);                              \
        if (unlikely(ioasid_owned(fd)) && result == 0) patch_owned(fd, st);        \
        return result;                                                            \
    }

FXSTAT(__fxstat)
FXSTAT(__fxstat64)

#define FXSTATAT(name)                                                                              \
    IOASID_EXPORT int name(int version, int dirfd, const char *path, struct stat *st, int flags) {  \
        int result;                                                                                 \
        if (unlikely(ioasid_path_maybe_ours(path)) &&                                               \
            stat_ours(path, st, flags & AT_SYMLINK_NOFOLLOW, &result))                              \
            return result;                                                                          \
        return real_##name()(version, dirfd, path, st, flags);                                      \
    }

FXSTATAT(__fxstatat)
FXSTATAT(__fxstatat64)

static void statx_char_device(struct statx *buffer, unsigned major, unsigned minor, mode_t permissions) {
    buffer->stx_mode = (unsigned short)(S_IFCHR | permissions);
    buffer->stx_rdev_major = major;
    buffer->stx_rdev_minor = minor;
    buffer->stx_size = 0;
    buffer->stx_blocks = 0;
    buffer->stx_mask |= STATX_TYPE | STATX_MODE;
}

IOASID_EXPORT int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *buffer) {
    if (unlikely(ioasid_path_maybe_ours(path))) {
        char redirected[PATH_MAX];
        switch (classify(path, redirected)) {
        case PATH_FOREIGN:
            break;
        case PATH_IOMMU_NODE: {
            if (syscall(SYS_statx, AT_FDCWD, "/dev/null", flags & ~AT_EMPTY_PATH, mask, buffer) != 0) {
                memset(buffer, 0, sizeof *buffer);
                buffer->stx_nlink = 1;
                buffer->stx_blksize = 4096;
            }
            buffer->stx_ino = 0x10000u + IOASID_IOMMU_MINOR;
            statx_char_device(buffer, IOASID_MISC_MAJOR, IOASID_IOMMU_MINOR, 0660);
            return 0;
        }
        case PATH_VIEW: {
            if (syscall(SYS_statx, AT_FDCWD, redirected, flags & ~AT_EMPTY_PATH, mask, buffer) != 0) return -1;
            unsigned major, minor;
            mode_t permissions;
            if (!S_ISDIR(buffer->stx_mode) && !S_ISLNK(buffer->stx_mode) && view_node(path, &major, &minor, &permissions))
                statx_char_device(buffer, major, minor, permissions);
            return 0;
        }
        }
    }
    statx_fn real = real_statx();
    int result = real != NULL ? real(dirfd, path, flags, mask, buffer) : (int)syscall(SYS_statx, dirfd, path, flags, mask, buffer);
    if (unlikely(ioasid_owned(dirfd)) && result == 0 && path[0] == '\0' && (flags & AT_EMPTY_PATH)) {
        struct stat st;
        memset(&st, 0, sizeof st);
        st.st_mode = buffer->stx_mode;
        patch_owned(dirfd, &st);
        if (S_ISCHR(st.st_mode)) statx_char_device(buffer, major(st.st_rdev), minor(st.st_rdev), st.st_mode & 07777);
    }
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * access.
 */

/* access() of "/dev/iommu": it exists and can be read and written (ioasid serves it to this
 * program whoever runs it); executing is refused as for any device node without x bits. */
static int access_iommu_node(int mode) {
    if (mode & X_OK) {
        errno = EACCES;
        return -1;
    }
    return 0;
}

static int access_ours(const char *path, int mode, int flags, int *result) {
    char redirected[PATH_MAX];
    switch (classify(path, redirected)) {
    case PATH_FOREIGN: return 0;
    case PATH_IOMMU_NODE: *result = access_iommu_node(mode); return 1;
    case PATH_VIEW: *result = real_faccessat()(AT_FDCWD, redirected, mode, flags); return 1;
    }
    return 0;
}

#define ACCESS(name, flags)                                                       \
    IOASID_EXPORT int name(const char *path, int mode) {                          \
        int result;                                                               \
        if (unlikely(ioasid_path_maybe_ours(path)) && access_ours(path, mode, flags, &result)) \
            return result;                                                        \
        return real_##name()(path, mode);                                         \
    }

ACCESS(access, 0)
ACCESS(euidaccess, AT_EACCESS)
ACCESS(eaccess, AT_EACCESS)

IOASID_EXPORT int faccessat(int dirfd, const char *path, int mode, int flags) {
    int result;
    if (unlikely(ioasid_path_maybe_ours(path)) && access_ours(path, mode, flags, &result)) return result;
    return real_faccessat()(dirfd, path, mode, flags);
}

/* ---------------------------------------------------------------------------------------------
 * readlink, realpath.
 */

static int readlink_ours(const char *path, char *buffer, size_t size, ssize_t *result) {
    char redirected[PATH_MAX];
    switch (classify(path, redirected)) {
    case PATH_FOREIGN: return 0;
    case PATH_IOMMU_NODE: errno = EINVAL; *result = -1; return 1; /* not a symbolic link */
    case PATH_VIEW: *result = real_readlink()(redirected, buffer, size); return 1;
    }
    return 0;
}

IOASID_EXPORT ssize_t readlink(const char *path, char *buffer, size_t size) {
    ssize_t result;
    if (unlikely(ioasid_path_maybe_ours(path)) && readlink_ours(path, buffer, size, &result)) return result;
    return real_readlink()(path, buffer, size);
}

IOASID_EXPORT ssize_t readlinkat(int dirfd, const char *path, char *buffer, size_t size) {
    ssize_t result;
    if (unlikely(ioasid_path_maybe_ours(path)) && readlink_ours(path, buffer, size, &result)) return result;
    return real_readlinkat()(dirfd, path, buffer, size);
}

IOASID_EXPORT ssize_t __readlink_chk(const char *path, char *buffer, size_t size, size_t buffer_size) {
    ssize_t result;
    if (unlikely(ioasid_path_maybe_ours(path))) {
        if (size > buffer_size) size = buffer_size; /* never write past the object */
        if (readlink_ours(path, buffer, size, &result)) return result;
    }
    return real___readlink_chk()(path, buffer, size, buffer_size);
}

IOASID_EXPORT ssize_t __readlinkat_chk(int dirfd, const char *path, char *buffer, size_t size, size_t buffer_size) {
    ssize_t result;
    if (unlikely(ioasid_path_maybe_ours(path))) {
        if (size > buffer_size) size = buffer_size;
        if (readlink_ours(path, buffer, size, &result)) return result;
    }
    return real___readlinkat_chk()(dirfd, path, buffer, size, buffer_size);
}

/* realpath of a view path: resolved inside the testbed, then the testbed prefix taken off. */
static int realpath_ours(const char *path, char *resolved, char **result) {
    char redirected[PATH_MAX];
    char inside[PATH_MAX];
    const char *answer;
    switch (classify(path, redirected)) {
    case PATH_FOREIGN: return 0;
    case PATH_IOMMU_NODE: answer = path; break;
    case PATH_VIEW:
        if (real_realpath()(redirected, inside) == NULL) {
            *result = NULL;
            return 1;
        }
        answer = inside;
        if (strncmp(inside, testbed_root, testbed_length) == 0 &&
            (inside[testbed_length] == '/' || inside[testbed_length] == '\0'))
            answer = inside[testbed_length] == '\0' ? "/" : inside + testbed_length;
        break;
    default: return 0;
    }
    size_t length = strlen(answer);
    if (resolved == NULL) {
        resolved = malloc(length + 1);
        if (resolved == NULL) {
            errno = ENOMEM;
            *result = NULL;
            return 1;
        }
    }
    memcpy(resolved, answer, length + 1);
    *result = resolved;
    return 1;
}

IOASID_EXPORT char *realpath(const char *path, char *resolved) {
    char *result;
    if (unlikely(ioasid_path_maybe_ours(path)) && realpath_ours(path, resolved, &result)) return result;
    return real_realpath()(path, resolved);
}

IOASID_EXPORT char *__realpath_chk(const char *path, char *resolved, size_t resolved_size) {
    char *result;
    if (unlikely(ioasid_path_maybe_ours(path)) && (resolved == NULL || resolved_size >= PATH_MAX) &&
        realpath_ours(path, resolved, &result))
        return result;
    return real___realpath_chk()(path, resolved, resolved_size);
}

IOASID_EXPORT char *canonicalize_file_name(const char *path) {
    char *result;
    if (unlikely(ioasid_path_maybe_ours(path)) && realpath_ours(path, NULL, &result)) return result;
    return real_canonicalize_file_name()(path);
}

/* ---------------------------------------------------------------------------------------------
 * opendir, open, fopen.
 */

IOASID_EXPORT DIR *opendir(const char *path) {
    if (unlikely(ioasid_path_maybe_ours(path))) {
        char redirected[PATH_MAX];
        enum path_class class = classify(path, redirected);
        if (class == PATH_VIEW) return real_opendir()(redirected);
        if (class == PATH_IOMMU_NODE) {
            errno = ENOTDIR;
            return NULL;
        }
    }
    return real_opendir()(path);
}

/* The attributes whose open the engine answers (a live value, not the testbed's file). */
static int engine_attribute(const char *path) {
    if (path[1] != 's') return 0;
    const char *slash = strrchr(path, '/');
    return slash != NULL && (strcmp(slash, "/config") == 0 || strcmp(slash, "/sriov_numvfs") == 0);
}

/* Which thread's fail-nth `path` names: 1 and the thread ID, or 0 when it is not a fail-nth
 * path of this process. */
static int fail_nth_thread(const char *path, long *thread) {
    if (!STARTS_WITH(path, "/proc/")) return 0;
    const char *rest = path + sizeof("/proc/") - 1;
    long pid = (long)getpid();
    if (STARTS_WITH(rest, "thread-self/")) {
        *thread = (long)syscall(SYS_gettid);
        return strcmp(rest + sizeof("thread-self/") - 1, "fail-nth") == 0;
    }
    if (STARTS_WITH(rest, "self/")) {
        rest += sizeof("self/") - 1;
    } else {
        char *end;
        long named = strtol(rest, &end, 10);
        if (end == rest || *end != '/' || named != pid) return 0;
        rest = end + 1;
    }
    if (strcmp(rest, "fail-nth") == 0) {
        *thread = pid; /* the process's own file is its main thread's */
        return 1;
    }
    if (!STARTS_WITH(rest, "task/")) return 0;
    char *end;
    long tid = strtol(rest + sizeof("task/") - 1, &end, 10);
    if (end == rest + sizeof("task/") - 1 || strcmp(end, "/fail-nth") != 0) return 0;
    *thread = tid;
    return 1;
}

/* open() of a fail-nth path with fault injection on: 1 and the result, or 0 (not ours). */
static int open_fail_nth(const char *path, int flags, int *result) {
    long thread;
    if (!fail_nth_thread(path, &thread) || !fault_injection_on()) return 0;
    int (*open_file)(int) = (int (*)(int))ioasid_preload_engine_symbol("ioasid_engine_open_fail_nth");
    if (open_file == NULL) return 0;
    if (thread != (long)syscall(SYS_gettid)) {
        errno = EPERM; /* another thread's countdown: see the header comment */
        *result = -1;
        return 1;
    }
    int saved_errno = errno;
    int fd = open_file(flags);
    if (fd < 0) {
        errno = -fd;
        *result = -1;
    } else {
        errno = saved_errno;
        *result = fd;
    }
    return 1;
}

int ioasid_open_redirected(int dirfd, const char *path, int flags, unsigned mode, int *result) {
    (void)dirfd; /* only absolute paths are ours */
    if (path[1] == 'p') return open_fail_nth(path, flags, result);
    char redirected[PATH_MAX];
    if (classify(path, redirected) != PATH_VIEW) return 0;
    if (engine_attribute(path)) {
        int (*open_sysfs)(const char *, int) =
            (int (*)(const char *, int))ioasid_preload_engine_symbol("ioasid_engine_open_sysfs");
        if (open_sysfs != NULL) {
            int saved_errno = errno;
            int fd = open_sysfs(path, flags);
            if (fd < 0) {
                errno = -fd;
                *result = -1;
            } else {
                errno = saved_errno;
                *result = fd;
            }
            return 1;
        }
    }
    if (STARTS_WITH(path, "/dev/char/")) {
        /* udev's link: open what it names, through open() again (the engine's node). */
        char target[PATH_MAX];
        ssize_t length = syscall(SYS_readlinkat, AT_FDCWD, redirected, target, sizeof target - 1);
        if (length <= 3 || strncmp(target, "../", 3) != 0) {
            errno = ENOENT;
            *result = -1;
            return 1;
        }
        target[length] = '\0';
        char logical[PATH_MAX];
        snprintf(logical, sizeof logical, "/dev/%s", target + 3);
        *result = open(logical, flags, mode);
        return 1;
    }
    if (path[1] == 'd') {
        /* A node under /dev/vfio is the engine's to open (or nobody's): only folders are
         * opened in the testbed (opendir, O_DIRECTORY, O_PATH). */
        struct stat st;
        if (syscall(SYS_newfstatat, AT_FDCWD, redirected, &st, 0) != 0 || !S_ISDIR(st.st_mode)) {
            errno = ENOENT;
            *result = -1;
            return 1;
        }
    }
    *result = real_openat()(AT_FDCWD, redirected, flags, mode);
    return 1;
}

/* open(2) flags for an fopen mode ("r", "w+", "ae", ...). */
static int fopen_flags(const char *mode) {
    int flags;
    switch (mode[0]) {
    case 'r': flags = O_RDONLY; break;
    case 'w': flags = O_WRONLY | O_CREAT | O_TRUNC; break;
    case 'a': flags = O_WRONLY | O_CREAT | O_APPEND; break;
    default: return -1;
    }
    for (const char *c = mode + 1; *c; c++) {
        if (*c == '+') flags = (flags & ~(O_RDONLY | O_WRONLY)) | O_RDWR;
        else if (*c == 'e') flags |= O_CLOEXEC;
        else if (*c == 'x') flags |= O_EXCL;
    }
    return flags;
}

/* A FILE on an engine fd: stdio's own reads and writes use glibc's internal read/write, which
 * the interposer never sees, so the FILE calls the interposed functions through a cookie. */
static ssize_t cookie_read(void *cookie, char *buffer, size_t size) { return read((int)(intptr_t)cookie, buffer, size); }
static ssize_t cookie_write(void *cookie, const char *buffer, size_t size) {
    ssize_t written = write((int)(intptr_t)cookie, buffer, size);
    return written < 0 ? 0 : written; /* stdio: 0 means error (errno is set) */
}
static int cookie_close(void *cookie) { return close((int)(intptr_t)cookie); }

static FILE *fopen_ours(const char *path, const char *mode, int *handled) {
    char redirected[PATH_MAX];
    *handled = 0;
    enum path_class class = classify(path, redirected);
    if (class == PATH_FOREIGN) return NULL;
    *handled = 1;
    if (class == PATH_VIEW && !engine_attribute(path)) return real_fopen()(redirected, mode);
    int flags = fopen_flags(mode);
    if (flags < 0) {
        errno = EINVAL;
        return NULL;
    }
    int fd = open(path, flags, 0666);
    if (fd < 0) return NULL;
    FILE *file;
    if (ioasid_owned(fd)) {
        cookie_io_functions_t functions = {.read = cookie_read, .write = cookie_write, .seek = NULL, .close = cookie_close};
        file = fopencookie((void *)(intptr_t)fd, mode, functions);
    } else {
        file = fdopen(fd, mode);
    }
    if (file == NULL) {
        int saved_errno = errno;
        close(fd);
        errno = saved_errno;
    }
    return file;
}

IOASID_EXPORT FILE *fopen(const char *path, const char *mode) {
    if (unlikely(ioasid_path_maybe_ours(path)) && mode != NULL) {
        int handled;
        FILE *file = fopen_ours(path, mode, &handled);
        if (handled) return file;
    }
    return real_fopen()(path, mode);
}

IOASID_EXPORT FILE *fopen64(const char *path, const char *mode) {
    if (unlikely(ioasid_path_maybe_ours(path)) && mode != NULL) {
        int handled;
        FILE *file = fopen_ours(path, mode, &handled);
        if (handled) return file;
    }
    return real_fopen64()(path, mode);
}
