/*
 * Fault-safe copies of the program's memory without a system call (ioasid_sys_uaccess.h says
 * what and why). One instruction touches the program's memory; a fault there resumes at the
 * copy's error return with the count of bytes not copied.
 */
#define _GNU_SOURCE
#include "ioasid_sys_uaccess.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__x86_64__)

/* size_t copy_bytes(void *to, const void *from, size_t length): the bytes not copied. On a
 * fault at the `rep movsb`, %rcx holds what is left and the handler resumes at copy_error. */
__asm__(".text\n"
        ".p2align 4\n"
        ".globl ioasid_uaccess_copy_bytes\n"
        ".hidden ioasid_uaccess_copy_bytes\n"
        ".type ioasid_uaccess_copy_bytes, @function\n"
        "ioasid_uaccess_copy_bytes:\n"
        "    movq %rdx, %rcx\n"
        ".globl ioasid_uaccess_copy_instruction\n"
        ".hidden ioasid_uaccess_copy_instruction\n"
        "ioasid_uaccess_copy_instruction:\n"
        "    rep movsb\n"
        "    movq %rcx, %rax\n"
        "    ret\n"
        ".globl ioasid_uaccess_copy_error\n"
        ".hidden ioasid_uaccess_copy_error\n"
        "ioasid_uaccess_copy_error:\n"
        "    movq %rcx, %rax\n"
        "    ret\n"
        ".size ioasid_uaccess_copy_bytes, .-ioasid_uaccess_copy_bytes\n");

__attribute__((visibility("hidden"))) size_t ioasid_uaccess_copy_bytes(void *to, const void *from, size_t length);
__attribute__((visibility("hidden"))) extern const char ioasid_uaccess_copy_instruction[];
__attribute__((visibility("hidden"))) extern const char ioasid_uaccess_copy_error[];

/* size_t probe_pages(const void *start, size_t pages, int write): touches one byte of each of
 * `pages` pages (pages >= 1) from `start`, 4 KiB apart: a load, or for `write` a locked OR of 0
 * (a write access that changes nothing, atomic against the program's own stores). Returns 0, or
 * the pages not reached when a touch faulted (the handler resumes at probe_error). */
__asm__(".text\n"
        ".p2align 4\n"
        ".globl ioasid_uaccess_probe_pages\n"
        ".hidden ioasid_uaccess_probe_pages\n"
        ".type ioasid_uaccess_probe_pages, @function\n"
        "ioasid_uaccess_probe_pages:\n"
        "    testl %edx, %edx\n"
        "    jz 2f\n"
        "1:\n"
        ".globl ioasid_uaccess_probe_write_instruction\n"
        ".hidden ioasid_uaccess_probe_write_instruction\n"
        "ioasid_uaccess_probe_write_instruction:\n"
        "    lock orb $0, (%rdi)\n"
        "    addq $4096, %rdi\n"
        "    decq %rsi\n"
        "    jnz 1b\n"
        "    xorl %eax, %eax\n"
        "    ret\n"
        "2:\n"
        ".globl ioasid_uaccess_probe_read_instruction\n"
        ".hidden ioasid_uaccess_probe_read_instruction\n"
        "ioasid_uaccess_probe_read_instruction:\n"
        "    movb (%rdi), %al\n"
        "    addq $4096, %rdi\n"
        "    decq %rsi\n"
        "    jnz 2b\n"
        "    xorl %eax, %eax\n"
        "    ret\n"
        ".globl ioasid_uaccess_probe_error\n"
        ".hidden ioasid_uaccess_probe_error\n"
        "ioasid_uaccess_probe_error:\n"
        "    movq %rsi, %rax\n"
        "    ret\n"
        ".size ioasid_uaccess_probe_pages, .-ioasid_uaccess_probe_pages\n");

__attribute__((visibility("hidden"))) size_t ioasid_uaccess_probe_pages(const void *start, size_t pages, int write);
__attribute__((visibility("hidden"))) extern const char ioasid_uaccess_probe_write_instruction[];
__attribute__((visibility("hidden"))) extern const char ioasid_uaccess_probe_read_instruction[];
__attribute__((visibility("hidden"))) extern const char ioasid_uaccess_probe_error[];
#define HAVE_SAFE_COPY 1

#else
#define HAVE_SAFE_COPY 0
#endif

enum { MASK_UNKNOWN = 0, MASK_DELIVERABLE = 1, MASK_BLOCKED = 2 };

static _Atomic int enabled;
static _Thread_local int mask_state;

static int faults_blocked(const uint64_t *mask) {
    uint64_t faults = (1ull << (SIGSEGV - 1)) | (1ull << (SIGBUS - 1));
    return (*mask & faults) != 0;
}

/* One system call per thread, the first time it copies. */
static int learn_mask(void) {
    uint64_t mask = 0;
    if (syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &mask, sizeof mask) != 0) return MASK_BLOCKED;
    return faults_blocked(&mask) ? MASK_BLOCKED : MASK_DELIVERABLE;
}

/* Whether a fault can be caught on this thread now. */
static inline int faults_catchable(void) {
    if (!atomic_load_explicit(&enabled, memory_order_relaxed)) return 0;
    int state = mask_state;
    if (state == MASK_UNKNOWN) mask_state = state = learn_mask();
    return state == MASK_DELIVERABLE;
}

long ioasid_sys_safe_copy(void *to, const void *from, size_t length) {
#if HAVE_SAFE_COPY
    if (length == 0) return 0;
    if (!faults_catchable()) return -EAGAIN;
    return ioasid_uaccess_copy_bytes(to, from, length) == 0 ? 0 : -EFAULT;
#else
    (void)to, (void)from, (void)length;
    return -EAGAIN;
#endif
}

long ioasid_sys_safe_probe(const void *start, size_t pages, int write) {
#if HAVE_SAFE_COPY
    if (pages == 0) return 0;
    if (!faults_catchable()) return -EAGAIN;
    return ioasid_uaccess_probe_pages(start, pages, write) == 0 ? 0 : -EFAULT;
#else
    (void)start, (void)pages, (void)write;
    return -EAGAIN;
#endif
}

int ioasid_sys_uaccess_fixup(void *context) {
#if HAVE_SAFE_COPY
    ucontext_t *uc = context;
    if (uc == NULL) return 0;
    greg_t at = uc->uc_mcontext.gregs[REG_RIP];
    if (at == (greg_t)(uintptr_t)ioasid_uaccess_copy_instruction) {
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)(uintptr_t)ioasid_uaccess_copy_error;
        return 1;
    }
    if (at == (greg_t)(uintptr_t)ioasid_uaccess_probe_write_instruction ||
        at == (greg_t)(uintptr_t)ioasid_uaccess_probe_read_instruction) {
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)(uintptr_t)ioasid_uaccess_probe_error;
        return 1;
    }
    return 0;
#else
    (void)context;
    return 0;
#endif
}

void ioasid_sys_uaccess_enable(void) { atomic_store_explicit(&enabled, 1, memory_order_relaxed); }

int ioasid_sys_uaccess_note_mask(int blocked) {
    int previous = mask_state;
    mask_state = blocked ? MASK_BLOCKED : MASK_DELIVERABLE;
    return previous;
}

void ioasid_sys_uaccess_restore_mask(int state) { mask_state = state; }

/* ---------------------------------------------------------------------------------------------
 * In-process use without the preload: a handler of our own in front of the program's.
 */

static struct sigaction previous_actions[2]; /* SIGSEGV, SIGBUS as they were before ours */

static void pass_on(int signo, siginfo_t *info, void *context) {
    const struct sigaction *previous = &previous_actions[signo == SIGBUS];
    if (previous->sa_flags & SA_SIGINFO) {
        previous->sa_sigaction(signo, info, context);
    } else if (previous->sa_handler == SIG_DFL || previous->sa_handler == SIG_IGN) {
        /* Put the old action back; a fault the kernel raised happens again and meets it. */
        (void)sigaction(signo, previous, NULL);
        if (info->si_code <= 0) (void)syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), signo);
    } else {
        previous->sa_handler(signo);
    }
}

static void uaccess_signal(int signo, siginfo_t *info, void *context) {
    if (ioasid_sys_uaccess_fixup(context)) return;
    pass_on(signo, info, context);
}

int ioasid_sys_uaccess_install(void) {
#if HAVE_SAFE_COPY
    static _Atomic int installed;
    if (atomic_exchange(&installed, 1)) return 0;
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = uaccess_signal;
    ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&ours.sa_mask);
    if (sigaction(SIGSEGV, &ours, &previous_actions[0]) != 0) return -errno;
    if (sigaction(SIGBUS, &ours, &previous_actions[1]) != 0) return -errno;
    ioasid_sys_uaccess_enable();
    return 0;
#else
    return -ENOSYS;
#endif
}
