/* Signals that arrive while a thread is inside the engine wait until it has left (deferral.c).
 * What the rest of the preload needs; nothing here is exported from the library. */
#ifndef IOASID_DEFERRAL_H
#define IOASID_DEFERRAL_H

#include <signal.h>
#include <stdatomic.h>

#define IOASID_HIDDEN __attribute__((visibility("hidden")))

/* Calls into the engine that are running on this thread (a signal handler may nest one). */
extern _Thread_local unsigned ioasid_engine_depth __attribute__((tls_model("initial-exec")));
/* Signals (bit signo - 1) that arrived inside the engine and wait for the outermost call to end. */
extern _Thread_local unsigned long long ioasid_deferred_signals __attribute__((tls_model("initial-exec")));

IOASID_HIDDEN void ioasid_deliver_deferred(void);

/* fork waits for calls in other threads to leave the engine (preload_fork.c): each thread says
 * it is inside in a slot of its own, which the fork handler reads after a membarrier. */
struct ioasid_fork_slot {
    _Atomic unsigned busy;  /* the owner is inside the engine (a count in the shared slot) */
    _Atomic int taken;      /* the slot belongs to a live thread */
    char padding[56];       /* a cache line each */
};
extern _Thread_local struct ioasid_fork_slot *ioasid_fork_slot __attribute__((tls_model("initial-exec")));
IOASID_HIDDEN extern struct ioasid_fork_slot ioasid_fork_shared_slot;
IOASID_HIDDEN extern _Atomic int ioasid_fork_pending;
IOASID_HIDDEN void ioasid_fork_gate_slow(void);
IOASID_HIDDEN void ioasid_fork_gate_install(void);

static inline void ioasid_engine_enter(void) {
    if (ioasid_engine_depth++ != 0) return;
    struct ioasid_fork_slot *slot = ioasid_fork_slot;
    if (__builtin_expect(slot != NULL && slot != &ioasid_fork_shared_slot, 1)) {
        atomic_store_explicit(&slot->busy, 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst); /* the fork handler's membarrier orders the rest */
        if (__builtin_expect(!atomic_load_explicit(&ioasid_fork_pending, memory_order_relaxed), 1)) return;
    }
    ioasid_fork_gate_slow();
}

static inline void ioasid_engine_leave(void) {
    if (--ioasid_engine_depth != 0) return;
    struct ioasid_fork_slot *slot = ioasid_fork_slot;
    if (__builtin_expect(slot != &ioasid_fork_shared_slot, 1)) {
        atomic_store_explicit(&slot->busy, 0, memory_order_release);
    } else {
        atomic_fetch_sub_explicit(&slot->busy, 1, memory_order_release);
    }
    if (__builtin_expect(ioasid_deferred_signals != 0, 0)) ioasid_deliver_deferred();
}

/* One call into the engine, its value returned: `ENGINE_CALL(engine.ioctl(fd, request, arg))`. */
#define ENGINE_CALL(call)                   \
    __extension__({                         \
        ioasid_engine_enter();              \
        __typeof__(call) engine_result_ = (call); \
        ioasid_engine_leave();              \
        engine_result_;                     \
    })

/* sigaction() for a signal the trap module does not keep (every signal but SIGSEGV, SIGBUS,
 * SIGILL): the program's handler is put behind a trampoline that defers it while the thread is
 * inside the engine. Same contract as sigaction(2). */
IOASID_HIDDEN int ioasid_deferring_sigaction(int signo, const struct sigaction *action, struct sigaction *old);

/* For the kept signals' path: if this thread is inside the engine and `info` was sent by a
 * process (not raised by a fault), records it to be sent again when the thread leaves; 1 when
 * deferred. */
IOASID_HIDDEN int ioasid_defer_if_inside(int signo, const siginfo_t *info);

/* The kernel's sigaction, bypassing the preload (trap.c). */
IOASID_HIDDEN int ioasid_real_sigaction(int signo, const struct sigaction *action, struct sigaction *old);

#endif
