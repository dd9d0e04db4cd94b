/*
 * Descriptors the kernel hands out through calls other than open and dup, and vfork.
 *
 * A number the preload marks as the engine's can be handed out again by the kernel when the
 * program closed it with a raw system call (the preload never saw the close). Each wrapper here
 * passes the new descriptors through ioasid_preload_fresh() (preload.c), which disowns such a
 * number: one byte load after the system call. Creators not interposed (recvmsg's SCM_RIGHTS,
 * io_uring, raw system calls) are not seen; an error answer of the engine on such a number is
 * still caught (preload.c, still_ours).
 *
 * vfork: the child borrows the parent's memory, so the table of owned descriptors too, but has
 * its own descriptor table in the kernel. The wrapper marks the calling thread
 * (ioasid_in_vfork_child, thread-local: the child runs on the parent thread's TLS) before the
 * system call and clears the mark when the parent resumes; while it is set, close, dup2 and the
 * others leave the table and the engine alone. The wrapper is written in assembly for the same
 * reason glibc's is: the child must not return through a C frame the parent still needs.
 * posix_spawn, system and popen reach close and dup2 through glibc-internal symbols, which no
 * interposer sees, so they never touch the table.
 */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE
#include "preload_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define IOASID_EXPORT __attribute__((visibility("default")))


static inline int fresh(int fd) {
    if (unlikely(ioasid_owned(fd))) return ioasid_preload_fresh(fd);
    return fd;
}

/* The next definition of `name`, looked up once. */
#define NEXT(name, type)                                                                      \
    __extension__({                                                                           \
        static _Atomic(void *) next_;                                                         \
        void *function_ = atomic_load_explicit(&next_, memory_order_acquire);                 \
        if (unlikely(function_ == NULL)) {                                                    \
            function_ = dlsym(RTLD_NEXT, name);                                               \
            atomic_store_explicit(&next_, function_, memory_order_release);                   \
        }                                                                                     \
        (type)function_;                                                                      \
    })

#define MISSING()        \
    do {                 \
        errno = ENOSYS;  \
        return -1;       \
    } while (0)

IOASID_EXPORT int pipe(int fds[2]) {
    int (*next)(int *) = NEXT("pipe", int (*)(int *));
    if (next == NULL) MISSING();
    int result = next(fds);
    if (result == 0) {
        fresh(fds[0]);
        fresh(fds[1]);
    }
    return result;
}

IOASID_EXPORT int pipe2(int fds[2], int flags) {
    int (*next)(int *, int) = NEXT("pipe2", int (*)(int *, int));
    if (next == NULL) MISSING();
    int result = next(fds, flags);
    if (result == 0) {
        fresh(fds[0]);
        fresh(fds[1]);
    }
    return result;
}

IOASID_EXPORT int socketpair(int domain, int type, int protocol, int fds[2]) {
    int (*next)(int, int, int, int *) = NEXT("socketpair", int (*)(int, int, int, int *));
    if (next == NULL) MISSING();
    int result = next(domain, type, protocol, fds);
    if (result == 0) {
        fresh(fds[0]);
        fresh(fds[1]);
    }
    return result;
}

IOASID_EXPORT int socket(int domain, int type, int protocol) {
    int (*next)(int, int, int) = NEXT("socket", int (*)(int, int, int));
    if (next == NULL) MISSING();
    return fresh(next(domain, type, protocol));
}

IOASID_EXPORT int accept(int fd, void *address, unsigned int *length) {
    int (*next)(int, void *, unsigned int *) = NEXT("accept", int (*)(int, void *, unsigned int *));
    if (next == NULL) MISSING();
    return fresh(next(fd, address, length));
}

IOASID_EXPORT int accept4(int fd, void *address, unsigned int *length, int flags) {
    int (*next)(int, void *, unsigned int *, int) = NEXT("accept4", int (*)(int, void *, unsigned int *, int));
    if (next == NULL) MISSING();
    return fresh(next(fd, address, length, flags));
}

IOASID_EXPORT int eventfd(unsigned int count, int flags) {
    int (*next)(unsigned int, int) = NEXT("eventfd", int (*)(unsigned int, int));
    if (next == NULL) MISSING();
    return fresh(next(count, flags));
}

IOASID_EXPORT int memfd_create(const char *name, unsigned int flags) {
    int (*next)(const char *, unsigned int) = NEXT("memfd_create", int (*)(const char *, unsigned int));
    if (next == NULL) MISSING();
    return fresh(next(name, flags));
}

IOASID_EXPORT int epoll_create(int size) {
    int (*next)(int) = NEXT("epoll_create", int (*)(int));
    if (next == NULL) MISSING();
    return fresh(next(size));
}

IOASID_EXPORT int epoll_create1(int flags) {
    int (*next)(int) = NEXT("epoll_create1", int (*)(int));
    if (next == NULL) MISSING();
    return fresh(next(flags));
}

IOASID_EXPORT int timerfd_create(int clock, int flags) {
    int (*next)(int, int) = NEXT("timerfd_create", int (*)(int, int));
    if (next == NULL) MISSING();
    return fresh(next(clock, flags));
}

IOASID_EXPORT int inotify_init(void) {
    int (*next)(void) = NEXT("inotify_init", int (*)(void));
    if (next == NULL) MISSING();
    return fresh(next());
}

IOASID_EXPORT int inotify_init1(int flags) {
    int (*next)(int) = NEXT("inotify_init1", int (*)(int));
    if (next == NULL) MISSING();
    return fresh(next(flags));
}

/* ---------------------------------------------------------------------------------------------
 * vfork. The return address is kept in a register across the system call (the child returns
 * on the parent's stack, and the parent must find its own return address where it left it).
 */

IOASID_HIDDEN int ioasid_vfork_failed(long result);
int ioasid_vfork_failed(long result) {
    errno = (int)-result;
    return -1;
}

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork, @function\n"
        "vfork:\n"
        "    popq %rdi\n"                                        /* the return address */
        "    movq ioasid_in_vfork_child@gottpoff(%rip), %rsi\n"  /* this thread's mark */
        "    movl $1, %fs:(%rsi)\n"
        "    movl $58, %eax\n"                                   /* SYS_vfork */
        "    syscall\n"
        "    pushq %rdi\n"
        "    testq %rax, %rax\n"
        "    jz 1f\n"                                            /* the child: the mark stays */
        "    movl $0, %fs:(%rsi)\n"                              /* the parent resumed */
        "    cmpq $-4095, %rax\n"
        "    jae 2f\n"
        "1:  ret\n"
        "2:  movq %rax, %rdi\n"
        "    jmp ioasid_vfork_failed\n"
        ".size vfork, .-vfork\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork, %function\n"
        "vfork:\n"
        "    mrs x9, tpidr_el0\n"
        "    adrp x10, :gottprel:ioasid_in_vfork_child\n"
        "    ldr x10, [x10, #:gottprel_lo12:ioasid_in_vfork_child]\n"
        "    add x9, x9, x10\n"                                  /* this thread's mark */
        "    mov w11, #1\n"
        "    str w11, [x9]\n"
        "    mov x0, #0x4111\n"                                  /* CLONE_VM | CLONE_VFORK | SIGCHLD */
        "    mov x1, #0\n"
        "    mov x2, #0\n"
        "    mov x3, #0\n"
        "    mov x4, #0\n"
        "    mov x8, #220\n"                                     /* SYS_clone */
        "    svc #0\n"
        "    cbz x0, 1f\n"                                       /* the child: the mark stays */
        "    str wzr, [x9]\n"                                    /* the parent resumed */
        "    cmn x0, #4095\n"
        "    b.cs 2f\n"
        "1:  ret\n"
        "2:  b ioasid_vfork_failed\n"
        ".size vfork, .-vfork\n");
#endif
