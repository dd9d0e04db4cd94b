#define _GNU_SOURCE
#include "ioasid_sys_memory.h"
#include "ioasid_sys_uaccess.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static long vm_copy(int write, uint64_t remote, void *local, size_t length)
{
	size_t done = 0;
	pid_t pid = (pid_t)syscall(SYS_getpid);
	while (done < length) {
		struct iovec l = { (char *)local + done, length - done };
		struct iovec r = { (void *)(uintptr_t)(remote + done), length - done };
		long n = syscall(write ? SYS_process_vm_writev : SYS_process_vm_readv, (long)pid, &l, 1UL, &r, 1UL, 0UL);
		if (n < 0)
			return -EFAULT;
		if (n == 0)
			return -EFAULT;
		done += (size_t)n;
	}
	return 0;
}

/* The safe copy when a fault can be caught on this thread (no system call), else
 * process_vm_readv/writev on ourselves. */
long ioasid_sys_copy_in(void *to, uint64_t from, size_t length)
{
	if (length == 0)
		return 0;
	long done = ioasid_sys_safe_copy(to, (const void *)(uintptr_t)from, length);
	if (done != -EAGAIN)
		return done;
	return vm_copy(0, from, to, length);
}

long ioasid_sys_copy_out(uint64_t to, const void *from, size_t length)
{
	if (length == 0)
		return 0;
	long done = ioasid_sys_safe_copy((void *)(uintptr_t)to, from, length);
	if (done != -EAGAIN)
		return done;
	return vm_copy(1, to, (void *)from, length);
}

long ioasid_sys_file_info(int fd, uint64_t *device, uint64_t *inode, uint64_t *size, int *is_mappable)
{
	struct stat st;
	if (syscall(SYS_fstat, (long)fd, &st) != 0)
		return -errno;
	*device = (uint64_t)st.st_dev;
	*inode = (uint64_t)st.st_ino;
	*size = (uint64_t)st.st_size;
	*is_mappable = S_ISREG(st.st_mode);
	return 0;
}

long ioasid_sys_page_identity(uint64_t address, uint64_t *device, uint64_t *inode, uint64_t *offset)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "re");
	long result = -EFAULT;
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end, off, ino;
		unsigned int major, minor;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &off, &major, &minor, &ino) != 7)
			continue;
		if (address < start || address >= end)
			continue;
		if (perms[3] == 's' && ino != 0) {
			*device = makedev(major, minor);
			*inode = ino;
			*offset = off + (address - start);
			result = 1;
		} else {
			result = 0;
		}
		break;
	}
	fclose(f);
	return result;
}

long ioasid_sys_lock_limit_pages(long page_size)
{
	struct rlimit r;
	struct { uint32_t version; int pid; } hdr = { 0x20080522, 0 };
	struct { uint32_t effective, permitted, inheritable; } data[2];
	/* CAP_IPC_LOCK (14) lifts the limit, as it does for the kernel's accounting. */
	if (syscall(SYS_capget, &hdr, data) == 0 && (data[0].effective & (1u << 14)))
		return -1;
	if (getrlimit(RLIMIT_MEMLOCK, &r) != 0 || r.rlim_cur == RLIM_INFINITY)
		return -1;
	return (long)(r.rlim_cur / (rlim_t)page_size);
}

long ioasid_sys_fionread(int fd, int *value)
{
	long rc = syscall(SYS_ioctl, (long)fd, (unsigned long)FIONREAD, value);
	return rc < 0 ? -errno : rc;
}

/* A new memory file `fd` (or -errno) made `size` bytes long; closed again if that fails. */
static long sized(long fd, uint64_t size)
{
	if (fd < 0)
		return -errno;
	if (syscall(SYS_ftruncate, fd, (long)size) != 0) {
		long e = -errno;
		syscall(SYS_close, fd);
		return e;
	}
	return fd;
}

long ioasid_sys_memfd(uint64_t size, int cloexec)
{
	return sized(syscall(SYS_memfd_create, "ioasid-dmabuf", (unsigned long)(cloexec ? MFD_CLOEXEC : 0)), size);
}

long ioasid_sys_memfd_secret(uint64_t size)
{
	return sized(syscall(447 /* SYS_memfd_secret */, (unsigned long)O_CLOEXEC), size);
}

int ioasid_sys_has_capability(int cap)
{
	struct { uint32_t version; int pid; } hdr = { 0x20080522, 0 };
	struct { uint32_t effective, permitted, inheritable; } data[2];
	if (cap < 0 || cap >= 64 || syscall(SYS_capget, &hdr, data) != 0)
		return 0;
	return (data[cap / 32].effective >> (cap % 32)) & 1;
}
