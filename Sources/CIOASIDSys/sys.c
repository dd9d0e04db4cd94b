/* Raw system-call wrappers; see include/ioasid_sys.h for why they exist. */
#define _GNU_SOURCE
#include "ioasid_sys.h"
#include "ioasid_sys_pinnable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>

_Static_assert(IOASID_SYS_EFD_SEMAPHORE == EFD_SEMAPHORE, "EFD_SEMAPHORE");
_Static_assert(IOASID_SYS_EFD_CLOEXEC == EFD_CLOEXEC, "EFD_CLOEXEC");
_Static_assert(IOASID_SYS_EFD_NONBLOCK == EFD_NONBLOCK, "EFD_NONBLOCK");
_Static_assert(IOASID_SYS_O_WRONLY == O_WRONLY, "O_WRONLY");
_Static_assert(IOASID_SYS_O_CREAT == O_CREAT, "O_CREAT");
_Static_assert(IOASID_SYS_O_TRUNC == O_TRUNC, "O_TRUNC");
_Static_assert(IOASID_SYS_O_APPEND == O_APPEND, "O_APPEND");
_Static_assert(IOASID_SYS_O_CLOEXEC == O_CLOEXEC, "O_CLOEXEC");
_Static_assert(IOASID_SYS_AT_FDCWD == AT_FDCWD, "AT_FDCWD");

/* syscall(2) reports failure as -1 + errno; turn that back into the kernel's -errno. */
static inline long kernel_result(long result) {
    return result == -1 ? -(long)errno : result;
}

long ioasid_sys_eventfd(unsigned int initval, int flags) {
    return kernel_result(syscall(SYS_eventfd2, initval, flags));
}

long ioasid_sys_eventfd_signal(int fd) {
    uint64_t one = 1;
    long result = kernel_result(syscall(SYS_write, fd, &one, sizeof one));
    return result < 0 ? result : 0;
}

long ioasid_sys_eventfd_drain(int fd) {
    uint64_t count;
    long result = kernel_result(syscall(SYS_read, fd, &count, sizeof count));
    return (result < 0 && result != -EAGAIN) ? result : 0;
}

long ioasid_sys_close(int fd) {
    return kernel_result(syscall(SYS_close, fd));
}

long ioasid_sys_read(int fd, void *buffer, size_t count) {
    return kernel_result(syscall(SYS_read, fd, buffer, count));
}

long ioasid_sys_write(int fd, const void *buffer, size_t count) {
    return kernel_result(syscall(SYS_write, fd, buffer, count));
}

long ioasid_sys_write_all(int fd, const void *buffer, size_t count) {
    const char *bytes = buffer;
    while (count > 0) {
        long written = kernel_result(syscall(SYS_write, fd, bytes, count));
        if (written == -EINTR) continue;
        if (written < 0) return written;
        if (written == 0) return -EIO;
        bytes += written;
        count -= (size_t)written;
    }
    return 0;
}

long ioasid_sys_openat(int dirfd, const char *path, int flags, unsigned int mode) {
    return kernel_result(syscall(SYS_openat, dirfd, path, flags, mode));
}

long ioasid_sys_dup_cloexec(int fd, int minimum) {
    return kernel_result(syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, minimum));
}

/* The framework's own mappings are reported as the program's are (ioasid_sys_pinnable.h). */
long ioasid_sys_mmap(void *address, size_t length, int protection, int flags, int fd, long offset) {
    ioasid_sys_mappings_changing();
    long result = kernel_result(syscall(SYS_mmap, address, length, protection, flags, fd, offset));
    ioasid_sys_mappings_changing();
    return result;
}

long ioasid_sys_munmap(void *address, size_t length) {
    ioasid_sys_mappings_changing();
    long result = kernel_result(syscall(SYS_munmap, address, length));
    ioasid_sys_mappings_changing();
    return result;
}

long ioasid_sys_getpid(void) {
    return syscall(SYS_getpid);
}

long ioasid_sys_gettid(void) {
    return syscall(SYS_gettid);
}

long ioasid_sys_is_eventfd(int fd) {
    if (fd < 0) return -EBADF;
    if (kernel_result(syscall(SYS_fcntl, fd, F_GETFD)) < 0) return -EBADF;
    char path[40] = "/proc/self/fd/";
    char digits[16];
    int length = 0;
    unsigned value = (unsigned)fd;
    do { digits[length++] = (char)('0' + value % 10); value /= 10; } while (value != 0);
    size_t at = 14;
    while (length > 0) path[at++] = digits[--length];
    path[at] = '\0';
    char target[64];
    long n = kernel_result(syscall(SYS_readlinkat, AT_FDCWD, path, target, sizeof target - 1));
    if (n < 0) return n;
    static const char eventfd_name[] = "anon_inode:[eventfd]";
    if ((size_t)n != sizeof eventfd_name - 1) return 0;
    for (long i = 0; i < n; i++) if (target[i] != eventfd_name[i]) return 0;
    return 1;
}

long ioasid_sys_mkdirat(int dirfd, const char *path, unsigned int mode) {
    return kernel_result(syscall(SYS_mkdirat, dirfd, path, mode));
}

long ioasid_sys_symlinkat(const char *target, int dirfd, const char *path) {
    return kernel_result(syscall(SYS_symlinkat, target, dirfd, path));
}

long ioasid_sys_mknodat(int dirfd, const char *path, unsigned int mode, unsigned int major, unsigned int minor) {
    return kernel_result(syscall(SYS_mknodat, dirfd, path, mode, (unsigned long)makedev(major, minor)));
}

long ioasid_sys_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
    return kernel_result(syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, 0));
}

long ioasid_sys_unlinkat(int dirfd, const char *path, int flags) {
    return kernel_result(syscall(SYS_unlinkat, dirfd, path, flags));
}

long ioasid_sys_rewind(int fd) {
    long result = kernel_result(syscall(SYS_lseek, fd, 0L, 0 /* SEEK_SET */));
    return result < 0 ? result : 0;
}

struct linux_dirent64_header {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static long remove_children(int dirfd, int depth) {
    long first_error = 0;
    char buffer[4096];
    for (;;) {
        long count = kernel_result(syscall(SYS_getdents64, dirfd, buffer, sizeof buffer));
        if (count <= 0) return count < 0 ? count : first_error;
        for (long at = 0; at < count;) {
            struct linux_dirent64_header *entry = (struct linux_dirent64_header *)(buffer + at);
            at += entry->d_reclen;
            const char *name = entry->d_name;
            if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
            long result;
            if (entry->d_type == 4 /* DT_DIR */ && depth < 32) {
                long child = kernel_result(syscall(SYS_openat, dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0));
                result = child;
                if (child >= 0) {
                    result = remove_children((int)child, depth + 1);
                    (void)syscall(SYS_close, (int)child);
                    long removed = kernel_result(syscall(SYS_unlinkat, dirfd, name, IOASID_SYS_AT_REMOVEDIR));
                    if (result == 0) result = removed;
                }
            } else {
                result = kernel_result(syscall(SYS_unlinkat, dirfd, name, 0));
            }
            if (result < 0 && first_error == 0) first_error = result;
        }
    }
}

long ioasid_sys_remove_tree(const char *path) {
    long fd = kernel_result(syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0));
    if (fd < 0) return kernel_result(syscall(SYS_unlinkat, AT_FDCWD, path, 0));
    long result = remove_children((int)fd, 0);
    (void)syscall(SYS_close, (int)fd);
    long removed = kernel_result(syscall(SYS_unlinkat, AT_FDCWD, path, IOASID_SYS_AT_REMOVEDIR));
    return result < 0 ? result : removed;
}
