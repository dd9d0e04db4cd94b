/*
 * CIOASIDSys memory helpers: safe copies to and from the process's own memory, the checks the
 * kernel makes when it pins user pages, and file identity. The core never touches user pointers
 * directly; ProcessMemory (in IOASIDProcessMemory) calls these. Results follow the kernel's
 * convention: >= 0 on success, -errno on failure.
 */
#ifndef IOASID_SYS_MEMORY_H
#define IOASID_SYS_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Copies `length` bytes from address `from` of this process into `to`; -EFAULT if unreadable. */
long ioasid_sys_copy_in(void *to, uint64_t from, size_t length);
/* Copies `length` bytes from `from` to address `to` of this process; -EFAULT if unwriteable. */
long ioasid_sys_copy_out(uint64_t to, const void *from, size_t length);
/* The pin check, ioasid_sys_check_range, is in ioasid_sys_pinnable.h. */
/* fstat: device, inode and size of `fd`; 0 or -errno. `is_regular` is set for files that mmap. */
long ioasid_sys_file_info(int fd, uint64_t *device, uint64_t *inode, uint64_t *size, int *is_mappable);
/* Identity of the page at `address`: 1 and (device, inode, file offset) for a shared file
 * mapping, 0 for anything else, -errno when unmapped. */
long ioasid_sys_page_identity(uint64_t address, uint64_t *device, uint64_t *inode, uint64_t *offset);
/* Pages this process may still lock (RLIMIT_MEMLOCK in pages), or -1 when unlimited or privileged. */
long ioasid_sys_lock_limit_pages(long page_size);
/* The FIONREAD ioctl on `fd` (benchmark baseline: one real system call). */
long ioasid_sys_fionread(int fd, int *value);

#ifdef __cplusplus
}
#endif

#endif

#ifndef IOASID_SYS_MEMORY_H2
#define IOASID_SYS_MEMORY_H2
/* A memfd of `size` bytes (close-on-exec when `cloexec`); the fd or -errno. */
long ioasid_sys_memfd(uint64_t size, int cloexec);
/* memfd_secret memory of `size` bytes (close-on-exec): memory the CPU may use and the kernel
 * never pins; the fd or -errno (-ENOSYS where the kernel does not offer it). For tests. */
long ioasid_sys_memfd_secret(uint64_t size);
#endif

#ifndef IOASID_SYS_MEMORY_H3
#define IOASID_SYS_MEMORY_H3
/* 1 if the calling thread has capability `cap` (e.g. 24, CAP_SYS_RESOURCE) in its effective set. */
int ioasid_sys_has_capability(int cap);
#endif
