/*
 * What the two halves of the preload share: preload.c (descriptors: open of the engine's nodes,
 * ioctl, read, write, mmap, dup, close) and preload_paths.c (paths: stat and friends, access,
 * readlink, realpath, opendir, fopen, and the redirection of the modelled machine's sysfs and
 * /dev/vfio view). Hidden symbols only; nothing here is exported from the library.
 */
#ifndef IOASID_PRELOAD_INTERNAL_H
#define IOASID_PRELOAD_INTERNAL_H

#include <stdatomic.h>

#define IOASID_HIDDEN __attribute__((visibility("hidden")))
#ifndef likely
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

/* The device numbers (DeviceNumbers in MachineTopology.swift; a test checks they agree). */
enum {
    IOASID_MISC_MAJOR = 10,
    IOASID_IOMMU_MINOR = 257,
    IOASID_VFIO_CONTAINER_MINOR = 196,
    IOASID_GROUP_MAJOR = 242,
    IOASID_CDEV_MAJOR = 241,
};

/* The table of owned fds (preload.c): one byte per fd below 1<<16, chunks above. */
#define IOASID_OWNED_LOW_SIZE (1u << 16)
IOASID_HIDDEN extern _Atomic unsigned char owned_low[IOASID_OWNED_LOW_SIZE];
IOASID_HIDDEN int owned_slow(int fd);

/* Whether the engine owns `fd`: the one byte load every call on a foreign fd pays. */
static inline int ioasid_owned(int fd) {
    if (likely((unsigned)fd < IOASID_OWNED_LOW_SIZE)) return atomic_load_explicit(&owned_low[fd], memory_order_relaxed);
    return owned_slow(fd);
}

/* Whether the engine is loaded (preload.c's engine state; only READY matters outside it). */
enum { IOASID_ENGINE_UNLOADED = 0, IOASID_ENGINE_READY = 1 };
IOASID_HIDDEN extern _Atomic int ioasid_engine_state;

/* libc's ioctl (the next definition after the preload's), stored by the constructor; NULL before. */
IOASID_HIDDEN extern _Atomic(void *) ioasid_real_ioctl;

/* The ioctl wrapper's full path (preload.c); preload_ioctl.c's fast path ends there when it
 * cannot answer alone. */
IOASID_HIDDEN int ioasid_preload_ioctl(int fd, unsigned long request, void *argument);

/* Where a variadic function's first variadic argument travels as a fixed one would (x86-64 and
 * AArch64 on Linux: the same register), the exported ioctl has a fixed third parameter
 * (preload_ioctl.c); elsewhere preload.c exports the variadic one. */
#if defined(__x86_64__) || (defined(__aarch64__) && !defined(__APPLE__))
#define IOASID_FIXED_IOCTL_WRAPPER 1
#else
#define IOASID_FIXED_IOCTL_WRAPPER 0
#endif

/* Whether `fd`'s link in /proc/self/fd reads `target` (e.g. "anon_inode:[eventfd]"): 1 or 0,
 * -1 when the link cannot be read (no /proc, or the number is closed). No allocation, no stdio. */
IOASID_HIDDEN int ioasid_preload_fd_link_is(int fd, const char *target);

/* A descriptor the kernel just handed out: if the table marks its number as the engine's, the
 * number was closed behind the preload's back; it is disowned. Returns `fd`. */
IOASID_HIDDEN int ioasid_preload_fresh(int fd);

/* Set on a thread while a vfork child borrows it (preload_fresh.c): the child's descriptor
 * table is not the one the owned-fd table describes, so the table is left alone. */
IOASID_HIDDEN extern _Thread_local int ioasid_in_vfork_child __attribute__((tls_model("initial-exec")));

/* Loads the engine if needed and looks up one of its symbols; NULL if the engine cannot be
 * loaded or does not export it. */
IOASID_HIDDEN void *ioasid_preload_engine_symbol(const char *name);

/* The cheap test every path-taking wrapper makes first: only absolute paths under /d… and /s…
 * can name a node or folder of ioasid. Two byte compares for everything else. */
static inline int ioasid_path_maybe_ours(const char *path) {
    return path != NULL && path[0] == '/' && (path[1] == 'd' || path[1] == 's');
}

/* open() of a path of the modelled machine's view (preload_paths.c): returns 1 and stores the
 * result (fd or -1 with errno) in *result when the path is one, 0 when the caller should go on
 * with the real open of `path`. */
IOASID_HIDDEN int ioasid_open_redirected(int dirfd, const char *path, int flags, unsigned mode, int *result);

/* open() may also name the kernel's fault-injection file under /proc (preload_paths.c). */
static inline int ioasid_open_path_maybe_ours(const char *path) {
    return path != NULL && path[0] == '/' && (path[1] == 'd' || path[1] == 's' || path[1] == 'p');
}

#define IOASID_REDIRECT_OPEN(dirfd, path, flags, mode)                                              \
    do {                                                                                            \
        int redirected_;                                                                            \
        if (unlikely(ioasid_open_path_maybe_ours(path)) &&                                          \
            ioasid_open_redirected((dirfd), (path), (flags), (unsigned)(mode), &redirected_))       \
            return redirected_;                                                                     \
    } while (0)

/* Descriptors across execve (preload_exec.c): called once from the preload's constructor;
 * re-opens the engine's nodes a previous program image left open on inherited descriptors. */
IOASID_HIDDEN void ioasid_preload_adopt_inherited(void);

/* KVM's VFIO pseudo-device (preload_kvm.c): KVM_SET_DEVICE_ATTR's request number, and whether
 * the call on `fd` registers or removes a VFIO file ioasid serves; then the wrapper answers 0. */
#define IOASID_KVM_SET_DEVICE_ATTR 0x4018aee1UL
IOASID_HIDDEN int ioasid_kvm_vfio_attribute(int fd, void *argument);

#endif /* IOASID_PRELOAD_INTERNAL_H */
