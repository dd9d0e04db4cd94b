/*
 * CIOASIDSys — raw system calls for the Swift side of ioasid.
 *
 * Why this shim exists:
 *  - The engine runs inside programs whose libc entry points (open, read, write, close, ioctl,
 *    mmap, ...) are interposed by libioasid-preload.so. The engine's own calls on its own
 *    descriptors must never come back through the interposer, so they go straight to the kernel
 *    through syscall(2) here.
 *  - Swift cannot call variadic C functions (syscall, ioctl, fcntl, open).
 *
 * Every function returns the kernel's result, or a negated errno on failure (the kernel's own
 * convention), never -1 with errno set. Nothing here allocates or takes a lock.
 */
#ifndef IOASID_SYS_H
#define IOASID_SYS_H

#include <stddef.h>
#include <stdint.h>

#include "ioasid_sys_thread.h" /* the thread pointer, for per-thread counter stripes */
#include "ioasid_sys_uaccess.h" /* copies of the program's memory that survive bad pointers */

#include "ioasid_sys_library.h" /* the own library's symbols (engine extensions) */

#ifdef __cplusplus
extern "C" {
#endif

/* Flags for ioasid_sys_eventfd (the values of EFD_CLOEXEC / EFD_NONBLOCK / EFD_SEMAPHORE). */
#define IOASID_SYS_EFD_SEMAPHORE 00000001
#define IOASID_SYS_EFD_CLOEXEC   02000000
#define IOASID_SYS_EFD_NONBLOCK  00004000

/* Flags for ioasid_sys_openat (O_WRONLY, O_CREAT, O_APPEND, O_TRUNC, O_CLOEXEC). */
#define IOASID_SYS_O_WRONLY  00000001
#define IOASID_SYS_O_CREAT   00000100
#define IOASID_SYS_O_TRUNC   00001000
#define IOASID_SYS_O_APPEND  00002000
#define IOASID_SYS_O_CLOEXEC 02000000
#define IOASID_SYS_AT_FDCWD  (-100)

/* eventfd2(initval, flags): a new eventfd, or -errno. */
long ioasid_sys_eventfd(unsigned int initval, int flags);

/* Adds one to an eventfd's counter (it then polls readable); 0 or -errno. */
long ioasid_sys_eventfd_signal(int fd);

/* Resets a nonblocking eventfd's counter to zero (it then stops polling readable); 0 or -errno.
 * An already-zero counter is not an error. */
long ioasid_sys_eventfd_drain(int fd);

/* close(fd): 0 or -errno. */
long ioasid_sys_close(int fd);

/* read(fd, buffer, count): bytes read or -errno. */
long ioasid_sys_read(int fd, void *buffer, size_t count);

/* write(fd, buffer, count): bytes written or -errno. */
long ioasid_sys_write(int fd, const void *buffer, size_t count);

/* Writes the whole buffer, retrying after partial writes and EINTR; 0 or -errno. */
long ioasid_sys_write_all(int fd, const void *buffer, size_t count);

/* openat(dirfd, path, flags, mode): a new fd or -errno. */
long ioasid_sys_openat(int dirfd, const char *path, int flags, unsigned int mode);

/* fcntl(fd, F_DUPFD_CLOEXEC, minimum): a new fd naming the same file, or -errno. */
long ioasid_sys_dup_cloexec(int fd, int minimum);

/* mmap / munmap: the address (as a long) or -errno; 0 or -errno. */
long ioasid_sys_mmap(void *address, size_t length, int protection, int flags, int fd, long offset);
long ioasid_sys_munmap(void *address, size_t length);

/* Whether fd is an eventfd (VFIO's interrupt triggers must be): 1, 0, or -EBADF for a closed fd. */
long ioasid_sys_is_eventfd(int fd);

/* getpid(): the caller's process ID (always fresh, also right after fork). */
long ioasid_sys_getpid(void);

/* gettid(): the calling thread's ID. */
long ioasid_sys_gettid(void);

/* File-system calls for the sysfs view the engine writes (a folder of its own, never a path the
 * preload redirects): mkdirat, symlinkat, mknodat (a character device when `major` or `minor`
 * is non-zero, else a regular file), renameat, unlinkat (flags: AT_REMOVEDIR = 0x200). 0 or -errno. */
long ioasid_sys_mkdirat(int dirfd, const char *path, unsigned int mode);
long ioasid_sys_symlinkat(const char *target, int dirfd, const char *path);
long ioasid_sys_mknodat(int dirfd, const char *path, unsigned int mode, unsigned int major, unsigned int minor);
long ioasid_sys_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
long ioasid_sys_unlinkat(int dirfd, const char *path, int flags);

/* lseek(fd, 0, SEEK_SET): 0 or -errno. */
long ioasid_sys_rewind(int fd);

/* Removes `path` and, if it is a folder, everything under it (symbolic links are removed, never
 * followed). 0, or -errno of the first failure (the rest is still attempted). */
long ioasid_sys_remove_tree(const char *path);

/* The S_IFCHR and S_IFREG mode bits. */
#define IOASID_SYS_S_IFCHR 0020000
#define IOASID_SYS_S_IFREG 0100000
#define IOASID_SYS_AT_REMOVEDIR 0x200

#ifdef __cplusplus
}
#endif

#endif /* IOASID_SYS_H */
