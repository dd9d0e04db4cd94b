/*
 * Signals that arrive while a thread is inside the engine run when it has left.
 *
 * On the kernel a system call is atomic with respect to signal handlers: a handler runs when
 * the call returns to user space, never in the middle of it. ioasid's "system calls" are
 * function calls into the engine, which takes locks; a handler that ran in the middle and
 * called the engine again would find the lock its own thread holds. So the program's handlers
 * sit behind a trampoline: inside the engine (ioasid_engine_depth > 0) the trampoline records
 * the signal and its siginfo and returns; when the outermost engine call ends, each recorded
 * signal is queued again to the thread (rt_tgsigqueueinfo, with its siginfo), and the kernel
 * delivers it as the call returns, now to the program's handler, with the kernel's own frame,
 * mask and sigreturn.
 *
 * Cost on the fast path: an increment, a decrement and a test of thread-local words.
 *
 * Table of program actions: one slot per signal, written under a spinlock taken with every
 * signal blocked, read lock-free through a sequence count (the trampoline reads it).
 *
 * Limits (docs/architecture.md, "Signals"): handlers installed with the raw rt_sigaction system
 * call or before the preload was loaded are not behind the trampoline; a real-time signal that
 * arrives twice inside one engine call is delivered once (the last siginfo).
 */
#define _GNU_SOURCE
#include "deferral.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define IOASID_NSIG 65

_Thread_local unsigned ioasid_engine_depth __attribute__((tls_model("initial-exec")));
_Thread_local unsigned long long ioasid_deferred_signals __attribute__((tls_model("initial-exec")));
static _Thread_local siginfo_t deferred_info[IOASID_NSIG] __attribute__((tls_model("initial-exec")));

struct program_handler {
    _Atomic unsigned sequence; /* odd while written */
    int wrapped;               /* the kernel runs the trampoline for this signal */
    struct sigaction action;   /* the program's action, as it asked */
};

static struct program_handler handlers[IOASID_NSIG];
static _Atomic int handlers_lock;

static void lock_take(sigset_t *saved) {
    sigset_t all;
    sigfillset(&all);
    (void)syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, saved, (size_t)(_NSIG / 8));
    while (atomic_exchange_explicit(&handlers_lock, 1, memory_order_acquire) != 0) (void)syscall(SYS_sched_yield);
}

static void lock_give(const sigset_t *saved) {
    atomic_store_explicit(&handlers_lock, 0, memory_order_release);
    (void)syscall(SYS_rt_sigprocmask, SIG_SETMASK, saved, NULL, (size_t)(_NSIG / 8));
}

static void handler_write(int signo, int wrapped, const struct sigaction *action) {
    struct program_handler *entry = &handlers[signo];
    atomic_fetch_add_explicit(&entry->sequence, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    entry->wrapped = wrapped;
    if (action != NULL) entry->action = *action;
    atomic_fetch_add_explicit(&entry->sequence, 1, memory_order_release);
}

static int handler_read(int signo, struct sigaction *action) {
    struct program_handler *entry = &handlers[signo];
    for (;;) {
        unsigned before = atomic_load_explicit(&entry->sequence, memory_order_acquire);
        if (before & 1) continue;
        int wrapped = entry->wrapped;
        memcpy(action, &entry->action, sizeof *action);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&entry->sequence, memory_order_relaxed) == before) return wrapped;
    }
}

static void record(int signo, const siginfo_t *info) {
    deferred_info[signo] = *info;
    ioasid_deferred_signals |= 1ull << (signo - 1);
}

static void trampoline(int signo, siginfo_t *info, void *context) {
    if (ioasid_engine_depth > 0) {
        record(signo, info);
        return;
    }
    struct sigaction action;
    if (!handler_read(signo, &action) || action.sa_handler == SIG_DFL || action.sa_handler == SIG_IGN) return;
    if (action.sa_flags & SA_RESETHAND) {
        /* The kernel resets the action on delivery; the trampoline is what it delivered to. */
        struct sigaction reset;
        memset(&reset, 0, sizeof reset);
        reset.sa_handler = SIG_DFL;
        sigset_t saved;
        lock_take(&saved);
        handler_write(signo, 0, &reset);
        (void)ioasid_real_sigaction(signo, &reset, NULL);
        lock_give(&saved);
    }
    if (action.sa_flags & SA_SIGINFO) {
        action.sa_sigaction(signo, info, context);
    } else {
        /* The kernel passes all three arguments to every handler on x86-64; so do we. */
        ((void (*)(int, siginfo_t *, void *))(void *)action.sa_handler)(signo, info, context);
    }
}

void ioasid_deliver_deferred(void) {
    pid_t pid = (pid_t)syscall(SYS_getpid), tid = (pid_t)syscall(SYS_gettid);
    while (ioasid_deferred_signals != 0) {
        int signo = __builtin_ctzll(ioasid_deferred_signals) + 1;
        siginfo_t info = deferred_info[signo];
        ioasid_deferred_signals &= ~(1ull << (signo - 1));
        (void)syscall(SYS_rt_tgsigqueueinfo, pid, tid, signo, &info);
    }
}

int ioasid_defer_if_inside(int signo, const siginfo_t *info) {
    if (ioasid_engine_depth == 0 || info->si_code > 0 || signo < 1 || signo >= IOASID_NSIG) return 0;
    record(signo, info);
    return 1;
}

int ioasid_deferring_sigaction(int signo, const struct sigaction *action, struct sigaction *old) {
    if (signo < 1 || signo >= IOASID_NSIG || signo == SIGKILL || signo == SIGSTOP)
        return ioasid_real_sigaction(signo, action, old);
    struct sigaction requested, kernel_old, program_old;
    if (action != NULL) requested = *action; /* the program's memory, read once */
    sigset_t saved;
    lock_take(&saved);
    int was_wrapped = handler_read(signo, &program_old);
    int result;
    if (action == NULL) {
        result = ioasid_real_sigaction(signo, NULL, &kernel_old);
    } else if (requested.sa_handler == SIG_DFL || requested.sa_handler == SIG_IGN) {
        result = ioasid_real_sigaction(signo, &requested, &kernel_old);
        if (result == 0) handler_write(signo, 0, &requested);
    } else {
        struct sigaction ours = requested;
        ours.sa_sigaction = trampoline;
        ours.sa_flags = (requested.sa_flags | SA_SIGINFO) & ~SA_RESETHAND;
        /* A fault on a thread that blocks SIGSEGV or SIGBUS kills the process whatever the
         * handler; unblocked, the engine's safe copies stay safe inside this handler. */
        sigdelset(&ours.sa_mask, SIGSEGV);
        sigdelset(&ours.sa_mask, SIGBUS);
        result = ioasid_real_sigaction(signo, &ours, &kernel_old);
        if (result == 0) handler_write(signo, 1, &requested);
    }
    int saved_errno = errno;
    lock_give(&saved);
    errno = saved_errno;
    if (result != 0) return result;
    if (old != NULL) {
        /* The kernel runs the trampoline: the program's action is the one it gave us. */
        *old = was_wrapped && kernel_old.sa_sigaction == trampoline ? program_old : kernel_old;
    }
    return 0;
}
