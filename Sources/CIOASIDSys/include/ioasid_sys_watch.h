/*
 * What the engine needs to watch eventfds of the program the way the kernel's virqfd does
 * (VFIO ioeventfds, INTx unmask eventfds): an epoll instance, a thread to wait on it, and an
 * eventfd read that never blocks. All are raw system calls, so the engine never re-enters the
 * preload (which interposes epoll_create, read and close).
 */
#ifndef IOASID_SYS_WATCH_H
#define IOASID_SYS_WATCH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* epoll_create1(EPOLL_CLOEXEC): a new epoll descriptor, or -errno. */
long ioasid_sys_epoll_create(void);

/* Adds fd to the epoll set for input, level-triggered, with `token` as its data; 0 or -errno. */
long ioasid_sys_epoll_add(int epoll, int fd, uint64_t token);

/* Removes fd from the epoll set; 0 or -errno. */
long ioasid_sys_epoll_remove(int epoll, int fd);

/* Waits for one ready descriptor: 1 with its token, 0 after `timeout_ms` (-1: no limit), or
 * -errno (-EINTR included). */
long ioasid_sys_epoll_wait_one(int epoll, uint64_t *token, int timeout_ms);

/* Takes an eventfd's counter without ever blocking, whether or not the program made it
 * nonblocking: the counter (>0), 0 when it was zero, or -errno. (A poll first, then the read: a
 * second reader of the same eventfd between the two can still make the read wait for the next
 * signal.) */
long ioasid_sys_eventfd_take(int fd);

/* Whether two descriptors of this process name the same open file (kcmp KCMP_FILE): 1, 0, or
 * -errno (-ENOSYS or -EPERM where kcmp is not available). */
long ioasid_sys_same_file(int fd, int other);

/* How many other descriptors of this process (listed in /proc/self/fd) name the same open file
 * as fd; -errno when the list cannot be read. */
long ioasid_sys_count_other_descriptors(int fd);

/* Starts a detached thread running `body(argument)` with every signal blocked (so that none of
 * the program's signals is ever delivered to it), named `name` (at most 15 characters); 0 or
 * -errno. */
long ioasid_sys_start_thread(void *(*body)(void *), void *argument, const char *name);

#ifdef __cplusplus
}
#endif

#endif /* IOASID_SYS_WATCH_H */
