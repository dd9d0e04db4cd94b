/* Eventfd watching for the engine: see ioasid_sys_watch.h. */
#define _GNU_SOURCE
#include "ioasid_sys_watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long result_of(long rc) { return rc < 0 ? -errno : rc; }

long ioasid_sys_epoll_create(void) {
    return result_of(syscall(SYS_epoll_create1, EPOLL_CLOEXEC));
}

long ioasid_sys_epoll_add(int epoll, int fd, uint64_t token) {
    struct epoll_event event = { .events = EPOLLIN, .data.u64 = token };
    return result_of(syscall(SYS_epoll_ctl, epoll, EPOLL_CTL_ADD, fd, &event));
}

long ioasid_sys_epoll_remove(int epoll, int fd) {
    struct epoll_event unused = { 0 };
    return result_of(syscall(SYS_epoll_ctl, epoll, EPOLL_CTL_DEL, fd, &unused));
}

long ioasid_sys_epoll_wait_one(int epoll, uint64_t *token, int timeout_ms) {
    struct epoll_event event;
    long n = result_of(syscall(SYS_epoll_pwait, epoll, &event, 1, timeout_ms, NULL, 0));
    if (n == 1) *token = event.data.u64;
    return n;
}

long ioasid_sys_eventfd_take(int fd) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    long ready = result_of(syscall(SYS_ppoll, &p, 1, &(struct timespec){ 0, 0 }, NULL, 0));
    if (ready < 0) return ready;
    if (ready == 0 || !(p.revents & POLLIN)) return 0;
    uint64_t count = 0;
    long n = result_of(syscall(SYS_read, fd, &count, sizeof count));
    if (n == -EAGAIN) return 0;
    if (n < 0) return n;
    return n == sizeof count ? (long)(count > (uint64_t)INT64_MAX ? INT64_MAX : count) : 0;
}

long ioasid_sys_same_file(int fd, int other) {
    long pid = syscall(SYS_getpid);
    long rc = result_of(syscall(SYS_kcmp, pid, pid, KCMP_FILE, fd, other));
    return rc < 0 ? rc : rc == 0;
}

long ioasid_sys_count_other_descriptors(int fd) {
    long folder = result_of(syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (folder < 0) return folder;
    long others = 0;
    char buffer[4096] __attribute__((aligned(8)));
    for (;;) {
        long n = result_of(syscall(SYS_getdents64, (int)folder, buffer, sizeof buffer));
        if (n < 0) { others = n; break; }
        if (n == 0) break;
        for (long at = 0; at < n;) {
            struct dirent64 *entry = (struct dirent64 *)(buffer + at);
            at += entry->d_reclen;
            const char *name = entry->d_name;
            if (name[0] < '0' || name[0] > '9') continue;
            long number = 0;
            for (; *name >= '0' && *name <= '9'; name++) number = number * 10 + (*name - '0');
            if (number == fd || number == folder) continue;
            if (ioasid_sys_same_file(fd, (int)number) == 1) others++;
        }
    }
    syscall(SYS_close, (int)folder);
    return others;
}

long ioasid_sys_start_thread(void *(*body)(void *), void *argument, const char *name) {
    sigset_t all, previous;
    sigfillset(&all);
    pthread_attr_t attributes;
    if (pthread_attr_init(&attributes) != 0) return -ENOMEM;
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pthread_t thread;
    int rc = pthread_create(&thread, &attributes, body, argument);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    pthread_attr_destroy(&attributes);
    if (rc != 0) return -rc;
    if (name) pthread_setname_np(thread, name);
    return 0;
}
