/* A stand-in for libIOASIDEngine.so (see fake_engine.h). Built as a shared library at test time
 * and loaded by the preload through IOASID_ENGINE. */
#define _GNU_SOURCE
#include "fake_engine.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/types.h>

void ioasid_preload_claim(int fd, int owned); /* exported by the preload */

#define CAPACITY 4096
static int live[CAPACITY];
static int live_count;
static long last_dup;

static int holds(int fd) {
    for (int i = 0; i < live_count; i++)
        if (live[i] == fd) return 1;
    return 0;
}

static void hold(int fd) {
    if (!holds(fd) && live_count < CAPACITY) live[live_count++] = fd;
}

static int drop(int fd) {
    for (int i = 0; i < live_count; i++) {
        if (live[i] == fd) {
            live[i] = live[--live_count];
            return 1;
        }
    }
    return 0;
}

int ioasid_engine_open(int flags) {
    if (flags & O_EXCL) return -EACCES;
    int fd = eventfd(0, EFD_NONBLOCK | ((flags & O_CLOEXEC) ? EFD_CLOEXEC : 0));
    if (fd < 0) return -errno;
    hold(fd);
    return fd;
}

long ioasid_engine_ioctl(int fd, unsigned long request, void *argument) {
    if (!holds(fd)) return -EBADF;
    switch (request) {
    case FAKE_ECHO:
        *(int *)argument = fd;
        return 77;
    case FAKE_LIVE:
        return live_count;
    case FAKE_INSTALL: {
        int installed = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (installed < 0) return -errno;
        hold(installed);
        ioasid_preload_claim(installed, 1);
        return installed;
    }
    case FAKE_CLAIM:
        hold(*(int *)argument);
        ioasid_preload_claim(*(int *)argument, 1);
        return 0;
    case FAKE_LAST_DUP:
        return last_dup;
    default:
        if ((request & 0xFF000000UL) == 0xFB000000UL) return -(long)(request & 0xFFFFFF);
        return -ENOTTY;
    }
}

ssize_t ioasid_engine_read(int fd, void *buffer, size_t count) {
    if (!holds(fd)) return -EBADF;
    for (size_t i = 0; i < count; i++) ((char *)buffer)[i] = FAKE_READ_BYTE;
    return (ssize_t)count;
}

ssize_t ioasid_engine_write(int fd, const void *buffer, size_t count) {
    (void)buffer;
    if (!holds(fd)) return -EBADF;
    return (ssize_t)(count / 2);
}

long ioasid_engine_mmap(void *address, size_t length, int protection, int flags, int fd, long offset) {
    (void)address, (void)length, (void)flags;
    if (!holds(fd)) return -EBADF;
    if (protection & PROT_EXEC) return -EPERM;
    return FAKE_MMAP_BASE + offset;
}

int ioasid_engine_dup(int oldfd, int newfd) {
    if (!holds(oldfd)) return -EBADF;
    hold(newfd);
    last_dup = ((long)oldfd << 20) | newfd;
    return 0;
}

int ioasid_engine_close(int fd) {
    return drop(fd) ? 0 : -EBADF;
}
